#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keycard audit` end to end: the binary against a real SQLite log, with
//! the database damaged directly the way an attacker (or a crash) would.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use rusqlite::{params, Connection};
use serde_json::Value;

fn keycard(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keycard"));
    c.env_remove("KEYCARD_LOG")
        .env("KEYCARD_DATA_DIR", dir.join("data"));
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    keycard(dir).args(args).output().unwrap()
}

fn run_stdin(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = keycard(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(data.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn line(i: u64) -> String {
    let point = ["admission", "proxy", "ext_authz", "check"][(i % 4) as usize];
    serde_json::json!({
        "point": point,
        "outcome": if i % 3 == 0 { "deny" } else { "allow" },
        "id": format!("d-{i}"),
        "subject": format!("spiffe://example.org/ns/shop/sa/svc{}", i % 7),
        "resource": format!("orders/{}", i % 11),
        "action": "GET",
        "policy": "shop-authz",
        "rule": if i % 3 == 0 { "deny_cross_namespace" } else { "allow_frontend" },
        "reason": format!("decision number {i}"),
        "input_digest": "sha256:00",
        "bundle_revision": "r7",
        "time": format!("2025-03-01T00:{:02}:00Z", i % 60),
    })
    .to_string()
}

fn lines(range: std::ops::Range<u64>) -> String {
    range.map(|i| line(i) + "\n").collect()
}

/// A log of `n` records with a checkpoint every 10.
fn log_with(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = run_stdin(
        dir.path(),
        &[
            "audit",
            "append",
            "--batch",
            "7",
            "--checkpoint-every",
            "10",
            "-q",
        ],
        &lines(0..n),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir
}

fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("data/audit.db")).unwrap()
}

fn verify(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    let out = run(dir, &args);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn assert_tamper(dir: &Path, needle: &str) {
    let (code, out, err) = verify(dir, &[]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("TAMPERING DETECTED"), "{err}");
    assert!(err.contains(needle), "wanted {needle:?} in: {err}");
}

#[test]
fn append_verify_why_query_export() {
    let dir = log_with(100);
    let d = dir.path();
    let (code, out, err) = verify(d, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 100 records verified"), "{out}");

    let out = run(d, &["audit", "why", "d-42"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for want in [
        "decision d-42 (record 42)",
        "shop-authz",
        "deny_cross_namespace",
        "decision number 42",
        "size 100",
        "verified",
    ] {
        assert!(s.contains(want), "{want} in {s}");
    }
    let out = run(d, &["audit", "why", "d-42", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["index"], 42);
    assert_eq!(v["tree_size"], 100);
    assert_eq!(v["inclusion_proof"].as_array().unwrap().len(), 7);
    let out = run(d, &["audit", "why", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no decision with id \"nope\""));

    let out = run(
        d,
        &[
            "audit",
            "query",
            "--outcome",
            "deny",
            "--point",
            "admission",
            "-o",
            "json",
        ],
    );
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // i % 3 == 0 and i % 4 == 0: multiples of 12 below 100.
    assert_eq!(rows.len(), 9);
    assert!(rows
        .iter()
        .all(|r| r["outcome"] == "deny" && r["point"] == "admission"));
    let out = run(
        d,
        &[
            "audit",
            "query",
            "--since",
            "2025-03-01T00:58:00Z",
            "--subject",
            "spiffe://example.org/ns/shop/sa/svc2",
        ],
    );
    let table = text(&out.stdout);
    assert!(table.starts_with("   INDEX  TIME"), "{table}");
    assert!(table.contains("      58  "), "{table}");

    let out = run(
        d,
        &["audit", "export", "--format", "ocsf", "--from-index", "98"],
    );
    let ev: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["class_uid"], 3003); // 98 % 4 == 2: ext_authz
    assert_eq!(ev[1]["class_uid"], 6003); // 99: check
    assert_eq!(ev[1]["metadata"]["uid"], "d-99");
    let out = run(d, &["audit", "export", "--format", "otlp"]);
    let req: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    let recs = &req["resourceLogs"][0]["scopeLogs"][0]["logRecords"];
    assert_eq!(recs.as_array().unwrap().len(), 100);
    let out = run(d, &["audit", "export"]);
    assert_eq!(text(&out.stdout).lines().count(), 100);
}

#[test]
fn keys_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = log_with(3);
    let data = dir.path().join("data");
    for (f, mode) in [
        ("audit.key", 0o600),
        ("audit.db", 0o600),
        ("audit.pub", 0o644),
    ] {
        let m = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{f}");
    }
    let out = run(dir.path(), &["audit", "key"]);
    let key = text(&out.stdout);
    assert_eq!(
        key,
        std::fs::read_to_string(data.join("audit.pub")).unwrap()
    );
    assert!(key.starts_with("keycard/decisions+"));
    assert!(!key.contains("PRIVATE"));
}

#[test]
fn edited_record_is_named() {
    let dir = log_with(100);
    let c = db(dir.path());
    let data: Vec<u8> = c
        .query_row("SELECT data FROM audit_records WHERE idx = 57", [], |r| {
            r.get(0)
        })
        .unwrap();
    let edited = text(&data).replace("\"deny\"", "\"allow\"");
    c.execute(
        "UPDATE audit_records SET data = ?1 WHERE idx = 57",
        params![edited.into_bytes()],
    )
    .unwrap();
    drop(c);
    assert_tamper(dir.path(), "record 57 (id d-57) was altered");
}

#[test]
fn removed_record_is_named() {
    let dir = log_with(100);
    db(dir.path())
        .execute("DELETE FROM audit_records WHERE idx = 31", [])
        .unwrap();
    assert_tamper(dir.path(), "record 31 is missing");
}

#[test]
fn swapped_records_are_named() {
    let dir = log_with(100);
    let c = db(dir.path());
    c.execute_batch(
        "UPDATE audit_records SET idx = -1 WHERE idx = 12;
         UPDATE audit_records SET idx = 12 WHERE idx = 19;
         UPDATE audit_records SET idx = 19 WHERE idx = -1;",
    )
    .unwrap();
    drop(c);
    assert_tamper(
        dir.path(),
        "record at position 12 (id d-19) was appended as record 19",
    );
}

#[test]
fn forged_checkpoint_is_named() {
    let dir = log_with(100);
    // Another key signs a checkpoint over a rewritten history.
    let other = tempfile::tempdir().unwrap();
    let out = run_stdin(other.path(), &["audit", "append", "-q"], &lines(0..120));
    assert!(out.status.success());
    let note: String = db(other.path())
        .query_row(
            "SELECT note FROM audit_checkpoints WHERE size = 120",
            [],
            |r| r.get(0),
        )
        .unwrap();
    db(dir.path())
        .execute(
            "INSERT INTO audit_checkpoints (size, note, created_ms) VALUES (120, ?1, 0)",
            [note],
        )
        .unwrap();
    assert_tamper(
        dir.path(),
        "checkpoint at size 120 is not validly signed by the log's key",
    );
}

#[test]
fn truncated_log_is_named_and_exported_checkpoints_catch_rollback() {
    let dir = log_with(100);
    let d = dir.path();
    let exported = d.join("cp-100");
    let out = run(
        d,
        &[
            "audit",
            "checkpoint",
            "--export",
            exported.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("keycard/decisions\n100\n"));
    // The newest records go.
    db(d)
        .execute("DELETE FROM audit_records WHERE idx >= 95", [])
        .unwrap();
    assert_tamper(
        d,
        "the log ends at record 95 but a checkpoint was signed at size 100",
    );
    // ...and so do the checkpoints that covered them: only the exported one tells.
    db(d)
        .execute("DELETE FROM audit_checkpoints WHERE size > 90", [])
        .unwrap();
    let (code, out, _) = verify(d, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = verify(d, &["--from", exported.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("records 95..100 were removed"), "{err}");
}

#[test]
fn truncated_database_file_is_detected() {
    let dir = log_with(3000);
    let path = dir.path().join("data/audit.db");
    // The writer has exited, so its WAL was folded into the file.
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(!dir.path().join("data/audit.db-wal").exists() || len > 0);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    assert_tamper(dir.path(), "damaged");
}

#[test]
fn prune_then_verify() {
    let dir = log_with(200);
    let d = dir.path();
    let archive = d.join("archive-1.jsonl");
    let out = run(
        d,
        &[
            "audit",
            "prune",
            "--before",
            "120",
            "--archive",
            archive.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("archived records 0..120"));
    let (code, out, err) = verify(d, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("80 records verified (120..200)"), "{out}");
    let out = run(d, &["audit", "why", "d-150"]);
    assert!(text(&out.stdout).contains("verified"));
    let (code, out, _) = verify(d, &["--archive", archive.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("records 0..120"), "{out}");
    // The archive file is never overwritten.
    let out = run(
        d,
        &[
            "audit",
            "prune",
            "--before",
            "150",
            "--archive",
            archive.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    // Tampering in what remains is still named.
    db(d)
        .execute("DELETE FROM audit_records WHERE idx = 170", [])
        .unwrap();
    assert_tamper(d, "record 170 is missing");
}

#[test]
fn bad_input_line_is_named_and_earlier_lines_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = format!(
        "{}{}\n{{\"point\":\"moon\",\"outcome\":\"allow\"}}\n",
        lines(0..5),
        line(5)
    );
    let out = run_stdin(dir.path(), &["audit", "append"], &input);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("stdin line 7"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).lines().count(), 6);
    let (code, out, _) = verify(dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("6 records"));
}

#[test]
fn full_store_stops_writes_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_stdin(
        dir.path(),
        &["audit", "append", "--max-size-mib", "1", "--batch", "500"],
        &lines(0..20_000),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("the decision log is full"), "{err}");
    assert!(err.contains("were not stored"), "{err}");
    let acked = text(&out.stdout).lines().count() as u64;
    assert!(acked > 0 && acked < 20_000, "{acked}");
    // Everything acknowledged is there and the log verifies.
    let (code, out, _) = verify(dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ok: {acked} records")), "{out}");
}

#[test]
fn sigkill_during_appends_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = keycard(dir.path())
        .args(["audit", "append", "--batch", "500"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..2_000_000u64 {
            if stdin.write_all((line(i) + "\n").as_bytes()).is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    for l in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: Value = serde_json::from_str(&l.unwrap()).unwrap();
        acked.push((
            v["index"].as_u64().unwrap(),
            v["id"].as_str().unwrap().to_string(),
        ));
        if acked.len() >= 30_000 {
            break;
        }
    }
    // SIGKILL, mid-stream.
    child.kill().unwrap();
    child.wait().unwrap();
    feeder.join().unwrap();
    let (code, out, err) = verify(dir.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    let c = db(dir.path());
    let size: i64 = c
        .query_row("SELECT COUNT(*) FROM audit_records", [], |r| r.get(0))
        .unwrap();
    assert!(size as usize >= acked.len());
    let mut stmt = c
        .prepare("SELECT id FROM audit_records WHERE idx = ?1")
        .unwrap();
    for (index, id) in &acked {
        let got: String = stmt.query_row([*index as i64], |r| r.get(0)).unwrap();
        assert_eq!(&got, id);
    }
    // The log keeps going after the crash.
    let out = run_stdin(
        dir.path(),
        &["audit", "append", "-q"],
        &lines(5_000_000..5_000_010),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, out, _) = verify(dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn redaction_is_persisted_with_the_log_and_applied_by_every_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = dir.join("hash.key");
    std::fs::write(&key, b"a secret of the operator").unwrap();
    let key = key.to_str().unwrap();
    // The first writer sets the rules.
    let out = run_stdin(
        dir,
        &[
            "audit",
            "append",
            "--hash",
            "subject",
            "--mask",
            "reason",
            "--hash-key-file",
            key,
        ],
        &format!("{}\n", line(1)),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A later writer that names no rules applies them all the same.
    let out = run_stdin(dir, &["audit", "append"], &format!("{}\n", line(2)));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(dir, &["audit", "query", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let subjects: Vec<&str> = rows
        .iter()
        .map(|r| r["subject"].as_str().unwrap())
        .collect();
    for (r, s) in rows.iter().zip(&subjects) {
        assert!(s.starts_with("hmac-sha256:"), "{r}");
        assert!(!r.to_string().contains("decision number"), "{r}");
    }
    // Records 1 and 2 have subjects svc1 and svc2: different hashes, same key.
    assert_ne!(subjects[0], subjects[1]);
    // A writer asking for other rules is refused, and nothing is stored.
    let out = run_stdin(
        dir,
        &["audit", "append", "--mask", "subject"],
        &format!("{}\n", line(3)),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already set"),
        "{}",
        text(&out.stderr)
    );
    // Without the key the log's hashes cannot be produced: refused too.
    std::fs::remove_file(dir.join("data/audit.hash-key")).unwrap();
    let out = run_stdin(dir, &["audit", "append"], &format!("{}\n", line(4)));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needed to write"),
        "{}",
        text(&out.stderr)
    );
    let out = run(dir, &["audit", "query", "--output", "json"]);
    assert_eq!(text(&out.stdout).lines().count(), 2);
}
