//! The SQLite side of the reads whose SQL differs by backend: where a stored report is, which
//! setting results are its, and every message id.

use super::SqliteStore;
use crate::store::StoreError;

impl SqliteStore {
    /// A report's number and received time, by message id (the reports' own unique index).
    pub(crate) async fn locate(&self, message_id: &str) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT report_id, received_ms FROM compliance_reports WHERE message_id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// The setting results of the report numbered `$1` and received at `$2`, as `s`: by the
    /// report's number (SQLite keeps no received time with them).
    pub(crate) fn settings_of_report(&self) -> &'static str {
        "setting_results s JOIN compliance_reports r ON r.report_id = s.report_id \
         WHERE r.report_id = $1 AND r.received_ms = $2"
    }

    pub async fn report_message_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT message_id FROM compliance_reports ORDER BY report_id")
                .fetch_all(&self.reader)
                .await?,
        )
    }
}
