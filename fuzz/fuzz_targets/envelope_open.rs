//! The relay's envelope opener on raw request bodies (`POST /v1/submissions`, `/v1/policy`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mprelay::envelope;
use mprelay_fuzz::fixture;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if let Ok(opened) = envelope::open_bytes(&f.keys, data) {
        // Only the fixture's device can get through, and only with its own id inside.
        assert_eq!(opened.device_id, f.signer.device_id());
        assert_eq!(opened.submission.device_id, opened.device_id.hex());
    }
});
