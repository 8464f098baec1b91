//! Site maintenance task settings. Delete Aged Configuration Management Data is the task whose
//! `delete_older_than_days` is the site's retention age in force: the policy carries it to the
//! relays (which refuse older reports as stale) and the privacy page states it. The SQL is the
//! same on both backends.

use std::collections::BTreeMap;

use super::rows::{maintenance_run_row, maintenance_task_row, select_maintenance_runs};
use super::types::{DELETE_AGED_CM_DATA, MaintenanceRun, MaintenanceTask, RunStatus, RunTrigger};
use super::{Store, StoreError};
use crate::clock;

impl Store {
    /// The settings of the named maintenance task.
    pub async fn maintenance_task(&self, name: &str) -> Result<MaintenanceTask, StoreError> {
        read!(self, pool => {
            let r = sqlx::query(
                "SELECT name, enabled, delete_older_than_days, days_of_week, begin_time, \
                 latest_begin_time, time_zone, updated_ms FROM maintenance_tasks WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("maintenance task {name:?} is missing")))?;
            maintenance_task_row(&r)
        })
    }

    /// Stores new settings for a task (the caller validated them). Raises the policy version,
    /// since the retention age travels in the policy.
    /// Its audit entry, by `actor`, is written in the same transaction.
    pub async fn update_maintenance_task(
        &self,
        actor: &crate::store::Actor,
        task: &MaintenanceTask,
    ) -> Result<(), StoreError> {
        let before = self.maintenance_task(&task.name).await?;
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_policy_change().await?;
            sql::update_task(&mut tx, task).await?;
            audit::record(&mut tx, actor, crate::store::AuditChange {
                action: "update",
                object: "maintenance_task",
                object_id: &task.name,
                before: serde_json::to_value(&before).ok(),
                after: serde_json::to_value(task).ok(),
            })
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records the start of a run; returns its id. Runs left `running` by a dead process are
    /// marked `interrupted` first.
    pub async fn start_maintenance_run(
        &self,
        task: &str,
        trigger: RunTrigger,
        started_ms: i64,
        cutoff_ms: i64,
    ) -> Result<i64, StoreError> {
        dispatch!(self, s => {
            let mut tx = s.begin_write().await?;
            sqlx::query(
                "UPDATE maintenance_runs SET status = 'interrupted', ended_ms = $1 \
                 WHERE task = $2 AND status = 'running'",
            )
            .bind(started_ms)
            .bind(task)
            .execute(&mut *tx)
            .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO maintenance_runs (task, trigger, status, started_ms, cutoff_ms) \
                 VALUES ($1, $2, 'running', $3, $4) RETURNING run_id",
            )
            .bind(task)
            .bind(trigger.as_str())
            .bind(started_ms)
            .bind(cutoff_ms)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Records progress or the end of a run (`status` other than running ends it).
    pub async fn update_maintenance_run(
        &self,
        run_id: i64,
        status: RunStatus,
        now_ms: i64,
        rows_deleted: &BTreeMap<String, u64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => {
            let total: u64 = rows_deleted.values().sum();
            let json = serde_json::to_string(rows_deleted).expect("a map of counts serializes");
            sqlx::query(
                "UPDATE maintenance_runs SET status = $1, ended_ms = $2, rows_deleted = $3, \
                 total_deleted = $4, error = $5 WHERE run_id = $6",
            )
            .bind(status.as_str())
            .bind((status != RunStatus::Running).then_some(now_ms))
            .bind(json)
            .bind(total as i64)
            .bind(error)
            .bind(run_id)
            .execute(s.writer_pool())
            .await?;
            Ok(())
        })
    }

    /// The latest runs of a task, newest first.
    pub async fn maintenance_runs(
        &self,
        task: &str,
        limit: u32,
    ) -> Result<Vec<MaintenanceRun>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(select_maintenance_runs!(
                "WHERE task = $1 ORDER BY started_ms DESC, run_id DESC LIMIT $2"
            ))
            .bind(task)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter().map(maintenance_run_row).collect()
        })
    }

    pub async fn maintenance_run(&self, run_id: i64) -> Result<Option<MaintenanceRun>, StoreError> {
        read!(self, pool => {
            let row = sqlx::query(select_maintenance_runs!("WHERE run_id = $1"))
                .bind(run_id)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(maintenance_run_row).transpose()
        })
    }

    /// Whether a run of `task` by `trigger` started in [`from_ms`, `until_ms`).
    pub async fn maintenance_run_started(
        &self,
        task: &str,
        trigger: RunTrigger,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        read!(self, pool => {
            Ok(sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM maintenance_runs WHERE task = $1 AND trigger = $2 \
                 AND started_ms >= $3 AND started_ms < $4)",
            )
            .bind(task)
            .bind(trigger.as_str())
            .bind(from_ms)
            .bind(until_ms)
            .fetch_one(pool)
            .await?)
        })
    }

    /// The retention age in force, in days.
    pub async fn retention_days(&self) -> Result<u32, StoreError> {
        Ok(self
            .maintenance_task(DELETE_AGED_CM_DATA)
            .await?
            .delete_older_than_days)
    }
}

for_each_backend! {
    /// Stores a task's new settings and raises the policy version.
    pub(crate) async fn update_task(tx: &mut Conn, t: &MaintenanceTask) -> Result<(), StoreError> {
        let now = clock::now_ms();
        let n = sqlx::query(
            "UPDATE maintenance_tasks SET enabled = $1, delete_older_than_days = $2, \
             days_of_week = $3, begin_time = $4, latest_begin_time = $5, time_zone = $6, \
             updated_ms = $7 WHERE name = $8",
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
        policy::bump_policy_version(&mut *tx, now).await?;
        Ok(())
    }
}
