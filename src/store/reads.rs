//! The reads every part of the site shares: relay cursors, row counts, per-baseline summaries,
//! stored reports and settings, devices, current compliance and history.

use super::rows::{
    Cols, REPORT_COLS, SETTING_COLS, baseline_summary_row, current_row, cursor_row,
    device_view_row, history_view_row, report_view_row, setting_view,
};
use super::types::{
    BaselineSummary, Counts, CurrentRow, DeviceView, HistoryView, RelayCursor, ReportView,
    SettingView,
};
use super::{Store, StoreError};

const CURSOR_COLS: &str = "SELECT relay_id, spool_id, through_seq, url, last_pull_ms, last_seq, \
                           pending_records, pending_bytes FROM relay_cursors";

impl Store {
    pub async fn relay_cursor(&self, relay_id: &str) -> Result<Option<RelayCursor>, StoreError> {
        let sql = format!("{CURSOR_COLS} WHERE relay_id = $1");
        // From the pool batches are written with, so a writer reads its own cursor.
        dispatch!(self, s => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(relay_id)
                .fetch_optional(s.writer_pool())
                .await?;
            row.map(|r| cursor_row(&r)).transpose()
        })
    }

    pub async fn relay_cursors(&self) -> Result<Vec<RelayCursor>, StoreError> {
        let sql = format!("{CURSOR_COLS} ORDER BY relay_id");
        read!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
            rows.iter().map(cursor_row).collect()
        })
    }

    pub async fn counts(&self) -> Result<Counts, StoreError> {
        read!(self, pool => {
            let r = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM devices), (SELECT COUNT(*) FROM compliance_reports), \
                 (SELECT COUNT(*) FROM setting_results), (SELECT COUNT(*) FROM terms_acceptances), \
                 (SELECT COUNT(*) FROM quarantined_records)",
            )
            .fetch_one(pool)
            .await?;
            Ok(Counts {
                devices: r.count(0)?,
                reports: r.count(1)?,
                settings: r.count(2)?,
                acceptances: r.count(3)?,
                quarantined: r.count(4)?,
            })
        })
    }

    pub async fn baseline_summaries(&self) -> Result<Vec<BaselineSummary>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT baseline_id, MAX(baseline_name), COUNT(*), \
                 COUNT(*) FILTER (WHERE state = 'compliant'), \
                 COUNT(*) FILTER (WHERE state = 'non_compliant'), \
                 COUNT(*) FILTER (WHERE state = 'error'), \
                 COUNT(*) FILTER (WHERE state = 'unknown'), \
                 COUNT(*) FILTER (WHERE state = 'not_applicable') \
                 FROM current_compliance GROUP BY baseline_id ORDER BY baseline_id",
            )
            .fetch_all(pool)
            .await?;
            rows.iter().map(baseline_summary_row).collect()
        })
    }

    /// A stored report by message id (each backend locates it its own way; by its number and
    /// received time, PostgreSQL reads only the report's day partition).
    pub async fn report(&self, message_id: &str) -> Result<Option<ReportView>, StoreError> {
        let Some((id, received)) = self.locate(message_id).await? else {
            return Ok(None);
        };
        dispatch!(self, s => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {REPORT_COLS} FROM compliance_reports \
                 WHERE report_id = $1 AND received_ms = $2"
            )))
            .bind(id)
            .bind(received)
            .fetch_optional(s.reader())
            .await?;
            row.as_ref().map(report_view_row).transpose()
        })
    }

    /// A stored report's setting results, in their order.
    pub async fn report_settings(&self, message_id: &str) -> Result<Vec<SettingView>, StoreError> {
        let Some((id, received)) = self.locate(message_id).await? else {
            return Ok(vec![]);
        };
        dispatch!(self, s => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SETTING_COLS} FROM {} ORDER BY s.ordinal",
                s.settings_of_report()
            )))
            .bind(id)
            .bind(received)
            .fetch_all(s.reader())
            .await?;
            rows.iter().map(|r| setting_view(r, 0)).collect()
        })
    }

    pub async fn device(&self, device_id: &str) -> Result<Option<DeviceView>, StoreError> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT device_id, hostname, os, agent_version, hardware_id, \
                 CAST(key_epoch AS BIGINT), enrolled_ms, last_seen_ms, last_relay, blocked \
                 FROM devices WHERE device_id = $1",
            )
            .bind(device_id)
            .fetch_optional(pool)
            .await?;
            row.map(|r| device_view_row(&r)).transpose()
        })
    }

    /// A device's stored public key (the one its reports are verified against).
    pub async fn device_public_key(&self, device_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read!(self, pool => {
            Ok(sqlx::query_scalar("SELECT public_key FROM devices WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Message ids of a device's stored reports received at or after `since_ms`, oldest first.
    pub async fn device_report_ids(
        &self,
        device_id: &str,
        since_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        read!(self, pool => {
            Ok(sqlx::query_scalar(
                "SELECT message_id FROM compliance_reports \
                 WHERE device_id = $1 AND received_ms >= $2 ORDER BY received_ms, report_id",
            )
            .bind(device_id)
            .bind(since_ms)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn current(
        &self,
        device_id: &str,
        baseline_id: &str,
    ) -> Result<Option<CurrentRow>, StoreError> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT device_id, baseline_id, state, evaluated_ms, message_id, open_history_id \
                 FROM current_compliance WHERE device_id = $1 AND baseline_id = $2",
            )
            .bind(device_id)
            .bind(baseline_id)
            .fetch_optional(pool)
            .await?;
            row.map(|r| current_row(&r)).transpose()
        })
    }

    pub async fn history(
        &self,
        device_id: &str,
        baseline_id: &str,
    ) -> Result<Vec<HistoryView>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT state, started_ms, ended_ms FROM compliance_history \
                 WHERE device_id = $1 AND baseline_id = $2 ORDER BY started_ms, history_id",
            )
            .bind(device_id)
            .bind(baseline_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(history_view_row).collect()
        })
    }

    /// Message ids of every stored report (for end-to-end checks).
    pub async fn report_message_ids(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => {
            let sql = format!(
                "SELECT message_id FROM {} ORDER BY report_id",
                s.message_ids_table()
            );
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(s.reader())
                .await?)
        })
    }

    /// Where a report is: its number and its received time, by message id.
    async fn locate(&self, message_id: &str) -> Result<Option<(i64, i64)>, StoreError> {
        dispatch!(self, s => {
            let sql = format!(
                "SELECT report_id, received_ms FROM {} WHERE message_id = $1",
                s.message_ids_table()
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(message_id)
                .fetch_optional(s.reader())
                .await?)
        })
    }
}
