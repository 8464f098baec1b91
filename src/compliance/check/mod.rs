//! Check definitions: a setting's evaluator and rule, checked once and shared by the site, which
//! refuses a bad definition at import ([`crate::policy::definition`]), and the agent, which
//! evaluates and remediates the checked form ([`crate::agent::eval`]).
//!
//! Evaluator kinds and their parameters (paths are absolute paths of the device):
//!
//! | kind | parameters |
//! |---|---|
//! | `file_exists` | `path` |
//! | `file_mode` | `path` |
//! | `file_owner` | `path` |
//! | `file_contains` | `path`, `pattern` (a regular expression) |
//! | `config_line` | `path`, `key`, optional `separator`, `occurrence`, `block_keyword`, `include_keyword`, `case_sensitive_keys`, `comment` |
//! | `sysctl` | `key` (`net.ipv4.ip_forward`) |
//! | `command` | `program` (absolute), args, optional `output` (`stdout` or `exit_status`), `timeout_s` |
//!
//! Each kind's parameters are checked in a file of its own, next to the agent's evaluator of the
//! same name in `agent/eval/`.

pub mod command;
pub mod config_line;
pub mod file;
pub mod sysctl;

use std::collections::BTreeSet;
use std::path::{Component, Path};
use std::time::Duration;

use thiserror::Error;

use crate::compliance::rule::{Operator, Rule, RuleError, format_mode, parse_mode};
use crate::proto;

/// The evaluator kinds this version knows.
pub const KINDS: [&str; 7] = [
    "file_exists",
    "file_mode",
    "file_owner",
    "file_contains",
    "config_line",
    "sysctl",
    "command",
];

/// Why a setting's definition cannot be evaluated. The site refuses these at import; an agent
/// that meets one (from a newer site) reports the setting as `error`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DefinitionError {
    /// The evaluator kind is not one this version knows.
    #[error("unknown evaluator kind {0:?} (use {kinds})", kinds = KINDS.join(", "))]
    UnknownKind(String),
    /// A parameter the evaluator needs is not given.
    #[error("evaluator {kind} needs the parameter {param}")]
    MissingParam { kind: String, param: String },
    /// A parameter the evaluator does not take.
    #[error("evaluator {kind} does not take the parameter {param}")]
    UnknownParam { kind: String, param: String },
    /// A parameter has a value that cannot work.
    #[error("{param}: {message}")]
    BadParam { param: String, message: String },
    /// The rule does not suit the evaluator.
    #[error("{0}")]
    Unsupported(String),
    /// Remediation is allowed where it cannot be done.
    #[error("{0}")]
    Remediation(String),
    /// The rule itself is invalid.
    #[error("{0}")]
    Rule(#[from] RuleError),
}

impl DefinitionError {
    /// The evaluator parameter at fault, if one is.
    pub fn param(&self) -> Option<&str> {
        match self {
            DefinitionError::MissingParam { param, .. }
            | DefinitionError::UnknownParam { param, .. }
            | DefinitionError::BadParam { param, .. } => Some(param),
            _ => None,
        }
    }
}

/// What to observe, checked.
#[derive(Debug, Clone)]
pub enum Probe {
    FileExists(file::Target),
    FileMode(file::Target),
    FileOwner(file::Target),
    FileContains(file::Contains),
    ConfigLine(config_line::Spec),
    Sysctl(sysctl::Spec),
    Command(command::Spec),
}

/// A setting ready to evaluate: its probe and its rule.
#[derive(Debug, Clone)]
pub struct Check {
    pub probe: Probe,
    pub rule: Rule,
}

/// Parameters of an evaluator, with the ones read so far remembered to refuse the rest.
pub(crate) struct Params<'a> {
    kind: &'a str,
    map: &'a std::collections::HashMap<String, String>,
    used: BTreeSet<&'static str>,
}

impl<'a> Params<'a> {
    fn new(ev: &'a proto::Evaluator) -> Self {
        Self {
            kind: &ev.kind,
            map: &ev.params,
            used: BTreeSet::new(),
        }
    }

    pub(crate) fn optional(&mut self, name: &'static str) -> Option<&'a str> {
        self.used.insert(name);
        self.map.get(name).map(String::as_str)
    }

    pub(crate) fn required(&mut self, name: &'static str) -> Result<&'a str, DefinitionError> {
        self.optional(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| DefinitionError::MissingParam {
                kind: self.kind.into(),
                param: name.into(),
            })
    }

    pub(crate) fn bad(&self, name: &str, message: impl Into<String>) -> DefinitionError {
        DefinitionError::BadParam {
            param: name.into(),
            message: message.into(),
        }
    }

    pub(crate) fn flag(
        &mut self,
        name: &'static str,
        default: bool,
    ) -> Result<bool, DefinitionError> {
        match self.optional(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(self.bad(name, format!("{v:?} is not true or false"))),
        }
    }

    /// An absolute, normalized path parameter.
    pub(crate) fn path(&mut self, name: &'static str) -> Result<String, DefinitionError> {
        let p = self.required(name)?;
        check_abs_path(p).map_err(|m| self.bad(name, m))?;
        Ok(p.to_string())
    }

    fn finish(self) -> Result<(), DefinitionError> {
        let extra = self.map.keys().find(|k| !self.used.contains(k.as_str()));
        match extra {
            Some(k) => Err(DefinitionError::UnknownParam {
                kind: self.kind.into(),
                param: k.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// An absolute path with no `.` or `..` components, so it cannot climb out of the root.
pub fn check_abs_path(p: &str) -> Result<(), String> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(format!("{p:?} is not an absolute path"));
    }
    if p.len() > 1024 || p.contains('\0') {
        return Err(format!("{p:?} is not a usable path"));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || p.split('/').skip(1).any(|s| s == "." || s == "..")
    {
        return Err(format!("{p:?} must not contain . or .. components"));
    }
    Ok(())
}

impl Probe {
    /// Checks an evaluator definition.
    pub fn parse(ev: &proto::Evaluator) -> Result<Self, DefinitionError> {
        let mut p = Params::new(ev);
        let probe = match ev.kind.as_str() {
            "file_exists" => Probe::FileExists(file::Target::parse(&mut p)?),
            "file_mode" => Probe::FileMode(file::Target::parse(&mut p)?),
            "file_owner" => Probe::FileOwner(file::Target::parse(&mut p)?),
            "file_contains" => Probe::FileContains(file::Contains::parse(&mut p)?),
            "config_line" => Probe::ConfigLine(config_line::Spec::parse(&mut p)?),
            "sysctl" => Probe::Sysctl(sysctl::Spec::parse(&mut p)?),
            "command" => Probe::Command(command::Spec::parse(&mut p, &ev.args)?),
            other => return Err(DefinitionError::UnknownKind(other.into())),
        };
        if !matches!(probe, Probe::Command(_)) && !ev.args.is_empty() {
            return Err(DefinitionError::UnknownParam {
                kind: ev.kind.clone(),
                param: "args".into(),
            });
        }
        p.finish()?;
        Ok(probe)
    }

    /// Whether this probe can bring a non-compliant value in line with `op`.
    pub fn can_remediate(&self, op: Operator) -> bool {
        match self {
            Probe::FileMode(_) => matches!(op, Operator::Equals | Operator::ModeAtMost),
            Probe::ConfigLine(_) | Probe::Sysctl(_) => op == Operator::Equals,
            _ => false,
        }
    }
}

impl Check {
    /// Checks a setting's evaluator and rule, and that they fit together.
    pub fn parse(s: &proto::Setting) -> Result<Self, DefinitionError> {
        let ev = s
            .evaluator
            .as_ref()
            .ok_or_else(|| DefinitionError::Unsupported("the setting has no evaluator".into()))?;
        let probe = Probe::parse(ev)?;
        let rule_def = s
            .rule
            .as_ref()
            .ok_or_else(|| DefinitionError::Unsupported("the setting has no rule".into()))?;
        let rule = Rule::parse(rule_def)?;
        let op = rule.operator;
        if op == Operator::ModeAtMost && !matches!(probe, Probe::FileMode(_)) {
            return Err(DefinitionError::Unsupported(format!(
                "operator mode_at_most applies to the file_mode evaluator only, not {}",
                ev.kind
            )));
        }
        if let Probe::FileMode(_) = probe {
            let modes: Vec<&str> = match op {
                Operator::Equals | Operator::NotEquals | Operator::ModeAtMost => {
                    vec![rule.expected.as_str()]
                }
                Operator::OneOf => rule.values.iter().map(String::as_str).collect(),
                _ => vec![],
            };
            for m in modes {
                if parse_mode(m).map(format_mode).as_deref() != Some(m) {
                    return Err(DefinitionError::Unsupported(format!(
                        "file modes are compared as four octal digits, e.g. 0600, not {m:?}"
                    )));
                }
            }
        }
        if s.remediation_allowed && !probe.can_remediate(op) {
            return Err(DefinitionError::Remediation(format!(
                "remediation is possible for file_mode (equals, mode_at_most), config_line \
                 (equals) and sysctl (equals), not for {} with {op}",
                ev.kind
            )));
        }
        Ok(Self { probe, rule })
    }
}

/// How long a command may run when its definition does not say.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    pub(crate) fn setting(
        kind: &str,
        params: &[(&str, &str)],
        op: &str,
        expected: &str,
    ) -> proto::Setting {
        proto::Setting {
            id: "s".into(),
            name: "s".into(),
            severity: proto::Severity::Warning as i32,
            remediation_allowed: false,
            evaluator: Some(proto::Evaluator {
                kind: kind.into(),
                params: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
                args: vec![],
            }),
            rule: Some(proto::Rule {
                operator: op.into(),
                expected: expected.into(),
                ..Default::default()
            }),
            noncompliant_if_missing: false,
        }
    }

    #[test]
    fn remediation_needs_a_remediable_rule() {
        let mut s = setting("file_owner", &[("path", "/etc/x")], "equals", "root:root");
        s.remediation_allowed = true;
        let e = Check::parse(&s).unwrap_err().to_string();
        assert!(e.contains("remediation is possible for"), "{e}");
        let s = setting("file_owner", &[("path", "/etc/x")], "mode_at_most", "0600");
        assert!(Check::parse(&s).is_err());
        let s = setting("file_mode", &[("path", "/etc/x")], "equals", "600");
        let e = Check::parse(&s).unwrap_err().to_string();
        assert!(e.contains("four octal digits"), "{e}");
    }
}
