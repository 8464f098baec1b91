//! `mprelay report verify` on both backends: reports stored through the site's own decode and
//! write path verify; a setting row changed in the database and a stored signature changed in
//! the database are each caught, with exactly what differs, and exit status 1; an unknown
//! message id is bad usage (64).

use mprelay::envelope::DeviceSigner;
use mprelay::ids::MessageId;
use mprelay::proto::{self, ForwardBatch, ForwardRecord, Submission, forward_record::Record};
use mprelay::site::decode::{decode_batch, split_batch};
use mprelay::spool::encode_forward_batch;
use mprelay::store::Store;
use prost::Message;
use serde_json::{Value, json};

use crate::both_backends;
use crate::compliance_cli::{run, stderr, stdout};
use crate::db::{Backend, TestDb};

/// A forwarded report of `signer`'s, as a relay sends it, and its message id.
fn signed_record(signer: &DeviceSigner, seq: u64) -> (String, Vec<u8>) {
    let message_id = MessageId::new().to_string();
    let sub = Submission {
        message_id: message_id.clone(),
        device_id: signer.device_id().hex(),
        created_unix_ms: 1_700_000_000_000 + seq as i64,
        body: Some(proto::submission::Body::ComplianceReport(
            mprelay::sample::report_with_settings(4, seq),
        )),
    }
    .encode_to_vec();
    let signature = signer.sign(&sub);
    let record = ForwardRecord {
        seq,
        message_id: message_id.clone(),
        received_unix_ms: 1_700_000_100_000 + seq as i64,
        record: Some(Record::Submission(proto::VerifiedSubmission {
            device_id: signer.device_id().hex(),
            device_public_key: signer.public_key().as_bytes().to_vec(),
            key_epoch: 1,
            submission: sub,
            signature,
        })),
    }
    .encode_to_vec();
    (message_id, record)
}

/// Stores `n` reports of `signer`'s (after its enrollment as `hostname`, when given) through
/// the site's decode and write path, as one forwarded batch; returns their message ids.
pub(crate) async fn store_reports(
    store: &Store,
    signer: &DeviceSigner,
    hostname: Option<&str>,
    n: u64,
) -> Vec<String> {
    let mut numbered: Vec<(u64, Vec<u8>)> = Vec::new();
    if let Some(hostname) = hostname {
        let enrollment = ForwardRecord {
            seq: 1,
            message_id: MessageId::new().to_string(),
            received_unix_ms: 1_700_000_000_000,
            record: Some(Record::Enrollment(proto::DeviceEnrollment {
                device_id: signer.device_id().hex(),
                device_public_key: signer.public_key().as_bytes().to_vec(),
                key_epoch: 1,
                hostname: hostname.into(),
                os: "Linux".into(),
                ..Default::default()
            })),
        };
        numbered.push((1, enrollment.encode_to_vec()));
    }
    let mut ids = Vec::new();
    for _ in 0..n {
        let seq = numbered.len() as u64 + 1;
        let (id, record) = signed_record(signer, seq);
        ids.push(id);
        numbered.push((seq, record));
    }
    let header = ForwardBatch {
        relay_id: "relay-a".into(),
        spool_id: "spool-a".into(),
        ..Default::default()
    };
    let raw = split_batch(encode_forward_batch(&header, &numbered).into()).unwrap();
    let (wb, _) = decode_batch(&raw, "https://relay-a:8444", 0, true);
    assert_eq!((wb.reports.len(), wb.quarantined.len()), (n as usize, 0));
    store.write_batch(&wb).await.unwrap();
    ids
}

/// `report verify ARGS… --format json` on `db`: exit status and the JSON document.
fn verify_json(db: &TestDb, args: &[&str]) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![
        "report",
        "verify",
        "--database",
        &db.url,
        "--format",
        "json",
    ];
    all.extend_from_slice(args);
    let out = run(&all, dir.path());
    let doc = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), doc)
}

async fn verify_catches_a_changed_row_and_a_changed_signature(db: TestDb) {
    let store = db.store().await;
    let signer = DeviceSigner::from_seed(&[7; 32]);
    let device = signer.device_id().hex();
    let records = store_reports(&store, &signer, None, 3).await;
    let [clean, row_changed, signature_changed] = [0, 1, 2].map(|i| records[i].clone());

    // As stored by the site, every report verifies, in the table as in JSON.
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["report", "verify", "--database", &db.url, &clean],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{clean} verified\n"));
    let (code, doc) = verify_json(&db, &["--device", &device, "--since", "2023-11-14"]);
    assert_eq!(code, 0, "{doc}");
    let verified: Vec<&Value> = doc["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["verified"])
        .collect();
    assert_eq!(verified, [&json!(true); 3]);

    // A setting result changed in the database: caught, with the field and both values.
    let signed_expected = store.report_settings(&row_changed).await.unwrap()[2]
        .expected
        .clone();
    db.exec(&format!(
        "UPDATE setting_results SET expected = 'tampered' WHERE ordinal = 2 AND report_id = \
         (SELECT report_id FROM compliance_reports WHERE message_id = '{row_changed}')"
    ))
    .await;
    let (code, doc) = verify_json(&db, &[&row_changed]);
    assert_eq!(code, 1);
    let r = &doc["reports"][0];
    assert_eq!(
        (&r["verified"], &r["signature_valid"], &r["problem"]),
        (&json!(false), &json!(true), &Value::Null)
    );
    assert_eq!(
        r["differences"],
        json!([{"field": "settings[2].expected", "stored": "tampered", "signed": signed_expected}])
    );
    let out = run(
        &["report", "verify", "--database", &db.url, &row_changed],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!(
            "settings[2].expected: stored \"tampered\", signed \"{signed_expected}\""
        )),
        "{}",
        stdout(&out)
    );

    // A stored signature changed in the database (one bit): the signature no longer verifies.
    let mut forged = store
        .report(&signature_changed)
        .await
        .unwrap()
        .unwrap()
        .signature;
    forged[5] ^= 1;
    let literal = match db.backend {
        Backend::Sqlite => format!("X'{}'", hex::encode(&forged)),
        Backend::Postgres => format!("'\\x{}'::bytea", hex::encode(&forged)),
    };
    db.exec(&format!(
        "UPDATE compliance_reports SET signature = {literal} \
         WHERE message_id = '{signature_changed}'"
    ))
    .await;
    let (code, doc) = verify_json(&db, &[&signature_changed]);
    assert_eq!(code, 1);
    let r = &doc["reports"][0];
    assert_eq!(
        (&r["verified"], &r["signature_valid"], &r["differences"]),
        (&json!(false), &json!(false), &json!([]))
    );
    assert_eq!(
        r["problem"],
        "the stored signature does not verify with the device's key"
    );

    // The device's reports together: the clean one still verifies, the other two do not.
    let (code, doc) = verify_json(&db, &["--device", &device]);
    assert_eq!(code, 1);
    let outcome: Vec<(&str, bool)> = doc["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["message_id"].as_str().unwrap(),
                r["verified"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            (clean.as_str(), true),
            (row_changed.as_str(), false),
            (signature_changed.as_str(), false)
        ]
    );

    // A report the site never stored is bad usage, and says so.
    let unknown = MessageId::new().to_string();
    let out = run(
        &["report", "verify", "--database", &db.url, &unknown],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains(&format!("no report {unknown} is stored")),
        "{}",
        stderr(&out)
    );
}
both_backends!(verify_catches_a_changed_row_and_a_changed_signature);
