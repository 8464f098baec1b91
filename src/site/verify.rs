//! Proof of what a device sent: a stored report's Ed25519 signature is checked again over its
//! stored signed bytes against the device's stored public key, and the signed bytes are decoded
//! the way the writer decodes a forwarded record ([`decode::signed_report_row`]) and compared,
//! field by field, with the report row and every setting result row the site stored.

use serde::Serialize;
use serde_json::Value;

use crate::envelope;
use crate::ids::{DeviceId, DevicePublicKey};
use crate::site::decode;
use crate::store::{ReportRow, ReportView, SettingRow, SettingView, Store, StoreError};

/// The outcome of verifying one stored report.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub message_id: String,
    pub device_id: String,
    /// Whether the stored signature verifies over the stored signed bytes with the device's key.
    pub signature_valid: bool,
    /// Why the report could not be verified or compared, when it could not (no key stored, the
    /// signature fails, the signed bytes do not decode).
    pub problem: Option<String>,
    /// Every field where the stored rows differ from what the device signed.
    pub differences: Vec<Difference>,
}

impl Verdict {
    /// True when the signature verifies and the stored rows are exactly what was signed.
    pub fn verified(&self) -> bool {
        self.signature_valid && self.problem.is_none() && self.differences.is_empty()
    }
}

/// One field whose stored value differs from the signed one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// `baseline_name`, `settings` (their number), `settings[3].observed_after`, ….
    pub field: String,
    pub stored: Value,
    pub signed: Value,
}

/// Verifies the report stored under `message_id`; `None` when no such report is stored.
pub async fn verify_report(store: &Store, message_id: &str) -> Result<Option<Verdict>, StoreError> {
    let Some(report) = store.report(message_id).await? else {
        return Ok(None);
    };
    let settings = store.report_settings(message_id).await?;
    let key = store.device_public_key(&report.device_id).await?;
    Ok(Some(verdict(&report, &settings, key.as_deref())))
}

/// Checks and compares a stored report, its setting rows and its device's stored key.
pub fn verdict(report: &ReportView, settings: &[SettingView], key: Option<&[u8]>) -> Verdict {
    let mut v = Verdict {
        message_id: report.message_id.clone(),
        device_id: report.device_id.clone(),
        signature_valid: false,
        problem: None,
        differences: Vec::new(),
    };
    let Some(key) = key else {
        v.problem = Some("no public key is stored for the device".into());
        return v;
    };
    let pk = match DevicePublicKey::try_from(key) {
        Ok(pk) => pk,
        Err(_) => {
            v.problem = Some("the device's stored public key is not 32 bytes".into());
            return v;
        }
    };
    v.signature_valid =
        envelope::verify_signature(&pk, &report.signed_bytes, &report.signature).is_ok();
    if !v.signature_valid {
        v.problem = Some("the stored signature does not verify with the device's key".into());
    } else if DeviceId::from_public_key(&pk).hex() != report.device_id {
        v.problem = Some("the device's stored public key is not the device id's".into());
    }
    match decode::signed_report_row(
        &report.signed_bytes,
        key,
        report.received_ms,
        &report.relay_id,
    ) {
        Ok(signed) => v.differences = differences(report, settings, &signed),
        Err(e) => {
            v.problem.get_or_insert(format!("the signed bytes: {e}"));
        }
    }
    v
}

/// The fields of the stored rows that differ from the signed report.
fn differences(
    report: &ReportView,
    settings: &[SettingView],
    signed: &ReportRow,
) -> Vec<Difference> {
    let ru = &signed.rollup;
    let stored_fields: [(&str, Value); 14] = [
        ("message_id", report.message_id.clone().into()),
        ("device_id", report.device_id.clone().into()),
        ("baseline_id", report.baseline_id.clone().into()),
        ("baseline_revision", report.baseline_revision.into()),
        ("baseline_name", report.baseline_name.clone().into()),
        ("created_ms", report.created_ms.into()),
        ("evaluated_ms", report.evaluated_ms.into()),
        ("state", report.state.clone().into()),
        ("max_severity", report.max_severity.clone().into()),
        ("n_compliant", report.n_compliant.into()),
        ("n_non_compliant", report.n_non_compliant.into()),
        ("n_error", report.n_error.into()),
        ("n_not_applicable", report.n_not_applicable.into()),
        ("n_unknown", report.n_unknown.into()),
    ];
    let signed_fields: [Value; 14] = [
        signed.message_id.clone().into(),
        signed.device_id.clone().into(),
        signed.baseline_id.clone().into(),
        signed.baseline_revision.into(),
        signed.baseline_name.clone().into(),
        signed.created_ms.into(),
        signed.evaluated_ms.into(),
        ru.state().as_str().into(),
        ru.max_severity.as_str().into(),
        ru.compliant.into(),
        ru.non_compliant.into(),
        ru.error.into(),
        ru.not_applicable.into(),
        ru.unknown.into(),
    ];
    let mut out = Vec::new();
    for ((field, stored), signed) in stored_fields.into_iter().zip(signed_fields) {
        push_if_differs(&mut out, field.to_string(), stored, signed);
    }
    push_if_differs(
        &mut out,
        "settings".into(),
        settings.len().into(),
        signed.settings.len().into(),
    );
    for (i, (stored, signed)) in settings.iter().zip(&signed.settings).enumerate() {
        for ((field, stored), signed) in stored_setting(stored)
            .into_iter()
            .zip(signed_setting(signed))
        {
            push_if_differs(&mut out, format!("settings[{i}].{field}"), stored, signed);
        }
    }
    out
}

fn push_if_differs(out: &mut Vec<Difference>, field: String, stored: Value, signed: Value) {
    if stored != signed {
        out.push(Difference {
            field,
            stored,
            signed,
        });
    }
}

fn stored_setting(s: &SettingView) -> [(&'static str, Value); 10] {
    [
        ("ci_id", s.ci_id.clone().into()),
        ("ci_revision", s.ci_revision.into()),
        ("setting_id", s.setting_id.clone().into()),
        ("state", s.state.clone().into()),
        ("severity", s.severity.clone().into()),
        ("expected", s.expected.clone().into()),
        ("observed_before", s.observed_before.clone().into()),
        ("observed_after", s.observed_after.clone().into()),
        ("remediated", s.remediated.into()),
        ("error", s.error.clone().into()),
    ]
}

fn signed_setting(s: &SettingRow) -> [Value; 10] {
    [
        s.ci_id.clone().into(),
        s.ci_revision.into(),
        s.setting_id.clone().into(),
        s.state.as_str().into(),
        s.severity.as_str().into(),
        s.expected.clone().into(),
        s.observed_before.clone().into(),
        s.observed_after.clone().into(),
        s.remediated.into(),
        s.error.clone().into(),
    ]
}
