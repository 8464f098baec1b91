//! Every row of the error table (DESIGN section 3), sent over real TLS: the status, the code,
//! `Retry-After` where the table lists it, and nothing spooled.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use mprelay::clock::{self, DAY_MS};
use mprelay::envelope::{self, DeviceSigner};
use mprelay::ids::{KeyEpoch, MessageId};
use mprelay::net::{ClientResponse, HttpClient, HttpVersion};
use mprelay::proto::{EnrollRequest, PolicySnapshot, SignedSubmission};
use prost::Message;

use crate::helpers::{RawDevice, TestSystem, code, describe};

/// Sends `body` to `path` and checks status, code and that the spool did not grow.
async fn refused(
    sys: &TestSystem,
    client: &HttpClient,
    path: &str,
    body: Vec<u8>,
    status: u16,
    want: &str,
) -> ClientResponse {
    let before = sys.spooled();
    let resp = client.post(path, Bytes::from(body)).await.unwrap();
    assert_eq!(
        resp.status.as_u16(),
        status,
        "{want}: got {}",
        describe(&resp)
    );
    assert_eq!(code(&resp), want);
    assert_eq!(sys.spooled(), before, "{want}: something was spooled");
    let retry = resp.headers.get(http::header::RETRY_AFTER);
    assert_eq!(
        retry.is_some(),
        status == 429 || status == 503,
        "{want}: Retry-After"
    );
    resp
}

async fn setup() -> (TestSystem, HttpClient, RawDevice) {
    let sys = TestSystem::relay_only(|_| {}).await;
    let client = sys.agent_client(HttpVersion::Auto);
    let dev = RawDevice::enroll(&client, &sys.enrollment_secret()).await;
    (sys, client, dev)
}

#[tokio::test]
async fn malformed_bodies() {
    let (sys, client, _) = setup().await;
    for body in [
        vec![],
        b"\xff\xff\xff\xff".to_vec(),
        b"GET / HTTP/1.1".to_vec(),
    ] {
        refused(&sys, &client, "/v1/submissions", body, 400, "malformed").await;
    }
    refused(
        &sys,
        &client,
        "/v1/enroll",
        b"\xff\x01".to_vec(),
        400,
        "malformed",
    )
    .await;
}

#[tokio::test]
async fn unsupported_version() {
    let (sys, client, dev) = setup().await;
    let (_, body) = dev.sealed_report(1);
    let mut s = mprelay::proto::SealedSubmission::decode(body.as_slice()).unwrap();
    s.envelope_version = 2;
    refused(
        &sys,
        &client,
        "/v1/submissions",
        s.encode_to_vec(),
        400,
        "unsupported_version",
    )
    .await;
}

#[tokio::test]
async fn invalid_report() {
    let (sys, client, dev) = setup().await;
    let mut report = mprelay::sample::report(0, 1);
    report.baseline_id.clear();
    let sub = dev.submission(&MessageId::new().to_string(), clock::now_ms(), report);
    refused(
        &sys,
        &client,
        "/v1/submissions",
        dev.seal(&sub).encode_to_vec(),
        400,
        "invalid_report",
    )
    .await;

    let mut sub = dev.submission(
        &MessageId::new().to_string(),
        clock::now_ms(),
        mprelay::sample::report(0, 1),
    );
    sub.message_id = "not-a-uuid".into();
    refused(
        &sys,
        &client,
        "/v1/submissions",
        dev.seal(&sub).encode_to_vec(),
        400,
        "invalid_report",
    )
    .await;

    let mut sub = dev.submission(
        &MessageId::new().to_string(),
        clock::now_ms(),
        mprelay::sample::report(0, 1),
    );
    sub.body = None;
    refused(
        &sys,
        &client,
        "/v1/submissions",
        dev.seal(&sub).encode_to_vec(),
        400,
        "invalid_report",
    )
    .await;

    // A NUL character could not be stored in the site database.
    let mut report = mprelay::sample::report(0, 1);
    report.configuration_items[0].settings[0].observed_before = Some("a\0b".into());
    let sub = dev.submission(&MessageId::new().to_string(), clock::now_ms(), report);
    refused(
        &sys,
        &client,
        "/v1/submissions",
        dev.seal(&sub).encode_to_vec(),
        400,
        "invalid_report",
    )
    .await;
}

#[tokio::test]
async fn unknown_key_epoch() {
    let (sys, client, dev) = setup().await;
    let (_, body) = dev.sealed_report(1);
    let mut s = mprelay::proto::SealedSubmission::decode(body.as_slice()).unwrap();
    s.key_epoch = 7;
    refused(
        &sys,
        &client,
        "/v1/submissions",
        s.encode_to_vec(),
        401,
        "unknown_key_epoch",
    )
    .await;
}

#[tokio::test]
async fn decrypt_failed() {
    let (sys, client, dev) = setup().await;
    let (_, body) = dev.sealed_report(1);
    let mut s = mprelay::proto::SealedSubmission::decode(body.as_slice()).unwrap();
    let n = s.ciphertext.len();
    s.ciphertext[n / 2] ^= 0x40;
    let resp = refused(
        &sys,
        &client,
        "/v1/submissions",
        s.encode_to_vec(),
        401,
        "decrypt_failed",
    )
    .await;
    // No oracle: the message does not say what was wrong.
    let msg = mprelay::proto::ErrorResponse::decode(resp.body.as_ref())
        .unwrap()
        .message;
    assert!(
        !msg.contains("tag") && !msg.contains("nonce") && !msg.contains("key "),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_signature() {
    let (sys, client, dev) = setup().await;
    let sub = dev
        .submission(
            &MessageId::new().to_string(),
            clock::now_ms(),
            mprelay::sample::report(0, 1),
        )
        .encode_to_vec();
    let mut signature = dev.signer.sign(&sub);
    signature[10] ^= 1;
    let plain = SignedSubmission {
        submission: sub,
        signature,
    }
    .encode_to_vec();
    let s = envelope::seal_raw(
        &dev.signer.device_id(),
        &dev.signer.public_key(),
        dev.epoch,
        &dev.key,
        &plain,
        [3; 12],
    );
    refused(
        &sys,
        &client,
        "/v1/submissions",
        s.encode_to_vec(),
        401,
        "bad_signature",
    )
    .await;
}

#[tokio::test]
async fn identity_mismatch() {
    let (sys, client, dev) = setup().await;
    // The public key of another device under this device's id.
    let (_, body) = dev.sealed_report(1);
    let mut s = mprelay::proto::SealedSubmission::decode(body.as_slice()).unwrap();
    let (other, _) = DeviceSigner::generate();
    s.device_public_key = other.public_key().as_bytes().to_vec();
    refused(
        &sys,
        &client,
        "/v1/submissions",
        s.encode_to_vec(),
        401,
        "identity_mismatch",
    )
    .await;

    // A valid envelope of this device claiming to be another device inside.
    let mut sub = dev.submission(
        &MessageId::new().to_string(),
        clock::now_ms(),
        mprelay::sample::report(0, 1),
    );
    sub.device_id = other.device_id().hex();
    refused(
        &sys,
        &client,
        "/v1/submissions",
        dev.seal(&sub).encode_to_vec(),
        401,
        "identity_mismatch",
    )
    .await;
}

#[tokio::test]
async fn device_blocked() {
    let (sys, client, dev) = setup().await;
    let policy = PolicySnapshot {
        version: 1,
        blocked_device_ids: vec![dev.signer.device_id().hex()],
        ..Default::default()
    };
    let site = sys.site_client();
    let resp = site
        .request(
            Method::PUT,
            "/v1/policy",
            Some(Bytes::from(policy.encode_to_vec())),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 204, "{}", describe(&resp));
    let (_, body) = dev.sealed_report(1);
    refused(
        &sys,
        &client,
        "/v1/submissions",
        body,
        403,
        "device_blocked",
    )
    .await;

    // Enrolling again does not get a blocked device back in.
    let req = EnrollRequest {
        enrollment_secret: sys.enrollment_secret(),
        device_public_key: dev.signer.public_key().as_bytes().to_vec(),
        ..Default::default()
    };
    refused(
        &sys,
        &client,
        "/v1/enroll",
        req.encode_to_vec(),
        403,
        "device_blocked",
    )
    .await;
}

#[tokio::test]
async fn enrollment_refused() {
    let (sys, client, _) = setup().await;
    let (signer, _) = DeviceSigner::generate();
    let mut secret = sys.enrollment_secret();
    // Same length, last character different: the comparison is constant-time and exact.
    let last = secret.pop().unwrap();
    secret.push(if last == 'a' { 'b' } else { 'a' });
    for s in [secret, String::new(), "x".repeat(1000)] {
        let req = EnrollRequest {
            enrollment_secret: s,
            device_public_key: signer.public_key().as_bytes().to_vec(),
            ..Default::default()
        };
        refused(
            &sys,
            &client,
            "/v1/enroll",
            req.encode_to_vec(),
            403,
            "enrollment_refused",
        )
        .await;
    }
}

#[tokio::test]
async fn too_large() {
    let (sys, client, _) = setup().await;
    refused(
        &sys,
        &client,
        "/v1/submissions",
        vec![0u8; 1024 * 1024 + 1],
        413,
        "too_large",
    )
    .await;
}

#[tokio::test]
async fn stale_and_from_the_future() {
    let (sys, client, dev) = setup().await;
    let now = clock::now_ms();
    for (created, want) in [
        (now - 91 * DAY_MS, "stale"),
        (now + 3_600_000, "from_the_future"),
        (now + 6 * 60_000, "from_the_future"),
    ] {
        let sub = dev.submission(
            &MessageId::new().to_string(),
            created,
            mprelay::sample::report(0, 1),
        );
        refused(
            &sys,
            &client,
            "/v1/submissions",
            dev.seal(&sub).encode_to_vec(),
            422,
            want,
        )
        .await;
    }
    // Inside the window (89 days old, 4 minutes ahead): accepted.
    for created in [now - 89 * DAY_MS, now + 4 * 60_000] {
        let sub = dev.submission(
            &MessageId::new().to_string(),
            created,
            mprelay::sample::report(0, 1),
        );
        let resp = client
            .post(
                "/v1/submissions",
                Bytes::from(dev.seal(&sub).encode_to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 202, "{}", describe(&resp));
    }
}

#[tokio::test]
async fn rate_limited_enrollment_flood() {
    let sys = TestSystem::relay_only(|o| {
        o.intake.enroll_peer_burst = 3.0;
        o.intake.enroll_peer_rate_per_s = 0.01;
    })
    .await;
    let client = sys.agent_client(HttpVersion::Auto);
    for _ in 0..3 {
        RawDevice::enroll(&client, &sys.enrollment_secret()).await;
    }
    let (signer, _) = DeviceSigner::generate();
    let req = EnrollRequest {
        enrollment_secret: sys.enrollment_secret(),
        device_public_key: signer.public_key().as_bytes().to_vec(),
        ..Default::default()
    };
    let resp = refused(
        &sys,
        &client,
        "/v1/enroll",
        req.encode_to_vec(),
        429,
        "rate_limited",
    )
    .await;
    let secs: u64 = resp.retry_after().unwrap().as_secs();
    assert!(secs >= 1);
    // The limit applies before the secret is looked at.
    let wrong = EnrollRequest {
        enrollment_secret: "wrong".into(),
        ..req
    };
    refused(
        &sys,
        &client,
        "/v1/enroll",
        wrong.encode_to_vec(),
        429,
        "rate_limited",
    )
    .await;
}

#[tokio::test]
async fn overloaded_when_the_spool_is_full() {
    let sys = TestSystem::relay_only(|o| o.spool.max_records = 2).await;
    let client = sys.agent_client(HttpVersion::Auto);
    let dev = RawDevice::enroll(&client, &sys.enrollment_secret()).await; // record 1
    let (_, body) = dev.sealed_report(1); // record 2
    let resp = client
        .post("/v1/submissions", Bytes::from(body.clone()))
        .await
        .unwrap();
    assert_eq!(resp.status, 202);
    let (_, full) = dev.sealed_report(2);
    let resp = refused(&sys, &client, "/v1/submissions", full, 503, "overloaded").await;
    assert!(resp.retry_after().is_some());
    // A resend of what the spool already holds is still answered 200.
    let again = client
        .post("/v1/submissions", Bytes::from(body))
        .await
        .unwrap();
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let (sys, client, _) = setup().await;
    refused(&sys, &client, "/v2/submissions", vec![], 404, "not_found").await;
    let resp = client.get("/v1/submissions").await.unwrap();
    assert_eq!(resp.status, 405);
    assert_eq!(code(&resp), "method_not_allowed");
    // The site-facing endpoints do not exist on the agent listener.
    refused(&sys, &client, "/v1/forward/ack", vec![], 404, "not_found").await;
}

#[tokio::test]
async fn a_relay_refuses_epochs_it_does_not_hold_but_serves_all_it_does() {
    // Enrolled on epoch 1; the relay then holds epochs 1 and 2 and enrolls new devices on 2.
    let mut sys = TestSystem::relay_only(|_| {}).await;
    let client = sys.agent_client(HttpVersion::Auto);
    let old = RawDevice::enroll(&client, &sys.enrollment_secret()).await;
    assert_eq!(old.epoch.get(), 1);
    sys.stop_relay().await;
    let second = mprelay::envelope::MasterSecret::generate();
    let first = mprelay::pki::load_master_secret(&sys.lb.paths.master_secret(1)).unwrap();
    let keys = mprelay::envelope::MasterKeys::new(
        [
            (KeyEpoch::try_from(1).unwrap(), first),
            (KeyEpoch::try_from(2).unwrap(), second),
        ]
        .into(),
    )
    .unwrap();
    let mut opts = sys
        .lb
        .relay_options("test-relay", &sys.spool_path())
        .unwrap();
    opts.keys = keys;
    sys.relay = Some(sys.lb.start_relay(opts).await.unwrap());
    let client = sys.agent_client(HttpVersion::Auto);
    let new = RawDevice::enroll(&client, &sys.enrollment_secret()).await;
    assert_eq!(new.epoch.get(), 2);
    for dev in [&old, &new] {
        let (_, body) = dev.sealed_report(5);
        let resp = client
            .post("/v1/submissions", Bytes::from(body))
            .await
            .unwrap();
        assert_eq!(
            resp.status,
            202,
            "epoch {}: {}",
            dev.epoch.get(),
            describe(&resp)
        );
    }
    let _ = Duration::ZERO;
}
