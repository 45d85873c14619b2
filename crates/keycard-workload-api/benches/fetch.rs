//! FetchX509SVID latency over the Unix socket from a warm source: one call
//! = open the stream, attest the caller (UnixAttestor: /proc reads, cached
//! binary hash), build the response, receive the first message.
//!
//! Run: `cargo bench -p keycard-workload-api --bench fetch`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{my_ids, raw_client, server_stream, with_header, TestCa, TestServer, TestSource};
use criterion::{criterion_group, criterion_main, Criterion};
use keycard_workload_api::proto::{X509SvidRequest, X509SvidResponse};

type Client = tonic::client::Grpc<tonic::transport::Channel>;

async fn fetch(c: &mut Client) -> X509SvidResponse {
    let mut s = server_stream::<_, X509SvidResponse>(
        c,
        "/SpiffeWorkloadAPI/FetchX509SVID",
        with_header(X509SvidRequest {}),
    )
    .await
    .unwrap();
    s.message().await.unwrap().unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ca = TestCa::new("example.org");
    let source = TestSource::new(&ca);
    source.set_svid(
        &format!("unix:uid:{}", my_ids().0),
        ca.mint("spiffe://example.org/bench", 1),
    );
    let (server, mut client) = rt.block_on(async {
        let server = TestServer::start(source.clone());
        let client = raw_client(&server.socket).await;
        (server, client)
    });
    // Warm: attestation's binary hash is cached after the first call.
    rt.block_on(async {
        for _ in 0..50 {
            assert_eq!(fetch(&mut client).await.svids.len(), 1);
        }
    });

    // Percentiles from a plain loop (criterion reports mean and median).
    let n = 2000;
    let mut samples: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = fetch(&mut client).await;
            v.push(t.elapsed());
            assert_eq!(r.svids.len(), 1);
        }
        v
    });
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "FetchX509SVID over the Unix socket, {n} calls: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        samples[samples.len() - 1]
    );

    c.bench_function("fetch_x509_svid_unix_socket", |b| {
        b.iter(|| rt.block_on(fetch(&mut client)))
    });

    rt.block_on(server.stop());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(200).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
