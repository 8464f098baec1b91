-- Named administrators and the audit log.
-- An administrator's token is never stored: only its SHA-256 (the token is 256 random bits).
-- role is 'read', 'compliance' or 'full'; disabled_ms is set once an administrator is disabled.
-- Times are Unix milliseconds (UTC).

CREATE TABLE administrators (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('read', 'compliance', 'full')),
    token_sha256  BYTEA NOT NULL UNIQUE,
    created_ms    BIGINT NOT NULL,
    rotated_ms    BIGINT NOT NULL,
    disabled_ms   BIGINT
);

-- Every change made through the CLI, the API or the console, written in the transaction of the
-- change. who: an administrator's name, or 'cli:OSUSER' for a command on the site host; via:
-- 'cli', 'api' or 'console'; before/after: JSON of the object's values (NULL where there was
-- none). Rows are never updated; only the retention task deletes them, by age.
CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    who        TEXT NOT NULL,
    via        TEXT NOT NULL,
    action     TEXT NOT NULL,
    object     TEXT NOT NULL,
    object_id  TEXT NOT NULL,
    before     TEXT,
    after      TEXT
);
CREATE INDEX audit_log_at ON audit_log (at_ms);

CREATE FUNCTION audit_log_no_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log cannot be edited';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_no_update();
