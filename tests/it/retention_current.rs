//! Retention never takes away what a device's current state rests on: the report behind each
//! current state (and its setting rows) survives however old it is, so a device silent for
//! longer than the retention age keeps its failing settings and the per-setting counts of its
//! baseline cover every device; once the device reports again, the old report goes.

use mprelay::clock::{DAY_MS, ManualClock};
use mprelay::compliance::State;
use mprelay::store::RunStatus;

use crate::db::{Backend, TestDb};
use crate::retention::{partitions_back_then, present, report, retention, run_now, t0, write};

crate::both_backends!(the_report_behind_current_state_survives_retention);
async fn the_report_behind_current_state_survives_retention(db: TestDb) {
    let store = db.store().await;
    let now = t0();
    let clock = ManualClock::new(now);
    partitions_back_then(&store, now).await;
    // silent: non-compliant, last heard of 95 days ago; chatty: an old report and a young one.
    let silent = write(
        &store,
        vec![report("silent", now - 95 * DAY_MS, State::NonCompliant)],
    )
    .await;
    let chatty_old = write(
        &store,
        vec![report("chatty", now - 95 * DAY_MS, State::NonCompliant)],
    )
    .await;
    write(
        &store,
        vec![report("chatty", now - 10 * DAY_MS, State::Compliant)],
    )
    .await;

    let run = run_now(&retention(&store, &clock)).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.rows_deleted["compliance_reports"], 1, "{run:?}");
    assert_eq!(present(&store, &silent).await, [true]);
    assert_eq!(present(&store, &chatty_old).await, [false]);

    let d = store.device_compliance("silent").await.unwrap().unwrap();
    assert_eq!(d.baselines[0].current.state, "non_compliant");
    assert_eq!(
        d.baselines[0].settings.len(),
        4,
        "its settings are still there"
    );
    let failing: Vec<_> = d.baselines[0]
        .settings
        .iter()
        .filter(|s| s.state == "non_compliant")
        .map(|s| s.setting_id.as_str())
        .collect();
    assert_eq!(failing, ["s3"]);
    let detail = store.baseline_detail("b").await.unwrap().unwrap();
    let s3 = detail
        .settings
        .iter()
        .find(|s| s.setting_id == "s3")
        .unwrap();
    assert_eq!(
        (s3.compliant, s3.non_compliant),
        (1, 1),
        "the per-setting counts cover both devices: {:?}",
        detail.settings
    );

    // The silent device reports again: its old report is no longer current and goes.
    write(
        &store,
        vec![report("silent", now - DAY_MS, State::Compliant)],
    )
    .await;
    let run = run_now(&retention(&store, &clock)).await;
    assert_eq!(run.rows_deleted["compliance_reports"], 1, "{run:?}");
    assert_eq!(present(&store, &silent).await, [false]);
    if db.backend == Backend::Postgres {
        let day = jiff::Timestamp::from_millisecond(now - 95 * DAY_MS)
            .unwrap()
            .strftime("%Y%m%d")
            .to_string();
        let left = db
            .scalar(&format!(
                "SELECT count(*) FROM pg_class WHERE relname IN \
                 ('compliance_reports_d{day}', 'setting_results_d{day}')"
            ))
            .await;
        assert_eq!(left, 0, "the old day now goes whole");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_says_when_a_state_is_older_than_the_retention_age() {
    let sys = crate::compliance::system_on(None).await;
    let now = mprelay::clock::now_ms();
    write(
        &sys.store,
        vec![
            report("quiet", now - 120 * DAY_MS, State::NonCompliant),
            report("recent", now - DAY_MS, State::Compliant),
        ],
    )
    .await;
    run_now(&retention(&sys.store, &ManualClock::new(now))).await;
    let c = crate::compliance::admin_client(&sys);
    let auth = format!("Bearer {}", sys.lb.admin_token().unwrap());
    let page = |path: String| {
        let (c, auth) = (&c, auth.clone());
        async move {
            let r = c
                .request(http::Method::GET, &path, None, &[("authorization", &auth)])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{path}");
            String::from_utf8(r.body.to_vec()).unwrap()
        }
    };
    let quiet = page("/console/devices/quiet".into()).await;
    assert!(quiet.contains("data-aged-baseline=\"b\""), "{quiet}");
    assert!(
        quiet.contains("longer ago than the retention age (90 days)"),
        "{quiet}"
    );
    assert!(
        quiet.contains("data-setting=\"s3\""),
        "its failing setting is still shown: {quiet}"
    );
    let recent = page("/console/devices/recent".into()).await;
    assert!(!recent.contains("data-aged-baseline"), "{recent}");
}
