//! Day partitions of the PostgreSQL tables partitioned by `received_ms` (the scheme is described
//! in `migrations/postgres/0001_intake.sql`): `<table>_dYYYYMMDD` holds one UTC day,
//! `<table>_default` whatever has no day partition.
//!
//! Partitions are made ahead of time, never in the write path: a batch only ever inserts, and a
//! row whose day is missing lands in the default partition instead of failing the batch. Making
//! a day moves that day's rows out of the default partition in the same transaction, so a day
//! that was missing once is whole afterwards. Each (table, day) is its own short transaction
//! under a lock timeout, so creating partitions never holds intake up for long, and an advisory
//! lock keeps two site servers on the same database from creating the same partition at once.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};
use tracing::{info, instrument};

use crate::store::StoreError;

/// The tables partitioned by received day, parents before children of the same report.
pub(crate) const PARTITIONED: &[&str] = &["compliance_reports", "setting_results"];

/// Days kept ready before and after today (UTC): a backlog from the last two days and relays
/// with clocks a little off still find their day, and a week ahead survives a long weekend
/// without the site server running its maintenance.
pub(crate) const DAYS_BEHIND: i64 = 2;
pub(crate) const DAYS_AHEAD: i64 = 7;

pub(crate) const DAY_MS: i64 = 86_400_000;

/// Indexes a new day partition gets before it is attached, where the parent's would be wrong:
/// `setting_results_report` was created with autosummarize on, which the writer, summarizing
/// the ranges it fills itself, does not want (see `migrations/postgres/0006_*.sql`).
const LEAF_INDEXES: &[(&str, &str)] = &[(
    "setting_results",
    "CREATE INDEX {name}_report_id_idx ON {name} USING brin (report_id) \
     WITH (pages_per_range = 16, autosummarize = off)",
)];

/// Advisory lock key serialising partition maintenance across site servers ("mprelay:p").
const MAINTENANCE_LOCK: i64 = 0x6d70_7265_6c61_7970;

/// The UTC day number (days since 1970-01-01) of a Unix-milliseconds time.
pub(crate) fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// `<table>_dYYYYMMDD` for UTC day `day`.
pub(crate) fn partition_name(table: &str, day: i64) -> String {
    let date = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(day);
    format!(
        "{table}_d{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The days whose partitions (of every table in [`PARTITIONED`]) this site server has seen made,
/// so a batch whose rows all fall in one of them can be written straight into its partitions,
/// skipping the per-row routing through the parent (about a tenth of the cost of a `COPY`).
///
/// Only ever a subset of the truth, never wrong for long: days are added by [`ensure`] once their
/// partitions exist (partitions are only ever created attached, in one transaction), and
/// removed when this server's retention drops them. Another server's retention may drop one
/// unseen: writing into it then fails with `undefined_table`, the day is forgotten, and the
/// batch, rolled back whole, is retried through the parent. A wrong "absent" costs only speed.
#[derive(Clone, Debug, Default)]
pub(crate) struct KnownDays(Arc<Mutex<BTreeSet<i64>>>);

impl KnownDays {
    pub fn contains(&self, day: i64) -> bool {
        self.set().contains(&day)
    }

    pub fn forget(&self, day: i64) {
        self.set().remove(&day);
    }

    fn remember(&self, days: impl IntoIterator<Item = i64>) {
        self.set().extend(days);
    }

    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        // A panic while holding the lock cannot leave the set half-changed (each change is one
        // call on it), so a poisoned lock's set is still good.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes every missing day partition from `DAYS_BEHIND` days before the day of `now_ms` to
/// `DAYS_AHEAD` days after it, and records those days in `known`. Returns how many partitions it
/// created.
#[instrument(skip_all, fields(now_ms))]
pub(crate) async fn ensure(
    pool: &PgPool,
    known: &KnownDays,
    now_ms: i64,
) -> Result<u32, StoreError> {
    let today = day_of(now_ms);
    let existing: HashSet<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname = ANY($1) AND p.relnamespace = to_regnamespace(current_schema())",
    )
    .bind(PARTITIONED)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let mut created = 0;
    for day in today - DAYS_BEHIND..=today + DAYS_AHEAD {
        for table in PARTITIONED {
            if !existing.contains(&partition_name(table, day)) && create(pool, table, day).await? {
                created += 1;
            }
        }
    }
    if created > 0 {
        info!(created, "day partitions created");
    }
    // Each day of the window now has its partitions, made here or by another site server.
    known.remember(today - DAYS_BEHIND..=today + DAYS_AHEAD);
    Ok(created)
}

/// Creates the partition of `table` for `day`, moving that day's rows out of the default
/// partition. Returns false if another site server made it first.
async fn create(pool: &PgPool, table: &str, day: i64) -> Result<bool, StoreError> {
    let name = partition_name(table, day);
    let (lo, hi) = (day * DAY_MS, (day + 1) * DAY_MS);
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MAINTENANCE_LOCK)
        .execute(&mut *tx)
        .await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
    if exists {
        return Ok(false);
    }
    // Table and partition names come from PARTITIONED and a date: nothing from outside.
    let mut statements = vec![format!(
        "CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
         INCLUDING STORAGE) WITH (toast_tuple_target = 8160)"
    )];
    // Indexes made here before ATTACH are adopted by it in place of copies of the parent's
    // (whose options a partitioned index cannot change).
    statements.extend(
        LEAF_INDEXES
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, def)| def.replace("{name}", &name)),
    );
    statements.extend([
        format!(
            "WITH moved AS (DELETE FROM {table}_default WHERE received_ms >= {lo} \
             AND received_ms < {hi} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ),
        format!("ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"),
    ]);
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql).into_sql_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days_are_utc() {
        assert_eq!(partition_name("t", 0), "t_d19700101");
        // 2024-02-29 00:00:00 UTC = 1709164800 s.
        let leap = 1_709_164_800_000;
        assert_eq!(partition_name("t", day_of(leap)), "t_d20240229");
        assert_eq!(partition_name("t", day_of(leap - 1)), "t_d20240228");
        assert_eq!(
            partition_name("t", day_of(leap + DAY_MS - 1)),
            "t_d20240229"
        );
        assert_eq!(day_of(-1), -1);
    }
}
