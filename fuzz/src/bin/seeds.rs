//! Writes the seed corpora under `fuzz/seeds/<target>/`: valid messages of every kind, so the
//! fuzzer starts from inputs that get deep before mutation breaks them.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --bin seeds

use std::path::{Path, PathBuf};

use mprelay::envelope;
use mprelay::ids::MessageId;
use mprelay::proto::*;
use mprelay::spool::encode_forward_batch;
use mprelay_fuzz::fixture;
use prost::Message;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let f = fixture();
    let id = f.signer.device_id().hex();
    let submissions: Vec<Submission> = vec![
        body(
            &id,
            submission::Body::ComplianceReport(mprelay::sample::report(0, 1)),
        ),
        body(
            &id,
            submission::Body::ComplianceReport(mprelay::sample::report(1, 2)),
        ),
        body(
            &id,
            submission::Body::ComplianceReport(mprelay::sample::report_with_settings(35, 3)),
        ),
        body(
            &id,
            submission::Body::TermsAcceptance(TermsAcceptance {
                user: "alice".into(),
                terms_version: 3,
                accepted_unix_ms: 1_760_000_000_000,
            }),
        ),
        body(
            &id,
            submission::Body::PolicyRequest(PolicyRequest {
                known_version: 2,
                user: "alice".into(),
                hostname: "web-1".into(),
                os: "Debian GNU/Linux 12".into(),
                agent_version: "0.1.0".into(),
                tags: [("role".to_string(), "web".to_string())].into(),
            }),
        ),
    ];
    let encoded: Vec<Vec<u8>> = submissions.iter().map(|s| s.encode_to_vec()).collect();
    let sealed: Vec<SealedSubmission> = encoded
        .iter()
        .map(|s| envelope::seal_with_nonce(&f.signer, f.epoch, &f.device_key, s, [5; 12]))
        .collect();
    let signed: Vec<Vec<u8>> = encoded
        .iter()
        .map(|s| {
            SignedSubmission {
                submission: s.clone(),
                signature: f.signer.sign(s),
            }
            .encode_to_vec()
        })
        .collect();
    let records: Vec<Vec<u8>> = sealed
        .iter()
        .zip(&submissions)
        .map(|(s, sub)| {
            ForwardRecord {
                seq: 0,
                message_id: sub.message_id.clone(),
                received_unix_ms: 1_760_000_000_000,
                record: Some(forward_record::Record::Submission(VerifiedSubmission {
                    device_id: s.device_id.clone(),
                    device_public_key: s.device_public_key.clone(),
                    key_epoch: 1,
                    submission: sub.encode_to_vec(),
                    signature: f.signer.sign(&sub.encode_to_vec()),
                })),
            }
            .encode_to_vec()
        })
        .chain(std::iter::once(
            ForwardRecord {
                seq: 0,
                message_id: MessageId::new().to_string(),
                received_unix_ms: 1_760_000_000_000,
                record: Some(forward_record::Record::Enrollment(DeviceEnrollment {
                    device_id: id.clone(),
                    device_public_key: f.signer.public_key().as_bytes().to_vec(),
                    key_epoch: 1,
                    hostname: "host".into(),
                    os: "linux".into(),
                    agent_version: "0.1.0".into(),
                    hardware_id: "hw".into(),
                })),
            }
            .encode_to_vec(),
        ))
        .collect();
    let header = ForwardBatch {
        relay_id: "relay-1".into(),
        spool_id: "b6f1f3c4-1111-4222-8333-944455556666".into(),
        last_seq: 9,
        pending_records: 3,
        pending_bytes: 1000,
        records: vec![],
    };
    let batch = encode_forward_batch(
        &header,
        &records
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r.clone()))
            .collect::<Vec<_>>(),
    );

    write(
        &root,
        "envelope_open",
        sealed.iter().map(|s| s.encode_to_vec()),
    );
    write(&root, "envelope_plaintext", signed.iter().cloned());
    write(&root, "envelope_submission", encoded.iter().cloned());
    let mut protos: Vec<Vec<u8>> = Vec::new();
    protos.extend(sealed.iter().map(|s| s.encode_to_vec()));
    protos.extend(signed.iter().cloned());
    protos.extend(encoded.iter().cloned());
    protos.extend(records.iter().cloned());
    protos.push(batch.clone());
    protos.push(
        EnrollRequest {
            enrollment_secret: "secret".into(),
            hostname: "host".into(),
            os: "linux".into(),
            agent_version: "0.1.0".into(),
            hardware_id: "hw".into(),
            device_public_key: vec![1; 32],
        }
        .encode_to_vec(),
    );
    protos.push(
        ForwardAck {
            through_seq: 42,
            spool_id: header.spool_id.clone(),
        }
        .encode_to_vec(),
    );
    protos.push(
        PolicySnapshot {
            version: 3,
            retention_days: 30,
            blocked_device_ids: vec![id.clone()],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    write(&root, "proto_requests", protos.into_iter());
    write(
        &root,
        "spool_record",
        records.iter().enumerate().map(|(i, r)| {
            let mut v = (i as u64 + 1).to_le_bytes().to_vec();
            v.extend_from_slice(r);
            v
        }),
    );
    write(&root, "site_batch", std::iter::once(batch));
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    write(
        &root,
        "config_toml",
        ["relay.toml", "site.toml", "agent.toml"].iter().map(|f| {
            let mut v = std::fs::read(examples.join(f)).expect("example config");
            v.extend_from_slice(
                b"\0MPRELAY_RELAY__SPOOL__MAX_RECORDS=5\nMPRELAY_SITE__PULL__WAIT_MS=1\n",
            );
            v
        }),
    );
    write(
        &root,
        "baseline_toml",
        ["ssh-hardening.toml", "kernel-network.toml"]
            .iter()
            .map(|f| std::fs::read(examples.join("baselines").join(f)).expect("example baseline")),
    );
    write(
        &root,
        "report_json",
        std::iter::once(std::fs::read(examples.join("report.json")).expect("example report")),
    );
}

fn body(device_id: &str, b: submission::Body) -> Submission {
    Submission {
        message_id: MessageId::new().to_string(),
        device_id: device_id.into(),
        created_unix_ms: 1_760_000_000_000,
        body: Some(b),
    }
}

fn write(root: &Path, target: &str, items: impl Iterator<Item = Vec<u8>>) {
    let dir: PathBuf = root.join(target);
    std::fs::create_dir_all(&dir).expect("seed directory");
    for (i, item) in items.enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), item).expect("seed file");
    }
}
