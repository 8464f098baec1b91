//! PostgreSQL deletion batches and the run lock of the retention task (see
//! `store/retention.rs`; the partition scheme is in `migrations/postgres/0001_intake.sql`).
//!
//! A batch is one of, in this order:
//! - dropping one whole day partition (`<table>_dYYYYMMDD`) that ends at or before the cutoff,
//!   `setting_results` before `compliance_reports` of the same day, after counting its rows for
//!   the run record. Dropping a partition locks its parent for a moment, so it runs under a
//!   short `lock_timeout` and tries again rather than making the writer queue behind it;
//! - deleting up to `max_rows` rows older than the cutoff, by `ctid`, from a partition that
//!   holds the cutoff or from a `_default` partition (indexed by `received_ms` there);
//! - the same from `report_message_ids`, the dedup index of reports: an entry of a report that
//!   is gone only lets a replay of that report be stored again, and relays refuse reports older
//!   than the retention age before they are ever spooled;
//! - deleting up to `max_rows` closed history intervals that ended before the cutoff.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection, SqlSafeStr};
use tracing::{debug, info};

use super::PostgresStore;
use super::partitions::{DAY_MS, PARTITIONED};
use crate::store::StoreError;
use crate::store::retention::{BatchDeleted, T_HISTORY, T_MESSAGE_IDS, TaskLock};

/// How long dropping a partition waits for the writers' locks before it steps back.
const DROP_LOCK_TIMEOUT: &str = "500ms";
/// Tries to drop one partition before the run fails with the lock timeout.
const DROP_TRIES: u32 = 40;

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
        // Whole days first, oldest first; setting_results of a day before its reports.
        let droppable = parts
            .iter()
            .filter(|p| p.day.is_some_and(|d| (d + 1) * DAY_MS <= cutoff_ms))
            .min_by_key(|p| (p.day, p.table != "setting_results"));
        if let Some(p) = droppable {
            let rows = self.drop_partition(p).await?;
            return Ok(BatchDeleted {
                rows: vec![(p.table, rows)],
                partitions_dropped: 1,
            });
        }
        for table in PARTITIONED.iter().rev() {
            for p in parts.iter().filter(|p| p.table == *table) {
                if p.day.is_some_and(|d| d * DAY_MS >= cutoff_ms) {
                    continue;
                }
                let n = self
                    .delete_by_ctid(&p.name, "received_ms", cutoff_ms, limit)
                    .await?;
                if n > 0 {
                    return Ok(BatchDeleted {
                        rows: vec![(p.table, n)],
                        partitions_dropped: 0,
                    });
                }
            }
        }
        let n = self
            .delete_by_ctid(T_MESSAGE_IDS, "received_ms", cutoff_ms, limit)
            .await?;
        if n > 0 {
            return Ok(BatchDeleted {
                rows: vec![(T_MESSAGE_IDS, n)],
                partitions_dropped: 0,
            });
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

    /// Deletes up to `limit` rows of `table` whose `column` is before `cutoff_ms`.
    async fn delete_by_ctid(
        &self,
        table: &str,
        column: &str,
        cutoff_ms: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        // Table and column names are constants or checked partition names.
        let sql = format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} \
             WHERE {column} < $1 LIMIT $2))"
        );
        Ok(sqlx::query(AssertSqlSafe(sql).into_sql_str())
            .bind(cutoff_ms)
            .bind(limit)
            .execute(self.pool())
            .await?
            .rows_affected())
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
}

/// Ends the session holding an advisory run lock, which releases it.
pub(crate) async fn release(conn: PgConnection) -> Result<(), StoreError> {
    conn.close().await?;
    Ok(())
}

/// A partition's table and day from its name, if the name follows the scheme.
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
