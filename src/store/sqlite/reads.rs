//! The SQLite side of the reads whose SQL differs by backend: a stored report and its settings
//! by message id (PostgreSQL finds them through its partitions), and every message id.

use sqlx::AssertSqlSafe;

use super::SqliteStore;
use crate::store::rows::{REPORT_COLS, SETTING_COLS, report_view_row, setting_view};
use crate::store::{ReportView, SettingView, StoreError};

impl SqliteStore {
    pub async fn report(&self, message_id: &str) -> Result<Option<ReportView>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REPORT_COLS} FROM compliance_reports WHERE message_id = $1"
        )))
        .bind(message_id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(report_view_row).transpose()
    }

    pub async fn report_settings(&self, message_id: &str) -> Result<Vec<SettingView>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SETTING_COLS} FROM setting_results s \
             JOIN compliance_reports r ON r.report_id = s.report_id \
             WHERE r.message_id = $1 ORDER BY s.ordinal"
        )))
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
