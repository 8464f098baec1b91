-- The site database on PostgreSQL, intake part: the same tables, columns and meaning as
-- migrations/sqlite/0001_intake.sql (devices, reports and their setting results in plaintext,
-- current compliance, history intervals, terms acceptances, relay cursors, quarantine), plus
-- report_message_ids, the dedup index of reports. Times are Unix milliseconds (UTC, BIGINT).
-- States and severities are stored by name, as on SQLite, so queries read the same.
-- Identifier columns (device, baseline, message, relay ids) use COLLATE "C": they are compared
-- in every index probe of the writer, and byte order is what an identifier needs.
--
-- Partitioning by received day
-- ----------------------------
-- compliance_reports and setting_results are partitioned BY RANGE (received_ms), one partition
-- per UTC day, named <table>_dYYYYMMDD and holding received_ms in
-- [that day 00:00 UTC, next day 00:00 UTC). received_ms is when the relay accepted the report;
-- a report and its setting results carry the same received_ms, so they always live in the
-- partitions of the same day. The site server creates the partitions ahead of time (from two days
-- back to seven days ahead, at start and then hourly); it never creates them inside a batch.
-- A DEFAULT partition, <table>_default, catches any row whose day has no partition (a relay with
-- a skewed clock, a backlog older than the window): a write never fails for lack of a partition.
-- When a day partition is created later, the rows of that day are moved out of the default
-- partition in the same transaction.
--
-- Retention drops a whole day by dropping <table>_dYYYYMMDD of both tables, deletes the rows of
-- the default partition by received_ms (indexed there), and deletes report_message_ids by
-- received_ms.
--
-- Why report_message_ids: a unique index on a partitioned table must contain the partition key,
-- so compliance_reports cannot enforce message_id uniqueness across days (a resend accepted by
-- another relay, or after a relay's dedup window, carries another received_ms). This small,
-- unpartitioned table holds every stored report's message_id and is where a batch dedups: a
-- replayed message_id changes nothing. It also finds a report by message_id without probing
-- every partition.

CREATE TABLE devices (
    device_id      TEXT COLLATE "C" PRIMARY KEY,
    public_key     BYTEA NOT NULL,
    key_epoch      INTEGER NOT NULL DEFAULT 0,
    hostname       TEXT NOT NULL DEFAULT '',
    os             TEXT NOT NULL DEFAULT '',
    agent_version  TEXT NOT NULL DEFAULT '',
    hardware_id    TEXT NOT NULL DEFAULT '',
    -- NULL while the device is known only from its reports (enrolled at a relay whose
    -- enrollment record has not arrived yet).
    enrolled_ms    BIGINT,
    last_seen_ms   BIGINT NOT NULL,
    last_relay     TEXT NOT NULL DEFAULT '',
    blocked        BOOLEAN NOT NULL DEFAULT FALSE
) WITH (fillfactor = 70);  -- last_seen_ms changes with every report: keep updates on the page

CREATE SEQUENCE compliance_reports_report_id_seq;

CREATE TABLE report_message_ids (
    message_id   TEXT COLLATE "C" PRIMARY KEY,
    -- Numbered when first seen: a replay gets no number and changes nothing.
    report_id    BIGINT NOT NULL DEFAULT nextval('compliance_reports_report_id_seq'),
    received_ms  BIGINT NOT NULL
);
-- Rows arrive in received order, so a block-range index is enough for retention's deletes.
CREATE INDEX report_message_ids_received ON report_message_ids USING brin (received_ms);

CREATE TABLE compliance_reports (
    report_id          BIGINT NOT NULL,
    -- When the relay accepted it: the partition key, and what the retention task ages by.
    received_ms        BIGINT NOT NULL,
    created_ms         BIGINT NOT NULL,
    evaluated_ms       BIGINT NOT NULL,
    stored_ms          BIGINT NOT NULL,
    baseline_revision  INTEGER NOT NULL,
    n_compliant        INTEGER NOT NULL,
    n_non_compliant    INTEGER NOT NULL,
    n_error            INTEGER NOT NULL,
    n_not_applicable   INTEGER NOT NULL,
    n_unknown          INTEGER NOT NULL,
    message_id         TEXT COLLATE "C" NOT NULL,
    device_id          TEXT COLLATE "C" NOT NULL,
    baseline_id        TEXT COLLATE "C" NOT NULL,
    baseline_name      TEXT NOT NULL,
    relay_id           TEXT COLLATE "C" NOT NULL,
    state              TEXT NOT NULL,
    max_severity       TEXT NOT NULL,
    -- The device's Ed25519 signature and the exact bytes it signed, for audit. Every partition
    -- is made WITH (toast_tuple_target = 8160): a typical ~2.5 KB row stays inline and is not
    -- compressed (compressing ~2 KB per report costs more CPU than the space saves); only
    -- rows past 8 KB are compressed and moved out of line.
    signature          BYTEA NOT NULL,
    signed_bytes       BYTEA NOT NULL,
    PRIMARY KEY (report_id, received_ms)
) PARTITION BY RANGE (received_ms);
-- No index on message_id: report_message_ids finds a report by its message id.
CREATE INDEX compliance_reports_device ON compliance_reports (device_id, baseline_id, evaluated_ms);
CREATE TABLE compliance_reports_default PARTITION OF compliance_reports DEFAULT
    WITH (toast_tuple_target = 8160);
CREATE INDEX compliance_reports_default_received ON compliance_reports_default (received_ms);

CREATE TABLE setting_results (
    report_id        BIGINT NOT NULL,
    received_ms      BIGINT NOT NULL,
    ci_revision      INTEGER NOT NULL,
    ordinal          INTEGER NOT NULL,
    remediated       BOOLEAN NOT NULL,
    ci_id            TEXT NOT NULL,
    setting_id       TEXT NOT NULL,
    state            TEXT NOT NULL,
    severity         TEXT NOT NULL,
    expected         TEXT NOT NULL,
    observed_before  TEXT,
    observed_after   TEXT,
    error            TEXT NOT NULL
) PARTITION BY RANGE (received_ms);
-- A block-range index, not a b-tree: a report's setting results are written together, in
-- ascending report_id order, so the ranges are narrow and finding a report's settings reads a
-- few pages; a b-tree entry per setting row would double the cost of writing them (a report
-- brings 35). The writer summarizes the ranges it filled after each batch (and autovacuum
-- catches up any it missed). Uniqueness is guaranteed by report_message_ids: a report is
-- written once. Queries joining many reports to their settings may want a b-tree here later;
-- it is a trade against write speed, measured by `mprelay bench writer`.
CREATE INDEX setting_results_report ON setting_results USING brin (report_id)
    WITH (pages_per_range = 16, autosummarize = on);
CREATE TABLE setting_results_default PARTITION OF setting_results DEFAULT;
CREATE INDEX setting_results_default_received ON setting_results_default (received_ms);

CREATE TABLE current_compliance (
    device_id          TEXT COLLATE "C" NOT NULL,
    baseline_id        TEXT COLLATE "C" NOT NULL,
    baseline_revision  INTEGER NOT NULL,
    baseline_name      TEXT NOT NULL,
    state              TEXT NOT NULL,
    max_severity       TEXT NOT NULL,
    evaluated_ms       BIGINT NOT NULL,
    message_id         TEXT COLLATE "C" NOT NULL,
    n_compliant        INTEGER NOT NULL,
    n_non_compliant    INTEGER NOT NULL,
    n_error            INTEGER NOT NULL,
    n_not_applicable   INTEGER NOT NULL,
    n_unknown          INTEGER NOT NULL,
    -- The open interval of compliance_history for this device and baseline.
    open_history_id    BIGINT NOT NULL,
    updated_ms         BIGINT NOT NULL,
    PRIMARY KEY (device_id, baseline_id)
) WITH (fillfactor = 70);  -- room on each page for updates that need no new index entry (HOT)

CREATE TABLE compliance_history (
    history_id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    device_id           TEXT COLLATE "C" NOT NULL,
    baseline_id         TEXT COLLATE "C" NOT NULL,
    state               TEXT NOT NULL,
    started_ms          BIGINT NOT NULL,
    -- NULL while the interval is open (the device is still in this state).
    ended_ms            BIGINT,
    started_message_id  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX compliance_history_device ON compliance_history (device_id, baseline_id, started_ms);
CREATE INDEX compliance_history_ended ON compliance_history (ended_ms) WHERE ended_ms IS NOT NULL;

CREATE TABLE terms_acceptances (
    message_id     TEXT COLLATE "C" PRIMARY KEY,
    device_id      TEXT COLLATE "C" NOT NULL,
    user_name      TEXT NOT NULL,
    terms_version  INTEGER NOT NULL,
    accepted_ms    BIGINT NOT NULL,
    received_ms    BIGINT NOT NULL,
    relay_id       TEXT COLLATE "C" NOT NULL
);
CREATE INDEX terms_acceptances_user ON terms_acceptances (user_name, device_id, terms_version);

-- Per-relay progress: everything through through_seq of spool spool_id is stored here.
CREATE TABLE relay_cursors (
    relay_id         TEXT COLLATE "C" PRIMARY KEY,
    spool_id         TEXT COLLATE "C" NOT NULL,
    through_seq      BIGINT NOT NULL,
    url              TEXT NOT NULL DEFAULT '',
    last_pull_ms     BIGINT NOT NULL,
    last_seq         BIGINT NOT NULL DEFAULT 0,
    pending_records  BIGINT NOT NULL DEFAULT 0,
    pending_bytes    BIGINT NOT NULL DEFAULT 0
);

-- Records a relay forwarded that the site could not read or verify: kept, not lost, never
-- retried automatically.
CREATE TABLE quarantined_records (
    relay_id     TEXT COLLATE "C" NOT NULL,
    spool_id     TEXT COLLATE "C" NOT NULL,
    seq          BIGINT NOT NULL,
    message_id   TEXT COLLATE "C" NOT NULL,
    received_ms  BIGINT NOT NULL,
    reason       TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    stored_ms    BIGINT NOT NULL,
    PRIMARY KEY (relay_id, spool_id, seq)
);
