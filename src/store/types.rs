//! The records the store takes and gives, by area: what a forwarded batch writes; definitions,
//! policy and compliance reports; the console's trend and device search; maintenance tasks and
//! runs; terms and conditions; the retention task's batches and run lock.

use std::collections::BTreeMap;

use serde::Serialize;

use super::StoreError;
use crate::compliance::{Rollup, Severity, State};

// Forwarded batches, devices and reports.

/// A device as learned from an enrollment (full details) or from a report (id, key, last seen).
#[derive(Debug, Clone)]
pub struct DeviceUpsert {
    pub device_id: String,
    pub public_key: Vec<u8>,
    pub key_epoch: u32,
    /// Present for enrollments: hostname, os, agent version, hardware id.
    pub details: Option<DeviceDetails>,
    pub seen_ms: i64,
    pub relay_id: String,
}

#[derive(Debug, Clone)]
pub struct DeviceDetails {
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub hardware_id: String,
}

/// One setting result of a report, ready to store.
#[derive(Debug, Clone)]
pub struct SettingRow {
    pub ci_id: String,
    pub ci_revision: u32,
    pub setting_id: String,
    pub state: State,
    pub severity: Severity,
    pub expected: String,
    pub observed_before: Option<String>,
    pub observed_after: Option<String>,
    pub remediated: bool,
    pub error: String,
}

/// A compliance report, ready to store.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub message_id: String,
    pub device_id: String,
    pub baseline_id: String,
    pub baseline_revision: u32,
    pub baseline_name: String,
    pub created_ms: i64,
    pub evaluated_ms: i64,
    pub received_ms: i64,
    pub relay_id: String,
    pub rollup: Rollup,
    pub settings: Vec<SettingRow>,
    pub signature: Vec<u8>,
    pub signed_bytes: Vec<u8>,
}

/// A terms acceptance, ready to store.
#[derive(Debug, Clone)]
pub struct AcceptanceRow {
    pub message_id: String,
    pub device_id: String,
    pub user: String,
    pub terms_version: u32,
    pub accepted_ms: i64,
    pub received_ms: i64,
    pub relay_id: String,
}

/// A forwarded record the site could not read or verify; stored aside, never lost.
#[derive(Debug, Clone)]
pub struct QuarantineRow {
    pub seq: u64,
    pub message_id: String,
    pub received_ms: i64,
    pub reason: String,
    pub payload: Vec<u8>,
}

/// Everything one forward batch asks the site to store, with the cursor it advances.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub relay_id: String,
    pub relay_url: String,
    pub spool_id: String,
    pub through_seq: u64,
    pub last_seq: u64,
    pub pending_records: u64,
    pub pending_bytes: u64,
    pub devices: Vec<DeviceUpsert>,
    pub reports: Vec<ReportRow>,
    pub acceptances: Vec<AcceptanceRow>,
    pub quarantined: Vec<QuarantineRow>,
}

/// What a batch write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub reports_inserted: u64,
    pub reports_duplicate: u64,
    pub settings_inserted: u64,
    pub acceptances_inserted: u64,
    pub quarantined: u64,
    /// Critical-with-event settings the inserted reports found non-compliant.
    pub critical_events: Vec<crate::store::CriticalEvent>,
}

/// Where the site is with one relay.
#[derive(Debug, Clone, Serialize)]
pub struct RelayCursor {
    pub relay_id: String,
    pub spool_id: String,
    pub through_seq: u64,
    pub url: String,
    pub last_pull_ms: i64,
    pub last_seq: u64,
    pub pending_records: u64,
    pub pending_bytes: u64,
}

/// The state of one device for one baseline, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentRow {
    pub device_id: String,
    pub baseline_id: String,
    pub state: State,
    pub evaluated_ms: i64,
    pub message_id: String,
    pub open_history_id: i64,
}

/// Devices per state for one baseline, from current compliance.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BaselineSummary {
    pub baseline_id: String,
    pub baseline_name: String,
    pub devices: u64,
    pub compliant: u64,
    pub non_compliant: u64,
    pub error: u64,
    pub unknown: u64,
    pub not_applicable: u64,
}

/// A stored report, for reports and tests.
#[derive(Debug, Clone, Serialize)]
pub struct ReportView {
    pub message_id: String,
    pub device_id: String,
    pub baseline_id: String,
    pub baseline_revision: u32,
    pub baseline_name: String,
    pub evaluated_ms: i64,
    pub received_ms: i64,
    pub relay_id: String,
    pub state: String,
    pub max_severity: String,
    pub n_compliant: u32,
    pub n_non_compliant: u32,
    pub n_error: u32,
    pub n_not_applicable: u32,
    pub n_unknown: u32,
    #[serde(skip)]
    pub signature: Vec<u8>,
    #[serde(skip)]
    pub signed_bytes: Vec<u8>,
    /// When the device made the report (its own clock, as signed).
    pub created_ms: i64,
}

/// A stored setting result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SettingView {
    pub ci_id: String,
    pub ci_revision: u32,
    pub setting_id: String,
    pub state: String,
    pub severity: String,
    pub expected: String,
    pub observed_before: Option<String>,
    pub observed_after: Option<String>,
    pub remediated: bool,
    pub error: String,
}

/// A stored device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub device_id: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub hardware_id: String,
    pub key_epoch: u32,
    pub enrolled_ms: Option<i64>,
    pub last_seen_ms: i64,
    pub last_relay: String,
    pub blocked: bool,
}

/// One interval of a device's state for a baseline.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryView {
    pub state: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
}

/// Row counts, for the demo and for checks.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub devices: u64,
    pub reports: u64,
    pub settings: u64,
    pub acceptances: u64,
    pub quarantined: u64,
}

// Definitions, policy and compliance reports.

/// One revision of a configuration item or a baseline, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionRecord {
    pub id: String,
    pub revision: u32,
    pub name: String,
    pub description: String,
    /// Canonical JSON: what the policy is built from, and what "the same content" means.
    pub json: String,
    pub toml: String,
    /// Hex SHA-256 of `json`.
    pub content_hash: String,
    pub source_file: String,
}

/// A member of a baseline revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub ci_id: String,
    /// `None`: the latest revision.
    pub ci_revision: Option<u32>,
    pub membership: String,
    pub remediate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineRecord {
    pub def: DefinitionRecord,
    pub members: Vec<MemberRecord>,
}

/// Definitions to import in one transaction.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub cis: Vec<DefinitionRecord>,
    pub baselines: Vec<BaselineRecord>,
}

/// Why an import was refused; nothing is written when there is any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportIssue {
    /// This id and revision is stored with other content (`index` into the request's list).
    CiChanged {
        index: usize,
        stored_source: String,
    },
    BaselineChanged {
        index: usize,
        stored_source: String,
    },
    /// A member names an item (or a revision of it) that is neither stored nor imported.
    MissingCi {
        baseline: usize,
        member: usize,
    },
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportResult {
    pub issues: Vec<ImportIssue>,
    /// `(kind, id, revision)` of what was new, and of what was already stored as it is.
    pub added: Vec<(&'static str, String, u32)>,
    pub unchanged: Vec<(&'static str, String, u32)>,
    /// The policy version after the import.
    pub policy_version: u64,
}

/// A stored baseline revision with its members resolved to configuration item revisions.
#[derive(Debug, Clone)]
pub struct ResolvedBaseline {
    pub def: DefinitionRecord,
    /// Each member with the item revision it resolves to (`None` when it cannot be found).
    pub members: Vec<(MemberRecord, Option<DefinitionRecord>)>,
}

/// Everything the policy snapshot is built from, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct PolicyContents {
    pub version: u64,
    /// The latest revision of every baseline.
    pub baselines: Vec<ResolvedBaseline>,
    pub blocked_device_ids: Vec<String>,
    pub settings: BTreeMap<String, String>,
    /// The retention age in force (the retention task's `delete_older_than_days`).
    pub retention_days: u32,
}

/// A definition as listed by `mprelay baseline list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DefinitionSummary {
    /// `configuration_item` or `baseline`.
    pub kind: String,
    pub id: String,
    pub revision: u32,
    pub name: String,
    pub content_hash: String,
    pub source_file: String,
    pub imported_ms: i64,
}

/// Devices per state for one baseline (defined, or known from reports).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BaselineOverview {
    pub baseline_id: String,
    pub name: String,
    /// The latest revision imported at this site; `None` for a baseline known only from reports.
    pub revision: Option<u32>,
    /// Devices that reported it.
    pub devices: u64,
    pub compliant: u64,
    pub non_compliant: u64,
    pub error: u64,
    pub unknown: u64,
    pub not_applicable: u64,
    /// Enrolled, unblocked devices with no report for it yet.
    pub never_reported: u64,
}

/// A revision of a baseline, for its history.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RevisionView {
    pub revision: u32,
    pub name: String,
    pub content_hash: String,
    pub source_file: String,
    pub imported_ms: i64,
}

/// A member of the latest baseline revision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberView {
    pub configuration_item: String,
    /// The pinned revision, `None` for "latest".
    pub pinned_revision: Option<u32>,
    /// What it resolves to now.
    pub revision: Option<u32>,
    pub name: Option<String>,
    pub membership: String,
    pub remediate: bool,
}

/// Devices per state for one setting of a baseline, from current compliance.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SettingSummary {
    pub ci_id: String,
    pub setting_id: String,
    pub severity: String,
    pub compliant: u64,
    pub non_compliant: u64,
    pub error: u64,
    pub not_applicable: u64,
    pub unknown: u64,
    /// Devices on which the latest evaluation remediated it.
    pub remediated: u64,
}

/// One baseline: counts, definition, revisions and per-setting counts.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineDetail {
    #[serde(flatten)]
    pub overview: BaselineOverview,
    pub description: String,
    pub members: Vec<MemberView>,
    pub revisions: Vec<RevisionView>,
    pub settings: Vec<SettingSummary>,
}

/// A device's current state for one baseline.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CurrentView {
    pub baseline_id: String,
    pub baseline_name: String,
    pub baseline_revision: u32,
    pub state: String,
    pub max_severity: String,
    pub evaluated_ms: i64,
    pub message_id: String,
    pub n_compliant: u32,
    pub n_non_compliant: u32,
    pub n_error: u32,
    pub n_not_applicable: u32,
    pub n_unknown: u32,
}

/// A device's compliance for one baseline, with the settings of its latest report and the
/// history of its state.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceBaseline {
    #[serde(flatten)]
    pub current: CurrentView,
    pub settings: Vec<SettingView>,
    pub history: Vec<HistoryView>,
}

/// Everything about one device's compliance.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceCompliance {
    pub device: DeviceView,
    pub baselines: Vec<DeviceBaseline>,
}

/// A non-compliant device of a baseline and what fails on it.
#[derive(Debug, Clone, Serialize)]
pub struct NoncompliantDevice {
    pub device_id: String,
    pub hostname: String,
    pub baseline_revision: u32,
    pub max_severity: String,
    pub evaluated_ms: i64,
    /// Its non-compliant and error settings, in report order.
    pub settings: Vec<SettingView>,
}

// The console.

/// A day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// How many devices of a baseline were in a state at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrendPoint {
    pub baseline_id: String,
    /// The instant: `end_ms` minus a whole number of days.
    pub at_ms: i64,
    pub state: String,
    pub devices: u64,
}

/// A device in a search result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRow {
    pub device_id: String,
    pub hostname: String,
    pub os: String,
    pub last_seen_ms: i64,
    /// Baselines the device is non-compliant with or in error for.
    pub failing_baselines: u64,
}

/// History intervals grouped by the instants they cover: `devices` intervals of `state` cover
/// the instants `first..=last` (indexes from the oldest instant). One scan of the history
/// instead of one per instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendSpan {
    pub baseline_id: String,
    pub state: String,
    pub first: i64,
    pub last: i64,
    pub devices: u64,
}

// Maintenance tasks.

/// The name of the retention task.
pub const DELETE_AGED_CM_DATA: &str = "delete_aged_configuration_management_data";

/// A maintenance task's settings as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaintenanceTask {
    pub name: String,
    pub enabled: bool,
    /// 1 to 3650.
    pub delete_older_than_days: u32,
    /// Lowercase three-letter days, e.g. `["sat"]`.
    pub days_of_week: Vec<String>,
    /// "HH:MM" in `time_zone`.
    pub begin_time: String,
    pub latest_begin_time: String,
    /// IANA time zone name.
    pub time_zone: String,
    pub updated_ms: i64,
}

/// How a run came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    Schedule,
    Manual,
}

impl RunTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Schedule => "schedule",
            RunTrigger::Manual => "manual",
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Found still `running` by a later run: the process running it died.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            other => return Err(StoreError::Corrupt(format!("unknown run status {other:?}"))),
        })
    }
}

/// One run of a maintenance task, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaintenanceRun {
    pub run_id: i64,
    pub task: String,
    pub trigger: String,
    pub status: RunStatus,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub cutoff_ms: i64,
    /// Rows deleted per table.
    pub rows_deleted: BTreeMap<String, u64>,
    pub total_deleted: u64,
    pub error: Option<String>,
}

// Terms and conditions.

/// The text of the terms, as users read it and administrators label it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TermsText {
    /// For administrators only: tells versions apart in lists; never shown to users.
    pub display_name: String,
    /// For administrators only.
    pub description: String,
    pub title: String,
    pub summary: String,
    pub body: String,
    /// What the user states by accepting, e.g. "I have read and accept these terms".
    pub acceptance_statement: String,
}

/// One stored edition of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TermsRecord {
    pub version: u32,
    /// 1 for the text the version was published with; one more for each edit.
    pub edition: u32,
    #[serde(flatten)]
    pub text: TermsText,
    /// When the version was first published (the same for all its editions).
    pub published_ms: i64,
    /// When this edition was stored.
    pub edited_ms: i64,
}

/// What an administrator publishes. Title, body and acceptance statement are always given;
/// the others may be left out (`None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermsDraft {
    pub title: String,
    pub body: String,
    pub acceptance_statement: String,
    /// `None`: on an edit, keep the current summary; on a new version, no summary (a new
    /// version is new text, and an old summary beside it would mislead).
    pub summary: Option<String>,
    /// `None`: keep the current one (edit or new version); empty for the first terms.
    pub display_name: Option<String>,
    /// `None`: keep the current one (edit or new version); empty for the first terms.
    pub description: Option<String>,
}

/// What a publication did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishAction {
    /// The site's first terms: version 1.
    First,
    /// A new version: every user must accept again.
    NewVersion,
    /// A new edition of the current version: the version and the acceptances stand.
    Edited,
    /// Identical to the current edition: nothing was stored and the policy is unchanged.
    Unchanged,
}

/// The outcome of [`super::Store::publish_terms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub action: PublishAction,
    /// The terms in force afterwards.
    pub terms: TermsRecord,
    /// The policy version afterwards.
    pub policy_version: u64,
}

/// A user's newest acceptance on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptanceView {
    pub user: String,
    pub device_id: String,
    /// Empty when the site has not learned the device's details.
    pub hostname: String,
    /// The highest version this user accepted on this device.
    pub accepted_version: u32,
    /// When the user first accepted that version there (the device's clock).
    pub accepted_ms: i64,
    /// When a relay received that acceptance.
    pub received_ms: i64,
    /// Whether `accepted_version` is the version in force.
    pub latest: bool,
}

/// A user's newest acceptance on any device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserAcceptance {
    pub user: String,
    pub accepted_version: u32,
    /// When the user first accepted that version, on any device.
    pub accepted_ms: i64,
    /// Devices the user accepted any version on.
    pub devices: u64,
    pub latest: bool,
}

/// The acceptance report: who accepted which version, where and when.
///
/// The site learns of a user only from an acceptance, so users who never accepted any version
/// cannot be listed; `devices_without_acceptance` counts the enrolled devices no acceptance has
/// come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcceptanceReport {
    /// The version in force; `None` when no terms are published.
    pub current_version: Option<u32>,
    /// Per user and device, by user then device.
    pub acceptances: Vec<AcceptanceView>,
    /// Per user, by user.
    pub users: Vec<UserAcceptance>,
    pub devices_without_acceptance: u64,
}

/// A (user, device) row as the backends return it: the highest version and when it was first
/// accepted there.
#[derive(Debug, Clone)]
pub struct AcceptanceRowView {
    pub user: String,
    pub device_id: String,
    pub hostname: String,
    pub accepted_version: u32,
    pub accepted_ms: i64,
    pub received_ms: i64,
}

// The retention task.

/// Table names as they appear in run records and metrics.
pub const T_REPORTS: &str = "compliance_reports";
pub const T_SETTINGS: &str = "setting_results";
pub const T_HISTORY: &str = "compliance_history";
pub const T_MESSAGE_IDS: &str = "report_message_ids";

/// What one batch deleted: rows per table (several tables when reports and their settings go
/// together). Empty when nothing older than the cutoff is left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchDeleted {
    pub rows: Vec<(&'static str, u64)>,
    /// Whole day partitions dropped (PostgreSQL).
    pub partitions_dropped: u32,
}

impl BatchDeleted {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.partitions_dropped == 0
    }
}

/// The run lock of a maintenance task, held by one run; [`super::Store::release_task_lock`] ends it.
/// Dropped without release (the run's task was killed), it still ends: on PostgreSQL the
/// session holding the advisory lock closes, on SQLite the lease expires.
#[derive(Debug)]
pub enum TaskLock {
    Sqlite { task: String, holder: String },
    Postgres(sqlx::PgConnection),
}
