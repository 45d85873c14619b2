//! The cluster inventory that flows are resolved against: the workloads
//! (Deployments, StatefulSets, DaemonSets, CronJobs, bare Pods, ...) with
//! their pod-template labels, selectors, named ports and service accounts,
//! and which workload owns each pod.
//!
//! Flows name pods (`web-5d9f7c6b8-x2x7q`), but policies and people reason
//! about workloads (`Deployment web`), so every pod is folded into its
//! top-level owner: Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob.
//! When the inventory holds the Pod or ReplicaSet objects their owner
//! references decide; otherwise the generated name suffixes are stripped
//! and the result is accepted only if the inventory has that workload.

use std::collections::{BTreeMap, HashMap};

use keycard_k8s::Object;
use serde_json::Value;

use crate::model::{
    container_ports, labels_from, Cluster, ContainerPort, Diagnostic, Workload,
    NAMESPACE_NAME_LABEL,
};
use crate::selector::Labels;

/// Labels that controllers add to pods and change on every rollout or per
/// pod: a selector using them would stop matching after the next rollout.
pub const CHURNING_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/job-completion-index",
];

/// Whether a label key changes per rollout or per pod.
pub fn is_churning_label(key: &str) -> bool {
    CHURNING_LABELS.contains(&key)
}

/// One workload of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvWorkload {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// Labels of the pod template (of the pod, for a bare Pod).
    pub labels: Labels,
    /// `spec.selector.matchLabels` (the labels, for a bare Pod): what the
    /// controller itself relies on to find its pods, hence stable.
    pub selector: Labels,
    pub ports: Vec<ContainerPort>,
    pub service_account: Option<String>,
    /// Labels of the workload object itself (`metadata.labels`), where
    /// teams put classifications such as `data-classification`.
    pub object_labels: Labels,
}

impl InvWorkload {
    /// Whether the object or its pods carry `key` (with `value`, if given).
    pub fn has_label(&self, key: &str, value: Option<&str>) -> bool {
        [&self.object_labels, &self.labels].iter().any(|l| {
            l.get(key)
                .is_some_and(|v| value.is_none_or(|want| v == want))
        })
    }
}

/// Workloads and namespaces read from Kubernetes objects.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub workloads: Vec<InvWorkload>,
    /// Namespace name to labels (with the implicit name label).
    pub namespaces: BTreeMap<String, Labels>,
    index: HashMap<(String, String, String), usize>,
    pods: HashMap<(String, String), usize>,
    /// (namespace, ReplicaSet or Job name) -> index of its owner.
    owned: HashMap<(String, String), usize>,
}

const TOP_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "CronJob",
    "ReplicationController",
];

fn controller_owner(o: &Object) -> Option<(String, String)> {
    let owners = o.metadata().get("ownerReferences")?.as_array()?;
    let r = owners
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| owners.first())?;
    let kind = r.get("kind").and_then(Value::as_str)?;
    let name = r.get("name").and_then(Value::as_str)?;
    Some((kind.to_string(), name.to_string()))
}

fn namespace_of(o: &Object) -> String {
    o.namespace()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// `web-5d9f7c6b8` -> `web`: drops the last `-segment` when it looks
/// generated (lowercase letters and digits, at least one digit or of the
/// length Kubernetes generates).
fn strip_generated(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    let generated = !suffix.is_empty()
        && suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && (suffix.len() == 5 || suffix.bytes().any(|b| b.is_ascii_digit()));
    (generated && !base.is_empty()).then_some(base)
}

/// `db-0` -> `db` for StatefulSet ordinals.
fn strip_ordinal(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty())
        .then_some(base)
}

impl Inventory {
    /// Builds the inventory. Objects other than workloads, pods and
    /// namespaces are ignored; `List` kinds are expanded.
    pub fn from_objects(objects: &[Object]) -> Inventory {
        let mut inv = Inventory::default();
        let mut items: Vec<Object> = Vec::with_capacity(objects.len());
        for o in objects {
            let kind = o.kind();
            if kind.ends_with("List") {
                let item_kind = kind.trim_end_matches("List").to_string();
                for it in o
                    .value
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let mut v = it.clone();
                    if let Some(m) = v.as_object_mut() {
                        if !m.contains_key("kind") && !item_kind.is_empty() {
                            m.insert("kind".into(), Value::String(item_kind.clone()));
                        }
                    }
                    items.push(Object {
                        value: v,
                        source: o.source.clone(),
                    });
                }
            } else {
                items.push(o.clone());
            }
        }
        for o in &items {
            if o.kind() == "Namespace" {
                let name = o.name();
                let mut labels = labels_from(o.metadata().get("labels"));
                labels
                    .entry(NAMESPACE_NAME_LABEL.to_string())
                    .or_insert_with(|| name.clone());
                inv.namespaces.insert(name, labels);
            }
        }
        // Top-level controllers first, then what they own, then pods.
        for o in &items {
            if TOP_KINDS.contains(&o.kind()) {
                inv.add_workload(o);
            }
        }
        for o in &items {
            let kind = o.kind();
            if kind != "ReplicaSet" && kind != "Job" {
                continue;
            }
            let ns = namespace_of(o);
            let owner = controller_owner(o).and_then(|(k, n)| inv.find(&ns, &k, &n));
            match owner {
                Some(i) => {
                    inv.owned.insert((ns, o.name()), i);
                }
                None => {
                    if let Some(i) = inv.add_workload(o) {
                        inv.owned.insert((ns, o.name()), i);
                    }
                }
            }
        }
        for o in &items {
            if o.kind() != "Pod" {
                continue;
            }
            let ns = namespace_of(o);
            let pod = o.name();
            let owner = match controller_owner(o) {
                Some((k, n)) if k == "ReplicaSet" || k == "Job" => inv
                    .owned
                    .get(&(ns.clone(), n.clone()))
                    .copied()
                    .or_else(|| {
                        let base = strip_generated(&n)?;
                        let top = if k == "Job" { "CronJob" } else { "Deployment" };
                        inv.find(&ns, top, base)
                    }),
                Some((k, n)) if k != "Node" => inv.find(&ns, &k, &n),
                _ => None,
            };
            let i = match owner {
                Some(i) => Some(i),
                None => inv.add_workload(o),
            };
            if let Some(i) = i {
                inv.pods.insert((ns, pod), i);
            }
        }
        let referenced: Vec<String> = inv.workloads.iter().map(|w| w.namespace.clone()).collect();
        for ns in referenced {
            inv.namespaces.entry(ns.clone()).or_insert_with(|| {
                let mut l = Labels::new();
                l.insert(NAMESPACE_NAME_LABEL.to_string(), ns);
                l
            });
        }
        inv
    }

    /// Adds a workload object (or a pod whose owner is unknown, named after
    /// that owner so its replicas stay one workload).
    fn add_workload(&mut self, o: &Object) -> Option<usize> {
        let t = o.pod_template()?;
        let ns = namespace_of(o);
        let (kind, name) = if o.kind() == "Pod" {
            match controller_owner(o) {
                Some((k, n)) if k != "Node" => (k, n),
                _ => ("Pod".to_string(), o.name()),
            }
        } else {
            (o.kind().to_string(), o.name())
        };
        let key = (ns.clone(), kind.clone(), name.clone());
        if let Some(&i) = self.index.get(&key) {
            return Some(i);
        }
        let labels = labels_from(t.metadata.get("labels"));
        let selector = if o.kind() == "Pod" {
            labels.clone()
        } else {
            let sel_path = match o.kind() {
                "CronJob" => o
                    .value
                    .pointer("/spec/jobTemplate/spec/selector/matchLabels")
                    .or_else(|| o.value.pointer("/spec/jobTemplate/spec/selector")),
                "ReplicationController" => o.value.pointer("/spec/selector"),
                _ => o.value.pointer("/spec/selector/matchLabels"),
            };
            labels_from(sel_path)
        };
        let service_account = t
            .spec
            .get("serviceAccountName")
            .or_else(|| t.spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .map(str::to_string);
        self.index.insert(key, self.workloads.len());
        self.workloads.push(InvWorkload {
            namespace: ns,
            kind,
            name,
            labels,
            selector,
            ports: container_ports(t.spec),
            service_account,
            object_labels: labels_from(o.metadata().get("labels")),
        });
        Some(self.workloads.len() - 1)
    }

    /// The workload `kind name` in `ns`.
    pub fn find(&self, ns: &str, kind: &str, name: &str) -> Option<usize> {
        self.index
            .get(&(ns.to_string(), kind.to_string(), name.to_string()))
            .copied()
    }

    /// The workload that owns a pod: the pod objects' owner references
    /// first, then the owner the flow names (`hint`), then the generated
    /// name suffixes, then the workload whose selector matches the pod's
    /// labels (the most specific one).
    pub fn resolve_pod(
        &self,
        ns: &str,
        pod: &str,
        hint: Option<(&str, &str)>,
        labels: &Labels,
    ) -> Option<usize> {
        if let Some(&i) = self.pods.get(&(ns.to_string(), pod.to_string())) {
            return Some(i);
        }
        if let Some((kind, name)) = hint {
            if let Some(i) = self.find(ns, kind, name) {
                return Some(i);
            }
            if kind == "ReplicaSet" || kind == "Job" {
                if let Some(&i) = self.owned.get(&(ns.to_string(), name.to_string())) {
                    return Some(i);
                }
            }
        }
        if let Some(rs) = strip_generated(pod) {
            if let Some(&i) = self.owned.get(&(ns.to_string(), rs.to_string())) {
                return Some(i);
            }
            for kind in ["DaemonSet", "ReplicaSet", "Job", "ReplicationController"] {
                if let Some(i) = self.find(ns, kind, rs) {
                    return Some(i);
                }
            }
            if let Some(base) = strip_generated(rs) {
                for kind in ["Deployment", "CronJob"] {
                    if let Some(i) = self.find(ns, kind, base) {
                        return Some(i);
                    }
                }
            }
        }
        if let Some(base) = strip_ordinal(pod) {
            if let Some(i) = self.find(ns, "StatefulSet", base) {
                return Some(i);
            }
        }
        if let Some(i) = self.find(ns, "Pod", pod) {
            return Some(i);
        }
        if labels.is_empty() {
            return None;
        }
        self.workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                w.namespace == ns
                    && !w.selector.is_empty()
                    && w.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .max_by_key(|(i, w)| (w.selector.len(), std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    }

    /// The evaluator's model of this inventory under a set of policies: the
    /// workloads as peers (one per workload, not per pod), and the
    /// NetworkPolicies and admin policies among `policies`.
    pub fn to_cluster(&self, policies: &[Object]) -> (Cluster, Vec<Diagnostic>) {
        let policy_objects: Vec<Object> = policies
            .iter()
            .filter(|o| {
                matches!(
                    o.kind(),
                    "NetworkPolicy"
                        | "AdminNetworkPolicy"
                        | "BaselineAdminNetworkPolicy"
                        | "NetworkPolicyList"
                        | "List"
                )
            })
            .cloned()
            .collect();
        let (mut cluster, diags) = Cluster::from_objects(&policy_objects);
        // Exposures index the workloads being replaced.
        cluster.exposures.clear();
        cluster.workloads = self
            .workloads
            .iter()
            .map(|w| Workload {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                kind: w.kind.clone(),
                labels: w.labels.clone(),
                ports: w.ports.clone(),
                secondary_networks: Vec::new(),
                secondary_addresses: Vec::new(),
            })
            .collect();
        for (ns, labels) in &self.namespaces {
            cluster.namespaces.insert(ns.clone(), labels.clone());
        }
        (cluster, diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(text: &str) -> Inventory {
        let (objects, errors) = keycard_k8s::parse_str("inv.yaml", text, &Default::default());
        assert!(errors.is_empty(), "{errors:?}");
        Inventory::from_objects(&objects)
    }

    const TEXT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      serviceAccountName: web-sa
      containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c, image: x}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: api-7d4b9c
  namespace: shop
  ownerReferences: [{kind: Deployment, name: api, controller: true}]
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api, pod-template-hash: 7d4b9c}}
    spec: {containers: [{name: c, image: x}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: debug, namespace: shop, labels: {run: debug}}
spec: {containers: [{name: c, image: x}]}
"#;

    #[test]
    fn pods_fold_into_their_workloads() {
        let inv = inv(TEXT);
        let name = |i: Option<usize>| i.map(|i| inv.workloads[i].name.clone());
        let none = Labels::new();
        assert_eq!(
            name(inv.resolve_pod("shop", "web-5d9f7c6b8-x2x7q", None, &none)),
            Some("web".into())
        );
        assert_eq!(
            name(inv.resolve_pod("shop", "api-7d4b9c-abcde", None, &none)),
            Some("api".into())
        );
        assert_eq!(
            name(inv.resolve_pod("shop", "db-0", None, &none)),
            Some("db".into())
        );
        assert_eq!(
            name(inv.resolve_pod("shop", "debug", None, &none)),
            Some("debug".into())
        );
        let mut l = Labels::new();
        l.insert("app".into(), "web".into());
        assert_eq!(
            name(inv.resolve_pod("shop", "renamed", None, &l)),
            Some("web".into())
        );
        assert_eq!(
            inv.resolve_pod("shop", "ghost-abc12-xyz12", None, &none),
            None
        );
        assert_eq!(
            inv.resolve_pod("other", "web-5d9f7c6b8-x2x7q", None, &none),
            None
        );
        let w = &inv.workloads[inv.find("shop", "Deployment", "web").unwrap()];
        assert_eq!(w.service_account.as_deref(), Some("web-sa"));
        assert_eq!(w.selector.len(), 1);
        assert_eq!(w.ports[0].name.as_deref(), Some("http"));
        assert!(inv.namespaces.contains_key("shop"));
    }

    #[test]
    fn suffix_heuristics() {
        assert_eq!(strip_generated("web-5d9f7c6b8"), Some("web"));
        assert_eq!(strip_generated("web-x2x7q"), Some("web"));
        assert_eq!(strip_generated("web-frontend"), None);
        assert_eq!(strip_generated("web"), None);
        assert_eq!(strip_ordinal("db-12"), Some("db"));
        assert_eq!(strip_ordinal("db-a"), None);
    }
}
