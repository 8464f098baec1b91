//! The retention task (Delete Aged Configuration Management Data) on both backends, with a
//! manual clock: what goes and what stays around the cutoff, changed settings, the schedule
//! window, interrupted runs, one run at a time, and intake running beside a run. Then the same
//! task through `mprelay maintenance` and the admin API.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use mprelay::clock::{DAY_MS, ManualClock, SharedClock};
use mprelay::compliance::{Rollup, Severity, State};
use mprelay::ids::MessageId;
use mprelay::retention::settings::{SettingsChange, apply};
use mprelay::retention::{LEASE, Outcome, Retention};
use mprelay::store::{
    AcceptanceRow, DELETE_AGED_CM_DATA, DeviceUpsert, MaintenanceRun, ReportRow, RunStatus,
    RunTrigger, SettingRow, Store, WriteBatch,
};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::both_backends;
use crate::compliance::{admin_client, get_json, system_on};
use crate::db::{Backend, TestDb};

const MIN_MS: i64 = 60_000;

/// Saturday 2026-11-28 01:00 UTC: inside the default window (Saturdays 00:00–05:00 UTC).
pub(crate) fn t0() -> i64 {
    "2026-11-28T01:00:00Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

/// A report received (and evaluated) at `at`, with four settings.
pub(crate) fn report(device: &str, at: i64, state: State) -> ReportRow {
    let settings: Vec<SettingRow> = (0..4)
        .map(|k| SettingRow {
            ci_id: "ci".into(),
            ci_revision: 1,
            setting_id: format!("s{k}"),
            state: if k == 3 { state } else { State::Compliant },
            severity: Severity::Warning,
            expected: "== 0".into(),
            observed_before: Some("1".into()),
            observed_after: None,
            remediated: false,
            error: String::new(),
        })
        .collect();
    let mut rollup = Rollup::default();
    for s in &settings {
        rollup.add(s.state, s.severity);
    }
    ReportRow {
        message_id: MessageId::new().to_string(),
        device_id: device.into(),
        baseline_id: "b".into(),
        baseline_revision: 1,
        baseline_name: "B".into(),
        created_ms: at,
        evaluated_ms: at,
        received_ms: at,
        relay_id: "r".into(),
        rollup,
        settings,
        signature: vec![1; 64],
        signed_bytes: vec![2; 200],
    }
}

static THROUGH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) async fn write(store: &Store, reports: Vec<ReportRow>) -> Vec<ReportRow> {
    let through = THROUGH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let b = WriteBatch {
        relay_id: "r".into(),
        relay_url: "https://r".into(),
        spool_id: "sp".into(),
        through_seq: through,
        last_seq: through,
        devices: reports
            .iter()
            .map(|r| DeviceUpsert {
                device_id: r.device_id.clone(),
                public_key: vec![1; 32],
                key_epoch: 1,
                details: None,
                seen_ms: r.received_ms,
                relay_id: "r".into(),
            })
            .collect(),
        reports: reports.clone(),
        ..Default::default()
    };
    store.write_batch(&b).await.unwrap();
    reports
}

/// Writes `reports`, then a newer report for each of their devices (received a year after
/// [`t0`], so never aged), so that none of `reports` is what a current state rests on and the
/// retention task may delete them.
pub(crate) async fn write_superseded(store: &Store, reports: Vec<ReportRow>) -> Vec<ReportRow> {
    let written = write(store, reports).await;
    let mut devices: Vec<&str> = written.iter().map(|r| r.device_id.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    let newer = devices
        .iter()
        .map(|d| report(d, t0() + 365 * DAY_MS, State::Compliant))
        .collect();
    write(store, newer).await;
    written
}

pub(crate) fn retention(store: &Store, clock: &ManualClock) -> Retention {
    let c: SharedClock = Arc::new(clock.clone());
    Retention::new(store.clone(), c)
}

fn no_stop() -> watch::Receiver<bool> {
    watch::channel(false).1
}

pub(crate) async fn run_now(r: &Retention) -> MaintenanceRun {
    match r.run(RunTrigger::Manual, &no_stop(), None).await.unwrap() {
        Outcome::Ran { run } => run,
        other => panic!("expected a run, got {other:?}"),
    }
}

pub(crate) async fn present(store: &Store, reports: &[ReportRow]) -> Vec<bool> {
    let mut out = vec![];
    for r in reports {
        out.push(store.report(&r.message_id).await.unwrap().is_some());
    }
    out
}

async fn set(store: &Store, change: SettingsChange) {
    let t = store.maintenance_task(DELETE_AGED_CM_DATA).await.unwrap();
    store
        .update_maintenance_task(&mprelay::store::Actor::cli(), &apply(&t, &change).unwrap())
        .await
        .unwrap();
}

/// Day partitions (PostgreSQL) around the old days the tests write, as a site server running
/// back then would have made them.
pub(crate) async fn partitions_back_then(store: &Store, now: i64) {
    for days in [95, 91, 89, 60, 31] {
        store.ensure_partitions(now - days * DAY_MS).await.unwrap();
    }
}

both_backends!(only_data_older_than_the_cutoff_goes);
async fn only_data_older_than_the_cutoff_goes(db: TestDb) {
    let store = db.store().await;
    let now = t0();
    let clock = ManualClock::new(now);
    partitions_back_then(&store, now).await;
    let cutoff = now - 90 * DAY_MS;
    let old = write(
        &store,
        vec![
            report("d1", now - 91 * DAY_MS, State::Compliant),
            report("d2", cutoff - MIN_MS, State::Compliant),
        ],
    )
    .await;
    let young = write(
        &store,
        vec![
            report("d1", now - 89 * DAY_MS, State::NonCompliant),
            report("d2", cutoff + MIN_MS, State::Compliant),
        ],
    )
    .await;
    // d3 changed state at 95, 92 and 91 days: two closed intervals end before the cutoff, the
    // open one stays with its current state.
    write(
        &store,
        vec![report("d3", now - 95 * DAY_MS, State::NonCompliant)],
    )
    .await;
    write(
        &store,
        vec![report("d3", now - 92 * DAY_MS, State::Compliant)],
    )
    .await;
    write(&store, vec![report("d3", now - 91 * DAY_MS, State::Error)]).await;
    let acceptance = WriteBatch {
        relay_id: "r".into(),
        spool_id: "sp".into(),
        through_seq: 1000,
        last_seq: 1000,
        acceptances: vec![AcceptanceRow {
            message_id: MessageId::new().to_string(),
            device_id: "d1".into(),
            user: "alice".into(),
            terms_version: 1,
            accepted_ms: now - 300 * DAY_MS,
            received_ms: now - 300 * DAY_MS,
            relay_id: "r".into(),
        }],
        ..Default::default()
    };
    store.write_batch(&acceptance).await.unwrap();

    let r = retention(&store, &clock);
    let run = run_now(&r).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    // The outcome is counted for /metrics too.
    assert_eq!(r.metrics.rows_deleted(), run.rows_deleted);
    assert_eq!(r.metrics.runs()["succeeded"], 1);
    let mut text = String::new();
    r.metrics.render(&mut text);
    assert!(
        text.contains("mprelay_site_retention_rows_deleted_total{table=\"setting_results\"} 16"),
        "{text}"
    );
    assert_eq!(run.cutoff_ms, cutoff);
    // d3's report of 91 days ago is what its current state rests on: it stays.
    assert_eq!(run.rows_deleted["compliance_reports"], 4);
    assert_eq!(run.rows_deleted["setting_results"], 16);
    assert_eq!(run.rows_deleted["compliance_history"], 2);
    if db.backend == Backend::Postgres {
        assert_eq!(run.rows_deleted["report_message_ids"], 4);
    }

    assert_eq!(present(&store, &old).await, [false, false]);
    assert_eq!(present(&store, &young).await, [true, true]);
    assert!(
        store
            .report_settings(&old[0].message_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .report_settings(&young[0].message_id)
            .await
            .unwrap()
            .len(),
        4
    );
    let h = store.history("d3", "b").await.unwrap();
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!((h[0].state.as_str(), h[0].ended_ms), ("error", None));
    let cur = store
        .current("d3", "b")
        .await
        .unwrap()
        .expect("current state stays");
    assert_eq!(cur.state, State::Error);
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.devices, counts.acceptances, counts.reports),
        (3, 1, 3)
    );
    assert_eq!(
        store.report_settings(&cur.message_id).await.unwrap().len(),
        4
    );
    if db.backend == Backend::Postgres {
        // The 92-day-old day went as a whole; the 91-day-old one holds d3's current report and
        // was deleted by rows around it, as was the day holding the cutoff.
        let day = |ms: i64| {
            jiff::Timestamp::from_millisecond(ms)
                .unwrap()
                .strftime("%Y%m%d")
                .to_string()
        };
        let n = |name: String| format!("SELECT count(*) FROM pg_class WHERE relname = '{name}'");
        assert_eq!(
            db.scalar(&n(format!("setting_results_d{}", day(now - 92 * DAY_MS))))
                .await,
            0
        );
        assert_eq!(
            db.scalar(&n(format!(
                "compliance_reports_d{}",
                day(now - 92 * DAY_MS)
            )))
            .await,
            0
        );
        assert_eq!(
            db.scalar(&n(format!(
                "compliance_reports_d{}",
                day(now - 91 * DAY_MS)
            )))
            .await,
            1
        );
        assert_eq!(
            db.scalar(&n(format!("compliance_reports_d{}", day(cutoff))))
                .await,
            1
        );
    }

    // A second run finds nothing more.
    let again = run_now(&retention(&store, &clock)).await;
    assert_eq!(
        (again.status, again.total_deleted),
        (RunStatus::Succeeded, 0)
    );
}

both_backends!(a_changed_age_takes_effect_on_the_next_run);
async fn a_changed_age_takes_effect_on_the_next_run(db: TestDb) {
    let store = db.store().await;
    let now = t0();
    let clock = ManualClock::new(now);
    partitions_back_then(&store, now).await;
    let reports = write_superseded(
        &store,
        [61, 31, 29]
            .iter()
            .map(|d| report(&format!("d{d}"), now - d * DAY_MS, State::Compliant))
            .collect(),
    )
    .await;
    let r = retention(&store, &clock);
    assert_eq!(run_now(&r).await.total_deleted, 0);
    assert_eq!(present(&store, &reports).await, [true, true, true]);
    set(
        &store,
        SettingsChange {
            delete_older_than_days: Some(60),
            ..Default::default()
        },
    )
    .await;
    run_now(&r).await;
    assert_eq!(present(&store, &reports).await, [false, true, true]);
    set(
        &store,
        SettingsChange {
            delete_older_than_days: Some(30),
            ..Default::default()
        },
    )
    .await;
    let run = run_now(&r).await;
    assert_eq!(run.cutoff_ms, now - 30 * DAY_MS);
    assert_eq!(present(&store, &reports).await, [false, false, true]);
}

both_backends!(a_disabled_task_does_nothing);
async fn a_disabled_task_does_nothing(db: TestDb) {
    let store = db.store().await;
    let now = t0();
    let clock = ManualClock::new(now);
    let reports = write_superseded(
        &store,
        vec![report("d", now - 200 * DAY_MS, State::Compliant)],
    )
    .await;
    set(
        &store,
        SettingsChange {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await;
    let r = retention(&store, &clock);
    assert_eq!(r.tick(&no_stop(), None).await.unwrap(), Outcome::Disabled);
    assert_eq!(
        r.run(RunTrigger::Manual, &no_stop(), None).await.unwrap(),
        Outcome::Disabled
    );
    assert_eq!(present(&store, &reports).await, [true]);
    assert!(
        store
            .maintenance_runs(DELETE_AGED_CM_DATA, 10)
            .await
            .unwrap()
            .is_empty()
    );
    set(
        &store,
        SettingsChange {
            enabled: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(
        r.tick(&no_stop(), None).await.unwrap(),
        Outcome::Ran { .. }
    ));
    assert_eq!(present(&store, &reports).await, [false]);
}

both_backends!(the_schedule_window_is_honoured);
async fn the_schedule_window_is_honoured(db: TestDb) {
    let store = db.store().await;
    let sat = t0() - 60 * MIN_MS; // Saturday 00:00 UTC
    let clock = ManualClock::new(sat - MIN_MS); // Friday 23:59
    let r = retention(&store, &clock);
    let first = write_superseded(
        &store,
        vec![report("d", sat - 100 * DAY_MS, State::Compliant)],
    )
    .await;
    match r.tick(&no_stop(), None).await.unwrap() {
        Outcome::NotInWindow { next_window } => {
            assert_eq!(next_window.unwrap().start_ms, sat)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(present(&store, &first).await, [true]);

    clock.set(sat);
    let Outcome::Ran { run } = r.tick(&no_stop(), None).await.unwrap() else {
        panic!("the window opened")
    };
    assert_eq!(
        (run.trigger.as_str(), run.status),
        ("schedule", RunStatus::Succeeded)
    );
    assert_eq!(present(&store, &first).await, [false]);

    // Once per window.
    let second = write_superseded(
        &store,
        vec![report("d", sat - 100 * DAY_MS, State::Compliant)],
    )
    .await;
    clock.set(sat + 4 * 60 * MIN_MS);
    assert!(matches!(
        r.tick(&no_stop(), None).await.unwrap(),
        Outcome::AlreadyRan { .. }
    ));
    // However many manual runs came after it in the window.
    for i in 0..60 {
        let id = store
            .start_maintenance_run(
                DELETE_AGED_CM_DATA,
                RunTrigger::Manual,
                sat + 60 * MIN_MS + i,
                sat - 90 * DAY_MS,
            )
            .await
            .unwrap();
        let done = RunStatus::Succeeded;
        store
            .update_maintenance_run(id, done, sat + 60 * MIN_MS + i, &Default::default(), None)
            .await
            .unwrap();
    }
    assert!(matches!(
        r.tick(&no_stop(), None).await.unwrap(),
        Outcome::AlreadyRan { .. }
    ));
    // The window closed at 05:00 (the site was down, say): the run waits for next Saturday.
    clock.set(sat + 5 * 60 * MIN_MS);
    match r.tick(&no_stop(), None).await.unwrap() {
        Outcome::NotInWindow { next_window } => {
            assert_eq!(next_window.unwrap().start_ms, sat + 7 * DAY_MS)
        }
        other => panic!("{other:?}"),
    }
    clock.set(sat + 6 * DAY_MS + 23 * 60 * MIN_MS);
    assert!(matches!(
        r.tick(&no_stop(), None).await.unwrap(),
        Outcome::NotInWindow { .. }
    ));
    assert_eq!(present(&store, &second).await, [true]);
    clock.set(sat + 7 * DAY_MS + 2 * 60 * MIN_MS);
    assert!(matches!(
        r.tick(&no_stop(), None).await.unwrap(),
        Outcome::Ran { .. }
    ));
    assert_eq!(present(&store, &second).await, [false]);

    // Other days, window and time zone: Sundays 02:00–03:00 in Paris (01:00–02:00 UTC).
    set(
        &store,
        SettingsChange {
            days: Some("sun".into()),
            window: Some("02:00-03:00".into()),
            time_zone: Some("Europe/Paris".into()),
            ..Default::default()
        },
    )
    .await;
    let sun = sat + 8 * DAY_MS;
    clock.set(sun + 30 * MIN_MS); // 01:30 Paris
    assert!(matches!(
        r.tick(&no_stop(), None).await.unwrap(),
        Outcome::NotInWindow { .. }
    ));
    clock.set(sun + 90 * MIN_MS); // 02:30 Paris
    assert!(matches!(
        r.tick(&no_stop(), None).await.unwrap(),
        Outcome::Ran { .. }
    ));
}

both_backends!(an_interrupted_run_resumes_cleanly);
async fn an_interrupted_run_resumes_cleanly(db: TestDb) {
    let store = db.store().await;
    let now = t0();
    let clock = ManualClock::new(now);
    let old = write_superseded(
        &store,
        (0..30)
            .map(|i| report(&format!("d{i}"), now - 100 * DAY_MS + i, State::Compliant))
            .collect(),
    )
    .await;
    let young = write(&store, vec![report("y", now - DAY_MS, State::Compliant)]).await;

    // The process dies after two batches: its record stays `running`.
    let mut r = retention(&store, &clock);
    r.batch_rows = 10;
    r.abandon_after_batches = Some(2);
    let dead = run_now(&r).await;
    assert_eq!(dead.status, RunStatus::Running);
    // Beside the old reports' 120 rows: the young report's 4 and the 120 of the reports that
    // superseded the old ones.
    let settings = store.counts().await.unwrap().settings;
    assert!(
        settings > 124 && settings < 244,
        "{settings} setting rows left"
    );

    // A shutdown stops a run between batches and records it as interrupted.
    let (_tx, stopped) = watch::channel(true);
    let Outcome::Ran { run } = r.run(RunTrigger::Manual, &stopped, None).await.unwrap() else {
        panic!()
    };
    assert_eq!(run.status, RunStatus::Interrupted);
    assert_eq!(run.error.as_deref(), Some("stopped by shutdown"));

    clock.advance(MIN_MS);
    r.abandon_after_batches = None;
    let next = run_now(&r).await;
    assert_eq!(next.status, RunStatus::Succeeded);
    assert_eq!(present(&store, &old).await, vec![false; old.len()]);
    assert_eq!(present(&store, &young).await, [true]);
    let runs = store
        .maintenance_runs(DELETE_AGED_CM_DATA, 10)
        .await
        .unwrap();
    let statuses: Vec<_> = runs.iter().map(|r| (r.run_id, r.status)).collect();
    assert!(
        statuses.contains(&(dead.run_id, RunStatus::Interrupted)),
        "{statuses:?}"
    );
    assert_eq!(store.counts().await.unwrap().settings, 124);
}

both_backends!(one_run_at_a_time_across_site_servers);
async fn one_run_at_a_time_across_site_servers(db: TestDb) {
    let (a, b) = (db.store().await, db.store().await);
    let now = t0();
    let clock = ManualClock::new(now);
    let old = write_superseded(&a, vec![report("d", now - 100 * DAY_MS, State::Compliant)]).await;
    let lock = a
        .try_lock_task(DELETE_AGED_CM_DATA, "server-a", now, LEASE)
        .await
        .unwrap()
        .expect("free");
    // The other site server's run is refused while the first holds the task.
    assert_eq!(
        retention(&b, &clock)
            .run(RunTrigger::Manual, &no_stop(), None)
            .await
            .unwrap(),
        Outcome::Busy
    );
    assert_eq!(present(&b, &old).await, [true]);
    a.release_task_lock(lock).await.unwrap();
    assert_eq!(
        run_now(&retention(&b, &clock)).await.rows_deleted["compliance_reports"],
        1
    );

    // A holder that died without releasing: on PostgreSQL its session ends with it; on SQLite
    // its lease expires.
    let dead = a
        .try_lock_task(DELETE_AGED_CM_DATA, "dead", now, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("free");
    drop(dead);
    if db.backend == Backend::Sqlite {
        assert!(
            b.try_lock_task(DELETE_AGED_CM_DATA, "b", now + 59_000, LEASE)
                .await
                .unwrap()
                .is_none()
        );
        let taken = b
            .try_lock_task(DELETE_AGED_CM_DATA, "b", now + 60_000, LEASE)
            .await
            .unwrap();
        assert!(taken.is_some());
        b.release_task_lock(taken.unwrap()).await.unwrap();
    }
}

both_backends!(concurrent_ingest_during_a_run_loses_nothing);
async fn concurrent_ingest_during_a_run_loses_nothing(db: TestDb) {
    let store = db.store().await;
    let now = t0();
    store.ensure_partitions(now).await.unwrap();
    let clock = ManualClock::new(now);
    for chunk in 0..10 {
        write_superseded(
            &store,
            (0..30)
                .map(|i| {
                    report(
                        &format!("o{chunk}-{i}"),
                        now - 120 * DAY_MS + i,
                        State::Compliant,
                    )
                })
                .collect(),
        )
        .await;
    }
    let mut r = retention(&store, &clock);
    r.batch_rows = 20;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut all = vec![];
            for k in 0..40 {
                let batch: Vec<ReportRow> = (0..5)
                    .map(|i| {
                        report(
                            &format!("n{k}-{i}"),
                            now - 60 * MIN_MS + k,
                            State::Compliant,
                        )
                    })
                    .collect();
                all.extend(write(&store, batch).await);
            }
            all
        })
    };
    let run = run_now(&r).await;
    let fresh = writer.await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.rows_deleted["compliance_reports"], 300);
    assert_eq!(present(&store, &fresh).await, vec![true; fresh.len()]);
    let counts = store.counts().await.unwrap();
    // The 200 written during the run, and the 300 newer reports the old ones were superseded by.
    assert_eq!((counts.reports, counts.settings), (500, 2000));
}

#[test]
fn the_cli_shows_sets_and_runs_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("site.db").display());
    let mprelay = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mprelay"))
            .arg("maintenance")
            .args(args)
            .args(["--database", &url])
            .env_remove("MPRELAY_LOG")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // Showing reads only: it does not make the database the site server has not made yet.
    let (code, _, err) = mprelay(&["show"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("opening the site database"), "{err}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        mprelay::store::Store::connect(&url)
            .await
            .unwrap()
            .close()
            .await
    });
    let (code, out, _) = mprelay(&["show"]);
    assert_eq!(code, 0);
    assert!(out.contains("delete older than days: 90"), "{out}");
    assert!(out.contains("00:00-05:00 UTC"), "{out}");

    let (code, out, err) = mprelay(&[
        "set",
        "--delete-older-than-days",
        "30",
        "--days",
        "sat,sun",
        "--window",
        "01:00-04:30",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("delete older than days: 30"), "{out}");
    assert!(out.contains("sat,sun"), "{out}");
    for (args, says) in [
        (&["set", "--delete-older-than-days", "0"][..], "1 to 3650"),
        (
            &["set", "--window", "05:00-01:00"][..],
            "window \"05:00-01:00\"",
        ),
        (&["set", "--days", "caturday"][..], "days of week"),
        (&["set", "--time-zone", "Nowhere/Land"][..], "time zone"),
        (&["set"][..], "nothing to change"),
    ] {
        let (code, _, err) = mprelay(args);
        assert_eq!(code, 64, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, out, err) = mprelay(&["run", "--now"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("succeeded"), "{out}");
    let (code, out, _) = mprelay(&["show"]);
    assert_eq!(code, 0);
    assert!(out.contains("manual    succeeded"), "{out}");

    let (code, _, _) = mprelay(&["set", "--disable"]);
    assert_eq!(code, 0);
    let (code, _, err) = mprelay(&["run", "--now"]);
    assert_eq!(code, 1);
    assert!(err.contains("disabled"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_sets_and_runs_the_task() {
    let sys = system_on(None).await;
    let old = write_superseded(
        &sys.store,
        vec![report(
            "d",
            mprelay::clock::now_ms() - 100 * DAY_MS,
            State::Compliant,
        )],
    )
    .await;
    let c = admin_client(&sys);
    let token = sys.lb.admin_token().unwrap();
    let auth = format!("Bearer {token}");
    let send = |method: Method, path: &'static str, body: Value| {
        let c = &c;
        let auth = auth.clone();
        async move {
            let resp = c
                .request(
                    method,
                    path,
                    Some(bytes::Bytes::from(body.to_string())),
                    &[
                        ("authorization", auth.as_str()),
                        ("content-type", "application/json"),
                    ],
                )
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&resp.body).unwrap();
            (resp.status.as_u16(), v)
        }
    };
    let (status, v) = get_json(&c, "/api/v1/maintenance", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(v["task"]["delete_older_than_days"], 90);
    assert!(v["next_window"]["start_ms"].as_i64().is_some(), "{v}");

    let (status, v) = send(
        Method::PUT,
        "/api/v1/maintenance",
        json!({"window": "03:00-01:00"}),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("malformed")),
        "{v}"
    );
    let (status, v) = send(
        Method::PUT,
        "/api/v1/maintenance",
        json!({"delete_older_than_days": 45, "days": "sun", "time_zone": "Europe/Paris"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["task"]["days_of_week"], json!(["sun"]));
    assert_eq!(sys.store.retention_days().await.unwrap(), 45);

    let (status, v) = send(
        Method::POST,
        "/api/v1/maintenance/run",
        json!({"now": true}),
    )
    .await;
    assert_eq!(
        (status, v["outcome"].as_str()),
        (202, Some("started")),
        "{v}"
    );
    let run_id = v["run_id"].as_i64().unwrap();
    crate::helpers::wait_until(Duration::from_secs(20), || async {
        let (_, runs) = get_json(&c, "/api/v1/maintenance/runs?limit=5", Some(&token)).await;
        runs[0]["run_id"] == run_id && runs[0]["status"] == "succeeded"
    })
    .await
    .expect("the run ends");
    assert_eq!(present(&sys.store, &old).await, [false]);
    let (status, _) = get_json(&c, "/api/v1/maintenance/runs?limit=0", Some(&token)).await;
    assert_eq!(status, 400);
}

#[test]
fn the_retention_bench_deletes_the_old_half_and_keeps_every_young_row() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ret.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mprelay"))
        .args(["bench", "retention", "--database", &url, "--rows", "20000"])
        .args(["--baseline-secs", "0.3", "--writer-interval-ms", "20"])
        .env_remove("MPRELAY_LOG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["bench"], "retention");
    assert_eq!(v["lost"], 0);
    // 180 days filled evenly, 90 kept: about half goes.
    let deleted = v["rows_deleted"].as_u64().unwrap();
    assert!((9_000..=11_000).contains(&deleted), "{v}");
    for f in ["rows_deleted_per_s", "writer_p99_ms_before"] {
        assert!(v[f].as_f64().is_some_and(|x| x > 0.0), "{f}: {v}");
    }
}
