//! Legacy trust assumptions: where the cluster trusts by position
//! (flat networks, static credentials, standing privilege) instead of
//! verifying explicitly.
//!
//! Where `keycard check`'s zero-trust pack (or the Pod Security baseline)
//! already has a rule, the finding comes from that rule, evaluated by the
//! same engine, with its id, severity, remediation and controls: one rule,
//! one meaning, whether it fires in CI or in an assessment. The rules here
//! (`zt-assess-*`) need what a single manifest cannot show: the whole
//! namespace, NetworkPolicy reach, the resolved RBAC.

use std::collections::{BTreeMap, HashMap, HashSet};

use keycard_core::Severity;
use keycard_k8s::Object;
use keycard_policy::PolicySetBuilder;
use rayon::prelude::*;
use serde_json::Value;

use crate::model::{Finding, IdentityCategory, Inventory, Pillar};

use crate::Context;

/// Pack rules an assessment reports. The others either duplicate a
/// `zt-assess-*` rule that sees more (default-deny per namespace, token
/// automount, exposure, labels) or are supply-chain rules outside an
/// assessment's questions (registries, digests).
const PACK_RULES: &[&str] = &[
    "zt-privileged",
    "zt-host-path",
    "zt-privilege-escalation",
    "zt-env-secret-literal",
    "zt-rbac-wildcard",
    "zt-rbac-escalation-verbs",
    "pss-baseline-host-namespaces",
];

fn controls(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

const ISO: &str = "iso27001";
const SOC2: &str = "soc2";
const GDPR: &str = "gdpr";

/// A finding under construction: the fields every rule sets.
struct New<'a> {
    rule: &'a str,
    title: String,
    severity: Severity,
    pillar: Pillar,
    category: &'a str,
    resource: String,
    namespace: Option<String>,
    evidence: Vec<String>,
    remediation: &'a str,
    controls: BTreeMap<String, Vec<String>>,
    at: Option<(String, usize)>,
}

impl New<'_> {
    fn done(self) -> Finding {
        let (file, line) = match self.at {
            Some((f, l)) => (Some(f), Some(l)),
            None => (None, None),
        };
        Finding {
            id: Finding::make_id(self.rule, &self.resource),
            rule: self.rule.to_string(),
            title: self.title,
            severity: self.severity,
            pillar: self.pillar,
            category: self.category.to_string(),
            resource: self.resource,
            namespace: self.namespace,
            evidence: self.evidence,
            remediation: self.remediation.to_string(),
            controls: self.controls,
            file,
            line,
        }
    }
}

fn at(o: &Object) -> Option<(String, usize)> {
    Some((o.source.file.to_string(), o.source.line))
}

pub fn find(ctx: &Context<'_>, inventory: &Inventory) -> Vec<Finding> {
    let mut out = Vec::new();
    network(ctx, inventory, &mut out);
    static_credentials(ctx, &mut out);
    identities(ctx, inventory, &mut out);
    workloads(ctx, inventory, &mut out);
    out.extend(pack_findings(ctx));
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.resource.cmp(&b.resource))
    });
    out.dedup_by(|a, b| a.id == b.id);
    out
}

fn namespace_objects<'a>(ctx: &Context<'a>) -> HashMap<String, &'a Object> {
    ctx.objects
        .iter()
        .filter(|o| o.kind() == "Namespace")
        .map(|o| (o.name(), o))
        .collect()
}

fn network(ctx: &Context<'_>, inventory: &Inventory, out: &mut Vec<Finding>) {
    let ns_objects = namespace_objects(ctx);
    let seg = controls(&[
        (ISO, &["A.8.20", "A.8.22"]),
        (SOC2, &["CC6.1", "CC6.6"]),
        (GDPR, &["Art. 32(1)(b)"]),
    ]);
    // NetworkPolicy does not apply to hostNetwork pods (node agents): a
    // namespace holding only those has nothing a default-deny would govern.
    let mut pod_network: HashMap<&str, usize> = HashMap::new();
    for w in &inventory.workloads {
        if !w.host_namespaces.iter().any(|h| h == "hostNetwork") {
            *pod_network.entry(w.namespace.as_str()).or_default() += 1;
        }
    }
    let with_workloads: Vec<_> = inventory
        .namespaces
        .iter()
        .filter(|n| pod_network.get(n.name.as_str()).is_some_and(|c| *c > 0))
        .collect();
    if !with_workloads.is_empty() && ctx.cluster.network_policies.is_empty() {
        out.push(
            New {
                rule: "zt-assess-no-network-policies",
                title: "No NetworkPolicy anywhere: every pod can reach every pod".into(),
                severity: Severity::High,
                pillar: Pillar::Networks,
                category: "network",
                resource: "Cluster".into(),
                namespace: None,
                evidence: vec![format!(
                    "0 NetworkPolicies in the input; {} namespaces run {} workloads",
                    with_workloads.len(),
                    inventory.workloads.len()
                )],
                remediation: "Start with a default-deny ingress and egress NetworkPolicy in each \
                              application namespace, then allow the flows each workload needs \
                              (keycard flows generate derives them from observed traffic).",
                controls: seg.clone(),
                at: None,
            }
            .done(),
        );
    }
    for n in &with_workloads {
        let here = ns_objects.get(&n.name).and_then(|o| at(o));
        let resource = format!("Namespace/{}", n.name);
        if !n.default_deny_ingress {
            out.push(
                New {
                    rule: "zt-assess-no-default-deny-ingress",
                    title: format!("Namespace {} has no default-deny ingress policy", n.name),
                    severity: Severity::High,
                    pillar: Pillar::Networks,
                    category: "network",
                    resource: resource.clone(),
                    namespace: Some(n.name.clone()),
                    evidence: vec![format!(
                        "{} workloads on the pod network; no NetworkPolicy with an empty \
                         podSelector and no ingress rules isolates the namespace for ingress",
                        pod_network.get(n.name.as_str()).copied().unwrap_or(0)
                    )],
                    remediation: "Add a NetworkPolicy with `podSelector: {}` and \
                                  `policyTypes: [Ingress]` and no ingress rules, then allow \
                                  each needed flow explicitly.",
                    controls: seg.clone(),
                    at: here.clone(),
                }
                .done(),
            );
        }
        if !n.default_deny_egress {
            out.push(
                New {
                    rule: "zt-assess-no-default-deny-egress",
                    title: format!("Namespace {} has no default-deny egress policy", n.name),
                    severity: Severity::Medium,
                    pillar: Pillar::Networks,
                    category: "network",
                    resource,
                    namespace: Some(n.name.clone()),
                    evidence: vec![format!(
                        "{} workloads on the pod network; no NetworkPolicy with an empty \
                         podSelector and no egress rules isolates the namespace for egress",
                        pod_network.get(n.name.as_str()).copied().unwrap_or(0)
                    )],
                    remediation: "Add a NetworkPolicy with `podSelector: {}` and \
                                  `policyTypes: [Egress]` and no egress rules; allow DNS and \
                                  each needed destination explicitly.",
                    controls: seg.clone(),
                    at: here,
                }
                .done(),
            );
        }
    }

    // Data stores reachable beyond what they serve.
    let wl: HashMap<&str, &crate::model::WorkloadInfo> = inventory
        .workloads
        .iter()
        .map(|w| (w.id.as_str(), w))
        .collect();
    for d in &inventory.data_stores {
        let Some(w) = wl.get(d.workload.as_str()) else {
            continue;
        };
        let foreign: Vec<&crate::model::Reach> = d
            .reachable_from
            .iter()
            .filter(|r| r.workload.split('/').next() != Some(w.namespace.as_str()))
            .collect();
        if d.isolated && foreign.is_empty() && !d.reachable_from_outside {
            continue;
        }
        let mut evidence = vec![format!(
            "{} ({}, recognised by {}) is reachable from {} of {} workloads",
            d.workload,
            d.engine,
            d.recognised_by,
            d.reachable_from.len(),
            inventory.workloads.len().saturating_sub(1)
        )];
        if !d.isolated {
            evidence.push("no NetworkPolicy selects it for ingress: every pod may connect".into());
        }
        if d.reachable_from_outside {
            evidence
                .push("addresses outside the cluster may connect (ipBlock or no isolation)".into());
        }
        const SHOWN: usize = 10;
        for r in foreign.iter().take(SHOWN) {
            evidence.push(format!(
                "{} from namespace-external {} ({})",
                d.workload, r.workload, r.ports
            ));
        }
        if foreign.len() > SHOWN {
            evidence.push(format!(
                "... and {} more from other namespaces",
                foreign.len() - SHOWN
            ));
        }
        out.push(
            New {
                rule: "zt-assess-data-store-reachable",
                title: format!(
                    "Data store {} is reachable east-west beyond its clients",
                    d.workload
                ),
                severity: Severity::High,
                pillar: Pillar::Data,
                category: "network",
                resource: d.workload.clone(),
                namespace: Some(w.namespace.clone()),
                evidence,
                remediation: "Select the data store with an ingress NetworkPolicy that allows \
                              only the workloads that use it, on its port.",
                controls: controls(&[
                    (ISO, &["A.8.3", "A.8.22"]),
                    (SOC2, &["CC6.1", "CC6.6"]),
                    (GDPR, &["Art. 25(1)", "Art. 32(1)(b)"]),
                ]),
                at: w.file.clone().zip(w.line),
            }
            .done(),
        );
    }
}

/// Keys and values that hold credentials. Keys are matched on their
/// lowercased alphanumerics so `DB_PASSWORD`, `db.password` and
/// `dbPassword` all count.
fn credential_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "privatekey",
        "accesskey",
        "credential",
    ]
    .iter()
    .any(|w| k.contains(w))
        && !k.ends_with("ttl")
        && !k.ends_with("path")
        && !k.ends_with("file")
        && !k.ends_with("name")
}

fn credential_value(v: &str) -> Option<&'static str> {
    if v.contains("-----BEGIN") && v.contains("PRIVATE KEY-----") {
        return Some("a PEM private key");
    }
    let aws = v.as_bytes().windows(20).any(|w| {
        (w.starts_with(b"AKIA") || w.starts_with(b"ASIA"))
            && w[4..]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    });
    aws.then_some("an AWS access key id")
}

fn static_credentials(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let now = ctx.options.now;
    for o in ctx.objects {
        let ns = o.namespace().unwrap_or("default");
        match o.kind() {
            "Secret"
                if o.value.get("type").and_then(Value::as_str)
                    == Some("kubernetes.io/service-account-token") =>
            {
                let name = o.name();
                let sa = o
                    .metadata()
                    .pointer("/annotations/kubernetes.io~1service-account.name")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let mut evidence = vec![format!(
                    "Secret {ns}/{name} of type kubernetes.io/service-account-token holds a \
                     non-expiring token for ServiceAccount {ns}/{sa}"
                )];
                if let Some(created) = o
                    .metadata()
                    .get("creationTimestamp")
                    .and_then(Value::as_str)
                    .and_then(crate::parse_rfc3339)
                {
                    evidence.push(format!(
                        "created {} days ago ({})",
                        (now - created).max(0) / 86_400,
                        crate::rfc3339(created)
                    ));
                }
                out.push(
                    New {
                        rule: "zt-assess-long-lived-token",
                        title: format!("Long-lived service-account token {ns}/{name}"),
                        severity: Severity::High,
                        pillar: Pillar::Identity,
                        category: "static-credentials",
                        resource: format!("{ns}/Secret/{name}"),
                        namespace: Some(ns.to_string()),
                        evidence,
                        remediation: "Delete the token Secret and use bound, expiring tokens \
                                      (the projected token volume, or `kubectl create token` \
                                      with a duration); for CI, use workload identity \
                                      federation instead of a stored token.",
                        controls: controls(&[
                            (ISO, &["A.5.17", "A.8.5"]),
                            (SOC2, &["CC6.1", "CC6.2"]),
                            (GDPR, &["Art. 32(1)(b)"]),
                        ]),
                        at: at(o),
                    }
                    .done(),
                );
            }
            "ConfigMap" => {
                let mut evidence = Vec::new();
                for field in ["data", "binaryData"] {
                    for (k, v) in o
                        .value
                        .get(field)
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        let v = v.as_str().unwrap_or("");
                        if let Some(what) = credential_value(v) {
                            evidence.push(format!("key {k:?} holds {what} (value masked)"));
                        } else if credential_key(k) && !v.trim().is_empty() {
                            evidence.push(format!(
                                "key {k:?} looks like a credential (value masked, {} characters)",
                                v.chars().count()
                            ));
                        }
                    }
                }
                if evidence.is_empty() {
                    continue;
                }
                let name = o.name();
                out.push(
                    New {
                        rule: "zt-assess-configmap-credentials",
                        title: format!("ConfigMap {ns}/{name} holds credentials in clear"),
                        severity: Severity::High,
                        pillar: Pillar::Data,
                        category: "static-credentials",
                        resource: format!("{ns}/ConfigMap/{name}"),
                        namespace: Some(ns.to_string()),
                        evidence,
                        remediation: "Move the values into a Secret (or an external secret \
                                      store), rotate them since they were readable by anyone \
                                      who can read ConfigMaps, and reference them with \
                                      secretKeyRef.",
                        controls: controls(&[
                            (ISO, &["A.5.17", "A.8.24"]),
                            (SOC2, &["CC6.1", "CC6.7"]),
                            (GDPR, &["Art. 25(1)", "Art. 32(1)(a)", "Art. 32(1)(b)"]),
                        ]),
                        at: at(o),
                    }
                    .done(),
                );
            }
            _ => {}
        }
    }
}

fn identities(_ctx: &Context<'_>, inventory: &Inventory, out: &mut Vec<Finding>) {
    for i in &inventory.identities {
        if i.category == IdentityCategory::System {
            continue;
        }
        let ns = i.subject.namespace.clone();
        if i.cluster_admin {
            let mut bindings: Vec<String> = i
                .permissions
                .iter()
                .filter(|p| {
                    p.verbs.iter().any(|v| v == "*") && p.resources.iter().any(|r| r == "*")
                })
                .map(|p| match &p.via_group {
                    Some(g) => format!("{} grants {} through group {g}", p.binding, p.role),
                    None => format!("{} grants {}", p.binding, p.role),
                })
                .collect();
            bindings.sort();
            bindings.dedup();
            let mut evidence = vec![format!("{} holds `*` on `*` cluster-wide", i.id)];
            evidence.extend(bindings);
            out.push(
                New {
                    rule: "zt-assess-cluster-admin",
                    title: format!("{} is cluster-admin", i.id),
                    severity: Severity::Critical,
                    pillar: Pillar::Identity,
                    category: "rbac",
                    resource: i.id.clone(),
                    namespace: ns.clone(),
                    evidence,
                    remediation: "Replace the cluster-wide binding with namespaced Roles that \
                                  grant what the identity does; keep break-glass admin behind \
                                  a just-in-time grant.",
                    controls: controls(&[
                        (ISO, &["A.5.15", "A.5.18", "A.8.2"]),
                        (SOC2, &["CC6.1", "CC6.3"]),
                        (GDPR, &["Art. 25(2)", "Art. 32(1)(b)"]),
                    ]),
                    at: None,
                }
                .done(),
            );
        } else if !i.escalation_paths.is_empty() {
            out.push(
                New {
                    rule: "zt-assess-escalation-path",
                    title: format!("{} can escalate its own privileges", i.id),
                    severity: Severity::High,
                    pillar: Pillar::Identity,
                    category: "rbac",
                    resource: i.id.clone(),
                    namespace: ns,
                    evidence: i.escalation_paths.clone(),
                    remediation: "Remove escalate, bind and impersonate, and the right to \
                                  create pods or tokens as more privileged service accounts, \
                                  from the roles bound to this identity.",
                    controls: controls(&[
                        (ISO, &["A.5.15", "A.8.2"]),
                        (SOC2, &["CC6.1", "CC6.3"]),
                        (GDPR, &["Art. 32(1)(b)"]),
                    ]),
                    at: None,
                }
                .done(),
            );
        }
    }
}

fn system_namespace(ns: &str) -> bool {
    ns.starts_with("kube-")
}

fn workloads(ctx: &Context<'_>, inventory: &Inventory, out: &mut Vec<Finding>) {
    let stores: HashSet<&str> = inventory
        .data_stores
        .iter()
        .map(|d| d.workload.as_str())
        .collect();
    // Without the bindings, "has no permissions" would be a guess.
    let rbac_seen =
        !ctx.coverage.gaps.iter().any(|g| {
            g.id == "missing-kind:RoleBinding" || g.id == "missing-kind:ClusterRoleBinding"
        });
    for w in &inventory.workloads {
        let here = w.file.clone().zip(w.line);
        let ns = Some(w.namespace.clone());
        if w.token_mounted && !w.identity_has_permissions && rbac_seen {
            out.push(
                New {
                    rule: "zt-assess-unused-token",
                    title: format!("{} mounts a token it has no use for", w.id),
                    severity: Severity::Medium,
                    pillar: Pillar::Identity,
                    category: "token",
                    resource: w.id.clone(),
                    namespace: ns.clone(),
                    evidence: vec![format!(
                        "its pods get a token for ServiceAccount {}/{} \
                         (automountServiceAccountToken is not false), and RBAC grants that \
                         account nothing",
                        w.namespace, w.service_account
                    )],
                    remediation: "Set automountServiceAccountToken: false on the pod spec (or \
                                  the ServiceAccount): a stolen token that grants nothing today \
                                  still authenticates, and grants whatever is bound tomorrow.",
                    controls: controls(&[
                        (ISO, &["A.5.15", "A.8.2"]),
                        (SOC2, &["CC6.1", "CC6.3"]),
                        (GDPR, &["Art. 25(2)"]),
                    ]),
                    at: here.clone(),
                }
                .done(),
            );
        }
        if !w.exposed.is_empty() {
            let store = stores.contains(w.id.as_str());
            let mut evidence = w.exposed.clone();
            if store {
                evidence.push(format!("{} is a data store", w.id));
            }
            out.push(
                New {
                    rule: "zt-assess-public-exposure",
                    title: if store {
                        format!("Data store {} is exposed outside the cluster", w.id)
                    } else {
                        format!("{} is exposed outside the cluster", w.id)
                    },
                    severity: if store {
                        Severity::Critical
                    } else {
                        Severity::Medium
                    },
                    pillar: Pillar::Networks,
                    category: "exposure",
                    resource: w.id.clone(),
                    namespace: ns.clone(),
                    evidence,
                    remediation: "Expose only through an authenticating gateway or ingress; \
                                  use ClusterIP Services for in-cluster consumers, and avoid \
                                  hostPort and hostNetwork.",
                    controls: if store {
                        controls(&[
                            (ISO, &["A.8.20", "A.8.21", "A.8.3"]),
                            (SOC2, &["CC6.1", "CC6.6"]),
                            (GDPR, &["Art. 25(1)", "Art. 32(1)(b)"]),
                        ])
                    } else {
                        controls(&[
                            (ISO, &["A.8.20", "A.8.21"]),
                            (SOC2, &["CC6.6"]),
                            (GDPR, &["Art. 32(1)(b)"]),
                        ])
                    },
                    at: here.clone(),
                }
                .done(),
            );
        }
        if system_namespace(&w.namespace) {
            continue;
        }
        if !w.has_owner {
            out.push(
                New {
                    rule: "zt-assess-missing-owner",
                    title: format!("{} names no owner", w.id),
                    severity: Severity::Low,
                    pillar: Pillar::ApplicationsAndWorkloads,
                    category: "ownership",
                    resource: w.id.clone(),
                    namespace: ns.clone(),
                    evidence: vec![format!(
                        "none of the labels {} is set",
                        ctx.options.owner_labels.join(", ")
                    )],
                    remediation: "Label the workload with its owning team so findings and \
                                  access reviews reach someone.",
                    controls: controls(&[(ISO, &["A.5.9"]), (SOC2, &["CC6.1"])]),
                    at: here.clone(),
                }
                .done(),
            );
        }
        if !w.has_data_classification {
            out.push(
                New {
                    rule: "zt-assess-missing-data-classification",
                    title: format!("{} has no data classification", w.id),
                    severity: Severity::Low,
                    pillar: Pillar::Data,
                    category: "ownership",
                    resource: w.id.clone(),
                    namespace: ns,
                    evidence: vec![format!(
                        "none of the labels {} is set",
                        ctx.options.classification_labels.join(", ")
                    )],
                    remediation: "Label the workload with the classification of the data it \
                                  handles, so policy can be stricter where it matters.",
                    controls: controls(&[
                        (ISO, &["A.5.12", "A.5.13"]),
                        (SOC2, &["CC6.1"]),
                        (GDPR, &["Art. 25(1)"]),
                    ]),
                    at: here,
                }
                .done(),
            );
        }
    }
}

/// Whether an RBAC role is one of Kubernetes' own (bootstrap roles and
/// `system:` roles): their wildcards are by design and not the team's to fix.
fn builtin_role(o: &Object) -> bool {
    o.name().starts_with("system:")
        || o.label("kubernetes.io/bootstrapping") == Some("rbac-defaults")
}

/// The zero-trust pack and the Pod Security baseline over the workloads
/// (their top objects, once each: 50 replicas are one finding) and the
/// RBAC roles, one evaluator per thread.
fn pack_findings(ctx: &Context<'_>) -> Vec<Finding> {
    let set = match PolicySetBuilder::new()
        .pack("zero-trust")
        .pack("pss-baseline")
        .build()
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "policy packs did not build; pack findings skipped");
            return Vec::new();
        }
    };
    let mut targets: Vec<(&Object, String, Option<String>)> = ctx
        .workloads
        .iter()
        .map(|w| (w.object, w.id(), Some(w.namespace.to_string())))
        .collect();
    for o in ctx.objects {
        match o.kind() {
            "Role" if !builtin_role(o) => {
                let ns = o.namespace().unwrap_or("default").to_string();
                targets.push((o, format!("{ns}/Role/{}", o.name()), Some(ns)));
            }
            "ClusterRole" if !builtin_role(o) => {
                targets.push((o, format!("ClusterRole/{}", o.name()), None));
            }
            _ => {}
        }
    }
    let results: Vec<Vec<Finding>> = targets
        .par_iter()
        .map_init(
            || set.evaluator(),
            |ev, (o, resource, ns)| match ev.evaluate(o) {
                Ok(fs) => fs
                    .into_iter()
                    .filter(|f| PACK_RULES.contains(&f.rule.as_str()))
                    .map(|f| convert(f, resource, ns))
                    .collect(),
                Err(e) => {
                    tracing::warn!(resource = %resource, error = %e, "pack evaluation failed");
                    Vec::new()
                }
            },
        )
        .collect();
    // One finding per (rule, resource): a rule firing on three containers
    // is one finding with three lines of evidence.
    let mut merged: BTreeMap<String, Finding> = BTreeMap::new();
    for f in results.into_iter().flatten() {
        match merged.get_mut(&f.id) {
            Some(m) => {
                for e in f.evidence {
                    if !m.evidence.contains(&e) {
                        m.evidence.push(e);
                    }
                }
            }
            None => {
                merged.insert(f.id.clone(), f);
            }
        }
    }
    merged.into_values().collect()
}

fn convert(f: keycard_policy::Finding, resource: &str, ns: &Option<String>) -> Finding {
    let (pillar, category) = match f.rule.as_str() {
        "zt-env-secret-literal" => (Pillar::Data, "static-credentials"),
        r if r.starts_with("zt-rbac-") => (Pillar::Identity, "rbac"),
        _ => (Pillar::ApplicationsAndWorkloads, "workload-privilege"),
    };
    let mut evidence = f.message.clone();
    if let Some(p) = &f.path {
        evidence.push_str(&format!(" (at {p})"));
    }
    let mut controls: BTreeMap<String, Vec<String>> = (*f.controls).clone();
    controls
        .entry(GDPR.to_string())
        .or_insert_with(|| vec!["Art. 32(1)(b)".to_string()]);
    Finding {
        id: Finding::make_id(&f.rule, resource),
        rule: f.rule,
        title: f.title.to_string(),
        severity: f.severity,
        pillar,
        category: category.to_string(),
        resource: resource.to_string(),
        namespace: ns.clone(),
        evidence: vec![evidence],
        remediation: f.remediation.to_string(),
        controls,
        file: Some(f.file),
        line: Some(f.line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_keys_and_values() {
        assert!(credential_key("DB_PASSWORD"));
        assert!(credential_key("stripe.apiKey"));
        assert!(credential_key("aws_secret_access_key"));
        assert!(!credential_key("token-ttl"));
        assert!(!credential_key("password-file"));
        assert!(!credential_key("log-level"));
        assert_eq!(
            credential_value("key: AKIAABCDEFGHIJKLMNOP\n"),
            Some("an AWS access key id")
        );
        assert_eq!(
            credential_value("-----BEGIN RSA PRIVATE KEY-----\nMII..."),
            Some("a PEM private key")
        );
        assert_eq!(credential_value("-----BEGIN CERTIFICATE-----"), None);
        assert_eq!(credential_value("plain"), None);
    }
}
