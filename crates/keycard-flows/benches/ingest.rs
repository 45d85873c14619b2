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

const N: usize = 1_000_000;

/// A realistic line: Hubble's fields, labels and workloads, both
/// directions of one connection a millisecond apart.
fn line(i: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    let conn = i / 2;
    let dir = if i % 2 == 0 { "EGRESS" } else { "INGRESS" };
    let ms = i as u64;
    let (client, server) = (conn % 200, conn % 40);
    let _ = write!(
        out,
        concat!(
            r#"{{"flow":{{"time":"2024-05-01T{:02}:{:02}:{:02}.{:03}456789Z","uuid":"6f1c2e8a-0000-4000-8000-{:012}","verdict":"FORWARDED","#,
            r#""ethernet":{{"source":"aa:bb:cc:dd:ee:01","destination":"aa:bb:cc:dd:ee:02"}},"#,
            r#""IP":{{"source":"10.1.{}.{}","destination":"10.2.0.{}","ipVersion":"IPv4"}},"#,
            r#""l4":{{"TCP":{{"source_port":{},"destination_port":{},"flags":{{"SYN":true}}}}}},"#,
            r#""source":{{"ID":1234,"identity":56789,"namespace":"load","labels":["k8s:app=client{}","k8s:io.cilium.k8s.policy.serviceaccount=client{}","k8s:io.kubernetes.pod.namespace=load"],"pod_name":"client{}-5d9f7c6b8-abcd{}","workloads":[{{"name":"client{}","kind":"Deployment"}}]}},"#,
            r#""destination":{{"ID":4321,"identity":98765,"namespace":"load","labels":["k8s:app=server{}","k8s:io.kubernetes.pod.namespace=load"],"pod_name":"server{}-6c8d7b9f4-wxyz{}"}},"#,
            r#""Type":"L3_L4","node_name":"node-{}","event_type":{{"type":4}},"traffic_direction":"{}","trace_observation_point":"TO_STACK","is_reply":false,"Summary":"TCP Flags: SYN"}},"node_name":"node-{}","time":"2024-05-01T00:00:00Z"}}"#,
            "\n"
        ),
        (ms / 3_600_000) % 24,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000,
        i,
        (conn / 256) % 4,
        conn % 256,
        server,
        20_000 + (conn % 40_000),
        8000 + server,
        client,
        client,
        client,
        conn % 5,
        client,
        server,
        server,
        conn % 3,
        i % 2,
        dir,
        i % 2
    );
}

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
