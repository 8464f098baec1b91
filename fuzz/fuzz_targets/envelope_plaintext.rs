//! What the opener does after a successful AEAD open: arbitrary plaintext sealed under the
//! fixture device's key (the fuzzer cannot forge a tag, so this reaches the inner decoders).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mprelay::envelope;
use mprelay_fuzz::fixture;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let sealed = envelope::seal_raw(
        &f.signer.device_id(),
        &f.signer.public_key(),
        f.epoch,
        &f.device_key,
        data,
        [7; 12],
    );
    if let Ok(opened) = envelope::open(&f.keys, sealed) {
        // A signature the fuzzer did not make cannot verify, unless it replayed a real one.
        envelope::verify_signature(
            &opened.public_key,
            &opened.submission_bytes,
            &opened.signature,
        )
        .expect("open returned an unverified submission");
    }
});
