//! Writes the ingest bench's synthetic Hubble flows to stdout, so the
//! `keycard flows ingest` command can be measured on the same input:
//!
//! `cargo run --release -p keycard-flows --example gen_hubble -- 1000000 > flows.jsonl`

use std::io::{BufWriter, Write};

#[path = "../benches/support/hubble_gen.rs"]
mod hubble_gen;

fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut buf = Vec::with_capacity(1024);
    for i in 0..n {
        buf.clear();
        hubble_gen::line(i, &mut buf);
        out.write_all(&buf)?;
    }
    out.flush()
}
