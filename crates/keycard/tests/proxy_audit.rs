#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keycard proxy --audit-log DIR` end to end: the proxy gets its SVID from
//! `keycard up`'s Workload API and sits in front of a loopback app. After
//! allowed and denied requests (each with its x-request-id, over plaintext
//! in permissive mode and over mTLS through the proxy's own outbound
//! listener), `keycard audit verify` passes, `keycard audit why` names the
//! denying policy and rule, `keycard audit query --outcome deny` lists
//! exactly the denials, and one byte changed in a stored record makes
//! verify fail naming it. With `--audit-failure closed`, a log that cannot
//! take records makes the proxy answer 503 `decision-log-unavailable`
//! without forwarding, until writes succeed again.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const TD: &str = "proxy-audit.test";
const APP_ID: &str = "spiffe://proxy-audit.test/app";

mod common;
use common::{free_port, Kill, Resp, POLICIES};

fn keycard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keycard"));
    c.env("NO_COLOR", "1")
        .env_remove("KEYCARD_LOG")
        .env_remove("KEYCARD_DATA_DIR")
        .env_remove("KEYCARD_POSTGRES")
        .env_remove("SPIFFE_ENDPOINT_SOCKET");
    c
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// `keycard up` in `dir` with an entry that gives this process's uid
/// [`APP_ID`]; returns the running server and the Workload API endpoint.
fn trust_domain(dir: &Path) -> (Kill, String) {
    let up = Kill(
        keycard()
            .args([
                "up",
                "--trust-domain",
                TD,
                "--api-listen",
                "127.0.0.1:0",
                "--no-admission",
                "--data-dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("up.json").exists() {
        assert!(Instant::now() < deadline, "keycard up did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = keycard()
        .args(["entry", "create", "--spiffe-id", APP_ID, "--selector"])
        .arg(format!("unix:uid:{}", uid()))
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "entry create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = std::path::absolute(dir.join("agent.sock")).unwrap();
    (up, format!("unix://{}", socket.display()))
}

/// A tiny HTTP/1.1 app that answers 200 "app ok" and counts what it served.
fn app() -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().take(500) {
            let Ok(mut s) = conn else { continue };
            let hits = h.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    let body = "app ok\n";
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, hits)
}

/// One GET on its own connection, with `x-request-id: id`.
fn get(port: u16, path: &str, id: &str) -> std::io::Result<Resp> {
    common::get(port, path, &format!("x-request-id: {id}\r\n"))
}

/// The proxy's ports as it reported them.
struct Proxy {
    child: Kill,
    inbound: u16,
    outbound: Option<u16>,
}

fn port_of(line: &str, key: &str) -> Option<u16> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key))
        .and_then(|a| a.split(',').next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
}

/// `keycard proxy` in permissive mode in front of `app`, its SVID from
/// `endpoint`, policies from `dir/policies`, plus `extra` arguments. With
/// `outbound`, an outbound listener reaches the proxy's own inbound over
/// mTLS. The agent mints asynchronously after the entry lands, so a proxy
/// that found no SVID yet is started again (a few times).
fn start_proxy(endpoint: &str, dir: &Path, app: u16, outbound: bool, extra: &[&str]) -> Proxy {
    for _ in 0..10 {
        let inbound = free_port();
        let mut cmd = keycard();
        cmd.args(["proxy", "--mode", "permissive", "--workload-api", endpoint])
            .arg("--inbound")
            .arg(format!("127.0.0.1:{inbound}=127.0.0.1:{app}"))
            .arg("--policy-dir")
            .arg(dir.join("policies"))
            .args(extra);
        if outbound {
            cmd.arg("--outbound")
                .arg(format!("127.0.0.1:0=127.0.0.1:{inbound}"))
                .args(["--upstream-id", APP_ID]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut child = Kill(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("keycard proxy: {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("keycard proxy: id=") {
                        assert!(rest.starts_with(APP_ID), "{line}");
                        return Proxy {
                            child,
                            inbound: port_of(rest, "inbound=").unwrap(),
                            outbound: port_of(rest, "outbound="),
                        };
                    }
                }
                // stderr closed: the proxy exited (no SVID yet, or the port was taken).
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("keycard proxy did not report its listeners within 40 s")
                }
            }
        }
        let status = child.0.wait().unwrap();
        eprintln!("keycard proxy exited ({status}); starting it again");
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("keycard proxy never started");
}

/// SIGTERM: the writer commits what is queued and signs a checkpoint.
fn stop(p: &mut Proxy) {
    let pid = p.child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = p.child.0.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "keycard proxy after SIGTERM");
            return;
        }
        assert!(Instant::now() < deadline, "keycard proxy ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `keycard audit ARGS --dir DIR`: (exit code, stdout, stderr).
fn audit(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = keycard()
        .arg("audit")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Ids of the records with `outcome`, as `keycard audit query` lists them.
fn ids(dir: &Path, outcome: &str) -> Vec<String> {
    let (code, out, err) = audit(dir, &["query", "--outcome", outcome, "-o", "json"]);
    assert_eq!(code, 0, "query: {err}");
    let mut v: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/app.yaml"), POLICIES).unwrap();
    let log = dir.path().join("log");
    (dir, log)
}

#[test]
fn proxy_decisions_reach_the_tamper_evident_log() {
    let (dir, log) = setup();
    let (_up, endpoint) = trust_domain(&dir.path().join("trust"));
    let (app_port, hits) = app();
    let log_arg = log.display().to_string();
    let mut proxy = start_proxy(
        &endpoint,
        dir.path(),
        app_port,
        true,
        &["--audit-log", &log_arg],
    );
    let outbound = proxy.outbound.expect("the outbound listener");

    // Plaintext straight to the inbound listener, and mTLS through the
    // outbound one (the caller is then the proxy's own SPIFFE ID).
    let cases = [
        (proxy.inbound, "req-allow-1", "/allowed/a", 200),
        (proxy.inbound, "req-deny-1", "/denied/b", 403),
        (outbound, "req-allow-2", "/allowed/c", 200),
        (outbound, "req-deny-2", "/other", 403),
        (proxy.inbound, "req-deny-3", "/denied/d", 403),
    ];
    for (port, id, path, status) in cases {
        let r = get(port, path, id).unwrap();
        assert_eq!(r.status, status, "{id}: {:?} {}", r.headers, r.body);
        if status == 403 {
            let reason = r.header("x-keycard-reason").unwrap_or_default();
            assert!(!reason.is_empty(), "{id}: {:?}", r.headers);
        } else {
            assert_eq!(r.body, "app ok\n", "{id}");
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "only the allowed reached the app"
    );

    stop(&mut proxy);

    let (code, out, err) = audit(&log, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(
        !out.contains("not covered by a checkpoint"),
        "shutdown signs a checkpoint: {out}"
    );

    let (code, out, err) = audit(&log, &["why", "req-deny-1"]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "point:     proxy",
        "subject:   ip:127.0.0.1",
        "outcome:   deny",
        "policy:    block-denied",
        "rule:      denied-paths",
        "reason:    denied_by_policy",
        "input:     sha256:",
        "bundle:    sha256:",
        ", verified",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let (code, out, _) = audit(&log, &["why", "req-deny-2"]);
    assert_eq!(code, 0);
    let subject = format!("subject:   {APP_ID}");
    for want in [
        "policy:    app-readers",
        "reason:    no_allow_match",
        subject.as_str(),
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    assert_eq!(
        ids(&log, "deny"),
        ["req-deny-1", "req-deny-2", "req-deny-3"],
        "exactly the denials"
    );
    assert_eq!(ids(&log, "allow"), ["req-allow-1", "req-allow-2"]);

    // One byte of a stored record changed: verify fails and names it.
    let db = rusqlite::Connection::open(log.join("audit.db")).unwrap();
    let (idx, mut data): (i64, Vec<u8>) = db
        .query_row(
            "SELECT idx, data FROM audit_records WHERE id = 'req-deny-3'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let at = data.windows(4).position(|w| w == b"deny").unwrap();
    data[at] = b'D';
    db.execute(
        "UPDATE audit_records SET data = ?1 WHERE idx = ?2",
        rusqlite::params![data, idx],
    )
    .unwrap();
    drop(db);
    let (code, out, err) = audit(&log, &["verify"]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("TAMPERING DETECTED"), "{err}");
    assert!(
        err.contains(&format!("record {idx} (id req-deny-3) was altered")),
        "{err}"
    );
}

#[test]
fn proxy_refuses_with_503_while_the_log_cannot_take_records() {
    let (dir, log) = setup();
    let (_up, endpoint) = trust_domain(&dir.path().join("trust"));
    let (app_port, hits) = app();

    // A log directory that cannot be created: the proxy does not start.
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let bad = dir.path().join("a-file/log");
    let out = keycard()
        .args(["proxy", "--mode", "permissive", "--workload-api", &endpoint])
        .arg("--inbound")
        .arg(format!("127.0.0.1:{}=127.0.0.1:{app_port}", free_port()))
        .arg("--audit-log")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");

    // A log limited to 1 MiB, as on a small disk.
    let log_arg = log.display().to_string();
    let mut proxy = start_proxy(
        &endpoint,
        dir.path(),
        app_port,
        false,
        &[
            "--audit-log",
            &log_arg,
            "--audit-failure",
            "closed",
            "--audit-max-size-mib",
            "1",
        ],
    );
    let r = get(proxy.inbound, "/allowed/first", "req-first").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ids(&log, "allow").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first record was never stored"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Something else fills the space the log may use: its next commit fails.
    let db = rusqlite::Connection::open(log.join("audit.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE filler (b BLOB); INSERT INTO filler VALUES (zeroblob(2097152));",
    )
    .unwrap();

    // Requests still queue until a commit fails; then every one is refused
    // with 503 and never reaches the app.
    let mut refused = None;
    for n in 0..100 {
        let id = format!("req-full-{n}");
        let before = hits.load(Ordering::SeqCst);
        let r = get(proxy.inbound, "/allowed/x", &id).unwrap();
        if r.status == 503 {
            assert_eq!(
                r.header("x-keycard-reason"),
                Some("decision-log-unavailable"),
                "{:?}",
                r.headers
            );
            assert_eq!(
                hits.load(Ordering::SeqCst),
                before,
                "a refused request was forwarded"
            );
            refused = Some(id);
            break;
        }
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = refused.expect("the proxy never refused while the log was full");
    // Denied requests are refused too (503, not 403): nothing is decided unlogged.
    let r = get(proxy.inbound, "/denied/x", "req-full-denied").unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("x-keycard-reason"),
        Some("decision-log-unavailable")
    );

    // Space again: the writer's retry succeeds and requests pass.
    db.execute_batch("DROP TABLE filler;").unwrap();
    drop(db);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        let r = get(proxy.inbound, "/allowed/y", &format!("req-after-{n}")).unwrap();
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(Instant::now() < deadline, "the proxy never recovered");
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }

    stop(&mut proxy);
    let (code, out, err) = audit(&log, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    // The refusal is itself on record, naming the log as the reason.
    let (code, out, err) = audit(&log, &["why", &refused]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("outcome:   deny"), "{out}");
    assert!(out.contains("reason:    decision-log-unavailable"), "{out}");
}
