//! Every identity, its category and its effective permissions.
//!
//! The identities are the ServiceAccount objects of the input (bound or
//! not), the service accounts workloads run as, and every subject a binding
//! names (users and groups included: Kubernetes does not store them).
//! Permissions are computed once per identity; escalation paths then
//! compare identities of the same namespace through an index by namespace,
//! not pairwise over the whole cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rayon::prelude::*;
use serde_json::Value;

use crate::model::{Identity, IdentityCategory, Permission, Scope, Subject, SubjectKind};
use crate::rbac::{self, allows, covers, subject_order, MASTERS};
use crate::Context;

/// At most this many names in one escalation sentence.
const MAX_NAMES: usize = 5;

pub fn build(ctx: &Context<'_>) -> Vec<Identity> {
    let rbac = ctx.rbac;
    let mut runs_as: HashMap<Subject, Vec<String>> = HashMap::new();
    for w in ctx.workloads {
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
    let mut out: Vec<Identity> = subjects
        .par_iter()
        .map(|s| {
            let no_permissions = Vec::new();
            let permissions = perms.get(s).unwrap_or(&no_permissions);
            let mut workloads = runs_as.get(s).cloned().unwrap_or_default();
            workloads.sort();
            let (category, reason) = categorize(s, &workloads, &rbac.bindings_of(s));
            let cluster_admin = is_cluster_admin(s, permissions);
            let escalation_paths = if cluster_admin {
                Vec::new()
            } else {
                env.escalation_paths(s, permissions)
            };
            Identity {
                id: s.to_string(),
                subject: s.clone(),
                category,
                category_reason: Some(reason),
                exists: s.kind != SubjectKind::ServiceAccount || rbac.service_account_exists(s),
                secrets_readable: secrets_readable(permissions),
                cluster_admin,
                escalation_paths,
                workloads,
                // Moved in below, not copied.
                permissions: Vec::new(),
            }
        })
        .collect();
    drop(env);
    let mut perms = perms;
    for (identity, s) in out.iter_mut().zip(&subjects) {
        identity.permissions = perms.remove(s).unwrap_or_default();
    }
    out
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
    /// Each permission's rule content interned (verbs, groups, resources,
    /// names, URLs; not scope or binding), parallel to `perms`: whether a
    /// cluster-wide grant covers a rule is decided once per rule, not once
    /// per account that holds it.
    rule_ids: HashMap<&'a Subject, Vec<u32>>,
    rules: usize,
    /// Service accounts with a permission beyond what every service account
    /// has (through `system:serviceaccounts` or `system:authenticated`):
    /// the only ones that can hold more than another service account.
    own: HashSet<&'a Subject>,
    /// Service accounts per namespace, each with its permissions.
    service_accounts: BTreeMap<&'a str, Vec<Account<'a>>>,
    /// Every namespace seen (accounts, workloads, token secrets).
    all_namespaces: Vec<String>,
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
        type RuleKey<'k> = (
            &'k [String],
            &'k [String],
            &'k [String],
            &'k [String],
            &'k [String],
        );
        let mut interned: HashMap<RuleKey<'a>, u32> = HashMap::new();
        let mut rule_ids: HashMap<&'a Subject, Vec<u32>> = HashMap::new();
        let mut own: HashSet<&'a Subject> = HashSet::new();
        for (s, list) in perms {
            let ids: Vec<u32> = list
                .iter()
                .map(|p| {
                    let key: RuleKey<'a> = (
                        &p.verbs,
                        &p.api_groups,
                        &p.resources,
                        &p.resource_names,
                        &p.non_resource_urls,
                    );
                    let next = interned.len() as u32;
                    *interned.entry(key).or_insert(next)
                })
                .collect();
            rule_ids.insert(*s, ids);
            if list.iter().any(|p| {
                !matches!(
                    p.via_group.as_deref(),
                    Some(rbac::SERVICE_ACCOUNTS | rbac::AUTHENTICATED)
                )
            }) {
                own.insert(*s);
            }
        }
        let mut service_accounts: BTreeMap<&str, Vec<Account<'a>>> = BTreeMap::new();
        for s in subjects {
            if let (SubjectKind::ServiceAccount, Some(ns)) = (s.kind, s.namespace.as_deref()) {
                let (Some(p), Some(ids)) = (perms.get(s), rule_ids.get(s)) else {
                    continue;
                };
                service_accounts.entry(ns).or_default().push(Account {
                    subject: s,
                    perms: p,
                    ids: ids.clone(),
                    own: own.contains(s),
                });
            }
        }
        let mut all: BTreeSet<String> = service_accounts.keys().map(|s| s.to_string()).collect();
        all.extend(wl.keys().cloned());
        all.extend(token_secrets.keys().cloned());
        Env {
            all_namespaces: all.into_iter().collect(),
            perms,
            rule_ids,
            rules: interned.len(),
            own,
            service_accounts,
            workloads: wl,
            token_secrets,
        }
    }

    /// Whether `other` holds a permission `me` does not cover.
    fn holds_more(&self, me: &mut Me<'_>, other: &Subject) -> bool {
        if me.is_service_account && !self.own.contains(other) {
            return false;
        }
        let (Some(theirs), Some(ids)) = (self.perms.get(other), self.rule_ids.get(other)) else {
            return false;
        };
        self.holds_more_than(me, theirs, ids)
    }

    fn holds_more_than(&self, me: &mut Me<'_>, theirs: &[Permission], ids: &[u32]) -> bool {
        if me.memo.is_empty() {
            me.memo = vec![0; self.rules];
        }
        theirs.iter().zip(ids).any(|(q, &id)| {
            // The same group's grant is the same permission.
            if q.via_group.as_ref().is_some_and(|g| me.groups.contains(g)) {
                return false;
            }
            let id = id as usize;
            if me.memo[id] == 0 {
                me.memo[id] = if me.cluster.iter().any(|p| covers(p, q)) {
                    1
                } else {
                    2
                };
            }
            if me.memo[id] == 1 {
                return false;
            }
            let covered = match &q.scope {
                Scope::Namespace(ns) => me
                    .by_ns
                    .get(ns.as_str())
                    .is_some_and(|ps| ps.iter().any(|p| *p == q || covers(p, q))),
                Scope::Cluster => false,
            };
            !covered
        })
    }

    /// The namespaces these grants reach.
    fn namespaces_of<'s>(&'s self, grants: &[&'s Permission]) -> Vec<&'s str> {
        if grants.iter().any(|p| p.scope == Scope::Cluster) {
            return self.all_namespaces.iter().map(String::as_str).collect();
        }
        let set: BTreeSet<&str> = grants
            .iter()
            .filter_map(|p| match &p.scope {
                Scope::Namespace(ns) => Some(ns.as_str()),
                Scope::Cluster => None,
            })
            .collect();
        set.into_iter().collect()
    }

    /// Service accounts of these namespaces holding more than `me`: the
    /// first few names, and how many in all.
    fn stronger_accounts(&self, me: &mut Me<'_>, namespaces: &[&str]) -> (Vec<String>, usize) {
        let mut shown = Vec::new();
        let mut total = 0;
        for ns in namespaces {
            for sa in self.service_accounts.get(ns).into_iter().flatten() {
                if sa.subject == me.subject || (me.is_service_account && !sa.own) {
                    continue;
                }
                if self.holds_more_than(me, sa.perms, &sa.ids) {
                    total += 1;
                    if shown.len() < MAX_NAMES {
                        shown.push(sa.subject.to_string());
                    }
                }
            }
        }
        (shown, total)
    }

    fn escalation_paths(&self, subject: &Subject, mine: &[Permission]) -> Vec<String> {
        let mut out = Vec::new();
        let me = &mut Me::new(subject, mine);
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
            let (stronger, total) = self.stronger_accounts(me, &ns);
            if total > 0 {
                out.push(format!(
                    "can {how} {} ({}) and run them as a service account that holds more: {}",
                    where_(&g),
                    via(&g),
                    counted(&stronger, total)
                ));
            }
        }
        let g = find(&["create"], "", &["pods/exec", "pods/attach"]);
        if !g.is_empty() {
            let mut targets = Vec::new();
            for ns in self.namespaces_of(&g) {
                for (id, sa) in self.workloads.get(ns).into_iter().flatten() {
                    if sa != me.subject && self.holds_more(me, sa) {
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
            let (stronger, total) = self.stronger_accounts(me, &ns);
            let tail = if total == 0 {
                String::new()
            } else {
                format!("; these hold more: {}", counted(&stronger, total))
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
                for sa in self.token_secrets.get(ns).into_iter().flatten() {
                    // Reading a token of an account that holds no more is
                    // lateral movement, not escalation.
                    let holder = Subject::service_account(ns, sa);
                    if holder != *me.subject && self.holds_more(me, &holder) {
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

/// A service account as escalation analysis compares it.
struct Account<'a> {
    subject: &'a Subject,
    perms: &'a [Permission],
    ids: Vec<u32>,
    own: bool,
}

/// The identity whose escalation paths are sought, prepared for many
/// "does another hold more" questions.
struct Me<'m> {
    subject: &'m Subject,
    is_service_account: bool,
    groups: HashSet<String>,
    cluster: Vec<&'m Permission>,
    by_ns: HashMap<&'m str, Vec<&'m Permission>>,
    /// Per interned rule: 0 not asked yet, 1 covered cluster-wide, 2 not.
    memo: Vec<u8>,
}

impl<'m> Me<'m> {
    fn new(subject: &'m Subject, mine: &'m [Permission]) -> Me<'m> {
        let mut cluster = Vec::new();
        let mut by_ns: HashMap<&str, Vec<&Permission>> = HashMap::new();
        for p in mine {
            match &p.scope {
                Scope::Cluster => cluster.push(p),
                Scope::Namespace(ns) => by_ns.entry(ns.as_str()).or_default().push(p),
            }
        }
        Me {
            subject,
            is_service_account: subject.kind == SubjectKind::ServiceAccount,
            groups: rbac::implicit_groups(subject).into_iter().collect(),
            cluster,
            by_ns,
            memo: Vec::new(),
        }
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

/// `a, b, c and 7 more` when `shown` are the first of `total`.
fn counted(shown: &[String], total: usize) -> String {
    let mut s = shown.join(", ");
    if total > shown.len() {
        s.push_str(&format!(" and {} more", total - shown.len()));
    }
    s
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
