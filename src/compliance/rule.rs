//! Rules: how a setting's observed value is judged. A rule is an operator and what it compares
//! with; [`Rule::parse`] checks it once (regexes compile, numbers and modes parse), so a rule
//! that reaches an agent can always be applied, and a bad one is refused at import.

use std::fmt;

use regex::{Regex, RegexBuilder};
use thiserror::Error;

use crate::proto;

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// The operator is not one this version knows.
    #[error("unknown operator {0:?} (use {ops})", ops = Operator::NAMES.join(", "))]
    UnknownOperator(String),
    /// The expected value does not suit the operator (not a number, not a mode, …).
    #[error("{0}")]
    BadExpected(String),
    /// A `matches` / `not_matches` pattern does not compile.
    #[error("the pattern {pattern:?} is not a valid regular expression: {why}")]
    BadPattern { pattern: String, why: String },
}

/// What a rule does with the observed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    Matches,
    NotMatches,
    LessThan,
    GreaterThan,
    LessOrEqual,
    GreaterOrEqual,
    OneOf,
    /// The setting is found (a file exists, a pattern occurs, a key is set).
    Exists,
    /// The setting is not found.
    Absent,
    /// A file mode grants no permission the expected mode does not (e.g. 0640 is at most 0644).
    ModeAtMost,
}

impl Operator {
    pub const NAMES: [&'static str; 12] = [
        "equals",
        "not_equals",
        "matches",
        "not_matches",
        "less_than",
        "greater_than",
        "less_or_equal",
        "greater_or_equal",
        "one_of",
        "exists",
        "absent",
        "mode_at_most",
    ];

    const ALL: [Operator; 12] = [
        Operator::Equals,
        Operator::NotEquals,
        Operator::Matches,
        Operator::NotMatches,
        Operator::LessThan,
        Operator::GreaterThan,
        Operator::LessOrEqual,
        Operator::GreaterOrEqual,
        Operator::OneOf,
        Operator::Exists,
        Operator::Absent,
        Operator::ModeAtMost,
    ];

    pub fn parse(name: &str) -> Result<Self, RuleError> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| RuleError::UnknownOperator(name.into()))
    }

    pub fn as_str(self) -> &'static str {
        let i = Self::ALL
            .iter()
            .position(|o| *o == self)
            .expect("every operator is in ALL");
        Self::NAMES[i]
    }

    /// Whether the operator judges presence rather than a value.
    pub fn is_existential(self) -> bool {
        matches!(self, Operator::Exists | Operator::Absent)
    }

    fn is_numeric(self) -> bool {
        matches!(
            self,
            Operator::LessThan
                | Operator::GreaterThan
                | Operator::LessOrEqual
                | Operator::GreaterOrEqual
        )
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule says about an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    Fails,
    /// The setting was not found and the rule compares a value: the setting's
    /// `noncompliant_if_missing` (and the CI's membership) decide.
    Missing,
}

/// A checked rule, ready to apply.
#[derive(Debug, Clone)]
pub struct Rule {
    pub operator: Operator,
    /// The expected value as given (for one_of: empty).
    pub expected: String,
    pub values: Vec<String>,
    pub ignore_case: bool,
    regex: Option<Regex>,
    number: Option<i64>,
    mode: Option<u32>,
}

impl Rule {
    /// Checks a rule from the wire or from a definition.
    pub fn parse(r: &proto::Rule) -> Result<Self, RuleError> {
        let operator = Operator::parse(&r.operator)?;
        let mut rule = Rule {
            operator,
            expected: r.expected.clone(),
            values: r.values.clone(),
            ignore_case: r.ignore_case,
            regex: None,
            number: None,
            mode: None,
        };
        let bad = |m: String| Err(RuleError::BadExpected(m));
        match operator {
            Operator::Exists | Operator::Absent
                if !r.expected.is_empty() || !r.values.is_empty() =>
            {
                return bad(format!("operator {operator} takes no value"));
            }
            Operator::Exists | Operator::Absent => {}
            Operator::OneOf => {
                if r.values.is_empty() {
                    return bad("operator one_of needs a non-empty list of values".into());
                }
                if !r.expected.is_empty() {
                    return bad("operator one_of takes a list of values, not a single value".into());
                }
            }
            _ if !r.values.is_empty() => {
                return bad(format!(
                    "operator {operator} takes a single value, not a list"
                ));
            }
            Operator::Matches | Operator::NotMatches => {
                let re = RegexBuilder::new(&r.expected)
                    .case_insensitive(r.ignore_case)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| RuleError::BadPattern {
                        pattern: r.expected.clone(),
                        why: one_line(&e.to_string()),
                    })?;
                rule.regex = Some(re);
            }
            op if op.is_numeric() => {
                rule.number = Some(r.expected.trim().parse().map_err(|_| {
                    RuleError::BadExpected(format!(
                        "operator {op} compares integers, and {:?} is not one",
                        r.expected
                    ))
                })?);
            }
            Operator::ModeAtMost => {
                rule.mode = Some(parse_mode(&r.expected).ok_or_else(|| {
                    RuleError::BadExpected(format!(
                        "operator mode_at_most needs an octal file mode such as 0644, not {:?}",
                        r.expected
                    ))
                })?);
            }
            _ => {}
        }
        if rule.ignore_case
            && !matches!(
                operator,
                Operator::Equals
                    | Operator::NotEquals
                    | Operator::OneOf
                    | Operator::Matches
                    | Operator::NotMatches
            )
        {
            return bad(format!("ignore_case does not apply to operator {operator}"));
        }
        Ok(rule)
    }

    /// Judges an observation: `None` when the setting was not found.
    pub fn judge(&self, observed: Option<&str>) -> Verdict {
        let holds = match (self.operator, observed) {
            (Operator::Exists, o) => o.is_some(),
            (Operator::Absent, o) => o.is_none(),
            (_, None) => return Verdict::Missing,
            (Operator::Equals, Some(v)) => self.same(v, &self.expected),
            (Operator::NotEquals, Some(v)) => !self.same(v, &self.expected),
            (Operator::OneOf, Some(v)) => self.values.iter().any(|x| self.same(v, x)),
            (Operator::Matches, Some(v)) => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            (Operator::NotMatches, Some(v)) => self.regex.as_ref().is_some_and(|r| !r.is_match(v)),
            (Operator::ModeAtMost, Some(v)) => match (parse_mode(v), self.mode) {
                (Some(m), Some(max)) => m & !max == 0,
                _ => false,
            },
            (op, Some(v)) => match (v.trim().parse::<i64>(), self.number) {
                (Ok(n), Some(e)) => match op {
                    Operator::LessThan => n < e,
                    Operator::GreaterThan => n > e,
                    Operator::LessOrEqual => n <= e,
                    Operator::GreaterOrEqual => n >= e,
                    _ => false,
                },
                // A value that is not a number cannot satisfy a numeric rule.
                _ => false,
            },
        };
        if holds {
            Verdict::Holds
        } else {
            Verdict::Fails
        }
    }

    fn same(&self, a: &str, b: &str) -> bool {
        if self.ignore_case {
            a.to_lowercase() == b.to_lowercase()
        } else {
            a == b
        }
    }

    /// The expected mode of a `mode_at_most` rule.
    pub fn mode(&self) -> Option<u32> {
        self.mode
    }
}

/// The rule as text for reports, e.g. `== no`, `<= 4`, `one of [1, 2]`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.expected;
        match self.operator {
            Operator::Equals => write!(f, "== {e}")?,
            Operator::NotEquals => write!(f, "!= {e}")?,
            Operator::Matches => write!(f, "matches {e}")?,
            Operator::NotMatches => write!(f, "does not match {e}")?,
            Operator::LessThan => write!(f, "< {e}")?,
            Operator::GreaterThan => write!(f, "> {e}")?,
            Operator::LessOrEqual => write!(f, "<= {e}")?,
            Operator::GreaterOrEqual => write!(f, ">= {e}")?,
            Operator::OneOf => write!(f, "one of [{}]", self.values.join(", "))?,
            Operator::Exists => f.write_str("exists")?,
            Operator::Absent => f.write_str("absent")?,
            Operator::ModeAtMost => write!(f, "mode at most {e}")?,
        }
        if self.ignore_case {
            f.write_str(" (any case)")?;
        }
        Ok(())
    }
}

/// An octal permission mode such as `0644` or `600` (at most 0o7777).
pub fn parse_mode(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// A mode as reports show it: four octal digits.
pub fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(op: &str, expected: &str) -> Result<Rule, RuleError> {
        Rule::parse(&proto::Rule {
            operator: op.into(),
            expected: expected.into(),
            ..Default::default()
        })
    }

    #[test]
    fn operators_judge_values() {
        let eq = rule("equals", "no").unwrap();
        assert_eq!(eq.judge(Some("no")), Verdict::Holds);
        assert_eq!(eq.judge(Some("No")), Verdict::Fails);
        assert_eq!(eq.judge(None), Verdict::Missing);
        assert_eq!(eq.to_string(), "== no");

        let le = rule("less_or_equal", "4").unwrap();
        assert_eq!(le.judge(Some("4")), Verdict::Holds);
        assert_eq!(le.judge(Some("6")), Verdict::Fails);
        assert_eq!(le.judge(Some("many")), Verdict::Fails);

        let m = rule("not_matches", "(cbc|3des)").unwrap();
        assert_eq!(m.judge(Some("aes256-ctr,aes128-ctr")), Verdict::Holds);
        assert_eq!(m.judge(Some("aes256-cbc")), Verdict::Fails);

        let ex = rule("exists", "").unwrap();
        assert_eq!(ex.judge(None), Verdict::Fails);
        assert_eq!(rule("absent", "").unwrap().judge(None), Verdict::Holds);

        let mode = rule("mode_at_most", "0644").unwrap();
        assert_eq!(mode.judge(Some("0640")), Verdict::Holds);
        assert_eq!(mode.judge(Some("0600")), Verdict::Holds);
        assert_eq!(mode.judge(Some("0664")), Verdict::Fails);
        assert_eq!(mode.judge(Some("4644")), Verdict::Fails);
    }

    #[test]
    fn one_of_and_ignore_case() {
        let r = Rule::parse(&proto::Rule {
            operator: "one_of".into(),
            values: vec!["INFO".into(), "VERBOSE".into()],
            ignore_case: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.judge(Some("verbose")), Verdict::Holds);
        assert_eq!(r.judge(Some("DEBUG3")), Verdict::Fails);
        assert_eq!(r.to_string(), "one of [INFO, VERBOSE] (any case)");
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let e = rule("equal", "no").unwrap_err().to_string();
        assert!(e.contains("\"equal\"") && e.contains("equals"), "{e}");
        let e = rule("matches", "([a-z").unwrap_err().to_string();
        assert!(
            e.contains("([a-z") && e.contains("regular expression"),
            "{e}"
        );
        let e = rule("less_than", "four").unwrap_err().to_string();
        assert!(e.contains("\"four\""), "{e}");
        let e = rule("mode_at_most", "0999").unwrap_err().to_string();
        assert!(e.contains("octal"), "{e}");
        assert!(rule("exists", "x").is_err());
        assert!(rule("one_of", "").is_err());
        assert!(
            Rule::parse(&proto::Rule {
                operator: "less_than".into(),
                expected: "3".into(),
                ignore_case: true,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn modes_parse_and_format() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("8"), None);
        assert_eq!(parse_mode("17777"), None);
        assert_eq!(format_mode(0o100644), "0644");
    }
}
