//! The retention task's work on the database: one bounded batch of deletion at a time, and the
//! lock that keeps one run at a time across site servers. The scheduling and the run record are
//! in [`crate::retention`].
//!
//! What goes: compliance reports received before the cutoff with their setting results, the
//! dedup entries of those reports (PostgreSQL's `report_message_ids`), and history intervals
//! that ended before the cutoff. What never goes: open history intervals (current compliance
//! points at them), current compliance, devices, baselines, terms and their acceptances.
//!
//! Every batch is one short transaction and deletion is idempotent, so a run stopped anywhere
//! leaves a consistent database and the next run simply deletes what remains.

use std::time::Duration;

use super::types::{BatchDeleted, TaskLock};
use super::{Store, StoreError};

impl Store {
    /// Deletes one bounded batch of data older than `cutoff_ms` (at most about `max_rows`
    /// rows, or one whole day partition on PostgreSQL). Call it until it returns an empty
    /// [`BatchDeleted`].
    pub async fn delete_aged_batch(
        &self,
        cutoff_ms: i64,
        max_rows: u32,
    ) -> Result<BatchDeleted, StoreError> {
        dispatch!(self, s => s.delete_aged_batch(cutoff_ms, max_rows).await)
    }

    /// Takes the run lock of `task` unless another run holds it (`None`). `lease` bounds how
    /// long a dead holder keeps it on SQLite; the holder renews it between batches.
    pub async fn try_lock_task(
        &self,
        task: &str,
        holder: &str,
        now_ms: i64,
        lease: Duration,
    ) -> Result<Option<TaskLock>, StoreError> {
        match self {
            Store::Sqlite(s) => s.try_lock_task(task, holder, now_ms, lease).await,
            Store::Postgres(s) => s.try_lock_task(task).await,
        }
    }

    /// Extends a SQLite lease (nothing to do on PostgreSQL). False if the lease was lost (it
    /// expired and another run took it).
    pub async fn renew_task_lock(
        &self,
        lock: &TaskLock,
        now_ms: i64,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match (self, lock) {
            (Store::Sqlite(s), TaskLock::Sqlite { task, holder }) => {
                s.renew_task_lock(task, holder, now_ms, lease).await
            }
            _ => Ok(true),
        }
    }

    /// Ends a run lock.
    pub async fn release_task_lock(&self, lock: TaskLock) -> Result<(), StoreError> {
        match (self, lock) {
            (Store::Sqlite(s), TaskLock::Sqlite { task, holder }) => {
                s.release_task_lock(&task, &holder).await
            }
            (Store::Postgres(s), TaskLock::Postgres(conn)) => s.release_task_lock(conn).await,
            _ => Ok(()),
        }
    }
}
