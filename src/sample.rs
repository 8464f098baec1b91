//! Realistic synthetic compliance reports, for the demo, the benchmarks and the tests: Linux
//! hardening settings with a plausible mix of compliant, non-compliant (some remediated), error
//! and not-applicable results, deterministic for a given seed.

use crate::clock;
use crate::compliance::{Severity, State};
use crate::proto::{ComplianceReport, ConfigurationItemResult, Membership, SettingResult};

/// (CI id, setting id, expected rule, compliant value, non-compliant value, severity)
type Spec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Severity,
);

const SSH: &[Spec] = &[
    (
        "sshd-config",
        "PermitRootLogin",
        "== no",
        "no",
        "yes",
        Severity::Critical,
    ),
    (
        "sshd-config",
        "PasswordAuthentication",
        "== no",
        "no",
        "yes",
        Severity::Critical,
    ),
    (
        "sshd-config",
        "X11Forwarding",
        "== no",
        "no",
        "yes",
        Severity::Warning,
    ),
    (
        "sshd-config",
        "MaxAuthTries",
        "<= 4",
        "4",
        "6",
        Severity::Warning,
    ),
    (
        "sshd-config",
        "PermitEmptyPasswords",
        "== no",
        "no",
        "yes",
        Severity::CriticalWithEvent,
    ),
    (
        "sshd-config",
        "ClientAliveInterval",
        "<= 300",
        "300",
        "0",
        Severity::Information,
    ),
    (
        "sshd-files",
        "sshd_config mode",
        "== 0600",
        "0600",
        "0644",
        Severity::Warning,
    ),
    (
        "sshd-files",
        "host key mode",
        "== 0600",
        "0600",
        "0640",
        Severity::Critical,
    ),
];

const SYSCTL: &[Spec] = &[
    (
        "net-ipv4",
        "net.ipv4.ip_forward",
        "== 0",
        "0",
        "1",
        Severity::Warning,
    ),
    (
        "net-ipv4",
        "net.ipv4.conf.all.accept_redirects",
        "== 0",
        "0",
        "1",
        Severity::Warning,
    ),
    (
        "net-ipv4",
        "net.ipv4.conf.all.send_redirects",
        "== 0",
        "0",
        "1",
        Severity::Warning,
    ),
    (
        "net-ipv4",
        "net.ipv4.tcp_syncookies",
        "== 1",
        "1",
        "0",
        Severity::Critical,
    ),
    (
        "net-ipv4",
        "net.ipv4.conf.all.rp_filter",
        "== 1",
        "1",
        "0",
        Severity::Information,
    ),
    (
        "kernel",
        "kernel.randomize_va_space",
        "== 2",
        "2",
        "0",
        Severity::Critical,
    ),
    (
        "kernel",
        "kernel.dmesg_restrict",
        "== 1",
        "1",
        "0",
        Severity::Information,
    ),
    (
        "kernel",
        "kernel.kptr_restrict",
        ">= 1",
        "1",
        "0",
        Severity::Warning,
    ),
    (
        "fs",
        "fs.protected_symlinks",
        "== 1",
        "1",
        "0",
        Severity::Warning,
    ),
    (
        "fs",
        "fs.suid_dumpable",
        "== 0",
        "0",
        "2",
        Severity::Warning,
    ),
];

/// The sample baselines: (id, name, settings).
pub const BASELINES: &[(&str, &str, &[Spec])] = &[
    ("ssh-hardening", "SSH hardening", SSH),
    ("kernel-sysctl", "Kernel and network sysctls", SYSCTL),
];

/// A small deterministic generator (SplitMix64), so a seed gives the same report everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 100).
    pub fn percent(&mut self) -> u64 {
        self.next_u64() % 100
    }
}

/// A report for sample baseline `baseline` (index into [`BASELINES`]) from a device whose
/// tendencies follow `seed`: most devices are mostly compliant, some are badly configured.
pub fn report(baseline: usize, seed: u64) -> ComplianceReport {
    let (id, name, specs) = BASELINES[baseline % BASELINES.len()];
    let mut rng = Rng::new(seed);
    // A device's "care level": how likely each setting is to be wrong on it.
    let noncompliant_pct = match rng.percent() {
        0..=49 => 0,
        50..=79 => 8,
        80..=94 => 25,
        _ => 60,
    };
    let mut cis: Vec<ConfigurationItemResult> = Vec::new();
    for (ci, setting, expected, good, bad, severity) in specs {
        if cis.last().is_none_or(|c| c.ci_id != *ci) {
            cis.push(ConfigurationItemResult {
                ci_id: (*ci).into(),
                ci_revision: 1,
                ci_name: (*ci).replace('-', " "),
                membership: Membership::Required as i32,
                settings: vec![],
            });
        }
        let roll = rng.percent();
        let (state, before, after, remediated, error) = if roll < noncompliant_pct {
            // Remediable settings get fixed a third of the time.
            if rng.percent() < 33 {
                (State::Compliant, Some(*bad), Some(*good), true, "")
            } else {
                (State::NonCompliant, Some(*bad), None, false, "")
            }
        } else if roll < noncompliant_pct + 2 {
            (
                State::Error,
                None,
                None,
                false,
                "permission denied reading the setting",
            )
        } else if roll < noncompliant_pct + 4 {
            (State::NotApplicable, None, None, false, "")
        } else {
            (State::Compliant, Some(*good), None, false, "")
        };
        let proto_state: crate::proto::ComplianceState = state.into();
        let proto_severity: crate::proto::Severity = (*severity).into();
        cis.last_mut()
            .expect("pushed above")
            .settings
            .push(SettingResult {
                setting_id: (*setting).into(),
                state: proto_state as i32,
                severity: proto_severity as i32,
                expected: (*expected).into(),
                observed_before: before.map(Into::into),
                observed_after: after.map(Into::into),
                remediated,
                error: error.into(),
            });
    }
    ComplianceReport {
        baseline_id: id.into(),
        baseline_revision: 1,
        baseline_name: name.into(),
        evaluated_unix_ms: clock::now_ms(),
        configuration_items: cis,
    }
}

/// A report with exactly `settings` settings (the benchmarks' 35-setting report), built by
/// repeating the sample settings under numbered configuration items.
pub fn report_with_settings(settings: usize, seed: u64) -> ComplianceReport {
    let mut base = report(0, seed);
    let mut rng = Rng::new(seed.wrapping_add(1));
    let all: Vec<&Spec> = SSH.iter().chain(SYSCTL.iter()).collect();
    let mut cis: Vec<ConfigurationItemResult> = Vec::new();
    for i in 0..settings {
        let (ci, setting, expected, good, bad, severity) = all[i % all.len()];
        let ci_id = format!("{ci}-{}", i / all.len());
        if cis.last().is_none_or(|c| c.ci_id != ci_id) {
            cis.push(ConfigurationItemResult {
                ci_id: ci_id.clone(),
                ci_revision: 1,
                ci_name: ci_id.replace('-', " "),
                membership: Membership::Required as i32,
                settings: vec![],
            });
        }
        let ok = rng.percent() >= 10;
        let state: crate::proto::ComplianceState = if ok {
            State::Compliant
        } else {
            State::NonCompliant
        }
        .into();
        let sev: crate::proto::Severity = (*severity).into();
        cis.last_mut()
            .expect("pushed above")
            .settings
            .push(SettingResult {
                setting_id: format!("{setting}#{i}"),
                state: state as i32,
                severity: sev as i32,
                expected: (*expected).into(),
                observed_before: Some(if ok { *good } else { *bad }.into()),
                observed_after: None,
                remediated: false,
                error: String::new(),
            });
    }
    base.baseline_id = "bench-35".into();
    base.baseline_name = "Benchmark baseline".into();
    base.configuration_items = cis;
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn deterministic_and_mixed() {
        let strip = |mut r: ComplianceReport| {
            r.evaluated_unix_ms = 0;
            r
        };
        assert_eq!(strip(report(0, 7)), strip(report(0, 7)));
        assert_ne!(strip(report(0, 7)), strip(report(0, 8)));
        let mut states = std::collections::HashSet::new();
        for seed in 0..200 {
            for ci in report(1, seed).configuration_items {
                for s in ci.settings {
                    states.insert(s.state);
                }
            }
        }
        assert!(states.len() >= 4, "{states:?}");
    }

    #[test]
    fn bench_report_has_exact_setting_count_and_realistic_size() {
        let r = report_with_settings(35, 1);
        let n: usize = r.configuration_items.iter().map(|c| c.settings.len()).sum();
        assert_eq!(n, 35);
        let len = r.encode_to_vec().len();
        assert!((1500..4000).contains(&len), "{len}");
    }
}
