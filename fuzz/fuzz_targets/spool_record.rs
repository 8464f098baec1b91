//! The spool record reader: a stored payload (first 8 bytes: the seq) decoded as the site sees
//! it, and framed into a forward batch and split again without decoding.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mprelay::proto::ForwardBatch;
use mprelay::site::decode::{decode_batch, split_batch};
use mprelay::spool::{decode_record, encode_forward_batch};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (seq, payload) = data.split_at(8);
    let seq = u64::from_le_bytes(seq.try_into().expect("8 bytes"));
    if let Ok(r) = decode_record(seq, payload) {
        assert_eq!(r.seq, seq);
    }
    let header = ForwardBatch {
        relay_id: "fuzz".into(),
        spool_id: "spool".into(),
        last_seq: seq,
        ..Default::default()
    };
    let body = encode_forward_batch(&header, &[(seq, payload.to_vec())]);
    let raw = split_batch(Bytes::from(body)).expect("a batch the relay encodes splits");
    assert_eq!(raw.records.len(), 1);
    assert_eq!(raw.last_seq, seq);
    let _ = decode_batch(&raw, "https://fuzz", 0, false);
});
