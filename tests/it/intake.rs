//! The intake path end to end: agent → relay → spool → site server → site database.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use mprelay::envelope;
use mprelay::net::HttpVersion;
use mprelay::proto::SubmissionReceipt;
use prost::Message;

use crate::helpers::{RawDevice, RefusingProxy, TestSystem, describe};

/// A report of `settings` settings whose observed values before and after are 4 KiB each.
pub(crate) fn report_with_long_values(settings: usize) -> mprelay::proto::ComplianceReport {
    let mut report = mprelay::sample::report_with_settings(settings, 3);
    for s in report
        .configuration_items
        .iter_mut()
        .flat_map(|c| c.settings.iter_mut())
    {
        s.observed_before = Some("b".repeat(4096));
        s.observed_after = Some("a".repeat(4096));
    }
    report
}

/// Queues `report`, sends it, and checks it was accepted and stored with every setting, in its
/// state, and its observed values shortened to 1 KiB or less.
async fn sent_and_stored_shortened(
    sys: &TestSystem,
    name: &str,
    report: mprelay::proto::ComplianceReport,
) {
    let agent = sys.agent(name).await;
    let id = agent.queue_report(report.clone()).unwrap();
    let out = agent.flush().await.unwrap();
    assert_eq!((out.accepted, out.dropped, out.remaining), (1, 0, 0));
    sys.wait_for_reports(1).await;
    let settings = sys.store.report_settings(&id.to_string()).await.unwrap();
    let sent: Vec<_> = report
        .configuration_items
        .iter()
        .flat_map(|c| &c.settings)
        .collect();
    assert_eq!(settings.len(), sent.len());
    for (got, want) in settings.iter().zip(sent) {
        assert_eq!(got.setting_id, want.setting_id);
        let state = mprelay::compliance::State::from(
            mprelay::proto::ComplianceState::try_from(want.state).unwrap(),
        );
        assert_eq!(got.state, state.as_str());
        for text in [&got.observed_before, &got.observed_after] {
            let text = text.as_deref().unwrap();
            assert!(text.ends_with('…') && text.len() <= 1024, "{}", text.len());
        }
    }
}

/// A report larger than the relay's body limit (a big baseline with long observed values) is
/// stored with every setting's state, its texts shortened, instead of refused and dropped.
#[tokio::test]
async fn an_oversized_report_is_stored_shortened_not_dropped() {
    let sys = TestSystem::start().await;
    let report = report_with_long_values(300);
    assert!(report.encoded_len() > 2 * 1024 * 1024);
    sent_and_stored_shortened(&sys, "big", report).await;
}

/// A relay whose body limit is below the agent's budget refuses a big report as too large;
/// the agent shortens its texts further and sends it again, instead of dropping it.
#[tokio::test]
async fn a_relay_with_a_lower_body_limit_gets_the_report_shortened_further() {
    let sys = TestSystem::start_with(|o| o.agent_limits.max_body_bytes = 64 * 1024).await;
    let report = report_with_long_values(35);
    assert!(report.encoded_len() > 4 * 64 * 1024);
    sent_and_stored_shortened(&sys, "small-limit", report).await;
}

/// An agent that asked the relay for its policy knows the relay's body limit and fits its
/// reports under it before sending: no round trip is refused as too large.
#[tokio::test]
async fn an_agent_fits_its_reports_under_the_limit_its_relay_states() {
    let limit = 64 * 1024;
    let sys = TestSystem::start_with(move |o| o.agent_limits.max_body_bytes = limit).await;
    let agent = sys.agent("told").await;
    agent.fetch_policy(0, "").await.unwrap();
    assert!(agent.report_budget() < limit);
    let report = report_with_long_values(35);
    assert!(report.encoded_len() > 4 * limit);
    let id = agent.queue_report(report.clone()).unwrap();
    let out = agent.flush().await.unwrap();
    assert_eq!((out.accepted, out.dropped, out.remaining), (1, 0, 0));
    assert_eq!(sys.relay().metrics().rejected("too_large"), 0);
    sys.wait_for_reports(1).await;
    let settings = sys.store.report_settings(&id.to_string()).await.unwrap();
    assert_eq!(settings.len(), 35);
}

/// Behind a proxy whose body limit is below the agent's budget, a big report gets the proxy's
/// plain 413 page: the agent shortens the report and sends it again, and the reports queued
/// after it are delivered too, instead of all waiting behind it for good.
#[tokio::test]
async fn a_proxy_s_own_413_gets_the_report_shortened_not_retried_forever() {
    let sys = TestSystem::start().await;
    let proxy = RefusingProxy::start(&sys, 64 * 1024, 413).await;
    let agent = proxy.agent(&sys, "proxied").await;
    let big = agent.queue_report(report_with_long_values(35)).unwrap();
    let small = agent
        .queue_report(mprelay::sample::report_with_settings(35, 4))
        .unwrap();
    let out = agent.flush().await.unwrap();
    assert_eq!((out.accepted, out.dropped, out.remaining), (2, 0, 0));
    assert!(proxy.refused() >= 1);
    sys.wait_for_reports(2).await;
    for id in [big, small] {
        let settings = sys.store.report_settings(&id.to_string()).await.unwrap();
        assert_eq!(settings.len(), 35);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn report_reaches_the_site_database_with_the_values_sent() {
    let sys = TestSystem::start().await;
    let agent = sys.agent("a1").await;
    let report = mprelay::agent::report_json::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/report.json"
    )))
    .unwrap();
    let id = agent.queue_report(report.clone()).unwrap();
    let out = agent.flush().await.unwrap();
    assert_eq!((out.accepted, out.remaining), (1, 0));
    sys.wait_for_reports(1).await;

    let stored = sys
        .store
        .report(&id.to_string())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.device_id, agent.device_id().hex());
    assert_eq!(stored.baseline_id, "ssh-hardening");
    assert_eq!(stored.relay_id, "test-relay");
    // One non-compliant (critical), one remediated, one compliant, one error.
    assert_eq!(stored.state, "non_compliant");
    assert_eq!(stored.max_severity, "critical");
    assert_eq!(
        (stored.n_compliant, stored.n_non_compliant, stored.n_error),
        (2, 1, 1)
    );
    let settings = sys.store.report_settings(&id.to_string()).await.unwrap();
    let sent: Vec<_> = report.configuration_items[0].settings.iter().collect();
    assert_eq!(settings.len(), sent.len());
    for (got, want) in settings.iter().zip(sent) {
        assert_eq!(got.setting_id, want.setting_id);
        assert_eq!(got.expected, want.expected);
        assert_eq!(got.observed_before, want.observed_before);
        assert_eq!(got.observed_after, want.observed_after);
        assert_eq!(got.remediated, want.remediated);
        assert_eq!(got.error, want.error);
    }
    assert_eq!(settings[1].state, "compliant");
    assert_eq!(settings[1].observed_after.as_deref(), Some("no"));

    // The stored signature proves the device produced exactly the stored bytes.
    let device = sys
        .store
        .device(&agent.device_id().hex())
        .await
        .unwrap()
        .expect("device");
    assert_eq!(device.hostname, mprelay::agent::hostname());
    assert!(device.enrolled_ms.is_some());
    let current = sys
        .store
        .current(&agent.device_id().hex(), "ssh-hardening")
        .await
        .unwrap()
        .expect("current state");
    assert_eq!(current.message_id, id.to_string());
    let history = sys
        .store
        .history(&agent.device_id().hex(), "ssh-hardening")
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].state, "non_compliant");
    assert_eq!(history[0].ended_ms, None);
    assert!(agent.queue().is_empty().unwrap());
}

#[tokio::test]
async fn stored_signature_verifies_against_the_device_key() {
    let sys = TestSystem::start().await;
    let client = sys.agent_client(HttpVersion::Auto);
    let dev = RawDevice::enroll(&client, &sys.enrollment_secret()).await;
    let (id, body) = dev.sealed_report(3);
    let resp = client
        .post("/v1/submissions", Bytes::from(body))
        .await
        .unwrap();
    assert_eq!(resp.status, 202, "{}", describe(&resp));
    sys.wait_for_reports(1).await;
    let r = sys.store.report(&id).await.unwrap().unwrap();
    envelope::verify_signature(&dev.signer.public_key(), &r.signed_bytes, &r.signature)
        .expect("signature over the stored bytes verifies");
    let mut tampered = r.signed_bytes.clone();
    tampered[5] ^= 1;
    assert!(envelope::verify_signature(&dev.signer.public_key(), &tampered, &r.signature).is_err());
}

#[tokio::test]
async fn a_resend_is_200_with_the_same_receipt_and_no_duplicate_row() {
    let sys = TestSystem::start().await;
    let client = sys.agent_client(HttpVersion::Auto);
    let dev = RawDevice::enroll(&client, &sys.enrollment_secret()).await;
    let id = mprelay::ids::MessageId::new().to_string();
    let sub = dev.submission(&id, mprelay::clock::now_ms(), mprelay::sample::report(1, 9));

    let first = client
        .post(
            "/v1/submissions",
            Bytes::from(dev.seal(&sub).encode_to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(first.status, 202, "{}", describe(&first));
    let r1 = SubmissionReceipt::decode(first.body.as_ref()).unwrap();
    assert_eq!(r1.message_id, id);
    assert_eq!(r1.relay_id, "test-relay");

    // Sealed again (new nonce), as an agent does on every attempt.
    let again = client
        .post(
            "/v1/submissions",
            Bytes::from(dev.seal(&sub).encode_to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{}", describe(&again));
    assert_eq!(SubmissionReceipt::decode(again.body.as_ref()).unwrap(), r1);

    sys.wait_for_reports(1).await;
    // And after the site has it and the relay has dropped the payload: still 200, same receipt.
    crate::helpers::wait_until(Duration::from_secs(10), || async {
        sys.relay()
            .spool
            .stats()
            .acked_through
            .load(Ordering::SeqCst)
            >= 2
    })
    .await
    .expect("site acknowledged");
    let late = client
        .post(
            "/v1/submissions",
            Bytes::from(dev.seal(&sub).encode_to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(late.status, 200);
    assert_eq!(SubmissionReceipt::decode(late.body.as_ref()).unwrap(), r1);
    assert_eq!(sys.store.counts().await.unwrap().reports, 1);
    assert_eq!(sys.relay().metrics().duplicates.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn with_the_site_down_reports_are_accepted_and_arrive_when_it_starts() {
    let mut sys = TestSystem::relay_only(|_| {}).await;
    let agent = sys.agent("a1").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            agent
                .queue_report(mprelay::sample::report(i % 2, i as u64))
                .unwrap(),
        );
    }
    let out = agent.flush().await.unwrap();
    assert_eq!(out.accepted, 20);
    assert_eq!(sys.store.counts().await.unwrap().reports, 0);

    // The relay restarts in between: the spool keeps everything.
    sys.stop_relay().await;
    sys.start_relay().await;
    sys.start_site();
    sys.wait_for_reports(20).await;
    let mut stored = sys.store.report_message_ids().await.unwrap();
    stored.sort();
    let mut want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    want.sort();
    assert_eq!(stored, want);
}

#[tokio::test]
async fn site_restart_resumes_without_duplicates() {
    let mut sys = TestSystem::start().await;
    let agent = sys.agent("a1").await;
    for i in 0..10 {
        agent.queue_report(mprelay::sample::report(0, i)).unwrap();
    }
    agent.flush().await.unwrap();
    sys.wait_for_reports(10).await;
    sys.stop_site().await;
    for i in 10..25 {
        agent.queue_report(mprelay::sample::report(0, i)).unwrap();
    }
    agent.flush().await.unwrap();
    sys.start_site();
    sys.wait_for_reports(25).await;
    let c = sys.store.counts().await.unwrap();
    assert_eq!(c.reports, 25);
    assert_eq!(c.devices, 1);
    let cursor = sys.store.relay_cursor("test-relay").await.unwrap().unwrap();
    assert_eq!(cursor.spool_id, sys.relay().spool.spool_id());
    assert!(cursor.through_seq >= 26, "{cursor:?}"); // 25 reports + 1 enrollment
}

#[tokio::test]
async fn http1_and_http2_are_both_served() {
    let sys = TestSystem::start().await;
    for v in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = sys.agent_client(v);
        let dev = RawDevice::enroll(&client, &sys.enrollment_secret()).await;
        for seed in 0..3 {
            let (_, body) = dev.sealed_report(seed);
            let resp = client
                .post("/v1/submissions", Bytes::from(body))
                .await
                .unwrap();
            assert_eq!(resp.status, 202, "{v:?}: {}", describe(&resp));
        }
    }
    sys.wait_for_reports(6).await;
}

#[tokio::test]
async fn enrolling_the_same_key_again_gives_the_same_identity() {
    let sys = TestSystem::start().await;
    let client = sys.agent_client(HttpVersion::Auto);
    let (signer, _) = mprelay::envelope::DeviceSigner::generate();
    let enroll = || {
        let req = mprelay::proto::EnrollRequest {
            enrollment_secret: sys.enrollment_secret(),
            hostname: "h".into(),
            device_public_key: signer.public_key().as_bytes().to_vec(),
            ..Default::default()
        };
        let client = &client;
        async move {
            let r = client
                .post("/v1/enroll", Bytes::from(req.encode_to_vec()))
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", describe(&r));
            mprelay::proto::EnrollResponse::decode(r.body.as_ref()).unwrap()
        }
    };
    let a = enroll().await;
    let b = enroll().await;
    assert_eq!(a, b);
    assert_eq!(a.device_id, signer.device_id().hex());
    // Spooled once: the repeat is the same enrollment record.
    assert_eq!(sys.spooled(), 1);
}

#[tokio::test]
async fn an_agent_keeps_its_queue_across_restarts_while_the_relay_is_down() {
    let mut sys = TestSystem::start().await;
    let agent = sys.agent("a1").await;
    let dir = sys.dir.path().join("agents").join("a1");
    sys.stop_relay().await;
    let id = agent.queue_report(mprelay::sample::report(0, 1)).unwrap();
    let out = agent.flush().await.unwrap();
    assert_eq!(out.remaining, 1);
    assert!(out.retry_after.is_some());
    drop(agent);

    // A new agent process over the same state directory sends it once the relay is back.
    sys.start_relay().await;
    sys.stop_site().await;
    sys.start_site();
    let opts = sys.lb.agent_options(sys.relay(), &dir).unwrap();
    let agent = mprelay::agent::Agent::open(opts).await.unwrap();
    assert_eq!(agent.queue().len().unwrap(), 1);
    let out = agent.flush().await.unwrap();
    assert_eq!(out.accepted, 1);
    sys.wait_for_reports(1).await;
    assert!(sys.store.report(&id.to_string()).await.unwrap().is_some());
}

#[tokio::test]
async fn failed_writes_are_retried_without_losing_or_doubling_a_report() {
    use sqlx::Connection;

    let mut sys = TestSystem::relay_only(|_| {}).await;
    let agent = sys.agent("a1").await;
    for i in 0..21 {
        agent.queue_report(mprelay::sample::report(0, i)).unwrap();
    }
    agent.flush().await.unwrap();

    // Every write fails at its last statement until the trigger goes.
    let db = format!("sqlite://{}", sys.dir.path().join("site.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER poison BEFORE INSERT ON relay_cursors \
         BEGIN SELECT RAISE(ABORT, 'injected'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // Small batches, so that several are fetched ahead of writes that fail.
    let pull = mprelay::site::PullOptions {
        max_records: 4,
        ..crate::helpers::fast_pull()
    };
    let site = sys
        .lb
        .start_site(
            sys.store.clone(),
            &[sys.relay()],
            pull,
            mprelay::clock::system(),
        )
        .unwrap();
    crate::helpers::wait_until(Duration::from_secs(10), || async {
        site.relays[0].errors.load(Ordering::Relaxed) >= 3
    })
    .await
    .expect("writes fail while the trigger is there");
    assert_eq!(sys.store.counts().await.unwrap().reports, 0);

    sqlx::raw_sql("DROP TRIGGER poison")
        .execute(&mut conn)
        .await
        .unwrap();
    sys.site = Some(site);
    sys.wait_for_reports(21).await;
    let ids = sys.store.report_message_ids().await.unwrap();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (21, 21));
    // Everything was acknowledged: the relay's spool drains.
    crate::helpers::wait_until(Duration::from_secs(10), || async {
        sys.relay()
            .spool
            .stats()
            .pending_records
            .load(Ordering::Relaxed)
            == 0
    })
    .await
    .expect("the relay was told everything is stored");
}
