//! `keycard assess` and `keycard who-can` read cluster dumps and manifests,
//! which are untrusted input: any RBAC, workload, NetworkPolicy or Secret
//! YAML must give an assessment (and who-can answers), never a panic or a
//! hang. The input is bounded (64 KiB, 64 objects) so that each run is
//! short; the stages are meant to stay linear, and a slow input shows up
//! as a libFuzzer timeout.
#![no_main]
use keycard_assess::report::{render, Format};
use keycard_assess::{assess, AccessQuery, Input, Options, Rbac, SourceKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = keycard_k8s::LoadOptions {
        max_file_bytes: 64 * 1024,
        max_objects: 64,
    };
    let (objects, _errors) = keycard_k8s::parse_str("fuzz.yaml", text, &opts);
    if objects.is_empty() {
        return;
    }

    let rbac = Rbac::from_objects(&objects);
    for (verb, resource, namespace, name) in [
        ("create", "deployments", Some("prod"), None),
        ("get", "secrets", None, Some("db")),
        ("create", "pods/exec", None, None),
        ("*", "*", Some(""), None),
        (
            "escalate",
            "clusterroles.rbac.authorization.k8s.io",
            None,
            None,
        ),
    ] {
        for expand_groups in [false, true] {
            let q = AccessQuery {
                verb: verb.to_string(),
                resource: resource.to_string(),
                namespace: namespace.map(String::from),
                name: name.map(String::from),
                expand_groups,
            };
            let _ = rbac.who_can(&q);
        }
    }
    let _ = rbac.gaps();

    let input = Input::from_objects(objects, SourceKind::Manifests, Vec::new());
    let options = Options {
        // 2025-11-22T00:00:00Z: token ages do not depend on the clock.
        now: 1_763_769_600,
        ..Options::default()
    };
    let a = assess(&input, &options);
    for f in Format::ALL {
        let _ = render(&a, f);
    }
    // What assess writes, diff must read back.
    let json = render(&a, Format::Json);
    if let Err(e) = keycard_assess::diff::parse_assessment(&json, "fuzz.json") {
        panic!("the JSON report of an assessment does not parse back: {e}");
    }
});
