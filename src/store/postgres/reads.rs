//! The PostgreSQL side of the reads whose SQL differs by backend: where a stored report is
//! found by message id (`report_message_ids`, since `compliance_reports` is partitioned by
//! received day and has no message-id index), and which setting results are its.

use super::PostgresStore;

impl PostgresStore {
    /// The table that maps message ids to reports (`message_id`, `report_id`, `received_ms`):
    /// the dedup table, whose received time names the report's day partition.
    pub(crate) fn message_ids_table(&self) -> &'static str {
        "report_message_ids"
    }

    /// The setting results of the report numbered `$1` and received at `$2`, as `s`: the
    /// received time names the day partition to read.
    pub(crate) fn settings_of_report(&self) -> &'static str {
        "setting_results s WHERE s.report_id = $1 AND s.received_ms = $2"
    }
}
