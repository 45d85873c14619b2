//! The maturity score per pillar and the compliance mapping, on small
//! clusters whose every relevant fact is known: a hardened one, a
//! vulnerable one, and a partial dump.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use keycard_assess::maturity::Criterion;
use keycard_assess::{
    compliance, maturity, Context, ControlEvidence, ControlStatus, Coverage, DataStore, Finding,
    Framework, Gap, Identity, IdentityCategory, Inventory, Maturity, NamespaceInfo, Options,
    Permission, Pillar, PillarScore, Rbac, Reach, Scope, Stage, Subject, WorkloadInfo,
};
use keycard_core::Severity;
use keycard_k8s::Object;

const DIGEST: &str = "@sha256:0000000000000000000000000000000000000000000000000000000000000001";

fn hardened_yaml() -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {{pod-security.kubernetes.io/enforce: restricted}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: default-deny, namespace: shop}}
spec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-to-db, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: db}}}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]
    ports: [{{port: 5432, protocol: TCP}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {{owner: team-shop, data-classification: confidential}}
spec:
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      serviceAccountName: web
      automountServiceAccountToken: false
      containers:
      - name: web
        image: registry.example/web:1.0{DIGEST}
        securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true}}
        volumeMounts: [{{name: creds, mountPath: /creds}}]
      - name: keycard-proxy
        image: registry.example/keycard:1.0{DIGEST}
        args: [proxy, --audit-log, /var/log/keycard]
        securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true}}
      volumes:
      - name: creds
        secret: {{secretName: web-db}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: shop
  labels: {{owner: team-shop, data-classification: restricted}}
spec:
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      serviceAccountName: db
      automountServiceAccountToken: false
      containers:
      - name: postgres
        image: registry.example/postgres:16{DIGEST}
        ports: [{{containerPort: 5432}}]
        securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true}}
      - name: keycard-proxy
        image: registry.example/keycard:1.0{DIGEST}
        args: [proxy]
        securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: keycard-agent, namespace: keycard}}
spec:
  template:
    spec:
      containers:
      - name: keycard-agent
        image: registry.example/keycard:1.0{DIGEST}
        args: [agent]
      volumes:
      - name: socket
        hostPath: {{path: /run/keycard}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: keycard-admission}}
webhooks: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: web, namespace: shop}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: web}}
subjects: [{{kind: ServiceAccount, name: web, namespace: shop}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: web-db, namespace: shop}}
type: Opaque
---
apiVersion: v1
kind: Node
metadata: {{name: node-a}}
status:
  nodeInfo: {{osImage: Debian 12, kernelVersion: 6.1.0, kubeletVersion: v1.30.2, containerRuntimeVersion: containerd://1.7.0}}
---
apiVersion: v1
kind: Node
metadata: {{name: node-b}}
status:
  nodeInfo: {{osImage: Debian 12, kernelVersion: 6.1.0, kubeletVersion: v1.29.5, containerRuntimeVersion: containerd://1.7.0}}
---
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - kms: {{apiVersion: v2, name: vault}}
  - identity: {{}}
"#
    )
}

const VULNERABLE_YAML: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: legacy}
spec:
  template:
    metadata: {labels: {app: app}}
    spec:
      hostNetwork: true
      containers:
      - name: app
        image: app:latest
        securityContext: {privileged: true}
        env:
        - {name: DB_PASSWORD, value: hunter2}
        - name: API_TOKEN
          valueFrom: {secretKeyRef: {name: api, key: token}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: legacy}
spec:
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: mysql
        image: mysql:8
        ports: [{containerPort: 3306}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: legacy}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{}]
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: legacy}
spec: {type: LoadBalancer, selector: {app: app}, ports: [{port: 80}]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: alice-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: User, name: alice}]
---
apiVersion: v1
kind: Secret
metadata:
  name: legacy-token
  namespace: legacy
  annotations: {kubernetes.io/service-account.name: default}
type: kubernetes.io/service-account-token
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
status:
  nodeInfo: {osImage: Debian 10, kernelVersion: 4.19.0, kubeletVersion: v1.30.2, containerRuntimeVersion: docker://20.10}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
status:
  nodeInfo: {osImage: Debian 10, kernelVersion: 4.19.0, kubeletVersion: v1.26.1, containerRuntimeVersion: docker://20.10}
"#;

fn parse(text: &str) -> Vec<Object> {
    let (objs, errs) = keycard_k8s::parse_str("t.yaml", text, &Default::default());
    assert!(errs.is_empty(), "{errs:?}");
    objs
}

fn permission(resources: &[&str], verbs: &[&str], scope: Scope, role: &str) -> Permission {
    Permission {
        scope,
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        api_groups: vec![String::new()],
        resources: resources.iter().map(|s| s.to_string()).collect(),
        resource_names: Vec::new(),
        non_resource_urls: Vec::new(),
        binding: format!("binding-of-{role}"),
        role: role.to_string(),
        via_group: None,
    }
}

fn identity(subject: Subject, category: IdentityCategory) -> Identity {
    Identity {
        id: subject.to_string(),
        subject,
        category,
        category_reason: None,
        exists: true,
        permissions: Vec::new(),
        workloads: Vec::new(),
        secrets_readable: Vec::new(),
        cluster_admin: false,
        escalation_paths: Vec::new(),
    }
}

fn workload(ns: &str, kind: &str, name: &str, sa: &str) -> WorkloadInfo {
    WorkloadInfo {
        id: format!("{ns}/{kind}/{name}"),
        kind: kind.to_string(),
        namespace: ns.to_string(),
        name: name.to_string(),
        service_account: sa.to_string(),
        token_mounted: false,
        identity_has_permissions: false,
        secrets_mounted: Vec::new(),
        secrets_readable: Vec::new(),
        privileged: false,
        host_namespaces: Vec::new(),
        exposed: Vec::new(),
        labels: BTreeMap::new(),
        has_owner: true,
        has_data_classification: true,
        file: None,
        line: None,
    }
}

fn hardened_inventory() -> Inventory {
    let mut masters = identity(Subject::group("system:masters"), IdentityCategory::System);
    masters.cluster_admin = true;
    masters.secrets_readable = vec!["*/*".into()];
    let mut web = identity(
        Subject::service_account("shop", "web"),
        IdentityCategory::Workload,
    );
    web.permissions = vec![permission(
        &["secrets"],
        &["get"],
        Scope::Namespace("shop".into()),
        "shop/Role/web",
    )];
    web.secrets_readable = vec!["shop/web-db".into()];
    web.workloads = vec!["shop/Deployment/web".into()];
    let mut db = identity(
        Subject::service_account("shop", "db"),
        IdentityCategory::Workload,
    );
    db.workloads = vec!["shop/StatefulSet/db".into()];

    let mut w = workload("shop", "Deployment", "web", "web");
    w.secrets_mounted = vec!["shop/web-db".into()];
    w.secrets_readable = vec!["shop/web-db".into()];
    w.identity_has_permissions = true;
    let d = workload("shop", "StatefulSet", "db", "db");
    Inventory {
        identities: vec![masters, web, db],
        workloads: vec![w, d],
        data_stores: vec![DataStore {
            workload: "shop/StatefulSet/db".into(),
            engine: "postgresql".into(),
            recognised_by: "image postgres".into(),
            ports: vec![5432],
            reachable_from: vec![Reach {
                workload: "shop/Deployment/web".into(),
                ports: "TCP 5432".into(),
            }],
            reachable_from_outside: false,
            isolated: true,
        }],
        namespaces: vec![NamespaceInfo {
            name: "shop".into(),
            exists: true,
            default_deny_ingress: true,
            default_deny_egress: true,
            workloads: 2,
            pod_security: Some("restricted".into()),
        }],
    }
}

fn vulnerable_inventory() -> Inventory {
    let mut alice = identity(Subject::user("alice"), IdentityCategory::Human);
    alice.cluster_admin = true;
    alice.secrets_readable = vec!["*/*".into()];
    alice.permissions = vec![permission(
        &["*"],
        &["*"],
        Scope::Cluster,
        "ClusterRole/cluster-admin",
    )];
    let mut default = identity(
        Subject::service_account("legacy", "default"),
        IdentityCategory::Workload,
    );
    default.escalation_paths = vec!["can create pods as any service account in legacy".into()];
    default.secrets_readable = vec!["legacy/*".into()];

    let mut app = workload("legacy", "Deployment", "app", "default");
    app.token_mounted = true;
    app.privileged = true;
    app.host_namespaces = vec!["hostNetwork".into()];
    app.exposed = vec![
        "Service legacy/app (LoadBalancer)".into(),
        "hostNetwork".into(),
    ];
    app.has_owner = false;
    app.has_data_classification = false;
    app.secrets_readable = vec!["legacy/*".into()];
    app.identity_has_permissions = true;
    let mut db = workload("legacy", "Deployment", "db", "default");
    db.token_mounted = true;
    db.has_owner = false;
    db.has_data_classification = false;
    Inventory {
        identities: vec![alice, default],
        workloads: vec![app, db],
        data_stores: vec![DataStore {
            workload: "legacy/Deployment/db".into(),
            engine: "mysql".into(),
            recognised_by: "image mysql".into(),
            ports: vec![3306],
            reachable_from: Vec::new(),
            reachable_from_outside: true,
            isolated: false,
        }],
        namespaces: vec![NamespaceInfo {
            name: "legacy".into(),
            exists: true,
            default_deny_ingress: false,
            default_deny_egress: false,
            workloads: 2,
            pod_security: None,
        }],
    }
}

fn finding(rule: &str, category: &str, pillar: Pillar, resource: &str) -> Finding {
    Finding {
        id: Finding::make_id(rule, resource),
        rule: rule.to_string(),
        title: rule.to_string(),
        severity: Severity::High,
        pillar,
        category: category.to_string(),
        resource: resource.to_string(),
        namespace: resource.split('/').next().map(str::to_string),
        evidence: vec![format!("{rule} seen on {resource}")],
        remediation: "fix it".into(),
        controls: BTreeMap::new(),
        file: None,
        line: None,
    }
}

fn vulnerable_findings() -> Vec<Finding> {
    vec![
        finding(
            "zt-rbac-cluster-admin",
            "rbac",
            Pillar::Identity,
            "ClusterRoleBinding/alice-admin",
        ),
        finding(
            "zt-privileged",
            "workload-privilege",
            Pillar::ApplicationsAndWorkloads,
            "legacy/Deployment/app",
        ),
        {
            // As the zero-trust pack declares it.
            let mut f = finding(
                "zt-env-secret-literal",
                "static-credentials",
                Pillar::Data,
                "legacy/Deployment/app",
            );
            f.controls
                .insert("iso27001".into(), vec!["A.5.17".into(), "A.8.24".into()]);
            f.controls
                .insert("soc2".into(), vec!["CC6.1".into(), "CC6.7".into()]);
            f
        },
        finding(
            "zt-assess-no-default-deny",
            "network",
            Pillar::Networks,
            "Namespace/legacy",
        ),
    ]
}

/// Run both stages on objects, an inventory, findings and coverage gaps.
fn run(
    objects: &[Object],
    inventory: &Inventory,
    findings: &[Finding],
    gaps: Vec<Gap>,
) -> (Maturity, Vec<ControlEvidence>) {
    let rbac = Rbac::from_objects(objects);
    let (cluster, _) = keycard_flows::Cluster::from_objects(objects);
    let coverage = Coverage {
        gaps,
        ..Coverage::default()
    };
    let options = Options {
        now: 1_700_000_000,
        ..Options::default()
    };
    let workloads = keycard_assess::objects::workloads(objects);
    let ctx = Context {
        objects,
        workloads: &workloads,
        rbac: &rbac,
        cluster: &cluster,
        coverage: &coverage,
        options: &options,
    };
    let m = maturity::score(&ctx, inventory, findings);
    let c = compliance::map(&ctx, inventory, findings, &m);
    (m, c)
}

fn pillar(m: &Maturity, p: Pillar) -> &PillarScore {
    m.pillars.iter().find(|s| s.pillar == p).unwrap()
}

fn control<'c>(c: &'c [ControlEvidence], fw: Framework, id: &str) -> &'c ControlEvidence {
    c.iter()
        .find(|e| e.framework == fw && e.control == id)
        .unwrap_or_else(|| panic!("no control {id}"))
}

fn met(p: &PillarScore, c: Criterion) -> bool {
    p.evidence
        .iter()
        .find(|e| e.criterion == c.text())
        .unwrap_or_else(|| panic!("no evidence for {c:?}"))
        .met
}

/// The score lies in the band of its stage.
fn assert_band(p: &PillarScore) {
    let (lo, hi) = match p.stage {
        Stage::Traditional => (0, 24),
        Stage::Initial => (25, 49),
        Stage::Advanced => (50, 74),
        Stage::Optimal => (100, 100),
    };
    assert!(
        (lo..=hi).contains(&p.score),
        "{}: score {} outside the {} band",
        p.pillar,
        p.score,
        p.stage
    );
}

#[test]
fn hardened_cluster_beats_vulnerable_on_every_pillar() {
    let hardened = parse(&hardened_yaml());
    let (good, _) = run(&hardened, &hardened_inventory(), &[], Vec::new());
    let vulnerable = parse(VULNERABLE_YAML);
    let (bad, _) = run(
        &vulnerable,
        &vulnerable_inventory(),
        &vulnerable_findings(),
        Vec::new(),
    );
    for p in Pillar::ALL {
        let (g, b) = (pillar(&good, p), pillar(&bad, p));
        assert!(g.assessed && b.assessed, "{p} not assessed");
        assert!(
            g.score > b.score && g.stage > b.stage,
            "{p}: hardened {} ({}) vs vulnerable {} ({})",
            g.stage,
            g.score,
            b.stage,
            b.score
        );
        assert_band(g);
        assert_band(b);
        assert!(g.limited_by.is_empty());
    }
    // The hardened cluster meets every criterion there is.
    for p in &good.pillars {
        let unmet: Vec<_> = p.evidence.iter().filter(|e| !e.met).collect();
        assert!(unmet.is_empty(), "{}: {unmet:#?}", p.pillar);
        assert_eq!(p.stage, Stage::Optimal);
        assert!(p.next_steps.is_empty());
    }
    assert_eq!(good.overall, Some(Stage::Optimal));

    // The vulnerable one fails the first stage where it matters.
    assert_eq!(pillar(&bad, Pillar::Identity).stage, Stage::Traditional);
    assert_eq!(pillar(&bad, Pillar::Networks).stage, Stage::Traditional);
    assert_eq!(bad.overall, Some(Stage::Traditional));
    let id = pillar(&bad, Pillar::Identity);
    assert!(!met(id, Criterion::IdNoClusterAdmin));
    let detail = &id
        .evidence
        .iter()
        .find(|e| e.criterion == Criterion::IdNoClusterAdmin.text())
        .unwrap()
        .detail;
    assert!(detail.contains("User:alice"), "{detail}");
    assert!(!met(id, Criterion::IdNoTokenSecrets));
    let net = pillar(&bad, Pillar::Networks);
    assert!(
        !met(net, Criterion::NetLeastPrivilege),
        "allow-all not seen"
    );
    assert!(!met(net, Criterion::NetNoDirectExposure));
    // Next steps start with the next stage's most effective action.
    assert!(
        net.next_steps[0].contains("default-deny ingress"),
        "{:?}",
        net.next_steps
    );
    let dev = pillar(&bad, Pillar::Devices);
    assert!(!met(dev, Criterion::DevVersionsConsistent), "1.26 vs 1.30");
    assert!(!met(
        pillar(&bad, Pillar::Data),
        Criterion::DataNoCredentialLiterals
    ));
}

#[test]
fn partial_credit_stays_inside_the_stage() {
    // Hardened, but the namespace lacks default-deny egress: the stage
    // drops to Initial and the score shows how far Advanced is.
    let objects = parse(&hardened_yaml());
    let mut inv = hardened_inventory();
    inv.namespaces[0].default_deny_egress = false;
    let (m, _) = run(&objects, &inv, &[], Vec::new());
    let net = pillar(&m, Pillar::Networks);
    assert_eq!(net.stage, Stage::Initial);
    assert!(net.score > 25 && net.score < 50, "{}", net.score);
    assert_eq!(
        net.next_steps[0],
        "Add a default-deny egress NetworkPolicy (DNS allowed) to every namespace with workloads"
    );
}

#[test]
fn a_partial_dump_never_scores_high() {
    // Everything else is perfect, but RBAC was not in the input.
    let objects: Vec<Object> = parse(&hardened_yaml())
        .into_iter()
        .filter(|o| o.group() != "rbac.authorization.k8s.io")
        .collect();
    let gap = Gap {
        id: "missing-kind:ClusterRoleBinding".into(),
        what: "no RBAC objects (Roles, ClusterRoles, bindings)".into(),
        impact: "who can do what is unknown".into(),
        pillars: vec![Pillar::Identity, Pillar::Data],
    };
    let (m, controls) = run(&objects, &hardened_inventory(), &[], vec![gap]);
    let id = pillar(&m, Pillar::Identity);
    assert_eq!(id.stage, Stage::Initial);
    assert!(id.score < 50, "{}", id.score);
    assert_eq!(id.limited_by, ["missing-kind:ClusterRoleBinding"]);
    assert!(
        id.next_steps[0].contains("no RBAC objects"),
        "{:?}",
        id.next_steps
    );
    assert_eq!(pillar(&m, Pillar::Data).stage, Stage::Initial);
    // Pillars the gap does not touch keep their stage; overall is capped.
    assert_eq!(pillar(&m, Pillar::Networks).stage, Stage::Optimal);
    assert!(pillar(&m, Pillar::Networks).limited_by.is_empty());
    assert_eq!(m.overall, Some(Stage::Initial));

    // Controls resting only on the limited pillars lose their evidence.
    let a516 = control(&controls, Framework::Iso27001, "A.5.16");
    assert_eq!(a516.status, ControlStatus::NotAssessed, "{a516:?}");
    assert!(a516.supporting.is_empty());
    // Others keep what the unaffected pillars show.
    let a822 = control(&controls, Framework::Iso27001, "A.8.22");
    assert_eq!(a822.status, ControlStatus::Supported);
    assert!(a822
        .supporting
        .iter()
        .any(|s| s.contains("all 1 namespaces with workloads deny ingress by default")));

    // Without the gap, the same input is rated on what it shows: no
    // bindings at all is no evidence of RBAC, so not above Traditional.
    let (m, _) = run(&objects, &Inventory::default(), &[], Vec::new());
    let id = pillar(&m, Pillar::Identity);
    assert!(!met(id, Criterion::IdRbacVisible));
    assert_eq!(id.stage, Stage::Traditional);
}

#[test]
fn devices_without_nodes_or_workloads_are_not_assessed() {
    let objects =
        parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: x}\ndata: {a: b}\n");
    let (m, controls) = run(&objects, &Inventory::default(), &[], Vec::new());
    let dev = pillar(&m, Pillar::Devices);
    assert!(!dev.assessed);
    assert_eq!((dev.stage, dev.score), (Stage::Traditional, 0));
    assert!(dev
        .evidence
        .iter()
        .any(|e| e.detail.contains("no Node objects")));
    assert!(m.pillars.iter().all(|p| !p.assessed));
    assert_eq!(m.overall, None);
    assert!(controls
        .iter()
        .all(|c| c.status == ControlStatus::NotAssessed));
}

#[test]
fn a_cluster_admin_finding_contradicts_privileged_access_controls() {
    let objects = parse(&hardened_yaml());
    // A rule id of the assessment's own, with no controls metadata: the
    // mapping must come from the rule id and category alone.
    let f = finding(
        "zt-assess-cluster-admin",
        "rbac",
        Pillar::Identity,
        "User:bob",
    );
    let (m, controls) = run(
        &objects,
        &hardened_inventory(),
        std::slice::from_ref(&f),
        Vec::new(),
    );
    for (fw, id) in [(Framework::Iso27001, "A.8.2"), (Framework::Soc2, "CC6.3")] {
        let c = control(&controls, fw, id);
        assert_eq!(c.contradicting, std::slice::from_ref(&f.id), "{id}");
        // Other evidence still supports it: privileged workloads are absent.
        assert_eq!(c.status, ControlStatus::Partial, "{id}: {c:?}");
        assert!(!c.supporting.is_empty());
    }
    // The finding also breaks the identity criterion it speaks to.
    let id = pillar(&m, Pillar::Identity);
    assert!(!met(id, Criterion::IdNoClusterAdmin));
    assert_eq!(id.stage, Stage::Traditional);
    // A control nothing contradicts stays supported.
    assert_eq!(
        control(&controls, Framework::Iso27001, "A.8.22").status,
        ControlStatus::Supported
    );
}

#[test]
fn findings_own_control_metadata_is_honoured() {
    // Nothing else in the input: every status comes from the finding.
    let objects =
        parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: x}\ndata: {a: b}\n");
    let mut f = finding(
        "team-custom-rule",
        "misc",
        Pillar::Data,
        "legacy/Deployment/app",
    );
    f.controls
        .insert("iso27001".into(), vec!["A.8.12".into(), "A.8.19".into()]);
    f.controls
        .insert("gdpr".into(), vec!["Article 32(1)(b)".into()]);
    f.controls.insert("soc2".into(), vec!["CC8.1".into()]);
    f.controls.insert("cis".into(), vec!["5.1.1".into()]);
    let (_, controls) = run(
        &objects,
        &Inventory::default(),
        std::slice::from_ref(&f),
        Vec::new(),
    );
    for (fw, id) in [
        (Framework::Iso27001, "A.8.12"),
        (Framework::Iso27001, "A.8.19"),
        (Framework::Gdpr, "Art. 32(1)(b)"),
        (Framework::Soc2, "CC8.1"),
    ] {
        let c = control(&controls, fw, id);
        assert_eq!(c.contradicting, [f.id.clone()], "{id}");
        assert_eq!(c.status, ControlStatus::Contradicted, "{id}: {c:?}");
    }
    // A control outside the catalogue keeps a title that says where it
    // came from; no other framework key leaks in.
    assert!(control(&controls, Framework::Soc2, "CC8.1")
        .title
        .contains("team-custom-rule"));
    assert!(!controls.iter().any(|c| c.control.contains("5.1.1")));
}

#[test]
fn compliance_is_sorted_and_deterministic() {
    let objects = parse(VULNERABLE_YAML);
    let (_, a) = run(
        &objects,
        &vulnerable_inventory(),
        &vulnerable_findings(),
        Vec::new(),
    );
    let mut findings = vulnerable_findings();
    findings.reverse();
    let (_, b) = run(&objects, &vulnerable_inventory(), &findings, Vec::new());
    let key = |c: &[ControlEvidence]| serde_json::to_string(c).unwrap();
    assert_eq!(key(&a), key(&b));
    let ids: Vec<&str> = a
        .iter()
        .filter(|c| c.framework == Framework::Iso27001)
        .map(|c| c.control.as_str())
        .collect();
    let pos = |id: &str| ids.iter().position(|x| *x == id).unwrap();
    assert!(pos("A.5.9") < pos("A.5.15"));
    assert!(pos("A.5.18") < pos("A.8.2"));
    assert!(pos("A.8.9") < pos("A.8.12"));
    let frameworks: Vec<Framework> = a.iter().map(|c| c.framework).collect();
    let mut sorted = frameworks.clone();
    sorted.sort();
    assert_eq!(frameworks, sorted);
    // The vulnerable cluster's privileged pod contradicts A.8.9, and the
    // statuses follow the evidence.
    let a89 = control(&a, Framework::Iso27001, "A.8.9");
    assert!(a89
        .contradicting
        .contains(&"zt-privileged@legacy/Deployment/app".to_string()));
    assert_eq!(
        control(&a, Framework::Iso27001, "A.8.24").status,
        ControlStatus::Contradicted,
        "env secret literal (pack metadata A.8.24) without encryption evidence"
    );
}

#[test]
fn decision_log_evidence_only_when_present() {
    let (_, with) = run(
        &parse(&hardened_yaml()),
        &hardened_inventory(),
        &[],
        Vec::new(),
    );
    let a815 = control(&with, Framework::Iso27001, "A.8.15");
    assert_eq!(a815.status, ControlStatus::Supported);
    assert!(a815.supporting[0].contains("shop/Deployment/web"));
    let (_, without) = run(
        &parse(VULNERABLE_YAML),
        &vulnerable_inventory(),
        &[],
        Vec::new(),
    );
    assert_eq!(
        control(&without, Framework::Iso27001, "A.8.15").status,
        ControlStatus::NotAssessed
    );
}

/// Objects the hardened manifests need beyond the workloads, so that the
/// input leaves no gap: accounts, roles, a cluster binding and Services.
const HARDENED_EXTRA: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
automountServiceAccountToken: false
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: db, namespace: shop}
automountServiceAccountToken: false
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: web, namespace: shop}
rules: [{apiGroups: [""], resources: [secrets], resourceNames: [web-db], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: namespace-reader}
rules: [{apiGroups: [""], resources: [namespaces], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: auditors}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: namespace-reader}
subjects: [{kind: Group, name: auditors}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {selector: {app: db}, ports: [{port: 5432}]}
"#;

/// The whole pipeline, with the inventory and findings the other stages
/// build: the two clusters keep their order and the mapping refers only to
/// findings that exist.
#[test]
fn the_pipeline_scores_what_its_stages_found() {
    let hardened = format!("{}\n---\n{HARDENED_EXTRA}", hardened_yaml());
    let good = keycard_assess::assess(
        &keycard_assess::Input::from_objects(
            parse(&hardened),
            keycard_assess::SourceKind::Manifests,
            Vec::new(),
        ),
        &Options::default(),
    );
    let bad = keycard_assess::assess(
        &keycard_assess::Input::from_objects(
            parse(VULNERABLE_YAML),
            keycard_assess::SourceKind::Manifests,
            Vec::new(),
        ),
        &Options::default(),
    );
    for a in [&good, &bad] {
        let ids: std::collections::HashSet<&str> =
            a.findings.iter().map(|f| f.id.as_str()).collect();
        for c in &a.compliance {
            for id in &c.contradicting {
                assert!(
                    ids.contains(id.as_str()),
                    "{}: unknown finding {id}",
                    c.control
                );
            }
        }
        for p in &a.maturity.pillars {
            if p.assessed {
                assert_band(p);
            }
        }
    }
    for p in Pillar::ALL {
        let (g, b) = (pillar(&good.maturity, p), pillar(&bad.maturity, p));
        assert!(
            g.score > b.score,
            "{p}: hardened {} {} {:?} {:#?} vs vulnerable {} {}",
            g.stage,
            g.score,
            g.limited_by,
            g.evidence.iter().filter(|e| !e.met).collect::<Vec<_>>(),
            b.stage,
            b.score
        );
    }
    // The node agent's own namespace (no default-deny, hostPath) is
    // infrastructure, not an application namespace.
    let net = pillar(&good.maturity, Pillar::Networks);
    assert!(net.stage >= Stage::Advanced, "{net:#?}");
    let id = pillar(&bad.maturity, Pillar::Identity);
    assert_eq!(id.stage, Stage::Traditional);
    // Nothing the hardened manifests leave out limits a pillar, and every
    // criterion holds on what the pipeline's own stages found.
    assert_eq!(
        good.maturity.overall,
        Some(Stage::Optimal),
        "{:#?}",
        good.maturity
    );
}
