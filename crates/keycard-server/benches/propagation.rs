//! Propagation of a revocation: from the API call that records it to the
//! moment each of 100 connected agents holds it (its long-poll sync
//! answered with it). One process: a `keycard server` (SQLite, no local
//! agent) and 100 node-API clients, each attested with its own join token
//! and holding its own mTLS connection and long poll.
//!
//! Prints p50/p90/p99/max of the per-agent delay over every round.
//!
//! ```text
//! CARGO_TARGET_DIR=target/bench cargo bench -p keycard-server --bench propagation
//! ```
//! `KEYCARD_BENCH_AGENTS` and `KEYCARD_BENCH_ROUNDS` change the defaults
//! (100 agents, 30 rounds).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use keycard_server::remote_agent::{read_pem_certs, NodeClient};
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use serde_json::json;
use tokio::sync::mpsc;

const TD: &str = "bench.test";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let agents = env_usize("KEYCARD_BENCH_AGENTS", 100);
    let rounds = env_usize("KEYCARD_BENCH_ROUNDS", 30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(agents, rounds));
}

async fn run(agents: usize, rounds: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let o = Overrides {
        data_dir: Some(dir.clone()),
        trust_domain: Some(TD.into()),
        api_listen: Some("127.0.0.1:0".into()),
        no_admission: true,
        ..Overrides::default()
    };
    let mut cfg = UpConfig::parse("", "bench", &o).unwrap();
    cfg.agent_enabled = false;
    let up = keycard_server::start(cfg).await.unwrap();
    let url = up.endpoints.api.clone();
    let bundle = read_pem_certs(&dir.join("bundle.pem")).unwrap();
    let api = connect_data_dir(&dir).unwrap().client;

    // Attest every agent and bring each to the current state.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(usize, usize, Instant)>();
    let start = Instant::now();
    let mut ready = Vec::new();
    for a in 0..agents {
        let token = {
            let mut st = up.state.store();
            keycard_identity::generate_join_token(
                st.as_mut(),
                &TD.parse().unwrap(),
                Duration::from_secs(600),
                None,
                SystemTime::now(),
            )
            .unwrap()
        };
        let client = NodeClient::new(&url, &bundle).unwrap();
        client.attest_join_token(&token.token).await.unwrap();
        let first = client.sync(0, "", Duration::ZERO).await.unwrap();
        let tx = seen_tx.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(ready_rx);
        tokio::spawn(async move {
            let (mut since, mut digest) = (first.version, first.digest);
            let mut ready_tx = Some(ready_tx);
            loop {
                let sync = client.sync(since, &digest, Duration::from_secs(30));
                // Tell the bench this agent's long poll is in flight.
                if let Some(t) = ready_tx.take() {
                    let _ = t.send(());
                }
                match sync.await {
                    Ok(resp) => {
                        let now = Instant::now();
                        for r in &resp.revocations {
                            if let Some(i) = r
                                .subject
                                .strip_prefix("spiffe://bench.test/revoked/")
                                .and_then(|i| i.parse::<usize>().ok())
                            {
                                let _ = tx.send((i, a, now));
                            }
                        }
                        since = resp.version;
                        digest = resp.digest;
                    }
                    Err(e) => {
                        eprintln!("agent {a}: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
    for r in ready {
        r.await.unwrap();
    }
    eprintln!(
        "{agents} agents attested and long-polling in {:.1?}",
        start.elapsed()
    );
    // Let every first long poll reach the server and wait.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut delays = Vec::with_capacity(agents * rounds);
    let mut api_times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t0 = Instant::now();
        let r = api
            .call(
                Method::POST,
                "/v1/revocations",
                Some(&json!({
                    "kind": "identity",
                    "subject": format!("spiffe://{TD}/revoked/{i}"),
                    "reason": "propagation bench",
                })),
            )
            .await
            .unwrap();
        api_times.push(t0.elapsed());
        assert_eq!(r.status, 201, "{:?}", r.body);
        let mut got = vec![false; agents];
        let mut n = 0;
        while n < agents {
            let (round, a, at) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
                .await
                .expect("every agent sees the revocation within 10 s")
                .unwrap();
            if round == i && !got[a] {
                got[a] = true;
                n += 1;
                delays.push(at.saturating_duration_since(t0));
            }
        }
        // Agents are back in their long polls before the next round.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delays.sort();
    api_times.sort();
    println!(
        "propagation of a revocation (API call to agent holding it), {agents} agents x {rounds} rounds = {} samples",
        delays.len()
    );
    println!(
        "  per-agent delay: p50 {:.2?}  p90 {:.2?}  p99 {:.2?}  max {:.2?}",
        pct(&delays, 0.5),
        pct(&delays, 0.9),
        pct(&delays, 0.99),
        delays[delays.len() - 1]
    );
    println!(
        "  API call alone:  p50 {:.2?}  max {:.2?}",
        pct(&api_times, 0.5),
        api_times[api_times.len() - 1]
    );
    drop(Arc::clone(&up.state));
    up.shutdown(Duration::from_secs(2)).await;
}
