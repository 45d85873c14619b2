//! Writes per second and read latency of the identity store, SQLite and
//! PostgreSQL side by side (issue 5). Each write is one durable,
//! acknowledged transaction (an entry created through the API is one).
//!
//! `KEYCARD_TEST_POSTGRES="host=127.0.0.1 user=postgres dbname=postgres" \
//!  cargo bench -p keycard-store --bench store`

use std::time::{Duration, Instant};

use keycard_core::{RegistrationEntry, Selector};
use keycard_store::{IdentityStore, PostgresStore, SqliteStore};

fn entry(i: usize) -> Option<RegistrationEntry> {
    Some(RegistrationEntry {
        id: format!("bench-{i:06}"),
        spiffe_id: format!("spiffe://bench.test/w/{i}").parse().ok()?,
        parent_id: None,
        selectors: vec![format!("unix:uid:{}", 10_000 + i)
            .parse::<Selector>()
            .ok()?],
        x509_ttl_secs: 3600,
        jwt_ttl_secs: 300,
        dns_names: vec![],
        admin: false,
        created_at: 0,
    })
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn run(name: &str, store: &mut dyn IdentityStore, n: usize) {
    let t = Instant::now();
    for i in 0..n {
        let Some(e) = entry(i) else { return };
        if let Err(err) = store.create_entry(&e) {
            eprintln!("{name}: write {i}: {err}");
            return;
        }
    }
    let w = t.elapsed();
    let mut reads = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("bench-{i:06}");
        let t = Instant::now();
        match store.entry(&id) {
            Ok(Some(_)) => reads.push(t.elapsed()),
            other => {
                eprintln!("{name}: read {id}: {other:?}");
                return;
            }
        }
    }
    reads.sort();
    println!(
        "{name:<10} {n} durable writes: {:>8.0}/s   reads by id: p50 {:>7.1} us  p99 {:>7.1} us",
        n as f64 / w.as_secs_f64(),
        pct(&reads, 0.5).as_secs_f64() * 1e6,
        pct(&reads, 0.99).as_secs_f64() * 1e6,
    );
}

fn main() {
    let n: usize = std::env::var("KEYCARD_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("no temp dir");
        return;
    };
    match SqliteStore::open(dir.path().join("bench.db")) {
        Ok(mut s) => run("sqlite", &mut s, n),
        Err(e) => eprintln!("sqlite: {e}"),
    }
    match std::env::var("KEYCARD_TEST_POSTGRES") {
        Ok(url) => {
            let schema = format!("kc_bench_{}", std::process::id());
            match PostgresStore::connect(&url, Some(&schema)) {
                Ok(mut s) => run("postgres", &mut s, n),
                Err(e) => eprintln!("postgres: {e}"),
            }
            if let Ok(mut c) = postgres::Client::connect(&url, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
            }
        }
        Err(_) => println!("postgres   skipped: KEYCARD_TEST_POSTGRES not set"),
    }
}
