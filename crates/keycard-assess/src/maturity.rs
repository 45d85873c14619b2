//! The CISA Zero Trust Maturity Model v2 stage per pillar.
//!
//! The model describes stages in organisational terms; a cluster's objects
//! show only some of it. Each pillar here is judged on concrete criteria a
//! Kubernetes input can prove or disprove (listed in [`Criterion`]), each
//! tied to one stage. A pillar reaches a stage when every criterion of that
//! stage and of every lower stage holds, so one weakness low down cannot be
//! hidden by strengths higher up.
//!
//! The score (0 to 100) is for charts: each stage owns a band of 25 points
//! (Traditional 0-24, Initial 25-49, Advanced 50-74, Optimal 100) and the
//! position inside the band is the progress made on the next stage's
//! criteria, so the score never contradicts the stage.
//!
//! What the input could not show caps the conclusion: a pillar limited by a
//! coverage gap is never rated above Initial, and criteria that need objects
//! the input does not hold are not met. A partial dump must not look mature.
//!
//! The criteria read three sources: the objects themselves (admission
//! controllers, meshes, nodes, pod templates), the inventory (identities,
//! namespaces, data stores) and the findings (matched by rule id and
//! category, loosely, so that a rule renamed in a pack still counts).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

use crate::model::{
    Evidence, Finding, Identity, IdentityCategory, Inventory, Maturity, NamespaceInfo, Pillar,
    PillarScore, Stage, WorkloadInfo,
};
use crate::objects;
use crate::Context;

/// One checkable criterion of one pillar's stage. The text is what the
/// report shows and what [`crate::compliance`] keys its mapping on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Criterion {
    // Identity
    IdRbacVisible,
    IdNoClusterAdmin,
    IdNoEscalation,
    IdNoTokenSecrets,
    IdDedicatedAccounts,
    IdTokensOnlyWhereUsed,
    IdShortLived,
    IdNoWildcards,
    // Devices
    DevNoPrivileged,
    DevNoHostNamespaces,
    DevNodesInventoried,
    DevNoHostPath,
    DevVersionsConsistent,
    DevNodeAttestation,
    DevHostBoundaryAgentsOnly,
    // Networks
    NetSomeDefaultDeny,
    NetAllDefaultDenyIngress,
    NetAllDefaultDenyEgress,
    NetDataStoresNamedOnly,
    NetNoDirectExposure,
    NetIdentityAware,
    NetLeastPrivilege,
    // Applications and Workloads
    AppNoHostBreakout,
    AppSomeAdmissionGuard,
    AppPodSecurityEverywhere,
    AppImagesPinned,
    AppAdmissionController,
    AppOwners,
    AppPodSecurityRestricted,
    AppHardenedContainers,
    // Data
    DataNoCredentialLiterals,
    DataNoSecretWildcard,
    DataClassified,
    DataStoresNotPublic,
    DataSecretsScoped,
    DataSecretsAsFiles,
    DataEncryptionAtRest,
    DataStoresIdentityAware,
}

impl Criterion {
    pub const ALL: [Criterion; 38] = [
        Criterion::IdRbacVisible,
        Criterion::IdNoClusterAdmin,
        Criterion::IdNoEscalation,
        Criterion::IdNoTokenSecrets,
        Criterion::IdDedicatedAccounts,
        Criterion::IdTokensOnlyWhereUsed,
        Criterion::IdShortLived,
        Criterion::IdNoWildcards,
        Criterion::DevNoPrivileged,
        Criterion::DevNoHostNamespaces,
        Criterion::DevNodesInventoried,
        Criterion::DevNoHostPath,
        Criterion::DevVersionsConsistent,
        Criterion::DevNodeAttestation,
        Criterion::DevHostBoundaryAgentsOnly,
        Criterion::NetSomeDefaultDeny,
        Criterion::NetAllDefaultDenyIngress,
        Criterion::NetAllDefaultDenyEgress,
        Criterion::NetDataStoresNamedOnly,
        Criterion::NetNoDirectExposure,
        Criterion::NetIdentityAware,
        Criterion::NetLeastPrivilege,
        Criterion::AppNoHostBreakout,
        Criterion::AppSomeAdmissionGuard,
        Criterion::AppPodSecurityEverywhere,
        Criterion::AppImagesPinned,
        Criterion::AppAdmissionController,
        Criterion::AppOwners,
        Criterion::AppPodSecurityRestricted,
        Criterion::AppHardenedContainers,
        Criterion::DataNoCredentialLiterals,
        Criterion::DataNoSecretWildcard,
        Criterion::DataClassified,
        Criterion::DataStoresNotPublic,
        Criterion::DataSecretsScoped,
        Criterion::DataSecretsAsFiles,
        Criterion::DataEncryptionAtRest,
        Criterion::DataStoresIdentityAware,
    ];

    pub fn pillar(self) -> Pillar {
        use Criterion::*;
        match self {
            IdRbacVisible
            | IdNoClusterAdmin
            | IdNoEscalation
            | IdNoTokenSecrets
            | IdDedicatedAccounts
            | IdTokensOnlyWhereUsed
            | IdShortLived
            | IdNoWildcards => Pillar::Identity,
            DevNoPrivileged
            | DevNoHostNamespaces
            | DevNodesInventoried
            | DevNoHostPath
            | DevVersionsConsistent
            | DevNodeAttestation
            | DevHostBoundaryAgentsOnly => Pillar::Devices,
            NetSomeDefaultDeny
            | NetAllDefaultDenyIngress
            | NetAllDefaultDenyEgress
            | NetDataStoresNamedOnly
            | NetNoDirectExposure
            | NetIdentityAware
            | NetLeastPrivilege => Pillar::Networks,
            AppNoHostBreakout
            | AppSomeAdmissionGuard
            | AppPodSecurityEverywhere
            | AppImagesPinned
            | AppAdmissionController
            | AppOwners
            | AppPodSecurityRestricted
            | AppHardenedContainers => Pillar::ApplicationsAndWorkloads,
            DataNoCredentialLiterals
            | DataNoSecretWildcard
            | DataClassified
            | DataStoresNotPublic
            | DataSecretsScoped
            | DataSecretsAsFiles
            | DataEncryptionAtRest
            | DataStoresIdentityAware => Pillar::Data,
        }
    }

    pub fn stage(self) -> Stage {
        use Criterion::*;
        match self {
            IdRbacVisible
            | IdNoClusterAdmin
            | DevNoPrivileged
            | DevNoHostNamespaces
            | NetSomeDefaultDeny
            | AppNoHostBreakout
            | AppSomeAdmissionGuard
            | DataNoCredentialLiterals
            | DataNoSecretWildcard => Stage::Initial,
            IdNoEscalation
            | IdNoTokenSecrets
            | IdDedicatedAccounts
            | IdTokensOnlyWhereUsed
            | DevNodesInventoried
            | DevNoHostPath
            | DevVersionsConsistent
            | NetAllDefaultDenyIngress
            | NetAllDefaultDenyEgress
            | NetDataStoresNamedOnly
            | NetNoDirectExposure
            | AppPodSecurityEverywhere
            | AppImagesPinned
            | AppAdmissionController
            | AppOwners
            | DataClassified
            | DataStoresNotPublic
            | DataSecretsScoped => Stage::Advanced,
            IdShortLived
            | IdNoWildcards
            | DevNodeAttestation
            | DevHostBoundaryAgentsOnly
            | NetIdentityAware
            | NetLeastPrivilege
            | AppPodSecurityRestricted
            | AppHardenedContainers
            | DataSecretsAsFiles
            | DataEncryptionAtRest
            | DataStoresIdentityAware => Stage::Optimal,
        }
    }

    /// The criterion as a statement that is true when it is met.
    pub fn text(self) -> &'static str {
        use Criterion::*;
        match self {
            IdRbacVisible => "RBAC bindings grant roles to named identities",
            IdNoClusterAdmin => {
                "No identity outside the cluster's own components holds cluster-admin"
            }
            IdNoEscalation => {
                "No identity outside the cluster's own components has a privilege-escalation path"
            }
            IdNoTokenSecrets => "No long-lived service-account token Secrets",
            IdDedicatedAccounts => {
                "Every application workload runs as its own service account, not `default`"
            }
            IdTokensOnlyWhereUsed => {
                "Service-account tokens are mounted only where the identity is used"
            }
            IdShortLived => {
                "Every application workload carries a short-lived, audience-bound identity (SPIFFE or projected token)"
            }
            IdNoWildcards => {
                "No wildcard RBAC grants to identities outside the cluster's own components"
            }
            DevNoPrivileged => "No application workload runs a privileged container",
            DevNoHostNamespaces => {
                "No application workload shares the node's network, PID or IPC namespace"
            }
            DevNodesInventoried => {
                "Nodes are inventoried with their OS, kernel, kubelet and runtime versions"
            }
            DevNoHostPath => "No application workload mounts a path of the node's filesystem",
            DevVersionsConsistent => {
                "Node kubelet versions are at most one minor version apart"
            }
            DevNodeAttestation => {
                "Nodes are attested to a workload-identity system (a keycard or SPIRE agent runs on the nodes)"
            }
            DevHostBoundaryAgentsOnly => {
                "Only node-agent DaemonSets and static pods cross the host boundary, system namespaces included"
            }
            NetSomeDefaultDeny => "Some namespaces with workloads deny ingress by default",
            NetAllDefaultDenyIngress => "Every namespace with workloads denies ingress by default",
            NetAllDefaultDenyEgress => "Every namespace with workloads denies egress by default",
            NetDataStoresNamedOnly => "Every data store is reachable only from named workloads",
            NetNoDirectExposure => {
                "No workload is exposed outside the cluster except through an ingress or gateway"
            }
            NetIdentityAware => {
                "Identity-aware enforcement (mTLS with authorization) covers every namespace with workloads"
            }
            NetLeastPrivilege => {
                "No NetworkPolicy rule admits every source or every destination"
            }
            AppNoHostBreakout => {
                "No application workload runs privileged or in the node's namespaces"
            }
            AppSomeAdmissionGuard => {
                "Pod Security admission or an admission policy controller guards workloads"
            }
            AppPodSecurityEverywhere => {
                "Every namespace with workloads enforces Pod Security baseline or restricted"
            }
            AppImagesPinned => "Every application image is pinned by digest",
            AppAdmissionController => {
                "An admission policy controller checks what enters the cluster"
            }
            AppOwners => "Every application workload names its owner",
            AppPodSecurityRestricted => "Every namespace with workloads enforces Pod Security restricted",
            AppHardenedContainers => {
                "Every application container forbids privilege escalation and has a read-only root filesystem"
            }
            DataNoCredentialLiterals => "No credentials written into env variables or ConfigMaps",
            DataNoSecretWildcard => {
                "No identity outside the cluster's own components can read every Secret"
            }
            DataClassified => "Every application workload carries a data-classification label",
            DataStoresNotPublic => "No data store is reachable from outside the cluster",
            DataSecretsScoped => "Workload identities can read only the Secrets they use",
            DataSecretsAsFiles => "Secrets reach workloads as files, never as environment variables",
            DataEncryptionAtRest => "Encryption of Secrets at rest is evidenced",
            DataStoresIdentityAware => {
                "Every data store is behind identity-aware enforcement (mTLS with authorization)"
            }
        }
    }

    /// The criterion an evidence entry states, if it is one of ours.
    pub fn of_text(text: &str) -> Option<Criterion> {
        Criterion::ALL.iter().copied().find(|c| c.text() == text)
    }

    /// How much meeting it reduces implicit trust: orders next steps.
    fn weight(self) -> u8 {
        use Criterion::*;
        match self {
            IdNoClusterAdmin
            | AppNoHostBreakout
            | DevNoPrivileged
            | NetAllDefaultDenyIngress
            | DataNoCredentialLiterals
            | DataNoSecretWildcard => 10,
            IdNoEscalation
            | NetSomeDefaultDeny
            | NetDataStoresNamedOnly
            | DataStoresNotPublic
            | IdNoTokenSecrets
            | DevNoHostNamespaces
            | IdRbacVisible
            | NetNoDirectExposure => 8,
            AppPodSecurityEverywhere
            | AppAdmissionController
            | IdTokensOnlyWhereUsed
            | DataSecretsScoped
            | NetIdentityAware
            | DevNoHostPath
            | AppSomeAdmissionGuard => 6,
            NetAllDefaultDenyEgress
            | IdDedicatedAccounts
            | AppImagesPinned
            | IdShortLived
            | IdNoWildcards
            | NetLeastPrivilege
            | DataStoresIdentityAware => 5,
            _ => 3,
        }
    }
}

/// A criterion as judged on one input.
#[derive(Debug, Clone)]
struct Judged {
    criterion: Criterion,
    met: bool,
    /// 0.0 to 1.0: how far towards meeting it (partial credit).
    progress: f64,
    detail: String,
    /// What to do when it is not met.
    action: String,
}

fn judged(criterion: Criterion, met: bool, progress: f64, detail: String, action: &str) -> Judged {
    Judged {
        criterion,
        met,
        progress: if met { 1.0 } else { progress.clamp(0.0, 0.99) },
        detail,
        action: action.to_string(),
    }
}

/// A criterion over a set of items, met when no item violates it.
fn all_of(
    criterion: Criterion,
    total: usize,
    bad: &BTreeSet<String>,
    noun: &str,
    what_bad: &str,
    action: &str,
) -> Judged {
    let n_bad = bad.len().min(total.max(bad.len()));
    let total = total.max(n_bad);
    if n_bad == 0 {
        let detail = if total == 0 {
            format!("no {noun} in the input")
        } else {
            format!("none of {total} {noun} {what_bad}")
        };
        return judged(criterion, true, 1.0, detail, action);
    }
    let progress = if total == 0 {
        0.0
    } else {
        (total - n_bad) as f64 / total as f64
    };
    judged(
        criterion,
        false,
        progress,
        format!("{n_bad} of {total} {noun} {what_bad}: {}", list(bad)),
        action,
    )
}

/// `1 binding`, `2 bindings`, `3 identities`.
fn plural(n: usize, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

/// Up to five names, then a count of the rest.
fn list(items: &BTreeSet<String>) -> String {
    let mut out: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
    let rest = items.len().saturating_sub(5);
    let more;
    if rest > 0 {
        more = format!("and {rest} more");
        out.push(&more);
    }
    out.join(", ")
}

/// Namespaces that belong to the cluster itself, not to applications.
pub fn is_system_namespace(ns: &str) -> bool {
    ns.starts_with("kube-") || ns.starts_with("openshift")
}

/// Whether an identity is one of the cluster's own.
pub fn is_system_identity(i: &Identity) -> bool {
    i.category == IdentityCategory::System
        || i.subject.name.starts_with("system:")
        || i.subject
            .namespace
            .as_deref()
            .is_some_and(is_system_namespace)
}

/// Whether a finding's rule id contains any of the needles (lower case).
pub(crate) fn rule_has(f: &Finding, needles: &[&str]) -> bool {
    let r: std::borrow::Cow<'_, str> = if f.rule.bytes().any(|b| b.is_ascii_uppercase()) {
        f.rule.to_ascii_lowercase().into()
    } else {
        f.rule.as_str().into()
    };
    needles.iter().any(|n| r.contains(n))
}

// ------------------------------------------------------------------ facts

/// What one pod template shows.
#[derive(Debug, Default)]
struct WorkloadFacts {
    id: String,
    namespace: String,
    system: bool,
    daemonset: bool,
    /// A mirror pod of a static pod (owned by its Node).
    static_pod: bool,
    service_account: String,
    privileged: bool,
    host_namespaces: Vec<&'static str>,
    host_path: bool,
    images_pinned: bool,
    unpinned_image: Option<String>,
    keycard_sidecar: bool,
    short_lived_identity: bool,
    authenticated_inbound: bool,
    env_secrets: bool,
    no_escalation: bool,
    read_only_root: bool,
    has_owner: bool,
    has_classification: bool,
    automount: Option<bool>,
}

#[derive(Debug, Default)]
struct NodeFacts {
    name: String,
    complete: bool,
    kubelet_minor: Option<u32>,
}

/// What the non-workload objects show.
#[derive(Debug, Default)]
struct ObjectFacts {
    bindings: usize,
    secrets: usize,
    token_secrets: BTreeSet<String>,
    nodes: Vec<NodeFacts>,
    admission: BTreeSet<String>,
    strict_mtls_mesh_wide: bool,
    strict_mtls_ns: BTreeSet<String>,
    authz_mesh_wide: bool,
    authz_ns: BTreeSet<String>,
    authenticated_ns: BTreeSet<String>,
    /// Some(true): an EncryptionConfiguration encrypts Secrets; Some(false):
    /// one is present and does not; None: none in the input.
    encryption: Option<bool>,
    node_agents: BTreeSet<String>,
    /// Namespace labels, for the fallback when the inventory has no
    /// namespaces.
    pod_security: BTreeMap<String, String>,
}

/// One namespace with workloads, as the criteria need it.
#[derive(Debug)]
struct NsFacts {
    name: String,
    deny_ingress: bool,
    deny_egress: bool,
    pod_security: Option<String>,
}

struct Facts<'a> {
    workloads: Vec<WorkloadFacts>,
    objects: ObjectFacts,
    app_ns: Vec<NsFacts>,
    inventory: &'a Inventory,
    inv_workloads: HashMap<&'a str, &'a WorkloadInfo>,
    policies: &'a [keycard_flows::NetworkPolicy],
    /// Namespace -> whether every workload in it is behind a keycard proxy
    /// or an authenticated-only inbound policy.
    proxied_ns: HashMap<String, bool>,
    /// Workloads of the cluster itself: system namespaces and node agents.
    infrastructure: HashSet<String>,
    /// Findings grouped by (rule, category), in first-seen order.
    finding_groups: Vec<Vec<&'a Finding>>,
}

impl Facts<'_> {
    fn app_workloads(&self) -> impl Iterator<Item = &WorkloadFacts> {
        self.workloads.iter().filter(|w| !w.system)
    }

    fn app_identities(&self) -> impl Iterator<Item = &Identity> {
        self.inventory
            .identities
            .iter()
            .filter(|i| !is_system_identity(i))
    }

    /// Subjects named by matching findings. Findings reported on a binding
    /// or role name the same grant the inventory already resolved to its
    /// subject, so they count only when the inventory has no identities.
    fn finding_subjects(&self, pred: impl Fn(&Finding) -> bool) -> BTreeSet<String> {
        let mut out = self.finding_resources(pred);
        if !self.inventory.identities.is_empty() {
            out.retain(|r| {
                ["User:", "Group:", "ServiceAccount:"]
                    .iter()
                    .any(|p| r.starts_with(p))
            });
        }
        out
    }

    /// Resources of findings whose rule and category match `pred`,
    /// infrastructure workloads left out (the criteria judge application
    /// workloads). `pred` sees one finding per (rule, category) and must
    /// judge only those two fields: a cluster has thousands of findings
    /// but a few dozen rules.
    fn finding_resources(&self, pred: impl Fn(&Finding) -> bool) -> BTreeSet<String> {
        self.matching(pred, false)
    }

    /// As [`Facts::finding_resources`], findings in system namespaces left
    /// out too.
    fn finding_app_resources(&self, pred: impl Fn(&Finding) -> bool) -> BTreeSet<String> {
        self.matching(pred, true)
    }

    fn matching(&self, pred: impl Fn(&Finding) -> bool, apps_only: bool) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for group in &self.finding_groups {
            let Some(first) = group.first() else {
                continue;
            };
            if !pred(first) {
                continue;
            }
            for f in group {
                let system = apps_only && f.namespace.as_deref().is_some_and(is_system_namespace);
                if !system && !self.infrastructure.contains(f.resource.as_str()) {
                    out.insert(f.resource.clone());
                }
            }
        }
        out
    }

    /// Whether identity-aware enforcement covers a namespace: a mesh-wide
    /// or namespace policy, or every workload of it behind a keycard proxy
    /// or an authenticated-only inbound policy.
    fn identity_aware(&self, ns: &str) -> bool {
        let o = &self.objects;
        o.strict_mtls_mesh_wide
            || o.authz_mesh_wide
            || o.strict_mtls_ns.contains(ns)
            || o.authz_ns.contains(ns)
            || o.authenticated_ns.contains(ns)
            || self.proxied_ns.get(ns).copied().unwrap_or(false)
    }
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut at = v;
    for p in path {
        at = at.get(p)?;
    }
    at.as_str()
}

fn arr<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn has_label(meta: &Value, keys: &[String]) -> bool {
    let Some(labels) = meta.get("labels") else {
        return false;
    };
    keys.iter().any(|k| {
        labels
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.trim().is_empty())
    })
}

/// Linkerd's inbound policies that require an authenticated (mTLS) client.
fn authenticated_policy(meta: &Value) -> bool {
    matches!(
        str_at(
            meta,
            &["annotations", "config.linkerd.io/default-inbound-policy"]
        ),
        Some("all-authenticated" | "cluster-authenticated")
    )
}

fn is_keycard(container: &Value, word: &str) -> bool {
    let name = str_at(container, &["name"]).unwrap_or("");
    let image = str_at(container, &["image"]).unwrap_or("");
    let mentions = |s: &str| s.to_ascii_lowercase().contains("keycard");
    if !(mentions(name) || mentions(image)) {
        return false;
    }
    let in_args = ["args", "command"]
        .iter()
        .flat_map(|k| arr(container, k))
        .filter_map(Value::as_str)
        .any(|a| a == word);
    name.contains(word) || image.contains(&format!("{word}:")) || in_args
}

/// A keycard or SPIRE agent container.
fn is_node_agent(c: &Value) -> bool {
    is_keycard(c, "agent") || str_at(c, &["image"]).is_some_and(|i| i.contains("spire-agent"))
}

fn workload_facts(ctx: &Context<'_>, w: &objects::Workload<'_>) -> WorkloadFacts {
    let spec = w.template.spec;
    let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| arr(spec, k))
        .collect();
    let regular: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| arr(spec, k))
        .collect();
    let sc = |c: &Value, key: &str| c.get("securityContext").and_then(|s| s.get(key)).cloned();
    let mut f = WorkloadFacts {
        id: w.id(),
        namespace: w.namespace.to_string(),
        system: is_system_namespace(w.namespace),
        daemonset: w.kind == "DaemonSet",
        static_pod: w.kind == "Pod"
            && arr(w.object.metadata(), "ownerReferences")
                .iter()
                .any(|r| str_at(r, &["kind"]) == Some("Node")),
        service_account: w.service_account().to_string(),
        images_pinned: true,
        ..WorkloadFacts::default()
    };
    for (key, name) in [
        ("hostNetwork", "hostNetwork"),
        ("hostPID", "hostPID"),
        ("hostIPC", "hostIPC"),
    ] {
        if spec.get(key).and_then(Value::as_bool) == Some(true) {
            f.host_namespaces.push(name);
        }
    }
    f.privileged = containers
        .iter()
        .any(|c| sc(c, "privileged").and_then(|v| v.as_bool()) == Some(true));
    for c in &containers {
        let image = str_at(c, &["image"]).unwrap_or("");
        if !image.contains("@sha256:") && f.unpinned_image.is_none() {
            f.images_pinned = false;
            f.unpinned_image = Some(image.to_string());
        }
        if is_keycard(c, "proxy") {
            f.keycard_sidecar = true;
        }
        let env_secret = arr(c, "env").iter().any(|e| {
            e.get("valueFrom")
                .and_then(|v| v.get("secretKeyRef"))
                .is_some()
        }) || arr(c, "envFrom")
            .iter()
            .any(|e| e.get("secretRef").is_some());
        f.env_secrets |= env_secret;
    }
    f.no_escalation = !containers.is_empty()
        && containers
            .iter()
            .all(|c| sc(c, "allowPrivilegeEscalation").and_then(|v| v.as_bool()) == Some(false));
    f.read_only_root = !regular.is_empty()
        && regular
            .iter()
            .all(|c| sc(c, "readOnlyRootFilesystem").and_then(|v| v.as_bool()) == Some(true));
    for v in arr(spec, "volumes") {
        if v.get("hostPath").is_some() {
            f.host_path = true;
        }
        if str_at(v, &["csi", "driver"]) == Some("csi.spiffe.io") {
            f.short_lived_identity = true;
        }
        let audience_token = v
            .get("projected")
            .map(|p| arr(p, "sources"))
            .unwrap_or(&[])
            .iter()
            .any(|s| {
                s.get("serviceAccountToken")
                    .and_then(|t| t.get("audience"))
                    .and_then(Value::as_str)
                    .is_some_and(|a| !a.is_empty())
            });
        f.short_lived_identity |= audience_token;
    }
    f.short_lived_identity |= f.keycard_sidecar;
    // A node agent of the identity system is infrastructure, wherever it is
    // installed: it needs the host (sockets, attestation) by design.
    if f.daemonset && containers.iter().any(|c| is_node_agent(c)) {
        f.system = true;
    }
    f.authenticated_inbound = authenticated_policy(w.template.metadata);
    let opts = ctx.options;
    let meta = w.object.metadata();
    f.has_owner =
        has_label(meta, &opts.owner_labels) || has_label(w.template.metadata, &opts.owner_labels);
    f.has_classification = has_label(meta, &opts.classification_labels)
        || has_label(w.template.metadata, &opts.classification_labels);
    f.automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool);
    f
}

fn object_facts(ctx: &Context<'_>) -> ObjectFacts {
    let mut o = ObjectFacts::default();
    for obj in ctx.objects {
        let kind = obj.kind();
        let group = obj.group();
        let ns = obj.namespace().unwrap_or("");
        let name = obj.name();
        match (group, kind) {
            ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => o.bindings += 1,
            ("", "Secret") => {
                o.secrets += 1;
                if str_at(&obj.value, &["type"]) == Some("kubernetes.io/service-account-token") {
                    o.token_secrets.insert(format!("{ns}/Secret/{name}"));
                }
            }
            ("", "Node") => {
                let info = obj.value.get("status").and_then(|s| s.get("nodeInfo"));
                let field = |k: &str| {
                    info.and_then(|i| i.get(k))
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                };
                let complete = [
                    "osImage",
                    "kernelVersion",
                    "kubeletVersion",
                    "containerRuntimeVersion",
                ]
                .iter()
                .all(|k| field(k).is_some());
                o.nodes.push(NodeFacts {
                    name,
                    complete,
                    kubelet_minor: field("kubeletVersion").and_then(minor_version),
                });
            }
            ("", "Namespace") => {
                if let Some(level) = obj.label("pod-security.kubernetes.io/enforce") {
                    o.pod_security.insert(name.clone(), level.to_string());
                }
                if authenticated_policy(obj.metadata()) {
                    o.authenticated_ns.insert(name);
                }
            }
            ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration")
            | ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
                o.admission.insert(format!("{kind}/{name}"));
            }
            ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
                if name.contains("keycard") =>
            {
                o.admission.insert(format!("{kind}/{name}"));
            }
            ("templates.gatekeeper.sh", "ConstraintTemplate") => {
                o.admission.insert(format!("Gatekeeper {kind}/{name}"));
            }
            ("kyverno.io", "ClusterPolicy" | "Policy") => {
                o.admission.insert(format!("Kyverno {kind}/{name}"));
            }
            ("security.istio.io", "PeerAuthentication") => {
                let strict = str_at(&obj.value, &["spec", "mtls", "mode"]) == Some("STRICT");
                let selector = obj.value.get("spec").and_then(|s| s.get("selector"));
                if strict && selector.is_none() {
                    if ns == "istio-system" {
                        o.strict_mtls_mesh_wide = true;
                    } else {
                        o.strict_mtls_ns.insert(ns.to_string());
                    }
                }
            }
            ("security.istio.io", "AuthorizationPolicy") => {
                let selector = obj.value.get("spec").and_then(|s| s.get("selector"));
                if ns == "istio-system" && selector.is_none() {
                    o.authz_mesh_wide = true;
                } else {
                    o.authz_ns.insert(ns.to_string());
                }
            }
            ("policy.linkerd.io", "AuthorizationPolicy" | "ServerAuthorization") => {
                o.authz_ns.insert(ns.to_string());
            }
            ("apiserver.config.k8s.io", "EncryptionConfiguration") => {
                let encrypts = arr(&obj.value, "resources").iter().any(|r| {
                    let secrets = arr(r, "resources")
                        .iter()
                        .any(|x| matches!(x.as_str(), Some("secrets" | "*.*" | "*.")));
                    let first = arr(r, "providers")
                        .first()
                        .and_then(Value::as_object)
                        .and_then(|p| p.keys().next().cloned());
                    secrets && first.is_some_and(|p| p != "identity")
                });
                o.encryption = Some(o.encryption.unwrap_or(false) || encrypts);
            }
            (_, "DaemonSet") => {
                if let Some(t) = obj.pod_template() {
                    let agent = arr(t.spec, "containers").iter().any(is_node_agent);
                    if agent {
                        o.node_agents.insert(format!("{ns}/DaemonSet/{name}"));
                    }
                }
            }
            _ => {}
        }
    }
    o
}

/// `v1.29.3` -> 29.
fn minor_version(v: &str) -> Option<u32> {
    let v = v.trim_start_matches('v');
    let mut parts = v.split('.');
    let _major = parts.next()?;
    let minor = parts.next()?;
    let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Namespaces with application workloads: from the inventory when it has
/// them, otherwise from the pod templates and the parsed NetworkPolicies.
fn namespace_facts(
    ctx: &Context<'_>,
    inventory: &Inventory,
    workloads: &[WorkloadFacts],
    objs: &ObjectFacts,
) -> Vec<NsFacts> {
    if !inventory.namespaces.is_empty() {
        return inventory
            .namespaces
            .iter()
            .filter(|n| n.workloads > 0 && !is_system_namespace(&n.name))
            .map(|n: &NamespaceInfo| NsFacts {
                name: n.name.clone(),
                deny_ingress: n.default_deny_ingress,
                deny_egress: n.default_deny_egress,
                pod_security: n.pod_security.clone(),
            })
            .collect();
    }
    let names: BTreeSet<&str> = workloads
        .iter()
        .filter(|w| !w.system)
        .map(|w| w.namespace.as_str())
        .collect();
    names
        .into_iter()
        .map(|ns| {
            let policies = ctx
                .cluster
                .network_policies
                .iter()
                .filter(|p| p.namespace == ns && p.pod_selector.is_everything());
            let mut deny_ingress = false;
            let mut deny_egress = false;
            for p in policies {
                deny_ingress |= p.affects_ingress && p.ingress.is_empty();
                deny_egress |= p.affects_egress && p.egress.iter().all(dns_only);
            }
            NsFacts {
                name: ns.to_string(),
                deny_ingress,
                deny_egress,
                pod_security: objs.pod_security.get(ns).cloned(),
            }
        })
        .collect()
}

/// An egress rule that only opens DNS (port 53).
fn dns_only(rule: &keycard_flows::NpRule) -> bool {
    use keycard_flows::PortRef;
    !rule.ports.is_empty()
        && rule
            .ports
            .iter()
            .all(|p| matches!(p.port, PortRef::Range(53, 53)))
}

fn facts<'a>(ctx: &Context<'a>, inventory: &'a Inventory, findings: &'a [Finding]) -> Facts<'a> {
    let workloads: Vec<WorkloadFacts> = ctx
        .workloads
        .iter()
        .map(|w| workload_facts(ctx, w))
        .collect();
    let objects = object_facts(ctx);
    let infrastructure: HashSet<String> = workloads
        .iter()
        .filter(|w| w.system)
        .map(|w| w.id.clone())
        .collect();
    // A namespace that holds only node agents (keycard's or SPIRE's own
    // namespace) is infrastructure too.
    let mut app_namespaces: HashSet<&str> = HashSet::new();
    let mut infra_namespaces: HashSet<&str> = HashSet::new();
    for w in &workloads {
        if w.system {
            infra_namespaces.insert(&w.namespace);
        } else {
            app_namespaces.insert(&w.namespace);
        }
    }
    let infra_only: HashSet<String> = infra_namespaces
        .difference(&app_namespaces)
        .map(|s| s.to_string())
        .collect();
    let mut app_ns = namespace_facts(ctx, inventory, &workloads, &objects);
    app_ns.retain(|n| !infra_only.contains(&n.name));
    let mut group_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut finding_groups: Vec<Vec<&Finding>> = Vec::new();
    for f in findings {
        let key = (f.rule.as_str(), f.category.as_str());
        let i = *group_of.entry(key).or_insert_with(|| {
            finding_groups.push(Vec::new());
            finding_groups.len() - 1
        });
        if let Some(g) = finding_groups.get_mut(i) {
            g.push(f);
        }
    }
    let mut proxied_ns: HashMap<String, bool> = HashMap::new();
    for w in &workloads {
        let covered = w.keycard_sidecar || w.authenticated_inbound;
        *proxied_ns.entry(w.namespace.clone()).or_insert(true) &= covered;
    }
    let inv_workloads = inventory
        .workloads
        .iter()
        .map(|w| (w.id.as_str(), w))
        .collect();
    Facts {
        workloads,
        objects,
        app_ns,
        inventory,
        inv_workloads,
        policies: &ctx.cluster.network_policies,
        proxied_ns,
        infrastructure,
        finding_groups,
    }
}

// --------------------------------------------------------------- pillars

fn identity(f: &Facts<'_>) -> (bool, Vec<Judged>) {
    use Criterion::*;
    let app_ids: Vec<&Identity> = f.app_identities().collect();
    let with_perms = f
        .inventory
        .identities
        .iter()
        .filter(|i| !i.permissions.is_empty())
        .count();
    let assessed =
        f.objects.bindings > 0 || !f.inventory.identities.is_empty() || !f.workloads.is_empty();
    let mut out = Vec::new();

    let visible = f.objects.bindings > 0 || with_perms > 0;
    out.push(judged(
        IdRbacVisible,
        visible,
        0.0,
        if visible {
            format!(
                "{}; {} hold permissions",
                plural(f.objects.bindings, "binding"),
                plural(with_perms, "identity")
            )
        } else {
            "no RoleBindings or ClusterRoleBindings in the input: who can do what cannot be judged".into()
        },
        "Include Roles, ClusterRoles, RoleBindings and ClusterRoleBindings in the input so identities and their permissions can be judged",
    ));

    let mut admins: BTreeSet<String> = app_ids
        .iter()
        .filter(|i| i.cluster_admin)
        .map(|i| i.id.clone())
        .collect();
    admins.extend(f.finding_subjects(|x| rule_has(x, &["cluster-admin", "cluster_admin"])));
    out.push(all_of(
        IdNoClusterAdmin,
        app_ids.len(),
        &admins,
        "non-system identities",
        "hold cluster-admin",
        "Remove standing cluster-admin bindings from people, CI and workloads; grant narrow roles and keep cluster-admin for expiring just-in-time break-glass grants",
    ));

    let mut escalating: BTreeSet<String> = app_ids
        .iter()
        .filter(|i| !i.escalation_paths.is_empty())
        .map(|i| i.id.clone())
        .collect();
    escalating.extend(f.finding_subjects(|x| {
        rule_has(x, &["rbac-escalat", "escalation-path", "impersonat"])
            || (x.category == "rbac" && rule_has(x, &["escalat"]))
    }));
    out.push(all_of(
        IdNoEscalation,
        app_ids.len(),
        &escalating,
        "non-system identities",
        "can escalate their privileges",
        "Remove escalate, bind and impersonate grants and the right to create pods under more privileged service accounts",
    ));

    let mut tokens = f.objects.token_secrets.clone();
    tokens.extend(f.finding_resources(|x| {
        rule_has(x, &["token-secret", "long-lived-token", "legacy-token"])
            || (x.category == "static-credentials" && rule_has(x, &["token"]))
    }));
    let mut j = all_of(
        IdNoTokenSecrets,
        f.objects.secrets.max(tokens.len()),
        &tokens,
        "Secrets",
        "are long-lived service-account tokens",
        "Delete service-account token Secrets; let workloads use projected, expiring tokens or keycard SVIDs",
    );
    if f.objects.secrets == 0 && tokens.is_empty() {
        j.detail = "no Secret objects in the input, so none was seen".into();
    }
    out.push(j);

    let apps: Vec<&WorkloadFacts> = f.app_workloads().collect();
    let mut on_default: BTreeSet<String> = apps
        .iter()
        .filter(|w| w.service_account == "default")
        .map(|w| w.id.clone())
        .collect();
    on_default
        .extend(f.finding_resources(|x| rule_has(x, &["default-service-account", "default-sa"])));
    out.push(all_of(
        IdDedicatedAccounts,
        apps.len(),
        &on_default,
        "application workloads",
        "run as the `default` service account",
        "Give each workload its own ServiceAccount and set serviceAccountName in its pod template",
    ));

    let mut unused: BTreeSet<String> = BTreeSet::new();
    for w in &apps {
        match f.inv_workloads.get(w.id.as_str()) {
            Some(i) => {
                if i.token_mounted && !i.identity_has_permissions {
                    unused.insert(w.id.clone());
                }
            }
            // Without the inventory only the pod's own setting is known.
            None => {
                if w.automount != Some(false) {
                    unused.insert(w.id.clone());
                }
            }
        }
    }
    unused.extend(f.finding_resources(|x| {
        rule_has(x, &["automount", "unused-token"])
            || (x.category == "token" && !rule_has(x, &["secret"]))
    }));
    out.push(all_of(
        IdTokensOnlyWhereUsed,
        apps.len(),
        &unused,
        "application workloads",
        "mount a token their identity does not use",
        "Set automountServiceAccountToken: false on workloads whose identity holds no permissions",
    ));

    let long_lived: BTreeSet<String> = apps
        .iter()
        .filter(|w| !w.short_lived_identity)
        .map(|w| w.id.clone())
        .collect();
    out.push(all_of(
        IdShortLived,
        apps.len(),
        &long_lived,
        "application workloads",
        "have no SPIFFE identity, keycard proxy or audience-bound projected token",
        "Issue each workload a short-lived identity: keycard SVIDs through the Workload API or a keycard proxy sidecar, or projected service-account tokens bound to an audience",
    ));

    let mut wildcard: BTreeSet<String> = app_ids
        .iter()
        .filter(|i| {
            !i.cluster_admin
                && i.permissions.iter().any(|p| {
                    p.verbs.iter().any(|v| v == "*") || p.resources.iter().any(|r| r == "*")
                })
        })
        .map(|i| i.id.clone())
        .collect();
    wildcard.extend(f.finding_subjects(|x| rule_has(x, &["wildcard"])));
    out.push(all_of(
        IdNoWildcards,
        app_ids.len(),
        &wildcard,
        "non-system identities",
        "hold wildcard grants",
        "Replace `*` verbs and resources with the exact verbs and resources each identity uses",
    ));
    (assessed, out)
}

fn host_breakers(f: &Facts<'_>, privileged: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for w in f.app_workloads() {
        let inv = f.inv_workloads.get(w.id.as_str());
        let hit = if privileged {
            w.privileged || inv.is_some_and(|i| i.privileged)
        } else {
            !w.host_namespaces.is_empty() || inv.is_some_and(|i| !i.host_namespaces.is_empty())
        };
        if hit {
            out.insert(w.id.clone());
        }
    }
    let needles: &[&str] = if privileged {
        &["privileged"]
    } else {
        &[
            "host-namespace",
            "host-network",
            "host-pid",
            "host-ipc",
            "hostnetwork",
        ]
    };
    out.extend(f.finding_app_resources(|x| rule_has(x, needles)));
    out
}

fn devices(f: &Facts<'_>) -> (bool, Vec<Judged>) {
    use Criterion::*;
    let apps = f.app_workloads().count();
    let assessed = !f.objects.nodes.is_empty() || !f.workloads.is_empty();
    let mut out = Vec::new();
    out.push(all_of(
        DevNoPrivileged,
        apps,
        &host_breakers(f, true),
        "application workloads",
        "run privileged",
        "Remove privileged: true and SYS_ADMIN from application containers; move node-level tasks into audited node agents",
    ));
    out.push(all_of(
        DevNoHostNamespaces,
        apps,
        &host_breakers(f, false),
        "application workloads",
        "share a node namespace",
        "Remove hostNetwork, hostPID and hostIPC from application pods",
    ));

    let nodes = &f.objects.nodes;
    let incomplete: BTreeSet<String> = nodes
        .iter()
        .filter(|n| !n.complete)
        .map(|n| n.name.clone())
        .collect();
    let mut j = all_of(
        DevNodesInventoried,
        nodes.len(),
        &incomplete,
        "Nodes",
        "lack OS, kernel, kubelet or runtime versions",
        "Include Node objects with their status in the input (kubectl get nodes -o yaml) so every host is inventoried",
    );
    if nodes.is_empty() {
        j.met = false;
        j.progress = 0.0;
        j.detail = "no Node objects in the input: hosts cannot be inventoried".into();
    }
    out.push(j);

    let mut host_path: BTreeSet<String> = f
        .app_workloads()
        .filter(|w| w.host_path)
        .map(|w| w.id.clone())
        .collect();
    host_path.extend(f.finding_app_resources(|x| rule_has(x, &["host-path", "hostpath"])));
    out.push(all_of(
        DevNoHostPath,
        apps,
        &host_path,
        "application workloads",
        "mount a host path",
        "Replace hostPath volumes in application pods with emptyDir, ConfigMap, Secret or PersistentVolumeClaim volumes",
    ));

    let minors: Vec<u32> = nodes.iter().filter_map(|n| n.kubelet_minor).collect();
    let (lo, hi) = (
        minors.iter().min().copied().unwrap_or(0),
        minors.iter().max().copied().unwrap_or(0),
    );
    let consistent = !minors.is_empty() && hi - lo <= 1;
    out.push(judged(
        DevVersionsConsistent,
        consistent,
        0.0,
        if minors.is_empty() {
            "no kubelet versions visible (no Node objects with status)".into()
        } else if consistent {
            format!("{} nodes run kubelet 1.{lo} to 1.{hi}", minors.len())
        } else {
            format!(
                "{} nodes run kubelet versions from 1.{lo} to 1.{hi}",
                minors.len()
            )
        },
        "Upgrade lagging nodes so every kubelet is within one minor version of the newest",
    ));

    let agents = &f.objects.node_agents;
    out.push(judged(
        DevNodeAttestation,
        !agents.is_empty(),
        0.0,
        if agents.is_empty() {
            "no keycard or SPIRE agent DaemonSet in the input; device posture (secure boot, disk encryption) is not visible from cluster objects".into()
        } else {
            format!("node agents: {}", list(agents))
        },
        "Run the keycard agent (or a SPIRE agent) as a DaemonSet so each node is attested before its workloads get identities",
    ));

    let crossing: BTreeSet<String> = f
        .workloads
        .iter()
        .filter(|w| {
            (w.privileged || !w.host_namespaces.is_empty() || w.host_path)
                && !(w.daemonset || w.static_pod)
        })
        .map(|w| w.id.clone())
        .collect();
    out.push(all_of(
        DevHostBoundaryAgentsOnly,
        f.workloads.len(),
        &crossing,
        "workloads",
        "cross the host boundary without being a node agent",
        "Confine privileged, host-namespace and hostPath access to node-agent DaemonSets, system namespaces included",
    ));
    (assessed, out)
}

fn data_store_ok(f: &Facts<'_>, outside_only: bool) -> BTreeSet<String> {
    f.inventory
        .data_stores
        .iter()
        .filter(|d| {
            if outside_only {
                d.reachable_from_outside
            } else {
                !d.isolated || d.reachable_from_outside
            }
        })
        .map(|d| d.workload.clone())
        .collect()
}

fn networks(f: &Facts<'_>) -> (bool, Vec<Judged>) {
    use Criterion::*;
    let assessed = !f.app_ns.is_empty() || !f.workloads.is_empty();
    let total = f.app_ns.len();
    let mut out = Vec::new();
    let no_ingress: BTreeSet<String> = f
        .app_ns
        .iter()
        .filter(|n| !n.deny_ingress)
        .map(|n| n.name.clone())
        .collect();
    let no_egress: BTreeSet<String> = f
        .app_ns
        .iter()
        .filter(|n| !n.deny_egress)
        .map(|n| n.name.clone())
        .collect();
    let with = total - no_ingress.len();
    out.push(judged(
        NetSomeDefaultDeny,
        with > 0,
        0.0,
        if total == 0 {
            "no namespaces with application workloads".into()
        } else {
            format!("{with} of {total} namespaces with workloads deny ingress by default")
        },
        "Add a default-deny ingress NetworkPolicy (podSelector: {}, policyTypes: [Ingress]) to the namespaces that hold the most sensitive workloads",
    ));
    let every = |c: Criterion, bad: &BTreeSet<String>, what: &str, action: &str| {
        if total == 0 {
            return judged(
                c,
                false,
                0.0,
                "no namespaces with application workloads to judge".into(),
                action,
            );
        }
        if bad.is_empty() {
            return judged(
                c,
                true,
                1.0,
                format!("all {total} namespaces with workloads deny {what} by default"),
                action,
            );
        }
        judged(
            c,
            false,
            (total - bad.len()) as f64 / total as f64,
            format!(
                "{} of {total} namespaces with workloads do not deny {what} by default: {}",
                bad.len(),
                list(bad)
            ),
            action,
        )
    };
    out.push(every(
        NetAllDefaultDenyIngress,
        &no_ingress,
        "ingress",
        "Add a default-deny ingress NetworkPolicy to every namespace with workloads, then allow each needed flow explicitly",
    ));
    out.push(every(
        NetAllDefaultDenyEgress,
        &no_egress,
        "egress",
        "Add a default-deny egress NetworkPolicy (DNS allowed) to every namespace with workloads",
    ));
    out.push(all_of(
        NetDataStoresNamedOnly,
        f.inventory.data_stores.len(),
        &data_store_ok(f, false),
        "data stores",
        "are reachable by unnamed workloads or from outside",
        "Select each data store with a NetworkPolicy that admits only the workloads that use it, on its port",
    ));

    let mut exposed: BTreeSet<String> = BTreeSet::new();
    for w in f.app_workloads() {
        if let Some(i) = f.inv_workloads.get(w.id.as_str()) {
            let direct = i.exposed.iter().any(|e| {
                let e = e.to_ascii_lowercase();
                ["loadbalancer", "nodeport", "hostport", "hostnetwork"]
                    .iter()
                    .any(|k| e.contains(k))
            });
            if direct {
                exposed.insert(w.id.clone());
            }
        }
    }
    exposed.extend(f.finding_resources(|x| {
        x.category == "exposure" || rule_has(x, &["exposure", "public", "nodeport", "loadbalancer"])
    }));
    out.push(all_of(
        NetNoDirectExposure,
        f.app_workloads().count(),
        &exposed,
        "application workloads",
        "are exposed directly (LoadBalancer, NodePort, host port or network)",
        "Publish services through the authenticating ingress or gateway; turn LoadBalancer and NodePort Services into ClusterIP",
    ));

    let uncovered: BTreeSet<String> = f
        .app_ns
        .iter()
        .filter(|n| !f.identity_aware(&n.name))
        .map(|n| n.name.clone())
        .collect();
    out.push(if total == 0 {
        judged(
            NetIdentityAware,
            false,
            0.0,
            "no namespaces with application workloads to judge".into(),
            "",
        )
    } else {
        all_of(
            NetIdentityAware,
            total,
            &uncovered,
            "namespaces with workloads",
            "lack identity-aware enforcement (keycard proxy, strict mTLS or authorization policies)",
            "Put workloads behind keycard proxy sidecars or a mesh with STRICT mTLS and authorization policies, namespace by namespace",
        )
    });

    let mut broad: BTreeSet<String> = BTreeSet::new();
    for p in ctx_policies(f) {
        let open_in = p.affects_ingress && p.ingress.iter().any(allows_everyone);
        let open_out =
            p.affects_egress && p.egress.iter().any(|r| allows_everyone(r) && !dns_only(r));
        if open_in || open_out {
            broad.insert(format!("{}/NetworkPolicy/{}", p.namespace, p.name));
        }
    }
    broad.extend(f.finding_resources(|x| rule_has(x, &["flat", "east-west", "allow-all"])));
    let n_policies = ctx_policies(f).count();
    out.push(if n_policies == 0 && broad.is_empty() {
        judged(
            NetLeastPrivilege,
            false,
            0.0,
            "no NetworkPolicies in application namespaces".into(),
            "Write one narrow NetworkPolicy per needed flow (keycard can propose them from observed traffic)",
        )
    } else {
        all_of(
            NetLeastPrivilege,
            n_policies,
            &broad,
            "NetworkPolicies",
            "admit every source or destination",
            "Narrow allow-all rules to the workloads and ports that need them (keycard can propose them from observed traffic)",
        )
    });
    (assessed, out)
}

/// NetworkPolicies of application namespaces.
fn ctx_policies<'f>(
    f: &'f Facts<'_>,
) -> impl Iterator<Item = &'f keycard_flows::NetworkPolicy> + 'f {
    f.policies
        .iter()
        .filter(|p| !is_system_namespace(&p.namespace))
}

/// A rule that admits every peer: no peers, or a peer selecting every pod in
/// every namespace, or an ipBlock of the whole address space.
fn allows_everyone(rule: &keycard_flows::NpRule) -> bool {
    use keycard_flows::NpPeer;
    rule.peers.is_empty()
        || rule.peers.iter().any(|p| match p {
            NpPeer::Pods { pods, namespaces } => {
                namespaces.as_ref().is_some_and(|n| n.is_everything())
                    && pods.as_ref().is_none_or(|s| s.is_everything())
            }
            NpPeer::IpBlock { text, .. } => {
                text.starts_with("0.0.0.0/0") || text.starts_with("::/0")
            }
        })
}

fn applications(f: &Facts<'_>) -> (bool, Vec<Judged>) {
    use Criterion::*;
    let apps: Vec<&WorkloadFacts> = f.app_workloads().collect();
    let assessed = !f.workloads.is_empty();
    let total_ns = f.app_ns.len();
    let mut out = Vec::new();

    let mut breaking = host_breakers(f, true);
    breaking.extend(host_breakers(f, false));
    out.push(all_of(
        AppNoHostBreakout,
        apps.len(),
        &breaking,
        "application workloads",
        "run privileged or in a node namespace",
        "Remove privileged containers and hostNetwork/hostPID/hostIPC from application workloads",
    ));

    let level = |n: &NsFacts| n.pod_security.as_deref().unwrap_or("").to_ascii_lowercase();
    let guarded: Vec<&NsFacts> = f
        .app_ns
        .iter()
        .filter(|n| matches!(level(n).as_str(), "baseline" | "restricted"))
        .collect();
    let restricted = f.app_ns.iter().filter(|n| level(n) == "restricted").count();
    let controllers = &f.objects.admission;
    let some = !guarded.is_empty() || !controllers.is_empty();
    out.push(judged(
        AppSomeAdmissionGuard,
        some,
        0.0,
        format!(
            "{} of {total_ns} namespaces with workloads enforce a Pod Security level; {} admission policy objects",
            guarded.len(),
            controllers.len()
        ),
        "Label namespaces with pod-security.kubernetes.io/enforce: baseline (restricted where possible)",
    ));
    let unguarded: BTreeSet<String> = f
        .app_ns
        .iter()
        .filter(|n| !matches!(level(n).as_str(), "baseline" | "restricted"))
        .map(|n| n.name.clone())
        .collect();
    let mut j = all_of(
        AppPodSecurityEverywhere,
        total_ns,
        &unguarded,
        "namespaces with workloads",
        "do not enforce Pod Security baseline or restricted",
        "Label every namespace with workloads pod-security.kubernetes.io/enforce: baseline or restricted",
    );
    if total_ns == 0 {
        j.met = false;
        j.detail = "no namespaces with application workloads to judge".into();
    }
    out.push(j);

    let mut unpinned: BTreeSet<String> = apps
        .iter()
        .filter(|w| !w.images_pinned)
        .map(|w| w.id.clone())
        .collect();
    unpinned.extend(f.finding_resources(|x| rule_has(x, &["image-digest", "latest-tag"])));
    out.push(all_of(
        AppImagesPinned,
        apps.len(),
        &unpinned,
        "application workloads",
        "run images not pinned by digest",
        "Reference every image by digest (registry/repo:tag@sha256:...) resolved at build time",
    ));

    out.push(judged(
        AppAdmissionController,
        !controllers.is_empty(),
        0.0,
        if controllers.is_empty() {
            "no ValidatingWebhookConfiguration, ValidatingAdmissionPolicy, Gatekeeper or Kyverno policy in the input".into()
        } else {
            format!("admission policy objects: {}", list(controllers))
        },
        "Run an admission policy controller (keycard's admission webhook, Gatekeeper or Kyverno) that checks every workload before it is admitted",
    ));

    let mut ownerless: BTreeSet<String> = apps
        .iter()
        .filter(|w| {
            !(w.has_owner
                || f.inv_workloads
                    .get(w.id.as_str())
                    .is_some_and(|i| i.has_owner))
        })
        .map(|w| w.id.clone())
        .collect();
    ownerless.extend(f.finding_resources(|x| rule_has(x, &["owner"])));
    out.push(all_of(
        AppOwners,
        apps.len(),
        &ownerless,
        "application workloads",
        "name no owner",
        "Label every workload with its owning team (owner: team-name)",
    ));

    let not_restricted: BTreeSet<String> = f
        .app_ns
        .iter()
        .filter(|n| level(n) != "restricted")
        .map(|n| n.name.clone())
        .collect();
    let mut j = all_of(
        AppPodSecurityRestricted,
        total_ns,
        &not_restricted,
        "namespaces with workloads",
        "do not enforce Pod Security restricted",
        "Move namespaces to pod-security.kubernetes.io/enforce: restricted once their workloads comply",
    );
    if total_ns == 0 {
        j.met = false;
        j.detail = "no namespaces with application workloads to judge".into();
    } else if j.met {
        j.detail = format!("all {restricted} namespaces with workloads enforce restricted");
    }
    out.push(j);

    let mut soft: BTreeSet<String> = apps
        .iter()
        .filter(|w| !(w.no_escalation && w.read_only_root))
        .map(|w| w.id.clone())
        .collect();
    soft.extend(
        f.finding_app_resources(|x| rule_has(x, &["privilege-escalation", "read-only-root"])),
    );
    out.push(all_of(
        AppHardenedContainers,
        apps.len(),
        &soft,
        "application workloads",
        "allow privilege escalation or write to their root filesystem",
        "Set allowPrivilegeEscalation: false and readOnlyRootFilesystem: true on every container",
    ));
    (assessed, out)
}

fn data(f: &Facts<'_>) -> (bool, Vec<Judged>) {
    use Criterion::*;
    let apps: Vec<&WorkloadFacts> = f.app_workloads().collect();
    let assessed =
        !f.workloads.is_empty() || f.objects.secrets > 0 || !f.inventory.data_stores.is_empty();
    let mut out = Vec::new();

    let literals = f.finding_resources(|x| {
        rule_has(
            x,
            &[
                "env-secret",
                "secret-literal",
                "configmap",
                "config-map",
                "credential",
                "plaintext",
            ],
        ) || (x.category == "static-credentials" && !rule_has(x, &["token"]))
    });
    let mut j = all_of(
        DataNoCredentialLiterals,
        apps.len(),
        &literals,
        "application workloads",
        "carry credentials in env or ConfigMaps",
        "Rotate the exposed credentials and move them into Secrets mounted as files, or fetch short-lived credentials with the workload's identity",
    );
    if j.met {
        j.detail = format!(
            "no credential literal found in env variables or ConfigMaps ({} workloads)",
            apps.len()
        );
    } else {
        j.detail = format!(
            "credentials written into env or ConfigMaps of {}: {}",
            plural(literals.len(), "object"),
            list(&literals)
        );
    }
    out.push(j);

    let app_ids: Vec<&Identity> = f.app_identities().collect();
    let everything: BTreeSet<String> = app_ids
        .iter()
        .filter(|i| i.cluster_admin || i.secrets_readable.iter().any(|s| s == "*/*"))
        .map(|i| i.id.clone())
        .collect();
    out.push(all_of(
        DataNoSecretWildcard,
        app_ids.len(),
        &everything,
        "non-system identities",
        "can read every Secret",
        "Remove cluster-wide get/list/watch on secrets from people, CI and workloads; grant access to named Secrets in one namespace",
    ));

    let mut unclassified: BTreeSet<String> = apps
        .iter()
        .filter(|w| {
            !(w.has_classification
                || f.inv_workloads
                    .get(w.id.as_str())
                    .is_some_and(|i| i.has_data_classification))
        })
        .map(|w| w.id.clone())
        .collect();
    unclassified.extend(f.finding_resources(|x| rule_has(x, &["classification"])));
    out.push(all_of(
        DataClassified,
        apps.len(),
        &unclassified,
        "application workloads",
        "carry no data-classification label",
        "Label every workload with the class of data it handles (data-classification: public|internal|confidential|restricted)",
    ));

    out.push(all_of(
        DataStoresNotPublic,
        f.inventory.data_stores.len(),
        &data_store_ok(f, true),
        "data stores",
        "are reachable from outside the cluster",
        "Remove external exposure and ipBlock rules that reach data stores",
    ));

    let mut broad: BTreeSet<String> = BTreeSet::new();
    for w in &apps {
        if let Some(i) = f.inv_workloads.get(w.id.as_str()) {
            let beyond = i
                .secrets_readable
                .iter()
                .any(|s| s.ends_with("/*") || !i.secrets_mounted.contains(s));
            if beyond {
                broad.insert(w.id.clone());
            }
        }
    }
    broad.extend(f.finding_resources(|x| {
        rule_has(
            x,
            &[
                "secret-read",
                "read-secret",
                "secrets-read",
                "can-read-secret",
            ],
        )
    }));
    out.push(all_of(
        DataSecretsScoped,
        apps.len(),
        &broad,
        "application workloads",
        "have identities that can read Secrets they do not mount",
        "Narrow secret access to resourceNames of the Secrets each workload mounts",
    ));

    let env_secrets: BTreeSet<String> = apps
        .iter()
        .filter(|w| w.env_secrets)
        .map(|w| w.id.clone())
        .collect();
    out.push(all_of(
        DataSecretsAsFiles,
        apps.len(),
        &env_secrets,
        "application workloads",
        "read Secrets into environment variables",
        "Mount Secrets as files (or fetch them with the workload identity) instead of secretKeyRef/secretRef env",
    ));

    out.push(judged(
        DataEncryptionAtRest,
        f.objects.encryption == Some(true),
        0.0,
        match f.objects.encryption {
            Some(true) => "an EncryptionConfiguration encrypts Secrets with a non-identity provider".into(),
            Some(false) => "the EncryptionConfiguration in the input stores Secrets unencrypted (identity provider first)".into(),
            None => "not visible from cluster objects: the API server's EncryptionConfiguration (or the provider's KMS setting) is needed".into(),
        },
        "Encrypt Secrets at rest with a KMS provider, and include the API server's EncryptionConfiguration as evidence",
    ));

    let unprotected: BTreeSet<String> = f
        .inventory
        .data_stores
        .iter()
        .filter(|d| {
            let ns = d.workload.split('/').next().unwrap_or("");
            !f.identity_aware(ns)
        })
        .map(|d| d.workload.clone())
        .collect();
    let mut j = all_of(
        DataStoresIdentityAware,
        f.inventory.data_stores.len(),
        &unprotected,
        "data stores",
        "lack identity-aware enforcement",
        "Put data stores behind mTLS with authorization (keycard proxy or a strict mesh) so only named identities connect",
    );
    if f.inventory.data_stores.is_empty() {
        j.detail = "no data stores recognised in the input".into();
    }
    out.push(j);
    (assessed, out)
}

// ---------------------------------------------------------------- scoring

fn stage_index(s: Stage) -> u8 {
    match s {
        Stage::Traditional => 0,
        Stage::Initial => 1,
        Stage::Advanced => 2,
        Stage::Optimal => 3,
    }
}

fn next_stage(s: Stage) -> Option<Stage> {
    match s {
        Stage::Traditional => Some(Stage::Initial),
        Stage::Initial => Some(Stage::Advanced),
        Stage::Advanced => Some(Stage::Optimal),
        Stage::Optimal => None,
    }
}

/// The highest stage whose criteria, and every lower stage's, all hold.
fn reached(criteria: &[Judged]) -> Stage {
    let mut stage = Stage::Traditional;
    for s in [Stage::Initial, Stage::Advanced, Stage::Optimal] {
        let mut of = criteria
            .iter()
            .filter(|c| c.criterion.stage() == s)
            .peekable();
        if of.peek().is_none() || !of.all(|c| c.met) {
            break;
        }
        stage = s;
    }
    stage
}

/// The stage's band plus partial credit for the next stage's criteria.
fn score_of(stage: Stage, criteria: &[Judged]) -> u8 {
    let Some(next) = next_stage(stage) else {
        return 100;
    };
    let of: Vec<f64> = criteria
        .iter()
        .filter(|c| c.criterion.stage() == next)
        .map(|c| c.progress)
        .collect();
    let avg = if of.is_empty() {
        0.0
    } else {
        of.iter().sum::<f64>() / of.len() as f64
    };
    25 * stage_index(stage) + (24.0 * avg).floor().clamp(0.0, 24.0) as u8
}

fn pillar_score(
    ctx: &Context<'_>,
    pillar: Pillar,
    assessed: bool,
    mut criteria: Vec<Judged>,
) -> PillarScore {
    criteria.sort_by_key(|c| (c.criterion.stage(), c.criterion));
    let limited_by: Vec<String> = ctx
        .coverage
        .gaps
        .iter()
        .filter(|g| g.pillars.contains(&pillar))
        .map(|g| g.id.clone())
        .collect();
    let mut stage = reached(&criteria);
    if !limited_by.is_empty() {
        stage = stage.min(Stage::Initial);
    }
    let score = if assessed {
        score_of(stage, &criteria)
    } else {
        0
    };
    let stage = if assessed { stage } else { Stage::Traditional };

    let mut next_steps: Vec<String> = ctx
        .coverage
        .gaps
        .iter()
        .filter(|g| g.pillars.contains(&pillar))
        .map(|g| format!("Give the assessment what it lacks ({}): {}", g.id, g.what))
        .collect();
    let mut unmet: Vec<&Judged> = criteria
        .iter()
        .filter(|c| !c.met && c.criterion.stage() > stage && !c.action.is_empty())
        .collect();
    unmet.sort_by(|a, b| {
        a.criterion
            .stage()
            .cmp(&b.criterion.stage())
            .then(b.criterion.weight().cmp(&a.criterion.weight()))
            .then(a.criterion.cmp(&b.criterion))
    });
    for c in unmet {
        if !next_steps.contains(&c.action) {
            next_steps.push(c.action.clone());
        }
    }
    let evidence = criteria
        .into_iter()
        .map(|c| Evidence {
            stage: c.criterion.stage(),
            criterion: c.criterion.text().to_string(),
            met: c.met,
            detail: c.detail,
        })
        .collect();
    PillarScore {
        pillar,
        stage,
        score,
        evidence,
        next_steps,
        limited_by,
        assessed,
    }
}

/// Score every pillar. Linear in the objects, findings and inventory.
pub fn score(ctx: &Context<'_>, inventory: &Inventory, findings: &[Finding]) -> Maturity {
    let f = facts(ctx, inventory, findings);
    let mut pillars = Vec::with_capacity(5);
    for pillar in Pillar::ALL {
        let (assessed, criteria) = match pillar {
            Pillar::Identity => identity(&f),
            Pillar::Devices => devices(&f),
            Pillar::Networks => networks(&f),
            Pillar::ApplicationsAndWorkloads => applications(&f),
            Pillar::Data => data(&f),
        };
        let p = pillar_score(ctx, pillar, assessed, criteria);
        tracing::debug!(
            pillar = %p.pillar,
            stage = %p.stage,
            score = p.score,
            assessed = p.assessed,
            limited = !p.limited_by.is_empty(),
            "maturity"
        );
        pillars.push(p);
    }
    let overall = pillars.iter().filter(|p| p.assessed).map(|p| p.stage).min();
    Maturity { pillars, overall }
}
