#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keycard assess`, `keycard assess diff` and `keycard who-can` end to end:
//! the binary as a platform engineer or a CI job runs it, on the
//! vulnerable-by-design cluster of keycard-assess's tests (see its README:
//! the expected answers below are the flaws planted there) and on a small
//! hardened cluster of our own (tests/fixtures/assess/hardened.yaml).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn keycard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keycard"));
    c.env("NO_COLOR", "1")
        .env_remove("KEYCARD_LOG")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    c
}

fn vulnerable() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../keycard-assess/tests/fixtures/vulnerable-cluster")
}

fn hardened() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/assess/hardened.yaml")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs keycard and checks the exit code; whatever happens, it must not panic.
fn run_code(args: &[&str], code: i32) -> Output {
    let o = keycard().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stderr.contains("panicked"),
        "keycard {args:?} panicked: {stderr}"
    );
    assert_eq!(
        o.status.code(),
        Some(code),
        "keycard {args:?}\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const ARGOCD: &str = "ServiceAccount:argocd/argocd-application-controller";
const CI: &str = "ServiceAccount:ci/ci-deployer";

/// The subjects of a `who-can -o json` answer.
fn json_subjects(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["subject"].as_str().unwrap().to_string())
        .collect()
}

/// The subjects of a `who-can` table: the first column of each row under
/// the header (continuation rows of one subject leave it blank).
fn table_subjects(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("SUBJECT"))
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// `who-can` as a table and as JSON: both must name exactly `want`.
fn who_can(args: &[&str], want: &[&str]) -> (String, Value) {
    let table = stdout(&run_code(args, 0));
    let mut json_args = args.to_vec();
    json_args.extend(["-o", "json"]);
    let json = json_of(&run_code(&json_args, 0));
    assert_eq!(table_subjects(&table), set(want), "{args:?}:\n{table}");
    assert_eq!(json_subjects(&json), set(want), "{args:?}:\n{json:#}");
    assert!(
        table.starts_with(&format!("{} subjects can ", want.len())),
        "{table}"
    );
    (table, json)
}

// ------------------------------------------------------------- who-can

#[test]
fn who_can_deploy_to_payments_is_exactly_the_two_cluster_admins() {
    let f = vulnerable();
    let (table, json) = who_can(
        &["who-can", "create", "deployments", "-n", "payments", s(&f)],
        &[ARGOCD, CI],
    );
    assert!(table.starts_with("2 subjects can create deployments in namespace payments\n"));
    // Each row says how: the cluster-wide binding and the role it grants.
    assert!(
        table.contains("ClusterRoleBinding/ci-deployer-cluster-admin -> ClusterRole/cluster-admin"),
        "{table}"
    );
    let ci = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject"] == CI)
        .unwrap();
    assert_eq!(ci["kind"], "ServiceAccount");
    assert_eq!(
        ci["via"][0]["binding"],
        "ClusterRoleBinding/ci-deployer-cluster-admin"
    );
    assert_eq!(ci["via"][0]["role"], "ClusterRole/cluster-admin");
    assert_eq!(ci["via"][0]["scope"]["scope"], "cluster");
    assert!(ci["restricted_to"].is_null());
    // The resource with its group is the same question.
    who_can(
        &[
            "who-can",
            "create",
            "deployments.apps",
            "-n",
            "payments",
            s(&f),
        ],
        &[ARGOCD, CI],
    );
}

#[test]
fn who_can_get_secrets_anywhere_includes_the_named_only_grant() {
    let f = vulnerable();
    let (table, json) = who_can(
        &["who-can", "get", "secrets", s(&f)],
        &[ARGOCD, CI, "ServiceAccount:payments/api"],
    );
    assert!(table.starts_with("3 subjects can get secrets\n"), "{table}");
    // The api's Role names one Secret: the answer says so.
    assert!(table.contains("[only: db-credentials]"), "{table}");
    let api = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject"] == "ServiceAccount:payments/api")
        .unwrap();
    assert_eq!(api["restricted_to"], serde_json::json!(["db-credentials"]));
    assert_eq!(api["via"][0]["scope"]["scope"], "namespace");
    // Another Secret of the namespace: only the cluster admins.
    who_can(
        &[
            "who-can",
            "get",
            "secrets",
            "--name",
            "other",
            "-n",
            "payments",
            s(&f),
        ],
        &[ARGOCD, CI],
    );
    // The named Secret in another namespace: the Role does not reach it.
    who_can(
        &[
            "who-can",
            "get",
            "secrets",
            "--name",
            "db-credentials",
            "-n",
            "staging",
            s(&f),
        ],
        &[ARGOCD, CI],
    );
}

#[test]
fn who_can_exec_into_pods_is_scoped_by_the_rolebinding() {
    let f = vulnerable();
    let (table, _) = who_can(
        &["who-can", "create", "pods/exec", s(&f)],
        &[ARGOCD, CI, "Group:developers"],
    );
    let dev = table
        .lines()
        .find(|l| l.starts_with("Group:developers"))
        .unwrap();
    assert!(dev.contains("namespace staging"), "{dev}");
    assert!(
        dev.contains("staging/RoleBinding/developers -> ClusterRole/developer"),
        "{dev}"
    );
    who_can(
        &["who-can", "create", "pods/exec", "-n", "staging", s(&f)],
        &[ARGOCD, CI, "Group:developers"],
    );
    // The developers' RoleBinding lives in staging: not in payments.
    who_can(
        &["who-can", "create", "pods/exec", "-n", "payments", s(&f)],
        &[ARGOCD, CI],
    );
    // Reading pod logs is not exec.
    who_can(
        &["who-can", "create", "pods/log", "-n", "staging", s(&f)],
        &[ARGOCD, CI],
    );
}

#[test]
fn a_question_nobody_matches_says_nobody_and_succeeds() {
    // Only the staging manifests: the developers may read and exec, not
    // delete Secrets, and no cluster-admin binding is in this input.
    let staging = vulnerable().join("staging.yaml");
    let o = run_code(
        &["who-can", "delete", "secrets", "-n", "staging", s(&staging)],
        0,
    );
    assert_eq!(
        stdout(&o),
        "nobody can delete secrets in namespace staging\n"
    );
    let o = run_code(
        &[
            "who-can",
            "delete",
            "secrets",
            "-n",
            "staging",
            s(&staging),
            "-o",
            "json",
        ],
        0,
    );
    assert_eq!(json_of(&o), serde_json::json!([]));
    // The same input does answer what the developers can do.
    who_can(
        &[
            "who-can",
            "create",
            "pods/exec",
            "-n",
            "staging",
            s(&staging),
        ],
        &["Group:developers"],
    );
}

#[test]
fn who_can_usage_errors_exit_2() {
    let f = vulnerable();
    // No input at all (stdin is not a terminal, but --live is not given
    // and no path either).
    let o = run_code(&["who-can", "get", "secrets"], 2);
    assert!(stderr(&o).contains("no input"), "{}", stderr(&o));
    let o = run_code(&["who-can", "", "secrets", s(&f)], 2);
    assert!(stderr(&o).contains("must not be empty"), "{}", stderr(&o));
    run_code(&["who-can", "get", "secrets", s(&f), "-o", "yaml"], 2);
}

// -------------------------------------------------------------- assess

/// The planted flaws of the vulnerable cluster (its README): each must be
/// a finding of the JSON report.
const PLANTED: &[&str] = &[
    "zt-assess-cluster-admin@ServiceAccount:argocd/argocd-application-controller",
    "zt-assess-cluster-admin@ServiceAccount:ci/ci-deployer",
    "zt-privileged@monitoring/DaemonSet/node-exporter",
    "zt-host-path@monitoring/DaemonSet/node-exporter",
    "pss-baseline-host-namespaces@monitoring/DaemonSet/node-exporter",
    "zt-assess-long-lived-token@ci/Secret/ci-deployer-token",
    "zt-assess-configmap-credentials@staging/ConfigMap/web-config",
    "zt-assess-data-store-reachable@staging/Deployment/redis",
    "zt-env-secret-literal@staging/Deployment/web",
    "zt-assess-escalation-path@Group:developers",
    "zt-rbac-wildcard@ClusterRole/argocd-application-controller",
    "zt-rbac-escalation-verbs@ClusterRole/developer",
    "zt-assess-no-default-deny-ingress@Namespace/staging",
    "zt-assess-no-default-deny-egress@Namespace/staging",
    "zt-assess-public-exposure@payments/Deployment/api",
    "zt-assess-missing-owner@staging/Deployment/web",
];

fn ids(report: &Value) -> BTreeSet<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn assess_json_has_the_schema_the_inventory_and_the_planted_findings() {
    let f = vulnerable();
    let o = run_code(&["assess", s(&f), "-o", "json"], 0);
    let a = json_of(&o);
    assert_eq!(a["schema"], "keycard.dev/assessment/v1");
    assert!(a["generated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(a["source"]["kind"], "manifests");
    assert_eq!(a["source"]["objects"], 50);
    assert_eq!(a["source"]["by_kind"]["Pod"], 8);
    assert_eq!(a["coverage"]["gaps"], serde_json::json!([]));
    assert_eq!(a["coverage"]["input_errors"], serde_json::json!([]));

    let sum = &a["summary"];
    assert_eq!(sum["workloads"], 7, "{sum:#}");
    assert_eq!(sum["namespaces"], 6, "{sum:#}");
    assert_eq!(sum["data_stores"], 2, "{sum:#}");
    assert_eq!(sum["cluster_admins"], serde_json::json!([ARGOCD, CI]));
    assert_eq!(a["inventory"]["workloads"].as_array().unwrap().len(), 7);
    assert_eq!(a["inventory"]["data_stores"].as_array().unwrap().len(), 2);

    let findings = a["findings"].as_array().unwrap();
    let got = ids(&a);
    assert_eq!(got.len(), findings.len(), "finding ids are not unique");
    for want in PLANTED {
        assert!(got.contains(*want), "{want} missing from {got:#?}");
    }
    // payments is the hardened namespace: no network or label finding there.
    for id in &got {
        assert!(
            !(id.contains("Namespace/payments")
                || id.starts_with("zt-assess-missing-owner@payments")),
            "{id}"
        );
    }
    // Exactly the two cluster-admins and the privileged DaemonSet are critical.
    let critical: BTreeSet<String> = findings
        .iter()
        .filter(|f| f["severity"] == "critical")
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        critical,
        set(&[
            "zt-assess-cluster-admin@ServiceAccount:argocd/argocd-application-controller",
            "zt-assess-cluster-admin@ServiceAccount:ci/ci-deployer",
            "zt-privileged@monitoring/DaemonSet/node-exporter",
        ])
    );
    // The summary counts what the findings say.
    for sev in ["critical", "high", "medium", "low"] {
        let n = findings.iter().filter(|f| f["severity"] == sev).count();
        assert_eq!(sum["findings_by_severity"][sev], n, "{sev}");
    }
    for f in findings {
        assert_eq!(
            f["id"].as_str().unwrap(),
            format!(
                "{}@{}",
                f["rule"].as_str().unwrap(),
                f["resource"].as_str().unwrap()
            )
        );
        assert!(!f["evidence"].as_array().unwrap().is_empty(), "{f}");
        assert!(!f["remediation"].as_str().unwrap().is_empty(), "{f}");
    }
    let pillars: BTreeSet<&str> = a["maturity"]["pillars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pillar"].as_str().unwrap())
        .collect();
    assert_eq!(
        pillars,
        [
            "identity",
            "devices",
            "networks",
            "applications-and-workloads",
            "data"
        ]
        .into_iter()
        .collect()
    );
    // A cluster with two cluster-admins is not past the first stage.
    assert_eq!(a["maturity"]["overall"], "traditional");
    let frameworks: BTreeSet<&str> = a["compliance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["framework"].as_str().unwrap())
        .collect();
    assert!(frameworks.contains("iso27001") && frameworks.contains("soc2"));
    // Nothing of a Secret's data reaches the report.
    let text = stdout(&o);
    for secret in ["hunter2", "sk_live_4eC39", "Y2hhbmdlbWU", "W1JFREFDVEVEXQ"] {
        assert!(!text.contains(secret), "{secret} leaked into the report");
    }
}

#[test]
fn html_report_to_a_file_is_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.html");
    let o = run_code(&["assess", s(&vulnerable()), "--out", s(&out)], 0);
    // The report went to the file; stdout stays empty, stderr summarises.
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("report.html: 50 objects"), "{err}");
    assert!(err.contains("3 critical"), "{err}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..100]);
    assert!(html.trim_end().ends_with("</html>"));
    assert!(html.contains("Content-Security-Policy"));
    assert!(html.contains("default-src 'none'"));
    // Nothing is loaded from elsewhere: no remote script, style, image,
    // font or frame.
    let lower = html.to_ascii_lowercase();
    for bad in [
        "src=\"http",
        "src='http",
        "href=\"http",
        "href='http",
        "url(http",
        "url(\"http",
        "url('http",
        "@import",
        "<script src",
        "<link rel=\"stylesheet\"",
        "<iframe",
    ] {
        assert!(!lower.contains(bad), "the HTML report loads {bad}...");
    }
    assert!(html.contains("ci-deployer"));
    assert!(html.contains("node-exporter"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
    // No temporary file is left next to it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["report.html"]);
}

#[test]
fn the_format_comes_from_the_extension_unless_given() {
    let dir = tempfile::tempdir().unwrap();
    let f = vulnerable();
    let json = dir.path().join("a.json");
    run_code(&["assess", s(&f), "--out", s(&json)], 0);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["schema"], "keycard.dev/assessment/v1");

    let sarif = dir.path().join("a.SARIF");
    run_code(&["assess", s(&f), "--out", s(&sarif)], 0);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&sarif).unwrap()).unwrap();
    assert_eq!(v["version"], "2.1.0");

    let md = dir.path().join("a.md");
    run_code(&["assess", s(&f), "--out", s(&md)], 0);
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .starts_with("# Zero-trust assessment"));

    // --output wins over the extension, and lifts the need for a known one.
    let odd = dir.path().join("a.weird");
    run_code(&["assess", s(&f), "--out", s(&odd), "-o", "json"], 0);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&odd).unwrap()).unwrap();
    assert_eq!(v["schema"], "keycard.dev/assessment/v1");

    // Markdown on stdout by default.
    let o = run_code(&["assess", s(&f)], 0);
    assert!(stdout(&o).starts_with("# Zero-trust assessment"));
}

#[test]
fn an_unknown_extension_without_output_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.weird");
    let o = run_code(&["assess", s(&vulnerable()), "--out", s(&out)], 2);
    let err = stderr(&o);
    assert!(err.contains("x.weird"), "{err}");
    assert!(err.contains("--output"), "{err}");
    assert!(!out.exists());
}

#[test]
fn sarif_is_2_1_0_with_a_result_per_finding() {
    let f = vulnerable();
    let sarif = json_of(&run_code(&["assess", s(&f), "-o", "sarif"], 0));
    let report = json_of(&run_code(&["assess", s(&f), "-o", "json"], 0));
    assert_eq!(sarif["version"], "2.1.0");
    assert!(sarif["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let runs = sarif["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let driver = &run["tool"]["driver"];
    assert!(!driver["name"].as_str().unwrap().is_empty());
    let rules = driver["rules"].as_array().unwrap();
    let rule_ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = rule_ids.iter().copied().collect();
    assert_eq!(unique.len(), rule_ids.len(), "duplicate rule ids");
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), report["findings"].as_array().unwrap().len());
    let mut fingerprints = BTreeSet::new();
    for r in results {
        let id = r["ruleId"].as_str().unwrap();
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rule_ids[idx], id, "ruleIndex of {r}");
        assert!(
            ["error", "warning", "note"].contains(&r["level"].as_str().unwrap()),
            "{r}"
        );
        assert!(!r["message"]["text"].as_str().unwrap().is_empty());
        assert!(!r["locations"].as_array().unwrap().is_empty(), "{r}");
        fingerprints.insert(
            r["partialFingerprints"]["keycardFindingId/v1"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Each result is one finding of the JSON report, by id.
    assert_eq!(fingerprints, ids(&report));
    let critical = results
        .iter()
        .find(|r| r["ruleId"] == "zt-privileged")
        .unwrap();
    assert_eq!(critical["level"], "error");
}

#[test]
fn fail_on_fails_the_vulnerable_cluster_and_passes_the_hardened_one() {
    let f = vulnerable();
    // The report is still written when the run fails.
    let o = run_code(&["assess", s(&f), "--fail-on", "high", "-o", "json"], 1);
    assert_eq!(json_of(&o)["schema"], "keycard.dev/assessment/v1");
    run_code(&["assess", s(&f), "--fail-on", "critical"], 1);
    // Without --fail-on, findings do not fail the run.
    run_code(&["assess", s(&f)], 0);

    let h = hardened();
    let o = run_code(&["assess", s(&h), "--fail-on", "low", "-o", "json"], 0);
    let a = json_of(&o);
    assert_eq!(a["findings"], serde_json::json!([]), "{:#}", a["findings"]);
    assert_eq!(a["summary"]["cluster_admins"], serde_json::json!([]));
    run_code(&["assess", s(&h), "--fail-on", "high"], 0);
}

// ---------------------------------------------------------------- diff

/// The vulnerable cluster with two fixes: the CI runner's cluster-admin
/// binding removed (and its unused token no longer mounted), and staging
/// given a default-deny policy.
fn fixed_copy(dir: &Path) -> PathBuf {
    let fixed = dir.join("fixed");
    std::fs::create_dir(&fixed).unwrap();
    for e in std::fs::read_dir(vulnerable()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, fixed.join(p.file_name().unwrap())).unwrap();
        }
    }
    let ci = fixed.join("ci.yaml");
    let text = std::fs::read_to_string(&ci).unwrap();
    let docs: Vec<&str> = text
        .split("\n---\n")
        .filter(|d| !d.contains("name: ci-deployer-cluster-admin"))
        .collect();
    assert_eq!(docs.len() + 1, text.split("\n---\n").count());
    let text = docs.join("\n---\n").replacen(
        "metadata: {name: ci-deployer, namespace: ci}\n",
        "metadata: {name: ci-deployer, namespace: ci}\nautomountServiceAccountToken: false\n",
        1,
    );
    assert!(text.contains("automountServiceAccountToken: false"));
    std::fs::write(&ci, text).unwrap();
    std::fs::write(
        fixed.join("staging-default-deny.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: default-deny, namespace: staging}\n\
         spec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n",
    )
    .unwrap();
    fixed
}

fn json_ids(v: &Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn diff_shows_what_a_fix_resolved_and_fails_on_the_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    run_code(&["assess", s(&vulnerable()), "--out", s(&old)], 0);
    let fixed = fixed_copy(dir.path());
    run_code(&["assess", s(&fixed), "--out", s(&new)], 0);

    let resolved = set(&[
        "zt-assess-cluster-admin@ServiceAccount:ci/ci-deployer",
        "zt-assess-data-store-reachable@staging/Deployment/redis",
        "zt-assess-no-default-deny-ingress@Namespace/staging",
        "zt-assess-no-default-deny-egress@Namespace/staging",
    ]);

    let o = run_code(&["assess", "diff", s(&old), s(&new)], 0);
    let text = stdout(&o);
    for id in &resolved {
        assert!(text.contains(&format!("({id})")), "{id} not in:\n{text}");
    }
    assert!(text.contains("resolved findings (4)"), "{text}");
    assert!(!text.contains("new findings"), "{text}");

    let o = run_code(&["assess", "diff", s(&old), s(&new), "-o", "json"], 0);
    let d = json_of(&o);
    assert_eq!(json_ids(&d, "resolved_findings"), resolved);
    assert_eq!(json_ids(&d, "new_findings"), BTreeSet::new());
    assert_eq!(d["cluster_admins_removed"], serde_json::json!([CI]));
    assert_eq!(d["regressions"], serde_json::json!([]));

    let o = run_code(&["assess", "diff", s(&old), s(&new), "-o", "md"], 0);
    assert!(stdout(&o).contains("cluster-admin"));

    // A fix is not a regression ...
    run_code(
        &["assess", "diff", s(&old), s(&new), "--fail-on-regression"],
        0,
    );
    // ... its undoing is.
    let o = run_code(
        &["assess", "diff", s(&new), s(&old), "--fail-on-regression"],
        1,
    );
    let text = stdout(&o);
    assert!(text.contains("REGRESSED"), "{text}");
    assert!(
        text.contains("new cluster-admin ServiceAccount:ci/ci-deployer"),
        "{text}"
    );
    // Without the flag, the same diff only reports.
    run_code(&["assess", "diff", s(&new), s(&old)], 0);
    // An assessment compared with itself has nothing to say.
    let o = run_code(
        &[
            "assess",
            "diff",
            s(&old),
            s(&old),
            "-o",
            "json",
            "--fail-on-regression",
        ],
        0,
    );
    let d = json_of(&o);
    assert_eq!(d["new_findings"], serde_json::json!([]));
    assert_eq!(d["resolved_findings"], serde_json::json!([]));
}

#[test]
fn diff_refuses_what_is_not_an_assessment() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    run_code(&["assess", s(&hardened()), "--out", s(&good)], 0);

    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"a\": 1}\n").unwrap();
    let o = run_code(&["assess", "diff", s(&good), s(&other)], 2);
    assert!(stderr(&o).contains("other.json"), "{}", stderr(&o));
    assert!(stderr(&o).contains("not an assessment"), "{}", stderr(&o));

    let yaml = dir.path().join("cluster.yaml");
    std::fs::copy(hardened(), &yaml).unwrap();
    let o = run_code(&["assess", "diff", s(&yaml), s(&good)], 2);
    assert!(stderr(&o).contains("cluster.yaml"), "{}", stderr(&o));

    // A report of another schema version.
    let text = std::fs::read_to_string(&good).unwrap();
    let v0 = dir.path().join("v0.json");
    std::fs::write(
        &v0,
        text.replacen("keycard.dev/assessment/v1", "keycard.dev/assessment/v0", 1),
    )
    .unwrap();
    let o = run_code(&["assess", "diff", s(&v0), s(&good)], 2);
    let err = stderr(&o);
    assert!(err.contains("v0.json") && err.contains("schema"), "{err}");

    let missing = dir.path().join("missing.json");
    let o = run_code(&["assess", "diff", s(&good), s(&missing)], 2);
    assert!(stderr(&o).contains("missing.json"), "{}", stderr(&o));
}

// ----------------------------------------------------------- bad input

#[test]
fn a_malformed_file_among_good_ones_is_a_warning_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(vulnerable()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    // The first document is fine, the second breaks on line 8 or 9.
    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine, namespace: staging}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n  namespace: x\n",
    )
    .unwrap();
    let o = run_code(&["assess", s(dir.path()), "-o", "json"], 0);
    let err = stderr(&o);
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning:") && l.contains("broken.yaml:"))
        .unwrap_or_else(|| panic!("no warning naming broken.yaml: {err}"));
    let line: u32 = warning
        .split("broken.yaml:")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line in {warning}"));
    assert!((8..=9).contains(&line), "{warning}");
    // The report is still produced, with everything else in it.
    let a = json_of(&o);
    assert_eq!(a["source"]["objects"], 51);
    let errors = a["coverage"]["input_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]["file"].as_str().unwrap().ends_with("broken.yaml"));
    assert!(ids(&a).contains("zt-assess-cluster-admin@ServiceAccount:ci/ci-deployer"));
}

#[test]
fn no_objects_at_all_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_code(&["assess", s(dir.path())], 2);
    let err = stderr(&o);
    assert!(err.contains("no Kubernetes objects"), "{err}");
    assert!(err.contains(s(dir.path())), "{err}");
    assert!(o.stdout.is_empty());

    let comments = dir.path().join("only-comments.yaml");
    std::fs::write(&comments, "# nothing here\n---\n").unwrap();
    let o = run_code(&["assess", s(&comments), "-o", "json"], 2);
    assert!(stderr(&o).contains("only-comments.yaml"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    // Empty stdin.
    let o = run_code(&["assess", "-"], 2);
    assert!(
        stderr(&o).contains("no Kubernetes objects"),
        "{}",
        stderr(&o)
    );
    // No report file is written for an input error.
    let out = dir.path().join("r.html");
    run_code(&["assess", s(&comments), "--out", s(&out)], 2);
    assert!(!out.exists());
}

#[test]
fn stdin_is_an_input() {
    let staging = std::fs::read(vulnerable().join("staging.yaml")).unwrap();
    let mut child = keycard()
        .args([
            "who-can",
            "create",
            "pods/exec",
            "-n",
            "staging",
            "-",
            "-o",
            "json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&staging).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json_subjects(&json_of(&o)), set(&["Group:developers"]));
}

/// A kubeconfig for `server`, token auth, no TLS verification.
fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: c\n  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}\n\
             users:\n- name: u\n  user: {{token: not-a-real-token}}\n\
             contexts:\n- name: ctx\n  context: {{cluster: c, user: u}}\n\
             current-context: ctx\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn live_without_a_cluster_fails_promptly_and_clearly() {
    let t = Instant::now();
    let o = run_code(&["assess", "--live", "--kubeconfig", "/nonexistent"], 2);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let err = stderr(&o);
    assert!(err.contains("/nonexistent"), "{err}");
    assert!(err.contains("error:"), "{err}");
    assert!(o.stdout.is_empty());
    run_code(
        &["who-can", "get", "secrets", "--kubeconfig", "/nonexistent"],
        2,
    );

    let dir = tempfile::tempdir().unwrap();
    // A context the kubeconfig does not have.
    let kc = kubeconfig(dir.path(), "https://127.0.0.1:1");
    let o = run_code(
        &["assess", "--kubeconfig", s(&kc), "--context", "nosuch"],
        2,
    );
    assert!(stderr(&o).contains("nosuch"), "{}", stderr(&o));
    // Nothing listens: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let kc = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    let t = Instant::now();
    let o = run_code(&["assess", "--kubeconfig", s(&kc)], 2);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        stderr(&o).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn live_against_a_server_that_never_answers_stops_at_the_deadline() {
    // Accepts connections and never says a word (a hung API server or a
    // black-holing proxy).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().take(64) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(60));
    });
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    let t = Instant::now();
    let o = run_code(
        &["assess", "--kubeconfig", s(&kc), "--deadline-secs", "2"],
        2,
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let err = stderr(&o);
    assert!(err.contains("deadline"), "{err}");
    assert!(err.contains("error:"), "{err}");
}
