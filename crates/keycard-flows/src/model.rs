//! The cluster model: workloads, namespaces and policies parsed from
//! Kubernetes objects. Parsing is separate from evaluation so that every
//! invalid object is reported once, with its file and line, and then left
//! out, instead of failing the whole evaluation.

use std::collections::{BTreeMap, HashMap};

use keycard_k8s::{Object, Source};
use serde_json::Value;

use crate::conn::{Protocol, MAX_PORT, MIN_PORT};
pub use crate::ip::{format_ip, parse_cidr, IpRange, IpSet, MAX_IPV4};
use crate::selector::{Labels, Selector};

/// The label the API server puts on every namespace; a namespace that is
/// only referenced (no Namespace object given) still carries it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The namespace label that opts a namespace into a primary user-defined
/// network.
pub const PRIMARY_UDN_LABEL: &str = "k8s.ovn.org/primary-user-defined-network";

/// A problem with one input object. The object is skipped (or, for a
/// warning, used with the offending part ignored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {object}: {message}")]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    /// `Kind ns/name` of the object.
    pub object: String,
    pub message: String,
    /// True when the object was still used (only part of it was ignored).
    pub warning: bool,
}

/// A container port that named ports resolve to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u64,
    pub protocol: Protocol,
}

/// One peer of the connectivity map: a workload object (Deployment,
/// StatefulSet, ...) or the owner of a group of pods, with the labels and
/// ports of its pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub kind: String,
    pub labels: Labels,
    pub ports: Vec<ContainerPort>,
    /// Names of the secondary networks (NetworkAttachmentDefinitions) the
    /// pods attach to, sorted.
    pub secondary_networks: Vec<String>,
    /// Static addresses on secondary networks: (network name, address),
    /// IPv4 or IPv6 (a dual-stack pod has one of each).
    pub secondary_addresses: Vec<(String, IpRange)>,
}

impl Workload {
    /// The name as the connlist prints it: `ns/name[Kind]`.
    pub fn peer_name(&self) -> String {
        format!("{}/{}[{}]", self.namespace, self.name, self.kind)
    }
}

/// Which ports a rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// Every port of the protocol.
    All,
    /// `port` or `port..=endPort`.
    Range(u64, u64),
    /// A container port name, resolved against the destination pod.
    Named(String),
}

/// One entry of a rule's `ports`. `protocol` is `None` only for an
/// AdminNetworkPolicy `namedPort`, which takes the protocol of the
/// container port it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub protocol: Option<Protocol>,
    pub port: PortRef,
}

/// One `from`/`to` entry of a NetworkPolicy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpPeer {
    /// `podSelector` and/or `namespaceSelector`; both present means AND.
    Pods {
        pods: Option<Selector>,
        namespaces: Option<Selector>,
    },
    /// `ipBlock`: the addresses of `cidr` minus its `except`s.
    IpBlock { text: String, addresses: IpSet },
}

/// One ingress or egress rule of a NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpRule {
    /// Empty means every peer (an absent or empty `from`/`to`).
    pub peers: Vec<NpPeer>,
    /// Empty means every port.
    pub ports: Vec<PortSpec>,
}

/// A `networking.k8s.io/v1` NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub source: Source,
    pub pod_selector: Selector,
    /// Whether the policy isolates the selected pods for ingress.
    pub affects_ingress: bool,
    /// Whether the policy isolates the selected pods for egress.
    pub affects_egress: bool,
    pub ingress: Vec<NpRule>,
    pub egress: Vec<NpRule>,
}

/// What an AdminNetworkPolicy rule does to the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// Skip the remaining admin policies; NetworkPolicies (then the
    /// baseline) decide.
    Pass,
}

/// A subject or peer of an (Baseline)AdminNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminPeer {
    Namespaces(Selector),
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
    Networks(IpSet),
    /// `nodes` peers are not modelled: they match no workload or address.
    Nodes,
}

/// One rule of an (Baseline)AdminNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRule {
    pub name: String,
    pub action: Action,
    pub peers: Vec<AdminPeer>,
    /// `None` means every port.
    pub ports: Option<Vec<PortSpec>>,
}

/// An AdminNetworkPolicy (`priority` set) or the BaselineAdminNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPolicy {
    pub name: String,
    pub source: Source,
    pub priority: Option<i64>,
    pub subject: AdminPeer,
    pub ingress: Vec<AdminRule>,
    pub egress: Vec<AdminRule>,
}

/// A workload reachable from an ingress controller through a Route or an
/// Ingress object, and on which container ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub workload: usize,
    pub ports: Vec<PortSpec>,
}

/// Everything the evaluator needs, parsed and validated.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub workloads: Vec<Workload>,
    /// Namespace name to labels (with the implicit name label).
    pub namespaces: BTreeMap<String, Labels>,
    pub network_policies: Vec<NetworkPolicy>,
    /// Sorted by priority (lowest number first), then name.
    pub admin_policies: Vec<AdminPolicy>,
    pub baseline: Option<AdminPolicy>,
    /// Workloads exposed to the ingress controller.
    pub exposures: Vec<Exposure>,
    /// Namespaces whose pods sit on a primary user-defined network instead
    /// of the default pod network. Pods on different networks cannot
    /// reach each other whatever the policies say.
    pub primary_networks: BTreeMap<String, Network>,
    /// MultiNetworkPolicies, each with the secondary network names it is
    /// for (`k8s.v1.cni.cncf.io/policy-for`).
    pub multi_network_policies: Vec<(NetworkPolicy, Vec<String>)>,
    /// Whether the input has VirtualMachines or user-defined networks, in
    /// which case the report lists the network of every workload.
    pub network_aware: bool,
    /// Whether the cluster is dual-stack (or IPv6-only): set when a Pod's
    /// `status.podIPs` or a secondary-network address is IPv6, or by the
    /// caller. Only then does the connlist list the IPv6 outside world as
    /// external peers; IPv6 ipBlocks are decided either way.
    pub dual_stack: bool,
}

/// Whether a primary network is namespaced (UDN) or cluster-wide (CUDN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetworkKind {
    /// A `UserDefinedNetwork`, named after its namespace.
    Udn,
    /// A `ClusterUserDefinedNetwork`, named by the object.
    Cudn,
    /// A secondary network from a `NetworkAttachmentDefinition`, governed by
    /// MultiNetworkPolicies instead of NetworkPolicies.
    Nad,
}

/// A network other than the default pod network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Network {
    pub kind: NetworkKind,
    pub name: String,
}

impl Cluster {
    /// The primary network of a workload; `None` is the default pod network.
    pub fn network_of(&self, w: &Workload) -> Option<&Network> {
        self.primary_networks.get(&w.namespace)
    }

    /// The peer name of a workload: on a namespaced UDN the namespace is
    /// tagged, `ns[udn]/name[Kind]`, as the connlist does.
    pub fn peer_name(&self, w: &Workload) -> String {
        match self.network_of(w) {
            Some(n) if n.kind == NetworkKind::Udn => {
                format!("{}[udn]/{}[{}]", w.namespace, w.name, w.kind)
            }
            _ => w.peer_name(),
        }
    }
}

/// The pod annotation naming secondary networks.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The MultiNetworkPolicy annotation naming the networks it applies to.
pub const POLICY_FOR_ANNOTATION: &str = "k8s.v1.cni.cncf.io/policy-for";

/// `ns/name` -> `name`.
fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Secondary networks of a pod and its static addresses on them: the
/// networks annotation is either a comma-separated list of
/// `[ns/]name[@iface]` or a JSON list of `{"name", "namespace", "ips"}`.
fn pod_networks(metadata: &Value) -> (Vec<String>, Vec<(String, IpRange)>) {
    let Some(a) = metadata
        .get("annotations")
        .and_then(|a| a.get(NETWORKS_ANNOTATION))
        .and_then(Value::as_str)
    else {
        return (Vec::new(), Vec::new());
    };
    let mut addrs = Vec::new();
    let mut out: Vec<String> = if a.trim_start().starts_with('[') {
        let entries = serde_json::from_str::<Vec<Value>>(a).unwrap_or_default();
        let mut names = Vec::new();
        for e in &entries {
            let Some(name) = e.get("name").and_then(Value::as_str) else {
                continue;
            };
            for ip in e.get("ips").and_then(Value::as_array).into_iter().flatten() {
                if let Some(addr) = ip.as_str().and_then(host_address) {
                    addrs.push((name.to_string(), addr));
                }
            }
            names.push(name.to_string());
        }
        names
    } else {
        a.split(',')
            .map(|n| {
                let n = n.trim();
                let n = n.split('@').next().unwrap_or(n);
                last_segment(n).to_string()
            })
            .filter(|n| !n.is_empty())
            .collect()
    };
    out.sort();
    out.dedup();
    (out, addrs)
}

/// Whether a Pod's `status.podIP`/`podIPs` has an IPv6 address.
fn has_ipv6_pod_ip(pod: &Value) -> bool {
    let Some(status) = pod.get("status") else {
        return false;
    };
    let listed = status
        .get("podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("ip"));
    std::iter::once(status.get("podIP"))
        .flatten()
        .chain(listed)
        .filter_map(Value::as_str)
        .any(|ip| matches!(parse_cidr(ip), Ok(IpRange::V6(..))))
}

/// `10.0.0.5/24` -> the address 10.0.0.5 (not its network); IPv6 too.
fn host_address(s: &str) -> Option<IpRange> {
    let host = s.split('/').next().unwrap_or(s);
    parse_cidr(host).ok().map(IpRange::first)
}

/// Secondary networks of a VirtualMachine (its multus networks) and the
/// static addresses its cloud-init network data gives the secondary
/// interfaces (every interface but the first, `eth0`, which is the pod
/// network's).
fn vm_networks(template: &Value) -> (Vec<String>, Vec<(String, IpRange)>) {
    let spec = template.get("spec");
    let mut out: Vec<String> = spec
        .and_then(|s| s.get("networks"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| {
            n.get("multus")
                .and_then(|m| m.get("networkName"))
                .and_then(Value::as_str)
        })
        .map(|n| last_segment(n).to_string())
        .collect();
    let (more, mut addrs) = pod_networks(template.get("metadata").unwrap_or(&Value::Null));
    out.extend(more);
    out.sort();
    out.dedup();
    if out.len() == 1 {
        for vol in spec
            .and_then(|s| s.get("volumes"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let data = ["cloudInitNoCloud", "cloudInitConfigDrive"]
                .iter()
                .find_map(|k| vol.get(*k))
                .and_then(|c| c.get("networkData"))
                .and_then(Value::as_str);
            let Some(data) = data else { continue };
            let Ok(nd) = yaml_serde::from_str::<Value>(data) else {
                continue;
            };
            for (iface, cfg) in nd
                .get("ethernets")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if iface == "eth0" {
                    continue;
                }
                for a in cfg
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(addr) = a.as_str().and_then(host_address) {
                        addrs.push((out[0].clone(), addr));
                    }
                }
            }
        }
    }
    (out, addrs)
}

/// `role: Primary` under `layer2` or `layer3` of a (C)UDN network spec.
fn is_primary(net: Option<&Value>) -> bool {
    let Some(net) = net else { return false };
    ["layer2", "layer3"].iter().any(|l| {
        net.get(*l)
            .and_then(|x| x.get("role"))
            .and_then(Value::as_str)
            == Some("Primary")
    })
}

fn describe(o: &Object) -> String {
    match o.namespace() {
        Some(ns) => format!("{} {}/{}", o.kind(), ns, o.name()),
        None => format!("{} {}", o.kind(), o.name()),
    }
}

fn diag(o: &Object, message: impl Into<String>, warning: bool) -> Diagnostic {
    Diagnostic {
        file: o.source.file.to_string(),
        line: o.source.line,
        object: describe(o),
        message: message.into(),
        warning,
    }
}

/// Splits `List`, `PodList`, `NamespaceList`, ... into their items, which
/// inherit the list's source location.
fn expand_lists(objects: &[Object]) -> Vec<Object> {
    let mut out = Vec::with_capacity(objects.len());
    for o in objects {
        let kind = o.kind();
        if kind.ends_with("List") {
            if let Some(items) = o.value.get("items").and_then(Value::as_array) {
                let item_kind = kind.trim_end_matches("List").to_string();
                for it in items {
                    let mut v = it.clone();
                    if let Some(m) = v.as_object_mut() {
                        if !m.contains_key("kind") && !item_kind.is_empty() {
                            m.insert("kind".into(), Value::String(item_kind.clone()));
                        }
                    }
                    out.push(Object {
                        value: v,
                        source: o.source.clone(),
                    });
                }
                continue;
            }
        }
        out.push(o.clone());
    }
    out
}

fn labels_of(metadata: &Value) -> Labels {
    labels_from(metadata.get("labels"))
}

/// Labels from a `labels` map (or a `matchLabels` map); non-string values
/// are kept in their text form, nested ones are ignored.
pub(crate) fn labels_from(v: Option<&Value>) -> Labels {
    let mut out = Labels::new();
    if let Some(m) = v.and_then(Value::as_object) {
        for (k, v) in m {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            out.insert(k.clone(), s);
        }
    }
    out
}

/// The declared ports of a pod spec's containers, without repeats.
pub(crate) fn container_ports(spec: &Value) -> Vec<ContainerPort> {
    let mut out = Vec::new();
    for key in ["initContainers", "containers"] {
        for c in spec
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for p in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(port) = p.get("containerPort").and_then(Value::as_u64) else {
                    continue;
                };
                let protocol = p
                    .get("protocol")
                    .and_then(Value::as_str)
                    .and_then(Protocol::parse)
                    .unwrap_or(Protocol::Tcp);
                let cp = ContainerPort {
                    name: p.get("name").and_then(Value::as_str).map(str::to_string),
                    port,
                    protocol,
                };
                if !out.contains(&cp) {
                    out.push(cp);
                }
            }
        }
    }
    out
}

const CONTROLLER_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
];

fn object_namespace(o: &Object) -> String {
    o.namespace()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// The peer a Pod belongs to: its controlling owner if it has one (so the
/// replicas of one workload are one peer), else the Pod itself.
fn pod_identity(o: &Object) -> (String, String) {
    let owners = o
        .metadata()
        .get("ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let owner = owners
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| owners.first());
    // Static pods are "owned" by their Node: they stay peers of their own.
    let owner = owner.filter(|r| r.get("kind").and_then(Value::as_str) != Some("Node"));
    if let Some(r) = owner {
        if let Some(name) = r.get("name").and_then(Value::as_str) {
            let kind = match r.get("kind").and_then(Value::as_str) {
                None | Some("") => "Pod",
                // virt-launcher pods run a VirtualMachine's instance: the
                // VirtualMachine is the peer.
                Some("VirtualMachineInstance") => "VirtualMachine",
                Some(k) => k,
            };
            return (name.to_string(), kind.to_string());
        }
    }
    (o.name(), "Pod".to_string())
}

fn parse_protocol(v: Option<&Value>) -> Result<Protocol, String> {
    match v {
        None | Some(Value::Null) => Ok(Protocol::Tcp),
        Some(Value::String(s)) => {
            Protocol::parse(s).ok_or_else(|| format!("unsupported protocol {s:?}"))
        }
        Some(other) => Err(format!("invalid protocol {other}")),
    }
}

fn check_port(n: u64) -> Result<u64, String> {
    if (MIN_PORT..=MAX_PORT).contains(&n) {
        Ok(n)
    } else {
        Err(format!("port {n} is outside 1-65535"))
    }
}

/// One NetworkPolicy `ports` entry. `endPort` is only valid after a
/// numeric `port` and must not be below it.
fn parse_np_port(p: &Value) -> Result<PortSpec, String> {
    let protocol = parse_protocol(p.get("protocol"))?;
    let end = match p.get("endPort") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| format!("endPort must be a number, got {v}"))
                .and_then(check_port)?,
        ),
    };
    let port = match p.get("port") {
        None | Some(Value::Null) => {
            if end.is_some() {
                return Err("endPort is set without a numeric port".into());
            }
            PortRef::All
        }
        Some(Value::Number(n)) => {
            let start = n
                .as_u64()
                .ok_or_else(|| format!("invalid port {n}"))
                .and_then(check_port)?;
            match end {
                Some(e) if e < start => {
                    return Err(format!("endPort {e} is below port {start}"));
                }
                Some(e) => PortRef::Range(start, e),
                None => PortRef::Range(start, start),
            }
        }
        Some(Value::String(s)) => {
            if end.is_some() {
                return Err(format!("endPort is set with the named port {s:?}"));
            }
            match s.parse::<u64>() {
                Ok(n) => {
                    let n = check_port(n)?;
                    PortRef::Range(n, n)
                }
                Err(_) => PortRef::Named(s.clone()),
            }
        }
        Some(other) => return Err(format!("invalid port {other}")),
    };
    Ok(PortSpec {
        protocol: Some(protocol),
        port,
    })
}

fn opt_selector(v: Option<&Value>) -> Result<Option<Selector>, String> {
    match v {
        None => Ok(None),
        Some(v) => Selector::parse(v).map(Some),
    }
}

fn parse_np_peer(p: &Value) -> Result<NpPeer, String> {
    if let Some(b) = p.get("ipBlock").filter(|b| !b.is_null()) {
        if p.get("podSelector").is_some() || p.get("namespaceSelector").is_some() {
            return Err("a peer with ipBlock must not have selectors".into());
        }
        let cidr = b
            .get("cidr")
            .and_then(Value::as_str)
            .ok_or_else(|| "ipBlock needs a cidr".to_string())?;
        let block = parse_cidr(cidr)?;
        let mut addresses = IpSet::from_range(block);
        for e in b
            .get("except")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let es = e
                .as_str()
                .ok_or_else(|| "ipBlock except entries must be strings".to_string())?;
            // An except of the other family, or outside the block, is
            // rejected by the API server.
            let ex = parse_cidr(es)?;
            if !block.contains(ex) {
                return Err(format!("except {es} is not inside cidr {cidr}"));
            }
            addresses = addresses.subtract(&IpSet::from_range(ex));
        }
        return Ok(NpPeer::IpBlock {
            text: cidr.to_string(),
            addresses,
        });
    }
    let pods = opt_selector(p.get("podSelector"))?;
    let namespaces = opt_selector(p.get("namespaceSelector"))?;
    if pods.is_none() && namespaces.is_none() {
        return Err("a peer needs a podSelector, a namespaceSelector or an ipBlock".into());
    }
    Ok(NpPeer::Pods { pods, namespaces })
}

fn parse_np_rules(spec: &Value, key: &str, peer_key: &str) -> Result<Vec<NpRule>, String> {
    let mut out = Vec::new();
    let Some(v) = spec.get(key) else {
        return Ok(out);
    };
    if v.is_null() {
        return Ok(out);
    }
    let arr = v
        .as_array()
        .ok_or_else(|| format!("spec.{key} must be a list"))?;
    for r in arr {
        let mut rule = NpRule {
            peers: Vec::new(),
            ports: Vec::new(),
        };
        for p in r
            .get(peer_key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            rule.peers.push(parse_np_peer(p)?);
        }
        for p in r
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            rule.ports.push(parse_np_port(p)?);
        }
        out.push(rule);
    }
    Ok(out)
}

fn parse_network_policy(o: &Object) -> Result<NetworkPolicy, String> {
    let spec = o
        .value
        .get("spec")
        .ok_or_else(|| "NetworkPolicy has no spec".to_string())?;
    let pod_selector = Selector::parse(spec.get("podSelector").unwrap_or(&Value::Null))?;
    let ingress = parse_np_rules(spec, "ingress", "from")?;
    let egress = parse_np_rules(spec, "egress", "to")?;
    let (affects_ingress, affects_egress) = match spec.get("policyTypes").and_then(Value::as_array)
    {
        Some(types) => {
            let mut i = false;
            let mut e = false;
            for t in types {
                match t.as_str() {
                    Some("Ingress") => i = true,
                    Some("Egress") => e = true,
                    _ => return Err(format!("invalid policyTypes entry {t}")),
                }
            }
            (i, e)
        }
        // Without policyTypes: always Ingress; Egress only when there are
        // egress rules.
        None => (true, !egress.is_empty()),
    };
    Ok(NetworkPolicy {
        namespace: object_namespace(o),
        name: o.name(),
        source: o.source.clone(),
        pod_selector,
        affects_ingress,
        affects_egress,
        ingress,
        egress,
    })
}

fn parse_admin_peer(p: &Value, warnings: &mut Vec<String>) -> Result<AdminPeer, String> {
    if let Some(ns) = p.get("namespaces") {
        return Ok(AdminPeer::Namespaces(Selector::parse(ns)?));
    }
    if let Some(pods) = p.get("pods") {
        return Ok(AdminPeer::Pods {
            namespaces: Selector::parse(pods.get("namespaceSelector").unwrap_or(&Value::Null))?,
            pods: Selector::parse(pods.get("podSelector").unwrap_or(&Value::Null))?,
        });
    }
    if let Some(nets) = p.get("networks") {
        let mut r = IpSet::empty();
        for n in nets.as_array().into_iter().flatten() {
            let s = n
                .as_str()
                .ok_or_else(|| "networks entries must be strings".to_string())?;
            r = r.union(&IpSet::from_range(parse_cidr(s)?));
        }
        return Ok(AdminPeer::Networks(r));
    }
    if p.get("nodes").is_some() {
        warnings.push("nodes peers are not supported and match nothing".into());
        return Ok(AdminPeer::Nodes);
    }
    Err("a peer needs namespaces, pods, networks or nodes".into())
}

fn parse_admin_ports(v: Option<&Value>) -> Result<Option<Vec<PortSpec>>, String> {
    let Some(arr) = v.and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for p in arr {
        if let Some(pn) = p.get("portNumber") {
            let port = pn
                .get("port")
                .and_then(Value::as_u64)
                .ok_or_else(|| "portNumber needs a numeric port".to_string())
                .and_then(check_port)?;
            out.push(PortSpec {
                protocol: Some(parse_protocol(pn.get("protocol"))?),
                port: PortRef::Range(port, port),
            });
        } else if let Some(name) = p.get("namedPort").and_then(Value::as_str) {
            out.push(PortSpec {
                protocol: None,
                port: PortRef::Named(name.to_string()),
            });
        } else if let Some(pr) = p.get("portRange") {
            let start = pr
                .get("start")
                .and_then(Value::as_u64)
                .ok_or_else(|| "portRange needs a start".to_string())
                .and_then(check_port)?;
            let end = pr
                .get("end")
                .and_then(Value::as_u64)
                .ok_or_else(|| "portRange needs an end".to_string())
                .and_then(check_port)?;
            if end < start {
                return Err(format!("portRange end {end} is below start {start}"));
            }
            out.push(PortSpec {
                protocol: Some(parse_protocol(pr.get("protocol"))?),
                port: PortRef::Range(start, end),
            });
        } else {
            return Err("a ports entry needs portNumber, namedPort or portRange".into());
        }
    }
    Ok(Some(out))
}

fn parse_admin_policy(
    o: &Object,
    baseline: bool,
    warnings: &mut Vec<String>,
) -> Result<AdminPolicy, String> {
    let spec = o.value.get("spec").ok_or_else(|| "no spec".to_string())?;
    let priority = if baseline {
        None
    } else {
        let p = spec
            .get("priority")
            .and_then(Value::as_i64)
            .ok_or_else(|| "priority is missing or not a number".to_string())?;
        if !(0..=1000).contains(&p) {
            return Err(format!("priority {p} is outside 0-1000"));
        }
        Some(p)
    };
    let subject_v = spec
        .get("subject")
        .ok_or_else(|| "subject is missing".to_string())?;
    let subject = parse_admin_peer(subject_v, warnings)?;
    if matches!(subject, AdminPeer::Networks(_) | AdminPeer::Nodes) {
        return Err("subject must select namespaces or pods".into());
    }
    let mut dirs: [Vec<AdminRule>; 2] = [Vec::new(), Vec::new()];
    for (i, (key, peer_key)) in [("ingress", "from"), ("egress", "to")].iter().enumerate() {
        for r in spec
            .get(*key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let action = match r.get("action").and_then(Value::as_str) {
                Some("Allow") => Action::Allow,
                Some("Deny") => Action::Deny,
                Some("Pass") if !baseline => Action::Pass,
                Some("Pass") => {
                    return Err("action Pass is not allowed in a BaselineAdminNetworkPolicy".into())
                }
                Some(other) => return Err(format!("invalid action {other:?}")),
                None => return Err("a rule needs an action".into()),
            };
            let mut peers = Vec::new();
            for p in r
                .get(*peer_key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let peer = parse_admin_peer(p, warnings)?;
                if i == 0 && matches!(peer, AdminPeer::Networks(_) | AdminPeer::Nodes) {
                    return Err("ingress peers must be namespaces or pods".into());
                }
                peers.push(peer);
            }
            if peers.is_empty() {
                return Err(format!("rule needs at least one `{peer_key}` peer"));
            }
            dirs[i].push(AdminRule {
                name: r
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                action,
                peers,
                ports: parse_admin_ports(r.get("ports"))?,
            });
        }
    }
    let [ingress, egress] = dirs;
    Ok(AdminPolicy {
        name: o.name(),
        source: o.source.clone(),
        priority,
        subject,
        ingress,
        egress,
    })
}

/// Service port -> container port spec, following `targetPort`.
fn service_target(svc: &Value, want: Option<&Value>) -> Vec<PortSpec> {
    let mut out = Vec::new();
    for p in svc
        .get("spec")
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let matches = match want {
            None => true,
            Some(Value::Number(n)) => p.get("port").and_then(Value::as_u64) == n.as_u64(),
            Some(Value::String(s)) => {
                p.get("name").and_then(Value::as_str) == Some(s.as_str())
                    || p.get("port").and_then(Value::as_u64) == s.parse::<u64>().ok()
            }
            Some(_) => false,
        };
        if !matches {
            continue;
        }
        let protocol = p
            .get("protocol")
            .and_then(Value::as_str)
            .and_then(Protocol::parse)
            .unwrap_or(Protocol::Tcp);
        let target = p.get("targetPort").or_else(|| p.get("port"));
        let port = match target {
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) => PortRef::Range(n, n),
                None => continue,
            },
            Some(Value::String(s)) => match s.parse::<u64>() {
                Ok(n) => PortRef::Range(n, n),
                Err(_) => PortRef::Named(s.clone()),
            },
            _ => continue,
        };
        out.push(PortSpec {
            protocol: Some(protocol),
            port,
        });
    }
    out
}

impl Cluster {
    /// Builds the model from loaded objects. Invalid policies are reported
    /// in the diagnostics and left out; other kinds are ignored.
    pub fn from_objects(objects: &[Object]) -> (Cluster, Vec<Diagnostic>) {
        let objects = expand_lists(objects);
        let mut diags = Vec::new();
        let mut c = Cluster::default();
        let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
        let mut services: Vec<&Object> = Vec::new();
        let mut routes: Vec<&Object> = Vec::new();
        let mut cudns: Vec<&Object> = Vec::new();

        for o in &objects {
            let kind = o.kind();
            match kind {
                "Namespace" => {
                    let name = o.name();
                    let mut labels = labels_of(o.metadata());
                    labels
                        .entry(NAMESPACE_NAME_LABEL.to_string())
                        .or_insert_with(|| name.clone());
                    c.namespaces.insert(name, labels);
                }
                "Pod" => {
                    let Some(t) = o.pod_template() else { continue };
                    let (name, kind) = pod_identity(o);
                    let ns = object_namespace(o);
                    c.dual_stack |= has_ipv6_pod_ip(&o.value);
                    let key = (ns.clone(), name.clone(), kind.clone());
                    if let Some(&i) = seen.get(&key) {
                        // Replicas of one owner are one peer; keep the
                        // first pod's labels but learn every named port.
                        for p in container_ports(t.spec) {
                            if !c.workloads[i].ports.contains(&p) {
                                c.workloads[i].ports.push(p);
                            }
                        }
                        continue;
                    }
                    seen.insert(key, c.workloads.len());
                    c.workloads.push(Workload {
                        namespace: ns,
                        name,
                        kind,
                        labels: labels_of(t.metadata),
                        ports: container_ports(t.spec),
                        secondary_networks: pod_networks(t.metadata).0,
                        secondary_addresses: pod_networks(t.metadata).1,
                    });
                }
                k if CONTROLLER_KINDS.contains(&k) => {
                    let Some(t) = o.pod_template() else { continue };
                    let ns = object_namespace(o);
                    let key = (ns.clone(), o.name(), k.to_string());
                    if seen.contains_key(&key) {
                        continue;
                    }
                    seen.insert(key, c.workloads.len());
                    c.workloads.push(Workload {
                        namespace: ns,
                        name: o.name(),
                        kind: k.to_string(),
                        labels: labels_of(t.metadata),
                        ports: container_ports(t.spec),
                        secondary_networks: pod_networks(t.metadata).0,
                        secondary_addresses: pod_networks(t.metadata).1,
                    });
                }
                "NetworkPolicy" if o.api_version().starts_with("networking.k8s.io/") => {
                    match parse_network_policy(o) {
                        Ok(p) => c.network_policies.push(p),
                        Err(m) => diags.push(diag(o, m, false)),
                    }
                }
                "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" => {
                    let baseline = kind == "BaselineAdminNetworkPolicy";
                    let mut warnings = Vec::new();
                    match parse_admin_policy(o, baseline, &mut warnings) {
                        Ok(p) => {
                            for w in warnings {
                                diags.push(diag(o, w, true));
                            }
                            if baseline {
                                if c.baseline.is_some() {
                                    diags.push(diag(o, "only one BaselineAdminNetworkPolicy is allowed; this one is ignored", false));
                                } else {
                                    c.baseline = Some(p);
                                }
                            } else {
                                c.admin_policies.push(p);
                            }
                        }
                        Err(m) => diags.push(diag(o, m, false)),
                    }
                }
                "Service" => services.push(o),
                "VirtualMachine" => {
                    c.network_aware = true;
                    let Some(t) = o.value.get("spec").and_then(|s| s.get("template")) else {
                        continue;
                    };
                    let ns = object_namespace(o);
                    let key = (ns.clone(), o.name(), kind.to_string());
                    if seen.contains_key(&key) {
                        continue;
                    }
                    seen.insert(key, c.workloads.len());
                    c.workloads.push(Workload {
                        namespace: ns,
                        name: o.name(),
                        kind: kind.to_string(),
                        labels: labels_of(t.get("metadata").unwrap_or(&Value::Null)),
                        ports: Vec::new(),
                        secondary_networks: vm_networks(t).0,
                        secondary_addresses: vm_networks(t).1,
                    });
                }
                "UserDefinedNetwork" => {
                    c.network_aware = true;
                    if is_primary(o.value.get("spec")) {
                        let ns = object_namespace(o);
                        c.primary_networks.insert(
                            ns.clone(),
                            Network {
                                kind: NetworkKind::Udn,
                                name: ns,
                            },
                        );
                    }
                }
                "NetworkAttachmentDefinition" => c.network_aware = true,
                "MultiNetworkPolicy" => match parse_network_policy(o) {
                    Ok(p) => {
                        let nets = o
                            .metadata()
                            .get("annotations")
                            .and_then(|a| a.get(POLICY_FOR_ANNOTATION))
                            .and_then(Value::as_str)
                            .map(|s| {
                                s.split(',')
                                    .map(|n| last_segment(n.trim()).to_string())
                                    .filter(|n| !n.is_empty())
                                    .collect()
                            })
                            .unwrap_or_default();
                        c.multi_network_policies.push((p, nets));
                    }
                    Err(m) => diags.push(diag(o, m, false)),
                },
                "ClusterUserDefinedNetwork" => {
                    c.network_aware = true;
                    cudns.push(o);
                }
                "Route" | "Ingress" => routes.push(o),
                _ => {}
            }
        }
        c.admin_policies.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        for w in 1..c.admin_policies.len() {
            if c.admin_policies[w].priority == c.admin_policies[w - 1].priority {
                let p = &c.admin_policies[w];
                diags.push(Diagnostic {
                    file: p.source.file.to_string(),
                    line: p.source.line,
                    object: format!("AdminNetworkPolicy {}", p.name),
                    message: "shares its priority with another AdminNetworkPolicy; the order between them is by name".into(),
                    warning: true,
                });
            }
        }
        let referenced: Vec<String> = c
            .workloads
            .iter()
            .map(|w| w.namespace.clone())
            .chain(c.network_policies.iter().map(|p| p.namespace.clone()))
            .collect();
        for ns in referenced {
            c.namespaces.entry(ns.clone()).or_insert_with(|| {
                let mut l = Labels::new();
                l.insert(NAMESPACE_NAME_LABEL.to_string(), ns);
                l
            });
        }
        for o in cudns {
            let spec = o.value.get("spec");
            if !is_primary(spec.and_then(|s| s.get("network"))) {
                continue;
            }
            let sel = match Selector::parse(
                spec.and_then(|s| s.get("namespaceSelector"))
                    .unwrap_or(&Value::Null),
            ) {
                Ok(sel) => sel,
                Err(m) => {
                    diags.push(diag(o, m, false));
                    continue;
                }
            };
            for (ns, labels) in &c.namespaces {
                if sel.matches(labels) && !c.primary_networks.contains_key(ns) {
                    c.primary_networks.insert(
                        ns.clone(),
                        Network {
                            kind: NetworkKind::Cudn,
                            name: o.name(),
                        },
                    );
                }
            }
        }
        // OVN-Kubernetes applies a primary (C)UDN only to namespaces created
        // with the primary-UDN label.
        let labelled = |ns: &str, c: &Cluster| {
            c.namespaces
                .get(ns)
                .is_some_and(|l| l.contains_key(PRIMARY_UDN_LABEL))
        };
        let unlabelled: Vec<String> = c
            .primary_networks
            .keys()
            .filter(|ns| !labelled(ns, &c))
            .cloned()
            .collect();
        for ns in unlabelled {
            c.primary_networks.remove(&ns);
        }
        c.exposures = exposures(&c.workloads, &services, &routes);
        (c, diags)
    }
}

/// Which workloads a Route or Ingress sends traffic to, through which
/// Service, on which ports.
fn exposures(workloads: &[Workload], services: &[&Object], routes: &[&Object]) -> Vec<Exposure> {
    // (namespace, service name) -> service
    let by_name: HashMap<(String, String), &Object> = services
        .iter()
        .map(|s| ((object_namespace(s), s.name()), *s))
        .collect();
    let mut acc: BTreeMap<usize, Vec<PortSpec>> = BTreeMap::new();
    for r in routes {
        let ns = object_namespace(r);
        let mut backends: Vec<(String, Option<Value>)> = Vec::new();
        let spec = r.value.get("spec").cloned().unwrap_or(Value::Null);
        if r.kind() == "Route" {
            let port = spec.get("port").and_then(|p| p.get("targetPort")).cloned();
            let mut names = Vec::new();
            if let Some(n) = spec
                .get("to")
                .and_then(|t| t.get("name"))
                .and_then(Value::as_str)
            {
                names.push(n.to_string());
            }
            for b in spec
                .get("alternateBackends")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = b.get("name").and_then(Value::as_str) {
                    names.push(n.to_string());
                }
            }
            for n in names {
                backends.push((n, port.clone()));
            }
        } else {
            let mut push_backend = |b: &Value| {
                if let Some(svc) = b.get("service") {
                    if let Some(n) = svc.get("name").and_then(Value::as_str) {
                        let port = svc.get("port").and_then(|p| {
                            p.get("number").cloned().or_else(|| p.get("name").cloned())
                        });
                        backends.push((n.to_string(), port));
                    }
                }
            };
            if let Some(b) = spec.get("defaultBackend") {
                push_backend(b);
            }
            for rule in spec
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for p in rule
                    .get("http")
                    .and_then(|h| h.get("paths"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(b) = p.get("backend") {
                        push_backend(b);
                    }
                }
            }
        }
        for (svc_name, port) in backends {
            let Some(svc) = by_name.get(&(ns.clone(), svc_name)) else {
                continue;
            };
            let Some(sel) = svc
                .value
                .get("spec")
                .and_then(|s| s.get("selector"))
                .and_then(Value::as_object)
            else {
                continue;
            };
            if sel.is_empty() {
                continue;
            }
            let specs = service_target(&svc.value, port.as_ref());
            for (i, w) in workloads.iter().enumerate() {
                if w.namespace != ns {
                    continue;
                }
                let selected = sel.iter().all(|(k, v)| {
                    v.as_str()
                        .is_some_and(|v| w.labels.get(k).map(String::as_str) == Some(v))
                });
                if selected {
                    acc.entry(i).or_default().extend(specs.iter().cloned());
                }
            }
        }
    }
    acc.into_iter()
        .map(|(workload, ports)| Exposure { workload, ports })
        .collect()
}
