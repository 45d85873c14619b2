//! Hubble exports wrap each flow as `{"flow":{...},"node_name":...}`
//! (`hubble observe -o jsonpb`, exporter files). The input is the body of
//! the `flow` object, so mutations reach the flow fields (addresses of
//! both families, ports, pods, verdicts) instead of the outer JSON. Any
//! body must be ingested, counted or reported, never panic or hang.
#![no_main]
use keycard_flows::ingest::{IngestOptions, Ingester};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = Vec::with_capacity(data.len() * 2 + 64);
    // Each input line is one flow body; two copies exercise the caches.
    for _ in 0..2 {
        for body in data.split(|&b| b == b'\n') {
            lines.extend_from_slice(b"{\"flow\":");
            lines.extend_from_slice(body);
            lines.extend_from_slice(b",\"node_name\":\"n1\",\"time\":\"2024-05-01T10:00:00Z\"}\n");
        }
    }
    let opts = IngestOptions {
        max_line_bytes: 64 * 1024,
        ..IngestOptions::default()
    };
    let mut ing = Ingester::new(None, opts);
    if ing.ingest_reader("fuzz.jsonl", lines.as_slice()).is_ok() {
        let _ = ing.finish();
    }
});
