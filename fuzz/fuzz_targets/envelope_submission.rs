//! Arbitrary `Submission` bytes, signed and sealed by the fixture device: the relay's open, then
//! the record the relay would spool, through the site's decoder with signature verification (the
//! report and acceptance checks, roll-ups and row building).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mprelay::envelope;
use mprelay::proto::{ForwardBatch, ForwardRecord, VerifiedSubmission, forward_record};
use mprelay::site::decode::{decode_batch, split_batch};
use mprelay::spool::encode_forward_batch;
use mprelay_fuzz::fixture;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let sealed = envelope::seal_with_nonce(&f.signer, f.epoch, &f.device_key, data, [9; 12]);
    let Ok(opened) = envelope::open(&f.keys, sealed) else {
        return;
    };
    assert_eq!(opened.submission_bytes, data);
    let record = ForwardRecord {
        seq: 0,
        message_id: opened.submission.message_id.clone(),
        received_unix_ms: 1_760_000_000_000,
        record: Some(forward_record::Record::Submission(VerifiedSubmission {
            device_id: opened.device_id.hex(),
            device_public_key: opened.public_key.as_bytes().to_vec(),
            key_epoch: opened.epoch.get(),
            submission: opened.submission_bytes,
            signature: opened.signature,
        })),
    };
    let header = ForwardBatch {
        relay_id: "fuzz".into(),
        spool_id: "spool".into(),
        ..Default::default()
    };
    let body = encode_forward_batch(&header, &[(1, record.encode_to_vec())]);
    let raw = split_batch(Bytes::from(body)).expect("a batch the relay encodes splits");
    assert_eq!(raw.records.len(), 1);
    let (wb, max_seq) = decode_batch(&raw, "https://fuzz", 0, true);
    assert_eq!(max_seq, 1);
    // Every record ends up stored or quarantined, never silently dropped.
    let kept = wb.reports.len() + wb.acceptances.len() + wb.quarantined.len();
    assert_eq!(kept, 1, "record neither stored nor quarantined");
});
