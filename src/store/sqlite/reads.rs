//! The SQLite side of the reads whose SQL differs by backend: a stored report and its settings
//! found by message id (PostgreSQL finds them through its partitions), every message id.

use sqlx::Row;

use super::SqliteStore;
use crate::store::rows::setting_view;
use crate::store::{ReportView, SettingView, StoreError};

impl SqliteStore {
    pub async fn report(&self, message_id: &str) -> Result<Option<ReportView>, StoreError> {
        let row = sqlx::query(
            "SELECT message_id, device_id, baseline_id, baseline_revision, baseline_name, \
             evaluated_ms, received_ms, relay_id, state, max_severity, n_compliant, \
             n_non_compliant, n_error, n_not_applicable, n_unknown, signature, signed_bytes \
             FROM compliance_reports WHERE message_id = ?",
        )
        .bind(message_id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(ReportView {
                message_id: r.try_get(0)?,
                device_id: r.try_get(1)?,
                baseline_id: r.try_get(2)?,
                baseline_revision: r.try_get::<i64, _>(3)? as u32,
                baseline_name: r.try_get(4)?,
                evaluated_ms: r.try_get(5)?,
                received_ms: r.try_get(6)?,
                relay_id: r.try_get(7)?,
                state: r.try_get(8)?,
                max_severity: r.try_get(9)?,
                n_compliant: r.try_get::<i64, _>(10)? as u32,
                n_non_compliant: r.try_get::<i64, _>(11)? as u32,
                n_error: r.try_get::<i64, _>(12)? as u32,
                n_not_applicable: r.try_get::<i64, _>(13)? as u32,
                n_unknown: r.try_get::<i64, _>(14)? as u32,
                signature: r.try_get(15)?,
                signed_bytes: r.try_get(16)?,
            })
        })
        .transpose()
    }

    pub async fn report_settings(&self, message_id: &str) -> Result<Vec<SettingView>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.ci_id, s.ci_revision, s.setting_id, s.state, s.severity, s.expected, \
             s.observed_before, s.observed_after, s.remediated, s.error \
             FROM setting_results s JOIN compliance_reports r ON r.report_id = s.report_id \
             WHERE r.message_id = ? ORDER BY s.ordinal",
        )
        .bind(message_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| setting_view(r, 0)).collect()
    }

    pub async fn report_message_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT message_id FROM compliance_reports ORDER BY report_id")
                .fetch_all(&self.reader)
                .await?,
        )
    }
}
