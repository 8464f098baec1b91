//! The JSON documents and CSV rows of every `mprelay report …` command (`--format json|csv`).
//! JSON is the admin API's document where the API has one; CSV is one row per record, with the
//! parent's key fields repeated on each row. The fields are listed in the README.

use serde_json::{Value, json};

use super::format::{Csv, opt};
use crate::compliance::State;
use crate::site::verify::Verdict;
use crate::store::{
    AcceptanceReport, BaselineDetail, BaselineDeviceRow, BaselineOverview, Counts,
    DeviceCompliance, DeviceRow, NoncompliantDevice, SettingView,
};

/// `report compliance`: as `GET /api/v1/compliance/baselines`.
pub fn overview_json(rows: &[BaselineOverview]) -> Value {
    json!({ "baselines": rows })
}

pub fn overview_csv(rows: &[BaselineOverview]) -> String {
    let mut csv = Csv::new(&[
        "baseline_id",
        "name",
        "revision",
        "devices",
        "compliant",
        "non_compliant",
        "error",
        "unknown",
        "not_applicable",
        "never_reported",
    ]);
    for b in rows {
        csv.row(&[
            &b.baseline_id,
            &b.name,
            &opt(&b.revision),
            &b.devices,
            &b.compliant,
            &b.non_compliant,
            &b.error,
            &b.unknown,
            &b.not_applicable,
            &b.never_reported,
        ]);
    }
    csv.finish()
}

/// `report compliance --baseline ID`: as `GET /api/v1/compliance/baselines/ID`.
pub fn baseline_json(d: &BaselineDetail) -> Value {
    json!(d)
}

/// One row per setting of the baseline, with its devices per state.
pub fn baseline_csv(d: &BaselineDetail) -> String {
    let mut csv = Csv::new(&[
        "baseline_id",
        "ci_id",
        "setting_id",
        "severity",
        "compliant",
        "non_compliant",
        "error",
        "not_applicable",
        "unknown",
        "remediated",
    ]);
    for s in &d.settings {
        csv.row(&[
            &d.overview.baseline_id,
            &s.ci_id,
            &s.setting_id,
            &s.severity,
            &s.compliant,
            &s.non_compliant,
            &s.error,
            &s.not_applicable,
            &s.unknown,
            &s.remediated,
        ]);
    }
    csv.finish()
}

/// `report device ID`: as `GET /api/v1/compliance/devices/ID`.
pub fn device_json(d: &DeviceCompliance) -> Value {
    json!(d)
}

/// The setting columns CSV rows share.
const SETTING_HEADER: [&str; 10] = [
    "ci_id",
    "ci_revision",
    "setting_id",
    "state",
    "severity",
    "expected",
    "observed_before",
    "observed_after",
    "remediated",
    "error",
];

/// `fields` followed by setting `s`'s columns ([`SETTING_HEADER`]; empty without a setting).
fn setting_row(csv: &mut Csv, fields: &[&dyn std::fmt::Display], s: Option<&SettingView>) {
    let cols: [String; 10] = match s {
        Some(s) => [
            s.ci_id.clone(),
            s.ci_revision.to_string(),
            s.setting_id.clone(),
            s.state.clone(),
            s.severity.clone(),
            s.expected.clone(),
            opt(&s.observed_before),
            opt(&s.observed_after),
            s.remediated.to_string(),
            s.error.clone(),
        ],
        None => Default::default(),
    };
    let mut row: Vec<&dyn std::fmt::Display> = fields.to_vec();
    row.extend(cols.iter().map(|c| c as &dyn std::fmt::Display));
    csv.row(&row);
}

fn header_with_settings(first: &[&'static str]) -> Vec<&'static str> {
    first.iter().chain(SETTING_HEADER.iter()).copied().collect()
}

/// One row per setting result of the device's latest report for each baseline (a baseline
/// whose report has no settings gets one row with the setting columns empty).
pub fn device_csv(d: &DeviceCompliance) -> String {
    let mut csv = Csv::new(&header_with_settings(&[
        "device_id",
        "hostname",
        "baseline_id",
        "baseline_revision",
        "baseline_state",
        "evaluated_ms",
        "message_id",
    ]));
    for b in &d.baselines {
        let c = &b.current;
        let fields: [&dyn std::fmt::Display; 7] = [
            &d.device.device_id,
            &d.device.hostname,
            &c.baseline_id,
            &c.baseline_revision,
            &c.state,
            &c.evaluated_ms,
            &c.message_id,
        ];
        if b.settings.is_empty() {
            setting_row(&mut csv, &fields, None);
        }
        for s in &b.settings {
            setting_row(&mut csv, &fields, Some(s));
        }
    }
    csv.finish()
}

/// `report devices`: as `GET /api/v1/devices`.
pub fn devices_json(devices: &[DeviceRow], next_after: Option<&str>) -> Value {
    json!({ "devices": devices, "next_after": next_after })
}

pub fn devices_csv(devices: &[DeviceRow]) -> String {
    let mut csv = Csv::new(&[
        "device_id",
        "hostname",
        "os",
        "last_seen_ms",
        "failing_baselines",
    ]);
    for d in devices {
        csv.row(&[
            &d.device_id,
            &d.hostname,
            &d.os,
            &d.last_seen_ms,
            &d.failing_baselines,
        ]);
    }
    csv.finish()
}

/// `report devices --baseline ID`: as `GET /api/v1/compliance/baselines/ID/devices`.
pub fn baseline_devices_json(
    baseline_id: &str,
    devices: &[BaselineDeviceRow],
    next_after: Option<&str>,
) -> Value {
    json!({ "baseline_id": baseline_id, "devices": devices, "next_after": next_after })
}

pub fn baseline_devices_csv(baseline_id: &str, devices: &[BaselineDeviceRow]) -> String {
    let mut csv = Csv::new(&[
        "baseline_id",
        "device_id",
        "hostname",
        "os",
        "state",
        "max_severity",
        "baseline_revision",
        "evaluated_ms",
        "n_non_compliant",
        "n_error",
    ]);
    for d in devices {
        csv.row(&[
            &baseline_id,
            &d.device_id,
            &d.hostname,
            &d.os,
            &d.state,
            &d.max_severity,
            &d.baseline_revision,
            &d.evaluated_ms,
            &d.n_non_compliant,
            &d.n_error,
        ]);
    }
    csv.finish()
}

/// `report noncompliant`: as `GET /api/v1/compliance/noncompliant`.
pub fn noncompliant_json(baseline_id: &str, state: State, devices: &[NoncompliantDevice]) -> Value {
    json!({ "baseline_id": baseline_id, "state": state.as_str(), "devices": devices })
}

/// One row per failing setting of each device.
pub fn noncompliant_csv(baseline_id: &str, devices: &[NoncompliantDevice]) -> String {
    let mut csv = Csv::new(&header_with_settings(&[
        "baseline_id",
        "device_id",
        "hostname",
        "baseline_revision",
        "max_severity",
        "evaluated_ms",
    ]));
    for d in devices {
        let fields: [&dyn std::fmt::Display; 6] = [
            &baseline_id,
            &d.device_id,
            &d.hostname,
            &d.baseline_revision,
            &d.max_severity,
            &d.evaluated_ms,
        ];
        for s in &d.settings {
            setting_row(&mut csv, &fields, Some(s));
        }
    }
    csv.finish()
}

/// `report counts`.
pub fn counts_json(c: &Counts) -> Value {
    json!({
        "devices": c.devices,
        "reports": c.reports,
        "setting_results": c.settings,
        "terms_acceptances": c.acceptances,
        "quarantined_records": c.quarantined,
    })
}

pub fn counts_csv(c: &Counts) -> String {
    let mut csv = Csv::new(&[
        "devices",
        "reports",
        "setting_results",
        "terms_acceptances",
        "quarantined_records",
    ]);
    csv.row(&[
        &c.devices,
        &c.reports,
        &c.settings,
        &c.acceptances,
        &c.quarantined,
    ]);
    csv.finish()
}

/// `report terms`: as `GET /api/v1/terms/acceptances`.
pub fn terms_json(r: &AcceptanceReport) -> Value {
    json!(r)
}

/// One row per user and device.
pub fn terms_csv(r: &AcceptanceReport) -> String {
    let mut csv = Csv::new(&[
        "user",
        "device_id",
        "hostname",
        "accepted_version",
        "accepted_ms",
        "received_ms",
        "latest",
    ]);
    for a in &r.acceptances {
        csv.row(&[
            &a.user,
            &a.device_id,
            &a.hostname,
            &a.accepted_version,
            &a.accepted_ms,
            &a.received_ms,
            &a.latest,
        ]);
    }
    csv.finish()
}

/// `report verify`: every report checked, each with `verified` and what differs.
pub fn verdicts_json(verdicts: &[Verdict]) -> Value {
    let reports: Vec<Value> = verdicts
        .iter()
        .map(|v| {
            let mut doc = json!(v);
            doc["verified"] = v.verified().into();
            doc
        })
        .collect();
    json!({ "reports": reports })
}

/// One row per difference (a report without any has one row with the difference columns
/// empty); `stored` and `signed` are the values as JSON text.
pub fn verdicts_csv(verdicts: &[Verdict]) -> String {
    let mut csv = Csv::new(&[
        "message_id",
        "device_id",
        "verified",
        "signature_valid",
        "problem",
        "field",
        "stored",
        "signed",
    ]);
    for v in verdicts {
        let problem = opt(&v.problem);
        let head: [&dyn std::fmt::Display; 5] = [
            &v.message_id,
            &v.device_id,
            &v.verified(),
            &v.signature_valid,
            &problem,
        ];
        if v.differences.is_empty() {
            let mut row = head.to_vec();
            row.extend([&"" as &dyn std::fmt::Display, &"", &""]);
            csv.row(&row);
        }
        for d in &v.differences {
            let mut row = head.to_vec();
            row.extend([&d.field as &dyn std::fmt::Display, &d.stored, &d.signed]);
            csv.row(&row);
        }
    }
    csv.finish()
}
