//! Site maintenance task settings. Delete Aged Configuration Management Data is the task whose
//! `delete_older_than_days` is the site's retention age in force: the policy carries it to the
//! relays (which refuse older reports as stale) and the privacy page states it.

use serde::Serialize;

use super::{Store, StoreError};

/// The name of the retention task.
pub const DELETE_AGED_CM_DATA: &str = "delete_aged_configuration_management_data";

/// A maintenance task's settings as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaintenanceTask {
    pub name: String,
    pub enabled: bool,
    /// 1 to 3650.
    pub delete_older_than_days: u32,
    /// Lowercase three-letter days, e.g. `["sat"]`.
    pub days_of_week: Vec<String>,
    /// "HH:MM" in `time_zone`.
    pub begin_time: String,
    pub latest_begin_time: String,
    /// IANA time zone name.
    pub time_zone: String,
    pub updated_ms: i64,
}

impl Store {
    /// The settings of the named maintenance task.
    pub async fn maintenance_task(&self, name: &str) -> Result<MaintenanceTask, StoreError> {
        match self {
            Store::Sqlite(s) => s.maintenance_task(name).await,
        }
    }

    /// Stores new settings for a task (the caller validated them). Raises the policy version,
    /// since the retention age travels in the policy.
    pub async fn update_maintenance_task(&self, task: &MaintenanceTask) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.update_maintenance_task(task).await,
        }
    }

    /// The retention age in force, in days.
    pub async fn retention_days(&self) -> Result<u32, StoreError> {
        Ok(self
            .maintenance_task(DELETE_AGED_CM_DATA)
            .await?
            .delete_older_than_days)
    }
}
