//! Exceptions files come from the repository under check.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keycard_policy::exceptions::Exceptions::parse("fuzz.yaml", text);
    }
});
