#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Gatekeeper templates and constraints, written for these tests in the
//! style of the public library, run through keycard: every match field,
//! every enforcementAction, libraries, referential templates, and the
//! errors a broken library must give.

use std::path::PathBuf;
use std::time::Duration;

use keycard_core::Severity;
use keycard_k8s::{load_paths, parse_str, LoadOptions, Object};
use keycard_policy::gatekeeper::GatekeeperLibrary;
use keycard_policy::{Enforcement, Finding};
use serde_json::{json, Value};

fn fixture(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gatekeeper")
        .join(dir)
}

fn load(dir: &str) -> Vec<Object> {
    let loaded = load_paths(&[fixture(dir)], &LoadOptions::default());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.objects
}

fn objs(name: &str, text: &str) -> Vec<Object> {
    let (o, errors) = parse_str(name, text, &LoadOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    o
}

/// The library and manifests of the fixtures, inventory set.
fn setup() -> (GatekeeperLibrary, Vec<Object>, Vec<Object>) {
    let policy = load("policy");
    let (mut lib, rest) = GatekeeperLibrary::from_objects(&policy).unwrap();
    let manifests = load("manifests");
    lib.set_inventory(&manifests).unwrap();
    (lib, rest, manifests)
}

type Row = (
    String,
    String,
    String,
    Severity,
    Enforcement,
    String,
    Option<Value>,
);

fn row(f: &Finding) -> Row {
    (
        f.resource.to_string(),
        f.rule.clone(),
        f.policy.clone(),
        f.severity,
        f.enforcement,
        f.message.clone(),
        f.value.clone(),
    )
}

fn r(
    res: &str,
    rule: &str,
    policy: &str,
    sev: Severity,
    enf: Enforcement,
    msg: &str,
    value: Option<Value>,
) -> Row {
    (
        res.into(),
        rule.into(),
        policy.into(),
        sev,
        enf,
        msg.into(),
        value,
    )
}

#[test]
fn library_splits_policy_objects() {
    let (lib, rest, _) = setup();
    assert_eq!(lib.template_count(), 6);
    assert_eq!(lib.constraint_count(), 9);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].kind(), "ConfigMap");
    assert_eq!(rest[0].name(), "team-data");
    let cs = lib.constraints();
    assert_eq!(cs[0].0, "K8sRequiredLabels/ns-must-have-owner");
    assert!(cs[0].1.ends_with("constraints.yaml"), "{}", cs[0].1);
    assert_eq!(cs[0].2, 1);
}

#[test]
fn every_object_gets_exactly_the_findings_gatekeeper_would_give() {
    use Enforcement::{Deny, Dryrun, Warn};
    use Severity::{Critical, High, Low, Medium};
    let (lib, _, manifests) = setup();
    let mut got = Vec::new();
    let mut ev = lib.clone();
    for o in &manifests {
        for f in ev.evaluate(o).unwrap() {
            // Findings point at the object, not at the constraint.
            assert!(f.file.ends_with("manifests/objects.yaml"), "{}", f.file);
            assert_eq!(f.line, o.source.line, "{}", f.rule);
            assert!(f.exception.is_none());
            got.push(row(&f));
        }
    }
    let want = vec![
        r(
            "Namespace team-shared",
            "K8sRequiredLabels/ns-must-have-owner",
            "k8srequiredlabels",
            High,
            Deny,
            "missing required labels: owner",
            Some(json!({"missing": ["owner"]})),
        ),
        r(
            "Namespace dev",
            "K8sRequiredLabels/ns-must-have-owner",
            "k8srequiredlabels",
            High,
            Deny,
            "label owner=Bob1 does not match ^[a-z]+$",
            None,
        ),
        // Cluster-scoped and not a Namespace: `namespaces` does not apply.
        r(
            "ClusterRole reader",
            "K8sRequiredLabels/cluster-objects-need-owner",
            "k8srequiredlabels",
            High,
            Dryrun,
            "missing required labels: owner",
            Some(json!({"missing": ["owner"]})),
        ),
        r(
            "Pod prod-a/web-app",
            "K8sAllowedRepos/prod-repos",
            "k8sallowedrepos",
            Critical,
            Dryrun,
            "container web uses image docker.io/nginx:1.25, which is not from an allowed repository (registry.example.com/)",
            Some(json!({"image": "docker.io/nginx:1.25"})),
        ),
        // Severity from the template's annotation; the library sees init containers.
        r(
            "Pod prod-a/web-app",
            "K8sNoPrivileged/no-privileged",
            "k8snoprivileged",
            Critical,
            Deny,
            "privileged container init is not allowed",
            Some(json!({"container": "init"})),
        ),
        // Its own lib.pods leaves init containers out; scoped: gator's action.
        r(
            "Pod prod-a/web-app",
            "K8sReadOnlyRoot/read-only-root",
            "k8sreadonlyroot",
            High,
            Deny,
            "container web must run with a read-only root filesystem",
            None,
        ),
        r(
            "Pod team-shared/worker",
            "K8sRequiredLabels/workloads-need-team",
            "k8srequiredlabels",
            Medium,
            Warn,
            "every workload needs a team label",
            Some(json!({"missing": ["team"]})),
        ),
        r(
            "Ingress prod-a/front",
            "K8sUniqueIngressHost/unique-hosts",
            "k8suniqueingresshost",
            High,
            Deny,
            "host shop.example.com is already used by ingress team-shared/front2",
            Some(json!({"host": "shop.example.com"})),
        ),
        r(
            "Ingress team-shared/front2",
            "K8sUniqueIngressHost/unique-hosts",
            "k8suniqueingresshost",
            High,
            Deny,
            "host shop.example.com is already used by ingress prod-a/front",
            Some(json!({"host": "shop.example.com"})),
        ),
        r(
            "Service team-shared/ghost",
            "K8sServiceHasPods/services-select-pods",
            "k8sservicehaspods",
            Low,
            Deny,
            "service ghost selects no pod in namespace team-shared",
            None,
        ),
    ];
    assert_eq!(got, want);
}

#[test]
fn title_and_description_come_from_the_template() {
    let (mut lib, _, manifests) = setup();
    let ns = manifests
        .iter()
        .find(|o| o.name() == "team-shared")
        .unwrap();
    let f = lib.evaluate(ns).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(&*f[0].title, "Required Labels");
    assert!(f[0]
        .description
        .starts_with("Objects must carry the labels"));
    assert_eq!(f[0].line, 7);
    // Without a title annotation, the kind.
    let pod = manifests.iter().find(|o| o.name() == "worker").unwrap();
    let mut lib2 = lib.clone();
    lib2.set_inventory(&manifests).unwrap();
    let svc = objs(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: team-shared}\nspec: {selector: {app: none}}\n",
    );
    let f = lib2.evaluate(&svc[0]).unwrap();
    assert_eq!(&*f[0].title, "K8sServiceHasPods");
    assert_eq!(lib2.evaluate(pod).unwrap().len(), 1);
}

#[test]
fn review_is_shaped_like_an_admission_request() {
    let policy = objs(
        "echo.yaml",
        r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8secho}
spec:
  crd: {spec: {names: {kind: K8sEcho}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8secho
        violation[{"msg": "echo", "details": {"review": r, "parameters": input.parameters}}] {
          r := object.remove(input.review, ["object"])
          input.review.object.metadata.name == input.review.name
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sEcho
metadata: {name: echo}
spec:
  parameters: {answer: 42, list: [a, b]}
"#,
    );
    let (mut lib, rest) = GatekeeperLibrary::from_objects(&policy).unwrap();
    assert!(rest.is_empty());
    let o = objs(
        "d.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: ns1}\n",
    );
    let f = lib.evaluate(&o[0]).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].value,
        Some(json!({
            "review": {
                "uid": "",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "name": "d",
                "namespace": "ns1",
                "operation": "CREATE",
                "userInfo": {},
                "oldObject": null,
                "dryRun": false
            },
            "parameters": {"answer": 42, "list": ["a", "b"]}
        }))
    );
    // Cluster-scoped, core group: no namespace key, empty group.
    let o = objs(
        "n.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
    );
    let f = lib.evaluate(&o[0]).unwrap();
    let review = &f[0].value.as_ref().unwrap()["review"];
    assert_eq!(
        review["kind"],
        json!({"group": "", "version": "v1", "kind": "Namespace"})
    );
    assert!(review.get("namespace").is_none());
}

#[test]
fn namespace_selector_needs_the_namespace() {
    let (mut lib, _, _) = setup();
    let o = objs(
        "orphan.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lonely, namespace: orphan}\nspec:\n  containers: [{name: c, image: docker.io/x, securityContext: {readOnlyRootFilesystem: true}}]\n",
    );
    let e = lib.evaluate(&o[0]).unwrap_err();
    assert_eq!(e.policy, "K8sAllowedRepos/prod-repos");
    assert!(e.message.contains("Namespace orphan"), "{}", e.message);
    // Once the Namespace is known, its labels decide.
    let mut all = load("manifests");
    all.extend(objs(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: orphan, labels: {env: prod}}\n",
    ));
    lib.set_inventory(&all).unwrap();
    let f = lib.evaluate(&o[0]).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, "K8sAllowedRepos/prod-repos");
}

const TEMPLATE_HEAD: &str = "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {name: k8sbad}\nspec:\n  crd: {spec: {names: {kind: K8sBad}}}\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n";

fn load_err(text: &str) -> String {
    let o = objs("lib/bad.yaml", text);
    GatekeeperLibrary::from_objects(&o)
        .expect_err("must fail")
        .to_string()
}

#[test]
fn constraint_for_unknown_template_names_file_and_line() {
    let e = load_err(&format!(
        "{TEMPLATE_HEAD}      rego: |\n        package k8sbad\n        violation[{{\"msg\": \"x\"}}] {{ false }}\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sMissing\nmetadata: {{name: orphan}}\n"
    ));
    assert!(e.starts_with("lib/bad.yaml:12:"), "{e}");
    assert!(e.contains("K8sMissing/orphan"), "{e}");
    assert!(
        e.contains("no ConstraintTemplate defines kind K8sMissing"),
        "{e}"
    );
}

#[test]
fn bad_rego_names_file_line_and_template() {
    let e = load_err(&format!(
        "---\n{TEMPLATE_HEAD}      rego: |\n        package k8sbad\n        violation[{{\"msg\": msg}}] {{\n          msg := \n        }}\n"
    ));
    assert!(e.starts_with("lib/bad.yaml:2:"), "{e}");
    assert!(e.contains("ConstraintTemplate k8sbad: invalid Rego"), "{e}");
    // regorus names the template's module and the line inside the Rego.
    assert!(e.contains("lib/bad.yaml#k8sbad"), "{e}");
}

#[test]
fn bad_lib_names_the_lib() {
    let e = load_err(&format!(
        "{TEMPLATE_HEAD}      rego: |\n        package k8sbad\n        import data.lib.x.f\n        violation[{{\"msg\": \"m\"}}] {{ f(1) }}\n      libs:\n        - |\n          package lib.x\n          f(a) = {{ a\n"
    ));
    assert!(e.contains("ConstraintTemplate k8sbad: invalid Rego"), "{e}");
    assert!(e.contains("k8sbad/libs[0]"), "{e}");
}

#[test]
fn template_without_violation_is_refused() {
    let e = load_err(&format!(
        "{TEMPLATE_HEAD}      rego: |\n        package k8sbad\n        deny[msg] {{ msg := \"x\" }}\n"
    ));
    assert!(e.starts_with("lib/bad.yaml:1:"), "{e}");
    assert!(
        e.contains("k8sbad: the Rego defines no `violation` rule"),
        "{e}"
    );
}

#[test]
fn template_reading_other_data_is_refused() {
    let e = load_err(&format!(
        "{TEMPLATE_HEAD}      rego: |\n        package k8sbad\n        violation[{{\"msg\": m}}] {{ m := data.secrets.x }}\n"
    ));
    assert!(e.contains("reads data.secrets"), "{e}");
}

#[test]
fn cel_only_template_is_refused_not_skipped() {
    let e = load_err(&format!(
        "{TEMPLATE_HEAD}      code:\n        - engine: K8sNativeValidation\n          source: {{validations: [{{expression: 'true'}}]}}\n"
    ));
    assert!(e.contains("only engines [\"K8sNativeValidation\"]"), "{e}");
}

#[test]
fn template_name_must_be_lowercase_kind() {
    let e = load_err(&TEMPLATE_HEAD.replace("name: k8sbad", "name: other"));
    assert!(e.contains("lowercase of kind K8sBad"), "{e}");
}

#[test]
fn unknown_enforcement_action_is_an_error() {
    let e = load_err(&format!(
        "{TEMPLATE_HEAD}      rego: |\n        package k8sbad\n        violation[{{\"msg\": \"x\"}}] {{ false }}\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sBad\nmetadata: {{name: c}}\nspec: {{enforcementAction: Deny}}\n"
    ));
    assert!(e.starts_with("lib/bad.yaml:12:"), "{e}");
    assert!(e.contains("unknown enforcementAction \"Deny\""), "{e}");
}

#[test]
fn bad_severity_annotation_and_selector_are_errors() {
    let base = format!(
        "{TEMPLATE_HEAD}      rego: |\n        package k8sbad\n        violation[{{\"msg\": \"x\"}}] {{ false }}\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sBad\n"
    );
    let e = load_err(&format!(
        "{base}metadata: {{name: c, annotations: {{keycard.dev/severity: urgent}}}}\n"
    ));
    assert!(e.contains("keycard.dev/severity"), "{e}");
    let e = load_err(&format!(
        "{base}metadata: {{name: c}}\nspec:\n  match:\n    labelSelector:\n      matchExpressions: [{{key: a, operator: In}}]\n"
    ));
    assert!(e.contains("operator In needs values"), "{e}");
}

#[test]
fn duplicate_package_names_do_not_clash() {
    // Two templates with the same package name, as copies of one another often have.
    let t = |kind: &str, msg: &str| {
        format!(
            "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {{name: {}}}\nspec:\n  crd: {{spec: {{names: {{kind: {kind}}}}}}}\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n        package shared\n        default verdict = \"{msg}\"\n        violation[{{\"msg\": verdict}}] {{ true }}\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: {kind}\nmetadata: {{name: c}}\n",
            kind.to_lowercase()
        )
    };
    let text = format!("{}---\n{}", t("K8sOne", "one"), t("K8sTwo", "two"));
    let (mut lib, _) = GatekeeperLibrary::from_objects(&objs("p.yaml", &text)).unwrap();
    let o = objs(
        "o.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    let msgs: Vec<String> = lib
        .evaluate(&o[0])
        .unwrap()
        .into_iter()
        .map(|f| f.message)
        .collect();
    assert_eq!(msgs, vec!["one", "two"]);
}

#[test]
fn runaway_template_hits_the_time_limit() {
    let text = format!(
        "{TEMPLATE_HEAD}      rego: |\n        package k8sbad\n        violation[{{\"msg\": \"slow\"}}] {{\n          input.review.kind.kind == \"Pod\"\n          n := numbers.range(1, 20000)[i] * numbers.range(1, 20000)[j]\n          n < 0\n        }}\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sBad\nmetadata: {{name: c}}\n"
    );
    let (mut lib, _) = GatekeeperLibrary::from_objects(&objs("slow.yaml", &text)).unwrap();
    lib.set_timeout(Duration::from_millis(200));
    let o = objs("p.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");
    let start = std::time::Instant::now();
    let e = lib.evaluate(&o[0]).unwrap_err();
    assert_eq!(e.policy, "k8sbad");
    assert!(e.message.contains("K8sBad/c"), "{}", e.message);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn empty_library_is_a_no_op() {
    let o = objs(
        "o.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    let (mut lib, rest) = GatekeeperLibrary::from_objects(&o).unwrap();
    assert!(lib.is_empty());
    assert_eq!(rest.len(), 1);
    assert!(lib.evaluate(&o[0]).unwrap().is_empty());
}

#[test]
fn deprecated_v0_builtins_still_work() {
    let text = format!(
        "{TEMPLATE_HEAD}      rego: |\n        package k8sbad\n        violation[{{\"msg\": msg}}] {{\n          re_match(\"^team-\", input.review.object.metadata.name)\n          any([false, true])\n          not all([true, false])\n          extra := set_diff(cast_set([\"a\", \"b\"]), {{\"a\"}})\n          count(cast_array(extra)) == 1\n          msg := concat(\",\", extra)\n        }}\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sBad\nmetadata: {{name: c}}\n"
    );
    let (mut lib, _) = GatekeeperLibrary::from_objects(&objs("old.yaml", &text)).unwrap();
    let hit = objs(
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: team-a}\n",
    );
    let miss = objs(
        "b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n",
    );
    let f = lib.evaluate(&hit[0]).unwrap();
    assert_eq!(
        f.iter().map(|f| f.message.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );
    assert!(lib.evaluate(&miss[0]).unwrap().is_empty());
}
