//! Events the site raises from what it stores: a non-compliant setting of severity
//! `critical_with_event` is logged and counted once per stored report, never again for the same
//! report pulled twice.

use bytes::Bytes;
use mprelay::compliance::{Severity, State};
use mprelay::net::HttpVersion;
use mprelay::proto::submission::Body;
use mprelay::store::CriticalEvent;

use crate::compliance::{admin_client, system_on};
use crate::db::TestDb;
use crate::helpers::{RawDevice, describe};
use crate::store::{batch, report};

crate::both_backends!(critical_with_event_settings_raise_one_event_per_stored_report);
async fn critical_with_event_settings_raise_one_event_per_stored_report(db: TestDb) {
    let store = db.store().await;
    let mut r = report("dev-1", "b1", 1_000_000, State::NonCompliant);
    r.settings[3].severity = Severity::CriticalWithEvent;
    // Compliant at the same severity: no event.
    r.settings[0].severity = Severity::CriticalWithEvent;
    let quiet = report("dev-2", "b1", 1_000_000, State::NonCompliant);
    let b = batch("relay-a", 10, vec![r.clone(), quiet]);
    let out = store.write_batch(&b).await.unwrap();
    assert_eq!(
        out.critical_events,
        vec![CriticalEvent {
            message_id: r.message_id.clone(),
            device_id: "dev-1".into(),
            baseline_id: "b1".into(),
            ci_id: r.settings[3].ci_id.clone(),
            ci_revision: 2,
            setting_id: "setting-3".into(),
        }]
    );
    // The same batch pulled again (the site died before its acknowledgement): no new event.
    let again = store.write_batch(&b).await.unwrap();
    assert_eq!(again.reports_duplicate, 2);
    assert!(again.critical_events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_counts_critical_events_in_its_metrics() {
    let sys = system_on(None).await;
    let client = sys.agent_client(HttpVersion::Http1);
    let dev = RawDevice::enroll(&client, &sys.enrollment_secret()).await;
    let mut expected = 0;
    for seed in 0..6 {
        let mut rep = mprelay::sample::report(0, seed);
        for s in rep
            .configuration_items
            .iter_mut()
            .flat_map(|c| &mut c.settings)
        {
            s.severity = mprelay::proto::Severity::CriticalWithEvent as i32;
        }
        let sub = dev.submission(
            &mprelay::ids::MessageId::new().to_string(),
            mprelay::clock::now_ms(),
            rep,
        );
        if let Some(Body::ComplianceReport(rep)) = &sub.body {
            expected += rep
                .configuration_items
                .iter()
                .flat_map(|c| &c.settings)
                .filter(|s| {
                    s.severity == mprelay::proto::Severity::CriticalWithEvent as i32
                        && s.state == mprelay::proto::ComplianceState::NonCompliant as i32
                })
                .count();
        }
        let body = prost::Message::encode_to_vec(&dev.seal(&sub));
        let resp = client
            .post("/v1/submissions", Bytes::from(body))
            .await
            .unwrap();
        assert_eq!(resp.status, 202, "{}", describe(&resp));
    }
    assert!(
        expected > 0,
        "the sample reports hold critical-with-event failures"
    );
    sys.wait_for_reports(6).await;
    let admin = admin_client(&sys);
    let token = sys.lb.admin_token().unwrap();
    let auth = format!("Bearer {token}");
    let resp = admin
        .request(
            http::Method::GET,
            "/metrics",
            None,
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    let text = String::from_utf8(resp.body.to_vec()).unwrap();
    let m = crate::metrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        m.value("mprelay_site_critical_events_total", &[]),
        expected as f64
    );
}

/// A retention run from the command line (another process) shows in the site's metrics, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_run_from_the_command_line_is_counted_by_the_site() {
    use crate::compliance_cli::{run, stderr};
    let sys = system_on(None).await;
    let now = mprelay::clock::now_ms();
    crate::retention::write_superseded(
        &sys.store,
        vec![crate::retention::report(
            "old",
            now - 200 * mprelay::clock::DAY_MS,
            State::Compliant,
        )],
    )
    .await;
    let admin = admin_client(&sys);
    let auth = format!("Bearer {}", sys.lb.admin_token().unwrap());
    let scrape = || {
        let (admin, auth) = (&admin, auth.clone());
        async move {
            let resp = admin
                .request(
                    http::Method::GET,
                    "/metrics",
                    None,
                    &[("authorization", &auth)],
                )
                .await
                .unwrap();
            let text = String::from_utf8(resp.body.to_vec()).unwrap();
            crate::metrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
        }
    };
    let before = scrape().await;
    assert!(
        !before
            .samples
            .iter()
            .any(|s| s.name == "mprelay_site_retention_runs_total"),
        "no run yet"
    );

    let url = format!("sqlite://{}", sys.dir.path().join("site.db").display());
    let o = run(
        &["maintenance", "run", "--now", "--database", &url],
        sys.dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for _ in 0..2 {
        let m = scrape().await;
        assert_eq!(
            m.value(
                "mprelay_site_retention_runs_total",
                &[("outcome", "succeeded")]
            ),
            1.0
        );
        assert_eq!(
            m.value(
                "mprelay_site_retention_rows_deleted_total",
                &[("table", "compliance_reports")]
            ),
            1.0
        );
    }
}
