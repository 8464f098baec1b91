//! The definitions and compliance-report part of the store: configuration items and baselines
//! with their revisions, the policy version and its inputs, blocked devices, and the queries
//! behind `mprelay report …` and the admin API.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DeviceView, HistoryView, SettingView, Store, StoreError};

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

impl Store {
    /// Stores new definitions in one transaction, unless any issue is found (then nothing is
    /// written). Raises the policy version when anything was added.
    pub async fn import_definitions(
        &self,
        req: &ImportRequest,
    ) -> Result<ImportResult, StoreError> {
        dispatch!(self, s => s.import_definitions(req).await)
    }

    /// The current policy version (cheap: the site polls it).
    pub async fn policy_version(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.policy_version().await)
    }

    /// Everything the policy is built from, consistent with its version.
    pub async fn policy_contents(&self) -> Result<PolicyContents, StoreError> {
        dispatch!(self, s => s.policy_contents().await)
    }

    /// Sets a site setting; raises the policy version when the value changed. Returns whether
    /// it changed.
    pub async fn set_site_setting(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.set_site_setting(key, value).await)
    }

    /// Blocks or unblocks a device; raises the policy version when that changed anything.
    /// `None` when no such device is known.
    pub async fn set_device_blocked(
        &self,
        device_id: &str,
        blocked: bool,
    ) -> Result<Option<bool>, StoreError> {
        dispatch!(self, s => s.set_device_blocked(device_id, blocked).await)
    }

    /// Every stored revision of every definition.
    pub async fn definitions(&self) -> Result<Vec<DefinitionSummary>, StoreError> {
        dispatch!(self, s => s.definitions().await)
    }

    /// Devices per state, per baseline.
    pub async fn compliance_overview(&self) -> Result<Vec<BaselineOverview>, StoreError> {
        dispatch!(self, s => s.compliance_overview(None).await)
    }

    /// One baseline in detail; `None` when the site knows nothing of it.
    pub async fn baseline_detail(
        &self,
        baseline_id: &str,
    ) -> Result<Option<BaselineDetail>, StoreError> {
        let Some(overview) =
            dispatch!(self, s => s.compliance_overview(Some(baseline_id)).await)?.pop()
        else {
            return Ok(None);
        };
        let (description, members, revisions) =
            dispatch!(self, s => s.baseline_definition(baseline_id).await)?;
        let settings = dispatch!(self, s => s.setting_summaries(baseline_id).await)?;
        Ok(Some(BaselineDetail {
            overview,
            description,
            members,
            revisions,
            settings,
        }))
    }

    /// A device's compliance for every baseline it reported; `None` for an unknown device.
    pub async fn device_compliance(
        &self,
        device_id: &str,
    ) -> Result<Option<DeviceCompliance>, StoreError> {
        let Some(device) = self.device(device_id).await? else {
            return Ok(None);
        };
        let currents = dispatch!(self, s => s.current_for_device(device_id).await)?;
        let mut baselines = Vec::with_capacity(currents.len());
        for current in currents {
            let settings = self.report_settings(&current.message_id).await?;
            let history = self.history(device_id, &current.baseline_id).await?;
            baselines.push(DeviceBaseline {
                current,
                settings,
                history,
            });
        }
        Ok(Some(DeviceCompliance { device, baselines }))
    }

    /// The devices whose current state for `baseline_id` is non-compliant, worst severity
    /// first, with their failing settings.
    pub async fn noncompliant_devices(
        &self,
        baseline_id: &str,
    ) -> Result<Vec<NoncompliantDevice>, StoreError> {
        self.failing_devices(baseline_id, crate::compliance::State::NonCompliant)
            .await
    }

    /// The devices whose current state for `baseline_id` is `state` (non-compliant or error),
    /// worst severity first, with their non-compliant and error settings.
    pub async fn failing_devices(
        &self,
        baseline_id: &str,
        state: crate::compliance::State,
    ) -> Result<Vec<NoncompliantDevice>, StoreError> {
        let state = state.as_str();
        let mut v = dispatch!(self, s => s.noncompliant_devices(baseline_id, state).await)?;
        let rank = |s: &str| s.parse::<crate::compliance::Severity>().ok();
        v.sort_by(|a, b| {
            rank(&b.max_severity)
                .cmp(&rank(&a.max_severity))
                .then_with(|| a.device_id.cmp(&b.device_id))
        });
        Ok(v)
    }
}
