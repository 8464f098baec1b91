//! The agent's JSON report reader (`mprelay agent submit --report FILE`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mprelay::agent::report_json::parse(text);
    }
});
