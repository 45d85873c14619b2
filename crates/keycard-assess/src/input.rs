//! The input of an assessment and what it covers.
//!
//! A conclusion drawn without the data it needs is not a conclusion: a dump
//! without RoleBindings cannot say who can read secrets, and a dump without
//! NetworkPolicies cannot say which namespaces deny by default. So before
//! any stage runs, [`coverage`] says which of the kinds the assessment
//! needs the input holds, and for each one it lacks, a [`Gap`] that names
//! the pillars it limits. How a missing kind is judged depends on where the
//! objects came from ([`SourceKind`]): a cluster dump is expected to hold
//! everything a cluster has (every cluster has ClusterRoles, ServiceAccounts
//! and a `kubernetes` Service), while a directory of manifests normally
//! holds no Secrets, and the live API lists every resource itself, so only
//! what it could not list (forbidden, unreachable) is a gap there.
//!
//! ```
//! use keycard_assess::{input, Input, Pillar, SourceKind};
//! let (objects, _) = keycard_k8s::parse_str(
//!     "pods.yaml",
//!     "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop, uid: '1'}\nspec: {containers: [{name: c, image: x}]}\n",
//!     &Default::default(),
//! );
//! let input = Input::from_objects(objects, SourceKind::Dump, vec!["pods.yaml".into()]);
//! let coverage = input::coverage(&input);
//! assert!(coverage.gaps.iter().any(|g| g.id == "missing-kind:RoleBinding"));
//! assert!(coverage.limits(Pillar::Identity));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use keycard_k8s::Object;
use serde_json::Value;

use crate::model::{Coverage, Gap, InputProblem, Pillar, SourceInfo, SourceKind};

/// Objects to assess, where they came from, and what went wrong reading them.
#[derive(Debug, Default)]
pub struct Input {
    pub objects: Vec<Object>,
    pub source: SourceInfo,
    pub problems: Vec<InputProblem>,
    /// Gaps found while reading (a forbidden or unreachable API).
    pub gaps: Vec<crate::model::Gap>,
}

impl Input {
    /// Objects already parsed (tests, the live API).
    pub fn from_objects(objects: Vec<Object>, kind: SourceKind, locations: Vec<String>) -> Input {
        let mut source = SourceInfo {
            kind,
            locations,
            objects: objects.len(),
            ..SourceInfo::default()
        };
        for o in &objects {
            *source.by_kind.entry(o.kind().to_string()).or_default() += 1;
        }
        Input {
            objects,
            source,
            ..Input::default()
        }
    }

    /// Read files and directories (`-` for stdin) with `keycard_k8s`.
    /// Whether the input is a cluster dump or a set of manifests is decided
    /// from the objects themselves ([`detect_source_kind`]).
    pub fn load<P: AsRef<Path>>(paths: &[P], opts: &keycard_k8s::LoadOptions) -> Input {
        let loaded = keycard_k8s::load_paths(paths, opts);
        let locations = paths
            .iter()
            .map(|p| p.as_ref().display().to_string())
            .collect();
        let kind = detect_source_kind(&loaded.objects);
        let mut input = Input::from_objects(loaded.objects, kind, locations);
        input.problems = loaded
            .errors
            .into_iter()
            .map(|e| InputProblem {
                file: e.file,
                line: e.line,
                message: e.message,
            })
            .collect();
        input
    }
}

/// Whether an object was read back from an API server: only the server
/// sets `uid`, `resourceVersion`, `creationTimestamp` and `managedFields`,
/// and writes `status`. Manifests meant to be applied carry none of them.
pub fn is_server_object(o: &Object) -> bool {
    let md = o.metadata();
    let set = |k: &str| {
        md.get(k)
            .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
    };
    set("uid")
        || set("resourceVersion")
        || set("creationTimestamp")
        || set("managedFields")
        || o.value
            .get("status")
            .and_then(Value::as_object)
            .is_some_and(|s| !s.is_empty())
}

/// A dump when at least half the objects were read back from a server
/// (`kubectl get -o yaml` gives every object a uid and resourceVersion,
/// whether it wraps them in a `List` or not); manifests otherwise. A `List`
/// wrapper alone says nothing: `kubectl apply` takes hand-written Lists.
/// An empty input counts as a dump, the stricter judgement.
pub fn detect_source_kind(objects: &[Object]) -> SourceKind {
    if objects.is_empty() {
        return SourceKind::Dump;
    }
    let server = objects.iter().filter(|o| is_server_object(o)).count();
    if server * 2 >= objects.len() {
        SourceKind::Dump
    } else {
        SourceKind::Manifests
    }
}

/// Kinds that carry a pod template: what the assessment calls workloads.
const WORKLOAD_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
];

/// One kind the assessment needs, the resource that lists it, and what its
/// absence does to the conclusions.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub kind: &'static str,
    /// The plural resource name the API and `kubectl get` use.
    pub resource: &'static str,
    /// What the assessment reads from these objects.
    pub used_for: &'static str,
    /// Pillars whose conclusions need it.
    pub pillars: &'static [Pillar],
    /// Every running cluster has at least one of these, so a dump without
    /// any was not asked for them.
    pub always_in_cluster: bool,
}

use Pillar::{ApplicationsAndWorkloads as Apps, Data, Identity, Networks};

/// What the assessment needs, in the order gaps are reported.
pub const NEEDS: &[Need] = &[
    Need {
        kind: "ClusterRoleBinding",
        resource: "clusterrolebindings",
        used_for: "cluster-wide grants: cluster-admin holders, who can read every secret, escalation paths",
        pillars: &[Identity],
        always_in_cluster: true,
    },
    Need {
        kind: "RoleBinding",
        resource: "rolebindings",
        used_for: "namespace grants: \"who can\" answers, who can read a namespace's secrets or exec into its pods",
        pillars: &[Identity],
        always_in_cluster: true,
    },
    Need {
        kind: "ClusterRole",
        resource: "clusterroles",
        used_for: "what bindings to ClusterRoles grant (admin, edit, cluster-admin and aggregated roles)",
        pillars: &[Identity],
        always_in_cluster: true,
    },
    Need {
        kind: "Role",
        resource: "roles",
        used_for: "what RoleBindings to Roles grant",
        pillars: &[Identity],
        always_in_cluster: true,
    },
    Need {
        kind: "ServiceAccount",
        resource: "serviceaccounts",
        used_for: "the workload identities and their automountServiceAccountToken setting",
        pillars: &[Identity, Apps],
        always_in_cluster: true,
    },
    Need {
        kind: "NetworkPolicy",
        resource: "networkpolicies",
        used_for: "default-deny per namespace, east-west reach and who can reach the data stores",
        pillars: &[Networks, Data],
        always_in_cluster: false,
    },
    Need {
        kind: "Secret",
        resource: "secrets",
        used_for: "long-lived service-account token secrets and the secrets workloads mount (metadata and type only)",
        pillars: &[Identity, Data],
        always_in_cluster: false,
    },
    Need {
        kind: "Namespace",
        resource: "namespaces",
        used_for: "the namespace inventory, Pod Security labels and the labels NetworkPolicy namespaceSelectors match",
        pillars: &[Networks, Apps],
        always_in_cluster: true,
    },
    Need {
        kind: "Pod",
        resource: "pods",
        used_for: "the workloads, the identity each runs as, privileged and host-namespace pods",
        pillars: &[Apps, Networks, Data],
        always_in_cluster: true,
    },
    Need {
        kind: "Service",
        resource: "services",
        used_for: "public exposure (LoadBalancer and NodePort Services) and the ports of data stores",
        pillars: &[Apps, Networks],
        always_in_cluster: true,
    },
    Need {
        kind: "Ingress",
        resource: "ingresses",
        used_for: "public exposure through Ingresses",
        pillars: &[Apps],
        always_in_cluster: false,
    },
    Need {
        kind: "ConfigMap",
        resource: "configmaps",
        used_for: "credentials written into ConfigMaps",
        pillars: &[Data],
        always_in_cluster: true,
    },
];

/// The resources a dump must hold, in `kubectl get` order. `get all` holds
/// only pods, services, the workload controllers and HPAs.
pub const DUMP_RESOURCES: &[&str] = &[
    "namespaces",
    "pods",
    "replicationcontrollers",
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "jobs",
    "cronjobs",
    "services",
    "ingresses",
    "networkpolicies",
    "serviceaccounts",
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
    "secrets",
    "configmaps",
    "nodes",
];

/// The command that dumps what an assessment needs (Secrets' data stripped
/// is documented in `docs/assess-input.md`; the assessment never reads it).
pub fn dump_command() -> String {
    format!(
        "kubectl get {} -A -o yaml > cluster.yaml",
        DUMP_RESOURCES.join(",")
    )
}

/// A jq filter for `kubectl get ... -o json` output that drops what the
/// assessment never reads and nobody should hand around: Secrets' `data`
/// and `stringData`, and the `last-applied-configuration` annotation, which
/// holds a Secret's data a second time (for `kubectl apply`'d Secrets).
/// `type` and the rest of the metadata stay: long-lived token Secrets are
/// recognised by them. `managedFields` go from every object (bulk only).
pub const SECRET_STRIP_JQ: &str = r#".items |= map(del(.metadata.managedFields) | if .kind == "Secret" then del(.data, .stringData, .metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]) else . end)"#;

/// The dump command with Secrets' data stripped on the way ([`SECRET_STRIP_JQ`]).
pub fn dump_command_stripped() -> String {
    format!(
        "kubectl get {} -A -o json | jq '{}' > cluster.json",
        DUMP_RESOURCES.join(","),
        SECRET_STRIP_JQ
    )
}

/// The need for a kind, by kind or by resource name.
pub fn need_for(kind_or_resource: &str) -> Option<&'static Need> {
    NEEDS
        .iter()
        .find(|n| n.kind == kind_or_resource || n.resource == kind_or_resource)
}

/// The API versions a current Kubernetes serves for the kinds keycard knows.
/// A known kind at another version is either removed (listed in
/// [`removed_in`]) or unknown; either way its fields may not mean what the
/// assessment thinks they mean.
fn served_versions(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod"
        | "Service"
        | "Endpoints"
        | "Namespace"
        | "ServiceAccount"
        | "Secret"
        | "ConfigMap"
        | "PersistentVolume"
        | "PersistentVolumeClaim"
        | "Node"
        | "LimitRange"
        | "ResourceQuota"
        | "ReplicationController"
        | "PodTemplate" => &["v1"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => &["apps/v1"],
        "Job" | "CronJob" => &["batch/v1"],
        "Ingress" | "IngressClass" | "NetworkPolicy" => &["networking.k8s.io/v1"],
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => {
            &["rbac.authorization.k8s.io/v1"]
        }
        "EndpointSlice" => &["discovery.k8s.io/v1"],
        "StorageClass" | "CSIDriver" | "VolumeAttachment" => &["storage.k8s.io/v1"],
        "HorizontalPodAutoscaler" => &["autoscaling/v1", "autoscaling/v2"],
        "PodDisruptionBudget" => &["policy/v1"],
        "PriorityClass" => &["scheduling.k8s.io/v1"],
        "RuntimeClass" => &["node.k8s.io/v1"],
        "CustomResourceDefinition" => &["apiextensions.k8s.io/v1"],
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            &["admissionregistration.k8s.io/v1"]
        }
        "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding" => &[
            "admissionregistration.k8s.io/v1",
            "admissionregistration.k8s.io/v1beta1",
        ],
        "APIService" => &["apiregistration.k8s.io/v1"],
        "Lease" => &["coordination.k8s.io/v1"],
        "Event" => &["v1", "events.k8s.io/v1"],
        "CertificateSigningRequest" => &["certificates.k8s.io/v1"],
        "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" => {
            &["policy.networking.k8s.io/v1alpha1"]
        }
        "Gateway" | "HTTPRoute" | "GatewayClass" => &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
        ],
        _ => return None,
    })
}

/// The Kubernetes release that stopped serving a removed API version.
pub fn removed_in(api_version: &str, kind: &str) -> Option<&'static str> {
    Some(match (api_version, kind) {
        ("extensions/v1beta1", "NetworkPolicy") => "1.16",
        (
            "extensions/v1beta1" | "apps/v1beta1" | "apps/v1beta2",
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet",
        ) => "1.16",
        ("extensions/v1beta1" | "networking.k8s.io/v1beta1", "Ingress" | "IngressClass") => "1.22",
        ("rbac.authorization.k8s.io/v1beta1" | "rbac.authorization.k8s.io/v1alpha1", _) => "1.22",
        ("batch/v1beta1" | "batch/v2alpha1", "CronJob") => "1.25",
        ("policy/v1beta1", "PodDisruptionBudget" | "PodSecurityPolicy") => "1.25",
        ("discovery.k8s.io/v1beta1", "EndpointSlice") => "1.25",
        ("autoscaling/v2beta1", "HorizontalPodAutoscaler") => "1.25",
        ("autoscaling/v2beta2", "HorizontalPodAutoscaler") => "1.26",
        ("storage.k8s.io/v1beta1", "CSIDriver" | "StorageClass" | "VolumeAttachment") => "1.22",
        ("admissionregistration.k8s.io/v1beta1", _) => "1.22",
        ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition") => "1.22",
        ("scheduling.k8s.io/v1beta1" | "scheduling.k8s.io/v1alpha1", "PriorityClass") => "1.22",
        ("node.k8s.io/v1beta1", "RuntimeClass") => "1.25",
        ("certificates.k8s.io/v1beta1", "CertificateSigningRequest") => "1.22",
        ("coordination.k8s.io/v1beta1", "Lease") => "1.22",
        _ => return None,
    })
}

/// What the input covers.
pub fn coverage(input: &Input) -> Coverage {
    let mode = input.source.kind;
    // Per kind: objects, and objects per apiVersion the assessment does not
    // know (unknown kinds, or known kinds at a version no longer served).
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut unknown: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for o in &input.objects {
        let kind = o.kind();
        seen.insert(kind);
        let api = o.api_version();
        let known = keycard_k8s::is_known_kind(kind)
            && served_versions(kind).is_none_or(|v| v.contains(&api));
        if !known {
            *unknown.entry((api, kind)).or_default() += 1;
        }
    }
    let mut gaps = input.gaps.clone();
    let has = |k: &str| seen.contains(k);

    if mode != SourceKind::Live {
        let has_workloads = WORKLOAD_KINDS.iter().any(|k| has(k));
        let rbac_or_secrets_seen = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"]
            .iter()
            .chain(&["ServiceAccount", "NetworkPolicy", "Secret", "ConfigMap"])
            .any(|k| has(k));
        let get_all =
            mode == SourceKind::Dump && has_workloads && has("Service") && !rbac_or_secrets_seen;
        if get_all {
            gaps.push(Gap {
                id: "kubectl-get-all".into(),
                what: "the input looks like `kubectl get all` output: workloads and Services, but no RBAC objects, ServiceAccounts, NetworkPolicies, Secrets or ConfigMaps, which `get all` never includes".into(),
                impact: format!(
                    "identities, permissions, network isolation and static credentials cannot be judged; dump the cluster with: {} (docs/assess-input.md shows how to strip Secrets' data on the way)",
                    dump_command()
                ),
                pillars: vec![Identity, Networks, Data],
            });
        }
        for need in NEEDS {
            if let Some(gap) = missing_kind_gap(
                need,
                mode,
                &has,
                has_workloads,
                get_all,
                rbac_or_secrets_seen,
            ) {
                gaps.push(gap);
            }
        }
    }

    // Known workload kinds at API versions no longer served: their pod
    // template is still read, but the manifests cannot be applied to a
    // current cluster, so what runs is not what they say.
    for ((api, kind), n) in &unknown {
        if !WORKLOAD_KINDS.contains(kind) || !keycard_k8s::is_known_kind(kind) {
            continue;
        }
        let removed = removed_in(api, kind)
            .map(|r| format!("removed in Kubernetes {r}"))
            .unwrap_or_else(|| "not served by current Kubernetes".into());
        gaps.push(Gap {
            id: format!("removed-api:{api}/{kind}"),
            what: format!("{n} {kind} object(s) at {api}, an API version {removed}"),
            impact: format!(
                "their pod templates are assessed as written, but a current cluster would refuse them, so what actually runs may differ; migrate them to {}",
                served_versions(kind)
                    .and_then(|v| v.first())
                    .copied()
                    .unwrap_or("the current version")
            ),
            pillars: vec![Apps],
        });
    }

    Coverage {
        seen: seen.iter().map(|s| s.to_string()).collect(),
        gaps,
        input_errors: input.problems.clone(),
        unknown_kinds: unknown
            .iter()
            .map(|((api, kind), n)| {
                let api = if api.is_empty() {
                    "(no apiVersion)"
                } else {
                    api
                };
                let removed = removed_in(api, kind)
                    .map(|r| format!(", removed in Kubernetes {r}"))
                    .unwrap_or_default();
                let objects = if *n == 1 { "object" } else { "objects" };
                format!("{api} {kind} ({n} {objects}{removed})")
            })
            .collect(),
    }
}

fn missing_kind_gap(
    need: &Need,
    mode: SourceKind,
    has: &dyn Fn(&str) -> bool,
    has_workloads: bool,
    get_all: bool,
    dump_asked_beyond_get_all: bool,
) -> Option<Gap> {
    let kind = need.kind;
    let id = format!("missing-kind:{kind}");
    let manifests = mode == SourceKind::Manifests;
    if kind == "Pod" {
        // Workloads: any kind with a pod template will do; in a dump, pods
        // also show what runs outside any controller.
        if !has_workloads {
            return Some(Gap {
                id,
                what: "no workloads (Pods, Deployments, StatefulSets, DaemonSets, Jobs, CronJobs)".into(),
                impact: format!(
                    "the assessment cannot see {}: which workload runs as which identity, privileged pods and data stores are unknown",
                    need.used_for
                ),
                pillars: need.pillars.to_vec(),
            });
        }
        if !manifests && !has("Pod") {
            return Some(Gap {
                id,
                what: "no Pods: workload controllers were dumped, but not the pods themselves"
                    .into(),
                impact:
                    "pods that run outside any controller (bare pods, static pods) are not seen"
                        .into(),
                pillars: vec![Apps],
            });
        }
        return None;
    }
    if has(kind) {
        return None;
    }
    let pillar_names = |p: &[Pillar]| p.iter().map(|p| p.title()).collect::<Vec<_>>().join(", ");
    if manifests {
        // What a repository of manifests normally leaves to the cluster or
        // to another tool: not seeing it limits nothing.
        let note = match kind {
            "Secret" => Some("manifests normally hold no Secrets (they come from a secret manager, sealed or external secrets), so their absence is expected; mounts of them are still seen, their type is not"),
            "ConfigMap" => Some("the manifests define no ConfigMaps, so none can hold credentials here; ConfigMaps created elsewhere are not seen"),
            "Namespace" => Some("the manifests define no Namespaces: Pod Security labels and the namespace labels NetworkPolicy namespaceSelectors match are not seen"),
            "Service" | "Ingress" => Some("the manifests expose nothing through this kind"),
            _ => None,
        };
        if let Some(note) = note {
            return Some(Gap {
                id,
                what: format!("no {kind} objects in the manifests"),
                impact: format!("note: {note}; this limits no pillar"),
                pillars: Vec::new(),
            });
        }
        return Some(Gap {
            id,
            what: format!("no {kind} objects in the manifests"),
            impact: format!(
                "the assessment cannot see {}; if they are managed elsewhere, assess a dump of the cluster; this limits {}",
                need.used_for,
                pillar_names(need.pillars)
            ),
            pillars: need.pillars.to_vec(),
        });
    }
    // A dump.
    if kind == "Ingress" && dump_asked_beyond_get_all && !get_all {
        return Some(Gap {
            id,
            what: "no Ingress objects in the dump".into(),
            impact: "note: the cluster may have none; if it has, include `ingresses` in the dump, or public exposure through them is not seen; this limits no pillar".into(),
            pillars: Vec::new(),
        });
    }
    let why = if need.always_in_cluster {
        format!(
            "every cluster has {kind} objects, so the dump did not include `{}`",
            need.resource
        )
    } else {
        format!(
            "either the cluster has none or the dump did not include `{}`",
            need.resource
        )
    };
    let extra = match kind {
        "NetworkPolicy" => {
            "; AdminNetworkPolicy and BaselineAdminNetworkPolicy are optional and not needed"
        }
        "Secret" => "; only metadata and type are read, so the data may be stripped",
        _ => "",
    };
    Some(Gap {
        id,
        what: format!("no {kind} objects: {why}"),
        impact: format!(
            "conclusions about {} are incomplete; this limits {}{extra}",
            need.used_for,
            pillar_names(need.pillars)
        ),
        pillars: need.pillars.to_vec(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn objs(text: &str) -> Vec<Object> {
        let (o, e) = keycard_k8s::parse_str("t.yaml", text, &Default::default());
        assert!(e.is_empty(), "{e:?}");
        o
    }

    #[test]
    fn server_fields_make_a_dump() {
        let dump = objs("apiVersion: v1\nkind: Pod\nmetadata: {name: a, uid: x}\n");
        assert_eq!(detect_source_kind(&dump), SourceKind::Dump);
        let m = objs("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nstatus: {}\n");
        assert_eq!(detect_source_kind(&m), SourceKind::Manifests);
        let s = objs("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nstatus: {phase: Running}\n");
        assert_eq!(detect_source_kind(&s), SourceKind::Dump);
    }

    #[test]
    fn every_need_is_in_the_dump_command() {
        for n in NEEDS {
            assert!(DUMP_RESOURCES.contains(&n.resource), "{}", n.resource);
        }
    }
}
