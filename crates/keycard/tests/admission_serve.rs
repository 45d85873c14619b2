//! The real `keycard admission serve` binary over HTTPS on 127.0.0.1: the
//! default packs deny, allow and warn; policies, exceptions and broken files
//! in an `--enforce-dir` are followed without a restart; malformed
//! AdmissionReviews get 400; `--audit-log` decisions can be queried.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../keycard-server/tests/admission_fixtures/mod.rs"]
mod admission_fixtures;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use admission_fixtures::*;
use keycard_server::control::{Grant, GrantKind, GrantStatus};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keycard");
/// Bound on any one request, and on the server coming up.
const WAIT: Duration = Duration::from_secs(30);

/// A running `keycard admission serve`, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    stderr: Arc<Mutex<String>>,
    _tmp: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let cert = tmp.path().join("tls.crt");
        let key = tmp.path().join("tls.key");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let mut child = Command::new(BIN)
            .args(["admission", "serve", "--listen", "127.0.0.1:0", "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--workers", "2"])
            .args(extra)
            .env("KEYCARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in lines.lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on https://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(WAIT) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the webhook did not listen within {WAIT:?}:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        Server {
            child,
            addr,
            ca: ck.cert.der().clone(),
            stderr,
            _tmp: tmp,
        }
    }

    /// One HTTP/1.1 request on its own TLS connection: (status, JSON body).
    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect_timeout(&self.addr, WAIT).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).unwrap();
        tls.write_all(body).unwrap();
        tls.flush().unwrap();
        let mut raw = Vec::new();
        if let Err(e) = tls.read_to_end(&mut raw) {
            // A peer that closes without close_notify still sent its answer.
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof,
                "{method} {path}: {e}\n{}",
                self.log()
            );
        }
        parse_response(&raw)
    }

    fn review(&self, review: &Value) -> Value {
        let (status, v) = self.request(
            "POST",
            "/validate",
            Some(&serde_json::to_vec(review).unwrap()),
        );
        assert_eq!(status, 200, "{v}\n{}", self.log());
        v
    }

    /// Whether a CREATE of the compliant Deployment `name` is allowed.
    fn allowed(&self, uid: &str, name: &str) -> bool {
        let v = self.review(&review(
            uid,
            "CREATE",
            "payments",
            &compliant_deployment(name),
        ));
        v["response"]["allowed"].as_bool().unwrap()
    }

    /// Waits (at most 15 s) until `name` is decided `want`.
    fn until(&self, name: &str, want: bool) {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < Duration::from_secs(15) {
            n += 1;
            if self.allowed(&format!("{name}-{n}"), name) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{name} not allowed={want} within 15 s\n{}", self.log());
    }

    fn healthy(&self) {
        let (status, v) = self.request("GET", "/healthz", None);
        assert_eq!(status, 200, "{v}\n{}", self.log());
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Still running (not crashed)?
    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the webhook exited\n{}",
            self.log()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_response(raw: &[u8]) -> (u16, Value) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    } else if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
        body.truncate(n);
    }
    // /healthz answers text; everything else JSON.
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, v)
}

fn rego(name: &str) -> String {
    format!(
        "# METADATA\n# custom:\n#   id: team-no-{name}\n#   severity: high\npackage team.names\n\nimport rego.v1\n\ndeny contains {{\"msg\": \"{name} is not allowed here\"}} if input.metadata.name == \"{name}\"\n"
    )
}

fn warnings(v: &Value) -> Vec<String> {
    v["response"]["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_default_packs_deny_allow_and_warn() {
    let server = Server::start(&[]);
    server.healthy();

    let v = server.review(&review(
        "deny-1",
        "CREATE",
        "payments",
        &privileged_deployment("api"),
    ));
    assert_eq!(v["response"]["uid"], "deny-1", "{v}");
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("[zt-privileged]"), "{msg}");

    let v = server.review(&review(
        "allow-1",
        "CREATE",
        "payments",
        &compliant_deployment("api"),
    ));
    assert_eq!(v["response"]["allowed"], true, "{v}");
    assert!(warnings(&v).is_empty(), "{v}");

    let v = server.review(&review(
        "warn-1",
        "CREATE",
        "payments",
        &unlabelled_deployment("api"),
    ));
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let w = warnings(&v);
    assert!(
        w.iter().any(|w| w.contains("data-classification")),
        "a warning names the missing label: {v}"
    );
}

#[test]
fn an_enforce_dir_is_followed_without_a_restart_and_keeps_the_last_good_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let enforce = tmp.path().join("enforce");
    let admission = enforce.join("admission");
    std::fs::create_dir_all(&admission).unwrap();
    let mut server = Server::start(&[
        "--enforce-dir",
        enforce.to_str().unwrap(),
        "--poll-ms",
        "100",
    ]);
    assert!(server.allowed("u-0", "api"));

    // A Rego policy arrives: api is denied, by that rule.
    std::fs::write(admission.join("names.rego"), rego("api")).unwrap();
    server.until("api", false);
    let v = server.review(&review(
        "u-1",
        "CREATE",
        "payments",
        &compliant_deployment("api"),
    ));
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("team-no-api"), "{msg}");
    assert!(server.allowed("u-2", "web"));

    // An exception lets it through; removed, the policy denies again.
    let exceptions = enforce.join("exceptions.yaml");
    write_atomically(
        &exceptions,
        "exceptions:\n- rule: team-no-api\n  match: {name: api}\n  owner: team@example.com\n  reason: moving\n  expires: 2099-12-31\n",
    );
    server.until("api", true);
    std::fs::remove_file(&exceptions).unwrap();
    server.until("api", false);

    // The policy file broken in place: the last good policy stays in force
    // and the process goes on serving.
    std::fs::write(
        admission.join("names.rego"),
        "package team.names\ndeny contains x if {\n",
    )
    .unwrap();
    // Seen (and refused) by the watcher, not merely not yet polled.
    let start = Instant::now();
    while !server
        .log()
        .contains("do not load; keeping the last good ones")
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the broken file was not reported within 15 s\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for n in 0..3 {
        assert!(
            !server.allowed(&format!("broken-{n}"), "api"),
            "{}",
            server.log()
        );
    }
    assert!(server.allowed("u-3", "web"));
    server.healthy();
    server.assert_running();

    // The next good change is taken.
    std::fs::write(admission.join("names.rego"), rego("web")).unwrap();
    server.until("web", false);
    assert!(server.allowed("u-4", "api"));

    // An approved exception grant in grants.json lets web in.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let grant = Grant {
        id: "g1".into(),
        kind: GrantKind::Exception {
            policy: "names".into(),
            rule: "team-no-web".into(),
            resource: "Deployment/payments/web".into(),
        },
        subject: "alice".into(),
        requester: "alice".into(),
        reason: "incident".into(),
        duration_secs: 600,
        status: GrantStatus::Active,
        approver: Some("bob".into()),
        requested_at: now,
        expires_at: Some(now + 600),
    };
    write_atomically(
        &enforce.join("grants.json"),
        &serde_json::json!({ "grants": [grant] }).to_string(),
    );
    server.until("web", true);
    server.assert_running();
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn malformed_reviews_get_400_and_decisions_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("audit");
    let mut server = Server::start(&["--audit-log", data.to_str().unwrap()]);

    // Without a uid there is no AdmissionReview to answer: HTTP 400.
    let mut r = review("bad-1", "CREATE", "payments", &compliant_deployment("api"));
    r["request"].as_object_mut().unwrap().remove("uid");
    let (status, v) = server.request("POST", "/validate", Some(&serde_json::to_vec(&r).unwrap()));
    assert_eq!(status, 400, "without request.uid: {v}");
    assert_eq!(v["kind"], "Status", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("request.uid"),
        "the error names request.uid: {v}"
    );

    // With a uid the API server gets an AdmissionReview that denies with a
    // 400 Status (an HTTP error would let the request in under
    // failurePolicy: Ignore).
    let mut r = review("bad-2", "CREATE", "payments", &compliant_deployment("api"));
    r["request"].as_object_mut().unwrap().remove("object");
    let v = server.review(&r);
    assert_eq!(v["response"]["uid"], "bad-2", "{v}");
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert_eq!(v["response"]["status"]["code"], 400, "{v}");
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("request.object"),
        "the error names request.object: {v}"
    );
    server.healthy();
    server.assert_running();

    let v = server.review(&review(
        "rec-deny",
        "CREATE",
        "payments",
        &privileged_deployment("priv"),
    ));
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let v = server.review(&review(
        "rec-allow",
        "CREATE",
        "payments",
        &compliant_deployment("clean"),
    ));
    assert_eq!(v["response"]["allowed"], true, "{v}");

    // The allow was answered only once recorded (fail closed); query the log.
    let start = Instant::now();
    let records = loop {
        let out = Command::new(BIN)
            .args(["audit", "query", "--data-dir"])
            .arg(&data)
            .args(["--point", "admission", "-o", "json"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let records: Vec<Value> = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let found = |name: &str, outcome: &str| {
            records.iter().any(|r| {
                r["resource"].as_str().unwrap_or("").contains(name) && r["outcome"] == outcome
            })
        };
        if out.status.success() && found("priv", "deny") && found("clean", "allow") {
            break records;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "decisions not queryable within 15 s (status {}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        records.iter().all(|r| r["point"] == "admission"),
        "{records:?}"
    );
}
