//! RBAC resolution, who-can and the identity inventory over a realistic
//! multi-namespace cluster (`fixtures/rbac/cluster.yaml`): every answer is
//! spelled out, so a subject too many or too few fails.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use keycard_assess::model::{Coverage, Identity, IdentityCategory, Scope, Subject};
use keycard_assess::{identities, AccessQuery, Context, Options, Rbac, WhoCan};
use keycard_k8s::Object;

fn fixture(name: &str) -> Vec<Object> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rbac")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let (objects, errors) = keycard_k8s::parse_str(name, &text, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    objects
}

fn ids(w: &[WhoCan]) -> Vec<String> {
    w.iter().map(|w| w.subject.to_string()).collect()
}

fn who(rbac: &Rbac, q: AccessQuery) -> Vec<String> {
    ids(&rbac.who_can(&q))
}

fn identities(objects: &[Object], rbac: &Rbac) -> Vec<Identity> {
    let (cluster, _) = keycard_flows::Cluster::from_objects(objects);
    let coverage = Coverage::default();
    let options = Options::default();
    let workloads = keycard_assess::objects::workloads(objects);
    let ctx = Context {
        objects,
        workloads: &workloads,
        rbac,
        cluster: &cluster,
        coverage: &coverage,
        options: &options,
    };
    identities::build(&ctx)
}

fn identity<'a>(all: &'a [Identity], id: &str) -> &'a Identity {
    all.iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("no identity {id}"))
}

#[test]
fn who_can_create_deployments_in_prod() {
    let rbac = Rbac::from_objects(&fixture("cluster.yaml"));
    let answer = rbac.who_can(&AccessQuery::new("create", "deployments").in_namespace("prod"));
    assert_eq!(
        ids(&answer),
        [
            "Group:ops-team",
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "ServiceAccount:ci/github-actions",
            // A User named system:serviceaccount:ci:jenkins is that account.
            "ServiceAccount:ci/jenkins",
            "User:alice@acme.io",
            "User:spinnaker",
        ]
    );
    // What the CLI prints: binding, role, scope.
    let ci = &answer[3];
    assert_eq!(ci.via.len(), 1);
    assert_eq!(ci.via[0].binding, "prod/RoleBinding/ci-deploy");
    assert_eq!(ci.via[0].role, "prod/Role/deployer");
    assert_eq!(ci.via[0].scope, Scope::Namespace("prod".into()));
    assert_eq!(ci.restricted_to, None);
    let ops = &answer[0];
    assert_eq!(ops.via[0].binding, "ClusterRoleBinding/ops");
    assert_eq!(ops.via[0].role, "ClusterRole/ops-aggregate");
    assert_eq!(ops.via[0].scope, Scope::Cluster);
    // The same answer for the fully qualified resource, nobody for another
    // group's deployments.
    assert_eq!(
        who(
            &rbac,
            AccessQuery::new("create", "deployments.apps").in_namespace("prod")
        ),
        ids(&answer)
    );
    assert_eq!(
        who(
            &rbac,
            AccessQuery::new("create", "deployments.extensions").in_namespace("prod")
        ),
        [
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "User:alice@acme.io"
        ]
    );
    // The CI deployer's RoleBinding is prod's: not in staging, where the
    // staging admins are.
    assert_eq!(
        who(
            &rbac,
            AccessQuery::new("create", "deployments").in_namespace("staging")
        ),
        [
            "Group:ops-team",
            "Group:staging-devs",
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "User:alice@acme.io",
            "User:spinnaker",
        ]
    );
}

#[test]
fn who_can_get_secrets_anywhere_in_a_namespace_and_by_name() {
    let rbac = Rbac::from_objects(&fixture("cluster.yaml"));
    let anywhere = rbac.who_can(&AccessQuery::new("get", "secrets"));
    assert_eq!(
        ids(&anywhere),
        [
            "Group:staging-devs",
            "Group:system:masters",
            "Group:system:serviceaccounts:prod",
            "ServiceAccount:argocd/argocd-application-controller",
            "ServiceAccount:prod/payments",
            "ServiceAccount:staging/api",
            "User:alice@acme.io",
        ]
    );
    let restricted: Vec<(&str, Option<Vec<String>>)> = anywhere
        .iter()
        .map(|w| (w.subject.name.as_str(), w.restricted_to.clone()))
        .filter(|(_, r)| r.is_some())
        .collect();
    assert_eq!(
        restricted,
        [
            (
                "system:serviceaccounts:prod",
                Some(vec!["db-credentials".to_string()])
            ),
            ("api", Some(vec!["db-credentials".to_string()])),
        ]
    );

    assert_eq!(
        who(
            &rbac,
            AccessQuery::new("get", "secrets").in_namespace("staging")
        ),
        [
            "Group:staging-devs",
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "ServiceAccount:staging/api",
            "User:alice@acme.io",
        ]
    );
    let named = rbac.who_can(
        &AccessQuery::new("get", "secrets")
            .in_namespace("prod")
            .named("db-credentials"),
    );
    assert_eq!(
        ids(&named),
        [
            "Group:system:masters",
            "Group:system:serviceaccounts:prod",
            "ServiceAccount:argocd/argocd-application-controller",
            "ServiceAccount:prod/payments",
            "User:alice@acme.io",
        ]
    );
    assert!(named.iter().all(|w| w.restricted_to.is_none()));
    assert_eq!(
        who(
            &rbac,
            AccessQuery::new("get", "secrets")
                .in_namespace("prod")
                .named("payments-token")
        ),
        [
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "ServiceAccount:prod/payments",
            "User:alice@acme.io",
        ]
    );
    // list is not granted by the name-restricted reader.
    assert!(!who(
        &rbac,
        AccessQuery::new("list", "secrets").in_namespace("prod")
    )
    .contains(&"Group:system:serviceaccounts:prod".to_string()));
}

#[test]
fn group_members_are_listed_on_request() {
    let rbac = Rbac::from_objects(&fixture("cluster.yaml"));
    let q = AccessQuery::new("get", "secrets")
        .in_namespace("prod")
        .named("db-credentials")
        .expand_groups();
    let answer = rbac.who_can(&q);
    assert_eq!(
        ids(&answer),
        [
            "Group:system:masters",
            "Group:system:serviceaccounts:prod",
            "ServiceAccount:argocd/argocd-application-controller",
            "ServiceAccount:prod/app-builder",
            "ServiceAccount:prod/default",
            "ServiceAccount:prod/payments",
            "ServiceAccount:prod/unused",
            "User:alice@acme.io",
        ]
    );
    let default = answer
        .iter()
        .find(|w| w.subject == Subject::service_account("prod", "default"))
        .unwrap();
    assert_eq!(
        default.via[0].via_group.as_deref(),
        Some("system:serviceaccounts:prod")
    );
}

#[test]
fn who_can_exec_into_pods() {
    let rbac = Rbac::from_objects(&fixture("cluster.yaml"));
    assert_eq!(
        who(&rbac, AccessQuery::new("create", "pods/exec")),
        [
            "Group:staging-devs",
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "User:alice@acme.io",
            "User:bob",
        ]
    );
    // bob's ClusterRole comes through a RoleBinding of staging: nothing in
    // prod.
    assert_eq!(
        who(
            &rbac,
            AccessQuery::new("create", "pods/exec").in_namespace("prod")
        ),
        [
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "User:alice@acme.io",
        ]
    );
    // A grant of pods is not a grant of its subresources.
    assert!(!who(&rbac, AccessQuery::new("create", "pods/exec"))
        .contains(&"ServiceAccount:prod/app-builder".to_string()));
}

#[test]
fn aggregation_follows_selectors_and_chains() {
    let rbac = Rbac::from_objects(&fixture("cluster.yaml"));
    // Chained: ops-aggregate ⊇ monitoring-aggregate ⊇ monitoring-metrics.
    assert_eq!(
        who(&rbac, AccessQuery::new("get", "/metrics")),
        [
            "Group:ops-team",
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "ServiceAccount:monitoring/prometheus",
            "User:alice@acme.io",
        ]
    );
    // DoesNotExist keeps ops-old out; NotIn keeps ops-dev out.
    assert!(!who(&rbac, AccessQuery::new("delete", "namespaces"))
        .contains(&"Group:ops-team".to_string()));
    assert!(!who(&rbac, AccessQuery::new("delete", "pods")).contains(&"Group:ops-team".to_string()));
    // */scale through the NotIn selector.
    assert!(who(&rbac, AccessQuery::new("update", "statefulsets/scale"))
        .contains(&"Group:ops-team".to_string()));
    // The dump form already held one member's rule: counted once.
    let prom = rbac.permissions(&Subject::service_account("monitoring", "prometheus"));
    let direct: Vec<_> = prom.iter().filter(|p| p.via_group.is_none()).collect();
    assert_eq!(direct.len(), 3, "{direct:#?}");
    let ops = rbac.permissions(&Subject::group("ops-team"));
    assert_eq!(ops.len(), 5, "{ops:#?}");
}

#[test]
fn dangling_role_is_a_gap_and_understates() {
    let rbac = Rbac::from_objects(&fixture("cluster.yaml"));
    let gaps = rbac.gaps();
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    assert_eq!(gaps[0].id, "dangling-role:prod/RoleBinding/legacy");
    assert!(gaps[0].impact.contains("understated"));
    assert!(gaps[0].what.contains("ClusterRole/legacy-admin"));
    // carol is still an identity, with no permission beyond her groups'.
    assert!(rbac.subjects().contains(&Subject::user("carol")));
    assert!(rbac
        .permissions(&Subject::user("carol"))
        .iter()
        .all(|p| p.via_group.is_some()));
}

#[test]
fn identities_categories_and_flags() {
    let objects = fixture("cluster.yaml");
    let rbac = Rbac::from_objects(&objects);
    let all = identities(&objects, &rbac);
    let got: Vec<(&str, IdentityCategory, bool)> = all
        .iter()
        .map(|i| (i.id.as_str(), i.category, i.exists))
        .collect();
    use IdentityCategory as C;
    assert_eq!(
        got,
        [
            ("Group:ops-team", C::Group, true),
            ("Group:staging-devs", C::Group, true),
            ("Group:system:masters", C::Group, true),
            ("Group:system:serviceaccounts:prod", C::Group, true),
            (
                "ServiceAccount:argocd/argocd-application-controller",
                C::Gitops,
                true
            ),
            ("ServiceAccount:argocd/argocd-server", C::Gitops, true),
            ("ServiceAccount:ci/github-actions", C::Ci, true),
            ("ServiceAccount:ci/jenkins", C::Ci, false),
            ("ServiceAccount:kube-system/csr-approver", C::System, true),
            ("ServiceAccount:monitoring/prometheus", C::Workload, true),
            ("ServiceAccount:prod/app-builder", C::Unknown, true),
            ("ServiceAccount:prod/default", C::Workload, true),
            ("ServiceAccount:prod/payments", C::Workload, true),
            ("ServiceAccount:prod/unused", C::Unknown, true),
            ("ServiceAccount:staging/api", C::Workload, true),
            ("User:alice@acme.io", C::Human, true),
            ("User:bob", C::Human, true),
            ("User:carol", C::Human, true),
            ("User:dave", C::Human, true),
            ("User:eve", C::Human, true),
            ("User:spinnaker", C::Ci, true),
        ]
    );
    let admins: Vec<&str> = all
        .iter()
        .filter(|i| i.cluster_admin)
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(
        admins,
        [
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "User:alice@acme.io",
        ]
    );
    let secrets = |id: &str| identity(&all, id).secrets_readable.clone();
    assert_eq!(secrets("User:alice@acme.io"), ["*/*"]);
    assert_eq!(secrets("ServiceAccount:prod/payments"), ["prod/*"]);
    assert_eq!(
        secrets("ServiceAccount:prod/app-builder"),
        ["prod/db-credentials"]
    );
    assert_eq!(
        secrets("ServiceAccount:staging/api"),
        ["staging/db-credentials"]
    );
    assert_eq!(secrets("Group:staging-devs"), ["staging/*"]);
    assert!(secrets("ServiceAccount:ci/github-actions").is_empty());
    assert_eq!(
        identity(&all, "ServiceAccount:prod/default").workloads,
        ["prod/Deployment/web"]
    );
    // Effective permissions include the implicit groups'.
    let builder = identity(&all, "ServiceAccount:prod/app-builder");
    assert!(builder.permissions.iter().any(|p| p.via_group.as_deref()
        == Some("system:serviceaccounts:prod")
        && p.role == "ClusterRole/secret-reader"));
}

#[test]
fn escalation_paths() {
    let objects = fixture("cluster.yaml");
    let rbac = Rbac::from_objects(&objects);
    let all = identities(&objects, &rbac);
    let paths = |id: &str| identity(&all, id).escalation_paths.clone();

    // create pods next to a stronger account of the same namespace.
    assert_eq!(
        paths("ServiceAccount:prod/app-builder"),
        ["can create pods in namespace prod (prod/RoleBinding/app-pods → prod/Role/pod-creator) \
          and run them as a service account that holds more: ServiceAccount:prod/payments"]
    );
    // A deployer from another namespace gains every prod account's
    // permissions, the implicit group's included.
    assert_eq!(
        paths("ServiceAccount:ci/github-actions"),
        [
            "can create or change deployments in namespace prod (prod/RoleBinding/ci-deploy → \
          prod/Role/deployer) and run them as a service account that holds more: \
          ServiceAccount:prod/app-builder, ServiceAccount:prod/default, \
          ServiceAccount:prod/payments, ServiceAccount:prod/unused"
        ]
    );
    // Reading prod's secrets reads app-builder's token (its own does not count).
    assert_eq!(
        paths("ServiceAccount:prod/payments"),
        [
            "can read secrets in namespace prod (prod/RoleBinding/payments-secrets → \
          prod/Role/secrets-admin) holding service-account tokens of prod/app-builder: \
          acts as those accounts"
        ]
    );
    let dave = paths("User:dave");
    assert_eq!(dave.len(), 3, "{dave:#?}");
    assert!(dave[0].starts_with("can escalate roles in namespace prod"));
    assert!(dave[1].starts_with("can bind roles in namespace prod"));
    assert!(dave[2].starts_with("can create or change role bindings in namespace prod"));
    let eve = paths("User:eve");
    assert_eq!(eve.len(), 2, "{eve:#?}");
    assert!(eve[0].starts_with("can impersonate users cluster-wide"));
    assert!(eve[1].contains("system:masters"));
    assert_eq!(
        paths("ServiceAccount:monitoring/prometheus"),
        [
            "can reach the kubelet API through nodes/proxy (ClusterRoleBinding/prometheus → \
          ClusterRole/monitoring-aggregate): exec into any pod on any node"
        ]
    );
    assert_eq!(paths("ServiceAccount:kube-system/csr-approver").len(), 1);
    assert!(
        paths("ServiceAccount:kube-system/csr-approver")[0].starts_with("can approve certificate")
    );
    assert_eq!(
        paths("User:bob"),
        [
            "can exec into pods in namespace staging (staging/RoleBinding/staging-exec → \
          ClusterRole/pod-exec) of workloads whose service account holds more: \
          staging/Deployment/api (runs as ServiceAccount:staging/api)"
        ]
    );
    // Nothing to gain: no path. Cluster admins hold everything already.
    assert!(paths("ServiceAccount:prod/unused").is_empty());
    assert!(paths("User:alice@acme.io").is_empty());
    assert!(paths("User:carol").is_empty());
}

#[test]
fn no_roles_in_the_input_is_one_summary_gap() {
    let objects: Vec<Object> = fixture("cluster.yaml")
        .into_iter()
        .filter(|o| o.kind() != "Role" && o.kind() != "ClusterRole")
        .collect();
    let rbac = Rbac::from_objects(&objects);
    let gaps = rbac.gaps();
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    assert_eq!(gaps[0].id, "dangling-role:*");
    // cluster-admin is assumed to be Kubernetes' own.
    assert_eq!(
        who(&rbac, AccessQuery::new("delete", "nodes")),
        [
            "Group:system:masters",
            "ServiceAccount:argocd/argocd-application-controller",
            "User:alice@acme.io",
        ]
    );
}

/// A big cluster: 300 namespaces, 1,500 service accounts, 900
/// bindings, and the worst case for escalation analysis (every service
/// account may create pods everywhere). Checks the answers stay right at
/// scale; `--nocapture` prints the time taken.
#[test]
fn thousands_of_bindings() {
    use serde_json::json;
    let obj = |v: serde_json::Value| Object::new(v, "gen.yaml".into(), 1);
    let mut objects = vec![
        obj(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "edit"},
            "rules": (0..30).map(|i| json!({"apiGroups": ["", "apps"],
                "resources": [format!("res{i}"), "secrets"], "verbs": ["get", "create"]}))
                .collect::<Vec<_>>()}),
        ),
        obj(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]}),
        ),
        obj(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "everyone-pods"},
            "roleRef": {"kind": "ClusterRole", "name": "pods"},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}]}),
        ),
    ];
    for n in 0..300 {
        let ns = format!("ns{n}");
        for s in 0..5 {
            objects.push(obj(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": format!("sa{s}"), "namespace": ns}})));
        }
        for (b, sa) in [("edit", "sa0"), ("pods", "sa1"), ("edit", "sa2")] {
            objects.push(obj(json!({"apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": format!("{b}-{sa}"), "namespace": ns},
                "roleRef": {"kind": "ClusterRole", "name": b},
                "subjects": [{"kind": "ServiceAccount", "name": sa}]})));
        }
    }
    let start = std::time::Instant::now();
    let rbac = Rbac::from_objects(&objects);
    let built = start.elapsed();
    let who = rbac.who_can(&AccessQuery::new("get", "secrets").in_namespace("ns7"));
    assert_eq!(
        ids(&who),
        ["ServiceAccount:ns7/sa0", "ServiceAccount:ns7/sa2"]
    );
    let all = identities(&objects, &rbac);
    println!(
        "rbac {built:?}, rbac + identities of {} subjects {:?}",
        all.len(),
        start.elapsed()
    );
    assert_eq!(all.len(), 1501);
    let sa3 = identity(&all, "ServiceAccount:ns7/sa3");
    assert_eq!(sa3.escalation_paths.len(), 1);
    assert!(
        sa3.escalation_paths[0].contains("ServiceAccount:ns0/sa0")
            && sa3.escalation_paths[0].ends_with("and 595 more"),
        "{:?}",
        sa3.escalation_paths
    );
}
