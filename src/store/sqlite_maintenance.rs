//! SQLite queries for maintenance task settings (see `maintenance.rs`).

use sqlx::Row;

use super::StoreError;
use super::maintenance::MaintenanceTask;
use super::sqlite::SqliteStore;
use super::sqlite_compliance::bump_policy_version;
use crate::clock;

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
        let days: String = r.try_get(3)?;
        Ok(MaintenanceTask {
            name: r.try_get(0)?,
            enabled: r.try_get(1)?,
            delete_older_than_days: r.try_get::<i64, _>(2)? as u32,
            days_of_week: days
                .split(',')
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect(),
            begin_time: r.try_get(4)?,
            latest_begin_time: r.try_get(5)?,
            time_zone: r.try_get(6)?,
            updated_ms: r.try_get(7)?,
        })
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
}
