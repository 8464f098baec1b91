//! The PostgreSQL side of the reads whose SQL differs by backend: a stored report and its
//! settings, found through `report_message_ids` so that only the report's day partition is read,
//! and every message id.

use sqlx::AssertSqlSafe;

use super::PostgresStore;
use crate::store::rows::{REPORT_COLS, SETTING_COLS, report_view_row, setting_view};
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
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REPORT_COLS} FROM compliance_reports \
             WHERE report_id = $1 AND received_ms = $2"
        )))
        .bind(id)
        .bind(received)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(report_view_row).transpose()
    }

    pub async fn report_settings(&self, message_id: &str) -> Result<Vec<SettingView>, StoreError> {
        let Some((id, received)) = self.locate(message_id).await? else {
            return Ok(vec![]);
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SETTING_COLS} FROM setting_results s \
             WHERE s.report_id = $1 AND s.received_ms = $2 ORDER BY s.ordinal"
        )))
        .bind(id)
        .bind(received)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| setting_view(r, 0)).collect()
    }

    pub async fn report_message_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT message_id FROM report_message_ids ORDER BY report_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
