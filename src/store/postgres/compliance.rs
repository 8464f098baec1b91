//! PostgreSQL's own part of definitions, policy and compliance reports (the SQL is in
//! `store/compliance.rs`): the `policy_state` row lock every policy change takes first, and how
//! a current state reaches its report's setting results.

use sqlx::PgConnection;

use super::PostgresStore;
use crate::store::StoreError;

impl PostgresStore {
    /// The joins from a `current_compliance c` row to its report's `setting_results s`, each a
    /// `join` (`JOIN` or `LEFT JOIN`): through `report_message_ids`, since `compliance_reports`
    /// is partitioned by received day and has no message-id index, and with the received time
    /// so that only the report's day partition is read.
    pub(crate) fn current_settings_join(&self, join: &str) -> String {
        format!(
            "{join} report_message_ids m ON m.message_id = c.message_id \
             {join} setting_results s ON s.report_id = m.report_id \
               AND s.received_ms = m.received_ms"
        )
    }
}

/// Takes the row lock every policy-changing transaction takes first.
pub(crate) async fn lock_policy(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT version FROM policy_state WHERE singleton = 1 FOR UPDATE")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
