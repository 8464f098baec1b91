//! Site maintenance task settings. Delete Aged Configuration Management Data is the task whose
//! `delete_older_than_days` is the site's retention age in force: the policy carries it to the
//! relays (which refuse older reports as stale) and the privacy page states it.

use std::collections::BTreeMap;

use super::types::*;
use super::{Store, StoreError};

impl Store {
    /// The settings of the named maintenance task.
    pub async fn maintenance_task(&self, name: &str) -> Result<MaintenanceTask, StoreError> {
        dispatch!(self, s => s.maintenance_task(name).await)
    }

    /// Stores new settings for a task (the caller validated them). Raises the policy version,
    /// since the retention age travels in the policy.
    pub async fn update_maintenance_task(&self, task: &MaintenanceTask) -> Result<(), StoreError> {
        dispatch!(self, s => s.update_maintenance_task(task).await)
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
        dispatch!(self, s => s.start_maintenance_run(task, trigger, started_ms, cutoff_ms).await)
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
            s.update_maintenance_run(run_id, status, now_ms, rows_deleted, error)
                .await
        })
    }

    /// The latest runs of a task, newest first.
    pub async fn maintenance_runs(
        &self,
        task: &str,
        limit: u32,
    ) -> Result<Vec<MaintenanceRun>, StoreError> {
        dispatch!(self, s => s.maintenance_runs(task, limit).await)
    }

    pub async fn maintenance_run(&self, run_id: i64) -> Result<Option<MaintenanceRun>, StoreError> {
        dispatch!(self, s => s.maintenance_run(run_id).await)
    }

    /// Whether a run of `task` by `trigger` started in [`from_ms`, `until_ms`).
    pub async fn maintenance_run_started(
        &self,
        task: &str,
        trigger: RunTrigger,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.maintenance_run_started(task, trigger, from_ms, until_ms).await)
    }

    /// The retention age in force, in days.
    pub async fn retention_days(&self) -> Result<u32, StoreError> {
        Ok(self
            .maintenance_task(DELETE_AGED_CM_DATA)
            .await?
            .delete_older_than_days)
    }
}
