//! SQLite queries for maintenance task settings (see `maintenance.rs`).

use crate::store::rows::{maintenance_run_row, maintenance_task_row, select_maintenance_runs};
use std::collections::BTreeMap;

use crate::clock;
use crate::store::SqliteStore;
use crate::store::StoreError;
use crate::store::compliance::on_sqlite::bump_policy_version;
use crate::store::types::{MaintenanceRun, MaintenanceTask, RunStatus, RunTrigger};

impl SqliteStore {
    pub async fn maintenance_task(&self, name: &str) -> Result<MaintenanceTask, StoreError> {
        let r = sqlx::query(
            "SELECT name, enabled, delete_older_than_days, days_of_week, begin_time, \
             latest_begin_time, time_zone, updated_ms FROM maintenance_tasks WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("maintenance task {name:?} is missing")))?;
        maintenance_task_row(&r)
    }

    pub async fn update_maintenance_task(&self, t: &MaintenanceTask) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let now = clock::now_ms();
        let n = sqlx::query(
            "UPDATE maintenance_tasks SET enabled = ?, delete_older_than_days = ?, \
             days_of_week = ?, begin_time = ?, latest_begin_time = ?, time_zone = ?, \
             updated_ms = ? WHERE name = ?",
        )
        .bind(t.enabled)
        .bind(i64::from(t.delete_older_than_days))
        .bind(t.days_of_week.join(","))
        .bind(&t.begin_time)
        .bind(&t.latest_begin_time)
        .bind(&t.time_zone)
        .bind(now)
        .bind(&t.name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Corrupt(format!(
                "maintenance task {:?} is missing",
                t.name
            )));
        }
        bump_policy_version(&mut tx, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn start_maintenance_run(
        &self,
        task: &str,
        trigger: RunTrigger,
        started_ms: i64,
        cutoff_ms: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE maintenance_runs SET status = 'interrupted', ended_ms = ? \
             WHERE task = ? AND status = 'running'",
        )
        .bind(started_ms)
        .bind(task)
        .execute(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO maintenance_runs (task, trigger, status, started_ms, cutoff_ms) \
             VALUES (?, ?, 'running', ?, ?) RETURNING run_id",
        )
        .bind(task)
        .bind(trigger.as_str())
        .bind(started_ms)
        .bind(cutoff_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn update_maintenance_run(
        &self,
        run_id: i64,
        status: RunStatus,
        now_ms: i64,
        rows_deleted: &BTreeMap<String, u64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let total: u64 = rows_deleted.values().sum();
        let json = serde_json::to_string(rows_deleted).expect("a map of counts serializes");
        sqlx::query(
            "UPDATE maintenance_runs SET status = ?, ended_ms = ?, rows_deleted = ?, \
             total_deleted = ?, error = ? WHERE run_id = ?",
        )
        .bind(status.as_str())
        .bind((status != RunStatus::Running).then_some(now_ms))
        .bind(json)
        .bind(total as i64)
        .bind(error)
        .bind(run_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn maintenance_runs(
        &self,
        task: &str,
        limit: u32,
    ) -> Result<Vec<MaintenanceRun>, StoreError> {
        let rows = sqlx::query(select_maintenance_runs!(
            "WHERE task = ? ORDER BY started_ms DESC, run_id DESC LIMIT ?"
        ))
        .bind(task)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(maintenance_run_row).collect()
    }

    pub async fn maintenance_run(&self, run_id: i64) -> Result<Option<MaintenanceRun>, StoreError> {
        let row = sqlx::query(select_maintenance_runs!("WHERE run_id = ?"))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(maintenance_run_row).transpose()
    }

    pub async fn maintenance_run_started(
        &self,
        task: &str,
        trigger: RunTrigger,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM maintenance_runs WHERE task = ? AND trigger = ? \
             AND started_ms >= ? AND started_ms < ?)",
        )
        .bind(task)
        .bind(trigger.as_str())
        .bind(from_ms)
        .bind(until_ms)
        .fetch_one(&self.reader)
        .await?)
    }
}
