//! SQLite deletion batches and the run lease of the retention task (see `retention.rs`).
//!
//! A batch is one `BEGIN IMMEDIATE` transaction on the store's single writer connection, so the
//! intake writer waits for at most one batch: the oldest reports (by received time, through
//! the `compliance_reports_received` index) whose setting results add up to about `max_rows`,
//! deleted with their setting results (found by the setting_results primary key); once no such
//! report is left, closed history intervals by the partial `compliance_history_ended` index.

use std::time::Duration;

use sqlx::Row;

use crate::store::SqliteStore;
use crate::store::StoreError;
use crate::store::types::{BatchDeleted, T_HISTORY, T_REPORTS, T_SETTINGS, TaskLock};

/// Settings per report the candidate list is sized for: a batch looks at `max_rows / 25`
/// reports, so 35-setting reports fill it to `max_rows` and reports with few settings make a
/// smaller batch rather than a longer one.
const SIZING_SETTINGS: u32 = 25;

impl SqliteStore {
    pub async fn delete_aged_batch(
        &self,
        cutoff_ms: i64,
        max_rows: u32,
    ) -> Result<BatchDeleted, StoreError> {
        let max_rows = max_rows.max(1);
        self.before_write().await?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let candidates = sqlx::query(
            "SELECT report_id, n_compliant + n_non_compliant + n_error + n_not_applicable \
             + n_unknown FROM compliance_reports WHERE received_ms < ? \
             AND message_id NOT IN (SELECT message_id FROM current_compliance) \
             ORDER BY received_ms LIMIT ?",
        )
        .bind(cutoff_ms)
        .bind(i64::from((max_rows / SIZING_SETTINGS).max(1)))
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::new();
        let mut planned = 0i64;
        for r in &candidates {
            if !ids.is_empty() && planned >= i64::from(max_rows) {
                break;
            }
            ids.push(r.try_get::<i64, _>(0)?);
            planned += 1 + r.try_get::<i64, _>(1)?.max(0);
        }
        let mut out = BatchDeleted::default();
        if !ids.is_empty() {
            let list = serde_json::to_string(&ids).expect("integers serialize");
            let settings = sqlx::query(
                "DELETE FROM setting_results WHERE report_id IN (SELECT value FROM json_each(?))",
            )
            .bind(&list)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let reports = sqlx::query(
                "DELETE FROM compliance_reports WHERE report_id IN (SELECT value FROM json_each(?))",
            )
            .bind(&list)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            out.rows.push((T_REPORTS, reports));
            out.rows.push((T_SETTINGS, settings));
        } else {
            let history = sqlx::query(
                "DELETE FROM compliance_history WHERE history_id IN (SELECT history_id \
                 FROM compliance_history WHERE ended_ms < ? LIMIT ?)",
            )
            .bind(cutoff_ms)
            .bind(i64::from(max_rows))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if history > 0 {
                out.rows.push((T_HISTORY, history));
            }
        }
        tx.commit().await?;
        self.after_write();
        Ok(out)
    }

    pub async fn try_lock_task(
        &self,
        task: &str,
        holder: &str,
        now_ms: i64,
        lease: Duration,
    ) -> Result<Option<TaskLock>, StoreError> {
        let took = sqlx::query(
            "INSERT INTO maintenance_leases (task, holder, expires_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (task) DO UPDATE SET holder = excluded.holder, \
             expires_ms = excluded.expires_ms WHERE maintenance_leases.expires_ms <= ?4",
        )
        .bind(task)
        .bind(holder)
        .bind(now_ms.saturating_add(lease.as_millis() as i64))
        .bind(now_ms)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok((took == 1).then(|| TaskLock::Sqlite {
            task: task.into(),
            holder: holder.into(),
        }))
    }

    pub async fn renew_task_lock(
        &self,
        task: &str,
        holder: &str,
        now_ms: i64,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE maintenance_leases SET expires_ms = ? WHERE task = ? AND holder = ?",
        )
        .bind(now_ms.saturating_add(lease.as_millis() as i64))
        .bind(task)
        .bind(holder)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn release_task_lock(&self, task: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM maintenance_leases WHERE task = ? AND holder = ?")
            .bind(task)
            .bind(holder)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
