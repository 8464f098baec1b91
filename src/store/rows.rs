//! Row-to-record conversions shared by the two backends. The queries differ by dialect; the
//! rows they return have the same columns in the same order, so each record is read from a row
//! in one place.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Postgres, Row, Sqlite, Type};

use super::{
    BaselineSummary, CurrentRow, DeviceView, HistoryView, RelayCursor, ReportView, SettingView,
    StoreError,
};
use crate::store::types::{
    BaselineOverview, CurrentView, DefinitionRecord, DefinitionSummary, NoncompliantDevice,
    SettingSummary,
};
use crate::store::types::{DeviceRow, TrendSpan};
use crate::store::types::{MaintenanceRun, MaintenanceTask, RunStatus};
use crate::store::types::{TermsRecord, TermsText};

/// A value both backends decode the same way.
pub(crate) trait Value:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Value for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A result row of either backend, read by column position.
pub(crate) trait Cols {
    fn col<T: Value>(&self, i: usize) -> Result<T, StoreError>;

    /// A non-negative count or sequence number.
    fn count(&self, i: usize) -> Result<u64, StoreError> {
        let v: i64 = self.col(i)?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative count {v}")))
    }

    /// A revision, version or edition number.
    fn number(&self, i: usize) -> Result<u32, StoreError> {
        let v: i64 = self.col(i)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("number out of range: {v}")))
    }
}

impl Cols for SqliteRow {
    fn col<T: Value>(&self, i: usize) -> Result<T, StoreError> {
        Ok(self.try_get(i)?)
    }
}

impl Cols for PgRow {
    fn col<T: Value>(&self, i: usize) -> Result<T, StoreError> {
        Ok(self.try_get(i)?)
    }
}

/// `device_id, baseline_id, state, evaluated_ms, message_id, open_history_id`.
pub(crate) fn current_row(r: &impl Cols) -> Result<CurrentRow, StoreError> {
    let state: String = r.col(2)?;
    Ok(CurrentRow {
        device_id: r.col(0)?,
        baseline_id: r.col(1)?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        evaluated_ms: r.col(3)?,
        message_id: r.col(4)?,
        open_history_id: r.col(5)?,
    })
}

/// `relay_id, spool_id, through_seq, url, last_pull_ms, last_seq, pending_records,
/// pending_bytes`.
pub(crate) fn cursor_row(r: &impl Cols) -> Result<RelayCursor, StoreError> {
    Ok(RelayCursor {
        relay_id: r.col(0)?,
        spool_id: r.col(1)?,
        through_seq: r.count(2)?,
        url: r.col(3)?,
        last_pull_ms: r.col(4)?,
        last_seq: r.count(5)?,
        pending_records: r.count(6)?,
        pending_bytes: r.count(7)?,
    })
}

/// Ten setting columns from position `at`: `ci_id, ci_revision, setting_id, state, severity,
/// expected, observed_before, observed_after, remediated, error`.
pub(crate) fn setting_view(r: &impl Cols, at: usize) -> Result<SettingView, StoreError> {
    Ok(SettingView {
        ci_id: r.col(at)?,
        ci_revision: r.number(at + 1)?,
        setting_id: r.col(at + 2)?,
        state: r.col(at + 3)?,
        severity: r.col(at + 4)?,
        expected: r.col(at + 5)?,
        observed_before: r.col(at + 6)?,
        observed_after: r.col(at + 7)?,
        remediated: r.col(at + 8)?,
        error: r.col(at + 9)?,
    })
}

/// The columns [`definition_row`] reads, for baselines and for configuration items.
pub(crate) const DEF_COLS: &str = "baseline_id, revision, name, description, definition_json, \
                                   definition_toml, content_hash, source_file";
pub(crate) const DEF_COLS_CI: &str = "ci_id, revision, name, description, definition_json, \
                                      definition_toml, content_hash, source_file";

pub(crate) fn definition_row(r: &impl Cols) -> Result<DefinitionRecord, StoreError> {
    Ok(DefinitionRecord {
        id: r.col(0)?,
        revision: r.number(1)?,
        name: r.col(2)?,
        description: r.col(3)?,
        json: r.col(4)?,
        toml: r.col(5)?,
        content_hash: r.col(6)?,
        source_file: r.col(7)?,
    })
}

/// `version, edition, display_name, description, title, summary, body, acceptance_statement,
/// published_ms, edited_ms`.
pub(crate) fn terms_row(r: &impl Cols) -> Result<TermsRecord, StoreError> {
    Ok(TermsRecord {
        version: r.number(0)?,
        edition: r.number(1)?,
        text: TermsText {
            display_name: r.col(2)?,
            description: r.col(3)?,
            title: r.col(4)?,
            summary: r.col(5)?,
            body: r.col(6)?,
            acceptance_statement: r.col(7)?,
        },
        published_ms: r.col(8)?,
        edited_ms: r.col(9)?,
    })
}

/// Groups rows of `device_id, hostname, baseline_revision, max_severity, evaluated_ms` followed
/// by the ten setting columns (all NULL for a device without failing settings), ordered by
/// device, into one record per device.
pub(crate) fn group_noncompliant(
    rows: &[impl Cols],
) -> Result<Vec<NoncompliantDevice>, StoreError> {
    let mut out: Vec<NoncompliantDevice> = Vec::new();
    for r in rows {
        let device_id: String = r.col(0)?;
        if out.last().is_none_or(|d| d.device_id != device_id) {
            out.push(NoncompliantDevice {
                device_id,
                hostname: r.col(1)?,
                baseline_revision: r.number(2)?,
                max_severity: r.col(3)?,
                evaluated_ms: r.col(4)?,
                settings: vec![],
            });
        }
        if r.col::<Option<String>>(5)?.is_some() {
            let s = setting_view(r, 5)?;
            if let Some(d) = out.last_mut() {
                d.settings.push(s);
            }
        }
    }
    Ok(out)
}

/// `baseline_id, state, first, last, devices`.
pub(crate) fn trend_span_row(r: &impl Cols) -> Result<TrendSpan, StoreError> {
    Ok(TrendSpan {
        baseline_id: r.col(0)?,
        state: r.col(1)?,
        first: r.col(2)?,
        last: r.col(3)?,
        devices: r.count(4)?,
    })
}

/// The columns [`report_view_row`] reads, from `compliance_reports`.
pub(crate) const REPORT_COLS: &str = "message_id, device_id, baseline_id, \
     CAST(baseline_revision AS BIGINT), baseline_name, evaluated_ms, received_ms, relay_id, state, \
     max_severity, CAST(n_compliant AS BIGINT), CAST(n_non_compliant AS BIGINT), \
     CAST(n_error AS BIGINT), CAST(n_not_applicable AS BIGINT), CAST(n_unknown AS BIGINT), \
     signature, signed_bytes, created_ms";

pub(crate) fn report_view_row(r: &impl Cols) -> Result<ReportView, StoreError> {
    Ok(ReportView {
        message_id: r.col(0)?,
        device_id: r.col(1)?,
        baseline_id: r.col(2)?,
        baseline_revision: r.number(3)?,
        baseline_name: r.col(4)?,
        evaluated_ms: r.col(5)?,
        received_ms: r.col(6)?,
        relay_id: r.col(7)?,
        state: r.col(8)?,
        max_severity: r.col(9)?,
        n_compliant: r.number(10)?,
        n_non_compliant: r.number(11)?,
        n_error: r.number(12)?,
        n_not_applicable: r.number(13)?,
        n_unknown: r.number(14)?,
        signature: r.col(15)?,
        signed_bytes: r.col(16)?,
        created_ms: r.col(17)?,
    })
}

/// The columns [`setting_view`] reads, from `setting_results s`.
pub(crate) const SETTING_COLS: &str = "s.ci_id, CAST(s.ci_revision AS BIGINT), s.setting_id, \
     s.state, s.severity, s.expected, s.observed_before, s.observed_after, s.remediated, s.error";

/// `device_id, hostname, os, last_seen_ms, failing_baselines`.
pub(crate) fn device_row(r: &impl Cols) -> Result<DeviceRow, StoreError> {
    Ok(DeviceRow {
        device_id: r.col(0)?,
        hostname: r.col(1)?,
        os: r.col(2)?,
        last_seen_ms: r.col(3)?,
        failing_baselines: r.count(4)?,
    })
}

pub(crate) fn definition_summary_row(r: &impl Cols) -> Result<DefinitionSummary, StoreError> {
    Ok(DefinitionSummary {
        kind: r.col(0)?,
        id: r.col(1)?,
        revision: r.number(2)?,
        name: r.col(3)?,
        content_hash: r.col(4)?,
        source_file: r.col(5)?,
        imported_ms: r.col(6)?,
    })
}

pub(crate) fn baseline_overview_row(r: &impl Cols) -> Result<BaselineOverview, StoreError> {
    Ok(BaselineOverview {
        baseline_id: r.col(0)?,
        name: r.col(1)?,
        revision: r.col::<Option<i64>>(2)?.map(|v| v as u32),
        devices: r.count(3)?,
        compliant: r.count(4)?,
        non_compliant: r.count(5)?,
        error: r.count(6)?,
        unknown: r.count(7)?,
        not_applicable: r.count(8)?,
        never_reported: r.count(9)?,
    })
}

pub(crate) fn setting_summary_row(r: &impl Cols) -> Result<SettingSummary, StoreError> {
    Ok(SettingSummary {
        ci_id: r.col(0)?,
        setting_id: r.col(1)?,
        severity: r.col(2)?,
        compliant: r.count(3)?,
        non_compliant: r.count(4)?,
        error: r.count(5)?,
        not_applicable: r.count(6)?,
        unknown: r.count(7)?,
        remediated: r.count(8)?,
    })
}

pub(crate) fn current_view_row(r: &impl Cols) -> Result<CurrentView, StoreError> {
    Ok(CurrentView {
        baseline_id: r.col(0)?,
        baseline_name: r.col(1)?,
        baseline_revision: r.number(2)?,
        state: r.col(3)?,
        max_severity: r.col(4)?,
        evaluated_ms: r.col(5)?,
        message_id: r.col(6)?,
        n_compliant: r.number(7)?,
        n_non_compliant: r.number(8)?,
        n_error: r.number(9)?,
        n_not_applicable: r.number(10)?,
        n_unknown: r.number(11)?,
    })
}

pub(crate) fn baseline_summary_row(r: &impl Cols) -> Result<BaselineSummary, StoreError> {
    Ok(BaselineSummary {
        baseline_id: r.col(0)?,
        baseline_name: r.col(1)?,
        devices: r.count(2)?,
        compliant: r.count(3)?,
        non_compliant: r.count(4)?,
        error: r.count(5)?,
        unknown: r.count(6)?,
        not_applicable: r.count(7)?,
    })
}

/// `device_id, hostname, os, agent_version, hardware_id, key_epoch, enrolled_ms, last_seen_ms,
/// last_relay, blocked`.
pub(crate) fn device_view_row(r: &impl Cols) -> Result<DeviceView, StoreError> {
    Ok(DeviceView {
        device_id: r.col(0)?,
        hostname: r.col(1)?,
        os: r.col(2)?,
        agent_version: r.col(3)?,
        hardware_id: r.col(4)?,
        key_epoch: r.number(5)?,
        enrolled_ms: r.col(6)?,
        last_seen_ms: r.col(7)?,
        last_relay: r.col(8)?,
        blocked: r.col(9)?,
    })
}

pub(crate) fn history_view_row(r: &impl Cols) -> Result<HistoryView, StoreError> {
    Ok(HistoryView {
        state: r.col(0)?,
        started_ms: r.col(1)?,
        ended_ms: r.col(2)?,
    })
}

/// `name, enabled, delete_older_than_days, days_of_week, begin_time, latest_begin_time,
/// time_zone, updated_ms`.
pub(crate) fn maintenance_task_row(r: &impl Cols) -> Result<MaintenanceTask, StoreError> {
    let days: String = r.col(3)?;
    Ok(MaintenanceTask {
        name: r.col(0)?,
        enabled: r.col(1)?,
        delete_older_than_days: r.number(2)?,
        days_of_week: days
            .split(',')
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect(),
        begin_time: r.col(4)?,
        latest_begin_time: r.col(5)?,
        time_zone: r.col(6)?,
        updated_ms: r.col(7)?,
    })
}

/// `SELECT` of the columns [`maintenance_run_row`] reads, from `maintenance_runs`, followed by
/// the rest of the query (a literal, placeholders in the backend's style).
macro_rules! select_maintenance_runs {
    ($rest:literal) => {
        concat!(
            "SELECT run_id, task, trigger, status, started_ms, ended_ms, cutoff_ms, \
             rows_deleted, total_deleted, error FROM maintenance_runs ",
            $rest
        )
    };
}
pub(crate) use select_maintenance_runs;

/// `run_id, task, trigger, status, started_ms, ended_ms, cutoff_ms, rows_deleted (JSON),
/// total_deleted, error`, as [`select_maintenance_runs`] selects them.
pub(crate) fn maintenance_run_row(r: &impl Cols) -> Result<MaintenanceRun, StoreError> {
    let status: String = r.col(3)?;
    let json: String = r.col(7)?;
    Ok(MaintenanceRun {
        run_id: r.col(0)?,
        task: r.col(1)?,
        trigger: r.col(2)?,
        status: RunStatus::parse(&status)?,
        started_ms: r.col(4)?,
        ended_ms: r.col(5)?,
        cutoff_ms: r.col(6)?,
        rows_deleted: serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("rows_deleted: {e}")))?,
        total_deleted: r.count(8)?,
        error: r.col(9)?,
    })
}
