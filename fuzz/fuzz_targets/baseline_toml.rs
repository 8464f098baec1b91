//! The baseline and configuration-item TOML parser administrators' files go through
//! (`mprelay baseline import`): any text must give definitions or errors naming a line, never a
//! panic; what parses must convert to the policy's protobuf form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mprelay::policy::definition::parse_file;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_file("fuzz.toml", text) {
        Ok(parsed) => {
            for ci in &parsed.cis {
                let _ = ci.value.to_proto();
            }
            for b in &parsed.baselines {
                let _ = &b.value;
            }
        }
        Err(errors) => {
            assert!(
                !errors.is_empty(),
                "an error result carries at least one error"
            );
            for e in errors {
                assert!(e.line >= 1, "error lines are 1-based: {e:?}");
            }
        }
    }
});
