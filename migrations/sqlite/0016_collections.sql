-- Collections, device tags and deployments: a baseline goes to the devices of the collections it
-- is deployed to, with remediation on or off and an evaluation interval per deployment.
-- Times are Unix milliseconds (UTC).

-- One row per revision of a collection, kept like the baselines': the definition (rules,
-- included collections, include and exclude device lists) as canonical JSON and as TOML.
CREATE TABLE collections (
    collection_id    TEXT NOT NULL,
    revision         INTEGER NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    definition_json  TEXT NOT NULL,
    definition_toml  TEXT NOT NULL,
    content_hash     TEXT NOT NULL,
    source_file      TEXT NOT NULL,
    imported_ms      INTEGER NOT NULL,
    PRIMARY KEY (collection_id, revision)
);

-- The built-in collection every device belongs to.
INSERT INTO collections VALUES ('all-devices', 1, 'All devices', 'Every device the site knows.',
    '{"id":"all-devices","revision":1,"name":"All devices","description":"Every device the site knows.","all":true,"rules":{},"include_collections":[],"include_devices":[],"exclude_devices":[]}',
    '', 'built-in', 'built-in', 0);

-- key=value labels on a device, set by an administrator (`mprelay device tag`).
CREATE TABLE device_tags (
    device_id   TEXT NOT NULL,
    tag_key     TEXT NOT NULL,
    tag_value   TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (device_id, tag_key)
);

-- A baseline deployed to a collection; the latest revision of each goes to the devices.
CREATE TABLE deployments (
    baseline_id    TEXT NOT NULL,
    collection_id  TEXT NOT NULL,
    remediate      INTEGER NOT NULL,
    -- Seconds between evaluations; 0: the site's evaluation interval.
    interval_s     INTEGER NOT NULL,
    enabled        INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL,
    updated_ms     INTEGER NOT NULL,
    PRIMARY KEY (baseline_id, collection_id)
);

-- The upgrade keeps every site as it was: each baseline it holds goes to every device, with the
-- remediation its members allow.
INSERT INTO deployments (baseline_id, collection_id, remediate, interval_s, enabled, created_ms,
                         updated_ms)
    SELECT DISTINCT baseline_id, 'all-devices', 1, 0, 1, 0, 0 FROM baselines;
