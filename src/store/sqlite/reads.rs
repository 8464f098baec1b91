//! The SQLite side of the reads whose SQL differs by backend: where a stored report is found
//! by message id, and which setting results are its.

use super::SqliteStore;

impl SqliteStore {
    /// The table that maps message ids to reports (`message_id`, `report_id`, `received_ms`):
    /// the reports themselves, by their unique message-id index.
    pub(crate) fn message_ids_table(&self) -> &'static str {
        "compliance_reports"
    }

    /// The setting results of the report numbered `$1` and received at `$2`, as `s`: by the
    /// report's number (SQLite keeps no received time with them).
    pub(crate) fn settings_of_report(&self) -> &'static str {
        "setting_results s JOIN compliance_reports r ON r.report_id = s.report_id \
         WHERE r.report_id = $1 AND r.received_ms = $2"
    }
}
