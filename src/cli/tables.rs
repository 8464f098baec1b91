//! Plain-text tables for `mprelay report …` and the demo: compliance per baseline, one baseline
//! per setting, one device per setting with its history, and the non-compliant devices of a
//! baseline. Times are UTC.

use std::fmt::Write;

use crate::store::{
    BaselineDetail, BaselineDeviceRow, BaselineOverview, DeviceCompliance, DeviceRow,
    NoncompliantDevice,
};

/// `2025-03-01 09:30:00Z` from Unix milliseconds.
pub fn fmt_time(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => ms.to_string(),
    }
}

/// `item/setting rN`: the configuration item revision the setting was evaluated in, kept when
/// the names are cut to `width`.
fn setting_cell(ci: &str, revision: u32, setting: &str, width: usize) -> String {
    let rev = format!(" r{revision}");
    let names = cell(
        &format!("{ci}/{setting}"),
        width.saturating_sub(rev.chars().count()),
    );
    format!("{names}{rev}")
}

/// `s` cut to `width` characters, with `…` when cut.
fn cell(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(width.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

/// Devices per state, per baseline.
pub fn overview(rows: &[BaselineOverview]) -> String {
    let mut out = format!(
        "{:<56} {:>4} {:>7} {:>9} {:>13} {:>5} {:>7} {:>12}\n",
        "Baseline",
        "Rev",
        "Devices",
        "Compliant",
        "Non-compliant",
        "Error",
        "Unknown",
        "Not reported"
    );
    for b in rows {
        let name = format!("{} ({})", b.name, b.baseline_id);
        let _ = writeln!(
            out,
            "{:<56} {:>4} {:>7} {:>9} {:>13} {:>5} {:>7} {:>12}",
            cell(&name, 56),
            b.revision
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            b.devices,
            b.compliant + b.not_applicable,
            b.non_compliant,
            b.error,
            b.unknown,
            b.never_reported
        );
    }
    out
}

/// One baseline: counts, members, revisions, and devices per state for each setting.
pub fn baseline(d: &BaselineDetail) -> String {
    let o = &d.overview;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}){}",
        o.name,
        o.baseline_id,
        o.revision
            .map(|r| format!(", revision {r}"))
            .unwrap_or_default()
    );
    if !d.description.is_empty() {
        let _ = writeln!(out, "{}", d.description);
    }
    let _ = writeln!(
        out,
        "devices: {} reporting, {} compliant, {} non-compliant, {} error, {} unknown, {} not yet reported",
        o.devices,
        o.compliant + o.not_applicable,
        o.non_compliant,
        o.error,
        o.unknown,
        o.never_reported
    );
    if !d.members.is_empty() {
        let _ = writeln!(out, "\nMembers:");
        for m in &d.members {
            let pin = match (m.pinned_revision, m.revision) {
                (Some(p), _) => format!("revision {p}"),
                (None, Some(r)) => format!("latest = {r}"),
                (None, None) => "latest (not stored)".into(),
            };
            let _ = writeln!(
                out,
                "  {:<32} {:<18} {:<10} {}{}",
                m.configuration_item,
                pin,
                m.membership,
                if m.remediate {
                    "remediate"
                } else {
                    "report only"
                },
                m.name
                    .as_ref()
                    .map(|n| format!("  {n}"))
                    .unwrap_or_default()
            );
        }
    }
    if !d.settings.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<56} {:<19} {:>9} {:>13} {:>5} {:>4} {:>10}",
            "Configuration item / setting",
            "Severity",
            "Compliant",
            "Non-compliant",
            "Error",
            "N/A",
            "Remediated"
        );
        for s in &d.settings {
            let _ = writeln!(
                out,
                "{:<56} {:<19} {:>9} {:>13} {:>5} {:>4} {:>10}",
                cell(&format!("{}/{}", s.ci_id, s.setting_id), 56),
                s.severity,
                s.compliant,
                s.non_compliant,
                s.error,
                s.not_applicable,
                s.remediated
            );
        }
    }
    if !d.revisions.is_empty() {
        let _ = writeln!(out, "\nRevisions:");
        for r in &d.revisions {
            let _ = writeln!(
                out,
                "  {:>4}  imported {}  from {}  sha256 {}",
                r.revision,
                fmt_time(r.imported_ms),
                r.source_file,
                &r.content_hash[..r.content_hash.len().min(12)]
            );
        }
    }
    out
}

/// One device: each baseline's state, its settings (expected, observed before and after,
/// remediated, error) and the history of its state.
pub fn device(d: &DeviceCompliance) -> String {
    let dev = &d.device;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Device {} ({}){}",
        dev.device_id,
        if dev.hostname.is_empty() {
            "no hostname"
        } else {
            &dev.hostname
        },
        if dev.blocked { ", BLOCKED" } else { "" }
    );
    let _ = writeln!(
        out,
        "{}  agent {}  last seen {} via {}",
        dev.os,
        dev.agent_version,
        fmt_time(dev.last_seen_ms),
        dev.last_relay
    );
    if d.baselines.is_empty() {
        let _ = writeln!(out, "\nNo compliance reports yet.");
    }
    for b in &d.baselines {
        let c = &b.current;
        let _ = writeln!(
            out,
            "\n{} ({}) revision {}: {}{}, evaluated {}",
            c.baseline_name,
            c.baseline_id,
            c.baseline_revision,
            c.state,
            if c.state == "non_compliant" {
                format!(" ({})", c.max_severity)
            } else {
                String::new()
            },
            fmt_time(c.evaluated_ms)
        );
        let _ = writeln!(
            out,
            "  {:<48} {:<15} {:<19} {:<24} {:<18} {:<18} Error",
            "Configuration item / setting",
            "State",
            "Severity",
            "Expected",
            "Observed",
            "After remediation",
        );
        for s in &b.settings {
            let after = match (&s.observed_after, s.remediated) {
                (Some(a), true) => format!("{a} (fixed)"),
                (Some(a), false) => a.clone(),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<48} {:<15} {:<19} {:<24} {:<18} {:<18} {}",
                setting_cell(&s.ci_id, s.ci_revision, &s.setting_id, 48),
                s.state,
                s.severity,
                cell(&s.expected, 24),
                cell(s.observed_before.as_deref().unwrap_or("(not found)"), 18),
                cell(&after, 18),
                s.error
            );
        }
        let _ = writeln!(out, "  History:");
        for h in &b.history {
            let _ = writeln!(
                out,
                "    {} → {}  {}",
                fmt_time(h.started_ms),
                h.ended_ms.map(fmt_time).unwrap_or_else(|| "now".into()),
                h.state
            );
        }
    }
    out
}

/// The non-compliant devices of a baseline and what fails on each.
pub fn noncompliant(
    name: &str,
    baseline_id: &str,
    state: crate::compliance::State,
    devices: &[NoncompliantDevice],
) -> String {
    let which = match state {
        crate::compliance::State::Error => "Devices in error",
        _ => "Non-compliant devices",
    };
    let mut out = format!("{which} for {name} ({baseline_id}): {}\n", devices.len());
    if devices.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<32} {:<20} {:<19} {:<20} {:<48} {:<22} Observed",
        "Device", "Hostname", "Severity", "Evaluated", "Failing setting", "Expected"
    );
    for d in devices {
        let mut first = true;
        for s in &d.settings {
            let observed = if s.state == "error" {
                format!("error: {}", s.error)
            } else {
                s.observed_before
                    .clone()
                    .unwrap_or_else(|| "(not found)".into())
            };
            let (id, host, sev, at) = if first {
                (
                    d.device_id.as_str(),
                    cell(&d.hostname, 20),
                    d.max_severity.as_str(),
                    fmt_time(d.evaluated_ms),
                )
            } else {
                ("", String::new(), "", String::new())
            };
            first = false;
            let _ = writeln!(
                out,
                "{:<32} {:<20} {:<19} {:<20} {:<48} {:<22} {}",
                id,
                host,
                sev,
                at,
                setting_cell(&s.ci_id, s.ci_revision, &s.setting_id, 48),
                cell(&s.expected, 22),
                observed
            );
        }
    }
    out
}

/// A page of the site's devices.
pub fn devices(rows: &[DeviceRow]) -> String {
    let mut out = format!(
        "{:<32} {:<24} {:<24} {:<20} Failing baselines\n",
        "Device", "Hostname", "OS", "Last seen"
    );
    for d in rows {
        let _ = writeln!(
            out,
            "{:<32} {:<24} {:<24} {:<20} {}",
            d.device_id,
            cell(&d.hostname, 24),
            cell(&d.os, 24),
            fmt_time(d.last_seen_ms),
            d.failing_baselines
        );
    }
    out
}

/// A page of a baseline's devices with their state for it.
pub fn baseline_devices(rows: &[BaselineDeviceRow]) -> String {
    let mut out = format!(
        "{:<32} {:<24} {:<20} {:<14} {:<19} {:<20} Non-compliant/error settings\n",
        "Device", "Hostname", "OS", "State", "Worst severity", "Evaluated"
    );
    for d in rows {
        let _ = writeln!(
            out,
            "{:<32} {:<24} {:<20} {:<14} {:<19} {:<20} {}/{}",
            d.device_id,
            cell(&d.hostname, 24),
            cell(&d.os, 20),
            d.state,
            d.max_severity,
            fmt_time(d.evaluated_ms),
            d.n_non_compliant,
            d.n_error
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_cells() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_time(1_700_000_000_123), "2023-11-14 22:13:20Z");
        assert_eq!(cell("abcdef", 4), "abc…");
        assert_eq!(cell("abc", 4), "abc");
        assert_eq!(
            setting_cell("kernel", 2, "ip_forward", 48),
            "kernel/ip_forward r2"
        );
        assert_eq!(setting_cell("kernel", 12, "ip_forward", 12), "kernel/… r12");
    }
}
