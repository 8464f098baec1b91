//! Definition files: configuration items and baselines as administrators write them in TOML,
//! checked field by field with the file, line and field of every error, and turned into the
//! canonical form the site stores and builds the policy from.
//!
//! ```toml
//! [[configuration_item]]
//! id = "openssh-server-config"          # letters, digits, '.', '_', '-'; up to 128
//! revision = 1                          # bump it whenever the content changes
//! name = "OpenSSH server configuration"
//!
//! [[configuration_item.setting]]
//! id = "permit-root-login"
//! name = "Root cannot log in with SSH"  # optional, defaults to the id
//! severity = "critical"                 # none | information | warning | critical | critical_with_event
//! remediation_allowed = true            # default false
//! noncompliant_if_missing = true        # default false: a setting not found is not applicable
//! evaluator = { kind = "config_line", path = "/etc/ssh/sshd_config", key = "PermitRootLogin" }
//! rule = { operator = "equals", value = "no", ignore_case = true }
//!
//! [[baseline]]
//! id = "ssh-hardening"
//! revision = 1
//! name = "SSH hardening"
//!
//! [[baseline.member]]
//! configuration_item = "openssh-server-config"
//! revision = "latest"                   # or a revision number to pin
//! membership = "required"               # required | optional | prohibited
//! remediate = true                      # fix settings that allow it (never for prohibited)
//! ```
//!
//! Evaluator kinds and their parameters are listed in [`crate::compliance::check`]; rule operators in
//! [`crate::compliance::rule`]. A rule's `value` is a string or a number (for `one_of`, a list).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::compliance::Severity;
use crate::compliance::check::{Check, DefinitionError};
use crate::compliance::report::{MAX_ID, is_definition_id};
use crate::compliance::rule::{RuleError, format_mode, parse_mode};
use crate::proto;

/// One error in a definition file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The field at fault, e.g. `configuration_item "sshd" setting "x" rule.operator`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: ", self.file, self.line)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// A configuration item in canonical form (stored as JSON; its hash is its content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiDefinition {
    pub id: String,
    pub revision: u32,
    pub name: String,
    pub description: String,
    pub settings: Vec<SettingDefinition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingDefinition {
    pub id: String,
    pub name: String,
    pub severity: String,
    pub remediation_allowed: bool,
    pub noncompliant_if_missing: bool,
    pub evaluator: EvaluatorDefinition,
    pub rule: RuleDefinition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluatorDefinition {
    pub kind: String,
    pub params: BTreeMap<String, String>,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDefinition {
    pub operator: String,
    pub expected: String,
    pub values: Vec<String>,
    pub ignore_case: bool,
}

/// A baseline in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineDefinition {
    pub id: String,
    pub revision: u32,
    pub name: String,
    pub description: String,
    pub members: Vec<MemberDefinition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDefinition {
    pub configuration_item: String,
    /// `None`: the latest revision.
    pub revision: Option<u32>,
    /// required, optional or prohibited.
    pub membership: String,
    pub remediate: bool,
}

/// Where a definition (and each baseline member) came from, for errors found later.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub file: String,
    pub line: usize,
    /// Lines of the baseline's members (empty for items).
    pub member_lines: Vec<usize>,
}

/// What one file defines.
#[derive(Debug, Clone, Default)]
pub struct ParsedFile {
    pub cis: Vec<Located<CiDefinition>>,
    pub baselines: Vec<Located<BaselineDefinition>>,
}

impl CiDefinition {
    pub fn to_proto(&self) -> proto::ConfigurationItem {
        proto::ConfigurationItem {
            id: self.id.clone(),
            revision: self.revision,
            name: self.name.clone(),
            description: self.description.clone(),
            settings: self
                .settings
                .iter()
                .map(SettingDefinition::to_proto)
                .collect(),
        }
    }
}

impl SettingDefinition {
    pub fn to_proto(&self) -> proto::Setting {
        let severity = self.severity.parse::<Severity>().unwrap_or_default();
        proto::Setting {
            id: self.id.clone(),
            name: self.name.clone(),
            severity: proto::Severity::from(severity) as i32,
            remediation_allowed: self.remediation_allowed,
            evaluator: Some(proto::Evaluator {
                kind: self.evaluator.kind.clone(),
                params: self
                    .evaluator
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                args: self.evaluator.args.clone(),
            }),
            rule: Some(proto::Rule {
                operator: self.rule.operator.clone(),
                expected: self.rule.expected.clone(),
                values: self.rule.values.clone(),
                ignore_case: self.rule.ignore_case,
            }),
            noncompliant_if_missing: self.noncompliant_if_missing,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    configuration_item: Vec<Spanned<CiToml>>,
    #[serde(default)]
    baseline: Vec<Spanned<BaselineToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CiToml {
    id: Spanned<String>,
    revision: Spanned<i64>,
    name: Spanned<String>,
    #[serde(default)]
    description: Option<Spanned<String>>,
    #[serde(default)]
    setting: Vec<Spanned<SettingToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingToml {
    id: Spanned<String>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    severity: Option<Spanned<String>>,
    #[serde(default)]
    remediation_allowed: Option<Spanned<bool>>,
    #[serde(default)]
    noncompliant_if_missing: Option<Spanned<bool>>,
    evaluator: Spanned<EvaluatorToml>,
    rule: Spanned<RuleToml>,
}

/// Every parameter any evaluator takes; which apply is checked per kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluatorToml {
    kind: Spanned<String>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    separator: Option<Spanned<String>>,
    #[serde(default)]
    occurrence: Option<Spanned<String>>,
    #[serde(default)]
    block_keyword: Option<Spanned<String>>,
    #[serde(default)]
    include_keyword: Option<Spanned<String>>,
    #[serde(default)]
    case_sensitive_keys: Option<Spanned<bool>>,
    #[serde(default)]
    comment: Option<Spanned<String>>,
    #[serde(default)]
    program: Option<Spanned<String>>,
    #[serde(default)]
    args: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    output: Option<Spanned<String>>,
    #[serde(default)]
    timeout_s: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    operator: Spanned<String>,
    #[serde(default)]
    value: Option<Spanned<toml::Value>>,
    #[serde(default)]
    ignore_case: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineToml {
    id: Spanned<String>,
    revision: Spanned<i64>,
    name: Spanned<String>,
    #[serde(default)]
    description: Option<Spanned<String>>,
    #[serde(default)]
    member: Vec<Spanned<MemberToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberToml {
    configuration_item: Spanned<String>,
    #[serde(default)]
    revision: Option<Spanned<toml::Value>>,
    #[serde(default)]
    membership: Option<Spanned<String>>,
    #[serde(default)]
    remediate: Option<Spanned<bool>>,
}

/// Byte offsets to lines and columns, for one file.
pub(crate) struct Lines<'a> {
    file: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(file: &'a str, text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { file, starts }
    }

    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|s| *s <= offset).max(1);
        (line, offset - self.starts[line - 1] + 1)
    }

    pub(crate) fn error(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> FileError {
        let (line, column) = self.line_col(span.start);
        FileError {
            file: self.file.into(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses and checks one definition file. Returns every error found, not only the first.
pub fn parse_file(file: &str, text: &str) -> Result<ParsedFile, Vec<FileError>> {
    let lines = Lines::new(file, text);
    let doc: FileToml = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        vec![lines.error(e.span().unwrap_or(0..0), "", message)]
    })?;
    let mut errors = Vec::new();
    let mut out = ParsedFile::default();
    let mut seen_cis: HashMap<(String, u32), usize> = HashMap::new();
    for ci in &doc.configuration_item {
        let line = lines.line_col(ci.span().start).0;
        if let Some(def) = check_ci(ci.get_ref(), &lines, &mut errors) {
            let key = (def.id.clone(), def.revision);
            if let Some(first) = seen_cis.insert(key, line) {
                errors.push(lines.error(
                    ci.get_ref().id.span(),
                    format!("configuration_item {:?}", def.id),
                    format!(
                        "revision {} is defined twice in this file (first on line {first})",
                        def.revision
                    ),
                ));
                continue;
            }
            out.cis.push(Located {
                value: def,
                file: file.into(),
                line,
                member_lines: vec![],
            });
        }
    }
    let mut seen_baselines: HashMap<(String, u32), usize> = HashMap::new();
    for b in &doc.baseline {
        let line = lines.line_col(b.span().start).0;
        let member_lines = b
            .get_ref()
            .member
            .iter()
            .map(|m| {
                lines
                    .line_col(m.get_ref().configuration_item.span().start)
                    .0
            })
            .collect();
        if let Some(def) = check_baseline(b.get_ref(), &lines, &mut errors) {
            if let Some(first) = seen_baselines.insert((def.id.clone(), def.revision), line) {
                errors.push(lines.error(
                    b.get_ref().id.span(),
                    format!("baseline {:?}", def.id),
                    format!(
                        "revision {} is defined twice in this file (first on line {first})",
                        def.revision
                    ),
                ));
                continue;
            }
            out.baselines.push(Located {
                value: def,
                file: file.into(),
                line,
                member_lines,
            });
        }
    }
    if out.cis.is_empty() && out.baselines.is_empty() && errors.is_empty() {
        errors.push(lines.error(
            0..0,
            "",
            "defines nothing: expected [[configuration_item]] or [[baseline]] tables",
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn check_id(
    id: &Spanned<String>,
    what: &str,
    lines: &Lines<'_>,
    errors: &mut Vec<FileError>,
) -> bool {
    let v = id.get_ref();
    let ok = is_definition_id(v);
    if !ok {
        errors.push(lines.error(
            id.span(),
            format!("{what}.id"),
            format!("{v:?} is not an id: use 1 to {MAX_ID} letters, digits, '.', '_' or '-', starting with a letter or digit"),
        ));
    }
    ok
}

fn check_revision(
    rev: &Spanned<i64>,
    what: &str,
    lines: &Lines<'_>,
    errors: &mut Vec<FileError>,
) -> Option<u32> {
    match u32::try_from(*rev.get_ref()) {
        Ok(r) if r >= 1 => Some(r),
        _ => {
            errors.push(lines.error(
                rev.span(),
                format!("{what}.revision"),
                format!(
                    "{} is not a revision: use a whole number from 1",
                    rev.get_ref()
                ),
            ));
            None
        }
    }
}

fn check_text(
    t: &Spanned<String>,
    field: String,
    required: bool,
    lines: &Lines<'_>,
    errors: &mut Vec<FileError>,
) -> String {
    let v = t.get_ref();
    if required && v.trim().is_empty() {
        errors.push(lines.error(t.span(), field, "must not be empty"));
    } else if v.len() > 4096 {
        errors.push(lines.error(t.span(), field, "is longer than 4096 bytes"));
    }
    v.clone()
}

fn check_ci(ci: &CiToml, lines: &Lines<'_>, errors: &mut Vec<FileError>) -> Option<CiDefinition> {
    let before = errors.len();
    let id = ci.id.get_ref().clone();
    let what = format!("configuration_item {id:?}");
    check_id(&ci.id, "configuration_item", lines, errors);
    let revision = check_revision(&ci.revision, &what, lines, errors);
    let name = check_text(&ci.name, format!("{what} name"), true, lines, errors);
    let description = ci
        .description
        .as_ref()
        .map(|d| check_text(d, format!("{what} description"), false, lines, errors))
        .unwrap_or_default();
    if ci.setting.is_empty() {
        errors.push(lines.error(
            ci.id.span(),
            what.clone(),
            "has no [[configuration_item.setting]]",
        ));
    }
    let mut ids = HashSet::new();
    let mut settings = Vec::new();
    for s in &ci.setting {
        let s = s.get_ref();
        if !ids.insert(s.id.get_ref().clone()) {
            errors.push(lines.error(
                s.id.span(),
                format!("{what} setting"),
                format!("id {:?} is used twice", s.id.get_ref()),
            ));
            continue;
        }
        if let Some(d) = check_setting(s, &what, lines, errors) {
            settings.push(d);
        }
    }
    (errors.len() == before).then(|| CiDefinition {
        id,
        revision: revision.unwrap_or(1),
        name,
        description,
        settings,
    })
}

fn check_setting(
    s: &SettingToml,
    ci_what: &str,
    lines: &Lines<'_>,
    errors: &mut Vec<FileError>,
) -> Option<SettingDefinition> {
    let before = errors.len();
    let what = format!("{ci_what} setting {:?}", s.id.get_ref());
    check_id(&s.id, &format!("{ci_what} setting"), lines, errors);
    let name = s
        .name
        .as_ref()
        .map(|n| check_text(n, format!("{what} name"), true, lines, errors))
        .unwrap_or_else(|| s.id.get_ref().clone());
    let severity = match &s.severity {
        None => Severity::None,
        Some(sev) => match sev.get_ref().parse::<Severity>() {
            Ok(v) => v,
            Err(_) => {
                errors.push(lines.error(
                    sev.span(),
                    format!("{what} severity"),
                    format!(
                        "{:?} is not a severity (use none, information, warning, critical, critical_with_event)",
                        sev.get_ref()
                    ),
                ));
                Severity::None
            }
        },
    };
    let ev = s.evaluator.get_ref();
    let kind = ev.kind.get_ref().clone();
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let mut spans: HashMap<&'static str, Range<usize>> = HashMap::new();
    let mut text = |name: &'static str, v: &Option<Spanned<String>>| {
        if let Some(v) = v {
            params.insert(name.into(), v.get_ref().clone());
            spans.insert(name, v.span());
        }
    };
    text("path", &ev.path);
    text("pattern", &ev.pattern);
    text("key", &ev.key);
    text("separator", &ev.separator);
    text("occurrence", &ev.occurrence);
    text("block_keyword", &ev.block_keyword);
    text("include_keyword", &ev.include_keyword);
    text("comment", &ev.comment);
    text("program", &ev.program);
    text("output", &ev.output);
    if let Some(v) = &ev.case_sensitive_keys {
        params.insert("case_sensitive_keys".into(), v.get_ref().to_string());
        spans.insert("case_sensitive_keys", v.span());
    }
    if let Some(v) = &ev.timeout_s {
        params.insert("timeout_s".into(), v.get_ref().to_string());
        spans.insert("timeout_s", v.span());
    }
    let args = ev
        .args
        .as_ref()
        .map(|a| a.get_ref().clone())
        .unwrap_or_default();
    if let Some(a) = &ev.args {
        spans.insert("args", a.span());
    }
    spans.insert("kind", ev.kind.span());

    let r = s.rule.get_ref();
    let (mut expected, values) = match r.value.as_ref().map(|v| v.get_ref()) {
        None => (String::new(), vec![]),
        Some(toml::Value::Array(items)) => {
            let mut vals = Vec::new();
            for item in items {
                match scalar(item) {
                    Some(v) => vals.push(v),
                    None => errors.push(lines.error(
                        r.value.as_ref().map(Spanned::span).unwrap_or(0..0),
                        format!("{what} rule.value"),
                        "list items must be strings or numbers",
                    )),
                }
            }
            (String::new(), vals)
        }
        Some(v) => match scalar(v) {
            Some(s) => (s, vec![]),
            None => {
                errors.push(lines.error(
                    r.value.as_ref().map(Spanned::span).unwrap_or(0..0),
                    format!("{what} rule.value"),
                    "must be a string, a number or (for one_of) a list",
                ));
                (String::new(), vec![])
            }
        },
    };
    // Modes are compared as four octal digits; let authors write 600 or 0600.
    if kind == "file_mode"
        && let Some(m) = parse_mode(&expected)
    {
        expected = format_mode(m);
    }
    let values: Vec<String> = if kind == "file_mode" {
        values
            .into_iter()
            .map(|v| parse_mode(&v).map(format_mode).unwrap_or(v))
            .collect()
    } else {
        values
    };
    for v in values.iter().chain(std::iter::once(&expected)) {
        if v.len() > 1024 {
            errors.push(lines.error(
                r.value.as_ref().map(Spanned::span).unwrap_or(0..0),
                format!("{what} rule.value"),
                "is longer than 1024 bytes",
            ));
        }
    }
    let def = SettingDefinition {
        id: s.id.get_ref().clone(),
        name,
        severity: severity.as_str().into(),
        remediation_allowed: s.remediation_allowed.as_ref().is_some_and(|b| *b.get_ref()),
        noncompliant_if_missing: s
            .noncompliant_if_missing
            .as_ref()
            .is_some_and(|b| *b.get_ref()),
        evaluator: EvaluatorDefinition { kind, params, args },
        rule: RuleDefinition {
            operator: r.operator.get_ref().clone(),
            expected,
            values,
            ignore_case: r.ignore_case.as_ref().is_some_and(|b| *b.get_ref()),
        },
    };
    if let Err(e) = Check::parse(&def.to_proto()) {
        let (span, field) = match &e {
            DefinitionError::UnknownKind(_) => (ev.kind.span(), "evaluator.kind".to_string()),
            DefinitionError::MissingParam { .. } => (s.evaluator.span(), "evaluator".to_string()),
            DefinitionError::UnknownParam { param, .. }
            | DefinitionError::BadParam { param, .. } => (
                spans
                    .get(param.as_str())
                    .cloned()
                    .unwrap_or(s.evaluator.span()),
                format!("evaluator.{param}"),
            ),
            DefinitionError::Rule(RuleError::UnknownOperator(_)) => {
                (r.operator.span(), "rule.operator".to_string())
            }
            DefinitionError::Rule(_) => (
                r.value
                    .as_ref()
                    .map(Spanned::span)
                    .or_else(|| r.ignore_case.as_ref().map(Spanned::span))
                    .unwrap_or(s.rule.span()),
                "rule.value".to_string(),
            ),
            DefinitionError::Remediation(_) => (
                s.remediation_allowed
                    .as_ref()
                    .map(Spanned::span)
                    .unwrap_or(s.rule.span()),
                "remediation_allowed".to_string(),
            ),
            DefinitionError::Unsupported(_) => (s.rule.span(), "rule".to_string()),
        };
        errors.push(lines.error(span, format!("{what} {field}"), e.to_string()));
    }
    (errors.len() == before).then_some(def)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn check_baseline(
    b: &BaselineToml,
    lines: &Lines<'_>,
    errors: &mut Vec<FileError>,
) -> Option<BaselineDefinition> {
    let before = errors.len();
    let id = b.id.get_ref().clone();
    let what = format!("baseline {id:?}");
    check_id(&b.id, "baseline", lines, errors);
    let revision = check_revision(&b.revision, &what, lines, errors);
    let name = check_text(&b.name, format!("{what} name"), true, lines, errors);
    let description = b
        .description
        .as_ref()
        .map(|d| check_text(d, format!("{what} description"), false, lines, errors))
        .unwrap_or_default();
    if b.member.is_empty() {
        errors.push(lines.error(b.id.span(), what.clone(), "has no [[baseline.member]]"));
    }
    let mut seen = HashSet::new();
    let mut members = Vec::new();
    for m in &b.member {
        let m = m.get_ref();
        let ci = m.configuration_item.get_ref().clone();
        let mwhat = format!("{what} member {ci:?}");
        check_id(
            &m.configuration_item,
            &format!("{what} member"),
            lines,
            errors,
        );
        if !seen.insert(ci.clone()) {
            errors.push(lines.error(
                m.configuration_item.span(),
                mwhat.clone(),
                "is a member twice",
            ));
        }
        let revision = match m.revision.as_ref().map(|r| (r.get_ref(), r.span())) {
            None => None,
            Some((toml::Value::String(s), _)) if s == "latest" => None,
            Some((toml::Value::Integer(i), span)) => match u32::try_from(*i) {
                Ok(r) if r >= 1 => Some(r),
                _ => {
                    errors.push(lines.error(
                        span,
                        format!("{mwhat} revision"),
                        format!("{i} is not a revision"),
                    ));
                    None
                }
            },
            Some((v, span)) => {
                errors.push(lines.error(
                    span,
                    format!("{mwhat} revision"),
                    format!("{v} is neither \"latest\" nor a revision number"),
                ));
                None
            }
        };
        let membership = match m.membership.as_ref() {
            None => "required".to_string(),
            Some(ms) => match ms.get_ref().as_str() {
                v @ ("required" | "optional" | "prohibited") => v.to_string(),
                other => {
                    errors.push(lines.error(
                        ms.span(),
                        format!("{mwhat} membership"),
                        format!("{other:?} is not required, optional or prohibited"),
                    ));
                    "required".into()
                }
            },
        };
        let remediate = m.remediate.as_ref().is_some_and(|r| *r.get_ref());
        if remediate && membership == "prohibited" {
            errors.push(lines.error(
                m.remediate.as_ref().map(Spanned::span).unwrap_or(0..0),
                format!("{mwhat} remediate"),
                "a prohibited item is never remediated; remove remediate = true",
            ));
        }
        members.push(MemberDefinition {
            configuration_item: ci,
            revision,
            membership,
            remediate,
        });
    }
    (errors.len() == before).then(|| BaselineDefinition {
        id,
        revision: revision.unwrap_or(1),
        name,
        description,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[configuration_item]]
id = "sshd"
revision = 2
name = "sshd"

[[configuration_item.setting]]
id = "root-login"
severity = "critical"
remediation_allowed = true
evaluator = { kind = "config_line", path = "/etc/ssh/sshd_config", key = "PermitRootLogin" }
rule = { operator = "equals", value = "no" }

[[configuration_item.setting]]
id = "config-mode"
evaluator = { kind = "file_mode", path = "/etc/ssh/sshd_config" }
rule = { operator = "mode_at_most", value = 600 }

[[configuration_item.setting]]
id = "log-level"
evaluator = { kind = "config_line", path = "/etc/ssh/sshd_config", key = "LogLevel" }
rule = { operator = "one_of", value = ["INFO", "VERBOSE"], ignore_case = true }

[[baseline]]
id = "ssh"
revision = 1
name = "SSH"

[[baseline.member]]
configuration_item = "sshd"
remediate = true
"#;

    fn errors(text: &str) -> Vec<String> {
        parse_file("b.toml", text)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn a_good_file_parses_into_canonical_definitions() {
        let f = parse_file("b.toml", GOOD).unwrap();
        assert_eq!(f.cis.len(), 1);
        let ci = &f.cis[0].value;
        assert_eq!((ci.id.as_str(), ci.revision), ("sshd", 2));
        assert_eq!(ci.settings[0].severity, "critical");
        assert!(ci.settings[0].remediation_allowed);
        assert_eq!(ci.settings[1].rule.expected, "0600", "modes are normalized");
        assert_eq!(ci.settings[2].rule.values, vec!["INFO", "VERBOSE"]);
        assert_eq!(ci.settings[0].name, "root-login");
        let b = &f.baselines[0];
        assert_eq!(b.value.members[0].revision, None);
        assert_eq!(b.value.members[0].membership, "required");
        assert_eq!(b.member_lines, vec![30]);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = errors(&GOOD.replace("\"equals\"", "\"equal\""));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("b.toml line 12: configuration_item \"sshd\" setting \"root-login\" rule.operator: unknown operator \"equal\""),
            "{e:?}"
        );

        let e = errors(&GOOD.replace("kind = \"file_mode\"", "kind = \"file_perms\""));
        assert!(
            e[0].starts_with("b.toml line 16: configuration_item \"sshd\" setting \"config-mode\" evaluator.kind: unknown evaluator kind \"file_perms\""),
            "{e:?}"
        );

        let e = errors(&GOOD.replace(
            "rule = { operator = \"equals\", value = \"no\" }",
            "rule = { operator = \"matches\", value = \"^(no\" }",
        ));
        assert!(
            e[0].starts_with("b.toml line 12: configuration_item \"sshd\" setting \"root-login\" rule.value: the pattern \"^(no\" is not a valid regular expression"),
            "{e:?}"
        );

        let e = errors(&GOOD.replace("severity = \"critical\"", "severity = \"urgent\""));
        assert!(e[0].starts_with("b.toml line 9: configuration_item \"sshd\" setting \"root-login\" severity: \"urgent\" is not a severity"), "{e:?}");

        let e = errors(&GOOD.replace(
            "key = \"LogLevel\" }",
            "key = \"LogLevel\", pattern = \"x\" }",
        ));
        assert!(
            e[0].contains("line 21")
                && e[0].contains(
                    "evaluator.pattern: evaluator config_line does not take the parameter pattern"
                ),
            "{e:?}"
        );

        let e = errors(&GOOD.replace(
            "remediate = true",
            "remediate = true\nmembership = \"banned\"",
        ));
        assert!(e[0].starts_with("b.toml line 32: baseline \"ssh\" member \"sshd\" membership: \"banned\" is not required"), "{e:?}");
    }

    #[test]
    fn syntax_and_shape_errors_name_the_line() {
        let e = errors(&GOOD.replace(
            "revision = 1\nname = \"SSH\"",
            "revision = 1\nnam = \"SSH\"",
        ));
        assert!(
            e[0].starts_with("b.toml line 27:") && e[0].contains("nam"),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("id = \"config-mode\"", "id = config-mode"));
        assert!(e[0].starts_with("b.toml line 15:"), "{e:?}");
        let e = errors(&GOOD.replace("revision = 2", "revision = 0"));
        assert!(
            e[0].starts_with("b.toml line 4: configuration_item \"sshd\".revision"),
            "{e:?}"
        );
        let e = errors("# nothing\n");
        assert!(e[0].contains("defines nothing"), "{e:?}");
    }

    #[test]
    fn remediation_and_membership_conflicts_are_refused() {
        let e = errors(&GOOD.replace(
            "rule = { operator = \"equals\", value = \"no\" }",
            "rule = { operator = \"not_equals\", value = \"yes\" }",
        ));
        assert!(
            e[0].contains("line 10")
                && e[0].contains("remediation_allowed: remediation is possible for"),
            "{e:?}"
        );
        let e = errors(&GOOD.replace(
            "remediate = true",
            "remediate = true\nmembership = \"prohibited\"",
        ));
        assert!(
            e[0].contains("remediate: a prohibited item is never remediated"),
            "{e:?}"
        );
    }

    #[test]
    fn every_error_of_a_file_is_reported() {
        let e = errors(
            &GOOD
                .replace("\"equals\"", "\"equal\"")
                .replace("severity = \"critical\"", "severity = \"urgent\""),
        );
        assert_eq!(e.len(), 2, "{e:?}");
    }
}
