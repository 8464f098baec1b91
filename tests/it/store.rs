//! The site database through the store interface, on both backends: every test here runs once
//! on SQLite and once on PostgreSQL (`store::<test>::sqlite` and `store::<test>::postgres`).

use std::collections::{BTreeMap, HashMap};

use mprelay::compliance::{Rollup, Severity, State};
use mprelay::ids::MessageId;
use mprelay::store::{
    AcceptanceRow, DeviceDetails, DeviceUpsert, HistoryView, QuarantineRow, ReportRow, SettingRow,
    Store, WriteBatch,
};

use crate::both_backends;
use crate::db::{Backend, TestDb};

const DAY_MS: i64 = 86_400_000;

pub(crate) fn id() -> String {
    MessageId::new().to_string()
}

pub(crate) fn setting(k: usize, state: State) -> SettingRow {
    SettingRow {
        ci_id: format!("ci-{}", k / 3),
        ci_revision: 2,
        setting_id: format!("setting-{k}"),
        state,
        severity: if state == State::NonCompliant {
            Severity::Critical
        } else {
            Severity::Warning
        },
        expected: "== 0".into(),
        observed_before: (k % 4 != 3).then(|| format!("value {k} – ünïcode")),
        observed_after: k.is_multiple_of(2).then(|| "0".into()),
        remediated: k.is_multiple_of(2),
        error: if state == State::Error {
            "permission denied".into()
        } else {
            String::new()
        },
    }
}

/// A report of `device` for `baseline`, evaluated at `at`, whose settings roll up to `state`.
pub(crate) fn report(device: &str, baseline: &str, at: i64, state: State) -> ReportRow {
    let mut settings: Vec<SettingRow> = (0..4).map(|k| setting(k, State::Compliant)).collect();
    settings[3] = setting(3, state);
    let mut rollup = Rollup::default();
    for s in &settings {
        rollup.add(s.state, s.severity);
    }
    ReportRow {
        message_id: id(),
        device_id: device.into(),
        baseline_id: baseline.into(),
        baseline_revision: 3,
        baseline_name: format!("Baseline {baseline}"),
        created_ms: at - 5,
        evaluated_ms: at,
        received_ms: at + 1_000,
        relay_id: "relay-a".into(),
        rollup,
        settings,
        signature: vec![7; 64],
        signed_bytes: format!("signed bytes of {device} at {at}").into_bytes(),
    }
}

/// A batch from `relay` carrying `reports`, with a device sighting per report.
pub(crate) fn batch(relay: &str, through: u64, reports: Vec<ReportRow>) -> WriteBatch {
    WriteBatch {
        relay_id: relay.into(),
        relay_url: format!("https://{relay}:8444"),
        spool_id: format!("spool-{relay}"),
        through_seq: through,
        last_seq: through + 10,
        pending_records: 10,
        pending_bytes: 1000,
        devices: reports
            .iter()
            .map(|r| DeviceUpsert {
                device_id: r.device_id.clone(),
                public_key: vec![1; 32],
                key_epoch: 1,
                details: None,
                seen_ms: r.received_ms,
                relay_id: relay.into(),
            })
            .collect(),
        reports,
        acceptances: vec![],
        quarantined: vec![],
    }
}

fn intervals(h: &[HistoryView]) -> Vec<(&str, i64, Option<i64>)> {
    h.iter()
        .map(|v| (v.state.as_str(), v.started_ms, v.ended_ms))
        .collect()
}

/// Everything a batch can change, to compare before and after.
async fn snapshot(store: &Store, reports: &[ReportRow]) -> String {
    let mut out = format!("{:?}\n", store.counts().await.unwrap());
    for r in reports {
        let view = store.report(&r.message_id).await.unwrap();
        out += &format!("{:?}\n", view.map(|v| (v.state, v.received_ms)));
        out += &format!(
            "{:?}\n",
            store.report_settings(&r.message_id).await.unwrap()
        );
        out += &format!(
            "{:?}\n",
            store.current(&r.device_id, &r.baseline_id).await.unwrap()
        );
        out += &format!(
            "{:?}\n",
            store.history(&r.device_id, &r.baseline_id).await.unwrap()
        );
        let d = store.device(&r.device_id).await.unwrap().unwrap();
        out += &format!("{} {}\n", d.last_seen_ms, d.last_relay);
    }
    // The cursor's last pull time moves with every pull; the rest must not.
    for c in store.relay_cursors().await.unwrap() {
        out += &format!(
            "{} {} {} {}\n",
            c.relay_id, c.spool_id, c.through_seq, c.last_seq
        );
    }
    out
}

async fn what_is_written_reads_back(db: TestDb) {
    let store = db.store().await;
    let t = 1_700_000_000_000;
    let mut r = report("dev-1", "ssh", t, State::Error);
    r.signed_bytes = (0..=255u8).cycle().take(2300).collect();
    let out = store
        .write_batch(&batch("relay-a", 5, vec![r.clone()]))
        .await
        .unwrap();
    assert_eq!((out.reports_inserted, out.settings_inserted), (1, 4));

    let v = store.report(&r.message_id).await.unwrap().expect("stored");
    assert_eq!(
        (
            v.device_id.as_str(),
            v.baseline_id.as_str(),
            v.baseline_revision
        ),
        ("dev-1", "ssh", 3)
    );
    assert_eq!(v.baseline_name, "Baseline ssh");
    assert_eq!((v.evaluated_ms, v.received_ms), (t, t + 1_000));
    // The severity rolls up from non-compliant settings only.
    assert_eq!(
        (v.state.as_str(), v.max_severity.as_str()),
        ("error", "none")
    );
    assert_eq!((v.n_compliant, v.n_error, v.n_non_compliant), (3, 1, 0));
    assert_eq!(
        (v.signature, v.signed_bytes),
        (r.signature.clone(), r.signed_bytes.clone())
    );

    let settings = store.report_settings(&r.message_id).await.unwrap();
    assert_eq!(settings.len(), 4);
    for (got, want) in settings.iter().zip(&r.settings) {
        assert_eq!(got.ci_id, want.ci_id);
        assert_eq!(got.ci_revision, want.ci_revision);
        assert_eq!(got.setting_id, want.setting_id);
        assert_eq!(got.state, want.state.as_str());
        assert_eq!(got.severity, want.severity.as_str());
        assert_eq!(got.expected, want.expected);
        assert_eq!(got.observed_before, want.observed_before);
        assert_eq!(got.observed_after, want.observed_after);
        assert_eq!(got.remediated, want.remediated);
        assert_eq!(got.error, want.error);
    }
    assert!(store.report(&id()).await.unwrap().is_none());
    assert!(store.report_settings(&id()).await.unwrap().is_empty());
    assert_eq!(
        store.report_message_ids().await.unwrap(),
        vec![r.message_id]
    );
}
both_backends!(what_is_written_reads_back);

async fn replaying_a_batch_changes_nothing(db: TestDb) {
    let store = db.store().await;
    let t = 1_700_000_000_000;
    let reports = vec![
        report("dev-1", "ssh", t, State::Compliant),
        report("dev-2", "ssh", t, State::NonCompliant),
        report("dev-1", "sysctl", t + 10, State::Error),
    ];
    let mut b = batch("relay-a", 3, reports.clone());
    b.acceptances.push(AcceptanceRow {
        message_id: id(),
        device_id: "dev-1".into(),
        user: "alice".into(),
        terms_version: 2,
        accepted_ms: t,
        received_ms: t + 1_000,
        relay_id: "relay-a".into(),
    });
    let first = store.write_batch(&b).await.unwrap();
    assert_eq!(
        (
            first.reports_inserted,
            first.reports_duplicate,
            first.acceptances_inserted
        ),
        (3, 0, 1)
    );
    let before = snapshot(&store, &reports).await;

    let again = store.write_batch(&b).await.unwrap();
    assert_eq!(
        (
            again.reports_inserted,
            again.reports_duplicate,
            again.settings_inserted
        ),
        (0, 3, 0)
    );
    assert_eq!(again.acceptances_inserted, 0);
    assert_eq!(snapshot(&store, &reports).await, before);

    // A replay inside one batch, and one received again on another day (as a resend through
    // another relay would be): still one report.
    let mut resent = reports[1].clone();
    resent.received_ms += 3 * DAY_MS;
    let dup = store
        .write_batch(&batch(
            "relay-b",
            1,
            vec![reports[0].clone(), resent, reports[0].clone()],
        ))
        .await
        .unwrap();
    assert_eq!((dup.reports_inserted, dup.reports_duplicate), (0, 3));
    assert_eq!(store.counts().await.unwrap().reports, 3);
    assert_eq!(store.counts().await.unwrap().settings, 12);
}
both_backends!(replaying_a_batch_changes_nothing);

async fn an_older_evaluation_arriving_late_changes_no_state(db: TestDb) {
    let store = db.store().await;
    let t = 1_700_000_000_000;
    let newer = report("dev-1", "ssh", t + 60_000, State::NonCompliant);
    let older = report("dev-1", "ssh", t, State::Compliant);
    store
        .write_batch(&batch("relay-a", 1, vec![newer.clone()]))
        .await
        .unwrap();
    let out = store
        .write_batch(&batch("relay-b", 1, vec![older.clone()]))
        .await
        .unwrap();
    assert_eq!(out.reports_inserted, 1, "the late report is still stored");
    assert!(store.report(&older.message_id).await.unwrap().is_some());

    let cur = store.current("dev-1", "ssh").await.unwrap().unwrap();
    assert_eq!(
        (cur.state, cur.evaluated_ms, cur.message_id.as_str()),
        (State::NonCompliant, t + 60_000, newer.message_id.as_str())
    );
    let h = store.history("dev-1", "ssh").await.unwrap();
    assert_eq!(intervals(&h), vec![("non_compliant", t + 60_000, None)]);

    // Same in one batch, older listed last.
    let (a, b) = (
        report("dev-2", "ssh", t + 5, State::Error),
        report("dev-2", "ssh", t, State::Compliant),
    );
    store
        .write_batch(&batch("relay-a", 2, vec![a.clone(), b]))
        .await
        .unwrap();
    let cur = store.current("dev-2", "ssh").await.unwrap().unwrap();
    assert_eq!((cur.state, cur.message_id), (State::Error, a.message_id));
}
both_backends!(an_older_evaluation_arriving_late_changes_no_state);

async fn history_follows_compliant_non_compliant_compliant(db: TestDb) {
    let store = db.store().await;
    let t = 1_700_000_000_000;
    let steps = [
        (t, State::Compliant),
        (t + 100, State::Compliant),
        (t + 200, State::NonCompliant),
        (t + 300, State::Compliant),
    ];
    for (i, (at, state)) in steps.iter().enumerate() {
        store
            .write_batch(&batch(
                "relay-a",
                i as u64 + 1,
                vec![report("d", "b", *at, *state)],
            ))
            .await
            .unwrap();
    }
    let want = vec![
        ("compliant", t, Some(t + 200)),
        ("non_compliant", t + 200, Some(t + 300)),
        ("compliant", t + 300, None),
    ];
    assert_eq!(intervals(&store.history("d", "b").await.unwrap()), want);
    let cur = store.current("d", "b").await.unwrap().unwrap();
    assert_eq!((cur.state, cur.evaluated_ms), (State::Compliant, t + 300));

    // The same evaluations arriving in one batch, shuffled, give the same intervals.
    let mut one = vec![];
    for (at, state) in steps.iter().rev() {
        one.push(report("d2", "b", *at, *state));
    }
    store.write_batch(&batch("relay-a", 9, one)).await.unwrap();
    assert_eq!(intervals(&store.history("d2", "b").await.unwrap()), want);

    let summary = store.baseline_summaries().await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].devices, summary[0].compliant), (2, 2));
}
both_backends!(history_follows_compliant_non_compliant_compliant);

async fn a_batch_failing_at_its_last_statement_leaves_nothing(db: TestDb) {
    let store = db.store().await;
    let t = 1_700_000_000_000;
    store
        .write_batch(&batch(
            "relay-a",
            1,
            vec![report("d", "b", t, State::Compliant)],
        ))
        .await
        .unwrap();
    let before = store.counts().await.unwrap();
    // The relay cursor is written last; make writing it fail for one relay.
    match db.backend {
        Backend::Sqlite => {
            db.exec(
                "CREATE TRIGGER poison BEFORE INSERT ON relay_cursors \
                 WHEN NEW.relay_id = 'poison' BEGIN SELECT RAISE(ABORT, 'injected'); END",
            )
            .await
        }
        Backend::Postgres => {
            db.exec(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected'; END $$; \
                 CREATE TRIGGER poison BEFORE INSERT ON relay_cursors FOR EACH ROW \
                 WHEN (NEW.relay_id = 'poison') EXECUTE FUNCTION poison()",
            )
            .await
        }
    }
    let doomed = vec![
        report("d", "b", t + 100, State::NonCompliant),
        report("d-new", "b", t + 100, State::Error),
    ];
    let mut b = batch("poison", 7, doomed.clone());
    b.acceptances.push(AcceptanceRow {
        message_id: id(),
        device_id: "d".into(),
        user: "bob".into(),
        terms_version: 1,
        accepted_ms: t,
        received_ms: t,
        relay_id: "poison".into(),
    });
    let err = store.write_batch(&b).await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");

    assert_eq!(store.counts().await.unwrap(), before);
    for r in &doomed {
        assert!(store.report(&r.message_id).await.unwrap().is_none());
    }
    assert!(store.device("d-new").await.unwrap().is_none());
    assert_eq!(
        store.device("d").await.unwrap().unwrap().last_seen_ms,
        t + 1_000
    );
    let cur = store.current("d", "b").await.unwrap().unwrap();
    assert_eq!((cur.state, cur.evaluated_ms), (State::Compliant, t));
    assert_eq!(store.history("d", "b").await.unwrap().len(), 1);
    assert!(store.relay_cursor("poison").await.unwrap().is_none());

    // Nothing was half-kept: the same batch goes through once the fault is gone.
    db.exec(match db.backend {
        Backend::Sqlite => "DROP TRIGGER poison",
        Backend::Postgres => "DROP TRIGGER poison ON relay_cursors",
    })
    .await;
    let out = store.write_batch(&b).await.unwrap();
    assert_eq!((out.reports_inserted, out.acceptances_inserted), (2, 1));
}
both_backends!(a_batch_failing_at_its_last_statement_leaves_nothing);

async fn devices_keep_enrollment_details_and_the_latest_sighting(db: TestDb) {
    let store = db.store().await;
    let t = 1_700_000_000_000;
    let sighting = |seen: i64, relay: &str| DeviceUpsert {
        device_id: "dev-1".into(),
        public_key: vec![9; 32],
        key_epoch: 1,
        details: None,
        seen_ms: seen,
        relay_id: relay.into(),
    };
    let enrollment = |seen: i64, host: &str| DeviceUpsert {
        details: Some(DeviceDetails {
            hostname: host.into(),
            os: "linux".into(),
            agent_version: "1.0".into(),
            hardware_id: "hw-1".into(),
        }),
        key_epoch: 2,
        ..sighting(seen, "relay-a")
    };
    let write = |devices: Vec<DeviceUpsert>, relay: &'static str| {
        let store = store.clone();
        async move {
            let mut b = batch(relay, 1, vec![]);
            b.devices = devices;
            store.write_batch(&b).await.unwrap();
        }
    };

    // Known from a report first: no details, not enrolled yet.
    write(vec![sighting(t, "relay-b")], "relay-b").await;
    let d = store.device("dev-1").await.unwrap().unwrap();
    assert_eq!(
        (d.enrolled_ms, d.last_seen_ms, d.hostname.as_str()),
        (None, t, "")
    );

    // The enrollment arrives later, with an older time: details filled, last seen kept.
    write(vec![enrollment(t - 50, "host-a")], "relay-a").await;
    let d = store.device("dev-1").await.unwrap().unwrap();
    assert_eq!(
        (d.enrolled_ms, d.hostname.as_str(), d.key_epoch),
        (Some(t - 50), "host-a", 2)
    );
    assert_eq!((d.last_seen_ms, d.last_relay.as_str()), (t, "relay-b"));

    // Later sightings move last seen forward; an older one does not move it back; several
    // sightings in one batch fold into one.
    write(
        vec![sighting(t + 20, "relay-c"), sighting(t + 10, "relay-a")],
        "relay-c",
    )
    .await;
    write(vec![sighting(t + 5, "relay-a")], "relay-a").await;
    let d = store.device("dev-1").await.unwrap().unwrap();
    assert_eq!((d.last_seen_ms, d.last_relay.as_str()), (t + 20, "relay-c"));
    assert_eq!(
        (d.hostname.as_str(), d.enrolled_ms),
        ("host-a", Some(t - 50))
    );

    // Re-enrolling updates the details but not the first enrollment time.
    write(vec![enrollment(t + 30, "host-b")], "relay-a").await;
    let d = store.device("dev-1").await.unwrap().unwrap();
    assert_eq!(
        (d.hostname.as_str(), d.enrolled_ms, d.last_seen_ms),
        ("host-b", Some(t - 50), t + 30)
    );
    assert_eq!(store.counts().await.unwrap().devices, 1);
}
both_backends!(devices_keep_enrollment_details_and_the_latest_sighting);

async fn terms_acceptances_are_stored_once(db: TestDb) {
    let store = db.store().await;
    let t = 1_700_000_000_000;
    let acceptance = |user: &str, version: u32| AcceptanceRow {
        message_id: id(),
        device_id: "dev-1".into(),
        user: user.into(),
        terms_version: version,
        accepted_ms: t,
        received_ms: t + 1,
        relay_id: "relay-a".into(),
    };
    let (a, b) = (acceptance("alice", 1), acceptance("alice", 2));
    let mut first = batch("relay-a", 1, vec![]);
    first.acceptances = vec![a.clone(), b.clone(), a.clone()];
    assert_eq!(
        store
            .write_batch(&first)
            .await
            .unwrap()
            .acceptances_inserted,
        2
    );
    let mut again = batch("relay-b", 1, vec![]);
    again.acceptances = vec![b, acceptance("bob", 2)];
    assert_eq!(
        store
            .write_batch(&again)
            .await
            .unwrap()
            .acceptances_inserted,
        1
    );
    assert_eq!(store.counts().await.unwrap().acceptances, 3);
}
both_backends!(terms_acceptances_are_stored_once);

async fn quarantined_records_are_kept_with_their_bytes(db: TestDb) {
    let store = db.store().await;
    let q = |seq: u64| QuarantineRow {
        seq,
        message_id: if seq == 1 { String::new() } else { id() },
        received_ms: 1_700_000_000_000,
        reason: format!("record {seq} does not decode"),
        payload: vec![0xff, seq as u8, 0x00],
    };
    let mut b = batch("relay-a", 2, vec![]);
    b.quarantined = vec![q(1), q(2)];
    assert_eq!(store.write_batch(&b).await.unwrap().quarantined, 2);
    // Pulled again (the ack was lost): not doubled.
    assert_eq!(store.write_batch(&b).await.unwrap().quarantined, 0);
    assert_eq!(store.counts().await.unwrap().quarantined, 2);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM quarantined_records WHERE length(payload) = 3")
            .await,
        2
    );
}
both_backends!(quarantined_records_are_kept_with_their_bytes);

async fn relay_cursors_record_progress_per_relay(db: TestDb) {
    let store = db.store().await;
    assert!(store.relay_cursor("relay-a").await.unwrap().is_none());
    store
        .write_batch(&batch("relay-a", 40, vec![]))
        .await
        .unwrap();
    store
        .write_batch(&batch("relay-b", 7, vec![]))
        .await
        .unwrap();
    store
        .write_batch(&batch("relay-a", 41, vec![]))
        .await
        .unwrap();
    let a = store.relay_cursor("relay-a").await.unwrap().unwrap();
    assert_eq!(
        (
            a.spool_id.as_str(),
            a.through_seq,
            a.last_seq,
            a.url.as_str()
        ),
        ("spool-relay-a", 41, 51, "https://relay-a:8444")
    );
    assert_eq!((a.pending_records, a.pending_bytes), (10, 1000));
    assert!(a.last_pull_ms > 0);
    let all: Vec<_> = store
        .relay_cursors()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.relay_id, c.through_seq))
        .collect();
    assert_eq!(all, vec![("relay-a".into(), 41), ("relay-b".into(), 7)]);
}
both_backends!(relay_cursors_record_progress_per_relay);

async fn reports_of_any_day_are_stored_and_partitions_catch_up(db: TestDb) {
    let store = db.store().await;
    let now = mprelay::clock::now_ms();
    // Far before the partitions made at start, today, and far after.
    let days = [-40, 0, 30];
    let mut reports = vec![];
    for (i, d) in days.iter().enumerate() {
        let mut r = report(&format!("dev-{i}"), "ssh", now, State::Compliant);
        r.received_ms = now + d * DAY_MS;
        reports.push(r);
    }
    store
        .write_batch(&batch("relay-a", 3, reports.clone()))
        .await
        .unwrap();
    if db.backend == Backend::Postgres {
        // The two days without a partition went to the default partitions.
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM compliance_reports_default")
                .await,
            2
        );
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM setting_results_default")
                .await,
            8
        );
    }
    // The site's maintenance reaches the future day: its rows move to the new partition.
    let made = store.ensure_partitions(now + 30 * DAY_MS).await.unwrap();
    if db.backend == Backend::Postgres {
        assert!(made >= 2, "{made}");
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM compliance_reports_default")
                .await,
            1
        );
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM setting_results_default")
                .await,
            4
        );
    } else {
        assert_eq!(made, 0);
    }
    for r in &reports {
        let v = store.report(&r.message_id).await.unwrap().expect("stored");
        assert_eq!(v.received_ms, r.received_ms);
        assert_eq!(store.report_settings(&r.message_id).await.unwrap().len(), 4);
    }
    assert_eq!(store.counts().await.unwrap().settings, 12);
    // Running maintenance again makes nothing new; two site servers running it at once make
    // each partition once and both succeed.
    assert_eq!(store.ensure_partitions(now + 30 * DAY_MS).await.unwrap(), 0);
    let other = db.store().await;
    let later = now + 60 * DAY_MS;
    let (a, b) = tokio::join!(
        store.ensure_partitions(later),
        other.ensure_partitions(later)
    );
    let made = a.unwrap() + b.unwrap();
    if db.backend == Backend::Postgres {
        assert_eq!(made, 2 * 10, "two tables, ten days each");
    }
}
both_backends!(reports_of_any_day_are_stored_and_partitions_catch_up);

/// Two writers (two site servers, each with its own relay and connections) write the same
/// devices at the same time, evaluations arriving in any order, one batch big enough to lock all
/// devices at once. Afterwards every (device, baseline) has a history that is a proper sequence of
/// intervals, and its current state is its newest evaluation.
async fn two_writers_on_overlapping_devices_stay_consistent(db: TestDb) {
    let (a, b) = (db.store().await, db.store().await);
    let t = 1_700_000_000_000;
    let states = [State::Compliant, State::NonCompliant, State::Error];
    // A deterministic spread of evaluations: 12 devices × 2 baselines, 30 evaluations each,
    // split between the writers, each writer's batches in a shuffled order.
    let mut all: Vec<ReportRow> = vec![];
    for dev in 0..12 {
        for base in ["ssh", "sysctl"] {
            for k in 0..30u64 {
                let mix = (dev as u64 * 7919 + k * 104_729) % 97;
                let at = t + (k as i64) * 1000 + (mix as i64 % 500);
                let state = states[(mix % 3) as usize];
                all.push(report(&format!("dev-{dev}"), base, at, state));
            }
        }
    }
    let (mut mine, mut theirs) = (vec![], vec![]);
    for (i, r) in all.iter().enumerate() {
        if (i * 31) % 7 < 3 {
            &mut mine
        } else {
            &mut theirs
        }
        .push(r.clone());
    }
    let batches = |reports: Vec<ReportRow>, relay: &'static str, size: usize| {
        let mut out: Vec<WriteBatch> = reports
            .chunks(size)
            .enumerate()
            .map(|(i, c)| batch(relay, i as u64 + 1, c.to_vec()))
            .collect();
        out.reverse();
        out
    };
    let mut for_a = batches(mine, "relay-a", 23);
    let for_b = batches(theirs, "relay-b", 17);
    // One batch of more devices than per-device locks are taken for.
    let big: Vec<ReportRow> = (0..1100)
        .map(|i| report(&format!("bulk-{i}"), "ssh", t, State::Compliant))
        .chain([report("dev-0", "ssh", t + 40_000, State::Unknown)])
        .collect();
    all.extend(big.iter().cloned());
    for_a.insert(for_a.len() / 2, batch("relay-a", 99, big));

    // Every pair has a current row before the race, so the race is about updating them.
    let seed: Vec<ReportRow> = (0..12)
        .flat_map(|dev| {
            ["ssh", "sysctl"]
                .map(|base| report(&format!("dev-{dev}"), base, t - 1, State::Compliant))
        })
        .collect();
    a.write_batch(&batch("relay-a", 0, seed.clone()))
        .await
        .unwrap();
    all.extend(seed);

    let run = |store: Store, batches: Vec<WriteBatch>| async move {
        for b in batches {
            store
                .write_batch(&b)
                .await
                .expect("no batch fails, no deadlock");
        }
    };
    tokio::join!(run(a.clone(), for_a), run(b.clone(), for_b));

    let mut newest: BTreeMap<(String, String), &ReportRow> = BTreeMap::new();
    for r in &all {
        let e = newest
            .entry((r.device_id.clone(), r.baseline_id.clone()))
            .or_insert(r);
        if (r.evaluated_ms, &r.message_id) > (e.evaluated_ms, &e.message_id) {
            *e = r;
        }
    }
    assert_eq!(a.counts().await.unwrap().reports as usize, all.len());
    let mut by_pair: HashMap<(String, String), Vec<&ReportRow>> = HashMap::new();
    for r in &all {
        by_pair
            .entry((r.device_id.clone(), r.baseline_id.clone()))
            .or_default()
            .push(r);
    }
    for ((dev, base), want) in &newest {
        let cur = b.current(dev, base).await.unwrap().expect("current row");
        assert_eq!(
            (cur.state, cur.evaluated_ms, &cur.message_id),
            (want.rollup.state(), want.evaluated_ms, &want.message_id),
            "{dev}/{base}"
        );
        let h = a.history(dev, base).await.unwrap();
        assert!(!h.is_empty(), "{dev}/{base}");
        for w in h.windows(2) {
            assert_eq!(w[0].ended_ms, Some(w[1].started_ms), "{dev}/{base}: {h:?}");
            assert!(w[0].started_ms < w[1].started_ms, "{dev}/{base}: {h:?}");
            assert_ne!(w[0].state, w[1].state, "{dev}/{base}: {h:?}");
        }
        let last = h.last().unwrap();
        assert_eq!(last.ended_ms, None, "{dev}/{base}: {h:?}");
        assert_eq!(last.state, cur.state.as_str(), "{dev}/{base}");
        // Every interval starts at one of the pair's evaluations, in that evaluation's state.
        for iv in &h {
            assert!(
                by_pair[&(dev.clone(), base.clone())]
                    .iter()
                    .any(|r| r.evaluated_ms == iv.started_ms
                        && r.rollup.state().as_str() == iv.state),
                "{dev}/{base}: {iv:?}"
            );
        }
    }
}
both_backends!(two_writers_on_overlapping_devices_stay_consistent);

/// A batch of one day goes straight into that day's partitions; when another site server's
/// retention has dropped them meanwhile, the batch fails whole and its retry is stored through
/// the parent (in the default partitions), losing nothing.
#[tokio::test]
async fn a_day_partition_dropped_under_the_writer_costs_one_retry() {
    let db = TestDb::create(Backend::Postgres, "dropped_day_partition").await;
    let store = db.store().await;
    let now = mprelay::clock::now_ms();
    let first: Vec<ReportRow> = (0..3)
        .map(|i| report(&format!("dev-{i}"), "ssh", now, State::Compliant))
        .collect();
    store
        .write_batch(&batch("relay-a", 3, first.clone()))
        .await
        .unwrap();
    let day = format!("to_char(to_timestamp({now} / 1000.0) AT TIME ZONE 'UTC', 'YYYYMMDD')");
    let in_day = |table: &str| {
        format!(
            "SELECT COUNT(*) FROM {table} WHERE tableoid::regclass::text = '{table}_d' || {day}"
        )
    };
    assert_eq!(db.scalar(&in_day("setting_results")).await, 12);

    // Another site server's retention drops today's partitions.
    db.exec(&format!(
        "DO $$ BEGIN \
         EXECUTE 'DROP TABLE setting_results_d' || {day}; \
         EXECUTE 'DROP TABLE compliance_reports_d' || {day}; END $$"
    ))
    .await;
    let second: Vec<ReportRow> = (0..3)
        .map(|i| report(&format!("dev-{i}"), "ssh", now + 1000, State::NonCompliant))
        .collect();
    let b = batch("relay-a", 6, second.clone());
    store
        .write_batch(&b)
        .await
        .expect_err("the partition is gone");
    assert_eq!(store.counts().await.unwrap().reports, 0);
    store
        .write_batch(&b)
        .await
        .expect("the retry goes through the parent");
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM setting_results_default")
            .await,
        12
    );
    for r in &second {
        assert_eq!(store.report_settings(&r.message_id).await.unwrap().len(), 4);
        let cur = store.current(&r.device_id, "ssh").await.unwrap().unwrap();
        assert_eq!(cur.message_id, r.message_id);
    }
}

/// A read-only open reads what the site server wrote, writes nothing, and refuses a database
/// without the site schema or with another version of it, saying which.
async fn read_only_opens_check_the_schema_and_write_nothing(db: TestDb) {
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        // An empty file is an empty SQLite database (a missing one is refused before this).
        std::fs::File::create(path).unwrap();
    }
    let empty = Store::open_read_only(&db.url)
        .await
        .expect_err("a database without the site schema is refused")
        .to_string();
    assert!(empty.contains("holds no mprelay site database"), "{empty}");

    let store = db.store().await;
    let r = report("dev-1", "ssh", 1_700_000_000_000, State::Compliant);
    store
        .write_batch(&batch("relay-a", 1, vec![r.clone()]))
        .await
        .unwrap();
    let reader = Store::open_read_only(&db.url).await.expect("opens");
    assert_eq!(reader.counts().await.unwrap().reports, 1);
    let cur = reader.current("dev-1", "ssh").await.unwrap().unwrap();
    assert_eq!(cur.message_id, r.message_id);
    let write = reader
        .write_batch(&batch(
            "relay-a",
            2,
            vec![report("dev-2", "ssh", 1, State::Compliant)],
        ))
        .await;
    assert!(write.is_err(), "a read-only store wrote");
    assert_eq!(store.counts().await.unwrap().reports, 1);
    reader.close().await;

    // A database one migration behind (a site server not yet upgraded).
    db.exec(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
    )
    .await;
    let behind = Store::open_read_only(&db.url)
        .await
        .expect_err("an older schema is refused")
        .to_string();
    assert!(
        behind.contains("has schema version") && behind.contains("upgrade"),
        "{behind}"
    );
}
both_backends!(read_only_opens_check_the_schema_and_write_nothing);

/// PostgreSQL's errors reach the operator as the server's message, not followed by the line of
/// the server's C source that sqlx appends ("… at line 948", easily read as a line of one's
/// configuration).
#[tokio::test]
async fn postgres_errors_read_as_the_servers_message() {
    let server = crate::db::postgres_server();
    let base = server.rsplit_once('/').unwrap().0;
    let missing = format!("{base}/no_such_site_{}", std::process::id());
    let e = Store::connect(&missing)
        .await
        .expect_err("no such database")
        .to_string();
    assert!(
        e.ends_with(&format!(
            "database \"no_such_site_{}\" does not exist",
            std::process::id()
        )),
        "{e}"
    );

    let db = TestDb::create(Backend::Postgres, "error_text").await;
    let store = db.store().await;
    db.exec("DROP TABLE relay_cursors").await;
    let e = store
        .relay_cursor("relay-a")
        .await
        .expect_err("the table is gone")
        .to_string();
    assert_eq!(
        e,
        "database error: relation \"relay_cursors\" does not exist"
    );
}

/// The report commands work with a PostgreSQL role that may only read the site's tables.
#[tokio::test]
async fn report_commands_need_only_a_read_only_postgres_role() {
    let db = TestDb::create(Backend::Postgres, "read_only_role").await;
    let store = db.store().await;
    let r = report(
        "dev-1",
        "ssh",
        mprelay::clock::now_ms(),
        State::NonCompliant,
    );
    store
        .write_batch(&batch("relay-a", 1, vec![r]))
        .await
        .unwrap();
    let role = format!("mprelay_reader_{}", std::process::id());
    db.exec(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; \
         GRANT USAGE ON SCHEMA public TO {role}; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    ))
    .await;
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(url, db.url);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mprelay"))
            .args(args)
            .env("MPRELAY_LOG", "warn")
            .output()
            .unwrap()
    };
    let counts = run(&["report", "counts", "--database", &url]);
    let compliance = run(&["report", "compliance", "--database", &url]);
    // The role goes with the test's database; revoke what it holds there first.
    drop(store);
    db.exec(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}; \
         REVOKE ALL ON SCHEMA public FROM {role}; DROP ROLE {role}"
    ))
    .await;
    for o in [&counts, &compliance] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(String::from_utf8_lossy(&counts.stdout).contains("reports 1\n"));
    assert!(String::from_utf8_lossy(&compliance.stdout).contains("ssh"));
}

/// Every partition of setting_results has exactly one block-range index, without
/// autosummarize: the writer summarizes what it fills, and autovacuum's requests, overflowing
/// its queue at intake rates, each put a LOG line with the whole COPY in the server's log.
#[tokio::test]
async fn setting_results_partitions_are_indexed_without_autosummarize() {
    let db = TestDb::create(Backend::Postgres, "brin_autosummarize").await;
    let store = db.store().await;
    // A partition made later, by the site's maintenance, as well as those made at start.
    let later = mprelay::clock::now_ms() + 30 * 86_400_000;
    assert!(store.ensure_partitions(later).await.unwrap() > 0);
    let partitions = db
        .scalar("SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'setting_results'::regclass")
        .await;
    assert!(partitions >= 11, "{partitions} partitions");
    let leaf_indexes = "FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid \
         WHERE h.inhparent = 'setting_results_report'::regclass";
    assert_eq!(
        db.scalar(&format!("SELECT COUNT(*) {leaf_indexes}")).await,
        partitions
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) {leaf_indexes} AND 'autosummarize=off' = ANY(c.reloptions)"
        ))
        .await,
        partitions
    );
    // No partition got a second block-range index beside the adopted one.
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indrelid \
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
             WHERE h.inhparent = 'setting_results'::regclass AND a.amname = 'brin'",
        )
        .await,
        partitions
    );
}

/// The intake path into PostgreSQL, with two site servers sharing the database, each pulling
/// its own relay, and the same devices submitting through both relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_site_servers_share_one_postgres_database() {
    use std::sync::Arc;

    use bytes::Bytes;
    use mprelay::net::{HttpClient, HttpVersion};
    use mprelay::pki;
    use prost::Message;

    use crate::helpers::{RawDevice, TestSystem, describe, fast_pull, wait_until};

    let db = TestDb::create(Backend::Postgres, "two_site_servers_e2e").await;
    let mut sys = TestSystem::start_on(&db.url).await;
    let relay_b = sys
        .lb
        .start_relay(
            sys.lb
                .relay_options("relay-b", &sys.dir.path().join("spool-b.db"))
                .unwrap(),
        )
        .await
        .unwrap();
    let site_b = sys
        .lb
        .start_site(
            db.store().await,
            &[&relay_b],
            fast_pull(),
            mprelay::clock::system(),
        )
        .unwrap();
    let roots = pki::load_certs(&sys.lb.paths.ca_cert()).unwrap();
    let tls = Arc::new(pki::client_config(&roots, None, HttpVersion::Http1.alpn()).unwrap());
    let to_b = HttpClient::new(
        &format!("https://127.0.0.1:{}", relay_b.agent_addr.port()),
        tls,
    )
    .unwrap();
    let to_a = sys.agent_client(HttpVersion::Http1);

    // Device keys are derived from the relays' shared master secret: enrolled once, a device
    // can submit through either relay.
    let secret = sys.enrollment_secret();
    let mut devices = vec![];
    for _ in 0..4 {
        devices.push(RawDevice::enroll(&to_a, &secret).await);
    }
    let mut sent: Vec<(String, String, i64, State)> = vec![];
    for round in 0..5u64 {
        for (i, d) in devices.iter().enumerate() {
            let id = MessageId::new().to_string();
            let mut r = mprelay::sample::report(0, round * 10 + i as u64);
            r.evaluated_unix_ms = r_time(round, i);
            let state = mprelay::compliance::rollup_report(&r).state();
            let sub = d.submission(&id, mprelay::clock::now_ms(), r);
            let body = Bytes::from(d.seal(&sub).encode_to_vec());
            let via = if (round + i as u64).is_multiple_of(2) {
                &to_a
            } else {
                &to_b
            };
            let resp = via.post("/v1/submissions", body).await.unwrap();
            assert_eq!(resp.status, 202, "{}", describe(&resp));
            sent.push((id, d.signer.device_id().hex(), r_time(round, i), state));
        }
    }
    wait_until(std::time::Duration::from_secs(30), || async {
        sys.store.counts().await.unwrap().reports >= sent.len() as u64
    })
    .await
    .expect("every report reaches the database");

    let stored = sys.store.report_message_ids().await.unwrap();
    assert_eq!(stored.len(), sent.len());
    for (id, device, at, state) in &sent {
        let v = sys.store.report(id).await.unwrap().expect("stored once");
        assert_eq!((&v.device_id, v.evaluated_ms), (device, *at));
        assert_eq!(v.state, state.as_str());
        assert_eq!(sys.store.report_settings(id).await.unwrap().len(), 8);
    }
    for d in &devices {
        let dev = d.signer.device_id().hex();
        let last = sent
            .iter()
            .filter(|s| s.1 == dev)
            .max_by_key(|s| s.2)
            .unwrap();
        let cur = sys
            .store
            .current(&dev, "ssh-hardening")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&cur.message_id, cur.state), (&last.0, last.3));
        let h = sys.store.history(&dev, "ssh-hardening").await.unwrap();
        assert_eq!(h.last().unwrap().ended_ms, None);
        assert!(
            h.windows(2).all(|w| w[0].ended_ms == Some(w[1].started_ms)),
            "{h:?}"
        );
        let seen = sys.store.device(&dev).await.unwrap().unwrap();
        assert_eq!(seen.hostname, "raw-device", "the enrollment arrived too");
    }
    let relays: Vec<String> = sys
        .store
        .relay_cursors()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.relay_id)
        .collect();
    assert_eq!(
        relays,
        vec!["relay-b".to_string(), "test-relay".to_string()]
    );
    // Today's reports are in today's partition, not the default one.
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM compliance_reports_default")
            .await,
        0
    );

    site_b.shutdown().await;
    relay_b.shutdown().await;
    sys.stop_site().await;
    sys.stop_relay().await;
    sys.store.close().await;
}

fn r_time(round: u64, i: usize) -> i64 {
    1_700_000_000_000 + (round as i64) * 1000 + i as i64
}
