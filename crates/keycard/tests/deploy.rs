//! keycard's own deployment manifests pass keycard's own packs: `keycard
//! check deploy/ --pack pss-restricted --pack zero-trust` with the shipped
//! parameters exits 0 with no finding at or above high that is not excepted,
//! and only the node agent's documented needs are excepted. The shipped
//! webhook configuration stays what `keycard admission manifest` prints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn keycard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keycard"))
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("KEYCARD_LOG")
        .args(args)
        .output()
        .unwrap()
}

const CHECK: &[&str] = &[
    "check",
    "deploy/",
    "--pack",
    "pss-restricted",
    "--pack",
    "zero-trust",
    "--params",
    "deploy/.keycard-check/params.yaml",
    "--exceptions",
    "deploy/.keycard-check/exceptions.yaml",
];

fn check_json(extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = CHECK.to_vec();
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", "json"]);
    let out = keycard(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

#[test]
fn deploy_manifests_pass_pss_restricted_and_zero_trust() {
    let (code, v) = check_json(&[]);
    assert_eq!(code, Some(0), "{v:#}");
    let summary = &v["summary"];
    assert_eq!(summary["errors"], Value::Array(vec![]), "{summary:#}");
    assert_eq!(summary["blocking"], 0);
    assert_eq!(summary["expired_exceptions"], Value::Array(vec![]));
    assert_eq!(
        summary["unused_exceptions"],
        Value::Array(vec![]),
        "every exception is needed"
    );
    // Every workload kind is there and was checked.
    let objects = summary["objects"].as_u64().unwrap();
    assert!(objects >= 15, "{objects} objects");
    let findings = v["findings"].as_array().unwrap();
    for f in findings {
        let excepted = !f["exception"].is_null();
        if !excepted {
            assert!(
                severity_rank(f["severity"].as_str().unwrap()) < severity_rank("high"),
                "unexcepted finding at or above high: {f:#}"
            );
        }
    }
    // Only the agent's hostPath and hostPID are excepted.
    let mut excepted: Vec<(String, String)> = findings
        .iter()
        .filter(|f| !f["exception"].is_null())
        .map(|f| {
            (
                f["resource"]["name"].as_str().unwrap().to_string(),
                f["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    excepted.sort();
    assert_eq!(
        excepted,
        vec![
            (
                "keycard-agent".to_string(),
                "pss-baseline-host-namespaces".to_string()
            ),
            (
                "keycard-agent".to_string(),
                "pss-restricted-volume-types".to_string()
            ),
        ]
    );
    // Nothing below high either: the manifests are clean, not just passing.
    assert!(
        findings.iter().all(|f| !f["exception"].is_null()),
        "{findings:#?}"
    );
}

#[test]
fn without_the_shipped_parameters_the_agent_host_path_is_caught() {
    // The check must be able to fail: drop the parameters and zt-host-path
    // reports the socket directory.
    let out = keycard(&[
        "check",
        "deploy/",
        "--exceptions",
        "deploy/.keycard-check/exceptions.yaml",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["rule"] == "zt-host-path" && f["exception"].is_null()));
}

#[test]
fn every_workload_is_hardened_and_pinned() {
    // What the packs check, stated directly for keycard's own workloads.
    for file in ["deploy/base/server.yaml", "deploy/base/agent.yaml"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for needle in [
            "runAsNonRoot: true",
            "readOnlyRootFilesystem: true",
            "allowPrivilegeEscalation: false",
            "drop: [\"ALL\"]",
            "type: RuntimeDefault",
            "limits:",
            "owner: platform-security",
            "data-classification: restricted",
        ] {
            assert!(text.contains(needle), "{file} lacks {needle}");
        }
        let images: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .collect();
        assert!(!images.is_empty());
        for i in images {
            let (_, digest) = i
                .split_once("@sha256:")
                .unwrap_or_else(|| panic!("{file}: {i} not pinned"));
            assert_eq!(digest.len(), 64, "{i}");
            assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{i}");
        }
    }
}

#[test]
fn shipped_webhook_configuration_is_what_the_cli_prints() {
    let dir = tempfile::tempdir().unwrap();
    // Any CA will do: the caBundle is the one field the file leaves out.
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, TEST_CA).unwrap();
    let out = keycard(&[
        "admission",
        "manifest",
        "--ca-file",
        ca.to_str().unwrap(),
        "--exclude-namespace",
        "keycard-agent",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut generated: Value = yaml_serde::from_slice(&out.stdout).unwrap();
    let shipped_text =
        std::fs::read_to_string(root().join("deploy/webhook/validatingwebhookconfiguration.yaml"))
            .unwrap();
    let mut shipped: Value = yaml_serde::from_str(&shipped_text).unwrap();
    assert_eq!(
        shipped["webhooks"][0]["clientConfig"]["caBundle"],
        "REPLACE-WITH-BASE64-OF-THE-SERVER-CA-BUNDLE"
    );
    for v in [&mut generated, &mut shipped] {
        v["webhooks"][0]["clientConfig"]
            .as_object_mut()
            .unwrap()
            .remove("caBundle");
    }
    assert_eq!(generated, shipped);
    let w = &shipped["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(
        w["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["kube-system", "keycard", "keycard-agent"])
    );
}

#[test]
fn manifest_refuses_a_file_that_is_not_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "hello").unwrap();
    let out = keycard(&["admission", "manifest", "--ca-file", ca.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CA bundle"), "{err}");
}

/// A self-signed P-256 certificate (test data only).
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBcjCCARmgAwIBAgIUJd6x31LpyztONJV15M5fB+OZ+0owCgYIKoZIzj0EAwIw
DzENMAsGA1UEAwwEdGVzdDAeFw0yNjExMjIxMjM0MDBaFw0yNjExMjMxMjM0MDBa
MA8xDTALBgNVBAMMBHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARY+D4o
d2aLjJb+0gZ+vEL979S4/1YGxJo/ta+ODM37+/mVWBUUgyDQIxAVJB90JCIUQESb
go9d2PqRjXntWzoFo1MwUTAdBgNVHQ4EFgQU/2hrL9ANBQbrmzXAMmFLie+523gw
HwYDVR0jBBgwFoAU/2hrL9ANBQbrmzXAMmFLie+523gwDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNHADBEAiBiEjYyVkf7u0r088uBjBVnY+3ppct2b5OVIhlA
VD4eXgIgRA8ub13qZ549C8wJ/PZ8Yh5eP/wXxdaDj+dq2PBX1BY=
-----END CERTIFICATE-----
";
