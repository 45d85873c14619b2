//! Manifests are untrusted input: any bytes, as YAML or JSON, must give
//! objects or errors, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let opts = keycard_k8s::LoadOptions::default();
        let (objects, _errors) = keycard_k8s::parse_str("fuzz.yaml", text, &opts);
        for o in &objects {
            let _ = o.pod_template();
            let _ = o.resource_ref();
        }
        let _ = keycard_k8s::parse_str("fuzz.json", text, &opts);
    }
});
