//! The compliance model (DESIGN section 4): states, severities, and how settings roll up into a
//! configuration item's state and configuration items into a baseline's.
//!
//! Roll-up rules, as in the suite this models: not applicable counts as compliant; a CI is
//! non-compliant if any of its settings is, otherwise in error if any setting is, otherwise
//! unknown if any setting is, otherwise compliant; a baseline rolls up its CIs the same way; the
//! severity of a roll-up is the highest severity among its non-compliant settings.
//!
//! Membership (required, optional, prohibited) is applied where a setting is evaluated, because
//! only the evaluator knows whether a setting was *found*; the states in a report already carry
//! it, so every roll-up here is the same whatever the membership:
//! - **required**: a setting that is not found is non-compliant when the setting says
//!   `noncompliant_if_missing`, otherwise not applicable.
//! - **optional**: the item applies only where what it checks exists: a setting that is not
//!   found is not applicable, whatever `noncompliant_if_missing` says.
//! - **prohibited**: the item must not be *detected*. It is detected when all its settings hold
//!   (at least one compliant, none failing or in error); then its compliant settings are
//!   reported non-compliant (each is evidence of the prohibited item), else its failing settings
//!   are reported compliant. Expected values read `prohibited: …`. Prohibited items are never
//!   remediated.
//!
//! [`report`] holds the rules a report's contents follow (ids, text lengths, how many settings),
//! which the agent, the relay, the site and the policy parser share; [`rule`] the rules a
//! setting's observed value is judged by; [`check`] a setting's evaluator and rule checked
//! together, which the policy parser refuses bad definitions with and the agent evaluates.

pub mod check;
pub mod report;
pub mod rule;

use std::fmt;
use std::str::FromStr;

use crate::proto;

/// Compliance state of a setting, a configuration item, a baseline or a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Compliant,
    NotApplicable,
    Unknown,
    Error,
    NonCompliant,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Compliant,
        State::NonCompliant,
        State::Error,
        State::NotApplicable,
        State::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Compliant => "compliant",
            State::NonCompliant => "non_compliant",
            State::Error => "error",
            State::NotApplicable => "not_applicable",
            State::Unknown => "unknown",
        }
    }

    /// How bad a state is for roll-ups: not applicable weighs as compliant.
    fn weight(self) -> u8 {
        match self {
            State::Compliant | State::NotApplicable => 0,
            State::Unknown => 1,
            State::Error => 2,
            State::NonCompliant => 3,
        }
    }

    /// Whether summaries count this state as compliant.
    pub fn counts_as_compliant(self) -> bool {
        self.weight() == 0
    }
}

impl From<proto::ComplianceState> for State {
    fn from(s: proto::ComplianceState) -> Self {
        match s {
            proto::ComplianceState::Compliant => State::Compliant,
            proto::ComplianceState::NonCompliant => State::NonCompliant,
            proto::ComplianceState::Error => State::Error,
            proto::ComplianceState::NotApplicable => State::NotApplicable,
            proto::ComplianceState::Unknown => State::Unknown,
        }
    }
}

impl From<State> for proto::ComplianceState {
    fn from(s: State) -> Self {
        match s {
            State::Compliant => proto::ComplianceState::Compliant,
            State::NonCompliant => proto::ComplianceState::NonCompliant,
            State::Error => proto::ComplianceState::Error,
            State::NotApplicable => proto::ComplianceState::NotApplicable,
            State::Unknown => proto::ComplianceState::Unknown,
        }
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        State::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown compliance state {s:?}"))
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity of a setting's non-compliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Severity {
    #[default]
    None,
    Information,
    Warning,
    Critical,
    CriticalWithEvent,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::None,
        Severity::Information,
        Severity::Warning,
        Severity::Critical,
        Severity::CriticalWithEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "none",
            Severity::Information => "information",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::CriticalWithEvent => "critical_with_event",
        }
    }
}

impl From<proto::Severity> for Severity {
    fn from(s: proto::Severity) -> Self {
        match s {
            proto::Severity::None => Severity::None,
            proto::Severity::Information => Severity::Information,
            proto::Severity::Warning => Severity::Warning,
            proto::Severity::Critical => Severity::Critical,
            proto::Severity::CriticalWithEvent => Severity::CriticalWithEvent,
        }
    }
}

impl From<Severity> for proto::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::None => proto::Severity::None,
            Severity::Information => proto::Severity::Information,
            Severity::Warning => proto::Severity::Warning,
            Severity::Critical => proto::Severity::Critical,
            Severity::CriticalWithEvent => proto::Severity::CriticalWithEvent,
        }
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown severity {s:?}"))
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of settings by state, with the rolled-up state and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rollup {
    pub compliant: u32,
    pub non_compliant: u32,
    pub error: u32,
    pub not_applicable: u32,
    pub unknown: u32,
    /// Highest severity among non-compliant items.
    pub max_severity: Severity,
    /// The worst state seen; `None` while nothing was added.
    worst: Option<State>,
}

impl Rollup {
    /// Adds one item (a setting, or a rolled-up CI) with its state and severity.
    pub fn add(&mut self, state: State, severity: Severity) {
        match state {
            State::Compliant => self.compliant += 1,
            State::NonCompliant => self.non_compliant += 1,
            State::Error => self.error += 1,
            State::NotApplicable => self.not_applicable += 1,
            State::Unknown => self.unknown += 1,
        }
        if state == State::NonCompliant && severity > self.max_severity {
            self.max_severity = severity;
        }
        self.worst = Some(match self.worst {
            Some(w) if w.weight() >= state.weight() => w,
            _ => state,
        });
    }

    /// The rolled-up state: unknown when empty, compliant when everything counts as compliant.
    pub fn state(&self) -> State {
        match self.worst {
            None => State::Unknown,
            Some(w) if w.counts_as_compliant() => State::Compliant,
            Some(w) => w,
        }
    }

    pub fn total(&self) -> u32 {
        self.compliant + self.non_compliant + self.error + self.not_applicable + self.unknown
    }
}

/// Rolls up a whole report: settings into CIs, CIs into the baseline; the counts are of settings.
pub fn rollup_report(report: &proto::ComplianceReport) -> Rollup {
    let mut settings = Rollup::default();
    let mut baseline = Rollup::default();
    for ci in &report.configuration_items {
        let mut c = Rollup::default();
        for s in &ci.settings {
            let st = State::from(
                proto::ComplianceState::try_from(s.state)
                    .unwrap_or(proto::ComplianceState::Unknown),
            );
            let sev = Severity::from(proto::Severity::try_from(s.severity).unwrap_or_default());
            c.add(st, sev);
            settings.add(st, sev);
        }
        baseline.add(c.state(), c.max_severity);
    }
    Rollup {
        worst: baseline.worst,
        max_severity: settings.max_severity,
        ..settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_applicable_counts_as_compliant() {
        let mut r = Rollup::default();
        r.add(State::NotApplicable, Severity::None);
        r.add(State::Compliant, Severity::Critical);
        assert_eq!(r.state(), State::Compliant);
        assert_eq!(r.max_severity, Severity::None);
    }

    #[test]
    fn non_compliant_beats_error_beats_unknown() {
        let mut r = Rollup::default();
        r.add(State::Unknown, Severity::None);
        assert_eq!(r.state(), State::Unknown);
        r.add(State::Error, Severity::Warning);
        assert_eq!(r.state(), State::Error);
        r.add(State::NonCompliant, Severity::Information);
        r.add(State::NonCompliant, Severity::Critical);
        r.add(State::Compliant, Severity::CriticalWithEvent);
        assert_eq!(r.state(), State::NonCompliant);
        assert_eq!(r.max_severity, Severity::Critical);
        assert_eq!(
            (r.non_compliant, r.error, r.unknown, r.compliant),
            (2, 1, 1, 1)
        );
    }

    #[test]
    fn empty_is_unknown() {
        assert_eq!(Rollup::default().state(), State::Unknown);
    }

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
        }
    }
}
