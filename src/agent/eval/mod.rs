//! Evaluation of configuration baselines on the device: each setting's evaluator observes a
//! value, its rule judges it, and a non-compliant setting is remediated when both the setting
//! and the deployment allow it; the value is then observed again.
//!
//! Evaluators (one file each), all relative to the evaluation root (`/`, or `--root DIR`), run
//! on the checked definitions of [`crate::compliance::check`] (which lists their parameters):
//!
//! | kind | observes | remediates |
//! |---|---|---|
//! | `file_exists` | `regular file`, `directory` or `other`; not found when missing | — |
//! | `file_mode` | permission bits as four octal digits, e.g. `0644` | `equals`, `mode_at_most` (chmod) |
//! | `file_owner` | `user:group`, names from the root's `/etc/passwd` and `/etc/group` | — |
//! | `file_contains` | the first line matching the regex; not found when none does | — |
//! | `config_line` | the key's effective value | `equals` (rewrites the line atomically) |
//! | `sysctl` | `<root>/proc/sys/…`, whitespace collapsed | `equals` (writes the file) |
//! | `command` | trimmed stdout, or the exit status | — |
//!
//! Commands run without a shell, with a cleared environment and a timeout. Under `--root` they
//! still run on the host: a command cannot be confined to a directory tree.
//!
//! Nothing here panics on what a policy or the file system holds: an evaluator that fails, a
//! definition this agent does not understand, or a remediation that cannot be written makes that
//! one setting `error`, with the reason in its `error` text, and the others are still evaluated.
//! Membership is applied here, where found and not-found are known (see [`crate::compliance`]).

pub mod command;
pub mod config_line;
pub mod file;
mod fsops;
pub mod sysctl;

use std::path::{Component, Path, PathBuf};

use prost::Message;

use crate::clock;
use crate::compliance::check::{Check, Probe};
use crate::compliance::rule::Rule;
use crate::compliance::{Rollup, Severity, State};
use crate::proto::{self, ComplianceReport, ConfigurationItemResult, Membership, SettingResult};

/// Longest observed value, expected text or error kept in a report (the relay's limit).
pub use crate::compliance::report::MAX_TEXT;

/// Where and how to evaluate.
#[derive(Debug, Clone)]
pub struct EvalContext {
    /// The file system root the evaluators look under (`/` on a real device).
    pub root: PathBuf,
    /// The local switch for remediation; the deployment and the setting must allow it too.
    pub remediate: bool,
}

impl EvalContext {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            remediate: true,
        }
    }

    /// `abs` (an absolute path of the device) under the evaluation root, with every symbolic
    /// link on the way resolved as the device would see it from inside the root: an absolute
    /// link target starts again at the root and `..` stops at it, as under chroot(2). The path
    /// returned has no symbolic link in it (up to the first component that does not exist), so
    /// nothing read or changed through it lies outside the root.
    pub fn host_path(&self, abs: &str) -> Result<PathBuf, String> {
        resolve_in_root(&self.root, abs).map_err(|e| format!("cannot resolve {abs}: {e}"))
    }
}

/// Most symbolic links followed for one path, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// [`EvalContext::host_path`]: walks `abs` one component at a time below `root`, replacing each
/// symbolic link by its target, so a link can neither name a place outside `root` nor climb out
/// of it with `..`.
fn resolve_in_root(root: &Path, abs: &str) -> Result<PathBuf, String> {
    use std::collections::VecDeque;
    use std::ffi::OsString;

    fn push_front(rest: &mut VecDeque<OsString>, target: &Path) {
        for c in target.components().rev() {
            match c {
                Component::Normal(n) => rest.push_front(n.to_os_string()),
                Component::ParentDir => rest.push_front("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    }

    let mut rest = VecDeque::new();
    push_front(&mut rest, Path::new(abs));
    let mut below: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = rest.pop_front() {
        if name == ".." {
            below.pop();
            continue;
        }
        let candidate: PathBuf = root.join(below.iter().collect::<PathBuf>()).join(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err("too many levels of symbolic links".into());
                }
                let target = std::fs::read_link(&candidate).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    below.clear();
                }
                push_front(&mut rest, &target);
            }
            // Missing (or under something that is not a directory): nothing further can be a
            // link, and the caller's own open or stat reports what is wrong.
            _ => below.push(name),
        }
    }
    Ok(root.join(below.iter().collect::<PathBuf>()))
}

/// What a remediation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// The fix was written.
    Applied,
    /// Nothing could be written for a reason that is not a failure (e.g. the file to edit does
    /// not exist, so there is nothing to fix in it).
    NotPossible(String),
}

impl Probe {
    /// Observes the value: `None` when the setting is not found on the device.
    pub fn observe(&self, ctx: &EvalContext) -> Result<Option<String>, String> {
        match self {
            Probe::FileExists(t) => t.exists(ctx),
            Probe::FileMode(t) => t.mode(ctx),
            Probe::FileOwner(t) => t.owner(ctx),
            Probe::FileContains(c) => c.observe(ctx),
            Probe::ConfigLine(s) => s.observe(ctx),
            Probe::Sysctl(s) => s.observe(ctx),
            Probe::Command(c) => c.observe(),
        }
    }

    fn remediate(
        &self,
        ctx: &EvalContext,
        rule: &Rule,
        observed: Option<&str>,
    ) -> Result<Remedy, String> {
        match self {
            Probe::FileMode(t) => t.remediate_mode(ctx, rule, observed),
            Probe::ConfigLine(s) => s.remediate(ctx, &rule.expected),
            Probe::Sysctl(s) => s.remediate(ctx, &rule.expected),
            _ => Ok(Remedy::NotPossible(
                "this evaluator cannot remediate".into(),
            )),
        }
    }
}

/// Evaluates one baseline of the policy on this device and builds its report.
pub fn evaluate_baseline(b: &proto::Baseline, ctx: &EvalContext) -> ComplianceReport {
    let mut cis = Vec::with_capacity(b.members.len());
    for m in &b.members {
        let Some(ci) = &m.configuration_item else {
            continue;
        };
        let membership = Membership::try_from(m.membership).unwrap_or(Membership::Required);
        // A prohibited item is never "fixed" into presence; a report-only deployment never
        // changes anything.
        let remediate = ctx.remediate
            && m.remediate
            && membership != Membership::Prohibited
            && b.deployment.as_ref().is_none_or(|d| d.remediate);
        let mut settings: Vec<SettingResult> = ci
            .settings
            .iter()
            .map(|s| evaluate_setting(s, membership, remediate, ctx))
            .collect();
        if membership == Membership::Prohibited {
            apply_prohibition(&mut settings);
        }
        cis.push(ConfigurationItemResult {
            ci_id: ci.id.clone(),
            ci_revision: ci.revision,
            ci_name: ci.name.clone(),
            membership: membership as i32,
            settings,
        });
    }
    ComplianceReport {
        baseline_id: b.id.clone(),
        baseline_revision: b.revision,
        baseline_name: b.name.clone(),
        evaluated_unix_ms: clock::now_ms(),
        configuration_items: cis,
    }
}

/// Evaluates one setting; never fails: problems become state `error`.
pub fn evaluate_setting(
    s: &proto::Setting,
    membership: Membership,
    remediate: bool,
    ctx: &EvalContext,
) -> SettingResult {
    let severity = proto::Severity::try_from(s.severity).unwrap_or_default();
    let mut out = SettingResult {
        setting_id: s.id.clone(),
        state: proto::ComplianceState::Unknown as i32,
        severity: severity as i32,
        expected: String::new(),
        observed_before: None,
        observed_after: None,
        remediated: false,
        error: String::new(),
    };
    let check = match Check::parse(s) {
        Ok(c) => c,
        Err(e) => {
            out.expected = s
                .rule
                .as_ref()
                .map(|r| clip(format!("{} {}", r.operator, r.expected).trim()))
                .unwrap_or_default();
            return errored(out, format!("cannot evaluate this setting: {e}"));
        }
    };
    out.expected = clip(&check.rule.to_string());
    let before = match check.probe.observe(ctx) {
        Ok(v) => v,
        Err(e) => return errored(out, e),
    };
    out.observed_before = before.as_deref().map(clip);
    let mut state = judge(&check.rule, before.as_deref(), s, membership);
    if state == State::NonCompliant && remediate && s.remediation_allowed {
        match check.probe.remediate(ctx, &check.rule, before.as_deref()) {
            Ok(Remedy::Applied) => match check.probe.observe(ctx) {
                Ok(after) => {
                    state = judge(&check.rule, after.as_deref(), s, membership);
                    out.observed_after = Some(after.as_deref().map(clip).unwrap_or_default());
                    out.remediated = state == State::Compliant;
                }
                Err(e) => return errored(out, format!("remediated, then {e}")),
            },
            Ok(Remedy::NotPossible(_)) => {}
            Err(e) => return errored(out, format!("remediation failed: {e}")),
        }
    }
    out.state = proto::ComplianceState::from(state) as i32;
    out
}

fn judge(rule: &Rule, observed: Option<&str>, s: &proto::Setting, membership: Membership) -> State {
    use crate::compliance::rule::Verdict;
    match rule.judge(observed) {
        Verdict::Holds => State::Compliant,
        Verdict::Fails => State::NonCompliant,
        // An optional item applies only where what it checks exists.
        Verdict::Missing if s.noncompliant_if_missing && membership != Membership::Optional => {
            State::NonCompliant
        }
        Verdict::Missing => State::NotApplicable,
    }
}

fn errored(mut out: SettingResult, why: String) -> SettingResult {
    out.state = proto::ComplianceState::Error as i32;
    out.error = clip(&why);
    out
}

/// A prohibited configuration item is *detected* when its settings all hold (none fails, none
/// errs, at least one is compliant). Detected, its compliant settings are the violation;
/// otherwise its failing settings show the item is absent, which is what the baseline wants.
fn apply_prohibition(settings: &mut [SettingResult]) {
    let mut r = Rollup::default();
    for s in settings.iter() {
        r.add(state_of(s), Severity::None);
    }
    let detected = r.state() == State::Compliant && r.compliant > 0;
    for s in settings.iter_mut() {
        let st = state_of(s);
        let new = match (detected, st) {
            (true, State::Compliant) => State::NonCompliant,
            (false, State::NonCompliant) => State::Compliant,
            (_, other) => other,
        };
        s.state = proto::ComplianceState::from(new) as i32;
        s.expected = clip(&format!("prohibited: {}", s.expected));
    }
}

fn state_of(s: &SettingResult) -> State {
    State::from(proto::ComplianceState::try_from(s.state).unwrap_or_default())
}

/// `s` cut to [`MAX_TEXT`] bytes at a character boundary.
pub fn clip(s: &str) -> String {
    clip_to(s, MAX_TEXT)
}

/// `s` cut to `max` bytes (at least 4) at a character boundary, ending in "…" when cut.
fn clip_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.max(4) - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Largest encoded compliance report an agent queues: a relay refuses request bodies over its
/// `limits.max_body_bytes` (1 MiB by default), and a report that never fits would leave its
/// baseline unreported. This leaves room for the submission's ids and the sealed envelope. A
/// relay that says in its policy answer that it takes less gets less (`Agent::report_budget`).
pub const MAX_REPORT_BYTES: usize = 1_000_000;

/// The lengths texts are shortened to, in turn, until a report fits.
const SHORTER_TEXTS: [usize; 4] = [1024, 256, 64, 16];

/// Makes `report` fit in `budget` encoded bytes by shortening its texts (expected, observed
/// before and after, error) to ever fewer bytes, each ending in "…" where cut. Ids, states,
/// severities and remediation flags are never touched, so what the site computes from the
/// report is the same. Returns the length texts were cut to, if any, and whether it now fits
/// (it may not, with tens of thousands of settings).
pub fn fit_report(report: &mut ComplianceReport, budget: usize) -> (Option<usize>, bool) {
    if report.encoded_len() <= budget {
        return (None, true);
    }
    for max in SHORTER_TEXTS {
        for s in report
            .configuration_items
            .iter_mut()
            .flat_map(|c| c.settings.iter_mut())
        {
            for text in [Some(&mut s.expected), s.observed_before.as_mut()]
                .into_iter()
                .chain([s.observed_after.as_mut(), Some(&mut s.error)])
                .flatten()
            {
                if text.len() > max {
                    *text = clip_to(text, max);
                }
            }
        }
        if report.encoded_len() <= budget {
            return (Some(max), true);
        }
    }
    (SHORTER_TEXTS.last().copied(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) use crate::compliance::check::tests::setting;

    fn state(r: &SettingResult) -> State {
        state_of(r)
    }

    #[test]
    fn unknown_kind_and_bad_params_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = EvalContext::new(dir.path());
        let r = evaluate_setting(
            &setting("registry", &[("path", "/x")], "exists", ""),
            Membership::Required,
            true,
            &ctx,
        );
        assert_eq!(state(&r), State::Error);
        assert!(
            r.error.contains("unknown evaluator kind \"registry\""),
            "{}",
            r.error
        );

        let r = evaluate_setting(
            &setting(
                "file_contains",
                &[("path", "/x"), ("pattern", "([")],
                "exists",
                "",
            ),
            Membership::Required,
            true,
            &ctx,
        );
        assert_eq!(state(&r), State::Error);
        assert!(r.error.contains("pattern"), "{}", r.error);

        let e = Probe::parse(&proto::Evaluator {
            kind: "file_mode".into(),
            params: [
                ("path".to_string(), "/a".to_string()),
                ("colour".into(), "x".into()),
            ]
            .into_iter()
            .collect(),
            args: vec![],
        })
        .unwrap_err();
        assert_eq!(e.param(), Some("colour"));
        let e = Probe::parse(&proto::Evaluator {
            kind: "file_mode".into(),
            params: [("path".to_string(), "etc/x".to_string())]
                .into_iter()
                .collect(),
            args: vec![],
        })
        .unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = Probe::parse(&proto::Evaluator {
            kind: "file_mode".into(),
            params: [("path".to_string(), "/etc/../root".to_string())]
                .into_iter()
                .collect(),
            args: vec![],
        })
        .unwrap_err();
        assert!(e.to_string().contains(".."), "{e}");
    }

    #[test]
    fn missing_settings_follow_the_flag_and_membership() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = EvalContext::new(dir.path());
        let mut s = setting(
            "config_line",
            &[("path", "/etc/ssh/sshd_config"), ("key", "PermitRootLogin")],
            "equals",
            "no",
        );
        let r = evaluate_setting(&s, Membership::Required, true, &ctx);
        assert_eq!(state(&r), State::NotApplicable);
        assert_eq!(r.observed_before, None);
        s.noncompliant_if_missing = true;
        let r = evaluate_setting(&s, Membership::Required, true, &ctx);
        assert_eq!(state(&r), State::NonCompliant);
        let r = evaluate_setting(&s, Membership::Optional, true, &ctx);
        assert_eq!(state(&r), State::NotApplicable);
    }

    #[test]
    fn prohibited_items_count_when_detected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
        std::fs::write(dir.path().join("usr/sbin/in.rshd"), "").unwrap();
        let ctx = EvalContext::new(dir.path());
        let baseline = |path: &str| proto::Baseline {
            deployment: None,
            id: "b".into(),
            revision: 1,
            name: "b".into(),
            description: String::new(),
            members: vec![proto::BaselineMember {
                configuration_item: Some(proto::ConfigurationItem {
                    id: "rsh".into(),
                    revision: 1,
                    name: "rsh server".into(),
                    description: String::new(),
                    settings: vec![setting("file_exists", &[("path", path)], "exists", "")],
                }),
                membership: Membership::Prohibited as i32,
                remediate: true,
            }],
        };
        let r = evaluate_baseline(&baseline("/usr/sbin/in.rshd"), &ctx);
        let s = &r.configuration_items[0].settings[0];
        assert_eq!(state(s), State::NonCompliant);
        assert_eq!(s.expected, "prohibited: exists");
        assert_eq!(s.observed_before.as_deref(), Some("regular file"));
        let r = evaluate_baseline(&baseline("/usr/sbin/in.telnetd"), &ctx);
        assert_eq!(
            state(&r.configuration_items[0].settings[0]),
            State::Compliant
        );
    }

    #[test]
    fn a_report_too_large_for_the_relay_is_shortened_not_dropped() {
        let mut r = crate::sample::report_with_settings(300, 7);
        for (i, s) in r
            .configuration_items
            .iter_mut()
            .flat_map(|c| c.settings.iter_mut())
            .enumerate()
        {
            s.observed_before = Some(format!("{i}:{}", "é".repeat(2000)));
            s.observed_after = Some("x".repeat(MAX_TEXT));
        }
        let before = r.clone();
        assert!(r.encoded_len() > MAX_REPORT_BYTES);
        let (cut, fits) = fit_report(&mut r, MAX_REPORT_BYTES);
        assert!(fits && r.encoded_len() <= MAX_REPORT_BYTES);
        // Shortened only as far as needed: 1 KiB texts already fit.
        assert_eq!(cut, Some(1024));
        let pairs = r
            .configuration_items
            .iter()
            .flat_map(|c| &c.settings)
            .zip(before.configuration_items.iter().flat_map(|c| &c.settings));
        for (got, was) in pairs {
            assert_eq!(
                (&got.setting_id, got.state, got.severity, got.remediated),
                (&was.setting_id, was.state, was.severity, was.remediated)
            );
            let b = got.observed_before.as_deref().unwrap();
            assert!(b.len() <= 1024 && b.ends_with('…'), "{}", b.len());
            assert!(
                was.observed_before
                    .as_deref()
                    .unwrap()
                    .starts_with(&b[..b.len() - 3])
            );
        }
        // A report that fits is left alone.
        let mut small = crate::sample::report_with_settings(35, 1);
        let same = small.clone();
        assert_eq!(fit_report(&mut small, MAX_REPORT_BYTES), (None, true));
        assert_eq!(small, same);
    }

    #[test]
    fn long_values_are_clipped_at_a_character_boundary() {
        let s = "é".repeat(5000);
        let c = clip(&s);
        assert!(c.len() <= MAX_TEXT && c.ends_with('…'));
    }
}
