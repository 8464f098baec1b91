//! The PostgreSQL side of the reads whose SQL differs by backend: a stored report and its
//! settings, found through `report_message_ids` so that only the report's day partition is read,
//! and every message id.

use sqlx::Row;

use super::PostgresStore;
use crate::store::{ReportView, SettingView, StoreError};

impl PostgresStore {
    /// Where a report lives: its number and its received time (which names its partition).
    async fn locate(&self, message_id: &str) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT report_id, received_ms FROM report_message_ids WHERE message_id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn report(&self, message_id: &str) -> Result<Option<ReportView>, StoreError> {
        let Some((id, received)) = self.locate(message_id).await? else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT message_id, device_id, baseline_id, baseline_revision, baseline_name, \
             evaluated_ms, received_ms, relay_id, state, max_severity, n_compliant, \
             n_non_compliant, n_error, n_not_applicable, n_unknown, signature, signed_bytes \
             FROM compliance_reports WHERE report_id = $1 AND received_ms = $2",
        )
        .bind(id)
        .bind(received)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ReportView {
                message_id: r.try_get(0)?,
                device_id: r.try_get(1)?,
                baseline_id: r.try_get(2)?,
                baseline_revision: r.try_get::<i32, _>(3)? as u32,
                baseline_name: r.try_get(4)?,
                evaluated_ms: r.try_get(5)?,
                received_ms: r.try_get(6)?,
                relay_id: r.try_get(7)?,
                state: r.try_get(8)?,
                max_severity: r.try_get(9)?,
                n_compliant: r.try_get::<i32, _>(10)? as u32,
                n_non_compliant: r.try_get::<i32, _>(11)? as u32,
                n_error: r.try_get::<i32, _>(12)? as u32,
                n_not_applicable: r.try_get::<i32, _>(13)? as u32,
                n_unknown: r.try_get::<i32, _>(14)? as u32,
                signature: r.try_get(15)?,
                signed_bytes: r.try_get(16)?,
            })
        })
        .transpose()
    }

    pub async fn report_settings(&self, message_id: &str) -> Result<Vec<SettingView>, StoreError> {
        let Some((id, received)) = self.locate(message_id).await? else {
            return Ok(vec![]);
        };
        let rows = sqlx::query(
            "SELECT ci_id, ci_revision, setting_id, state, severity, expected, observed_before, \
             observed_after, remediated, error FROM setting_results \
             WHERE report_id = $1 AND received_ms = $2 ORDER BY ordinal",
        )
        .bind(id)
        .bind(received)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SettingView {
                    ci_id: r.try_get(0)?,
                    ci_revision: r.try_get::<i32, _>(1)? as u32,
                    setting_id: r.try_get(2)?,
                    state: r.try_get(3)?,
                    severity: r.try_get(4)?,
                    expected: r.try_get(5)?,
                    observed_before: r.try_get(6)?,
                    observed_after: r.try_get(7)?,
                    remediated: r.try_get(8)?,
                    error: r.try_get(9)?,
                })
            })
            .collect()
    }

    pub async fn report_message_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT message_id FROM report_message_ids ORDER BY report_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
