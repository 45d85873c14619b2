//! What an input lets the assessment see: partial dumps, `kubectl get all`,
//! unknown kinds and API versions, manifests without Secrets, broken files.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::fs;
use std::path::Path;

use keycard_assess::input::{self, Input};
use keycard_assess::{Coverage, Pillar, SourceKind};

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

fn load(dir: &Path) -> (Input, Coverage) {
    let input = Input::load(&[dir], &Default::default());
    let cov = input::coverage(&input);
    (input, cov)
}

fn gap_ids(c: &Coverage) -> Vec<&str> {
    c.gaps.iter().map(|g| g.id.as_str()).collect()
}

fn gap<'a>(c: &'a Coverage, id: &str) -> &'a keycard_assess::Gap {
    c.gaps
        .iter()
        .find(|g| g.id == id)
        .unwrap_or_else(|| panic!("no gap {id} in {:?}", gap_ids(c)))
}

/// A pod as `kubectl get -o yaml` prints it (uid, resourceVersion, status).
fn dumped_pod(ns: &str, name: &str) -> String {
    format!(
        "- apiVersion: v1
  kind: Pod
  metadata:
    name: {name}
    namespace: {ns}
    uid: 0b6c-{name}
    resourceVersion: \"1234\"
    creationTimestamp: \"2026-01-01T00:00:00Z\"
    ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {name}-rs, controller: true}}]
  spec:
    serviceAccountName: {name}
    containers: [{{name: app, image: nginx}}]
  status: {{phase: Running}}
"
    )
}

fn list(items: &[String]) -> String {
    format!(
        "apiVersion: v1\nkind: List\nmetadata: {{resourceVersion: \"\"}}\nitems:\n{}",
        items.concat()
    )
}

const ALL_NEEDED: &[&str] = &[
    "ClusterRoleBinding",
    "RoleBinding",
    "ClusterRole",
    "Role",
    "ServiceAccount",
    "NetworkPolicy",
    "Secret",
    "Namespace",
    "Service",
    "ConfigMap",
];

#[test]
fn partial_dump_of_pods_only_names_every_missing_kind_and_limits_pillars() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "pods.yaml",
        &list(&[dumped_pod("shop", "web"), dumped_pod("shop", "db")]),
    );
    let (input, cov) = load(dir.path());
    assert_eq!(input.source.kind, SourceKind::Dump);
    assert_eq!(input.objects.len(), 2);
    assert_eq!(cov.seen, ["Pod"]);
    for k in ALL_NEEDED {
        gap(&cov, &format!("missing-kind:{k}"));
    }
    // Pods are workloads: no workload gap.
    assert!(!gap_ids(&cov).contains(&"missing-kind:Pod"));
    // Not a `get all` dump: no Services either.
    assert!(!gap_ids(&cov).contains(&"kubectl-get-all"));
    let rb = gap(&cov, "missing-kind:RoleBinding");
    assert_eq!(rb.pillars, [Pillar::Identity]);
    assert!(rb.impact.contains("who can"), "{}", rb.impact);
    assert!(rb.what.contains("rolebindings"), "{}", rb.what);
    for p in [
        Pillar::Identity,
        Pillar::Networks,
        Pillar::Data,
        Pillar::ApplicationsAndWorkloads,
    ] {
        assert!(cov.limits(p), "{p:?}");
    }
    // Nothing the assessment reads describes devices.
    assert!(!cov.limits(Pillar::Devices));
    assert!(!cov.complete());
    let np = gap(&cov, "missing-kind:NetworkPolicy");
    assert!(np.impact.contains("AdminNetworkPolicy"), "{}", np.impact);
    assert!(cov.input_errors.is_empty());
    assert!(cov.unknown_kinds.is_empty());
}

#[test]
fn a_get_all_dump_is_recognised_and_the_right_command_given() {
    let dir = tempfile::tempdir().unwrap();
    let svc = "- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop, uid: s1, resourceVersion: \"9\"}
  spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}
"
    .to_string();
    let deploy = "- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web, namespace: shop, uid: d1, resourceVersion: \"9\"}
  spec: {template: {metadata: {labels: {app: web}}, spec: {containers: [{name: a, image: x}]}}}
  status: {replicas: 1}
"
    .to_string();
    write(
        dir.path(),
        "all.yaml",
        &list(&[dumped_pod("shop", "web"), svc, deploy]),
    );
    let (input, cov) = load(dir.path());
    assert_eq!(input.source.kind, SourceKind::Dump);
    let g = gap(&cov, "kubectl-get-all");
    assert!(g.what.contains("get all"));
    assert!(
        g.impact.contains(&input::dump_command()),
        "the gap gives the command: {}",
        g.impact
    );
    assert!(input::dump_command().contains("clusterrolebindings"));
    assert!(input::dump_command().contains("networkpolicies"));
    assert!(cov.limits(Pillar::Identity));
    assert!(cov.limits(Pillar::Networks));
    for k in [
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "NetworkPolicy",
        "Secret",
    ] {
        gap(&cov, &format!("missing-kind:{k}"));
    }
    // Services and workloads were there.
    assert!(!gap_ids(&cov).contains(&"missing-kind:Service"));
    assert!(!gap_ids(&cov).contains(&"missing-kind:Pod"));
    // `get all` never includes Ingresses: their absence limits a pillar.
    assert!(!gap(&cov, "missing-kind:Ingress").pillars.is_empty());
}

#[test]
fn a_complete_dump_has_no_missing_kind_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let mut items = vec![dumped_pod("shop", "web")];
    for (api, kind, ns) in [
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", Some("shop")),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", None),
        ("rbac.authorization.k8s.io/v1", "Role", Some("shop")),
        ("v1", "ServiceAccount", Some("shop")),
        ("networking.k8s.io/v1", "NetworkPolicy", Some("shop")),
        ("v1", "Secret", Some("shop")),
        ("v1", "Namespace", None),
        ("v1", "Service", Some("shop")),
        ("networking.k8s.io/v1", "Ingress", Some("shop")),
        ("v1", "ConfigMap", Some("shop")),
    ] {
        let ns = ns.map(|n| format!(", namespace: {n}")).unwrap_or_default();
        items.push(format!(
            "- apiVersion: {api}\n  kind: {kind}\n  metadata: {{name: x{ns}, uid: u, resourceVersion: \"1\"}}\n"
        ));
    }
    write(dir.path(), "dump.yaml", &list(&items));
    let (_, cov) = load(dir.path());
    assert!(cov.gaps.is_empty(), "{:?}", gap_ids(&cov));
    assert!(cov.complete());
    assert!(!cov.limits(Pillar::Identity));
    assert!(cov.unknown_kinds.is_empty(), "{:?}", cov.unknown_kinds);
}

#[test]
fn unknown_kinds_and_removed_api_versions_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "old.yaml",
        "apiVersion: extensions/v1beta1
kind: Deployment
metadata: {name: legacy, namespace: shop}
spec: {template: {spec: {containers: [{name: a, image: x}]}}}
---
apiVersion: policy/v1beta1
kind: PodSecurityPolicy
metadata: {name: restricted}
spec: {privileged: false}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: a1, namespace: argocd}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: a2, namespace: argocd}
---
apiVersion: apps/v2
kind: StatefulSet
metadata: {name: future, namespace: shop}
spec: {template: {spec: {containers: [{name: a, image: x}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: fine, namespace: shop}
spec: {template: {spec: {containers: [{name: a, image: x}]}}}
",
    );
    let (input, cov) = load(dir.path());
    assert_eq!(input.source.kind, SourceKind::Manifests);
    assert_eq!(
        cov.unknown_kinds,
        [
            "apps/v2 StatefulSet (1 object)",
            "argoproj.io/v1alpha1 Application (2 objects)",
            "extensions/v1beta1 Deployment (1 object, removed in Kubernetes 1.16)",
            "policy/v1beta1 PodSecurityPolicy (1 object, removed in Kubernetes 1.25)",
        ]
    );
    let g = gap(&cov, "removed-api:extensions/v1beta1/Deployment");
    assert!(g.what.contains("1.16"), "{}", g.what);
    assert!(g.impact.contains("apps/v1"), "{}", g.impact);
    assert_eq!(g.pillars, [Pillar::ApplicationsAndWorkloads]);
    gap(&cov, "removed-api:apps/v2/StatefulSet");
    // Not a workload kind: listed, no gap.
    assert!(!gap_ids(&cov)
        .iter()
        .any(|id| id.contains("PodSecurityPolicy")));
    assert!(!gap_ids(&cov).iter().any(|id| id.contains("Application")));
}

#[test]
fn manifests_without_secrets_are_normal_but_missing_rbac_still_limits_identity() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "app.yaml",
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers:
      - name: a
        image: x
        envFrom: [{secretRef: {name: web-db}}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
",
    );
    let (input, cov) = load(dir.path());
    assert_eq!(input.source.kind, SourceKind::Manifests);
    // Not mistaken for `get all`, although it has no RBAC.
    assert!(!gap_ids(&cov).contains(&"kubectl-get-all"));
    let secret = gap(&cov, "missing-kind:Secret");
    assert!(secret.pillars.is_empty(), "a note limits no pillar");
    assert!(secret.impact.starts_with("note:"), "{}", secret.impact);
    assert!(secret.impact.contains("normally"), "{}", secret.impact);
    let cm = gap(&cov, "missing-kind:ConfigMap");
    assert!(cm.pillars.is_empty());
    // No Secret, ConfigMap, Namespace or Ingress gap limits anything.
    assert!(!cov.limits(Pillar::Data));
    // RBAC absent: who-can answers are still incomplete.
    assert_eq!(
        gap(&cov, "missing-kind:RoleBinding").pillars,
        [Pillar::Identity]
    );
    assert!(cov.limits(Pillar::Identity));
    // The same objects read back from a cluster: a missing Secret is a real gap.
    let mut objects = input.objects.clone();
    for o in &mut objects {
        o.value["metadata"]["uid"] = "u".into();
    }
    let dump = Input::from_objects(objects, SourceKind::Dump, vec![]);
    let cov = input::coverage(&dump);
    assert_eq!(
        gap(&cov, "missing-kind:Secret").pillars,
        [Pillar::Identity, Pillar::Data]
    );
    assert!(cov.limits(Pillar::Data));
}

#[test]
fn a_broken_file_is_reported_with_file_and_line_and_the_rest_is_assessed() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a-good.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: shop}\n",
    );
    write(
        dir.path(),
        "b-broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok, namespace: shop}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: [unclosed\n",
    );
    write(
        dir.path(),
        "c-good.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb, namespace: shop}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\nsubjects: [{kind: ServiceAccount, name: web, namespace: shop}]\n",
    );
    let (input, cov) = load(dir.path());
    assert_eq!(cov.input_errors.len(), 1, "{:?}", cov.input_errors);
    let e = &cov.input_errors[0];
    assert!(e.file.ends_with("b-broken.yaml"), "{}", e.file);
    assert!(matches!(e.line, Some(l) if (5..=9).contains(&l)), "{e:?}");
    assert_eq!(
        cov.seen,
        ["ConfigMap", "RoleBinding", "ServiceAccount"],
        "the good documents around the broken one are read"
    );
    assert_eq!(input.objects.len(), 3);
    // The assessment runs over the rest.
    let a = keycard_assess::assess(&input, &Default::default());
    assert_eq!(a.coverage.input_errors, cov.input_errors);
}

#[test]
fn empty_input_is_judged_as_a_dump_and_limits_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (input, cov) = load(dir.path());
    assert_eq!(input.source.kind, SourceKind::Dump);
    gap(&cov, "missing-kind:Pod");
    for p in [
        Pillar::Identity,
        Pillar::Networks,
        Pillar::ApplicationsAndWorkloads,
        Pillar::Data,
    ] {
        assert!(cov.limits(p));
    }
}

#[test]
fn live_input_has_only_the_gaps_its_reader_found() {
    // Live lists every resource itself: a kind with no objects is a kind
    // the cluster does not have.
    let mut input = Input::from_objects(Vec::new(), SourceKind::Live, vec![]);
    input.gaps.push(keycard_assess::Gap {
        id: "forbidden:secrets".into(),
        what: "w".into(),
        impact: "i".into(),
        pillars: vec![Pillar::Data],
    });
    let cov = input::coverage(&input);
    assert_eq!(gap_ids(&cov), ["forbidden:secrets"]);
}

/// The documented way to strip Secrets' data from a dump, run for real
/// with jq over a dump that has data in every place kubectl puts it.
#[test]
fn the_documented_jq_filter_strips_secret_data_and_keeps_what_is_assessed() {
    let jq = std::process::Command::new("jq").arg("--version").output();
    if jq.is_err() {
        // scripts/test installs jq; under CI a missing jq is a failure, not
        // a silent pass.
        assert!(
            std::env::var_os("CI").is_none(),
            "jq is not installed (scripts/test installs it)"
        );
        eprintln!("jq not installed: skipped (scripts/test installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dump = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"shop","uid":"1","resourceVersion":"2",
 "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"password\":\"aHVudGVyMg==\"}}","team":"payments"},
 "managedFields":[{"manager":"kubectl","fieldsV1":{"f:data":{"f:password":{}}}}]},
 "type":"Opaque","data":{"password":"aHVudGVyMg=="}},
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"web-token","namespace":"shop","uid":"3",
 "annotations":{"kubernetes.io/service-account.name":"web"}},
 "type":"kubernetes.io/service-account-token","data":{"token":"aHVudGVyMg=="}},
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"plain","namespace":"shop","uid":"5"},"stringData":{"k":"aHVudGVyMg=="}},
{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app","namespace":"shop","uid":"4"},"data":{"DB_PASSWORD":"hunter2"}}]}"#;
    let raw = dir.path().join("raw.json");
    fs::write(&raw, dump).unwrap();
    let out = std::process::Command::new("jq")
        .arg(input::SECRET_STRIP_JQ)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stripped = String::from_utf8(out.stdout).unwrap();
    assert!(!stripped.contains("aHVudGVyMg"), "{stripped}");
    assert!(!stripped.contains("managedFields"));
    let clean = dir.path().join("clean");
    fs::create_dir(&clean).unwrap();
    fs::write(clean.join("cluster.json"), &stripped).unwrap();
    let (input, cov) = load(&clean);
    assert_eq!(input.source.kind, SourceKind::Dump);
    assert_eq!(input.objects.len(), 4);
    let secret = |n: &str| input.objects.iter().find(|o| o.name() == n).unwrap();
    assert_eq!(
        secret("web-token").value["type"],
        "kubernetes.io/service-account-token"
    );
    assert_eq!(
        secret("web-token").metadata()["annotations"]["kubernetes.io/service-account.name"],
        "web"
    );
    assert_eq!(secret("db").metadata()["annotations"]["team"], "payments");
    // ConfigMaps keep their data: credentials in them are a finding.
    assert_eq!(secret("app").value["data"]["DB_PASSWORD"], "hunter2");
    assert!(!gap_ids(&cov).contains(&"missing-kind:Secret"));
}

/// docs/assess-input.md shows the commands the code gives.
#[test]
fn the_documentation_holds_the_commands_verbatim() {
    let doc = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/assess-input.md"),
    )
    .unwrap();
    assert!(doc.contains(&input::dump_command()), "dump command");
    assert!(
        doc.contains(&input::dump_command_stripped()),
        "stripped dump command"
    );
    for r in keycard_assess::live::RESOURCES {
        assert!(
            doc.contains(r.resource),
            "{} in the ClusterRole",
            r.resource
        );
    }
}
