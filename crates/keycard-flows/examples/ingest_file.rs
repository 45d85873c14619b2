//! Ingests flow files and renders the dependency graph, the library calls
//! behind `keycard flows ingest` followed by `keycard flows graph`, with
//! the wall time of each step on stderr. For measuring without building
//! the whole binary:
//!
//! `cargo run --release -p keycard-flows --example ingest_file -- flows.jsonl`

use std::fs::File;
use std::io::BufReader;
use std::time::Instant;

use keycard_flows::graph;
use keycard_flows::ingest::{read_edges, write_edges, FlowSource, IngestOptions, Ingester};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut sources = Vec::new();
    for path in std::env::args().skip(1) {
        let f = File::open(&path)?;
        sources.push(FlowSource::new(path, BufReader::with_capacity(1 << 16, f)));
    }
    let mut ing = Ingester::new(None, IngestOptions::default());
    ing.run(sources)?;
    let (edges, report) = ing.finish()?;
    let mut out = Vec::new();
    write_edges(&mut out, &edges)?;
    let ingested = started.elapsed();
    let (edges, errors) = read_edges("edges", out.as_slice(), 64 * 1024)?;
    let json = serde_json::to_string_pretty(&graph::to_json(&edges))?;
    let svg = graph::to_svg(&edges);
    eprintln!(
        "{} lines, {} flows, {} connections, {} edges ({} bad edge lines); ingest {:.2} s, graph (JSON {} bytes, SVG {} bytes) {:.2} s",
        report.lines,
        report.flows,
        report.connections,
        edges.len(),
        errors.len(),
        ingested.as_secs_f64(),
        json.len(),
        svg.len(),
        (started.elapsed() - ingested).as_secs_f64()
    );
    Ok(())
}
