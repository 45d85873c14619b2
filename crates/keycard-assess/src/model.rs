//! The assessment as data: what every stage produces and every report
//! renders. The JSON report is this structure serialised, and
//! `keycard assess diff` reads it back, so field names are a contract
//! (`schema` names its version).

use std::collections::BTreeMap;
use std::fmt;

use keycard_core::Severity;
use serde::{Deserialize, Serialize};

/// The version of the JSON form of [`Assessment`].
pub const SCHEMA: &str = "keycard.dev/assessment/v1";

/// One assessment of one cluster (or set of manifests).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assessment {
    pub schema: String,
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub keycard_version: String,
    pub source: SourceInfo,
    /// What the input let the assessment see, and what it did not.
    pub coverage: Coverage,
    pub inventory: Inventory,
    pub findings: Vec<Finding>,
    pub maturity: Maturity,
    pub compliance: Vec<ControlEvidence>,
    pub summary: Summary,
}

/// Where the objects came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceInfo {
    pub kind: SourceKind,
    /// Files or directories read, or the kubeconfig context and server.
    pub locations: Vec<String>,
    pub objects: usize,
    /// Objects per kind (`apps/v1 Deployment` style keys are not used: the
    /// kind alone).
    pub by_kind: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A `kubectl get -o yaml|json` dump (a `List`, or objects with status).
    #[default]
    Dump,
    /// A directory of manifests (what would be applied).
    Manifests,
    /// The live API, through a kubeconfig.
    Live,
}

/// What the assessment could and could not see, and what that does to its
/// conclusions. A conclusion drawn without the data it needs is not a
/// conclusion: each gap names the pillars and findings it limits, and the
/// maturity of a pillar whose evidence is missing is capped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Coverage {
    /// Kinds present in the input.
    pub seen: Vec<String>,
    pub gaps: Vec<Gap>,
    /// Files, documents or objects that could not be used (file and line).
    pub input_errors: Vec<InputProblem>,
    /// Kinds (with API version) the assessment does not know and skipped.
    pub unknown_kinds: Vec<String>,
}

impl Coverage {
    /// Whether nothing the assessment needs was missing.
    pub fn complete(&self) -> bool {
        self.gaps.is_empty()
    }

    /// Whether a gap limits this pillar.
    pub fn limits(&self, pillar: Pillar) -> bool {
        self.gaps.iter().any(|g| g.pillars.contains(&pillar))
    }
}

/// Something the assessment needed and did not get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Stable key: `missing-kind:ClusterRoleBinding`, `forbidden:secrets`,
    /// `unreachable-api`, `dangling-role:ns/RoleBinding/x`, ...
    pub id: String,
    /// What was not seen, in words.
    pub what: String,
    /// How that limits the conclusions, in words.
    pub impact: String,
    pub pillars: Vec<Pillar>,
}

/// A file, document or object that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputProblem {
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

// ---------------------------------------------------------------- inventory

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub identities: Vec<Identity>,
    pub workloads: Vec<WorkloadInfo>,
    pub data_stores: Vec<DataStore>,
    pub namespaces: Vec<NamespaceInfo>,
}

/// A subject RBAC can grant to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SubjectKind {
    ServiceAccount,
    User,
    Group,
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubjectKind::ServiceAccount => "ServiceAccount",
            SubjectKind::User => "User",
            SubjectKind::Group => "Group",
        })
    }
}

/// A subject: `ServiceAccount` has a namespace, `User` and `Group` don't.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subject {
    pub kind: SubjectKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Subject {
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Subject {
            kind: SubjectKind::ServiceAccount,
            name: name.to_string(),
            namespace: Some(namespace.to_string()),
        }
    }
    pub fn user(name: &str) -> Self {
        Subject {
            kind: SubjectKind::User,
            name: name.to_string(),
            namespace: None,
        }
    }
    pub fn group(name: &str) -> Self {
        Subject {
            kind: SubjectKind::Group,
            name: name.to_string(),
            namespace: None,
        }
    }
}

/// `ServiceAccount:ns/name`, `User:alice`, `Group:system:masters`: the
/// stable id used across the report.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}:{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}:{}", self.kind, self.name),
        }
    }
}

/// What an identity is for, recognised from its name, namespace, bindings
/// and the workloads that run as it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityCategory {
    /// A person (a User that is not a system identity).
    Human,
    /// A group of people or identities.
    Group,
    /// A CI system (GitHub Actions, GitLab runner, Jenkins, Tekton, ...).
    Ci,
    /// A GitOps controller (Argo CD, Flux).
    Gitops,
    /// An application workload's service account.
    Workload,
    /// A cluster component (`system:` names, kube-system controllers).
    System,
    /// Named in a binding, nothing else known.
    Unknown,
}

/// One identity with everything RBAC lets it do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// `Subject`'s display form.
    pub id: String,
    pub subject: Subject,
    pub category: IdentityCategory,
    /// Why the category was chosen ("name matches argocd-*", "bound to ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_reason: Option<String>,
    /// Whether the ServiceAccount object exists (always true for users and
    /// groups, which Kubernetes does not store).
    pub exists: bool,
    /// Effective permissions, one per (binding, role rule).
    pub permissions: Vec<Permission>,
    /// Workload ids (`ns/Kind/name`) that run as this identity.
    pub workloads: Vec<String>,
    /// Secrets it can read: `ns/*` for every secret of a namespace, `*/*`
    /// for all, `ns/name` for one.
    pub secrets_readable: Vec<String>,
    /// Holds `*` on `*` cluster-wide, directly or through a group.
    pub cluster_admin: bool,
    /// Ways it could gain more than it was given (escalate, bind,
    /// impersonate, create pods with a more privileged service account, ...).
    pub escalation_paths: Vec<String>,
}

/// Namespace scope of a permission.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "scope", content = "namespace")]
pub enum Scope {
    Cluster,
    Namespace(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster => f.write_str("cluster-wide"),
            Scope::Namespace(ns) => write!(f, "namespace {ns}"),
        }
    }
}

/// One RBAC rule as granted to one subject through one binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub scope: Scope,
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// `pods`, `pods/exec`, `*`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
    /// `ClusterRoleBinding/name` or `ns/RoleBinding/name`.
    pub binding: String,
    /// `ClusterRole/name` or `ns/Role/name`.
    pub role: String,
    /// Through which group, when the binding names a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_group: Option<String>,
}

/// One workload and the identity it runs as.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadInfo {
    /// `ns/Kind/name`.
    pub id: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    /// Whether a service-account token is mounted into its pods
    /// (`automountServiceAccountToken` of the pod, else of the account,
    /// else Kubernetes' default: true).
    pub token_mounted: bool,
    /// Whether its identity holds any permission beyond discovery.
    pub identity_has_permissions: bool,
    /// Secrets mounted as volumes or read into env (`ns/name`).
    pub secrets_mounted: Vec<String>,
    /// Secrets its identity can read through RBAC.
    pub secrets_readable: Vec<String>,
    pub privileged: bool,
    /// hostNetwork / hostPID / hostIPC, those set.
    pub host_namespaces: Vec<String>,
    /// Exposed outside the cluster (LoadBalancer / NodePort Service,
    /// Ingress, hostPort, hostNetwork).
    pub exposed: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Whether owner and data-classification labels are set.
    pub has_owner: bool,
    pub has_data_classification: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// A workload recognised as a data store, and who can reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataStore {
    /// The workload id.
    pub workload: String,
    /// `postgresql`, `mysql`, `mongodb`, `redis`, ...
    pub engine: String,
    /// How it was recognised (image, port, label).
    pub recognised_by: String,
    pub ports: Vec<u16>,
    /// Workloads that NetworkPolicy lets reach it, with the ports.
    pub reachable_from: Vec<Reach>,
    /// Reachable from outside the cluster (an ipBlock or no isolation).
    pub reachable_from_outside: bool,
    /// A NetworkPolicy selects it for ingress, so only what a policy allows
    /// reaches it (false: every pod can).
    pub isolated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    pub workload: String,
    /// `TCP 5432`, `All Connections`, in netpol-analyzer's notation.
    pub ports: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceInfo {
    pub name: String,
    /// Whether the Namespace object itself was in the input.
    pub exists: bool,
    pub default_deny_ingress: bool,
    pub default_deny_egress: bool,
    pub workloads: usize,
    /// `pod-security.kubernetes.io/enforce` label, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<String>,
}

// ----------------------------------------------------------------- findings

/// The five pillars of the CISA Zero Trust Maturity Model v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pillar {
    Identity,
    Devices,
    Networks,
    ApplicationsAndWorkloads,
    Data,
}

impl Pillar {
    pub const ALL: [Pillar; 5] = [
        Pillar::Identity,
        Pillar::Devices,
        Pillar::Networks,
        Pillar::ApplicationsAndWorkloads,
        Pillar::Data,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pillar::Identity => "Identity",
            Pillar::Devices => "Devices",
            Pillar::Networks => "Networks",
            Pillar::ApplicationsAndWorkloads => "Applications and Workloads",
            Pillar::Data => "Data",
        }
    }
}

impl fmt::Display for Pillar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// One legacy trust assumption found in the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    /// Stable across runs: `rule` + `@` + `resource`. `assess diff` matches
    /// findings by it.
    pub id: String,
    /// `zt-assess-no-default-deny`, or the `keycard check` rule id when the
    /// finding comes from a policy pack (`zt-privileged`).
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub pillar: Pillar,
    /// `network`, `static-credentials`, `workload-privilege`, `rbac`,
    /// `exposure`, `ownership`, `token`.
    pub category: String,
    /// `ns/Kind/name`, `Kind/name` for cluster-scoped objects, or a subject
    /// id for identity findings.
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What was seen, one statement per line ("RoleBinding dev/x grants
    /// ClusterRole/admin to Group:devs").
    pub evidence: Vec<String>,
    pub remediation: String,
    /// Framework to control ids: `iso27001`, `soc2`, `gdpr`, `cis`, ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub controls: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl Finding {
    pub fn make_id(rule: &str, resource: &str) -> String {
        format!("{rule}@{resource}")
    }
}

// ----------------------------------------------------------------- maturity

/// CISA ZTMM v2 stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Traditional,
    Initial,
    Advanced,
    Optimal,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::Traditional,
        Stage::Initial,
        Stage::Advanced,
        Stage::Optimal,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Stage::Traditional => "Traditional",
            Stage::Initial => "Initial",
            Stage::Advanced => "Advanced",
            Stage::Optimal => "Optimal",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Maturity {
    pub pillars: Vec<PillarScore>,
    /// Lowest stage over the pillars that could be assessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall: Option<Stage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PillarScore {
    pub pillar: Pillar,
    pub stage: Stage,
    /// 0 to 100 within the model: 0 traditional with nothing in place,
    /// 100 optimal. Charts use it; the stage is the conclusion.
    pub score: u8,
    /// The criteria checked, each met or not, with what was seen.
    pub evidence: Vec<Evidence>,
    /// What would raise the stage, most effective first.
    pub next_steps: Vec<String>,
    /// Coverage gaps that cap or limit this score (gap ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limited_by: Vec<String>,
    /// False when the input holds nothing this pillar can be judged on.
    pub assessed: bool,
}

/// One criterion of a pillar's stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evidence {
    /// The stage this criterion belongs to.
    pub stage: Stage,
    pub criterion: String,
    pub met: bool,
    /// What was seen ("3 of 7 namespaces have a default-deny policy").
    pub detail: String,
}

// --------------------------------------------------------------- compliance

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framework {
    /// ISO/IEC 27001:2022 Annex A.
    Iso27001,
    /// SOC 2 Trust Services Criteria, CC6 and CC7.
    Soc2,
    /// GDPR Articles 25 and 32.
    Gdpr,
}

impl Framework {
    pub fn title(self) -> &'static str {
        match self {
            Framework::Iso27001 => "ISO/IEC 27001:2022 Annex A",
            Framework::Soc2 => "SOC 2 (CC6, CC7)",
            Framework::Gdpr => "GDPR",
        }
    }
    /// The key used in [`Finding::controls`].
    pub fn key(self) -> &'static str {
        match self {
            Framework::Iso27001 => "iso27001",
            Framework::Soc2 => "soc2",
            Framework::Gdpr => "gdpr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlStatus {
    /// The evidence supports the control and nothing contradicts it.
    Supported,
    /// Some evidence supports it, some findings contradict it.
    Partial,
    /// Findings contradict it and nothing supports it.
    Contradicted,
    /// The input holds nothing to judge it on.
    NotAssessed,
}

/// One control of one framework with the evidence for and against it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlEvidence {
    pub framework: Framework,
    /// `A.5.15`, `CC6.1`, `Art. 32(1)(b)`.
    pub control: String,
    pub title: String,
    pub status: ControlStatus,
    /// Statements that support the control.
    pub supporting: Vec<String>,
    /// Finding ids that contradict it.
    pub contradicting: Vec<String>,
}

// ------------------------------------------------------------------ summary

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub identities: usize,
    pub workloads: usize,
    pub namespaces: usize,
    pub data_stores: usize,
    /// Findings per severity (`critical`, `high`, ...).
    pub findings_by_severity: BTreeMap<String, usize>,
    pub findings_by_pillar: BTreeMap<String, usize>,
    pub cluster_admins: Vec<String>,
}

impl Summary {
    pub fn compute(inventory: &Inventory, findings: &[Finding]) -> Summary {
        let mut s = Summary {
            identities: inventory.identities.len(),
            workloads: inventory.workloads.len(),
            namespaces: inventory.namespaces.len(),
            data_stores: inventory.data_stores.len(),
            ..Summary::default()
        };
        for sev in Severity::ALL {
            s.findings_by_severity.insert(sev.to_string(), 0);
        }
        for f in findings {
            *s.findings_by_severity
                .entry(f.severity.to_string())
                .or_default() += 1;
            *s.findings_by_pillar
                .entry(
                    serde_json::to_value(f.pillar)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                )
                .or_default() += 1;
        }
        s.cluster_admins = inventory
            .identities
            .iter()
            .filter(|i| i.cluster_admin)
            .map(|i| i.id.clone())
            .collect();
        s
    }
}
