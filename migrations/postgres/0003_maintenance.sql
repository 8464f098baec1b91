-- Site maintenance tasks and their settings. The one task today is Delete Aged Configuration
-- Management Data: it deletes compliance data older than delete_older_than_days, on the days
-- of week given, starting between begin_time and latest_begin_time in the site's time zone.
-- delete_older_than_days is also the retention age in force: the policy carries it to relays,
-- which refuse older reports as stale, and the privacy page states it.
-- PostgreSQL; mirrors migrations/sqlite/0003_maintenance.sql.

CREATE TABLE maintenance_tasks (
    name                    TEXT COLLATE "C" PRIMARY KEY,
    enabled                 BOOLEAN NOT NULL,
    delete_older_than_days  BIGINT NOT NULL CHECK (delete_older_than_days BETWEEN 1 AND 3650),
    -- Comma-separated lowercase three-letter days: "sat" or "mon,wed,fri".
    days_of_week            TEXT NOT NULL,
    -- "HH:MM" in time_zone.
    begin_time              TEXT NOT NULL,
    latest_begin_time       TEXT NOT NULL,
    -- An IANA time zone name, e.g. "UTC" or "Europe/Paris".
    time_zone               TEXT NOT NULL,
    updated_ms              BIGINT NOT NULL
);

INSERT INTO maintenance_tasks (name, enabled, delete_older_than_days, days_of_week, begin_time,
                               latest_begin_time, time_zone, updated_ms)
VALUES ('delete_aged_configuration_management_data', TRUE, 90, 'sat', '00:00', '05:00', 'UTC', 0);
