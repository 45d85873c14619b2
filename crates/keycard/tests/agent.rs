//! `keycard server` and `keycard agent` as separate processes, as an
//! operator runs them: a join token from `keycard token generate`, the agent
//! attesting with it (a second agent replaying it is refused), an entry
//! reaching a real SPIFFE client (py-spiffe) through the agent, the server
//! killed with SIGKILL while the agent keeps serving, and the agent picking
//! up a change once the server is back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
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

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn server(dir: &Path, listen: &str) -> Running {
    let _ = std::fs::remove_file(dir.join("up.json"));
    let child = keycard()
        .args([
            "server",
            "--trust-domain",
            "bin.test",
            "--api-listen",
            listen,
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = Running(child);
    wait_for(&dir.join("up.json"));
    r
}

fn create_entry(dir: &Path, path: &str) -> String {
    let out = keycard()
        .args(["entry", "create", "--json", "--spiffe-id"])
        .arg(format!("spiffe://bin.test{path}"))
        .arg("--selector")
        .arg(format!("unix:uid:{}", uid()))
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    v["id"].as_str().unwrap().to_string()
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

/// Runs py-spiffe against `socket` until it reports `want` for the
/// X509-SVID, the JWT-SVID and the validation (bounded).
fn py_spiffe_sees(python: &str, socket: &Path, want: &str) {
    let start = Instant::now();
    loop {
        let out = Command::new(python)
            .args(["-c", PY])
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", socket.display()),
            )
            .output()
            .unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["x509"] == want {
                assert_eq!(v["jwt"], want);
                assert_eq!(v["valid"], want);
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "py-spiffe never saw {want}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn server_and_agent_processes_serve_a_real_client_through_an_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let adir = tmp.path().join("agent");
    let srv = server(&dir, "127.0.0.1:0");
    let up: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("up.json")).unwrap()).unwrap();
    let api = up["api"].as_str().unwrap().to_string();
    assert_eq!(up["socket"], "", "keycard server runs no local agent");

    let token = ok(keycard()
        .args(["token", "generate", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap())
    .trim()
    .to_string();
    let socket = std::path::absolute(adir.join("agent.sock")).unwrap();
    let agent = keycard()
        .args(["agent", "--server", &api, "--trust-bundle"])
        .arg(dir.join("bundle.pem"))
        .arg("--join-token")
        .arg(&token)
        .arg("--data-dir")
        .arg(&adir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Running(agent);
    wait_for(&socket);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(adir.join("node.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "node.pem mode {mode:o}");

    // The same token on another node: refused, with the reason.
    let replay = keycard()
        .args(["agent", "--server", &api, "--trust-bundle"])
        .arg(dir.join("bundle.pem"))
        .arg("--join-token")
        .arg(&token)
        .arg("--data-dir")
        .arg(tmp.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(replay.status.code(), Some(2));
    let err = String::from_utf8_lossy(&replay.stderr);
    assert!(err.contains("already used"), "{err}");

    let app = create_entry(&dir, "/app");
    let Ok(python) = std::env::var("KEYCARD_TEST_PYTHON") else {
        eprintln!("skipped the py-spiffe half: KEYCARD_TEST_PYTHON not set");
        return;
    };
    py_spiffe_sees(&python, &socket, "spiffe://bin.test/app");

    // SIGKILL the server: the agent keeps serving what it holds.
    drop(srv);
    std::thread::sleep(Duration::from_secs(1));
    py_spiffe_sees(&python, &socket, "spiffe://bin.test/app");

    // Back on the same address: a change reaches the agent, no restart.
    let listen = api.trim_start_matches("https://").to_string();
    let _srv = server(&dir, &listen);
    ok(keycard()
        .args(["entry", "delete", &app, "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap());
    create_entry(&dir, "/api");
    py_spiffe_sees(&python, &socket, "spiffe://bin.test/api");
}
