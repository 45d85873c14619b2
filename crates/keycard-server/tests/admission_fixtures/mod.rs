//! AdmissionReviews shared by the webhook tests and the benchmark.
#![allow(dead_code)]

use serde_json::{json, Value};

/// A Deployment that passes pss-restricted and zero-trust with default parameters.
pub fn compliant_deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": {"app": name, "owner": "team-payments", "data-classification": "internal"}
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": "app",
                        "image": "registry.example.com/payments/api@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                        "ports": [{"containerPort": 8080}],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"cpu": "500m", "memory": "256Mi"}
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}
                        }
                    }]
                }
            }
        }
    })
}

/// The compliant Deployment with a privileged container (critical) and a
/// :latest image (high).
pub fn privileged_deployment(name: &str) -> Value {
    let mut d = compliant_deployment(name);
    let c = &mut d["spec"]["template"]["spec"]["containers"][0];
    c["securityContext"]["privileged"] = json!(true);
    c["image"] = json!("nginx:latest");
    d
}

/// The compliant Deployment without its data-classification label: a
/// medium finding only, which warns.
pub fn unlabelled_deployment(name: &str) -> Value {
    let mut d = compliant_deployment(name);
    if let Some(m) = d["metadata"]["labels"].as_object_mut() {
        m.remove("data-classification");
    }
    d
}

/// An AdmissionReview request around `object`.
pub fn review(uid: &str, operation: &str, namespace: &str, object: &Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or("");
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let resource = format!("{}s", kind.to_ascii_lowercase());
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:ci:deployer",
                "uid": "6f1b6c3e-0000-4000-8000-000000000001",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]
            },
            "object": if operation == "DELETE" { Value::Null } else { object.clone() },
            "oldObject": if operation == "CREATE" { Value::Null } else { object.clone() },
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": format!("{}Options", capitalized(operation))}
        }
    })
}

fn capitalized(op: &str) -> String {
    let lower = op.to_ascii_lowercase();
    let mut c = lower.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// A Gatekeeper template and constraint: Deployments need a `costcenter` label.
pub const GATEKEEPER_POLICY: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8srequiredlabels
spec:
  crd:
    spec:
      names:
        kind: K8sRequiredLabels
      validation:
        openAPIV3Schema:
          type: object
          properties:
            labels:
              type: array
              items:
                type: string
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8srequiredlabels

        violation[{"msg": msg, "details": {"missing_labels": missing}}] {
          provided := {label | input.review.object.metadata.labels[label]}
          required := {label | label := input.parameters.labels[_]}
          missing := required - provided
          count(missing) > 0
          msg := sprintf("you must provide labels: %v", [missing])
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata:
  name: deployments-need-costcenter
  annotations:
    keycard.dev/severity: high
spec:
  enforcementAction: deny
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
  parameters:
    labels: ["costcenter"]
"#;
