//! py-spiffe (grpc-python) against the server, unmodified: it sends the
//! socket path as HTTP/2 `:authority`, which the `h2` crate refuses unless
//! keycard's :authority fix rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{my_ids, TestCa, TestServer, TestSource};
use keycard_workload_api::ServeOptions;
use serde_json::Value;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(20);

struct Py {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Py {
    fn start(python: &str, socket: &std::path::Path) -> Py {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py_spiffe_check.py");
        let mut child = Command::new(python)
            .arg(script)
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", socket.display()),
            )
            .env("GRPC_VERBOSITY", "ERROR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("python: {line}"),
                }
            }
        });
        Py { child, lines }
    }

    /// The next line, which must be step `step`.
    async fn expect(&mut self, step: &str) -> Value {
        let v = tokio::time::timeout(T, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for python step {step}"))
            .unwrap_or_else(|| panic!("python exited before step {step}"));
        assert_eq!(v["step"], step, "python said {v}");
        v
    }
}

fn python() -> Option<String> {
    match std::env::var("KEYCARD_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            println!("skipped: KEYCARD_TEST_PYTHON not set");
            None
        }
    }
}

fn serial_u64(der: &[u8]) -> u64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.serial.clone().try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_fetches_validates_and_follows_rotation() {
    let Some(python) = python() else { return };
    let ca = TestCa::new("example.org");
    let other = TestCa::new("other.org");
    let source = TestSource::new(&ca);
    source.add_bundle(other.td.clone(), other.bundle(Vec::new()));
    let me = format!("unix:uid:{}", my_ids().0);
    let svid = ca.mint("spiffe://example.org/py", 11);
    source.set_svid(&me, svid);
    let server = TestServer::start(source.clone());

    let mut py = Py::start(&python, &server.socket);
    let v = py.expect("svid").await;
    assert_eq!(v["spiffe_id"], "spiffe://example.org/py");
    assert_eq!(v["serial"], 11);
    let v = py.expect("x509_bundles").await;
    assert_eq!(v["tds"], serde_json::json!(["example.org", "other.org"]));
    let v = py.expect("jwt").await;
    assert_eq!(v["spiffe_id"], "spiffe://example.org/py");
    assert_eq!(v["audience"], serde_json::json!(["svc-a"]));
    let v = py.expect("jwt_bundles").await;
    assert_eq!(v["kids"]["example.org"], serde_json::json!(["key-1"]));
    let v = py.expect("validate").await;
    assert_eq!(v["spiffe_id"], "spiffe://example.org/py");
    let v = py.expect("validate_wrong_audience").await;
    assert_eq!(v["refused"], true);

    let v = py.expect("stream").await;
    assert_eq!(v["serial"], 11);
    let rotated = ca.mint("spiffe://example.org/py", 12);
    assert_eq!(serial_u64(&rotated.cert_chain[0]), 12);
    source.set_svid(&me, rotated);
    let v = py.expect("stream").await;
    assert_eq!(v["serial"], 12);
    let v = py.expect("done").await;
    assert_eq!(v["distinct_serials"], 2);
    let v = py.expect("x509_source").await;
    assert_eq!(v["spiffe_id"], "spiffe://example.org/py");
    drop(py);
    server.stop().await;
}

/// Without the fix, the same client fails: the trap is real and the fix is
/// what makes the test above pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_authority_fix_py_spiffe_fails() {
    let Some(python) = python() else { return };
    let ca = TestCa::new("example.org");
    let source = TestSource::new(&ca);
    source.set_svid(
        &format!("unix:uid:{}", my_ids().0),
        ca.mint("spiffe://example.org/py", 1),
    );
    let server = TestServer::start_with(
        source,
        ServeOptions {
            rewrite_invalid_authority: false,
            ..ServeOptions::default()
        },
    );
    let mut py = Py::start(&python, &server.socket);
    let v = tokio::time::timeout(T, py.lines.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["step"], "fatal", "python said {v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(error.contains("RST_STREAM"), "{error}");
    drop(py);
    server.stop().await;
}
