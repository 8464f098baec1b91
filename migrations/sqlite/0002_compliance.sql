-- The site database, definitions part: configuration items and baselines with every revision
-- ever imported, the import log, site settings and the policy version.
-- Times are Unix milliseconds (UTC).

-- One row per revision of a configuration item. A revision's content never changes: importing
-- the same id and revision with other content is refused.
CREATE TABLE configuration_items (
    ci_id            TEXT NOT NULL,
    revision         INTEGER NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    -- The definition as canonical JSON (what the policy is built from) and as TOML.
    definition_json  TEXT NOT NULL,
    definition_toml  TEXT NOT NULL,
    -- SHA-256 of definition_json, hex.
    content_hash     TEXT NOT NULL,
    source_file      TEXT NOT NULL,
    imported_ms      INTEGER NOT NULL,
    PRIMARY KEY (ci_id, revision)
);

CREATE TABLE baselines (
    baseline_id      TEXT NOT NULL,
    revision         INTEGER NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    definition_json  TEXT NOT NULL,
    definition_toml  TEXT NOT NULL,
    content_hash     TEXT NOT NULL,
    source_file      TEXT NOT NULL,
    imported_ms      INTEGER NOT NULL,
    PRIMARY KEY (baseline_id, revision)
);

-- The member configuration items of each baseline revision.
CREATE TABLE baseline_members (
    baseline_id        TEXT NOT NULL,
    baseline_revision  INTEGER NOT NULL,
    ordinal            INTEGER NOT NULL,
    ci_id              TEXT NOT NULL,
    -- NULL: the latest revision of the item at the time the policy is built.
    ci_revision        INTEGER,
    membership         TEXT NOT NULL,
    remediate          INTEGER NOT NULL,
    PRIMARY KEY (baseline_id, baseline_revision, ordinal)
);

-- Every definition every import presented, and what became of it.
CREATE TABLE definition_imports (
    import_id     INTEGER PRIMARY KEY,
    imported_ms   INTEGER NOT NULL,
    kind          TEXT NOT NULL,   -- configuration_item | baseline
    object_id     TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    action        TEXT NOT NULL,   -- added | unchanged
    content_hash  TEXT NOT NULL,
    source_file   TEXT NOT NULL
);
CREATE INDEX definition_imports_object ON definition_imports (kind, object_id, revision);

-- Site-wide settings that go into the policy (evaluation interval, privacy statement URL, …).
CREATE TABLE site_settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);

-- The version of the policy the site pushes: raised in the same transaction as every change
-- to what the policy holds, so it only ever increases, across restarts too.
CREATE TABLE policy_state (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    version     INTEGER NOT NULL,
    changed_ms  INTEGER NOT NULL
);
INSERT INTO policy_state (singleton, version, changed_ms) VALUES (1, 0, 0);

CREATE INDEX devices_blocked ON devices (device_id) WHERE blocked <> 0;
