//! The site's forward-batch reader on arbitrary response bodies: framing, then every record
//! decoded and checked (with and without signature verification).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mprelay::site::decode::{decode_batch, split_batch};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = split_batch(Bytes::copy_from_slice(data)) else {
        return;
    };
    for verify in [false, true] {
        let (wb, max_seq) = decode_batch(&raw, "https://fuzz", 0, verify);
        // The cursor never moves past what the batch held.
        assert_eq!(wb.through_seq, max_seq);
        // Nothing is stored or quarantined that the batch did not carry.
        assert!(
            wb.reports.len() + wb.acceptances.len() + wb.quarantined.len() <= raw.records.len()
        );
    }
});
