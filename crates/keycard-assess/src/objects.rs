//! Shared views of the input objects.

use std::collections::{HashMap, HashSet};

use keycard_k8s::{Object, PodTemplate};
use serde_json::Value;

/// A workload: the top of an ownership chain that carries a pod template.
/// A Deployment's ReplicaSets and Pods are the Deployment; a Pod whose
/// owner is not in the input stands for that owner (one per owner, so a
/// dump of 50 replicas is one workload).
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub object: &'a Object,
    pub template: PodTemplate<'a>,
    /// `Kind` of the workload: the object's, or its missing owner's.
    pub kind: &'a str,
    /// `name` of the workload: the object's, or its missing owner's.
    pub name: &'a str,
    pub namespace: &'a str,
}

impl Workload<'_> {
    /// `ns/Kind/name`: the workload id used throughout the report.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.kind, self.name)
    }

    /// The service account its pods run as (`default` when unset).
    pub fn service_account(&self) -> &str {
        self.template
            .spec
            .get("serviceAccountName")
            .or_else(|| self.template.spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
    }
}

/// The controlling owner reference (or the first, when none is marked
/// controller), Nodes excluded (static pods are their own workload).
pub(crate) fn owner(o: &Object) -> Option<(&str, &str)> {
    let refs = o.metadata().get("ownerReferences")?.as_array()?;
    let r = refs
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| refs.first())?;
    let kind = r.get("kind")?.as_str()?;
    let name = r.get("name")?.as_str()?;
    (kind != "Node").then_some((kind, name))
}

/// Every workload of the input, in input order.
pub fn workloads(objects: &[Object]) -> Vec<Workload<'_>> {
    // Objects present, by (namespace, kind, name), to know whose owner is
    // in the input.
    let present: HashSet<(&str, &str, &str)> = objects
        .iter()
        .filter_map(|o| {
            let name = o.metadata().get("name")?.as_str()?;
            Some((o.namespace().unwrap_or(""), o.kind(), name))
        })
        .collect();
    let mut by_missing_owner: HashMap<(&str, &str, &str), ()> = HashMap::new();
    let mut out = Vec::new();
    for o in objects {
        let Some(template) = o.pod_template() else {
            continue;
        };
        let ns = o.namespace().unwrap_or("default");
        let (kind, name) = match owner(o) {
            Some((ok, on)) if present.contains(&(o.namespace().unwrap_or(""), ok, on)) => continue,
            Some((ok, on)) => {
                if by_missing_owner.insert((ns, ok, on), ()).is_some() {
                    continue;
                }
                (ok, on)
            }
            None => match o.metadata().get("name").and_then(Value::as_str) {
                Some(n) => (o.kind(), n),
                None => continue,
            },
        };
        out.push(Workload {
            object: o,
            template,
            kind,
            name,
            namespace: ns,
        });
    }
    out
}

/// The objects the network model needs, cloned: everything but the kinds
/// it never reads (Secrets, ConfigMaps, RBAC, ServiceAccounts, Nodes) and
/// the workload objects whose owner is in the input. A dump's old
/// ReplicaSets would otherwise each be a peer of their own: 10,200 peers for
/// 2,040 Deployments, and five times the reach decisions.
pub fn network_view(objects: &[Object]) -> Vec<Object> {
    const UNUSED: &[&str] = &[
        "Secret",
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "Node",
        "Event",
        "Endpoints",
        "EndpointSlice",
    ];
    let present: HashSet<(&str, &str, &str)> = objects
        .iter()
        .filter(|o| o.pod_template().is_some())
        .filter_map(|o| {
            let name = o.metadata().get("name")?.as_str()?;
            Some((o.namespace().unwrap_or(""), o.kind(), name))
        })
        .collect();
    objects
        .iter()
        .filter(|o| !UNUSED.contains(&o.kind()))
        .filter(|o| match owner(o) {
            Some((ok, on)) if o.pod_template().is_some() => {
                !present.contains(&(o.namespace().unwrap_or(""), ok, on))
            }
            _ => true,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn owned_objects_fold_into_their_owner() {
        let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec: {template: {spec: {serviceAccountName: web, containers: [{name: a, image: x}]}}}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-1, namespace: shop, ownerReferences: [{kind: Deployment, name: web, controller: true}]}
spec: {template: {spec: {containers: [{name: a, image: x}]}}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1-a, namespace: shop, ownerReferences: [{kind: ReplicaSet, name: web-1, controller: true}]}
spec: {containers: [{name: a, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, ownerReferences: [{kind: StatefulSet, name: db, controller: true}]}
spec: {containers: [{name: a, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, ownerReferences: [{kind: StatefulSet, name: db, controller: true}]}
spec: {containers: [{name: a, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: lone}
spec: {containers: [{name: a, image: x}]}
"#;
        let (objs, errs) = keycard_k8s::parse_str("t.yaml", text, &Default::default());
        assert!(errs.is_empty());
        let ids: Vec<String> = workloads(&objs).iter().map(Workload::id).collect();
        assert_eq!(
            ids,
            [
                "shop/Deployment/web",
                "shop/StatefulSet/db",
                "default/Pod/lone"
            ]
        );
        assert_eq!(workloads(&objs)[0].service_account(), "web");
        assert_eq!(workloads(&objs)[1].service_account(), "default");
    }
}
