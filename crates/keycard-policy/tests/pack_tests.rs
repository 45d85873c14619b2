#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The built-in packs' own Rego unit tests (`packs/**/*_test.rego`) run
//! through keycard's test runner, plus the checks that keep the zero-trust
//! pack's metadata, parameters and tests consistent with its rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use keycard_policy::testing::{run_tests, run_tests_sources, TestOptions, TestReport};
use keycard_policy::{parse_annotations, Scope};

fn packs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packs")
}

fn zero_trust_dir() -> PathBuf {
    packs_dir().join("zero-trust")
}

fn opts() -> TestOptions {
    TestOptions {
        coverage: false,
        run: None,
        timeout: Duration::from_secs(10),
    }
}

/// The zero-trust rule files: every `.rego` but the tests and the helpers.
fn zero_trust_rules() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(zero_trust_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(stem) = name.strip_suffix(".rego") {
            if !stem.ends_with("_test") && stem != "lib" {
                out.insert(stem.to_string(), std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    out
}

/// One run of every built-in pack's tests, with coverage, shared by the
/// tests below (a run takes seconds in a debug build).
fn packs_report() -> &'static TestReport {
    static REPORT: OnceLock<TestReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        run_tests(
            &[packs_dir()],
            &TestOptions {
                coverage: true,
                ..opts()
            },
        )
        .unwrap()
    })
}

/// A readable list of what did not pass, for assertion messages.
fn failures(report: &TestReport) -> String {
    format!("\n{report}\n")
}

#[test]
fn every_builtin_pack_test_passes() {
    let report = packs_report();
    assert!(
        report.results.len() >= 100,
        "expected the zero-trust tests at least, found {} tests",
        report.results.len()
    );
    assert_eq!(report.failed(), 0, "{}", failures(report));
    // Built-in packs are Rego v1: a v0 fallback here is a regression.
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[test]
fn embedded_zero_trust_sources_run_the_same_tests() {
    let pack = keycard_policy::packs::find("zero-trust").unwrap();
    let sources: Vec<(String, String)> = keycard_policy::packs::all_rego_sources(pack)
        .into_iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    let embedded = run_tests_sources(&sources, &opts()).unwrap();
    assert_eq!(embedded.failed(), 0, "{}", failures(&embedded));
    let embedded_names: BTreeSet<String> = embedded.results.iter().map(|t| t.full_name()).collect();
    let disk_names: BTreeSet<String> = packs_report()
        .results
        .iter()
        .filter(|t| t.package.starts_with("keycard.zt."))
        .map(|t| t.full_name())
        .collect();
    assert_eq!(embedded_names, disk_names);
}

#[test]
fn every_zero_trust_rule_has_passing_and_firing_tests() {
    let report = packs_report();
    let mut per_package: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &report.results {
        per_package
            .entry(r.package.clone())
            .or_default()
            .push(r.name.clone());
    }
    for rule in zero_trust_rules().keys() {
        let pkg = format!("keycard.zt.{rule}_test");
        let tests = per_package
            .get(&pkg)
            .unwrap_or_else(|| panic!("rule {rule} has no tests (package {pkg})"));
        assert!(
            tests.len() >= 3,
            "rule {rule} has only {} tests: {tests:?}",
            tests.len()
        );
        assert!(
            tests.iter().any(|t| t.contains("pass")),
            "rule {rule} has no test that a good object passes: {tests:?}"
        );
        assert!(
            tests.iter().any(|t| t.contains("fire")),
            "rule {rule} has no test that a bad object fires: {tests:?}"
        );
    }
}

#[test]
fn zero_trust_metadata_is_complete_and_consistent() {
    let mut ids = BTreeSet::new();
    for (rule, text) in zero_trust_rules() {
        let file = format!("zero-trust/{rule}.rego");
        let info = parse_annotations(&file, &text).unwrap();
        assert_eq!(info.package, format!("keycard.zt.{rule}"), "{file}");
        assert!(info.outputs.contains_key("deny"), "{file}: no deny rule");
        let meta = info
            .package_meta
            .unwrap_or_else(|| panic!("{file}: no METADATA"));
        let id = meta
            .id
            .clone()
            .unwrap_or_else(|| panic!("{file}: no custom.id"));
        // The id is the package name in kebab case, so either finds the other.
        assert_eq!(id, format!("zt-{}", rule.replace('_', "-")), "{file}");
        assert!(ids.insert(id.clone()), "duplicate id {id}");
        assert!(meta.severity.is_some(), "{file}: no severity");
        assert!(!meta.title.is_empty(), "{file}: no title");
        assert!(
            meta.description.len() > 80,
            "{file}: the description must give the rationale"
        );
        assert!(
            meta.remediation.len() > 40,
            "{file}: the remediation must say what to change"
        );
        for framework in ["nsa", "iso27001", "soc2"] {
            assert!(
                meta.controls.get(framework).is_some_and(|c| !c.is_empty()),
                "{file}: no {framework} controls"
            );
        }
        // scope pod exactly when the rule reads the pod.
        let reads_pod = [
            "lib.containers",
            "lib.workload_containers",
            "lib.spec",
            "lib.volumes",
            "lib.has_pod",
            "lib.pod_metadata",
            "input.pod",
        ]
        .iter()
        .any(|h| text.contains(h));
        let expected = if reads_pod { Scope::Pod } else { Scope::Object };
        assert_eq!(
            meta.scope, expected,
            "{file}: scope does not match what the rule reads"
        );
    }
    assert_eq!(ids.len(), 16, "{ids:?}");
}

/// Names of the parameters the Rego reads through the lib's param helpers.
fn params_read_by_rules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(zero_trust_dir().join("lib.rego")).unwrap();
    let mut out = BTreeSet::new();
    for text in zero_trust_rules().values().chain([&lib]) {
        for helper in ["param_list(\"", "param_obj(\"", "param_bool(\""] {
            for (i, _) in text.match_indices(helper) {
                let rest = &text[i + helper.len()..];
                if let Some(end) = rest.find('"') {
                    out.insert(rest[..end].to_string());
                }
            }
        }
    }
    out
}

#[test]
fn params_yaml_declares_exactly_the_parameters_rules_read() {
    let text = std::fs::read_to_string(zero_trust_dir().join("params.yaml")).unwrap();
    let params: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    let declared: BTreeSet<String> = params.as_object().unwrap().keys().cloned().collect();
    assert_eq!(declared, params_read_by_rules());
}

/// Evaluate one rule of the zero-trust pack's test fixtures with regorus.
fn fixture(rule: &str) -> serde_json::Value {
    let mut engine = regorus::Engine::new();
    for entry in std::fs::read_dir(zero_trust_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rego") {
            engine.add_policy_from_file(&path).unwrap();
        }
    }
    let value = engine
        .eval_rule(format!("data.keycard.zt.fixtures_test.{rule}"))
        .unwrap();
    serde_json::to_value(&value).unwrap()
}

#[test]
fn test_fixture_defaults_equal_params_yaml() {
    // The Rego tests run with fixtures_test.defaults as input.params; the
    // engine runs with params.yaml. They must not drift apart.
    let text = std::fs::read_to_string(zero_trust_dir().join("params.yaml")).unwrap();
    let params: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(fixture("defaults"), params);
}

#[test]
fn test_fixture_lists_every_rule_package() {
    // fixtures_test.outputs drives the "hardened workload passes every rule" test.
    let listed: BTreeSet<String> = fixture("outputs")
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let files: BTreeSet<String> = zero_trust_rules().keys().cloned().collect();
    assert_eq!(listed, files);
}

#[test]
fn pack_tests_exercise_most_of_the_pack() {
    let report = packs_report();
    let coverage = report.coverage.as_ref().unwrap();
    for c in coverage {
        if c.file.ends_with("_test.rego") || !c.file.contains("zero-trust") {
            continue;
        }
        assert!(
            c.percent() >= 90.0,
            "{}: only {:.1}% of lines covered; not covered: {:?}",
            c.file,
            c.percent(),
            c.not_covered
        );
    }
}

/// The pack through keycard's engine, as `keycard check` runs it: params.yaml
/// defaults applied, pod-scope paths prefixed with the template path, and
/// namespace findings from the inventory.
#[test]
fn engine_runs_the_zero_trust_pack_on_manifests() {
    let yaml = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: nginx:latest
        env:
        - {name: DB_PASSWORD, value: hunter2}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: LoadBalancer
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: batch
---
apiVersion: batch/v1
kind: Job
metadata:
  name: nightly
  namespace: batch
spec:
  template:
    spec:
      containers:
      - name: job
        image: registry.example.com/job:1
"#;
    let (objects, errors) =
        keycard_k8s::parse_str("shop.yaml", yaml, &keycard_k8s::LoadOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    let policy = keycard_policy::PolicySetBuilder::new()
        .pack("zero-trust")
        .inventory(&objects)
        .build()
        .unwrap();
    let mut evaluator = policy.evaluator();
    let mut found: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    for obj in &objects {
        for f in evaluator.evaluate(obj).unwrap() {
            assert!(
                !f.message.contains("hunter2") && f.value != Some(serde_json::json!("hunter2")),
                "secret echoed: {f:?}"
            );
            found.insert((obj.kind().to_string(), f.rule.clone(), f.path.clone()));
        }
    }
    let expect = |kind: &str, rule: &str, path: &str| {
        let key = (kind.to_string(), rule.to_string(), Some(path.to_string()));
        assert!(found.contains(&key), "missing {key:?} in {found:#?}");
    };
    expect("Namespace", "zt-default-deny-ingress", "metadata.name");
    expect("Namespace", "zt-default-deny-egress", "metadata.name");
    expect(
        "Deployment",
        "zt-image-digest",
        "spec.template.spec.containers[0].image",
    );
    expect(
        "Deployment",
        "zt-env-secret-literal",
        "spec.template.spec.containers[0].env[0].value",
    );
    expect(
        "Deployment",
        "zt-required-labels",
        "metadata.labels[\"owner\"]",
    );
    expect(
        "Deployment",
        "zt-sa-token-automount",
        "spec.template.spec.automountServiceAccountToken",
    );
    expect("Service", "zt-service-exposure", "spec.type");
    // "batch" has no Namespace object: its first object carries the finding.
    expect("ConfigMap", "zt-default-deny-ingress", "metadata.namespace");
    expect(
        "Job",
        "zt-image-digest",
        "spec.template.spec.containers[0].image",
    );
    let namespace_findings: Vec<_> = found
        .iter()
        .filter(|(_, r, _)| r.starts_with("zt-default-deny"))
        .map(|(k, _, _)| k.as_str())
        .collect();
    assert_eq!(
        namespace_findings,
        ["ConfigMap", "ConfigMap", "Namespace", "Namespace"],
        "{found:#?}"
    );
    // allowed_registries defaults to [] (rule off).
    assert!(
        !found.iter().any(|(_, r, _)| r == "zt-allowed-registries"),
        "{found:#?}"
    );
}

/// Cost of the zero-trust pack per object through the engine, and that it
/// stays flat as the input grows (no rule scans the inventory per object).
/// Timing-based, so not run by default:
/// `cargo test --release -p keycard-policy --test pack_tests -- --ignored --nocapture`.
#[test]
#[ignore]
fn zero_trust_cost_per_object_is_flat() {
    fn manifests(n: usize) -> String {
        let mut out = String::new();
        for ns in 0..20 {
            if ns % 2 == 0 {
                out.push_str(&format!(
                    "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{ns}}}\n"
                ));
            }
            out.push_str(&format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny, namespace: ns{ns}}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress]}}\n"
            ));
        }
        for i in 0..n {
            let ns = i % 20;
            out.push_str(&format!(
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app{i}, namespace: ns{ns}, labels: {{owner: t, data-classification: internal}}}}\nspec:\n  template:\n    spec:\n      serviceAccountName: app{i}\n      containers:\n      - name: app\n        image: registry.example.com/app:{i}\n        env:\n        - {{name: LOG_LEVEL, value: info}}\n        - {{name: API_TOKEN, value: abc{i}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: app{i}, namespace: ns{ns}}}\nspec: {{type: ClusterIP}}\n"
            ));
        }
        out
    }
    let mut per_object = Vec::new();
    for n in [500, 2000] {
        let (objects, errors) = keycard_k8s::parse_str(
            "many.yaml",
            &manifests(n),
            &keycard_k8s::LoadOptions::default(),
        );
        assert!(errors.is_empty());
        let policy = keycard_policy::PolicySetBuilder::new()
            .pack("zero-trust")
            .inventory(&objects)
            .build()
            .unwrap();
        let mut evaluator = policy.evaluator();
        let started = std::time::Instant::now();
        let mut findings = 0;
        for obj in &objects {
            findings += evaluator.evaluate(obj).unwrap().len();
        }
        let each = started.elapsed() / objects.len() as u32;
        eprintln!(
            "{} objects: {each:?} per object, {findings} findings",
            objects.len()
        );
        per_object.push(each);
    }
    assert!(per_object[1] < per_object[0] * 2, "{per_object:?}");
}
