//! Every identity, its category and its effective permissions.
//!
//! The identities are the ServiceAccount objects of the input (bound or
//! not), the service accounts workloads run as, and every subject a binding
//! names (users and groups included: Kubernetes does not store them).
//! Permissions are computed once per identity; escalation paths then
//! compare identities of the same namespace through an index by namespace,
//! not pairwise over the whole cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rayon::prelude::*;
use serde_json::Value;

use crate::model::{Identity, IdentityCategory, Permission, Scope, Subject, SubjectKind};
use crate::objects::workloads;
use crate::rbac::{self, allows, covers, subject_order, MASTERS};
use crate::Context;

/// At most this many names in one escalation sentence.
const MAX_NAMES: usize = 5;

pub fn build(ctx: &Context<'_>) -> Vec<Identity> {
    let rbac = ctx.rbac;
    let mut runs_as: HashMap<Subject, Vec<String>> = HashMap::new();
    for w in workloads(ctx.objects) {
        runs_as
            .entry(Subject::service_account(w.namespace, w.service_account()))
            .or_default()
            .push(w.id());
    }
    let mut subjects: BTreeSet<Subject> = rbac.subjects().into_iter().collect();
    subjects.extend(rbac.service_accounts());
    subjects.extend(runs_as.keys().cloned());
    let mut subjects: Vec<Subject> = subjects.into_iter().collect();
    subjects.sort_by(|a, b| subject_order(a).cmp(&subject_order(b)));

    let perms: HashMap<&Subject, Vec<Permission>> = subjects
        .par_iter()
        .map(|s| (s, rbac.permissions(s)))
        .collect();

    let env = Env::new(ctx, &subjects, &perms, &runs_as);
    subjects
        .par_iter()
        .map(|s| {
            let permissions = perms.get(s).cloned().unwrap_or_default();
            let mut workloads = runs_as.get(s).cloned().unwrap_or_default();
            workloads.sort();
            let (category, reason) = categorize(s, &workloads, &rbac.bindings_of(s));
            let cluster_admin = is_cluster_admin(s, &permissions);
            let escalation_paths = if cluster_admin {
                Vec::new()
            } else {
                env.escalation_paths(s, &permissions)
            };
            Identity {
                id: s.to_string(),
                subject: s.clone(),
                category,
                category_reason: Some(reason),
                exists: s.kind != SubjectKind::ServiceAccount || rbac.service_account_exists(s),
                secrets_readable: secrets_readable(&permissions),
                cluster_admin,
                escalation_paths,
                workloads,
                permissions,
            }
        })
        .collect()
}

/// `*` verbs on `*` resources in `*` groups cluster-wide, unrestricted by
/// name; or membership of `system:masters`.
pub fn is_cluster_admin(s: &Subject, permissions: &[Permission]) -> bool {
    (s.kind == SubjectKind::Group && s.name == MASTERS)
        || permissions.iter().any(|p| {
            p.scope == Scope::Cluster
                && p.resource_names.is_empty()
                && [&p.verbs, &p.api_groups, &p.resources]
                    .iter()
                    .all(|v| v.iter().any(|x| x == "*"))
        })
}

/// Secrets readable (get, list or watch): `*/*`, `ns/*`, `ns/name`, or
/// `*/name` for a cluster-wide grant restricted by name. Narrower entries
/// covered by a wider one are dropped.
pub fn secrets_readable(permissions: &[Permission]) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for p in permissions {
        if !["get", "list", "watch"]
            .iter()
            .any(|v| allows(p, v, "", "secrets"))
        {
            continue;
        }
        let ns = match &p.scope {
            Scope::Cluster => "*",
            Scope::Namespace(ns) => ns.as_str(),
        };
        if p.resource_names.is_empty() {
            out.insert(format!("{ns}/*"));
        } else {
            out.extend(p.resource_names.iter().map(|n| format!("{ns}/{n}")));
        }
    }
    if out.contains("*/*") {
        return vec!["*/*".to_string()];
    }
    let all: BTreeSet<String> = out
        .iter()
        .filter_map(|e| e.strip_suffix("/*").map(str::to_string))
        .collect();
    out.into_iter()
        .filter(|e| match e.split_once('/') {
            Some((ns, name)) => name == "*" || (!all.contains(ns) && !all.contains("*")),
            None => true,
        })
        .collect()
}

// ------------------------------------------------------------- categories

const CI_WORDS: &[&str] = &[
    "ci",
    "cicd",
    "deployer",
    "github",
    "actions",
    "gitlab",
    "jenkins",
    "tekton",
    "circleci",
    "buildkite",
    "drone",
    "spinnaker",
    "concourse",
    "woodpecker",
    "teamcity",
];

const FLUX_CONTROLLERS: &[&str] = &[
    "kustomize-controller",
    "helm-controller",
    "source-controller",
    "notification-controller",
    "image-reflector-controller",
    "image-automation-controller",
];

fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Why a name looks like a GitOps controller's, if it does.
fn gitops_word(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let t = tokens(&lower);
    if t.iter().any(|w| w == "argocd") {
        return Some("argocd".into());
    }
    if t.windows(2).any(|w| w[0] == "argo" && w[1] == "cd") {
        return Some("argo-cd".into());
    }
    if t.iter().any(|w| w == "flux" || w == "fleet") {
        return t.iter().find(|w| *w == "flux" || *w == "fleet").cloned();
    }
    FLUX_CONTROLLERS
        .iter()
        .find(|c| lower == **c || lower.ends_with(&format!(":{c}")))
        .map(|c| format!("{c} (Flux)"))
}

fn ci_word(name: &str) -> Option<String> {
    tokens(name)
        .into_iter()
        .find(|t| CI_WORDS.contains(&t.as_str()))
}

/// The category of an identity and why.
pub fn categorize(
    s: &Subject,
    workloads: &[String],
    bindings: &[&str],
) -> (IdentityCategory, String) {
    use IdentityCategory as C;
    if s.kind == SubjectKind::Group {
        let why = if s.name == MASTERS {
            "a group; its members bypass RBAC".to_string()
        } else if s.name.starts_with("system:") {
            "a built-in group".to_string()
        } else {
            "a group named in a binding".to_string()
        };
        return (C::Group, why);
    }
    if s.name.starts_with("system:") {
        return (C::System, "a system: name".to_string());
    }
    if let Some(w) = gitops_word(&s.name) {
        return (C::Gitops, format!("name matches {w}"));
    }
    if let Some(w) = ci_word(&s.name) {
        return (C::Ci, format!("name contains the word {w}"));
    }
    if let Some(ns) = &s.namespace {
        if matches!(
            ns.as_str(),
            "kube-system" | "kube-public" | "kube-node-lease"
        ) {
            return (C::System, format!("a service account of {ns}"));
        }
        if let Some(w) = gitops_word(ns) {
            return (C::Gitops, format!("namespace {ns} matches {w}"));
        }
        if let Some(w) = ci_word(ns) {
            return (C::Ci, format!("namespace {ns} contains the word {w}"));
        }
    }
    for b in bindings {
        if let Some(w) = gitops_word(b) {
            return (C::Gitops, format!("bound by {b} (matches {w})"));
        }
        if let Some(w) = ci_word(b) {
            return (C::Ci, format!("bound by {b} (contains the word {w})"));
        }
    }
    if let Some(w) = workloads.first() {
        let more = match workloads.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        return (C::Workload, format!("runs {w}{more}"));
    }
    match s.kind {
        SubjectKind::User => (
            C::Human,
            "a user that is not a system or CI identity".to_string(),
        ),
        _ => (
            C::Unknown,
            "no workload runs as it and its name says nothing".to_string(),
        ),
    }
}

// ------------------------------------------------------ escalation paths

/// What escalation analysis needs of the whole input.
struct Env<'a> {
    perms: &'a HashMap<&'a Subject, Vec<Permission>>,
    /// Service accounts per namespace.
    service_accounts: BTreeMap<&'a str, Vec<&'a Subject>>,
    /// Workloads per namespace, with the account each runs as.
    workloads: BTreeMap<String, Vec<(String, Subject)>>,
    /// Service accounts with a token Secret, per namespace.
    token_secrets: BTreeMap<String, BTreeSet<String>>,
}

const POD_CONTROLLERS: &[(&str, &str)] = &[
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("", "replicationcontrollers"),
];

impl<'a> Env<'a> {
    fn new(
        ctx: &Context<'_>,
        subjects: &'a [Subject],
        perms: &'a HashMap<&'a Subject, Vec<Permission>>,
        runs_as: &HashMap<Subject, Vec<String>>,
    ) -> Env<'a> {
        let mut service_accounts: BTreeMap<&str, Vec<&Subject>> = BTreeMap::new();
        for s in subjects {
            if let (SubjectKind::ServiceAccount, Some(ns)) = (s.kind, s.namespace.as_deref()) {
                service_accounts.entry(ns).or_default().push(s);
            }
        }
        let mut wl: BTreeMap<String, Vec<(String, Subject)>> = BTreeMap::new();
        for (s, ids) in runs_as {
            if let Some(ns) = &s.namespace {
                for id in ids {
                    wl.entry(ns.clone())
                        .or_default()
                        .push((id.clone(), s.clone()));
                }
            }
        }
        for v in wl.values_mut() {
            v.sort();
        }
        let mut token_secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for o in ctx.objects.iter().filter(|o| o.kind() == "Secret") {
            if o.value.get("type").and_then(Value::as_str)
                != Some("kubernetes.io/service-account-token")
            {
                continue;
            }
            let sa = o
                .metadata()
                .get("annotations")
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| o.name());
            token_secrets
                .entry(o.namespace().unwrap_or("default").to_string())
                .or_default()
                .insert(sa);
        }
        Env {
            perms,
            service_accounts,
            workloads: wl,
            token_secrets,
        }
    }

    /// Whether `other` holds a permission `mine` does not cover.
    fn holds_more(&self, mine: &[Permission], other: &Subject) -> bool {
        self.perms.get(other).is_some_and(|theirs| {
            theirs
                .iter()
                .any(|q| !mine.iter().any(|p| p == q || covers(p, q)))
        })
    }

    fn namespaces_of(&self, grants: &[&Permission]) -> Vec<String> {
        if grants.iter().any(|p| p.scope == Scope::Cluster) {
            let mut all: BTreeSet<String> = self
                .service_accounts
                .keys()
                .map(|s| s.to_string())
                .collect();
            all.extend(self.workloads.keys().cloned());
            all.extend(self.token_secrets.keys().cloned());
            return all.into_iter().collect();
        }
        let set: BTreeSet<String> = grants
            .iter()
            .filter_map(|p| match &p.scope {
                Scope::Namespace(ns) => Some(ns.clone()),
                Scope::Cluster => None,
            })
            .collect();
        set.into_iter().collect()
    }

    /// Service accounts of these namespaces holding more than `mine`.
    fn stronger_accounts(
        &self,
        me: &Subject,
        mine: &[Permission],
        namespaces: &[String],
    ) -> Vec<String> {
        let mut out = Vec::new();
        for ns in namespaces {
            for sa in self.service_accounts.get(ns.as_str()).into_iter().flatten() {
                if *sa != me && self.holds_more(mine, sa) {
                    out.push(sa.to_string());
                }
            }
        }
        out
    }

    fn escalation_paths(&self, me: &Subject, mine: &[Permission]) -> Vec<String> {
        let mut out = Vec::new();
        let find = |verbs: &[&str], group: &str, resources: &[&str]| -> Vec<&Permission> {
            mine.iter()
                .filter(|p| {
                    verbs
                        .iter()
                        .any(|v| resources.iter().any(|r| allows(p, v, group, r)))
                })
                .collect()
        };
        let rbac_group = "rbac.authorization.k8s.io";

        let g = find(&["escalate"], rbac_group, &["roles", "clusterroles"]);
        if !g.is_empty() {
            out.push(format!(
                "can escalate roles {} ({}): may write roles with permissions it does not hold",
                where_(&g),
                via(&g)
            ));
        }
        let g = find(&["bind"], rbac_group, &["roles", "clusterroles"]);
        if !g.is_empty() {
            out.push(format!(
                "can bind roles {} ({}): may grant any role it can name, cluster-admin included, to itself",
                where_(&g),
                via(&g)
            ));
        }
        for (res, what) in [
            ("users", "any user"),
            ("groups", "any group, system:masters included"),
            ("serviceaccounts", "any service account"),
        ] {
            let g = find(&["impersonate"], "", &[res]);
            if !g.is_empty() {
                out.push(format!(
                    "can impersonate {res} {} ({}): acts as {what}",
                    where_(&g),
                    via(&g)
                ));
            }
        }
        let g = find(
            &["create", "update", "patch"],
            rbac_group,
            &["rolebindings", "clusterrolebindings"],
        );
        if !g.is_empty() {
            out.push(format!(
                "can create or change role bindings {} ({}): grants to anyone every role it holds the permissions of, or any role with bind",
                where_(&g),
                via(&g)
            ));
        }
        let g = find(
            &["create", "update", "patch"],
            rbac_group,
            &["roles", "clusterroles"],
        );
        if !g.is_empty() {
            out.push(format!(
                "can create or change roles {} ({}): may widen roles already bound to it",
                where_(&g),
                via(&g)
            ));
        }

        // Run a pod as a stronger account of the same namespace.
        let mut g = find(&["create"], "", &["pods"]);
        let mut how = "create pods".to_string();
        for (grp, res) in POD_CONTROLLERS {
            let c = find(&["create", "update", "patch"], grp, &[res]);
            if !c.is_empty() && g.is_empty() {
                how = format!("create or change {res}");
            }
            g.extend(c);
        }
        if !g.is_empty() {
            let ns = self.namespaces_of(&g);
            let stronger = self.stronger_accounts(me, mine, &ns);
            if !stronger.is_empty() {
                out.push(format!(
                    "can {how} {} ({}) and run them as a service account that holds more: {}",
                    where_(&g),
                    via(&g),
                    names(&stronger)
                ));
            }
        }
        let g = find(&["create"], "", &["pods/exec", "pods/attach"]);
        if !g.is_empty() {
            let mut targets = Vec::new();
            for ns in self.namespaces_of(&g) {
                for (id, sa) in self.workloads.get(&ns).into_iter().flatten() {
                    if sa != me && self.holds_more(mine, sa) {
                        targets.push(format!("{id} (runs as {sa})"));
                    }
                }
            }
            if !targets.is_empty() {
                out.push(format!(
                    "can exec into pods {} ({}) of workloads whose service account holds more: {}",
                    where_(&g),
                    via(&g),
                    names(&targets)
                ));
            }
        }
        let g = find(&["create"], "", &["serviceaccounts/token"]);
        if !g.is_empty() {
            let ns = self.namespaces_of(&g);
            let stronger = self.stronger_accounts(me, mine, &ns);
            let tail = if stronger.is_empty() {
                String::new()
            } else {
                format!("; these hold more: {}", names(&stronger))
            };
            out.push(format!(
                "can mint tokens for service accounts {} ({}){tail}",
                where_(&g),
                via(&g)
            ));
        }
        let g = find(&["get", "list", "watch"], "", &["secrets"]);
        if !g.is_empty() {
            let unrestricted: Vec<&Permission> = g
                .iter()
                .copied()
                .filter(|p| p.resource_names.is_empty())
                .collect();
            let mut holders = Vec::new();
            for ns in self.namespaces_of(&unrestricted) {
                for sa in self.token_secrets.get(&ns).into_iter().flatten() {
                    // Reading a token of an account that holds no more is
                    // lateral movement, not escalation.
                    let holder = Subject::service_account(&ns, sa);
                    if holder != *me && self.holds_more(mine, &holder) {
                        holders.push(format!("{ns}/{sa}"));
                    }
                }
            }
            if !holders.is_empty() {
                out.push(format!(
                    "can read secrets {} ({}) holding service-account tokens of {}: acts as those accounts",
                    where_(&unrestricted),
                    via(&unrestricted),
                    names(&holders)
                ));
            }
        }
        let mut g = find(
            &["update", "patch"],
            "certificates.k8s.io",
            &["certificatesigningrequests/approval"],
        );
        g.extend(find(&["approve"], "certificates.k8s.io", &["signers"]));
        if !g.is_empty() {
            out.push(format!(
                "can approve certificate signing requests ({}): may obtain client certificates for any user or group",
                via(&g)
            ));
        }
        let g = find(&["get", "create"], "", &["nodes/proxy"]);
        if !g.is_empty() {
            out.push(format!(
                "can reach the kubelet API through nodes/proxy ({}): exec into any pod on any node",
                via(&g)
            ));
        }
        let g = find(&["update", "patch"], "", &["nodes"]);
        if !g.is_empty() {
            out.push(format!(
                "can change nodes ({}): labels and taints steer which pods land where",
                via(&g)
            ));
        }
        let g = find(
            &["create", "update", "patch"],
            "admissionregistration.k8s.io",
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
        );
        if !g.is_empty() {
            out.push(format!(
                "can register admission webhooks ({}): sees, and may change, every object written, secrets included",
                via(&g)
            ));
        }
        out
    }
}

fn where_(grants: &[&Permission]) -> String {
    if grants.iter().any(|p| p.scope == Scope::Cluster) {
        return "cluster-wide".to_string();
    }
    let ns: BTreeSet<&str> = grants
        .iter()
        .filter_map(|p| match &p.scope {
            Scope::Namespace(n) => Some(n.as_str()),
            Scope::Cluster => None,
        })
        .collect();
    let list: Vec<&str> = ns.into_iter().collect();
    match list.len() {
        1 => format!("in namespace {}", list[0]),
        _ => format!("in namespaces {}", names(&list)),
    }
}

/// `ns/RoleBinding/x → ClusterRole/y` of the first grant (widest first),
/// with the group it comes through.
fn via(grants: &[&Permission]) -> String {
    let Some(p) = grants
        .iter()
        .find(|p| p.scope == Scope::Cluster)
        .or_else(|| grants.first())
    else {
        return String::new();
    };
    let group = p
        .via_group
        .as_ref()
        .map(|g| format!(" through group {g}"))
        .unwrap_or_default();
    let more = match grants.len() {
        1 => String::new(),
        n => format!(", and {} more grants", n - 1),
    };
    format!("{} → {}{group}{more}", p.binding, p.role)
}

fn names<S: AsRef<str>>(list: &[S]) -> String {
    let shown: Vec<&str> = list.iter().take(MAX_NAMES).map(AsRef::as_ref).collect();
    let mut s = shown.join(", ");
    if list.len() > MAX_NAMES {
        s.push_str(&format!(" and {} more", list.len() - MAX_NAMES));
    }
    s
}

/// Whether an identity holds any permission a default cluster does not
/// give every authenticated identity (discovery, self reviews).
pub fn has_permissions(identity: &Identity) -> bool {
    identity.permissions.iter().any(|p| {
        !(p.via_group.as_deref() == Some(rbac::AUTHENTICATED)
            && p.role.starts_with("ClusterRole/system:"))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cat(s: &Subject, w: &[&str], b: &[&str]) -> IdentityCategory {
        let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
        categorize(s, &w, b).0
    }

    #[test]
    fn categories() {
        use IdentityCategory as C;
        let sa = Subject::service_account;
        assert_eq!(
            cat(&sa("argocd", "argocd-application-controller"), &[], &[]),
            C::Gitops
        );
        assert_eq!(
            cat(&sa("flux-system", "kustomize-controller"), &[], &[]),
            C::Gitops
        );
        assert_eq!(
            cat(
                &sa("infra", "default"),
                &[],
                &["ClusterRoleBinding/argo-cd-manager"]
            ),
            C::Gitops
        );
        assert_eq!(cat(&sa("build", "github-actions"), &[], &[]), C::Ci);
        assert_eq!(cat(&sa("prod", "deployer"), &[], &[]), C::Ci);
        assert_eq!(cat(&sa("gitlab-runner", "default"), &[], &[]), C::Ci);
        // "ci" is a word, not a substring.
        assert_eq!(cat(&sa("shop", "circuit"), &[], &[]), C::Unknown);
        assert_eq!(
            cat(&sa("shop", "web"), &["shop/Deployment/web"], &[]),
            C::Workload
        );
        assert_eq!(cat(&sa("kube-system", "coredns"), &["x"], &[]), C::System);
        assert_eq!(
            cat(&Subject::user("system:kube-scheduler"), &[], &[]),
            C::System
        );
        assert_eq!(cat(&Subject::user("jenkins"), &[], &[]), C::Ci);
        assert_eq!(cat(&Subject::user("alice@example.com"), &[], &[]), C::Human);
        assert_eq!(cat(&Subject::group("system:masters"), &[], &[]), C::Group);
    }

    fn perm(scope: Scope, verbs: &[&str], res: &[&str], names: &[&str]) -> Permission {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Permission {
            scope,
            verbs: v(verbs),
            api_groups: v(&[""]),
            resources: v(res),
            resource_names: v(names),
            non_resource_urls: vec![],
            binding: "b".into(),
            role: "r".into(),
            via_group: None,
        }
    }

    #[test]
    fn secrets_readable_collapses() {
        let ns = |n: &str| Scope::Namespace(n.into());
        let p = vec![
            perm(ns("a"), &["get"], &["secrets"], &[]),
            perm(ns("a"), &["get"], &["secrets"], &["x"]),
            perm(ns("b"), &["list"], &["secrets"], &["y"]),
            perm(ns("c"), &["create"], &["secrets"], &[]),
            perm(ns("d"), &["get"], &["pods"], &[]),
        ];
        assert_eq!(secrets_readable(&p), ["a/*", "b/y"]);
        let mut q = p.clone();
        q.push(perm(Scope::Cluster, &["watch"], &["*"], &[]));
        assert_eq!(secrets_readable(&q), ["*/*"]);
    }

    #[test]
    fn cluster_admin_needs_all_three_stars_cluster_wide() {
        let me = Subject::user("u");
        let mut p = perm(Scope::Cluster, &["*"], &["*"], &[]);
        p.api_groups = vec!["*".into()];
        assert!(is_cluster_admin(&me, std::slice::from_ref(&p)));
        let mut q = p.clone();
        q.scope = Scope::Namespace("a".into());
        assert!(!is_cluster_admin(&me, &[q]));
        let mut q = p.clone();
        q.api_groups = vec!["".into()];
        assert!(!is_cluster_admin(&me, &[q]));
        assert!(is_cluster_admin(&Subject::group("system:masters"), &[]));
    }
}
