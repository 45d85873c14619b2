//! Ingestion throughput: one million Hubble `{"flow":...}` lines of about
//! 600 bytes (half of them the second observation of a connection, as
//! from the destination's node), generated on the fly so the input never
//! sits in memory, the way a large exporter file streams from disk.
//!
//! `cargo bench -p keycard-flows --bench ingest`

use std::io::{BufReader, Read};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keycard_flows::ingest::{IngestOptions, Ingester};

#[path = "support/hubble_gen.rs"]
mod hubble_gen;
use hubble_gen::line;

const N: usize = 1_000_000;

struct Lines {
    i: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for Lines {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.i == N {
                return Ok(0);
            }
            self.buf.clear();
            line(self.i, &mut self.buf);
            self.pos = 0;
            self.i += 1;
        }
        let k = out.len().min(self.buf.len() - self.pos);
        out[..k].copy_from_slice(&self.buf[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

fn run() -> usize {
    let mut ing = Ingester::new(None, IngestOptions::default());
    let src = Lines {
        i: 0,
        buf: Vec::new(),
        pos: 0,
    };
    if ing
        .ingest_reader("bench", BufReader::with_capacity(1 << 16, src))
        .is_err()
    {
        return 0;
    }
    ing.finish().map(|(e, _)| e.len()).unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("hubble_jsonpb_1m_lines", |b| b.iter(run));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
