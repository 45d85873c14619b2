//! METADATA annotations are read from the team's own Rego.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keycard_policy::parse_annotations("fuzz.rego", text);
    }
});
