//! SQLite's own part of the compliance reports (the SQL is in `store/compliance.rs`): how a
//! current state reaches its report's setting results.

use super::SqliteStore;

impl SqliteStore {
    /// The joins from a `current_compliance c` row to its report's `setting_results s`, each a
    /// `join` (`JOIN` or `LEFT JOIN`): through the report, by message id.
    pub(crate) fn current_settings_join(&self, join: &str) -> String {
        format!(
            "{join} compliance_reports r ON r.message_id = c.message_id \
             {join} setting_results s ON s.report_id = r.report_id"
        )
    }
}
