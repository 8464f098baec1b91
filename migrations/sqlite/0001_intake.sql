-- The site database, intake part: devices, reports and their setting results in plaintext,
-- current compliance, history intervals, terms acceptances, relay cursors, quarantine.
-- Times are Unix milliseconds (UTC). States and severities are stored by name.

CREATE TABLE devices (
    device_id      TEXT PRIMARY KEY,
    public_key     BLOB NOT NULL,
    key_epoch      INTEGER NOT NULL DEFAULT 0,
    hostname       TEXT NOT NULL DEFAULT '',
    os             TEXT NOT NULL DEFAULT '',
    agent_version  TEXT NOT NULL DEFAULT '',
    hardware_id    TEXT NOT NULL DEFAULT '',
    -- NULL while the device is known only from its reports (enrolled at a relay whose
    -- enrollment record has not arrived yet).
    enrolled_ms    INTEGER,
    last_seen_ms   INTEGER NOT NULL,
    last_relay     TEXT NOT NULL DEFAULT '',
    blocked        INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE compliance_reports (
    report_id          INTEGER PRIMARY KEY,
    message_id         TEXT NOT NULL UNIQUE,
    device_id          TEXT NOT NULL,
    baseline_id        TEXT NOT NULL,
    baseline_revision  INTEGER NOT NULL,
    baseline_name      TEXT NOT NULL,
    created_ms         INTEGER NOT NULL,
    evaluated_ms       INTEGER NOT NULL,
    -- When the relay accepted it (the retention task ages data by this).
    received_ms        INTEGER NOT NULL,
    stored_ms          INTEGER NOT NULL,
    relay_id           TEXT NOT NULL,
    state              TEXT NOT NULL,
    max_severity       TEXT NOT NULL,
    n_compliant        INTEGER NOT NULL,
    n_non_compliant    INTEGER NOT NULL,
    n_error            INTEGER NOT NULL,
    n_not_applicable   INTEGER NOT NULL,
    n_unknown          INTEGER NOT NULL,
    -- The device's Ed25519 signature and the exact bytes it signed, for audit.
    signature          BLOB NOT NULL,
    signed_bytes       BLOB NOT NULL
);
CREATE INDEX compliance_reports_received ON compliance_reports (received_ms);
CREATE INDEX compliance_reports_device ON compliance_reports (device_id, baseline_id, evaluated_ms);

CREATE TABLE setting_results (
    report_id        INTEGER NOT NULL,
    ordinal          INTEGER NOT NULL,
    ci_id            TEXT NOT NULL,
    ci_revision      INTEGER NOT NULL,
    setting_id       TEXT NOT NULL,
    state            TEXT NOT NULL,
    severity         TEXT NOT NULL,
    expected         TEXT NOT NULL,
    observed_before  TEXT,
    observed_after   TEXT,
    remediated       INTEGER NOT NULL,
    error            TEXT NOT NULL,
    PRIMARY KEY (report_id, ordinal)
) WITHOUT ROWID;

CREATE TABLE current_compliance (
    device_id          TEXT NOT NULL,
    baseline_id        TEXT NOT NULL,
    baseline_revision  INTEGER NOT NULL,
    baseline_name      TEXT NOT NULL,
    state              TEXT NOT NULL,
    max_severity       TEXT NOT NULL,
    evaluated_ms       INTEGER NOT NULL,
    message_id         TEXT NOT NULL,
    n_compliant        INTEGER NOT NULL,
    n_non_compliant    INTEGER NOT NULL,
    n_error            INTEGER NOT NULL,
    n_not_applicable   INTEGER NOT NULL,
    n_unknown          INTEGER NOT NULL,
    -- The open interval of compliance_history for this device and baseline.
    open_history_id    INTEGER NOT NULL,
    updated_ms         INTEGER NOT NULL,
    PRIMARY KEY (device_id, baseline_id)
) WITHOUT ROWID;

CREATE TABLE compliance_history (
    history_id          INTEGER PRIMARY KEY,
    device_id           TEXT NOT NULL,
    baseline_id         TEXT NOT NULL,
    state               TEXT NOT NULL,
    started_ms          INTEGER NOT NULL,
    -- NULL while the interval is open (the device is still in this state).
    ended_ms            INTEGER,
    started_message_id  TEXT NOT NULL
);
CREATE INDEX compliance_history_device ON compliance_history (device_id, baseline_id, started_ms);
CREATE INDEX compliance_history_ended ON compliance_history (ended_ms) WHERE ended_ms IS NOT NULL;

CREATE TABLE terms_acceptances (
    message_id     TEXT PRIMARY KEY,
    device_id      TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    terms_version  INTEGER NOT NULL,
    accepted_ms    INTEGER NOT NULL,
    received_ms    INTEGER NOT NULL,
    relay_id       TEXT NOT NULL
);
CREATE INDEX terms_acceptances_user ON terms_acceptances (user_name, device_id, terms_version);

-- Per-relay progress: everything through through_seq of spool spool_id is stored here.
CREATE TABLE relay_cursors (
    relay_id         TEXT PRIMARY KEY,
    spool_id         TEXT NOT NULL,
    through_seq      INTEGER NOT NULL,
    url              TEXT NOT NULL DEFAULT '',
    last_pull_ms     INTEGER NOT NULL,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    pending_records  INTEGER NOT NULL DEFAULT 0,
    pending_bytes    INTEGER NOT NULL DEFAULT 0
);

-- Records a relay forwarded that the site could not read or verify: kept, not lost, never
-- retried automatically.
CREATE TABLE quarantined_records (
    relay_id     TEXT NOT NULL,
    spool_id     TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    received_ms  INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    payload      BLOB NOT NULL,
    stored_ms    INTEGER NOT NULL,
    PRIMARY KEY (relay_id, spool_id, seq)
);
