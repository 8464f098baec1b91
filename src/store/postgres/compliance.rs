//! PostgreSQL's own part of definitions, policy and compliance reports (the shared SQL is in
//! `store/compliance.rs`): the `policy_state` row lock every policy change takes first, and the
//! two reads that find setting results through `report_message_ids` and the day partitions.

use sqlx::PgConnection;

use super::PostgresStore;
use crate::store::StoreError;
use crate::store::rows::{group_noncompliant, setting_summary_row};
use crate::store::types::{NoncompliantDevice, SettingSummary};

impl PostgresStore {
    pub(crate) async fn setting_summaries(
        &self,
        baseline_id: &str,
    ) -> Result<Vec<SettingSummary>, StoreError> {
        // Reports are found through report_message_ids (compliance_reports is partitioned by
        // received day and has no message-id index).
        let rows = sqlx::query(
            "SELECT s.ci_id, s.setting_id, MAX(s.severity), \
               COUNT(*) FILTER (WHERE s.state = 'compliant'), \
               COUNT(*) FILTER (WHERE s.state = 'non_compliant'), \
               COUNT(*) FILTER (WHERE s.state = 'error'), \
               COUNT(*) FILTER (WHERE s.state = 'not_applicable'), \
               COUNT(*) FILTER (WHERE s.state = 'unknown'), \
               COUNT(*) FILTER (WHERE s.remediated) \
             FROM current_compliance c \
             JOIN report_message_ids m ON m.message_id = c.message_id \
             JOIN setting_results s ON s.report_id = m.report_id AND s.received_ms = m.received_ms \
             WHERE c.baseline_id = $1 \
             GROUP BY s.ci_id, s.setting_id ORDER BY MIN(s.ordinal), s.ci_id, s.setting_id",
        )
        .bind(baseline_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(setting_summary_row).collect()
    }

    pub(crate) async fn noncompliant_devices(
        &self,
        baseline_id: &str,
    ) -> Result<Vec<NoncompliantDevice>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.device_id, COALESCE(d.hostname, ''), c.baseline_revision::bigint, \
               c.max_severity, c.evaluated_ms, s.ci_id, s.ci_revision::bigint, s.setting_id, \
               s.state, s.severity, s.expected, s.observed_before, s.observed_after, \
               s.remediated, s.error \
             FROM current_compliance c \
             LEFT JOIN devices d ON d.device_id = c.device_id \
             LEFT JOIN report_message_ids m ON m.message_id = c.message_id \
             LEFT JOIN setting_results s ON s.report_id = m.report_id \
               AND s.received_ms = m.received_ms AND s.state IN ('non_compliant', 'error') \
             WHERE c.baseline_id = $1 AND c.state = 'non_compliant' \
             ORDER BY c.device_id, s.ordinal",
        )
        .bind(baseline_id)
        .fetch_all(self.pool())
        .await?;
        group_noncompliant(&rows)
    }
}

/// Takes the row lock every policy-changing transaction takes first.
pub(crate) async fn lock_policy(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT version FROM policy_state WHERE singleton = 1 FOR UPDATE")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
