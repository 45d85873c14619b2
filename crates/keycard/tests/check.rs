#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keycard check` end to end: the binary as CI runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn keycard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keycard"));
    c.env("NO_COLOR", "1").env_remove("KEYCARD_LOG");
    c
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn run(args: &[&str]) -> Output {
    keycard().args(args).output().unwrap()
}

fn run_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = keycard()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A usage error exits before reading stdin: a closed pipe is expected then.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn rules_for<'a>(report: &'a Value, kind: &str, name: &str) -> Vec<&'a str> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["resource"]["kind"] == kind && f["resource"]["name"] == name)
        .map(|f| f["rule"].as_str().unwrap())
        .collect()
}

const PRIVILEGED_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    securityContext: {privileged: true}\n";

#[test]
fn examples_fail_on_the_legacy_workload_only() {
    let dir = examples();
    let out = run(&[
        "check",
        dir.join("manifests").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_of(&out);
    let legacy = rules_for(&r, "Deployment", "reports");
    for want in [
        "pss-baseline-privileged",
        "pss-baseline-host-namespaces",
        "pss-restricted-volume-types",
        "zt-host-path",
        "zt-env-secret-literal",
        "zt-image-digest",
    ] {
        assert!(legacy.contains(&want), "{want} not in {legacy:?}");
    }
    // The hardened Deployment has nothing that blocks.
    let blocking: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["resource"]["namespace"] == "payments"
                && ["critical", "high"].contains(&f["severity"].as_str().unwrap())
        })
        .collect();
    assert!(
        blocking.is_empty(),
        "hardened workload blocked: {blocking:#?}"
    );
    // Every finding names its file and the line of its object.
    let f = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["resource"]["name"] == "reports")
        .unwrap();
    assert!(f["file"].as_str().unwrap().ends_with("legacy.yaml"));
    assert_eq!(f["line"], 2);
    assert!(!f["remediation"].as_str().unwrap().is_empty());
    assert_eq!(r["summary"]["passed"], false);
}

#[test]
fn stdin_and_fail_on_thresholds() {
    let out = run_stdin(
        &["check", "-", "--pack", "pss-baseline", "-o", "json"],
        PRIVILEGED_POD,
    );
    assert_eq!(out.status.code(), Some(1));
    let r = json_of(&out);
    assert_eq!(r["findings"][0]["file"], "-");
    assert_eq!(r["findings"][0]["rule"], "pss-baseline-privileged");
    assert_eq!(
        r["findings"][0]["path"],
        "spec.containers[0].securityContext.privileged"
    );
    let out = run_stdin(
        &["check", "-", "--pack", "pss-baseline", "--fail-on", "never"],
        PRIVILEGED_POD,
    );
    assert_eq!(out.status.code(), Some(0));
    let clean = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: nginx}]\n";
    let out = run_stdin(&["check", "-", "--pack", "pss-baseline"], clean);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("PASS"));
}

#[test]
fn every_workload_kind_gets_pod_rules_with_template_paths() {
    let spec = "      containers:\n      - name: c\n        image: nginx\n        securityContext: {privileged: true}\n";
    let kinds = [
        (
            "apps/v1",
            "Deployment",
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            "apps/v1",
            "StatefulSet",
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            "apps/v1",
            "DaemonSet",
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            "apps/v1",
            "ReplicaSet",
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            "v1",
            "ReplicationController",
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            "batch/v1",
            "Job",
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
    ];
    let mut docs = String::new();
    for (api, kind, _) in kinds {
        docs.push_str(&format!("---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: w}}\nspec:\n  template:\n    spec:\n{spec}"));
    }
    docs.push_str("---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: w}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n          - name: c\n            image: nginx\n            securityContext: {privileged: true}\n");
    let out = run_stdin(
        &["check", "-", "--pack", "pss-baseline", "-o", "json"],
        &docs,
    );
    let r = json_of(&out);
    for (_, kind, path) in kinds {
        let f = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["resource"]["kind"] == kind && f["rule"] == "pss-baseline-privileged");
        assert_eq!(f.map(|f| f["path"].as_str().unwrap()), Some(path), "{kind}");
    }
    let cj = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["resource"]["kind"] == "CronJob")
        .unwrap();
    assert_eq!(
        cj["path"],
        "spec.jobTemplate.spec.template.spec.containers[0].securityContext.privileged"
    );
}

#[test]
fn bad_input_is_reported_and_good_files_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a-bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b-good.yaml"), PRIVILEGED_POD).unwrap();
    std::fs::write(dir.path().join("c-scalar.yaml"), "just a string\n").unwrap();
    std::fs::write(
        dir.path().join("d-nokind.json"),
        "{\"apiVersion\": \"v1\", \"metadata\": {}}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("e-crd.yaml"),
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    )
    .unwrap();
    let out = run(&[
        "check",
        dir.path().to_str().unwrap(),
        "--pack",
        "pss-baseline",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let r = json_of(&out);
    assert_eq!(rules_for(&r, "Pod", "p"), vec!["pss-baseline-privileged"]);
    let errors: Vec<&str> = r["summary"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].contains("a-bad.yaml:") && errors[0].contains("invalid YAML"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("c-scalar.yaml:1") && errors[1].contains("not a Kubernetes object"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("d-nokind.json:1") && errors[2].contains("kind"),
        "{}",
        errors[2]
    );
    let notes = r["summary"]["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0]
            .as_str()
            .unwrap()
            .contains("e-crd.yaml:1: unknown kind Widget"),
        "{notes:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a-bad.yaml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn hostile_input_never_hangs_or_panics() {
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    let mut prev = "a".to_string();
    for i in 0..9 {
        let n = format!("n{i}");
        bomb.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        prev = n;
    }
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\ndata: {}{}\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    for input in [
        bomb,
        deep,
        "\u{0}\u{1}garbage: [".to_string(),
        "---\n---\n...\n".to_string(),
    ] {
        let start = std::time::Instant::now();
        let out = run_stdin(&["check", "-", "-o", "json"], &input);
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            matches!(out.status.code(), Some(0) | Some(2)),
            "{:?} {stderr}",
            out.status
        );
    }
}

#[test]
fn exceptions_live_expired_and_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.yaml");
    std::fs::write(&m, PRIVILEGED_POD).unwrap();
    let ex = dir.path().join("ex.yaml");
    std::fs::write(&ex, "exceptions:\n  - rule: pss-baseline-privileged\n    match: {kind: Pod, namespace: ns, name: p}\n    owner: team-a\n    reason: debugging agent\n    expires: 2999-01-01\n").unwrap();
    let out = run(&[
        "check",
        m.to_str().unwrap(),
        "--pack",
        "pss-baseline",
        "--exceptions",
        ex.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = json_of(&out);
    assert_eq!(r["findings"][0]["exception"]["owner"], "team-a");
    assert_eq!(r["summary"]["excepted"], 1);

    std::fs::write(&ex, "exceptions:\n  - rule: pss-baseline-privileged\n    match: {name: p}\n    owner: team-a\n    reason: old\n    expires: 2020-01-01\n").unwrap();
    let out = run(&[
        "check",
        m.to_str().unwrap(),
        "--pack",
        "pss-baseline",
        "--exceptions",
        ex.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("expired on 2020-01-01"), "{text}");

    std::fs::write(
        &ex,
        "exceptions:\n  - rule: pss-baseline-privileged\n    expires: 2999-01-01\n",
    )
    .unwrap();
    let out = run(&[
        "check",
        m.to_str().unwrap(),
        "--exceptions",
        ex.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ex.yaml:2") && err.contains("owner"), "{err}");
}

#[test]
fn team_rego_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("labels.rego"), "# METADATA\n# title: Owner label\n# custom:\n#   id: team-owner\n#   severity: critical\n#   remediation: add an owner label\npackage team.labels\n\ndeny contains {\"msg\": \"no owner label\", \"path\": \"metadata.labels.owner\"} if not input.metadata.labels.owner\n").unwrap();
    std::fs::write(pol.join("legacy.rego"), "package legacy\n\nwarn[msg] {\n  input.kind == \"Pod\"\n  msg := sprintf(\"pod %s\", [input.metadata.name])\n}\n").unwrap();
    std::fs::write(
        pol.join("labels_test.rego"),
        "package team.labels_test\n\ntest_x if false\n",
    )
    .unwrap();
    let m = dir.path().join("m.yaml");
    std::fs::write(&m, PRIVILEGED_POD).unwrap();
    let out = run(&[
        "check",
        m.to_str().unwrap(),
        "--pack",
        "none",
        "--policy",
        pol.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_of(&out);
    let mut rules = rules_for(&r, "Pod", "p");
    rules.sort();
    assert_eq!(rules, vec!["legacy.warn", "team-owner"]);
    let owner = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "team-owner")
        .unwrap();
    assert_eq!(owner["severity"], "critical");
    assert_eq!(owner["remediation"], "add an owner label");

    std::fs::write(
        pol.join("broken.rego"),
        "package broken\n\ndeny contains x if {\n  x := [\n}\n",
    )
    .unwrap();
    let out = run(&[
        "check",
        m.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.rego:"), "{err}");

    std::fs::remove_file(pol.join("broken.rego")).unwrap();
    std::fs::write(pol.join("slow.rego"), "package slow\n\ndeny contains n if {\n  some i in numbers.range(1, 100000)\n  some j in numbers.range(1, 100000)\n  n := i + j\n  n < 0\n}\n").unwrap();
    let start = std::time::Instant::now();
    let out = run(&[
        "check",
        m.to_str().unwrap(),
        "--pack",
        "none",
        "--policy",
        pol.to_str().unwrap(),
        "--timeout-ms",
        "300",
    ]);
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("m.yaml:1")
            && text.contains("rule slow.deny")
            && text.to_lowercase().contains("time limit"),
        "{text}"
    );
}

#[test]
fn sarif_and_junit() {
    let out = run_stdin(
        &["check", "-", "--pack", "pss-baseline", "-o", "sarif"],
        &format!("# leading comment\n\n{PRIVILEGED_POD}"),
    );
    assert_eq!(out.status.code(), Some(1));
    let s = json_of(&out);
    assert_eq!(s["version"], "2.1.0");
    let run0 = &s["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "keycard");
    let res = &run0["results"][0];
    assert_eq!(res["ruleId"], "pss-baseline-privileged");
    assert_eq!(res["level"], "error");
    assert_eq!(
        res["locations"][0]["physicalLocation"]["region"]["startLine"],
        3
    );
    let idx = res["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(
        run0["tool"]["driver"]["rules"][idx]["id"],
        "pss-baseline-privileged"
    );

    let out = run_stdin(
        &["check", "-", "--pack", "pss-baseline", "-o", "junit"],
        PRIVILEGED_POD,
    );
    let x = String::from_utf8_lossy(&out.stdout);
    assert!(x.starts_with("<?xml"), "{x}");
    assert!(
        x.contains("<testsuites name=\"keycard check\" tests=\"1\" failures=\"1\">"),
        "{x}"
    );
    assert!(x.contains("<failure message="), "{x}");
}

#[test]
fn pss_version_changes_the_rules() {
    // No seccomp profile: required by restricted from v1.19 on only.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {runAsNonRoot: true}\n  containers:\n  - name: c\n    image: nginx\n    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n";
    let old = json_of(&run_stdin(
        &[
            "check",
            "-",
            "--pack",
            "pss-restricted",
            "--pss-version",
            "v1.18",
            "-o",
            "json",
        ],
        pod,
    ));
    let new = json_of(&run_stdin(
        &["check", "-", "--pack", "pss-restricted", "-o", "json"],
        pod,
    ));
    assert!(rules_for(&old, "Pod", "p").is_empty(), "{old}");
    assert_eq!(
        rules_for(&new, "Pod", "p"),
        vec!["pss-restricted-seccomp-profile"]
    );
    let bad = run_stdin(&["check", "-", "--pss-version", "v2.0"], pod);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--pss-version"));
    let bad = run_stdin(&["check", "-", "--pack", "nope"], pod);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown pack"));
}

#[test]
fn explain_shows_what_was_read_and_why() {
    let out = run_stdin(
        &["check", "-", "--pack", "pss-baseline", "--explain"],
        PRIVILEGED_POD,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("read:   spec.containers[0].securityContext.privileged = true"),
        "{text}"
    );
    assert!(text.contains("why:"), "{text}");
    assert!(text.contains("rule:   Privileged containers"), "{text}");
}

#[test]
fn policy_show_and_list() {
    let out = run(&["policy", "show", "pss-restricted"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("package keycard.pss.restricted."), "{text}");
    assert!(text.contains("package keycard.pss.baseline."));
    let out = run(&["policy", "show", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pss-baseline, pss-restricted, zero-trust")
    );
    let out = run(&["policy", "list"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pss-baseline-privileged"));
}

#[test]
fn netpol_eval_matches_a_conformance_case_end_to_end() {
    let base =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/netpol-analyzer");
    let case = "acs-security-demos";
    let want = std::fs::read_to_string(
        base.join(format!("test_outputs/connlist/{case}_connlist_output.txt")),
    )
    .unwrap();
    let out = run(&[
        "netpol",
        "eval",
        base.join("tests").join(case).to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(got.trim_end(), want.trim_end());
    let out = run(&[
        "netpol",
        "eval",
        base.join("tests").join(case).to_str().unwrap(),
        "-o",
        "json",
    ]);
    let v = json_of(&out);
    assert_eq!(
        v.as_array().unwrap().len(),
        want.lines().filter(|l| l.contains("=>")).count()
    );
    assert!(v[0]["src"].is_string() && v[0]["dst"].is_string() && v[0]["conn"].is_string());
    // The case folder holds a JSON file that is not a Kubernetes object:
    // skipped and reported, fatal only with --strict.
    assert!(String::from_utf8_lossy(&out.stderr).contains("connlist_output.json:1"));
    let strict = run(&[
        "netpol",
        "eval",
        base.join("tests").join(case).to_str().unwrap(),
        "--strict",
    ]);
    assert_eq!(strict.status.code(), Some(2));
}

#[test]
fn gatekeeper_library_through_check() {
    let f =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../keycard-policy/tests/fixtures/gatekeeper");
    let out = run(&[
        "check",
        f.join("manifests").to_str().unwrap(),
        "--pack",
        "none",
        "--policy",
        f.join("policy").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_of(&out);
    let got: Vec<(String, String, String)> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["enforcement"].as_str().unwrap().to_string(),
                f["resource"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |rule: &str, enf: &str, name: &str| {
        got.iter()
            .any(|(r, e, n)| r == rule && e == enf && n == name)
    };
    assert!(
        has("K8sNoPrivileged/no-privileged", "deny", "web-app"),
        "{got:?}"
    );
    assert!(
        has("K8sAllowedRepos/prod-repos", "dryrun", "web-app"),
        "{got:?}"
    );
    assert!(
        has("K8sRequiredLabels/workloads-need-team", "warn", "worker"),
        "{got:?}"
    );
    // Referential: the inventory is the input of the run.
    assert!(
        has("K8sUniqueIngressHost/unique-hosts", "deny", "front"),
        "{got:?}"
    );
    // dryrun and warn never block; only the deny findings at or above high count.
    assert_eq!(r["summary"]["blocking"], 6);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("other.yaml:2") && !stderr.contains("\x1b["),
        "{stderr}"
    );
}

/// A rule that builds a value of several gigabytes. On the bytecode VM the
/// per-evaluation limit stops it and names the rule; in a Gatekeeper
/// template (the interpreter) the process-wide ceiling does. Either way the
/// run ends with an input error for that object, no crash, and the other
/// objects are still checked.
#[test]
fn memory_hungry_rules_stop_at_the_memory_limit() {
    const HOG: &str = "pad := concat(\"\", [\"x\" | some _ in numbers.range(1, 300)])\n  big := [s | some i in numbers.range(1, 10000); some j in numbers.range(1, 1000); s := sprintf(\"%d-%d-%s\", [i, j, pad])]\n  count(big) > 0\n";
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(
        pol.join("hog.rego"),
        format!("# METADATA\n# custom:\n#   id: team-hog\npackage team.hog\n\ndeny contains \"built it\" if {{\n  input.kind == \"Pod\"\n  {HOG}}}\n"),
    )
    .unwrap();
    let m = dir.path().join("m.yaml");
    std::fs::write(
        &m,
        format!("{PRIVILEGED_POD}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: ns}}\nspec:\n  type: NodePort\n"),
    )
    .unwrap();
    let out = run(&[
        "check",
        m.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
        "--timeout-ms",
        "600000",
        "--memory-limit-mib",
        "16",
        "-o",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("m.yaml:1")
            && stderr.contains("rule team-hog: exceeded the memory limit of 16 MiB"),
        "{stderr}"
    );
    // The Pod is reported as not evaluated; the Service is still checked.
    let r = json_of(&out);
    assert!(rules_for(&r, "Pod", "p").is_empty(), "{r}");
    assert_eq!(rules_for(&r, "Service", "s"), vec!["zt-service-exposure"]);

    // The same rule as a Gatekeeper template runs on the interpreter.
    let gk = dir.path().join("gatekeeper");
    std::fs::create_dir_all(&gk).unwrap();
    std::fs::write(
        gk.join("template.yaml"),
        "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata:\n  name: k8shog\nspec:\n  crd:\n    spec:\n      names:\n        kind: K8sHog\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n        package k8shog\n        violation[{\"msg\": \"built it\"}] {\n          input.review.object.kind == \"Pod\"\n          pad := concat(\"\", [x | numbers.range(1, 300)[_]; x := \"x\"])\n          big := [s | i := numbers.range(1, 10000)[_]; j := numbers.range(1, 1000)[_]; s := sprintf(\"%d-%d-%s\", [i, j, pad])]\n          count(big) > 0\n        }\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sHog\nmetadata:\n  name: hog\nspec:\n  match:\n    kinds:\n      - apiGroups: [\"\"]\n        kinds: [\"Pod\"]\n",
    )
    .unwrap();
    let out = run(&[
        "check",
        m.to_str().unwrap(),
        "--pack",
        "none",
        "--policy",
        gk.to_str().unwrap(),
        "--timeout-ms",
        "600000",
        "--memory-limit-mib",
        "16",
        "-o",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("m.yaml:1") && stderr.contains("memory"),
        "{stderr}"
    );
}

/// `--audit-log`: one decision per object lands in the tamper-evident log,
/// blocking objects as denials naming the rule; the log verifies and
/// answers `why`.
#[test]
fn check_records_its_decisions_in_the_audit_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let d = dir.to_str().unwrap();
    let manifests = examples().join("manifests");
    let exceptions = examples().join("exceptions.yaml");
    let out = run(&[
        "check",
        manifests.to_str().unwrap(),
        "--exceptions",
        exceptions.to_str().unwrap(),
        "--output",
        "json",
        "--audit-log",
        d,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let objects = report["summary"]["objects"].as_u64().unwrap();

    let verify = run(&["audit", "verify", "--data-dir", d]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let q = run(&["audit", "query", "--data-dir", d, "--output", "json"]);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let recs: Vec<Value> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len() as u64, objects, "one decision per object");
    assert!(recs.iter().all(
        |r| r["point"] == "check" && r["input_digest"].as_str().unwrap().starts_with("sha256:")
    ));
    let deny = recs
        .iter()
        .find(|r| r["outcome"] == "deny")
        .expect("the legacy workload is denied");
    assert!(!deny["rule"].as_str().unwrap().is_empty());
    assert!(recs.iter().any(|r| r["outcome"] == "allow"));

    let why = run(&[
        "audit",
        "why",
        "--data-dir",
        d,
        deny["id"].as_str().unwrap(),
    ]);
    assert_eq!(
        why.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&why.stderr)
    );
    assert!(String::from_utf8_lossy(&why.stdout).contains(deny["rule"].as_str().unwrap()));
}
