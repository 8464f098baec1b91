//! The rules a compliance report's contents follow, in one place for the agent that writes a
//! report (and clips its texts to them), the relay that admits it, the site that reads it and
//! the policy parser that names what it reports on.
//!
//! Ids: a report may carry any id of 1 to [`MAX_ID`] bytes without a NUL ([`is_report_id`]);
//! the definitions administrators import are stricter ([`is_definition_id`]), so every id a
//! policy gives an agent is one a report may carry.

use crate::proto::{self, ComplianceReport};
use crate::wire::Refusal;

/// Longest text field an agent may send (hostnames, values, rule texts, errors).
pub const MAX_TEXT: usize = 4096;
/// Most settings one report may carry.
pub const MAX_SETTINGS: usize = 10_000;
/// Longest id (of a baseline, configuration item or setting), in bytes.
pub const MAX_ID: usize = 128;

/// Whether `v` may stand as an id in a report.
pub fn is_report_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_ID && !v.contains('\0')
}

/// Whether `v` may stand as a text in a report.
pub fn is_report_text(v: &str) -> bool {
    v.len() <= MAX_TEXT && !v.contains('\0')
}

/// Whether `v` may name a definition: 1 to [`MAX_ID`] letters, digits, `.`, `_` or `-`,
/// starting with a letter or digit.
pub fn is_definition_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_ID
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The body checks: ids present, enums known, sizes bounded.
pub fn validate_report(r: &ComplianceReport) -> Result<(), Refusal> {
    check_id("baseline_id", &r.baseline_id)?;
    check_text("baseline_name", &r.baseline_name)?;
    if r.evaluated_unix_ms <= 0 {
        return Err(Refusal::InvalidReport(
            "evaluated_unix_ms is missing".into(),
        ));
    }
    let mut settings = 0usize;
    for ci in &r.configuration_items {
        check_id("ci_id", &ci.ci_id)?;
        check_text("ci_name", &ci.ci_name)?;
        if proto::Membership::try_from(ci.membership).is_err() {
            return Err(Refusal::InvalidReport(format!(
                "configuration item {:?} has an unknown membership",
                ci.ci_id
            )));
        }
        for s in &ci.settings {
            settings += 1;
            check_id("setting_id", &s.setting_id)?;
            if proto::ComplianceState::try_from(s.state).is_err() {
                return Err(Refusal::InvalidReport(format!(
                    "setting {:?} has an unknown state {}",
                    s.setting_id, s.state
                )));
            }
            if proto::Severity::try_from(s.severity).is_err() {
                return Err(Refusal::InvalidReport(format!(
                    "setting {:?} has an unknown severity {}",
                    s.setting_id, s.severity
                )));
            }
            check_text("expected", &s.expected)?;
            check_text("error", &s.error)?;
            for v in [&s.observed_before, &s.observed_after]
                .into_iter()
                .flatten()
            {
                check_text("observed value", v)?;
            }
        }
    }
    if settings > MAX_SETTINGS {
        return Err(Refusal::InvalidReport(format!(
            "more than {MAX_SETTINGS} settings in one report"
        )));
    }
    Ok(())
}

fn check_text(field: &str, v: &str) -> Result<(), Refusal> {
    if v.len() > MAX_TEXT {
        return Err(Refusal::InvalidReport(format!(
            "{field} is longer than {MAX_TEXT} bytes"
        )));
    }
    check_no_nul(field, v)
}

fn check_id(field: &str, v: &str) -> Result<(), Refusal> {
    if v.is_empty() || v.len() > MAX_ID {
        return Err(Refusal::InvalidReport(format!(
            "{field} must be 1 to {MAX_ID} bytes"
        )));
    }
    check_no_nul(field, v)
}

/// A NUL character cannot be stored in a PostgreSQL text column: refused here, where the agent
/// is told, rather than failing the site's write of a whole batch.
pub(crate) fn check_no_nul(field: &str, v: &str) -> Result<(), Refusal> {
    if v.contains('\0') {
        return Err(Refusal::InvalidReport(format!(
            "{field} contains a NUL character"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_id_is_a_report_id() {
        for id in ["sshd", "a.b_c-1", &"x".repeat(MAX_ID)] {
            assert!(is_definition_id(id) && is_report_id(id), "{id}");
        }
        for id in ["", "-lead", "a b", "ü", &"x".repeat(MAX_ID + 1)] {
            assert!(!is_definition_id(id), "{id:?}");
        }
        assert!(is_report_id("a b") && !is_report_id("a\0b") && !is_report_id(""));
        assert!(
            is_report_text(&"t".repeat(MAX_TEXT)) && !is_report_text(&"t".repeat(MAX_TEXT + 1))
        );
    }
}
