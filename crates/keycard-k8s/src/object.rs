use std::fmt;
use std::sync::Arc;

use keycard_core::ResourceRef;
use serde_json::Value;

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// The file as given on the command line (or `-` for stdin).
    pub file: Arc<str>,
    /// 1-based line of the first line of the object.
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One Kubernetes object with its source location.
#[derive(Debug, Clone)]
pub struct Object {
    pub value: Value,
    pub source: Source,
}

/// The pod template of a workload: what every pod-level rule looks at.
#[derive(Debug, Clone, Copy)]
pub struct PodTemplate<'a> {
    /// `metadata` of the pod (or pod template); `Value::Null` when absent.
    pub metadata: &'a Value,
    /// `spec` of the pod.
    pub spec: &'a Value,
    /// Dotted path of the pod template inside the object (`""` for a Pod).
    pub path: &'static str,
}

/// Kinds whose objects carry a pod spec, and where.
pub const WORKLOAD_KINDS: &[(&str, &str)] = &[
    ("Pod", ""),
    ("Deployment", "spec.template"),
    ("StatefulSet", "spec.template"),
    ("DaemonSet", "spec.template"),
    ("ReplicaSet", "spec.template"),
    ("ReplicationController", "spec.template"),
    ("Job", "spec.template"),
    ("PodTemplate", "template"),
    ("CronJob", "spec.jobTemplate.spec.template"),
];

static NULL: Value = Value::Null;

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl Object {
    pub fn new(value: Value, file: Arc<str>, line: usize) -> Self {
        Object {
            value,
            source: Source { file, line },
        }
    }

    pub fn api_version(&self) -> &str {
        str_at(&self.value, "apiVersion").unwrap_or("")
    }

    pub fn kind(&self) -> &str {
        str_at(&self.value, "kind").unwrap_or("")
    }

    pub fn metadata(&self) -> &Value {
        self.value.get("metadata").unwrap_or(&NULL)
    }

    /// `metadata.name`, or `metadata.generateName` followed by `*`.
    pub fn name(&self) -> String {
        let md = self.metadata();
        if let Some(n) = str_at(md, "name") {
            return n.to_string();
        }
        if let Some(n) = str_at(md, "generateName") {
            return format!("{n}*");
        }
        String::new()
    }

    pub fn namespace(&self) -> Option<&str> {
        str_at(self.metadata(), "namespace")
    }

    /// The API group, `""` for the core group.
    pub fn group(&self) -> &str {
        match self.api_version().split_once('/') {
            Some((g, _)) => g,
            None => "",
        }
    }

    pub fn version(&self) -> &str {
        match self.api_version().split_once('/') {
            Some((_, v)) => v,
            None => self.api_version(),
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata().get("labels").and_then(|l| str_at(l, key))
    }

    pub fn resource_ref(&self) -> ResourceRef {
        ResourceRef {
            api_version: self.api_version().to_string(),
            kind: self.kind().to_string(),
            namespace: self.namespace().map(str::to_string),
            name: self.name(),
        }
    }

    /// The pod spec of a Pod or of any workload kind, if it has one.
    pub fn pod_template(&self) -> Option<PodTemplate<'_>> {
        let kind = self.kind();
        let (_, path) = WORKLOAD_KINDS.iter().find(|(k, _)| *k == kind)?;
        let mut at = &self.value;
        if !path.is_empty() {
            for seg in path.split('.') {
                at = at.get(seg)?;
            }
        }
        let spec = at.get("spec")?;
        if !spec.is_object() {
            return None;
        }
        Some(PodTemplate {
            metadata: at.get("metadata").unwrap_or(&NULL),
            spec,
            path,
        })
    }
}

/// Kinds from the built-in Kubernetes API groups. Objects of other kinds
/// (custom resources) are still read and given to custom policies.
pub fn is_known_kind(kind: &str) -> bool {
    const KINDS: &[&str] = &[
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
        "CronJob",
        "PodTemplate",
        "Service",
        "Endpoints",
        "EndpointSlice",
        "Ingress",
        "IngressClass",
        "NetworkPolicy",
        "Namespace",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "StorageClass",
        "Node",
        "LimitRange",
        "ResourceQuota",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PriorityClass",
        "RuntimeClass",
        "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "APIService",
        "Lease",
        "Event",
        "CSIDriver",
        "VolumeAttachment",
        "CertificateSigningRequest",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "Gateway",
        "HTTPRoute",
        "GatewayClass",
    ];
    KINDS.contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        Object::new(v, Arc::from("t.yaml"), 1)
    }

    #[test]
    fn pod_template_for_every_workload_kind() {
        let pod_spec = json!({"containers": [{"name": "c", "image": "x"}]});
        let tmpl = json!({"metadata": {"labels": {"app": "a"}}, "spec": pod_spec});
        let cases = vec![
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": tmpl}}),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"template": tmpl}}),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {"template": tmpl}}),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "spec": {"template": tmpl}}),
            json!({"apiVersion": "v1", "kind": "ReplicationController", "spec": {"template": tmpl}}),
            json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": tmpl}}),
            json!({"apiVersion": "v1", "kind": "PodTemplate", "template": tmpl}),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": tmpl}}}}),
        ];
        for v in cases {
            let o = obj(v);
            let pt = o.pod_template().unwrap_or_else(|| panic!("{}", o.kind()));
            assert_eq!(pt.spec, &pod_spec, "{}", o.kind());
        }
        assert!(
            obj(json!({"apiVersion": "v1", "kind": "Service", "spec": {}}))
                .pod_template()
                .is_none()
        );
    }

    #[test]
    fn names_and_groups() {
        let o = obj(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"generateName": "r-", "namespace": "ns"}}),
        );
        assert_eq!(o.name(), "r-*");
        assert_eq!(o.group(), "rbac.authorization.k8s.io");
        assert_eq!(o.version(), "v1");
        assert_eq!(o.resource_ref().to_string(), "Role ns/r-*");
    }
}
