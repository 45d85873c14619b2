#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Ingestion never panics or stops on damaged input: random, truncated and
//! spliced variants of real flow lines are counted as lines, reported as
//! errors or skipped, and the good lines around them still count.
//! Bounded and deterministic (a fixed seed), unlike the fuzz target in
//! `fuzz/fuzz_targets/flow_line.rs`, which explores without bound.

use std::path::Path;

use keycard_flows::ingest::{IngestOptions, Ingester};
use keycard_flows::inventory::Inventory;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fixture_lines() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for name in ["hubble-json.jsonl", "hubble-jsonpb.jsonl", "keycard.jsonl"] {
        let text = std::fs::read(dir.join(name)).unwrap();
        out.extend(
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    // The fixtures hold some bad lines on purpose: keep the good ones.
    out.retain(|l| {
        let mut input = l.clone();
        input.push(b'\n');
        run(None, &input).error_count == 0
    });
    assert!(out.len() > 10, "{}", out.len());
    out
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b"\\",
    b"\\u00e9",
    b"\\ud800",
    b"null",
    b"-1",
    b"1e999",
    b"99999999999999999999",
    b"\"flow\":",
    b"\"pod_name\":",
    b"\"labels\":",
    b"\"workloads\":",
    b"\"IP\":",
    b"\"l4\":{\"TCP\":",
    b"\"time\":",
    b"\xff",
    b"\xc3",
    b"\t",
    b"\r",
];

/// A damaged variant of `line`.
fn mutate(rng: &mut Rng, line: &[u8], other: &[u8]) -> Vec<u8> {
    let mut l = line.to_vec();
    for _ in 0..=rng.below(3) {
        match rng.below(6) {
            // Truncated, as a file cut mid-write.
            0 => l.truncate(rng.below(l.len() + 1)),
            // A byte changed.
            1 if !l.is_empty() => {
                let i = rng.below(l.len());
                l[i] = (rng.next() & 0xff) as u8;
            }
            // A token inserted.
            2 => {
                let i = rng.below(l.len() + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                l.splice(i..i, t.iter().copied());
            }
            // Spliced with another line.
            3 => {
                let i = rng.below(l.len() + 1);
                let j = rng.below(other.len() + 1);
                l.truncate(i);
                l.extend_from_slice(&other[j..]);
            }
            // A range removed.
            4 if !l.is_empty() => {
                let i = rng.below(l.len());
                let j = i + rng.below(l.len() - i + 1);
                l.drain(i..j);
            }
            // Random bytes.
            _ => {
                l = (0..rng.below(64))
                    .map(|_| (rng.next() & 0xff) as u8)
                    .collect()
            }
        }
    }
    // One line stays one line.
    l.retain(|b| *b != b'\n');
    l
}

fn run(inv: Option<&Inventory>, input: &[u8]) -> keycard_flows::ingest::IngestReport {
    let opts = IngestOptions {
        max_line_bytes: 4096,
        ..IngestOptions::default()
    };
    let mut ing = Ingester::new(inv, opts);
    ing.ingest_reader("fuzzed.jsonl", input).unwrap();
    let (_, report) = ing.finish().unwrap();
    report
}

#[test]
fn damaged_lines_are_counted_and_never_fatal() {
    let good = fixture_lines();
    let inv_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inventory.yaml"),
    )
    .unwrap();
    let (objects, _) = keycard_k8s::parse_str("inv.yaml", &inv_text, &Default::default());
    let inv = Inventory::from_objects(&objects);
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    for round in 0..20 {
        let mut input = Vec::new();
        let n = 200;
        for _ in 0..n {
            let a = &good[rng.below(good.len())];
            let b = &good[rng.below(good.len())];
            input.extend(mutate(&mut rng, a, b));
            input.push(b'\n');
        }
        // A good line last: damage before it must not hide it.
        input.extend(&good[0]);
        input.push(b'\n');
        for inv in [None, Some(&inv)] {
            let rep = run(inv, &input);
            assert_eq!(rep.lines, n + 1, "round {round}");
            assert!(rep.error_count > 0, "round {round}: nothing was damaged?");
            assert!(rep.errors.len() as u64 <= rep.error_count);
            for e in &rep.errors {
                assert_eq!(e.file, "fuzzed.jsonl");
                assert!((1..=n + 1).contains(&e.line), "{e}");
                assert!(!e.message.is_empty());
            }
        }
    }
}

#[test]
fn a_truncated_line_is_an_error_on_its_own_line() {
    let good = fixture_lines();
    let mut rng = Rng(7);
    for line in &good {
        for _ in 0..20 {
            let cut = 1 + rng.below(line.len() - 1);
            let mut input = line[..cut].to_vec();
            input.push(b'\n');
            input.extend(line);
            input.push(b'\n');
            let rep = run(None, &input);
            assert_eq!(rep.lines, 2);
            // A prefix of a JSON object is never a whole one.
            assert_eq!(rep.error_count, 1, "cut at {cut}: {:?}", rep.errors);
            assert_eq!(rep.errors[0].line, 1);
        }
    }
}
