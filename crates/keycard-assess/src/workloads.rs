//! Workloads, the identity each runs as, data stores and who reaches them,
//! namespaces.
//!
//! Reachability comes from `keycard_flows`, the same NetworkPolicy
//! evaluator `keycard flows` uses, but only for the pairs that end at a
//! data store: the question is "who can reach the databases", and deciding
//! every pair of a 10,000-pod cluster would be quadratic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use keycard_flows::{Cluster, Labels};
use keycard_k8s::Object;
use serde_json::Value;

use crate::model::{DataStore, Identity, Inventory, NamespaceInfo, Reach, Subject, WorkloadInfo};
use crate::objects::Workload;
use crate::Context;

/// Containers of every kind in a pod spec.
pub(crate) fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .filter_map(|k| spec.get(k).and_then(Value::as_array))
        .flatten()
}

/// A map of strings (labels, a Service selector); other values are left out.
pub(crate) fn str_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn is_true(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bool) == Some(true)
}

/// Whether a Service selector (a plain map, every pair required) selects
/// these pod labels. An empty selector selects nothing: such a Service
/// has hand-made Endpoints, not pods.
fn service_selects(selector: &BTreeMap<String, String>, labels: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Where each object sits in the ownership chains of the input: a
/// `(namespace, kind, name)` resolves to the id of the workload at the top,
/// as [`crate::objects::workloads`] names it (an owner missing from the input
/// stands for its children).
struct Owners<'a> {
    owner: HashMap<(&'a str, &'a str, &'a str), (&'a str, &'a str)>,
}

impl<'a> Owners<'a> {
    fn new(objects: &'a [Object]) -> Self {
        let mut owner = HashMap::new();
        for o in objects {
            let Some(name) = o.metadata().get("name").and_then(Value::as_str) else {
                continue;
            };
            let Some((k, n)) = crate::objects::owner(o) else {
                continue;
            };
            owner.insert((o.namespace().unwrap_or("default"), o.kind(), name), (k, n));
        }
        Owners { owner }
    }

    fn top(&self, ns: &str, kind: &str, name: &str) -> String {
        let (mut k, mut n) = (kind, name);
        // Ownership is a tree in a real cluster; the bound guards a cycle
        // in a hand-written input.
        for _ in 0..16 {
            match self.owner.get(&(ns, k, n)) {
                Some(&(ok, on)) => (k, n) = (ok, on),
                None => break,
            }
        }
        format!("{ns}/{k}/{n}")
    }
}

/// `ns/name` of every Secret the pod spec mounts or reads into env.
fn secrets_mounted(ns: &str, spec: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut add = |n: Option<&str>| {
        if let Some(n) = n.filter(|n| !n.is_empty()) {
            out.insert(format!("{ns}/{n}"));
        }
    };
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(v.pointer("/secret/secretName").and_then(Value::as_str));
        for s in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(s.pointer("/secret/name").and_then(Value::as_str));
        }
    }
    for c in containers(spec) {
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            add(e
                .pointer("/valueFrom/secretKeyRef/name")
                .and_then(Value::as_str));
        }
        for e in c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(e.pointer("/secretRef/name").and_then(Value::as_str));
        }
    }
    out.into_iter().collect()
}

/// Known data-store engines: the image name they ship under, the engine
/// name the report uses.
const ENGINES_BY_IMAGE: &[(&str, &str)] = &[
    ("postgres", "postgresql"),
    ("postgis", "postgresql"),
    ("timescaledb", "postgresql"),
    ("mysql", "mysql"),
    ("mariadb", "mariadb"),
    ("percona", "mysql"),
    ("mongo", "mongodb"),
    ("redis", "redis"),
    ("valkey", "valkey"),
    ("keydb", "redis"),
    ("elasticsearch", "elasticsearch"),
    ("opensearch", "opensearch"),
    ("cassandra", "cassandra"),
    ("scylla", "cassandra"),
    ("kafka", "kafka"),
    ("rabbitmq", "rabbitmq"),
    ("memcached", "memcached"),
    ("minio", "minio"),
    ("cockroach", "cockroachdb"),
    ("clickhouse", "clickhouse"),
    ("etcd", "etcd"),
    ("mssql", "mssql"),
    ("neo4j", "neo4j"),
    ("couchdb", "couchdb"),
    ("influxdb", "influxdb"),
    ("nats", "nats"),
];

/// Well-known listening ports of data stores.
const ENGINES_BY_PORT: &[(u16, &str)] = &[
    (5432, "postgresql"),
    (3306, "mysql"),
    (27017, "mongodb"),
    (6379, "redis"),
    (9200, "elasticsearch"),
    (9042, "cassandra"),
    (9092, "kafka"),
    (5672, "rabbitmq"),
    (11211, "memcached"),
    (26257, "cockroachdb"),
    (8123, "clickhouse"),
    (1433, "mssql"),
    (1521, "oracle"),
    (7687, "neo4j"),
    (5984, "couchdb"),
    (8086, "influxdb"),
];

/// The engine an image ships, from the last path segment of its name
/// (`docker.io/bitnami/postgresql:16` -> `postgresql`). Exporters,
/// operators and UIs next to a data store are not data stores.
fn engine_of_image(image: &str) -> Option<&'static str> {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let name = last.split(':').next().unwrap_or(last).to_ascii_lowercase();
    if [
        "exporter",
        "operator",
        "commander",
        "-ui",
        "admin",
        "proxy",
        "client",
        "express",
    ]
    .iter()
    .any(|w| name.contains(w))
    {
        return None;
    }
    ENGINES_BY_IMAGE
        .iter()
        .find(|(prefix, _)| {
            name.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty()
                    || rest.starts_with(|c: char| !c.is_ascii_alphabetic())
                    || ["ql", "db", "sql", "search", "mq"].contains(&rest)
            })
        })
        .map(|(_, e)| *e)
}

/// Numeric container ports (TCP unless stated) of a pod spec.
fn container_ports(spec: &Value) -> Vec<u16> {
    let mut ports: Vec<u16> = containers(spec)
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// How a workload is recognised as a data store, if it is one.
fn recognise(w: &Workload<'_>, ports: &[u16]) -> Option<(String, String)> {
    for c in containers(w.template.spec) {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        if let Some(engine) = engine_of_image(image) {
            // etcd is the control plane's own store in kube-system: the
            // cluster's, not an application's.
            if engine == "etcd" && w.namespace == "kube-system" {
                continue;
            }
            return Some((engine.to_string(), format!("image {image}")));
        }
    }
    for p in ports {
        if let Some((_, engine)) = ENGINES_BY_PORT.iter().find(|(q, _)| q == p) {
            return Some((engine.to_string(), format!("container port {p}")));
        }
    }
    let labels = str_map(w.template.metadata.get("labels"));
    let obj_labels = str_map(w.object.metadata().get("labels"));
    for l in [&labels, &obj_labels] {
        if l.get("app.kubernetes.io/component").map(String::as_str) == Some("database") {
            let engine = l
                .get("app.kubernetes.io/name")
                .cloned()
                .unwrap_or_else(|| "database".to_string());
            return Some((engine, "label app.kubernetes.io/component=database".into()));
        }
    }
    None
}

pub fn build(ctx: &Context<'_>, inventory: &mut Inventory) {
    let objects = ctx.objects;
    let wls = ctx.workloads;
    let identities: HashMap<&str, &Identity> = inventory
        .identities
        .iter()
        .map(|i| (i.id.as_str(), i))
        .collect();

    // Indexes by namespace, built once.
    let mut sa_automount: HashMap<(&str, &str), bool> = HashMap::new();
    let mut services: HashMap<&str, Vec<&Object>> = HashMap::new();
    let mut ingresses: Vec<&Object> = Vec::new();
    let mut namespaces: BTreeMap<String, NamespaceInfo> = BTreeMap::new();
    let mut ns_entry = |name: &str, exists: bool| {
        let e = namespaces
            .entry(name.to_string())
            .or_insert_with(|| NamespaceInfo {
                name: name.to_string(),
                exists: false,
                default_deny_ingress: false,
                default_deny_egress: false,
                workloads: 0,
                pod_security: None,
            });
        e.exists |= exists;
    };
    let mut pod_security: HashMap<String, String> = HashMap::new();
    for o in objects {
        if let Some(ns) = o.namespace() {
            ns_entry(ns, false);
        }
        match o.kind() {
            "Namespace" => {
                let name = o.name();
                ns_entry(&name, true);
                if let Some(l) = o.label("pod-security.kubernetes.io/enforce") {
                    pod_security.insert(name, l.to_string());
                }
            }
            "ServiceAccount" => {
                if let (Some(ns), Some(name), Some(a)) = (
                    o.namespace(),
                    o.metadata().get("name").and_then(Value::as_str),
                    o.value
                        .get("automountServiceAccountToken")
                        .and_then(Value::as_bool),
                ) {
                    sa_automount.insert((ns, name), a);
                }
            }
            "Service" => services
                .entry(o.namespace().unwrap_or("default"))
                .or_default()
                .push(o),
            "Ingress" if o.api_version().starts_with("networking.k8s.io/") => ingresses.push(o),
            _ => {}
        }
    }
    for w in wls {
        ns_entry(w.namespace, false);
    }

    // Ingress backends: (namespace, service name) -> the Ingresses using it.
    let mut ingress_of: HashMap<(&str, &str), Vec<String>> = HashMap::new();
    for ing in &ingresses {
        let ns = ing.namespace().unwrap_or("default");
        let spec = ing.value.get("spec").unwrap_or(&Value::Null);
        let mut backends: Vec<&str> = spec
            .pointer("/defaultBackend/service/name")
            .and_then(Value::as_str)
            .into_iter()
            .collect();
        for r in spec
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for p in r
                .pointer("/http/paths")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = p.pointer("/backend/service/name").and_then(Value::as_str) {
                    backends.push(s);
                }
            }
        }
        backends.sort_unstable();
        backends.dedup();
        for b in backends {
            ingress_of
                .entry((ns, b))
                .or_default()
                .push(format!("Ingress {}/{}", ns, ing.name()));
        }
    }

    let mut out = Vec::with_capacity(wls.len());
    for w in wls {
        let spec = w.template.spec;
        let sa = w.service_account();
        let identity = identities
            .get(
                Subject::service_account(w.namespace, sa)
                    .to_string()
                    .as_str(),
            )
            .copied();
        let token_mounted = spec
            .get("automountServiceAccountToken")
            .and_then(Value::as_bool)
            .or_else(|| sa_automount.get(&(w.namespace, sa)).copied())
            .unwrap_or(true);
        let pod_labels: Labels = str_map(w.template.metadata.get("labels"));
        let mut labels = str_map(w.object.metadata().get("labels"));
        for (k, v) in &pod_labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let host_network = is_true(spec.get("hostNetwork"));
        let host_namespaces: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
            .into_iter()
            .filter(|k| is_true(spec.get(*k)))
            .map(String::from)
            .collect();
        let privileged =
            containers(spec).any(|c| is_true(c.pointer("/securityContext/privileged")));

        let mut exposed = Vec::new();
        for svc in services.get(w.namespace).into_iter().flatten() {
            let s = svc.value.get("spec").unwrap_or(&Value::Null);
            if !service_selects(&str_map(s.get("selector")), &pod_labels) {
                continue;
            }
            let name = svc.name();
            let ty = s.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
            if ty == "LoadBalancer" || ty == "NodePort" {
                exposed.push(format!("Service {}/{name} ({ty})", w.namespace));
            }
            for ing in ingress_of
                .get(&(w.namespace, name.as_str()))
                .into_iter()
                .flatten()
            {
                exposed.push(format!("{ing} via Service {name}"));
            }
        }
        for c in containers(spec) {
            for p in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(hp) = p.get("hostPort").and_then(Value::as_u64).filter(|p| *p > 0) {
                    exposed.push(format!("hostPort {hp}"));
                }
            }
        }
        if host_network {
            exposed.push("hostNetwork".to_string());
        }
        exposed.dedup();

        let has = |keys: &[String]| {
            keys.iter()
                .any(|k| labels.get(k).is_some_and(|v| !v.is_empty()))
        };
        out.push(WorkloadInfo {
            id: w.id(),
            kind: w.kind.to_string(),
            namespace: w.namespace.to_string(),
            name: w.name.to_string(),
            service_account: sa.to_string(),
            token_mounted,
            identity_has_permissions: identity.is_some_and(|i| !i.permissions.is_empty()),
            secrets_mounted: secrets_mounted(w.namespace, spec),
            secrets_readable: identity
                .map(|i| i.secrets_readable.clone())
                .unwrap_or_default(),
            privileged,
            host_namespaces,
            exposed,
            has_owner: has(&ctx.options.owner_labels),
            has_data_classification: has(&ctx.options.classification_labels),
            labels,
            file: Some(w.object.source.file.to_string()),
            line: Some(w.object.source.line),
        });
    }

    // Namespaces: workload counts and default-deny policies.
    for w in &out {
        if let Some(n) = namespaces.get_mut(&w.namespace) {
            n.workloads += 1;
        }
    }
    for p in &ctx.cluster.network_policies {
        if !p.pod_selector.is_everything() {
            continue;
        }
        if let Some(n) = namespaces.get_mut(&p.namespace) {
            n.default_deny_ingress |= p.affects_ingress && p.ingress.is_empty();
            n.default_deny_egress |= p.affects_egress && p.egress.is_empty();
        }
    }
    for (name, level) in pod_security {
        if let Some(n) = namespaces.get_mut(&name) {
            n.pod_security = Some(level);
        }
    }

    inventory.data_stores = data_stores(ctx, wls, objects);
    inventory.workloads = out;
    inventory.namespaces = namespaces.into_values().collect();
}

/// Data stores, and who NetworkPolicy lets reach each.
fn data_stores(ctx: &Context<'_>, wls: &[Workload<'_>], objects: &[Object]) -> Vec<DataStore> {
    let cluster: &Cluster = ctx.cluster;
    let owners = Owners::new(objects);
    // Every peer of the connectivity model, as the workload it belongs to.
    let peer_workload: Vec<String> = cluster
        .workloads
        .iter()
        .map(|p| owners.top(&p.namespace, &p.kind, &p.name))
        .collect();
    let mut peers_of: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, id) in peer_workload.iter().enumerate() {
        peers_of.entry(id.as_str()).or_default().push(i);
    }
    let peer_index: HashMap<String, usize> = cluster
        .workloads
        .iter()
        .enumerate()
        .map(|(i, p)| (cluster.peer_name(p), i))
        .collect();

    let mut stores = Vec::new();
    let mut dsts = Vec::new();
    for w in wls {
        let ports = container_ports(w.template.spec);
        let Some((engine, recognised_by)) = recognise(w, &ports) else {
            continue;
        };
        let id = w.id();
        // The peer that stands for the workload: the workload object itself
        // when the model has it, else one of its ReplicaSets or pods.
        let own = format!("{}/{}[{}]", w.namespace, w.name, w.kind);
        let peer = peer_index
            .get(&own)
            .copied()
            .or_else(|| peers_of.get(id.as_str()).and_then(|v| v.first().copied()));
        let labels: Labels = peer
            .and_then(|i| cluster.workloads.get(i))
            .map(|p| p.labels.clone())
            .unwrap_or_else(|| str_map(w.template.metadata.get("labels")));
        let isolated = cluster.network_policies.iter().any(|p| {
            p.namespace == w.namespace && p.affects_ingress && p.pod_selector.matches(&labels)
        });
        if let Some(i) = peer {
            dsts.push((stores.len(), i));
        }
        stores.push(DataStore {
            workload: id,
            engine,
            recognised_by,
            ports,
            reachable_from: Vec::new(),
            reachable_from_outside: false,
            isolated,
        });
    }
    let dst_peers: Vec<usize> = dsts.iter().map(|(_, i)| *i).collect();
    let conns = keycard_flows::connections_to(cluster, &dst_peers);
    let store_of_peer: HashMap<String, usize> = dsts
        .iter()
        .filter_map(|(s, i)| Some((cluster.peer_name(cluster.workloads.get(*i)?), *s)))
        .collect();
    for c in conns {
        let Some(&s) = store_of_peer.get(&c.dst) else {
            continue;
        };
        let Some(store) = stores.get_mut(s) else {
            continue;
        };
        match peer_index.get(&c.src) {
            Some(&i) => {
                let Some(src) = peer_workload.get(i) else {
                    continue;
                };
                // A Deployment's own ReplicaSets are the Deployment.
                if *src == store.workload || store.reachable_from.iter().any(|r| r.workload == *src)
                {
                    continue;
                }
                store.reachable_from.push(Reach {
                    workload: src.clone(),
                    ports: c.conn,
                });
            }
            None => store.reachable_from_outside = true,
        }
    }
    for s in &mut stores {
        s.reachable_from.sort_by(|a, b| a.workload.cmp(&b.workload));
    }
    tracing::debug!(
        data_stores = stores.len(),
        pairs = dst_peers.len(),
        "data-store reach decided"
    );
    stores
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn images_name_their_engine_and_sidecars_do_not() {
        assert_eq!(engine_of_image("postgres:16"), Some("postgresql"));
        assert_eq!(
            engine_of_image("docker.io/bitnami/postgresql:16.2@sha256:ab"),
            Some("postgresql")
        );
        assert_eq!(engine_of_image("redis:alpine"), Some("redis"));
        assert_eq!(engine_of_image("mongo"), Some("mongodb"));
        assert_eq!(engine_of_image("quay.io/prometheus/redis-exporter:1"), None);
        assert_eq!(engine_of_image("oliver006/redis_exporter"), None);
        assert_eq!(engine_of_image("zalando/postgres-operator:1"), None);
        assert_eq!(engine_of_image("nginx:1.25"), None);
        assert_eq!(engine_of_image("redisinsight"), None);
        assert_eq!(engine_of_image("example/kafkacat"), None);
    }

    #[test]
    fn secrets_come_from_volumes_projections_and_env() {
        let spec = serde_json::json!({
            "volumes": [
                {"name": "a", "secret": {"secretName": "tls"}},
                {"name": "b", "projected": {"sources": [{"secret": {"name": "bundle"}}, {"configMap": {"name": "x"}}]}},
                {"name": "c", "configMap": {"name": "cm"}}
            ],
            "containers": [{"name": "c", "env": [
                {"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "Q", "value": "plain"}
            ], "envFrom": [{"secretRef": {"name": "api"}}, {"configMapRef": {"name": "cfg"}}]}]
        });
        assert_eq!(
            secrets_mounted("shop", &spec),
            ["shop/api", "shop/bundle", "shop/db", "shop/tls"]
        );
    }
}
