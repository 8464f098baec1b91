//! The definitions and compliance-report part of the store: configuration items and baselines
//! with their revisions, the policy version and its inputs, blocked devices, and the queries
//! behind `mprelay report …` and the admin API.

use super::types::*;
use super::{Store, StoreError};

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
        let mut v = dispatch!(self, s => s.noncompliant_devices(baseline_id).await)?;
        let rank = |s: &str| s.parse::<crate::compliance::Severity>().ok();
        v.sort_by(|a, b| {
            rank(&b.max_severity)
                .cmp(&rank(&a.max_severity))
                .then_with(|| a.device_id.cmp(&b.device_id))
        });
        Ok(v)
    }
}
