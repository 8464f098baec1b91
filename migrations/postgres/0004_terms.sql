-- Terms and conditions (PostgreSQL; mirrors migrations/sqlite/0004_terms.sql): every version
-- ever published and every edit of each version, kept.
-- A version is the number users accept; publishing a new version makes every user accept
-- again. An edit (a typo fix) adds an edition under the same version and keeps the acceptances.
-- The current terms are the highest edition of the highest version.
-- Times are Unix milliseconds (UTC).

CREATE TABLE terms (
    version               BIGINT NOT NULL CHECK (version >= 1),
    -- 1 for the text the version was published with, 2, 3, … for each edit of it.
    edition               BIGINT NOT NULL CHECK (edition >= 1),
    -- For administrators only: a name and a note to tell versions apart; never shown to users.
    display_name          TEXT NOT NULL,
    description           TEXT NOT NULL,
    -- What users read and accept.
    title                 TEXT NOT NULL,
    summary               TEXT NOT NULL,
    body                  TEXT NOT NULL,
    acceptance_statement  TEXT NOT NULL,
    -- When the version was first published (the same on every edition of it), and when this
    -- edition was stored.
    published_ms          BIGINT NOT NULL,
    edited_ms             BIGINT NOT NULL,
    PRIMARY KEY (version, edition)
);


-- The acceptance report counts the devices no acceptance has come from.
CREATE INDEX terms_acceptances_device ON terms_acceptances (device_id);
