//! The README's main command, as a user runs it: `keycard up` in a data
//! directory, `keycard entry create` against it, then a real SPIFFE client
//! (py-spiffe, on grpc-python) fetching its identity from the socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn keycard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keycard"))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

const PY: &str = r#"
import json
from spiffe import WorkloadApiClient
with WorkloadApiClient(default_timeout=10) as c:
    svid = c.fetch_x509_svid()
    jwt = c.fetch_jwt_svid({"db"})
    ok = c.validate_jwt_svid(jwt.token, "db")
    print(json.dumps({"x509": str(svid.spiffe_id), "jwt": str(jwt.spiffe_id), "valid": str(ok.spiffe_id)}))
"#;

#[test]
fn keycard_up_then_entry_create_then_a_real_spiffe_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let child = keycard()
        .args([
            "up",
            "--trust-domain",
            "e2e.test",
            "--api-listen",
            "127.0.0.1:0",
            "--admission-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _up = Running(child);
    wait_for(&dir.join("up.json"));

    let out = keycard()
        .args([
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://e2e.test/app",
            "--selector",
        ])
        .arg(format!("unix:uid:{}", uid()))
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("spiffe://e2e.test/app"));

    // Bad input: a clear error and exit 2, nothing created.
    let bad = keycard()
        .args([
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://e2e.test/x",
            "--selector",
            "unix:uid:root",
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("selectors"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let list = keycard()
        .args(["entry", "list", "--json", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);

    let Ok(python) = std::env::var("KEYCARD_TEST_PYTHON") else {
        eprintln!("skipped the py-spiffe half: KEYCARD_TEST_PYTHON not set");
        return;
    };
    let socket = std::path::absolute(dir.join("agent.sock")).unwrap();
    // The agent mints asynchronously after the entry lands: retry briefly.
    let start = Instant::now();
    loop {
        let out = Command::new(&python)
            .args(["-c", PY])
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", socket.display()),
            )
            .output()
            .unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["x509"], "spiffe://e2e.test/app");
            assert_eq!(v["jwt"], "spiffe://e2e.test/app");
            assert_eq!(v["valid"], "spiffe://e2e.test/app");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "py-spiffe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
