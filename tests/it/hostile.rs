//! The hostile-input catalogue, request by request: truncated and garbage protobuf, every field
//! of the envelope and of what it carries tampered with, wrong keys, wrong devices, times out of
//! the window, bodies that are not reports, wrong enrollment secrets, replays, a blocked device
//! and a retention age lowered by policy. Each case goes over real TLS to a running relay and
//! must get its status and error code with nothing spooled.
//!
//! `error_table.rs` has one case per row of the error table; the cases here are further
//! variants of those rows, not repeats. Connection-level attacks are in `hostile_conn.rs`.

use bytes::Bytes;
use http::Method;
use mprelay::clock::{self, DAY_MS};
use mprelay::envelope::{self, DeviceKey, MasterSecret};
use mprelay::ids::{KeyEpoch, MessageId};
use mprelay::net::HttpClient;
use mprelay::proto::{
    EnrollRequest, PolicyRequest, PolicySnapshot, SealedSubmission, SignedSubmission, Submission,
    SubmissionReceipt, submission::Body,
};
use prost::Message;

use crate::helpers::{RawDevice, TestSystem, code, describe};

/// One hostile request and the refusal it must get.
struct Case {
    name: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(name: &'static str, body: Vec<u8>, status: u16, code: &'static str) -> Case {
    Case {
        name,
        path: "/v1/submissions",
        body,
        status,
        code,
    }
}

fn at(path: &'static str, c: Case) -> Case {
    Case { path, ..c }
}

/// Sends the case and checks status, code, `Retry-After` absence and that the spool did not grow.
async fn send(sys: &TestSystem, client: &HttpClient, c: &Case) {
    let before = sys.spooled();
    let resp = client
        .post(c.path, Bytes::from(c.body.clone()))
        .await
        .unwrap_or_else(|e| panic!("{}: no answer: {e}", c.name));
    assert_eq!(
        (resp.status.as_u16(), code(&resp).as_str()),
        (c.status, c.code),
        "{}: got {}",
        c.name,
        describe(&resp)
    );
    assert!(resp.headers.get(http::header::RETRY_AFTER).is_none());
    assert_eq!(sys.spooled(), before, "{}: something was spooled", c.name);
}

/// A device's valid submission, and ways to bend it.
struct Forge<'a> {
    dev: &'a RawDevice,
}

impl Forge<'_> {
    fn submission(&self) -> Submission {
        self.dev.submission(
            &MessageId::new().to_string(),
            clock::now_ms(),
            mprelay::sample::report(0, 7),
        )
    }

    fn sealed(&self) -> SealedSubmission {
        self.dev.seal(&self.submission())
    }

    /// A valid envelope with one change made to it.
    fn tampered(&self, f: impl FnOnce(&mut SealedSubmission)) -> Vec<u8> {
        let mut s = self.sealed();
        f(&mut s);
        s.encode_to_vec()
    }

    /// A valid envelope around a submission with one change made to it.
    fn inner(&self, f: impl FnOnce(&mut Submission)) -> Vec<u8> {
        let mut sub = self.submission();
        f(&mut sub);
        self.dev.seal(&sub).encode_to_vec()
    }

    /// `plaintext` sealed with the device's real key and identity (no signing).
    fn sealed_plaintext(&self, plaintext: &[u8], key: &DeviceKey) -> Vec<u8> {
        envelope::seal_raw(
            &self.dev.signer.device_id(),
            &self.dev.signer.public_key(),
            self.dev.epoch,
            key,
            plaintext,
            rand::random(),
        )
        .encode_to_vec()
    }

    /// `submission` signed with `signature`, sealed with the device's real key.
    fn signed_with(&self, submission: Vec<u8>, signature: Vec<u8>) -> Vec<u8> {
        let plain = SignedSubmission {
            submission,
            signature,
        }
        .encode_to_vec();
        self.sealed_plaintext(&plain, &self.dev.key)
    }
}

fn report_with(f: impl FnOnce(&mut mprelay::proto::ComplianceReport)) -> Body {
    let mut r = mprelay::sample::report(1, 3);
    f(&mut r);
    Body::ComplianceReport(r)
}

fn catalogue(a: &RawDevice, b: &RawDevice, secret: &str) -> Vec<Case> {
    let fa = Forge { dev: a };
    let fb = Forge { dev: b };
    let valid = fa.sealed().encode_to_vec();
    let mut garbage = vec![0u8; 4096];
    let mut rng = mprelay::sample::Rng::new(42);
    for x in garbage.iter_mut() {
        *x = rng.next_u64() as u8;
    }
    let other_master = MasterSecret::generate();
    let forged_key =
        envelope::derive_device_key(&other_master, &a.signer.device_id(), &a.signer.public_key());
    let a_sub = fa.submission().encode_to_vec();
    let enroll = |f: &dyn Fn(&mut EnrollRequest)| {
        let (signer, _) = envelope::DeviceSigner::generate();
        let mut r = EnrollRequest {
            enrollment_secret: secret.into(),
            hostname: "h".into(),
            device_public_key: signer.public_key().as_bytes().to_vec(),
            ..Default::default()
        };
        f(&mut r);
        r.encode_to_vec()
    };

    vec![
        // Framing.
        case(
            "envelope cut in half",
            valid[..valid.len() / 2].to_vec(),
            400,
            "malformed",
        ),
        case(
            "envelope missing its last byte",
            valid[..valid.len() - 1].to_vec(),
            400,
            "malformed",
        ),
        case("4 KiB of random bytes", garbage, 400, "malformed"),
        case(
            "an EnrollRequest where an envelope belongs",
            enroll(&|_| {}),
            400,
            "malformed",
        ),
        case(
            "envelope_version sent as a string",
            [vec![0x0a, 0x01, b'1'], valid.clone()].concat(),
            400,
            "malformed",
        ),
        case(
            "a varint longer than ten bytes",
            [vec![0x08], vec![0xff; 11], vec![0x01]].concat(),
            400,
            "malformed",
        ),
        case(
            "a length prefix past the end of the body",
            vec![0x32, 0x80, 0x80, 0x40, 0x01, 0x02],
            400,
            "malformed",
        ),
        // The envelope's fields, one by one.
        case(
            "envelope_version missing",
            fa.tampered(|s| s.envelope_version = 0),
            400,
            "malformed",
        ),
        case(
            "envelope_version from the far future",
            fa.tampered(|s| s.envelope_version = u32::MAX),
            400,
            "unsupported_version",
        ),
        case(
            "device_id not hex",
            fa.tampered(|s| s.device_id = "z".repeat(32)),
            400,
            "malformed",
        ),
        case(
            "device_id in upper case",
            fa.tampered(|s| s.device_id = s.device_id.to_uppercase()),
            400,
            "malformed",
        ),
        case(
            "device_id of another enrolled device",
            fa.tampered(|s| s.device_id = b.signer.device_id().hex()),
            401,
            "identity_mismatch",
        ),
        case(
            "identity of another enrolled device around this one's ciphertext",
            fa.tampered(|s| {
                s.device_id = b.signer.device_id().hex();
                s.device_public_key = b.signer.public_key().as_bytes().to_vec();
            }),
            401,
            "decrypt_failed",
        ),
        case(
            "key_epoch 0",
            fa.tampered(|s| s.key_epoch = 0),
            401,
            "unknown_key_epoch",
        ),
        case(
            "key_epoch u32::MAX",
            fa.tampered(|s| s.key_epoch = u32::MAX),
            401,
            "unknown_key_epoch",
        ),
        case(
            "device_public_key of 31 bytes",
            fa.tampered(|s| s.device_public_key.truncate(31)),
            400,
            "malformed",
        ),
        case(
            "device_public_key repeated, the last copy another device's",
            {
                let mut v = valid.clone();
                v.push(0x22); // field 4, length-delimited
                v.push(32);
                v.extend_from_slice(b.signer.public_key().as_bytes());
                v
            },
            401,
            "identity_mismatch",
        ),
        case(
            "nonce with one bit flipped",
            fa.tampered(|s| s.nonce[0] ^= 1),
            401,
            "decrypt_failed",
        ),
        case(
            "nonce of 11 bytes",
            fa.tampered(|s| s.nonce.truncate(11)),
            400,
            "malformed",
        ),
        case(
            "authentication tag with one bit flipped",
            fa.tampered(|s| *s.ciphertext.last_mut().unwrap() ^= 0x80),
            401,
            "decrypt_failed",
        ),
        case(
            "ciphertext shorter than a tag",
            fa.tampered(|s| s.ciphertext.truncate(15)),
            400,
            "malformed",
        ),
        case(
            "nonce and ciphertext of another device's envelope",
            {
                let theirs = fb.sealed();
                fa.tampered(|s| {
                    s.nonce = theirs.nonce;
                    s.ciphertext = theirs.ciphertext;
                })
            },
            401,
            "decrypt_failed",
        ),
        case(
            "sealed under a key from another master secret",
            {
                let plain = SignedSubmission {
                    submission: a_sub.clone(),
                    signature: a.signer.sign(&a_sub),
                }
                .encode_to_vec();
                fa.sealed_plaintext(&plain, &forged_key)
            },
            401,
            "decrypt_failed",
        ),
        // What the envelope carries.
        case(
            "plaintext that is not a SignedSubmission",
            fa.sealed_plaintext(&[0xff; 64], &a.key),
            400,
            "malformed",
        ),
        case(
            "signature by another device",
            fa.signed_with(a_sub.clone(), b.signer.sign(&a_sub)),
            401,
            "bad_signature",
        ),
        case(
            "signature missing",
            fa.signed_with(a_sub.clone(), vec![]),
            401,
            "bad_signature",
        ),
        case(
            "signature over the submission with one byte appended",
            {
                let mut longer = a_sub.clone();
                longer.push(0);
                fa.signed_with(a_sub.clone(), a.signer.sign(&longer))
            },
            401,
            "bad_signature",
        ),
        case(
            "validly signed bytes that are not a Submission",
            fa.signed_with(vec![0xff; 40], a.signer.sign(&[0xff; 40])),
            400,
            "malformed",
        ),
        case(
            "a valid envelope of one enrolled device claiming another inside",
            fa.inner(|s| s.device_id = b.signer.device_id().hex()),
            401,
            "identity_mismatch",
        ),
        case(
            "inner device_id in upper case",
            fa.inner(|s| s.device_id = s.device_id.to_uppercase()),
            401,
            "identity_mismatch",
        ),
        // The clock window.
        case(
            "created at the end of time",
            fa.inner(|s| s.created_unix_ms = i64::MAX),
            422,
            "from_the_future",
        ),
        case(
            "created in 1970",
            fa.inner(|s| s.created_unix_ms = 0),
            422,
            "stale",
        ),
        case(
            "created at i64::MIN",
            fa.inner(|s| s.created_unix_ms = i64::MIN),
            422,
            "stale",
        ),
        // The body.
        case(
            "the nil UUID as message_id",
            fa.inner(|s| s.message_id = uuid_nil()),
            400,
            "invalid_report",
        ),
        case(
            "message_id in braces",
            fa.inner(|s| s.message_id = format!("{{{}}}", MessageId::new())),
            400,
            "invalid_report",
        ),
        case(
            "a setting state that does not exist",
            fa.inner(|s| {
                s.body = Some(report_with(|r| {
                    r.configuration_items[0].settings[0].state = 99
                }))
            }),
            400,
            "invalid_report",
        ),
        case(
            "an expected value of 5000 bytes",
            fa.inner(|s| {
                s.body = Some(report_with(|r| {
                    r.configuration_items[0].settings[0].expected = "x".repeat(5000)
                }))
            }),
            400,
            "invalid_report",
        ),
        case(
            "10,001 settings in one report",
            fa.inner(|s| {
                s.body = Some(report_with(|r| {
                    let one = r.configuration_items[0].settings[0].clone();
                    r.configuration_items[0].settings = vec![one; 10_001];
                }))
            }),
            400,
            "invalid_report",
        ),
        case(
            "a policy request submitted as a report",
            fa.inner(|s| s.body = Some(Body::PolicyRequest(PolicyRequest::default()))),
            400,
            "invalid_report",
        ),
        at(
            "/v1/policy",
            case(
                "a report sent to the policy endpoint",
                fa.inner(|_| {}),
                400,
                "invalid_report",
            ),
        ),
        at(
            "/v1/policy",
            case(
                "a truncated envelope sent to the policy endpoint",
                valid[..20].to_vec(),
                400,
                "malformed",
            ),
        ),
        // Enrollment.
        at(
            "/v1/enroll",
            case(
                "enrollment secret: a prefix of the real one",
                enroll(&|r| r.enrollment_secret.truncate(secret.len() - 1)),
                403,
                "enrollment_refused",
            ),
        ),
        at(
            "/v1/enroll",
            case(
                "enrollment secret: the real one with a newline",
                enroll(&|r| r.enrollment_secret.push('\n')),
                403,
                "enrollment_refused",
            ),
        ),
        at(
            "/v1/enroll",
            case(
                "enrollment secret: the real one in upper case",
                enroll(&|r| r.enrollment_secret = r.enrollment_secret.to_uppercase()),
                403,
                "enrollment_refused",
            ),
        ),
        at(
            "/v1/enroll",
            case(
                "enrollment with a 31-byte public key",
                enroll(&|r| r.device_public_key.truncate(31)),
                400,
                "malformed",
            ),
        ),
        at(
            "/v1/enroll",
            case(
                "enrollment with a 300-byte hostname",
                enroll(&|r| r.hostname = "h".repeat(300)),
                400,
                "malformed",
            ),
        ),
    ]
}

fn uuid_nil() -> String {
    "00000000-0000-0000-0000-000000000000".into()
}

#[tokio::test]
async fn hostile_requests_are_refused_with_their_code_and_nothing_is_spooled() {
    let sys = TestSystem::start().await;
    let client = sys.agent_client(mprelay::net::HttpVersion::Auto);
    let secret = sys.enrollment_secret();
    let a = RawDevice::enroll(&client, &secret).await;
    let b = RawDevice::enroll(&client, &secret).await;
    let cases = catalogue(&a, &b, &secret);
    for c in &cases {
        send(&sys, &client, c).await;
    }
    let mut n = cases.len();

    // Replay of an accepted message, byte for byte: 200 with the same receipt, spooled once,
    // stored once.
    let (id, body) = a.sealed_report(11);
    let first = client
        .post("/v1/submissions", Bytes::from(body.clone()))
        .await
        .unwrap();
    assert_eq!(first.status, 202, "{}", describe(&first));
    let spooled = sys.spooled();
    for _ in 0..3 {
        let again = client
            .post("/v1/submissions", Bytes::from(body.clone()))
            .await
            .unwrap();
        assert_eq!(again.status, 200, "{}", describe(&again));
        assert_eq!(again.body, first.body);
        assert_eq!(
            SubmissionReceipt::decode(again.body.as_ref())
                .unwrap()
                .message_id,
            id
        );
    }
    assert_eq!(sys.spooled(), spooled, "a replay was spooled");
    sys.wait_for_reports(1).await;
    assert_eq!(sys.store.report_message_ids().await.unwrap(), vec![id]);
    n += 1;

    // The site lowers the retention age and blocks device b.
    let policy = PolicySnapshot {
        version: 2,
        retention_days: 7,
        blocked_device_ids: vec![b.signer.device_id().hex()],
        ..Default::default()
    };
    let resp = sys
        .site_client()
        .request(
            Method::PUT,
            "/v1/policy",
            Some(Bytes::from(policy.encode_to_vec())),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 204, "{}", describe(&resp));
    let fa = Forge { dev: &a };
    let fb = Forge { dev: &b };
    for c in [
        case(
            "older than the retention age the site's policy set",
            fa.inner(|s| s.created_unix_ms = clock::now_ms() - 8 * DAY_MS),
            422,
            "stale",
        ),
        case(
            "a valid report from a blocked device",
            fb.inner(|_| {}),
            403,
            "device_blocked",
        ),
        at(
            "/v1/policy",
            case(
                "a policy request from a blocked device",
                fb.inner(|s| s.body = Some(Body::PolicyRequest(PolicyRequest::default()))),
                403,
                "device_blocked",
            ),
        ),
        case(
            "a blocked device's envelope claiming an unblocked device inside",
            fb.inner(|s| s.device_id = a.signer.device_id().hex()),
            401,
            "identity_mismatch",
        ),
    ] {
        send(&sys, &client, &c).await;
        n += 1;
    }
    // Inside the new window, device a is still served.
    let (_, ok) = a.sealed_report(12);
    let resp = client
        .post("/v1/submissions", Bytes::from(ok))
        .await
        .unwrap();
    assert_eq!(resp.status, 202, "{}", describe(&resp));
    assert_eq!(KeyEpoch::try_from(1).unwrap(), a.epoch);
    println!("hostile request catalogue: {n} cases refused, nothing spooled");
}
