//! Flow files (Hubble exports, keycard records) are untrusted input: any
//! bytes must be counted, reported or skipped, never panic or hang.
#![no_main]
use keycard_flows::ingest::{read_edges, IngestOptions, Ingester};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = IngestOptions {
        max_line_bytes: 64 * 1024,
        ..IngestOptions::default()
    };
    let mut ing = Ingester::new(None, opts);
    if ing.ingest_reader("fuzz.jsonl", data).is_ok() {
        let _ = ing.finish();
    }
    let _ = read_edges("fuzz.edges", data, 64 * 1024);
});
