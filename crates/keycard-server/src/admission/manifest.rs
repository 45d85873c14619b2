//! The `ValidatingWebhookConfiguration` (admissionregistration.k8s.io/v1)
//! that sends the cluster's admission requests to keycard.
//!
//! The failure policy is the one real trade-off: `Fail` (the default) fails
//! closed, so nothing the webhook would judge enters the cluster while
//! keycard is down, and a keycard outage blocks deploys; `Ignore` fails
//! open, so deploys continue during an outage and unchecked objects get in.
//! keycard's own namespace and kube-system are excluded either way, so the
//! control plane can always be repaired.

use base64::Engine as _;
use serde_json::{json, Value};

use super::server::VALIDATE_PATH;

/// What the API server does when it cannot get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Fail closed: reject the request (secure; an outage blocks deploys).
    #[default]
    Fail,
    /// Fail open: let the request through unchecked (available; insecure).
    Ignore,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "Fail",
            Self::Ignore => "Ignore",
        }
    }
}

/// How the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Service in the cluster (the usual case).
    Service {
        namespace: String,
        name: String,
        port: u16,
        path: String,
    },
    /// An HTTPS URL (a webhook outside the cluster, or `keycard up` on a
    /// developer machine).
    Url(String),
}

/// Everything the configuration says.
#[derive(Debug, Clone)]
pub struct ManifestOptions {
    /// `metadata.name` of the configuration.
    pub name: String,
    /// The webhook's name (a fully qualified name).
    pub webhook_name: String,
    pub endpoint: Endpoint,
    /// PEM of the CA that signed the webhook's serving certificate.
    pub ca_pem: Vec<u8>,
    /// Namespaces never sent to the webhook.
    pub exclude_namespaces: Vec<String>,
    pub failure_policy: FailurePolicy,
    /// 1 to 30 seconds.
    pub timeout_seconds: u32,
    /// Labels on the configuration object.
    pub labels: Vec<(String, String)>,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            name: "keycard-admission".into(),
            webhook_name: "validate.admission.keycard.dev".into(),
            endpoint: Endpoint::Service {
                namespace: "keycard".into(),
                name: "keycard-server".into(),
                port: 443,
                path: VALIDATE_PATH.into(),
            },
            ca_pem: Vec::new(),
            exclude_namespaces: vec!["kube-system".into(), "keycard".into()],
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: 5,
            labels: vec![("app.kubernetes.io/name".into(), "keycard".into())],
        }
    }
}

/// Why a configuration cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Invalid(String),
}

/// The resources the webhook judges, by API group: every kind that runs
/// pods, RBAC, Services, NetworkPolicies, Ingresses, ServiceAccounts and
/// Namespaces (what the built-in packs have rules for).
pub const RULES: &[(&str, &str, &[&str])] = &[
    (
        "",
        "v1",
        &[
            "pods",
            "pods/ephemeralcontainers",
            "replicationcontrollers",
            "services",
            "serviceaccounts",
            "namespaces",
        ],
    ),
    (
        "apps",
        "v1",
        &["deployments", "statefulsets", "daemonsets", "replicasets"],
    ),
    ("batch", "v1", &["jobs", "cronjobs"]),
    (
        "rbac.authorization.k8s.io",
        "v1",
        &[
            "roles",
            "rolebindings",
            "clusterroles",
            "clusterrolebindings",
        ],
    ),
    ("networking.k8s.io", "v1", &["networkpolicies", "ingresses"]),
];

/// Checks a PEM bundle holds at least one certificate.
fn check_ca(pem: &[u8]) -> Result<(), ManifestError> {
    use rustls_pki_types::pem::PemObject;
    let n = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ManifestError::Invalid(format!("CA bundle: {e}")))?
        .len();
    if n == 0 {
        return Err(ManifestError::Invalid(
            "CA bundle: no CERTIFICATE block found".into(),
        ));
    }
    Ok(())
}

/// The configuration as a JSON value (write it as YAML or JSON).
pub fn validating_webhook_configuration(o: &ManifestOptions) -> Result<Value, ManifestError> {
    if !(1..=30).contains(&o.timeout_seconds) {
        return Err(ManifestError::Invalid(format!(
            "timeoutSeconds {} must be between 1 and 30",
            o.timeout_seconds
        )));
    }
    if o.webhook_name.split('.').count() < 3 {
        return Err(ManifestError::Invalid(format!(
            "webhook name {:?} must be fully qualified (at least three DNS labels)",
            o.webhook_name
        )));
    }
    check_ca(&o.ca_pem)?;
    let client_config = match &o.endpoint {
        Endpoint::Service {
            namespace,
            name,
            port,
            path,
        } => json!({
            "service": {"namespace": namespace, "name": name, "path": path, "port": port},
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&o.ca_pem),
        }),
        Endpoint::Url(url) => {
            if !url.starts_with("https://") {
                return Err(ManifestError::Invalid(format!(
                    "webhook URL {url:?} must start with https://"
                )));
            }
            json!({
                "url": url,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&o.ca_pem),
            })
        }
    };
    let rules: Vec<Value> = RULES
        .iter()
        .map(|(group, version, resources)| {
            json!({
                "apiGroups": [group],
                "apiVersions": [version],
                "resources": resources,
                "operations": ["CREATE", "UPDATE"],
                "scope": "*",
            })
        })
        .collect();
    let mut webhook = json!({
        "name": o.webhook_name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client_config,
        "rules": rules,
        "failurePolicy": o.failure_policy.as_str(),
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": o.timeout_seconds,
    });
    if !o.exclude_namespaces.is_empty() {
        if let Value::Object(m) = &mut webhook {
            m.insert(
                "namespaceSelector".into(),
                json!({"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": o.exclude_namespaces,
                }]}),
            );
        }
    }
    let labels: serde_json::Map<String, Value> = o
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    Ok(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": o.name, "labels": labels},
        "webhooks": [webhook],
    }))
}

/// The configuration as YAML, with a comment on the failure policy.
pub fn to_yaml(o: &ManifestOptions) -> Result<String, ManifestError> {
    let v = validating_webhook_configuration(o)?;
    let body = yaml_serde::to_string(&v).map_err(|e| ManifestError::Invalid(e.to_string()))?;
    let note = match o.failure_policy {
        FailurePolicy::Fail => "# failurePolicy: Fail (fail closed): while keycard is unreachable, requests it\n# would judge are rejected, so a keycard outage blocks deploys outside the\n# excluded namespaces. Run several replicas with a PodDisruptionBudget.\n",
        FailurePolicy::Ignore => "# failurePolicy: Ignore (fail open): while keycard is unreachable, requests\n# are admitted unchecked. Deploys keep working; policy is not enforced.\n",
    };
    Ok(format!("{note}{body}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn ca() -> Vec<u8> {
        rcgen::generate_simple_self_signed(vec!["keycard-server.keycard.svc".to_string()])
            .unwrap()
            .cert
            .pem()
            .into_bytes()
    }

    #[test]
    fn service_configuration() {
        let o = ManifestOptions {
            ca_pem: ca(),
            ..ManifestOptions::default()
        };
        let v = validating_webhook_configuration(&o).unwrap();
        assert_eq!(v["kind"], "ValidatingWebhookConfiguration");
        let w = &v["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["matchPolicy"], "Equivalent");
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(w["timeoutSeconds"], 5);
        assert_eq!(w["clientConfig"]["service"]["path"], "/validate");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(w["clientConfig"]["caBundle"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, o.ca_pem);
        let sel = &w["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(sel["operator"], "NotIn");
        assert_eq!(sel["values"], json!(["kube-system", "keycard"]));
        let resources: Vec<&str> = w["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
            })
            .collect();
        for r in [
            "deployments",
            "pods",
            "clusterrolebindings",
            "services",
            "networkpolicies",
        ] {
            assert!(resources.contains(&r), "{r}");
        }
        for r in w["rules"].as_array().unwrap() {
            assert_eq!(r["operations"], json!(["CREATE", "UPDATE"]));
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let base = ManifestOptions {
            ca_pem: ca(),
            ..ManifestOptions::default()
        };
        let mut o = base.clone();
        o.timeout_seconds = 31;
        assert!(validating_webhook_configuration(&o).is_err());
        let mut o = base.clone();
        o.ca_pem = b"not a pem".to_vec();
        assert!(validating_webhook_configuration(&o)
            .unwrap_err()
            .to_string()
            .contains("CA bundle"));
        let mut o = base.clone();
        o.endpoint = Endpoint::Url("http://x.example/validate".into());
        assert!(validating_webhook_configuration(&o).is_err());
        let mut o = base;
        o.webhook_name = "keycard".into();
        assert!(validating_webhook_configuration(&o).is_err());
    }

    #[test]
    fn yaml_documents_the_failure_policy() {
        let mut o = ManifestOptions {
            ca_pem: ca(),
            ..ManifestOptions::default()
        };
        o.failure_policy = FailurePolicy::Ignore;
        o.endpoint = Endpoint::Url("https://127.0.0.1:8443/validate".into());
        let y = to_yaml(&o).unwrap();
        assert!(y.starts_with("# failurePolicy: Ignore (fail open)"));
        let v: Value = yaml_serde::from_str(&y).unwrap();
        assert_eq!(v["webhooks"][0]["failurePolicy"], "Ignore");
        assert_eq!(
            v["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:8443/validate"
        );
    }
}
