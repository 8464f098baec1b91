-- A record of every run of a maintenance task: when, why, against which cutoff, what it deleted
-- and how it ended. Written when a run starts (status 'running') and updated as it ends, so a
-- run interrupted by a crash stays visible as 'running' until the next run marks it
-- 'interrupted'.

CREATE TABLE maintenance_runs (
    run_id        INTEGER PRIMARY KEY,
    task          TEXT NOT NULL,
    -- 'schedule' or 'manual'.
    trigger       TEXT NOT NULL,
    -- 'running', 'succeeded', 'failed' or 'interrupted'.
    status        TEXT NOT NULL,
    started_ms    INTEGER NOT NULL,
    ended_ms      INTEGER,
    -- Data received before this instant is what the run deletes.
    cutoff_ms     INTEGER NOT NULL,
    -- Rows deleted per table, as a JSON object {"table": count, …}.
    rows_deleted  TEXT NOT NULL DEFAULT '{}',
    total_deleted INTEGER NOT NULL DEFAULT 0,
    error         TEXT
);
CREATE INDEX maintenance_runs_task ON maintenance_runs (task, started_ms);
