-- setting_results' block-range index without autosummarize (PostgreSQL only).
--
-- The writer summarizes the ranges each batch filled, right after the batch commits, so
-- autovacuum's summarization requests were redundant. Worse, they overflowed: autovacuum keeps at
-- most 256 pending work items per server and takes them only when it visits the database, while
-- intake fills a 16-page range about every thousand setting rows. Every request past the queue's
-- size was refused with a LOG line ("request for BRIN range summarization … was not recorded")
-- carrying the whole COPY statement: hundreds of lines a second in the server's log at full
-- intake. VACUUM still summarizes any range the writer missed.
--
-- A partitioned index's options cannot be altered, so this changes each partition's index; the
-- site server makes the index of every new day partition itself, with autosummarize off, before
-- attaching it (see src/store/postgres/partitions.rs).

DO $$
DECLARE
    leaf regclass;
BEGIN
    FOR leaf IN
        SELECT inhrelid::regclass FROM pg_inherits
        WHERE inhparent = 'setting_results_report'::regclass
    LOOP
        EXECUTE format('ALTER INDEX %s SET (autosummarize = off)', leaf);
    END LOOP;
END
$$;
