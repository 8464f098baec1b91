//! PostgreSQL deletion batches and the run lock of the retention task (see
//! `store/retention.rs`; the partition scheme is in `migrations/postgres/0001_intake.sql`).
//!
//! A batch is one of, in this order:
//! - dropping one whole day partition (`<table>_dYYYYMMDD`) that ends at or before the cutoff,
//!   `setting_results` before `compliance_reports` of the same day, after counting its rows for
//!   the run record; before a day's reports go, that day's entries of `report_message_ids` (the
//!   dedup index of reports) are deleted by its block-range index. Dropping a partition locks
//!   its parent for a moment, so it runs under a short `lock_timeout` and tries again rather
//!   than making the writer queue behind it;
//! - deleting up to `max_rows` rows older than the cutoff, by `ctid`, from the partition that
//!   holds the cutoff or from a `_default` partition (indexed by `received_ms` there), reports
//!   together with their `report_message_ids` entries;
//! - deleting up to `max_rows` closed history intervals that ended before the cutoff.
//!
//! Deleting a report's dedup entry only lets a replay of that report be stored again, and relays
//! refuse reports older than the retention age before they are ever spooled.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection, SqlSafeStr};
use tracing::{debug, info};

use super::PostgresStore;
use super::partitions::{DAY_MS, PARTITIONED};
use crate::store::StoreError;
use crate::store::types::{
    BatchDeleted, T_HISTORY, T_MESSAGE_IDS, T_REPORTS, T_SETTINGS, TaskLock,
};

/// How long dropping a partition waits for the writers' locks before it steps back. Writers
/// that come after it queue behind it meanwhile, so this bounds what the drop adds to a
/// writer's batch; a writer's transaction is tens of milliseconds.
const DROP_LOCK_TIMEOUT: &str = "150ms";
/// Tries to drop one partition (50 ms apart) before the run fails with the lock timeout.
const DROP_TRIES: u32 = 100;

/// A partition of a partitioned table, as found in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partition {
    /// Validated: `<table>_dYYYYMMDD` or `<table>_default`, with the table from PARTITIONED.
    name: String,
    table: &'static str,
    /// The UTC day it holds; `None` for the default partition.
    day: Option<i64>,
}

impl PostgresStore {
    pub async fn delete_aged_batch(
        &self,
        cutoff_ms: i64,
        max_rows: u32,
    ) -> Result<BatchDeleted, StoreError> {
        let limit = i64::from(max_rows.max(1));
        let parts = self.partitions().await?;
        // Whole days first, oldest first; setting_results of a day before its reports. A day
        // holding a report that a device's current state rests on is not dropped: it is
        // deleted by rows below, around that report, and goes whole once the state moves on.
        let mut days: Vec<&Partition> = parts
            .iter()
            .filter(|p| p.day.is_some_and(|d| (d + 1) * DAY_MS <= cutoff_ms))
            .collect();
        days.sort_by_key(|p| (p.day, p.table != T_SETTINGS));
        let mut droppable = None;
        for p in days {
            if !self.holds_current_reports(&parts, p).await? {
                droppable = Some(p);
                break;
            }
        }
        if let Some(p) = droppable {
            let mut out = BatchDeleted {
                rows: vec![],
                partitions_dropped: 1,
            };
            if p.table == T_REPORTS {
                // The dedup entries of the day's reports, by the day's range of the block-range
                // index, before the reports themselves go.
                let day = p.day.unwrap_or_default();
                let ids = sqlx::query(
                    "DELETE FROM report_message_ids WHERE received_ms >= $1 AND received_ms < $2",
                )
                .bind(day * DAY_MS)
                .bind((day + 1) * DAY_MS)
                .execute(self.pool())
                .await?
                .rows_affected();
                out.rows.push((T_MESSAGE_IDS, ids));
            }
            let rows = self.drop_partition(p).await?;
            out.rows.push((p.table, rows));
            return Ok(out);
        }
        // Then rows, from the partition holding the cutoff and the default partitions; a
        // report's dedup entry goes in the same statement as the report.
        for p in parts.iter().filter(|p| p.table == T_SETTINGS) {
            if p.day.is_some_and(|d| d * DAY_MS >= cutoff_ms) {
                continue;
            }
            // The names were checked against the partition scheme (see parse_partition); a
            // report's settings are in the partition of the same day as the report.
            let reports = reports_partition(p);
            let kept = if parts.iter().any(|q| q.name == reports) {
                format!(
                    "AND report_id NOT IN (SELECT report_id FROM {reports} \
                     WHERE message_id IN (SELECT message_id FROM current_compliance))"
                )
            } else {
                String::new()
            };
            let sql = format!(
                "DELETE FROM {0} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {0} \
                 WHERE received_ms < $1 {kept} LIMIT $2))",
                p.name
            );
            let n = sqlx::query(AssertSqlSafe(sql).into_sql_str())
                .bind(cutoff_ms)
                .bind(limit)
                .execute(self.pool())
                .await?
                .rows_affected();
            if n > 0 {
                return Ok(BatchDeleted {
                    rows: vec![(T_SETTINGS, n)],
                    partitions_dropped: 0,
                });
            }
        }
        for p in parts.iter().filter(|p| p.table == T_REPORTS) {
            if p.day.is_some_and(|d| d * DAY_MS >= cutoff_ms) {
                continue;
            }
            let sql = format!(
                "WITH r AS (DELETE FROM {0} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {0} \
                 WHERE received_ms < $1 AND message_id NOT IN \
                 (SELECT message_id FROM current_compliance) LIMIT $2)) RETURNING message_id), \
                 m AS (DELETE FROM report_message_ids WHERE message_id IN \
                 (SELECT message_id FROM r) RETURNING 1) \
                 SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM m)",
                p.name
            );
            let (reports, ids): (i64, i64) = sqlx::query_as(AssertSqlSafe(sql).into_sql_str())
                .bind(cutoff_ms)
                .bind(limit)
                .fetch_one(self.pool())
                .await?;
            if reports > 0 {
                return Ok(BatchDeleted {
                    rows: vec![(T_REPORTS, reports as u64), (T_MESSAGE_IDS, ids as u64)],
                    partitions_dropped: 0,
                });
            }
        }
        let n = sqlx::query(
            "DELETE FROM compliance_history WHERE history_id IN (SELECT history_id \
             FROM compliance_history WHERE ended_ms < $1 LIMIT $2)",
        )
        .bind(cutoff_ms)
        .bind(limit)
        .execute(self.pool())
        .await?
        .rows_affected();
        let mut out = BatchDeleted::default();
        if n > 0 {
            out.rows.push((T_HISTORY, n));
        }
        Ok(out)
    }

    /// Whether the day of `p` holds a report some device's current state rests on (its
    /// reports partition, which also answers for the day's setting_results).
    async fn holds_current_reports(
        &self,
        parts: &[Partition],
        p: &Partition,
    ) -> Result<bool, StoreError> {
        let reports = reports_partition(p);
        if !parts.iter().any(|q| q.name == reports) {
            return Ok(false);
        }
        // The name was checked against the partition scheme (see parse_partition).
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {reports} \
             WHERE message_id IN (SELECT message_id FROM current_compliance))"
        );
        Ok(sqlx::query_scalar(AssertSqlSafe(sql).into_sql_str())
            .fetch_one(self.pool())
            .await?)
    }

    /// The partitions of the partitioned tables, with names checked against the scheme.
    async fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, p.relname::text FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = ANY($1) AND p.relnamespace = to_regnamespace(current_schema())",
        )
        .bind(PARTITIONED)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, parent)| parse_partition(&name, &parent))
            .collect())
    }

    /// Counts and drops one day partition, stepping back while writers hold its parent.
    async fn drop_partition(&self, p: &Partition) -> Result<u64, StoreError> {
        // From now on this server's batches of that day go through the parent.
        if let Some(day) = p.day {
            self.known_days().forget(day);
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_drop_partition(&p.name).await {
                Ok(rows) => {
                    info!(partition = %p.name, rows, "day partition dropped");
                    return Ok(rows);
                }
                Err(StoreError::Db(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("55P03") && tries < DROP_TRIES =>
                {
                    debug!(partition = %p.name, "partition busy; trying again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_drop_partition(&self, name: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            AssertSqlSafe(format!("SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")).into_sql_str(),
        )
        .execute(&mut *tx)
        .await?;
        // The name was checked against the partition scheme (see parse_partition).
        let rows: i64 = sqlx::query_scalar(
            AssertSqlSafe(format!("SELECT count(*) FROM {name}")).into_sql_str(),
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")).into_sql_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.max(0) as u64)
    }

    pub async fn try_lock_task(&self, task: &str) -> Result<Option<TaskLock>, StoreError> {
        // A connection of its own, out of the pool: the session holds the lock for the run,
        // and if the run's task is dropped the connection closes and the lock goes with it.
        let mut conn = self.pool().acquire().await?.detach();
        let got: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended('mprelay:' || $1, 0))",
        )
        .bind(task)
        .fetch_one(&mut conn)
        .await?;
        if got {
            Ok(Some(TaskLock::Postgres(conn)))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Releases an advisory run lock, then ends its session. The explicit unlock matters: the
    /// server drops a closed session's locks only when its backend has exited, which a run
    /// starting right after could still beat.
    pub async fn release_task_lock(&self, mut conn: PgConnection) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }
}

/// A partition's table and day from its name, if the name follows the scheme.
/// The compliance_reports partition of the same day (or default) as `p`.
fn reports_partition(p: &Partition) -> String {
    format!(
        "{T_REPORTS}{}",
        p.name.strip_prefix(p.table).unwrap_or_default()
    )
}

fn parse_partition(name: &str, parent: &str) -> Option<Partition> {
    let table = *PARTITIONED.iter().find(|t| **t == parent)?;
    let rest = name.strip_prefix(table)?.strip_prefix('_')?;
    if rest == "default" {
        return Some(Partition {
            name: name.into(),
            table,
            day: None,
        });
    }
    let digits = rest.strip_prefix('d')?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (
        digits[..4].parse().ok()?,
        digits[4..6].parse::<u8>().ok()?,
        digits[6..].parse().ok()?,
    );
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    let day =
        (date - time::Date::from_calendar_date(1970, time::Month::January, 1).ok()?).whole_days();
    Some(Partition {
        name: name.into(),
        table,
        day: Some(day),
    })
}

#[cfg(test)]
mod tests {
    use super::super::partitions::partition_name;
    use super::*;

    #[test]
    fn partition_names_parse_back_to_their_day() {
        for day in [0, 19_782, 20_000] {
            let name = partition_name("setting_results", day);
            let p = parse_partition(&name, "setting_results").unwrap();
            assert_eq!((p.table, p.day), ("setting_results", Some(day)));
        }
        let p = parse_partition("compliance_reports_default", "compliance_reports").unwrap();
        assert_eq!(p.day, None);
        assert!(parse_partition("compliance_reports_x; DROP", "compliance_reports").is_none());
        assert!(parse_partition("other_d20240101", "other").is_none());
        assert!(parse_partition("setting_results_d20241399", "setting_results").is_none());
    }
}
