//! The decisions the store takes in Rust, once, for both backends, which then only execute them:
//! how a batch moves current compliance and history forward ([`plan_transitions`]), how a
//! batch's device sightings fold ([`fold_devices`]), what publishing terms does
//! ([`plan_publish`]), the acceptance report ([`AcceptanceReport::build`]) and the compliance
//! trend from history spans ([`trend_from_spans`]).

use std::collections::{BTreeMap, HashMap};

use super::types::{
    AcceptanceReport, AcceptanceRowView, AcceptanceView, CurrentRow, DAY_MS, DeviceUpsert,
    PublishAction, ReportRow, TermsDraft, TermsRecord, TermsText, TrendPoint, TrendSpan,
    UserAcceptance,
};
use crate::compliance::State;

/// Which history row an upsert of current compliance points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRef {
    Existing(i64),
    /// Index into [`Plan::history_inserts`].
    New(usize),
}

/// A history interval to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryInsert {
    pub device_id: String,
    pub baseline_id: String,
    pub state: State,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub started_message_id: String,
}

/// The new current row of a (device, baseline), taken from the report at `report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUpsert {
    pub report: usize,
    pub open_history: HistoryRef,
}

/// What a batch does to current compliance and history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub current: Vec<CurrentUpsert>,
    pub history_closes: Vec<(i64, i64)>,
    pub history_inserts: Vec<HistoryInsert>,
}

/// Decides how `reports` (new ones only, any order) move current compliance and history forward,
/// given the current rows of their (device, baseline) pairs.
///
/// Only a newer evaluation (by `evaluated_ms`, then message id) replaces current state; an older
/// one arriving late is stored as a report but changes neither current state nor history. A
/// change of state closes the open interval at the new evaluation's time and opens another.
pub fn plan_transitions(reports: &[&ReportRow], current: &[CurrentRow]) -> Plan {
    let current: HashMap<(&str, &str), &CurrentRow> = current
        .iter()
        .map(|c| ((c.device_id.as_str(), c.baseline_id.as_str()), c))
        .collect();
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        groups
            .entry((r.device_id.as_str(), r.baseline_id.as_str()))
            .or_default()
            .push(i);
    }
    let mut plan = Plan::default();
    for (key, mut idx) in groups {
        idx.sort_by(|a, b| {
            let (ra, rb) = (reports[*a], reports[*b]);
            (ra.evaluated_ms, &ra.message_id).cmp(&(rb.evaluated_ms, &rb.message_id))
        });
        let cur = current.get(&key);
        let mut newest: Option<(i64, &str)> = cur.map(|c| (c.evaluated_ms, c.message_id.as_str()));
        let mut open: Option<(HistoryRef, State)> =
            cur.map(|c| (HistoryRef::Existing(c.open_history_id), c.state));
        let mut latest = None;
        for i in idx {
            let r = reports[i];
            if newest.is_some_and(|n| (r.evaluated_ms, r.message_id.as_str()) <= n) {
                continue;
            }
            newest = Some((r.evaluated_ms, r.message_id.as_str()));
            latest = Some(i);
            let state = r.rollup.state();
            if open.is_some_and(|(_, s)| s == state) {
                continue;
            }
            match open {
                Some((HistoryRef::Existing(id), _)) => {
                    plan.history_closes.push((id, r.evaluated_ms))
                }
                Some((HistoryRef::New(k), _)) => {
                    plan.history_inserts[k].ended_ms = Some(r.evaluated_ms)
                }
                None => {}
            }
            plan.history_inserts.push(HistoryInsert {
                device_id: r.device_id.clone(),
                baseline_id: r.baseline_id.clone(),
                state,
                started_ms: r.evaluated_ms,
                ended_ms: None,
                started_message_id: r.message_id.clone(),
            });
            open = Some((HistoryRef::New(plan.history_inserts.len() - 1), state));
        }
        if let (Some(report), Some((open_history, _))) = (latest, open) {
            plan.current.push(CurrentUpsert {
                report,
                open_history,
            });
        }
    }
    plan
}

/// Folds device sightings so each device appears once per batch: enrollment details win, the
/// latest sighting gives last-seen and relay.
pub fn fold_devices(devices: &[DeviceUpsert]) -> Vec<DeviceUpsert> {
    let mut by_id: BTreeMap<&str, DeviceUpsert> = BTreeMap::new();
    for d in devices {
        match by_id.get_mut(d.device_id.as_str()) {
            None => {
                by_id.insert(&d.device_id, d.clone());
            }
            Some(e) => {
                if d.seen_ms >= e.seen_ms {
                    e.seen_ms = d.seen_ms;
                    e.relay_id = d.relay_id.clone();
                }
                if d.details.is_some() {
                    e.details = d.details.clone();
                    e.key_epoch = d.key_epoch;
                }
            }
        }
    }
    by_id.into_values().collect()
}

/// Decides what publishing `draft` does, given the current edition. Returns the action and the
/// edition to store (`None` when unchanged).
pub fn plan_publish(
    current: Option<&TermsRecord>,
    draft: &TermsDraft,
    new_version: bool,
    now_ms: i64,
) -> (PublishAction, Option<TermsRecord>) {
    let Some(cur) = current else {
        let rec = TermsRecord {
            version: 1,
            edition: 1,
            text: TermsText {
                display_name: draft.display_name.clone().unwrap_or_default(),
                description: draft.description.clone().unwrap_or_default(),
                title: draft.title.clone(),
                summary: draft.summary.clone().unwrap_or_default(),
                body: draft.body.clone(),
                acceptance_statement: draft.acceptance_statement.clone(),
            },
            published_ms: now_ms,
            edited_ms: now_ms,
        };
        return (PublishAction::First, Some(rec));
    };
    let keep = |given: &Option<String>, current: &str| given.clone().unwrap_or(current.into());
    let text = TermsText {
        display_name: keep(&draft.display_name, &cur.text.display_name),
        description: keep(&draft.description, &cur.text.description),
        title: draft.title.clone(),
        summary: if new_version {
            draft.summary.clone().unwrap_or_default()
        } else {
            keep(&draft.summary, &cur.text.summary)
        },
        body: draft.body.clone(),
        acceptance_statement: draft.acceptance_statement.clone(),
    };
    if new_version {
        let rec = TermsRecord {
            version: cur.version.saturating_add(1),
            edition: 1,
            text,
            published_ms: now_ms,
            edited_ms: now_ms,
        };
        return (PublishAction::NewVersion, Some(rec));
    }
    if text == cur.text {
        return (PublishAction::Unchanged, None);
    }
    let rec = TermsRecord {
        version: cur.version,
        edition: cur.edition.saturating_add(1),
        text,
        published_ms: cur.published_ms,
        edited_ms: now_ms,
    };
    (PublishAction::Edited, Some(rec))
}

impl AcceptanceReport {
    /// Builds the report from the backend's rows (sorted by user, then device).
    pub fn build(
        current_version: Option<u32>,
        rows: Vec<AcceptanceRowView>,
        devices_without_acceptance: u64,
    ) -> Self {
        let latest = |v: u32| current_version.is_some_and(|c| v >= c);
        let mut users: BTreeMap<String, UserAcceptance> = BTreeMap::new();
        for r in &rows {
            let u = users
                .entry(r.user.clone())
                .or_insert_with(|| UserAcceptance {
                    user: r.user.clone(),
                    accepted_version: r.accepted_version,
                    accepted_ms: r.accepted_ms,
                    devices: 0,
                    latest: false,
                });
            u.devices += 1;
            if (r.accepted_version, std::cmp::Reverse(r.accepted_ms))
                > (u.accepted_version, std::cmp::Reverse(u.accepted_ms))
            {
                u.accepted_version = r.accepted_version;
                u.accepted_ms = r.accepted_ms;
            }
        }
        let users = users
            .into_values()
            .map(|mut u| {
                u.latest = latest(u.accepted_version);
                u
            })
            .collect();
        let acceptances = rows
            .into_iter()
            .map(|r| AcceptanceView {
                latest: latest(r.accepted_version),
                user: r.user,
                device_id: r.device_id,
                hostname: r.hostname,
                accepted_version: r.accepted_version,
                accepted_ms: r.accepted_ms,
                received_ms: r.received_ms,
            })
            .collect();
        Self {
            current_version,
            acceptances,
            users,
            devices_without_acceptance,
        }
    }
}

/// The counts per instant from the spans: a difference array per (baseline, state).
pub fn trend_from_spans(first_ms: i64, days: u32, spans: &[TrendSpan]) -> Vec<TrendPoint> {
    let n = days as usize;
    let mut diffs: std::collections::BTreeMap<(&str, &str), Vec<i64>> = Default::default();
    for s in spans {
        let (a, b) = (s.first.max(0), s.last.min(n as i64 - 1));
        if a > b {
            continue;
        }
        let d = diffs
            .entry((&s.baseline_id, &s.state))
            .or_insert_with(|| vec![0; n + 1]);
        d[a as usize] += s.devices as i64;
        d[b as usize + 1] -= s.devices as i64;
    }
    let mut out = Vec::new();
    for ((baseline, state), d) in diffs {
        let mut running = 0i64;
        for (i, delta) in d.iter().take(n).enumerate() {
            running += delta;
            if running > 0 {
                out.push(TrendPoint {
                    baseline_id: baseline.to_string(),
                    at_ms: first_ms + i as i64 * DAY_MS,
                    state: state.to_string(),
                    devices: running as u64,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.baseline_id, a.at_ms, &a.state).cmp(&(&b.baseline_id, b.at_ms, &b.state))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::{Rollup, Severity};

    pub fn report(device: &str, baseline: &str, id: &str, at: i64, state: State) -> ReportRow {
        let mut rollup = Rollup::default();
        rollup.add(state, Severity::Warning);
        ReportRow {
            message_id: id.into(),
            device_id: device.into(),
            baseline_id: baseline.into(),
            baseline_revision: 1,
            baseline_name: baseline.into(),
            created_ms: at,
            evaluated_ms: at,
            received_ms: at,
            relay_id: "r".into(),
            rollup,
            settings: vec![],
            signature: vec![],
            signed_bytes: vec![],
        }
    }

    #[test]
    fn first_report_opens_an_interval() {
        let r = [report("d", "b", "m1", 10, State::Compliant)];
        let r: Vec<&ReportRow> = r.iter().collect();
        let p = plan_transitions(&r, &[]);
        assert_eq!(p.history_inserts.len(), 1);
        assert_eq!(p.history_inserts[0].ended_ms, None);
        assert_eq!(
            p.current,
            vec![CurrentUpsert {
                report: 0,
                open_history: HistoryRef::New(0)
            }]
        );
    }

    #[test]
    fn changes_within_a_batch_close_intervals_in_order() {
        let r = [
            report("d", "b", "m3", 30, State::Compliant),
            report("d", "b", "m1", 10, State::Compliant),
            report("d", "b", "m2", 20, State::NonCompliant),
        ];
        let r: Vec<&ReportRow> = r.iter().collect();
        let p = plan_transitions(&r, &[]);
        let iv: Vec<_> = p
            .history_inserts
            .iter()
            .map(|h| (h.state, h.started_ms, h.ended_ms))
            .collect();
        assert_eq!(
            iv,
            vec![
                (State::Compliant, 10, Some(20)),
                (State::NonCompliant, 20, Some(30)),
                (State::Compliant, 30, None)
            ]
        );
        assert_eq!(p.current[0].report, 0);
    }

    #[test]
    fn older_evaluation_changes_nothing() {
        let cur = CurrentRow {
            device_id: "d".into(),
            baseline_id: "b".into(),
            state: State::Compliant,
            evaluated_ms: 100,
            message_id: "m9".into(),
            open_history_id: 7,
        };
        let r = [report("d", "b", "m1", 50, State::NonCompliant)];
        let r: Vec<&ReportRow> = r.iter().collect();
        assert_eq!(plan_transitions(&r, &[cur]), Plan::default());
    }

    #[test]
    fn newer_evaluation_with_same_state_keeps_the_interval() {
        let cur = CurrentRow {
            device_id: "d".into(),
            baseline_id: "b".into(),
            state: State::Compliant,
            evaluated_ms: 100,
            message_id: "m9".into(),
            open_history_id: 7,
        };
        let r = [report("d", "b", "m1", 150, State::Compliant)];
        let r: Vec<&ReportRow> = r.iter().collect();
        let p = plan_transitions(&r, std::slice::from_ref(&cur));
        assert!(p.history_inserts.is_empty() && p.history_closes.is_empty());
        assert_eq!(p.current[0].open_history, HistoryRef::Existing(7));

        let r = [report("d", "b", "m1", 150, State::Error)];
        let r: Vec<&ReportRow> = r.iter().collect();
        let p = plan_transitions(&r, &[cur]);
        assert_eq!(p.history_closes, vec![(7, 150)]);
        assert_eq!(p.current[0].open_history, HistoryRef::New(0));
    }
}

#[cfg(test)]
mod terms_tests {
    use super::*;

    fn draft(body: &str) -> TermsDraft {
        TermsDraft {
            title: "Acceptable use".into(),
            body: body.into(),
            acceptance_statement: "I accept".into(),
            summary: Some("short".into()),
            display_name: Some("AUP".into()),
            description: None,
        }
    }

    #[test]
    fn first_new_version_edit_and_unchanged() {
        let (a, first) = plan_publish(None, &draft("body"), false, 10);
        let first = first.unwrap();
        assert_eq!(a, PublishAction::First);
        assert_eq!(
            (first.version, first.edition, first.published_ms),
            (1, 1, 10)
        );
        assert_eq!(first.text.display_name, "AUP");

        let (a, r) = plan_publish(Some(&first), &draft("body"), false, 20);
        assert_eq!((a, r), (PublishAction::Unchanged, None));

        // A typo fix: same version, next edition, first publication time kept; the summary
        // left out is kept.
        let mut d = draft("body, fixed");
        d.summary = None;
        let (a, r) = plan_publish(Some(&first), &d, false, 30);
        let edit = r.unwrap();
        assert_eq!(a, PublishAction::Edited);
        assert_eq!(
            (
                edit.version,
                edit.edition,
                edit.published_ms,
                edit.edited_ms
            ),
            (1, 2, 10, 30)
        );
        assert_eq!(edit.text.summary, "short");

        // A new version: summary only when given, admin labels carried over.
        let mut d = draft("v2");
        d.summary = None;
        d.display_name = None;
        let (a, r) = plan_publish(Some(&edit), &d, true, 40);
        let v2 = r.unwrap();
        assert_eq!(a, PublishAction::NewVersion);
        assert_eq!((v2.version, v2.edition, v2.published_ms), (2, 1, 40));
        assert_eq!(v2.text.summary, "");
        assert_eq!(v2.text.display_name, "AUP");

        // Even identical text becomes a new version when asked.
        let (a, r) = plan_publish(Some(&v2), &d, true, 50);
        assert_eq!(
            (a, r.map(|r| r.version)),
            (PublishAction::NewVersion, Some(3))
        );
    }

    #[test]
    fn the_report_marks_who_is_on_the_latest_version() {
        let row = |user: &str, device: &str, v: u32, at: i64| AcceptanceRowView {
            user: user.into(),
            device_id: device.into(),
            hostname: String::new(),
            accepted_version: v,
            accepted_ms: at,
            received_ms: at,
        };
        let r = AcceptanceReport::build(
            Some(2),
            vec![
                row("alice", "d1", 1, 5),
                row("alice", "d2", 2, 9),
                row("bob", "d1", 1, 7),
            ],
            3,
        );
        let latest: Vec<(&str, &str, bool)> = r
            .acceptances
            .iter()
            .map(|a| (a.user.as_str(), a.device_id.as_str(), a.latest))
            .collect();
        assert_eq!(
            latest,
            vec![
                ("alice", "d1", false),
                ("alice", "d2", true),
                ("bob", "d1", false)
            ]
        );
        assert_eq!(
            r.users
                .iter()
                .map(|u| (
                    u.user.as_str(),
                    u.accepted_version,
                    u.accepted_ms,
                    u.devices,
                    u.latest
                ))
                .collect::<Vec<_>>(),
            vec![("alice", 2, 9, 2, true), ("bob", 1, 7, 1, false)]
        );
        assert_eq!(r.devices_without_acceptance, 3);
        let none = AcceptanceReport::build(None, vec![row("a", "d", 1, 1)], 0);
        assert!(
            !none.acceptances[0].latest,
            "no terms in force: nothing is latest"
        );
    }
}

#[cfg(test)]
mod trend_tests {
    use super::*;

    /// Counts by brute force: for each instant, the intervals covering it.
    fn brute(first: i64, days: u32, intervals: &[(i64, Option<i64>)]) -> Vec<u64> {
        (0..i64::from(days))
            .map(|i| {
                let t = first + i * DAY_MS;
                intervals
                    .iter()
                    .filter(|(s, e)| *s <= t && e.is_none_or(|e| e > t))
                    .count() as u64
            })
            .collect()
    }

    /// The spans the SQL makes of intervals (the same arithmetic, in Rust).
    fn spans(first: i64, days: u32, intervals: &[(i64, Option<i64>)]) -> Vec<TrendSpan> {
        let end = first + i64::from(days - 1) * DAY_MS;
        intervals
            .iter()
            .filter(|(s, e)| *s <= end && e.is_none_or(|e| e > first))
            .map(|(s, e)| TrendSpan {
                baseline_id: "b".into(),
                state: "compliant".into(),
                first: if *s <= first {
                    0
                } else {
                    (s - first + DAY_MS - 1) / DAY_MS
                },
                last: match e {
                    None => i64::from(days - 1),
                    Some(e) => (i64::from(days - 1)).min((e - first + DAY_MS - 1) / DAY_MS - 1),
                },
                devices: 1,
            })
            .collect()
    }

    #[test]
    fn spans_count_what_each_instant_sees() {
        let first = 1_000 * DAY_MS + 12_345;
        let days = 5;
        let at = |d: i64, off: i64| first + d * DAY_MS + off;
        let intervals = vec![
            (at(-3, 0), None),            // before the window, still open
            (at(0, 0), Some(at(0, 1))),   // exactly the first instant only
            (at(0, 1), Some(at(2, 0))),   // starts just after an instant, ends on one
            (at(1, -1), Some(at(3, 1))),  // covers 1, 2, 3
            (at(4, 0), None),             // the last instant
            (at(4, 1), None),             // after the window
            (at(-9, 0), Some(at(-1, 0))), // ended before the window
        ];
        let points = trend_from_spans(first, days, &spans(first, days, &intervals));
        let got: Vec<u64> = (0..i64::from(days))
            .map(|i| {
                points
                    .iter()
                    .find(|p| p.at_ms == first + i * DAY_MS)
                    .map(|p| p.devices)
                    .unwrap_or(0)
            })
            .collect();
        assert_eq!(got, brute(first, days, &intervals));
        assert_eq!(got, vec![2, 3, 2, 2, 2]);
    }
}
