//! The PostgreSQL side of the reads whose SQL differs by backend: where a stored report is
//! (through `report_message_ids`, since `compliance_reports` is partitioned by received day and
//! has no message-id index), which setting results are its, and every message id.

use super::PostgresStore;
use crate::store::StoreError;

impl PostgresStore {
    /// A report's number and received time (which names its partition), by message id.
    pub(crate) async fn locate(&self, message_id: &str) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT report_id, received_ms FROM report_message_ids WHERE message_id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The setting results of the report numbered `$1` and received at `$2`, as `s`: the
    /// received time names the day partition to read.
    pub(crate) fn settings_of_report(&self) -> &'static str {
        "setting_results s WHERE s.report_id = $1 AND s.received_ms = $2"
    }

    pub async fn report_message_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT message_id FROM report_message_ids ORDER BY report_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
