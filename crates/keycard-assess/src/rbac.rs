//! RBAC resolved into effective permissions per subject, as the API
//! server's RBAC authorizer would decide.
//!
//! Roles and ClusterRoles are indexed by `(namespace, name)`; aggregated
//! ClusterRoles are resolved once (chains included, cycles cut); bindings
//! are indexed by subject, so a subject's permissions cost the bindings
//! that name it (and its implicit groups), never a scan of every binding.
//!
//! ```
//! use keycard_assess::{AccessQuery, Rbac};
//! let text = r#"
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: Role
//! metadata: {name: deployer, namespace: prod}
//! rules: [{apiGroups: [apps], resources: [deployments], verbs: [create]}]
//! ---
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: RoleBinding
//! metadata: {name: ci, namespace: prod}
//! roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: deployer}
//! subjects: [{kind: ServiceAccount, name: ci}]
//! "#;
//! let (objects, _) = keycard_k8s::parse_str("rbac.yaml", text, &Default::default());
//! let rbac = Rbac::from_objects(&objects);
//! let who = rbac.who_can(&AccessQuery::new("create", "deployments").in_namespace("prod"));
//! assert_eq!(who[0].subject.to_string(), "ServiceAccount:prod/ci");
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use keycard_flows::{Labels, Selector};
use keycard_k8s::Object;
use serde_json::Value;

use crate::model::{Gap, Permission, Pillar, Scope, Subject, SubjectKind};

/// Group every authenticated request carries.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Group of every service account.
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// Members of this group bypass RBAC altogether.
pub const MASTERS: &str = "system:masters";

/// The role name a [`Permission`] carries for `system:masters`, whose
/// members the authorizer admits before RBAC is consulted.
pub const MASTERS_ROLE: &str = "(system:masters bypasses authorization)";

/// At most this many `dangling-role` gaps are listed one by one; the rest
/// are counted in one summary gap, so a partial dump of a big cluster does
/// not drown the report.
const MAX_DANGLING_GAPS: usize = 50;

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    fn from_value(v: &Value) -> Rule {
        Rule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A Role or ClusterRole with its effective rules (aggregation resolved).
#[derive(Debug, Clone)]
struct RoleDef {
    /// `ClusterRole/name` or `ns/Role/name`.
    id: String,
    rules: Vec<Rule>,
}

/// A RoleBinding or ClusterRoleBinding.
#[derive(Debug, Clone)]
struct BindingDef {
    /// `ClusterRoleBinding/name` or `ns/RoleBinding/name`.
    id: String,
    /// None for a ClusterRoleBinding.
    namespace: Option<String>,
    /// `ClusterRole/name` or `ns/Role/name`, found or not.
    role_id: String,
    role: Option<usize>,
    subjects: Vec<Subject>,
}

impl BindingDef {
    fn scope(&self) -> Scope {
        match &self.namespace {
            Some(ns) => Scope::Namespace(ns.clone()),
            None => Scope::Cluster,
        }
    }
}

/// A binding as [`Rbac::bindings`] lists it.
#[derive(Debug, Clone, Copy)]
pub struct BindingInfo<'a> {
    /// `ClusterRoleBinding/name` or `ns/RoleBinding/name`.
    pub id: &'a str,
    /// `ClusterRole/name` or `ns/Role/name`.
    pub role: &'a str,
    /// Whether the role was in the input (or is the assumed built-in
    /// cluster-admin).
    pub resolved: bool,
    pub subjects: &'a [Subject],
}

/// Roles, ClusterRoles (aggregation resolved) and bindings of the input.
#[derive(Debug, Default)]
pub struct Rbac {
    roles: Vec<RoleDef>,
    bindings: Vec<BindingDef>,
    /// Binding indices per subject named in them.
    by_subject: HashMap<Subject, Vec<usize>>,
    /// ServiceAccount objects of the input.
    service_accounts: BTreeSet<Subject>,
    gaps: Vec<Gap>,
}

/// "Can VERB RESOURCE (in NAMESPACE, named NAME)?"
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessQuery {
    /// `get`, `create`, ...; `*` asks for a grant of every verb.
    pub verb: String,
    /// `deployments`, `deployments.apps`, `pods/exec`, `*`, or a
    /// non-resource URL starting with `/` (`/metrics`).
    pub resource: String,
    /// None: any namespace (cluster-wide grants and every namespace's).
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Also list the known members of the groups that can (service accounts
    /// for `system:serviceaccounts[:ns]`, every known user and service
    /// account for `system:authenticated`), each permission marked with its
    /// group. Off by default: the group itself is listed, as
    /// kubectl-who-can and rbac-tool do.
    pub expand_groups: bool,
}

impl AccessQuery {
    pub fn new(verb: &str, resource: &str) -> AccessQuery {
        AccessQuery {
            verb: verb.to_string(),
            resource: resource.to_string(),
            ..AccessQuery::default()
        }
    }
    pub fn in_namespace(mut self, ns: &str) -> AccessQuery {
        self.namespace = Some(ns.to_string());
        self
    }
    pub fn named(mut self, name: &str) -> AccessQuery {
        self.name = Some(name.to_string());
        self
    }
    pub fn expand_groups(mut self) -> AccessQuery {
        self.expand_groups = true;
        self
    }
}

/// A subject that can, and the permissions that let it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoCan {
    pub subject: Subject,
    /// Every permission that grants the access: binding, role, scope,
    /// `via_group`, and `resource_names` when the rule is restricted.
    pub via: Vec<Permission>,
    /// `Some(names)` when every grant is restricted by `resourceNames` and
    /// the query named no object (or, for `create`, never): the subject can
    /// only act on these names. None when some grant is unrestricted.
    pub restricted_to: Option<Vec<String>>,
}

/// A resource as asked for: `pods/exec` is `{resource: pods, subresource:
/// exec, group: ""}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    pub resource: String,
    pub subresource: Option<String>,
    /// None when the resource is unknown and had no `.group` suffix: any
    /// group matches.
    pub group: Option<String>,
}

impl ResourceSpec {
    /// `deployments`, `deployments.apps`, `pods/exec`, `*/scale`,
    /// `widgets.example.com/status`.
    pub fn parse(s: &str) -> ResourceSpec {
        let (main, sub) = match s.split_once('/') {
            Some((m, sub)) => (m, Some(sub.to_string())),
            None => (s, None),
        };
        let (resource, group) = match main.split_once('.') {
            Some((r, g)) => (r.to_string(), Some(g.to_string())),
            None => (main.to_string(), well_known_group(main).map(str::to_string)),
        };
        ResourceSpec {
            resource,
            subresource: sub,
            group,
        }
    }

    /// `pods/exec` as RBAC rules name it.
    fn combined(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{}", self.resource, s),
            None => self.resource.clone(),
        }
    }
}

/// The API group of a built-in resource. Custom resources need the
/// `.group` suffix.
pub fn well_known_group(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "pods"
        | "services"
        | "secrets"
        | "configmaps"
        | "serviceaccounts"
        | "namespaces"
        | "nodes"
        | "persistentvolumes"
        | "persistentvolumeclaims"
        | "endpoints"
        | "events"
        | "limitranges"
        | "resourcequotas"
        | "replicationcontrollers"
        | "podtemplates"
        | "bindings"
        | "componentstatuses"
        | "users"
        | "groups" => "",
        "deployments" | "replicasets" | "statefulsets" | "daemonsets" | "controllerrevisions" => {
            "apps"
        }
        "jobs" | "cronjobs" => "batch",
        "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings" => {
            "rbac.authorization.k8s.io"
        }
        "networkpolicies" | "ingresses" | "ingressclasses" => "networking.k8s.io",
        "poddisruptionbudgets" | "podsecuritypolicies" => "policy",
        "horizontalpodautoscalers" => "autoscaling",
        "certificatesigningrequests" | "signers" => "certificates.k8s.io",
        "storageclasses" | "volumeattachments" | "csidrivers" | "csinodes" => "storage.k8s.io",
        "validatingwebhookconfigurations"
        | "mutatingwebhookconfigurations"
        | "validatingadmissionpolicies"
        | "validatingadmissionpolicybindings" => "admissionregistration.k8s.io",
        "customresourcedefinitions" => "apiextensions.k8s.io",
        "apiservices" => "apiregistration.k8s.io",
        "leases" => "coordination.k8s.io",
        "endpointslices" => "discovery.k8s.io",
        "tokenreviews" | "userextras" | "uids" => "authentication.k8s.io",
        "subjectaccessreviews"
        | "selfsubjectaccessreviews"
        | "localsubjectaccessreviews"
        | "selfsubjectrulesreviews" => "authorization.k8s.io",
        "priorityclasses" => "scheduling.k8s.io",
        "runtimeclasses" => "node.k8s.io",
        _ => return None,
    })
}

/// Resources that live outside namespaces: a RoleBinding never grants
/// them, because their requests carry no namespace.
pub fn is_cluster_scoped(resource: &str) -> bool {
    matches!(
        resource,
        "nodes"
            | "namespaces"
            | "persistentvolumes"
            | "clusterroles"
            | "clusterrolebindings"
            | "certificatesigningrequests"
            | "signers"
            | "storageclasses"
            | "csidrivers"
            | "csinodes"
            | "volumeattachments"
            | "customresourcedefinitions"
            | "apiservices"
            | "validatingwebhookconfigurations"
            | "mutatingwebhookconfigurations"
            | "validatingadmissionpolicies"
            | "validatingadmissionpolicybindings"
            | "priorityclasses"
            | "runtimeclasses"
            | "ingressclasses"
            | "componentstatuses"
            | "users"
            | "groups"
            | "userextras"
            | "uids"
            | "tokenreviews"
            | "subjectaccessreviews"
            | "selfsubjectaccessreviews"
            | "selfsubjectrulesreviews"
    )
}

/// The selectors of an aggregation rule, with keycard-flows' label
/// selector semantics (`LabelSelectorAsSelector`). A selector the API server
/// would reject is dropped with a warning: in the OR of an aggregation rule
/// it matches nothing.
fn aggregation_selectors(role: &str, list: &[Value]) -> Vec<Selector> {
    list.iter()
        .filter_map(|v| match Selector::parse(v) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(role, error = %e, "aggregation selector ignored");
                None
            }
        })
        .collect()
}

/// Kubernetes' built-in `cluster-admin`, assumed when a binding names it
/// and the input does not hold it (a directory of manifests never does).
fn builtin_cluster_admin() -> Vec<Rule> {
    let all = || vec!["*".to_string()];
    vec![
        Rule {
            verbs: all(),
            api_groups: all(),
            resources: all(),
            ..Rule::default()
        },
        Rule {
            verbs: all(),
            non_resource_urls: all(),
            ..Rule::default()
        },
    ]
}

/// The subject a binding names, `None` when it is malformed. A `User`
/// named `system:serviceaccount:ns:name` is that service account (the
/// authorizer matches both forms against the same request).
fn parse_subject(v: &Value, binding_ns: Option<&str>) -> Option<Subject> {
    let kind = v.get("kind").and_then(Value::as_str)?;
    let name = v.get("name").and_then(Value::as_str)?;
    match kind {
        "ServiceAccount" => {
            let ns = v
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .or(binding_ns)?;
            Some(Subject::service_account(ns, name))
        }
        "User" => Some(match service_account_username(name) {
            Some((ns, n)) => Subject::service_account(ns, n),
            None => Subject::user(name),
        }),
        "Group" => Some(Subject::group(name)),
        _ => None,
    }
}

/// `system:serviceaccount:ns:name` → `(ns, name)`.
pub fn service_account_username(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("system:serviceaccount:")?;
    let (ns, n) = rest.split_once(':')?;
    (!ns.is_empty() && !n.is_empty() && !n.contains(':')).then_some((ns, n))
}

/// The order subjects are listed in: groups, service accounts (by
/// namespace, then name), users; the order of their ids.
pub fn subject_order(s: &Subject) -> (u8, Option<&str>, &str) {
    let rank = match s.kind {
        SubjectKind::Group => 0,
        SubjectKind::ServiceAccount => 1,
        SubjectKind::User => 2,
    };
    (rank, s.namespace.as_deref(), s.name.as_str())
}

/// The groups Kubernetes puts a subject in without any binding.
pub fn implicit_groups(subject: &Subject) -> Vec<String> {
    match subject.kind {
        SubjectKind::ServiceAccount => {
            let ns = subject.namespace.as_deref().unwrap_or_default();
            vec![
                SERVICE_ACCOUNTS.to_string(),
                format!("{SERVICE_ACCOUNTS}:{ns}"),
                AUTHENTICATED.to_string(),
            ]
        }
        SubjectKind::User if subject.name == "system:anonymous" => {
            vec!["system:unauthenticated".to_string()]
        }
        SubjectKind::User => vec![AUTHENTICATED.to_string()],
        SubjectKind::Group => Vec::new(),
    }
}

/// The RBAC authorizer's `VerbMatches`.
fn verb_matches(verbs: &[String], verb: &str) -> bool {
    verbs.iter().any(|v| v == "*" || v == verb)
}

/// `APIGroupMatches`; a query of unknown group (None) matches any.
fn group_matches(groups: &[String], group: Option<&str>) -> bool {
    match group {
        Some(g) => groups.iter().any(|x| x == "*" || x == g),
        None => !groups.is_empty(),
    }
}

/// The RBAC authorizer's `ResourceMatches`: `*` matches every resource and
/// subresource, `*/scale` every resource's `scale`.
fn resource_matches(resources: &[String], spec: &ResourceSpec) -> bool {
    let combined = spec.combined();
    resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || spec
                .subresource
                .as_deref()
                .is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
    })
}

/// `NonResourceURLMatches`: exact, `*`, or a `/prefix/*`.
fn url_matches(urls: &[String], path: &str) -> bool {
    urls.iter().any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// How a rule matches a query about a resource.
enum RuleMatch {
    No,
    Yes,
    /// Only for these names (the query named none).
    Restricted,
}

fn rule_matches(rule: &Rule, q: &AccessQuery, spec: &ResourceSpec) -> RuleMatch {
    if !verb_matches(&rule.verbs, &q.verb)
        || !group_matches(&rule.api_groups, spec.group.as_deref())
        || !resource_matches(&rule.resources, spec)
    {
        return RuleMatch::No;
    }
    if rule.resource_names.is_empty() {
        return RuleMatch::Yes;
    }
    // A create request has no name yet: resourceNames never admit it.
    if q.verb == "create" && spec.subresource.is_none() {
        return RuleMatch::No;
    }
    match &q.name {
        Some(n) if rule.resource_names.iter().any(|x| x == n) => RuleMatch::Yes,
        Some(_) => RuleMatch::No,
        None => RuleMatch::Restricted,
    }
}

impl Rbac {
    pub fn from_objects(objects: &[Object]) -> Rbac {
        let mut rbac = Rbac::default();
        // Roles first: index by (namespace, name); None is a ClusterRole.
        let mut index: HashMap<(Option<&str>, &str), usize> = HashMap::new();
        let mut labels: Vec<Labels> = Vec::new();
        let mut aggregation: Vec<Option<Vec<Selector>>> = Vec::new();
        for o in objects {
            let (is_cluster, ns) = match o.kind() {
                "ClusterRole" => (true, None),
                "Role" => (false, Some(o.namespace().unwrap_or("default"))),
                "ServiceAccount" => {
                    let name = o.name();
                    if !name.is_empty() {
                        rbac.service_accounts.insert(Subject::service_account(
                            o.namespace().unwrap_or("default"),
                            &name,
                        ));
                    }
                    continue;
                }
                _ => continue,
            };
            let Some(name) = o.metadata().get("name").and_then(Value::as_str) else {
                tracing::warn!(source = %o.source, "role without a name skipped");
                continue;
            };
            let rules = o
                .value
                .get("rules")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Rule::from_value).collect())
                .unwrap_or_default();
            let id = match ns {
                Some(ns) => format!("{ns}/Role/{name}"),
                None => format!("ClusterRole/{name}"),
            };
            if index.insert((ns, name), rbac.roles.len()).is_some() {
                tracing::warn!(role = %id, source = %o.source, "role defined twice; the last one wins");
            }
            labels.push(if is_cluster {
                crate::workloads::str_map(o.metadata().get("labels"))
            } else {
                Labels::new()
            });
            aggregation.push(if is_cluster {
                o.value
                    .get("aggregationRule")
                    .and_then(|a| a.get("clusterRoleSelectors"))
                    .and_then(Value::as_array)
                    .map(|a| aggregation_selectors(&id, a))
            } else {
                None
            });
            rbac.roles.push(RoleDef { id, rules });
        }
        rbac.aggregate(&labels, &aggregation);

        let mut dangling: Vec<Gap> = Vec::new();
        let no_roles = rbac.roles.is_empty();
        for o in objects {
            let (ns, kind) = match o.kind() {
                "ClusterRoleBinding" => (None, "ClusterRoleBinding"),
                "RoleBinding" => (Some(o.namespace().unwrap_or("default")), "RoleBinding"),
                _ => continue,
            };
            let name = o.name();
            let id = match ns {
                Some(ns) => format!("{ns}/{kind}/{name}"),
                None => format!("{kind}/{name}"),
            };
            let role_ref = o.value.get("roleRef");
            let ref_kind = role_ref
                .and_then(|r| r.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let ref_name = role_ref
                .and_then(|r| r.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let (role_id, role) = match (ref_kind, ns) {
                ("ClusterRole", _) => (
                    format!("ClusterRole/{ref_name}"),
                    index.get(&(None, ref_name)).copied(),
                ),
                ("Role", Some(ns)) => (
                    format!("{ns}/Role/{ref_name}"),
                    index.get(&(Some(ns), ref_name)).copied(),
                ),
                _ => {
                    tracing::warn!(binding = %id, source = %o.source, kind = ref_kind,
                        "binding with an invalid roleRef skipped");
                    continue;
                }
            };
            let mut role = role;
            if role.is_none() && !no_roles {
                dangling.push(dangling_gap(&id, &role_id));
            }
            if role.is_none() && role_id == "ClusterRole/cluster-admin" {
                role = Some(rbac.roles.len());
                rbac.roles.push(RoleDef {
                    id: role_id.clone(),
                    rules: builtin_cluster_admin(),
                });
            }
            let subjects: Vec<Subject> = o
                .value
                .get("subjects")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| parse_subject(s, ns)).collect())
                .unwrap_or_default();
            let at = rbac.bindings.len();
            for s in &subjects {
                let list = rbac.by_subject.entry(s.clone()).or_default();
                if list.last() != Some(&at) {
                    list.push(at);
                }
            }
            rbac.bindings.push(BindingDef {
                id,
                namespace: ns.map(str::to_string),
                role_id,
                role,
                subjects,
            });
        }
        if no_roles && !rbac.bindings.is_empty() {
            rbac.gaps.push(Gap {
                id: "dangling-role:*".to_string(),
                what: format!(
                    "{} bindings refer to roles, and the input holds no Role or ClusterRole",
                    rbac.bindings.len()
                ),
                impact: "Permissions granted by bindings cannot be resolved (only \
                         ClusterRole/cluster-admin is assumed to be Kubernetes' built-in): \
                         every subject's permissions may be understated, and who-can answers \
                         are incomplete."
                    .to_string(),
                pillars: vec![Pillar::Identity],
            });
        } else if dangling.len() > MAX_DANGLING_GAPS {
            let more = dangling.len() - MAX_DANGLING_GAPS;
            dangling.truncate(MAX_DANGLING_GAPS);
            dangling.push(Gap {
                id: "dangling-role:+more".to_string(),
                what: format!("{more} more bindings refer to roles not in the input"),
                impact: "The permissions of their subjects may be understated.".to_string(),
                pillars: vec![Pillar::Identity],
            });
        }
        rbac.gaps.extend(dangling);
        rbac
    }

    /// Resolve aggregated ClusterRoles: each gets the union (without
    /// duplicates) of its own rules (a dump already holds what the
    /// controller filled in) and the effective rules of every other
    /// ClusterRole its selectors match, recursively.
    fn aggregate(&mut self, labels: &[Labels], aggregation: &[Option<Vec<Selector>>]) {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            New,
            Busy,
            Done,
        }
        fn visit(
            i: usize,
            roles: &mut [RoleDef],
            labels: &[Labels],
            aggregation: &[Option<Vec<Selector>>],
            state: &mut [State],
        ) {
            if state[i] != State::New {
                if state[i] == State::Busy {
                    tracing::warn!(role = %roles[i].id, "aggregation cycle cut");
                }
                return;
            }
            let Some(selectors) = &aggregation[i] else {
                state[i] = State::Done;
                return;
            };
            state[i] = State::Busy;
            let members: Vec<usize> = (0..roles.len())
                .filter(|&j| {
                    j != i
                        && roles[j].id.starts_with("ClusterRole/")
                        && selectors.iter().any(|s| s.matches(&labels[j]))
                })
                .collect();
            let mut rules = roles[i].rules.clone();
            let mut seen: HashSet<Rule> = rules.iter().cloned().collect();
            for j in members {
                visit(j, roles, labels, aggregation, state);
                for r in &roles[j].rules {
                    if seen.insert(r.clone()) {
                        rules.push(r.clone());
                    }
                }
            }
            roles[i].rules = rules;
            state[i] = State::Done;
        }
        let mut state = vec![State::New; self.roles.len()];
        for i in 0..self.roles.len() {
            visit(i, &mut self.roles, labels, aggregation, &mut state);
        }
    }

    /// Bindings that point to missing roles, and other holes.
    pub fn gaps(&self) -> Vec<Gap> {
        self.gaps.clone()
    }

    /// Every subject named in a binding, sorted.
    pub fn subjects(&self) -> Vec<Subject> {
        let mut v: Vec<Subject> = self.by_subject.keys().cloned().collect();
        v.sort_by(|a, b| subject_order(a).cmp(&subject_order(b)));
        v
    }

    /// ServiceAccount objects of the input, sorted.
    pub fn service_accounts(&self) -> Vec<Subject> {
        self.service_accounts.iter().cloned().collect()
    }

    /// Whether a ServiceAccount object of this subject is in the input.
    pub fn service_account_exists(&self, subject: &Subject) -> bool {
        self.service_accounts.contains(subject)
    }

    /// Whether any Role or ClusterRole was in the input.
    pub fn has_roles(&self) -> bool {
        !self.roles.is_empty()
    }

    /// Every binding: id, the role it refers to, whether that role was
    /// found, and its subjects (for the identity-to-permission graph).
    pub fn bindings(&self) -> Vec<BindingInfo<'_>> {
        self.bindings
            .iter()
            .map(|b| BindingInfo {
                id: &b.id,
                role: &b.role_id,
                resolved: b.role.is_some(),
                subjects: &b.subjects,
            })
            .collect()
    }

    /// Bindings that name this subject directly, by id.
    pub fn bindings_of(&self, subject: &Subject) -> Vec<&str> {
        self.by_subject
            .get(subject)
            .map(|v| v.iter().map(|&b| self.bindings[b].id.as_str()).collect())
            .unwrap_or_default()
    }

    /// Effective permissions of a subject, including those of the groups it
    /// is implicitly in (`system:serviceaccounts`, ...): one per (binding,
    /// role rule). `Group:system:masters` gets one permission of
    /// everything, since its members bypass RBAC.
    pub fn permissions(&self, subject: &Subject) -> Vec<Permission> {
        let mut out = Vec::new();
        if subject.kind == SubjectKind::Group && subject.name == MASTERS {
            out.push(masters_permission());
        }
        self.push_bindings(subject, None, &mut out);
        for g in implicit_groups(subject) {
            self.push_bindings(&Subject::group(&g), Some(&g), &mut out);
        }
        out
    }

    fn push_bindings(&self, subject: &Subject, via: Option<&str>, out: &mut Vec<Permission>) {
        let Some(bindings) = self.by_subject.get(subject) else {
            return;
        };
        for &b in bindings {
            let binding = &self.bindings[b];
            let Some(role) = binding.role else { continue };
            for rule in &self.roles[role].rules {
                if let Some(p) = permission(binding, &self.roles[role], rule, via) {
                    out.push(p);
                }
            }
        }
    }

    /// Who can do what the query asks, sorted by subject. Groups are listed
    /// as subjects (set [`AccessQuery::expand_groups`] for their members).
    pub fn who_can(&self, q: &AccessQuery) -> Vec<WhoCan> {
        let mut found: BTreeMap<Subject, Vec<(Permission, bool)>> = BTreeMap::new();
        if q.resource.starts_with('/') {
            self.who_can_url(q, &mut found);
        } else {
            let spec = ResourceSpec::parse(&q.resource);
            let cluster_only = is_cluster_scoped(&spec.resource);
            for binding in &self.bindings {
                let Some(role) = binding.role else { continue };
                if let Some(ns) = &binding.namespace {
                    if cluster_only || q.namespace.as_ref().is_some_and(|qn| qn != ns) {
                        continue;
                    }
                }
                for rule in &self.roles[role].rules {
                    let restricted = match rule_matches(rule, q, &spec) {
                        RuleMatch::No => continue,
                        RuleMatch::Yes => false,
                        RuleMatch::Restricted => true,
                    };
                    let Some(p) = permission(binding, &self.roles[role], rule, None) else {
                        continue;
                    };
                    for s in &binding.subjects {
                        found
                            .entry(s.clone())
                            .or_default()
                            .push((p.clone(), restricted));
                    }
                }
            }
        }
        let masters = Subject::group(MASTERS);
        if self.by_subject.contains_key(&masters) {
            found
                .entry(masters)
                .or_default()
                .insert(0, (masters_permission(), false));
        }
        if q.expand_groups {
            self.expand(&mut found);
        }
        let mut out: Vec<WhoCan> = found
            .into_iter()
            .map(|(subject, grants)| {
                let restricted_to = if grants.iter().all(|(_, r)| *r) {
                    let names: BTreeSet<&String> = grants
                        .iter()
                        .flat_map(|(p, _)| p.resource_names.iter())
                        .collect();
                    Some(names.into_iter().cloned().collect())
                } else {
                    None
                };
                WhoCan {
                    subject,
                    via: grants.into_iter().map(|(p, _)| p).collect(),
                    restricted_to,
                }
            })
            .collect();
        out.sort_by(|a, b| subject_order(&a.subject).cmp(&subject_order(&b.subject)));
        out
    }

    fn who_can_url(&self, q: &AccessQuery, found: &mut BTreeMap<Subject, Vec<(Permission, bool)>>) {
        for binding in self.bindings.iter().filter(|b| b.namespace.is_none()) {
            let Some(role) = binding.role else { continue };
            for rule in &self.roles[role].rules {
                if verb_matches(&rule.verbs, &q.verb)
                    && url_matches(&rule.non_resource_urls, &q.resource)
                {
                    if let Some(p) = permission(binding, &self.roles[role], rule, None) {
                        for s in &binding.subjects {
                            found.entry(s.clone()).or_default().push((p.clone(), false));
                        }
                    }
                }
            }
        }
    }

    /// Add the known members of implicit groups found in `found`.
    fn expand(&self, found: &mut BTreeMap<Subject, Vec<(Permission, bool)>>) {
        let mut members: BTreeSet<Subject> = self.service_accounts.clone();
        members.extend(
            self.by_subject
                .keys()
                .filter(|s| s.kind != SubjectKind::Group)
                .cloned(),
        );
        let groups: Vec<(Subject, Vec<(Permission, bool)>)> = found
            .iter()
            .filter(|(s, _)| s.kind == SubjectKind::Group)
            .map(|(s, g)| (s.clone(), g.clone()))
            .collect();
        for m in &members {
            let mine = implicit_groups(m);
            for (g, grants) in &groups {
                if !mine.contains(&g.name) {
                    continue;
                }
                let entry = found.entry(m.clone()).or_default();
                for (p, r) in grants {
                    let mut p = p.clone();
                    p.via_group = Some(g.name.clone());
                    entry.push((p, *r));
                }
            }
        }
    }
}

/// The permission a rule of a role grants through a binding; `None` when
/// the rule grants nothing in that scope (non-resource URLs bound in a
/// namespace).
fn permission(
    binding: &BindingDef,
    role: &RoleDef,
    rule: &Rule,
    via: Option<&str>,
) -> Option<Permission> {
    let namespaced = binding.namespace.is_some();
    if namespaced && rule.resources.is_empty() {
        return None;
    }
    if rule.resources.is_empty() && rule.non_resource_urls.is_empty() {
        return None;
    }
    Some(Permission {
        scope: binding.scope(),
        verbs: rule.verbs.clone(),
        api_groups: rule.api_groups.clone(),
        resources: rule.resources.clone(),
        resource_names: rule.resource_names.clone(),
        non_resource_urls: if namespaced {
            Vec::new()
        } else {
            rule.non_resource_urls.clone()
        },
        binding: binding.id.clone(),
        role: role.id.clone(),
        via_group: via.map(str::to_string),
    })
}

fn masters_permission() -> Permission {
    let all = || vec!["*".to_string()];
    Permission {
        scope: Scope::Cluster,
        verbs: all(),
        api_groups: all(),
        resources: all(),
        resource_names: Vec::new(),
        non_resource_urls: all(),
        binding: "(none)".to_string(),
        role: MASTERS_ROLE.to_string(),
        via_group: None,
    }
}

fn dangling_gap(binding: &str, role: &str) -> Gap {
    let assumed = if role == "ClusterRole/cluster-admin" {
        " It is assumed to be Kubernetes' built-in cluster-admin (every verb on everything)."
    } else {
        ""
    };
    Gap {
        id: format!("dangling-role:{binding}"),
        what: format!("{binding} refers to {role}, which is not in the input"),
        impact: format!(
            "The permissions {binding} grants are unknown: its subjects' permissions may be \
             understated, and who-can answers may miss them.{assumed}"
        ),
        pillars: vec![Pillar::Identity],
    }
}

/// Whether a permission allows `verb` on `group`/`resource` (with an
/// optional subresource) for some object; names ignored.
pub fn allows(p: &Permission, verb: &str, group: &str, resource: &str) -> bool {
    // Called for every permission of every identity: no allocation.
    let (main, sub) = match resource.split_once('/') {
        Some((m, s)) => (m, Some(s)),
        None => (resource, None),
    };
    verb_matches(&p.verbs, verb)
        && group_matches(&p.api_groups, Some(group))
        && p.resources.iter().any(|r| {
            r == "*" || r == resource || sub.is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
        })
        && !(p.scope != Scope::Cluster && is_cluster_scoped(main))
}

/// Whether `p` grants everything `q` grants (same scope or wider, verbs,
/// groups, resources and names at least as wide). Conservative: a `false`
/// may be a rule covered only by several rules together.
pub fn covers(p: &Permission, q: &Permission) -> bool {
    let scope_ok = p.scope == Scope::Cluster || p.scope == q.scope;
    let wide = |have: &[String], want: &[String]| {
        have.iter().any(|h| h == "*") || want.iter().all(|w| have.contains(w))
    };
    let resources_ok = p.resources.iter().any(|r| r == "*")
        || q.resources.iter().all(|w| {
            p.resources.contains(w)
                || w.split_once('/').is_some_and(|(_, sub)| {
                    p.resources
                        .iter()
                        .any(|r| r.strip_prefix("*/") == Some(sub))
                })
        });
    let names_ok = p.resource_names.is_empty()
        || (!q.resource_names.is_empty()
            && q.resource_names
                .iter()
                .all(|n| p.resource_names.contains(n)));
    let urls_ok = q.non_resource_urls.is_empty()
        || (p.scope == Scope::Cluster
            && q.non_resource_urls
                .iter()
                .all(|u| url_matches(&p.non_resource_urls, u)));
    scope_ok
        && wide(&p.verbs, &q.verbs)
        && (q.resources.is_empty() || (wide(&p.api_groups, &q.api_groups) && resources_ok))
        && names_ok
        && urls_ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rbac(text: &str) -> Rbac {
        let (objs, errs) = keycard_k8s::parse_str("t.yaml", text, &Default::default());
        assert!(errs.is_empty(), "{errs:?}");
        Rbac::from_objects(&objs)
    }

    fn who(r: &Rbac, q: &AccessQuery) -> Vec<String> {
        r.who_can(q).iter().map(|w| w.subject.to_string()).collect()
    }

    const BASE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: edit}
rules:
- {apiGroups: ["", apps], resources: [pods, deployments, "*/scale"], verbs: [get, create]}
- {nonResourceURLs: ["/metrics"], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dev-edit, namespace: dev}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects:
- {kind: ServiceAccount, name: builder}
- {kind: User, name: "system:serviceaccount:ops:bot"}
"#;

    #[test]
    fn rolebinding_of_a_clusterrole_grants_only_in_its_namespace() {
        let r = rbac(BASE);
        let q = AccessQuery::new("create", "deployments");
        assert_eq!(
            who(&r, &q.clone().in_namespace("dev")),
            ["ServiceAccount:dev/builder", "ServiceAccount:ops/bot"]
        );
        assert!(who(&r, &q.clone().in_namespace("prod")).is_empty());
        assert_eq!(who(&r, &q).len(), 2);
        // Non-resource URLs never come through a RoleBinding.
        assert!(who(&r, &AccessQuery::new("get", "/metrics")).is_empty());
        let p = r.permissions(&Subject::service_account("dev", "builder"));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].scope, Scope::Namespace("dev".into()));
    }

    #[test]
    fn star_subresource_and_groups() {
        let r = rbac(BASE);
        let dev = |res: &str| who(&r, &AccessQuery::new("get", res).in_namespace("dev")).len();
        assert_eq!(dev("deployments/scale"), 2);
        assert_eq!(dev("deployments.apps"), 2);
        assert_eq!(dev("deployments.extensions"), 0);
        assert_eq!(dev("pods/exec"), 0);
        assert_eq!(dev("deployments/status"), 0);
        assert_eq!(who(&r, &AccessQuery::new("delete", "pods")).len(), 0);
    }

    #[test]
    fn resource_spec_parsing() {
        assert_eq!(
            ResourceSpec::parse("pods/exec"),
            ResourceSpec {
                resource: "pods".into(),
                subresource: Some("exec".into()),
                group: Some(String::new())
            }
        );
        assert_eq!(
            ResourceSpec::parse("deployments").group.as_deref(),
            Some("apps")
        );
        assert_eq!(
            ResourceSpec::parse("widgets.example.com/status")
                .group
                .as_deref(),
            Some("example.com")
        );
        assert_eq!(ResourceSpec::parse("widgets").group, None);
    }

    #[test]
    fn selectors() {
        let sel = Selector::parse(&serde_json::json!({
            "matchLabels": {"a": "1"},
            "matchExpressions": [
                {"key": "b", "operator": "In", "values": ["x", "y"]},
                {"key": "c", "operator": "NotIn", "values": ["z"]},
                {"key": "d", "operator": "Exists"},
                {"key": "e", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        let l = |v: serde_json::Value| -> Labels {
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        };
        assert!(sel.matches(&l(serde_json::json!({"a": "1", "b": "y", "d": ""}))));
        assert!(!sel.matches(&l(
            serde_json::json!({"a": "1", "b": "y", "d": "", "c": "z"})
        )));
        assert!(!sel.matches(&l(
            serde_json::json!({"a": "1", "b": "y", "d": "", "e": "1"})
        )));
        assert!(!sel.matches(&l(serde_json::json!({"a": "1", "b": "q", "d": ""}))));
        assert!(!sel.matches(&l(serde_json::json!({"a": "1", "b": "y"}))));
        assert!(!sel.matches(&Labels::new()));
    }

    #[test]
    fn aggregation_cycles_terminate_and_dedupe() {
        let r = rbac(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: a, labels: {agg: "yes"}}
aggregationRule: {clusterRoleSelectors: [{matchLabels: {agg: "yes"}}]}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: b, labels: {agg: "yes"}}
aggregationRule: {clusterRoleSelectors: [{matchLabels: {agg: "yes"}}]}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}, {apiGroups: [""], resources: [secrets], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: x}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: a}
subjects: [{kind: User, name: alice}]
"#,
        );
        let p = r.permissions(&Subject::user("alice"));
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn resource_names_restrict_and_create_is_never_named() {
        let r = rbac(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: one, namespace: app}
rules: [{apiGroups: [""], resources: [secrets], resourceNames: [db], verbs: [get, create]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: one, namespace: app}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: one}
subjects: [{kind: ServiceAccount, name: api}]
"#,
        );
        let q = AccessQuery::new("get", "secrets").in_namespace("app");
        let w = r.who_can(&q);
        assert_eq!(w[0].restricted_to, Some(vec!["db".to_string()]));
        assert_eq!(r.who_can(&q.clone().named("db"))[0].restricted_to, None);
        assert!(r.who_can(&q.named("other")).is_empty());
        assert!(r
            .who_can(&AccessQuery::new("create", "secrets").in_namespace("app"))
            .is_empty());
    }

    #[test]
    fn no_roles_at_all_is_one_gap() {
        let r = rbac(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: a, namespace: x}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: User, name: a}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: b}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: User, name: b}]
"#,
        );
        let gaps = r.gaps();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].id, "dangling-role:*");
        // cluster-admin is still assumed.
        assert_eq!(who(&r, &AccessQuery::new("delete", "nodes")), ["User:b"]);
    }

    #[test]
    fn covers_is_conservative() {
        let base = Permission {
            scope: Scope::Namespace("a".into()),
            verbs: vec!["get".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            resource_names: vec![],
            non_resource_urls: vec![],
            binding: String::new(),
            role: String::new(),
            via_group: None,
        };
        let mut wider = base.clone();
        wider.verbs = vec!["*".into()];
        wider.scope = Scope::Cluster;
        assert!(covers(&wider, &base));
        assert!(!covers(&base, &wider));
        let mut other_ns = base.clone();
        other_ns.scope = Scope::Namespace("b".into());
        assert!(!covers(&other_ns, &base));
        let mut named = base.clone();
        named.resource_names = vec!["x".into()];
        assert!(covers(&base, &named));
        assert!(!covers(&named, &base));
    }
}
