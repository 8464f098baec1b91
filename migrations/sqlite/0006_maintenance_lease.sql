-- One run of a maintenance task at a time, even with two site servers on one database file:
-- a run holds the task's lease row, renews it between batches, and deletes it when it ends. A
-- lease whose holder died expires at expires_ms and the next run takes it over.
-- (PostgreSQL uses a session advisory lock instead, released when the session ends.)

CREATE TABLE maintenance_leases (
    task        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_ms  INTEGER NOT NULL
);
