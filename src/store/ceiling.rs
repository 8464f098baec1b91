//! The ceiling of `mprelay bench writer`: the same report and setting rows the writer stores,
//! written by the same bulk statements (binary `COPY` on PostgreSQL, multi-row `INSERT` on
//! SQLite) into bare tables of the same columns — no index, no partitioning, no dedup, no
//! current state, history or devices — one transaction per batch. The writer's rate over this
//! one, measured in the same run on the same database, is what its own work costs.

use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::{AssertSqlSafe, SqlSafeStr};

use super::{ReportRow, Store, StoreError, postgres, sqlite};
use crate::clock;

const REPORTS: &str = "bench_ceiling_reports";
const SETTINGS: &str = "bench_ceiling_settings";

/// The bare tables, made by [`BareTables::create`] and dropped by [`BareTables::drop`].
pub struct BareTables {
    store: Store,
    next_id: AtomicI64,
}

impl BareTables {
    /// Makes the bare tables in the store's database (dropping leftovers of an earlier run).
    pub async fn create(store: &Store) -> Result<Self, StoreError> {
        let statements: [&str; 4] = match store {
            Store::Sqlite(_) => [
                "DROP TABLE IF EXISTS bench_ceiling_reports",
                "DROP TABLE IF EXISTS bench_ceiling_settings",
                "CREATE TABLE bench_ceiling_reports AS SELECT * FROM compliance_reports WHERE 0",
                "CREATE TABLE bench_ceiling_settings AS SELECT * FROM setting_results WHERE 0",
            ],
            Store::Postgres(_) => [
                "DROP TABLE IF EXISTS bench_ceiling_reports",
                "DROP TABLE IF EXISTS bench_ceiling_settings",
                // The same storage settings as the day partitions.
                "CREATE TABLE bench_ceiling_reports (LIKE compliance_reports) \
                 WITH (toast_tuple_target = 8160)",
                "CREATE TABLE bench_ceiling_settings (LIKE setting_results)",
            ],
        };
        for sql in statements {
            execute(store, sql).await?;
        }
        Ok(Self {
            store: store.clone(),
            next_id: AtomicI64::new(1),
        })
    }

    /// Writes `reports` and their settings in one transaction; returns the setting rows written.
    /// Several calls may run at once, like the writes of several relays.
    pub async fn insert(&self, reports: &[ReportRow]) -> Result<u64, StoreError> {
        let first = self
            .next_id
            .fetch_add(reports.len() as i64, Ordering::Relaxed);
        let numbered: Vec<(i64, &ReportRow)> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| (first + i as i64, r))
            .collect();
        let now = clock::now_ms();
        match &self.store {
            Store::Sqlite(s) => {
                // Checkpointed like the writer's batches, so neither gets the other's for free.
                s.before_write().await?;
                let mut tx = s.writer_pool().begin_with("BEGIN IMMEDIATE").await?;
                sqlite::write::insert_reports(&mut tx, REPORTS, &numbered, now).await?;
                let n = sqlite::write::insert_settings(&mut tx, SETTINGS, &numbered).await?;
                tx.commit().await?;
                s.after_write();
                Ok(n)
            }
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                postgres::write::copy_reports(&mut tx, REPORTS, &numbered, now).await?;
                let n = postgres::write::copy_settings(&mut tx, SETTINGS, &numbered).await?;
                tx.commit().await?;
                Ok(n)
            }
        }
    }

    /// Drops the bare tables.
    pub async fn drop(self) -> Result<(), StoreError> {
        for t in [REPORTS, SETTINGS] {
            execute(&self.store, &format!("DROP TABLE IF EXISTS {t}")).await?;
        }
        Ok(())
    }
}

async fn execute(store: &Store, sql: &str) -> Result<(), StoreError> {
    // Only the constant statements above.
    let sql = AssertSqlSafe(sql.to_string()).into_sql_str();
    match store {
        Store::Sqlite(s) => {
            sqlx::query(sql).execute(s.writer_pool()).await?;
        }
        Store::Postgres(s) => {
            sqlx::query(sql).execute(s.pool()).await?;
        }
    }
    Ok(())
}
