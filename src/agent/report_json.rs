//! Compliance reports written by hand or by another tool, as JSON, for `mprelay agent submit
//! --report FILE` (see `examples/report.json`).

use std::path::Path;

use serde::Deserialize;

use crate::clock;
use crate::compliance::{Severity, State};
use crate::proto::{self, ComplianceReport, ConfigurationItemResult, SettingResult};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    baseline_id: String,
    baseline_revision: u32,
    #[serde(default)]
    baseline_name: String,
    /// Defaults to now.
    #[serde(default)]
    evaluated_unix_ms: Option<i64>,
    configuration_items: Vec<Ci>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ci {
    ci_id: String,
    ci_revision: u32,
    #[serde(default)]
    ci_name: String,
    /// required (default), optional or prohibited.
    #[serde(default)]
    membership: Option<String>,
    settings: Vec<Setting>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Setting {
    setting_id: String,
    state: String,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    expected: String,
    #[serde(default)]
    observed_before: Option<String>,
    #[serde(default)]
    observed_after: Option<String>,
    #[serde(default)]
    remediated: bool,
    #[serde(default)]
    error: String,
}

/// Reads and checks a JSON report; errors name the file and the field.
pub fn read(path: &Path) -> Result<ComplianceReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<ComplianceReport, String> {
    let r: Report = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut cis = Vec::new();
    for ci in r.configuration_items {
        let membership = match ci.membership.as_deref().unwrap_or("required") {
            "required" => proto::Membership::Required,
            "optional" => proto::Membership::Optional,
            "prohibited" => proto::Membership::Prohibited,
            other => {
                return Err(format!(
                    "configuration item {:?}: membership {other:?} is not required, optional or prohibited",
                    ci.ci_id
                ));
            }
        };
        let mut settings = Vec::new();
        for s in ci.settings {
            let state: State = s
                .state
                .parse()
                .map_err(|e| format!("setting {:?}: {e}", s.setting_id))?;
            let severity: Severity = s
                .severity
                .as_deref()
                .unwrap_or("none")
                .parse()
                .map_err(|e| format!("setting {:?}: {e}", s.setting_id))?;
            settings.push(SettingResult {
                setting_id: s.setting_id,
                state: proto::ComplianceState::from(state) as i32,
                severity: proto::Severity::from(severity) as i32,
                expected: s.expected,
                observed_before: s.observed_before,
                observed_after: s.observed_after,
                remediated: s.remediated,
                error: s.error,
            });
        }
        cis.push(ConfigurationItemResult {
            ci_id: ci.ci_id,
            ci_revision: ci.ci_revision,
            ci_name: ci.ci_name,
            membership: membership as i32,
            settings,
        });
    }
    let report = ComplianceReport {
        baseline_id: r.baseline_id,
        baseline_revision: r.baseline_revision,
        baseline_name: r.baseline_name,
        evaluated_unix_ms: r.evaluated_unix_ms.unwrap_or_else(clock::now_ms),
        configuration_items: cis,
    };
    crate::compliance::report::validate_report(&report).map_err(|e| e.message())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let r = read(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/report.json"
        )))
        .unwrap();
        assert_eq!(r.baseline_id, "ssh-hardening");
        assert!(!r.configuration_items.is_empty());
    }

    #[test]
    fn bad_state_names_the_setting() {
        let e = parse(r#"{"baseline_id":"b","baseline_revision":1,"configuration_items":[{"ci_id":"c","ci_revision":1,"settings":[{"setting_id":"s1","state":"fine"}]}]}"#).unwrap_err();
        assert!(e.contains("s1") && e.contains("fine"), "{e}");
    }
}
