//! Memory of `keycard up` (server and agent in one process) holding 1,000
//! cached workload X509-SVIDs: an upper bound for the agent alone, whose
//! target is 50 MB RSS. Also times the first sync (1,000 SVIDs minted).
//!
//! `cargo bench -p keycard-server --bench agent_memory`

use std::time::{Duration, Instant, SystemTime};

use keycard_core::{RegistrationEntry, Selector};
use keycard_server::{Overrides, UpConfig};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("KEYCARD_BENCH_SVIDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tempdir: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        let o = Overrides {
            data_dir: Some(tmp.path().join("kc")),
            trust_domain: Some("bench.test".into()),
            api_listen: Some("127.0.0.1:0".into()),
            no_admission: true,
            ..Overrides::default()
        };
        let Ok(config) = UpConfig::parse("", "bench", &o) else {
            eprintln!("config");
            return;
        };
        let up = match keycard_server::start(config).await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("start: {e}");
                return;
            }
        };
        let before = rss_kib();
        {
            let mut st = up.state.store();
            for i in 0..n {
                let Ok(sel) = format!("unix:uid:{}", 10_000 + i).parse::<Selector>() else {
                    return;
                };
                let Ok(id) = format!("spiffe://bench.test/w/{i}").parse() else {
                    return;
                };
                let e = RegistrationEntry {
                    id: format!("e{i:05}"),
                    spiffe_id: id,
                    parent_id: None,
                    selectors: vec![sel],
                    x509_ttl_secs: 3600,
                    jwt_ttl_secs: 300,
                    dns_names: vec![],
                    admin: false,
                    created_at: 0,
                };
                if let Err(e) = st.create_entry(&e) {
                    eprintln!("entry: {e}");
                    return;
                }
            }
        }
        let t = Instant::now();
        if let Err(e) = up.agent.sync(SystemTime::now()) {
            eprintln!("sync: {e}");
        }
        let mint = t.elapsed();
        let cached = up.agent.expiries(SystemTime::now()).len();
        let after = rss_kib();
        println!(
            "keycard up with {cached} cached X509-SVIDs: RSS {:.1} MB (before the entries {:.1} MB); first sync minted them in {:.2} s ({:.0} SVIDs/s)",
            after as f64 / 1024.0,
            before as f64 / 1024.0,
            mint.as_secs_f64(),
            cached as f64 / mint.as_secs_f64().max(1e-9)
        );
        up.shutdown(Duration::from_secs(5)).await;
    });
}
