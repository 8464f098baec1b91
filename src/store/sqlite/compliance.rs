//! SQLite's own part of compliance reports (the shared SQL is in `store/compliance.rs`): the
//! two reads that join setting results to reports by message id.

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::rows::{group_noncompliant, setting_summary_row};
use crate::store::types::{NoncompliantDevice, SettingSummary};

impl SqliteStore {
    pub(crate) async fn setting_summaries(
        &self,
        baseline_id: &str,
    ) -> Result<Vec<SettingSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.ci_id, s.setting_id, MAX(s.severity), \
               SUM(s.state = 'compliant'), SUM(s.state = 'non_compliant'), SUM(s.state = 'error'), \
               SUM(s.state = 'not_applicable'), SUM(s.state = 'unknown'), SUM(s.remediated <> 0) \
             FROM current_compliance c \
             JOIN compliance_reports r ON r.message_id = c.message_id \
             JOIN setting_results s ON s.report_id = r.report_id \
             WHERE c.baseline_id = ? \
             GROUP BY s.ci_id, s.setting_id ORDER BY MIN(s.ordinal), s.ci_id, s.setting_id",
        )
        .bind(baseline_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(setting_summary_row).collect()
    }

    pub(crate) async fn noncompliant_devices(
        &self,
        baseline_id: &str,
    ) -> Result<Vec<NoncompliantDevice>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.device_id, COALESCE(d.hostname, ''), c.baseline_revision, c.max_severity, \
               c.evaluated_ms, s.ci_id, s.ci_revision, s.setting_id, s.state, s.severity, \
               s.expected, s.observed_before, s.observed_after, s.remediated, s.error \
             FROM current_compliance c \
             LEFT JOIN devices d ON d.device_id = c.device_id \
             LEFT JOIN compliance_reports r ON r.message_id = c.message_id \
             LEFT JOIN setting_results s ON s.report_id = r.report_id \
               AND s.state IN ('non_compliant', 'error') \
             WHERE c.baseline_id = ? AND c.state = 'non_compliant' \
             ORDER BY c.device_id, s.ordinal",
        )
        .bind(baseline_id)
        .fetch_all(&self.reader)
        .await?;
        group_noncompliant(&rows)
    }
}
