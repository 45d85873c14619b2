//! Least-privilege NetworkPolicies from observed traffic.
//!
//! For every namespace of the inventory: a default-deny for both
//! directions, a policy that keeps DNS to kube-dns working, and for each
//! workload one policy whose ingress admits exactly its observed sources and
//! whose egress reaches exactly its observed destinations, on the observed
//! ports. The property (tested): evaluating the output allows every
//! observed allowed flow and nothing else between workloads, except DNS.
//!
//! Selectors are the workload's own selector labels minus the ones
//! controllers churn (`pod-template-hash`, `controller-revision-hash`,
//! ...), widened with template labels only if another workload would match
//! too, so the policies survive rollouts. Ports use the container port's
//! name where the destination declares one, so a port renumbering does not
//! need a policy change. External peers become /32 (or /128) ipBlocks.
//! Output is sorted, so regenerating from the same traffic gives the same
//! bytes and a GitOps diff shows only real changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

use serde_json::{json, Map, Value};

use crate::conn::Protocol;
use crate::ingest::{Edge, Peer, Verdict};
use crate::inventory::{is_churning_label, InvWorkload, Inventory};
use crate::ip::{format_ip, parse_cidr, IpRange};
use crate::model::NAMESPACE_NAME_LABEL;
use crate::selector::Labels;

/// Namespaces left alone unless asked: isolating the control plane's own
/// namespaces from observed traffic alone is how clusters break.
pub const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// The label put on every generated policy.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "keycard");

#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Also generate for kube-system, kube-public and kube-node-lease.
    pub include_system_namespaces: bool,
}

/// Generated policies (NetworkPolicy objects, sorted by namespace then
/// name) and what could not be expressed.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub policies: Vec<Value>,
    pub warnings: Vec<String>,
}

/// Where DNS lives: the namespace and the pod labels of kube-dns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dns {
    namespace: String,
    selector: Labels,
    workloads: Vec<usize>,
}

fn find_dns(inv: &Inventory) -> Dns {
    let workloads: Vec<usize> = inv
        .workloads
        .iter()
        .enumerate()
        .filter(|(_, w)| w.labels.get("k8s-app").map(String::as_str) == Some("kube-dns"))
        .map(|(i, _)| i)
        .collect();
    let namespace = workloads
        .first()
        .and_then(|&i| inv.workloads.get(i))
        .map(|w| w.namespace.clone())
        .unwrap_or_else(|| "kube-system".to_string());
    let mut selector = Labels::new();
    selector.insert("k8s-app".into(), "kube-dns".into());
    Dns {
        namespace,
        selector,
        workloads,
    }
}

/// A generated pod selector: labels that must match, and label keys that
/// must be absent (to tell a workload from one whose labels are a superset
/// of its own, such as a canary next to its stable deployment).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodSel {
    labels: Labels,
    absent: BTreeSet<String>,
}

impl PodSel {
    fn matches(&self, l: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| l.get(k) == Some(v))
            && self.absent.iter().all(|k| !l.contains_key(k))
    }
}

/// The smallest stable selector that selects `w` and no other workload of
/// its namespace, or `None` when `w` has no usable labels.
fn stable_selector(inv: &Inventory, idx: usize, warnings: &mut Vec<String>) -> Option<PodSel> {
    let w = inv.workloads.get(idx)?;
    let stable = |l: &Labels| -> Labels {
        l.iter()
            .filter(|(k, _)| !is_churning_label(k))
            .filter(|(k, v)| w.labels.get(*k) == Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut sel = PodSel {
        labels: stable(&w.selector),
        absent: BTreeSet::new(),
    };
    if sel.labels.is_empty() {
        sel.labels = stable(&w.labels);
    }
    if sel.labels.is_empty() {
        warnings.push(format!(
            "{}/{}[{}] has no stable pod labels to select it by; its observed traffic is not allowed",
            w.namespace, w.name, w.kind
        ));
        return None;
    }
    let others = |sel: &PodSel| -> Vec<&InvWorkload> {
        inv.workloads
            .iter()
            .enumerate()
            .filter(|(j, o)| *j != idx && o.namespace == w.namespace && sel.matches(&o.labels))
            .map(|(_, o)| o)
            .collect()
    };
    // First more of its own labels, then the absence of labels the others
    // carry and it does not.
    for (k, v) in w.labels.iter().filter(|(k, _)| !is_churning_label(k)) {
        if others(&sel).is_empty() {
            break;
        }
        sel.labels.insert(k.clone(), v.clone());
    }
    let extra: BTreeSet<String> = others(&sel)
        .iter()
        .flat_map(|o| o.labels.keys())
        .filter(|k| !is_churning_label(k) && !w.labels.contains_key(*k))
        .cloned()
        .collect();
    for k in extra {
        if others(&sel).is_empty() {
            break;
        }
        sel.absent.insert(k);
    }
    let still = others(&sel);
    if !still.is_empty() {
        let names: Vec<String> = still
            .iter()
            .map(|o| format!("{}/{}[{}]", o.namespace, o.name, o.kind))
            .collect();
        warnings.push(format!(
            "{}/{}[{}]: no label set selects it alone; its policy also applies to {}",
            w.namespace,
            w.name,
            w.kind,
            names.join(", ")
        ));
    }
    Some(sel)
}

fn labels_value(l: &Labels) -> Value {
    let m: Map<String, Value> = l
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({ "matchLabels": m })
}

fn selector_value(sel: &PodSel) -> Value {
    let mut v = labels_value(&sel.labels);
    if !sel.absent.is_empty() {
        if let Some(m) = v.as_object_mut() {
            m.insert(
                "matchExpressions".into(),
                Value::Array(
                    sel.absent
                        .iter()
                        .map(|k| json!({"key": k, "operator": "DoesNotExist"}))
                        .collect(),
                ),
            );
        }
    }
    v
}

/// A port as a rule names it: a container port name or a number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PortKey {
    Number(Protocol, u16),
    Named(Protocol, String),
}

impl PortKey {
    fn to_value(&self) -> Value {
        match self {
            PortKey::Number(p, n) => json!({"protocol": p.as_str(), "port": n}),
            PortKey::Named(p, n) => json!({"protocol": p.as_str(), "port": n}),
        }
    }
}

fn port_key(dst: Option<&InvWorkload>, proto: Protocol, port: u16) -> PortKey {
    let name = dst.and_then(|w| {
        w.ports
            .iter()
            .find(|p| p.protocol == proto && p.port == u64::from(port) && p.name.is_some())
            .and_then(|p| p.name.clone())
    });
    match name {
        Some(n) => PortKey::Named(proto, n),
        None => PortKey::Number(proto, port),
    }
}

/// The ipBlock CIDR of an external peer, in canonical form: an address is
/// its /32 or /128 (an IPv4-mapped IPv6 address its IPv4 /32), a block its
/// network and prefix, as the evaluator reads them. `None` when `address`
/// is neither.
fn cidr_of(address: &str) -> Option<String> {
    Some(match parse_cidr(address).ok()? {
        IpRange::V4(lo, hi) => format!("{}/{}", format_ip(lo), 32 - (hi - lo).count_ones()),
        IpRange::V6(lo, hi) => format!("{}/{}", Ipv6Addr::from(lo), 128 - (hi - lo).count_ones()),
    })
}

fn workload_index(inv: &Inventory, p: &Peer) -> Option<usize> {
    let (ns, kind, name) = p.workload()?;
    inv.find(ns, kind, name)
}

/// Rules of one direction: peers grouped by the identical port sets they
/// use, so one rule lists every peer that needs the same ports.
fn rules(peers: BTreeMap<String, (Value, BTreeSet<PortKey>)>, peer_key: &str) -> Vec<Value> {
    let mut by_ports: BTreeMap<Vec<PortKey>, Vec<(String, Value)>> = BTreeMap::new();
    for (k, (v, ports)) in peers {
        by_ports
            .entry(ports.into_iter().collect())
            .or_default()
            .push((k, v));
    }
    by_ports
        .into_iter()
        .map(|(ports, mut peers)| {
            peers.sort_by(|a, b| a.0.cmp(&b.0));
            let mut rule = Map::new();
            rule.insert(
                peer_key.to_string(),
                Value::Array(peers.into_iter().map(|(_, v)| v).collect()),
            );
            rule.insert(
                "ports".into(),
                Value::Array(ports.iter().map(PortKey::to_value).collect()),
            );
            Value::Object(rule)
        })
        .collect()
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": { MANAGED_BY.0: MANAGED_BY.1 },
        },
        "spec": spec,
    })
}

fn dns_ports() -> Value {
    json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
}

/// Generates the policies. Denied edges are ignored (they stay denied);
/// edges naming workloads outside the inventory are reported.
pub fn generate(edges: &[Edge], inv: &Inventory, opts: &GenerateOptions) -> Generated {
    let mut out = Generated::default();
    let dns = find_dns(inv);
    let covered = |ns: &str| opts.include_system_namespaces || !SYSTEM_NAMESPACES.contains(&ns);
    let namespaces: BTreeSet<&str> = inv
        .workloads
        .iter()
        .map(|w| w.namespace.as_str())
        .filter(|ns| covered(ns))
        .collect();
    let mut selectors: BTreeMap<usize, Option<PodSel>> = BTreeMap::new();
    let mut selector_of = |i: usize, warnings: &mut Vec<String>| -> Option<PodSel> {
        selectors
            .entry(i)
            .or_insert_with(|| stable_selector(inv, i, warnings))
            .clone()
    };
    // Per workload index: ingress and egress peers with their ports.
    type Side = BTreeMap<String, (Value, BTreeSet<PortKey>)>;
    let mut ingress: BTreeMap<usize, Side> = BTreeMap::new();
    let mut egress: BTreeMap<usize, Side> = BTreeMap::new();
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    let mut bad_addresses: BTreeSet<String> = BTreeSet::new();
    for e in edges.iter().filter(|e| e.verdict == Verdict::Allowed) {
        let s = workload_index(inv, &e.src);
        let d = workload_index(inv, &e.dst);
        for (p, i) in [(&e.src, s), (&e.dst, d)] {
            if p.workload().is_some() && i.is_none() {
                unknown.insert(p.display());
            }
        }
        if (e.src.workload().is_some() && s.is_none())
            || (e.dst.workload().is_some() && d.is_none())
        {
            continue;
        }
        let dst_w = d.and_then(|i| inv.workloads.get(i));
        let port = port_key(dst_w, e.protocol, e.port);
        let is_dns = d.is_some_and(|i| dns.workloads.contains(&i)) && e.port == 53;
        // Egress of the source.
        if let Some(si) = s {
            let sw = &inv.workloads[si];
            if covered(&sw.namespace) && !is_dns {
                let peer = match (&e.dst, d) {
                    (Peer::External { address }, _) => match cidr_of(address) {
                        Some(cidr) => Some(json!({"ipBlock": {"cidr": cidr}})),
                        None => {
                            bad_addresses.insert(address.clone());
                            None
                        }
                    },
                    (_, Some(di)) => selector_of(di, &mut out.warnings)
                        .map(|sel| peer_value(&sw.namespace, &inv.workloads[di].namespace, &sel)),
                    _ => None,
                };
                if let Some(peer) = peer {
                    let key = peer.to_string();
                    egress
                        .entry(si)
                        .or_default()
                        .entry(key)
                        .or_insert_with(|| (peer, BTreeSet::new()))
                        .1
                        .insert(port.clone());
                }
            }
        }
        // Ingress of the destination.
        if let Some(di) = d {
            let dw = &inv.workloads[di];
            if covered(&dw.namespace) && !(is_dns && covered(&dns.namespace)) {
                let peer = match (&e.src, s) {
                    (Peer::External { address }, _) => match cidr_of(address) {
                        Some(cidr) => Some(json!({"ipBlock": {"cidr": cidr}})),
                        None => {
                            bad_addresses.insert(address.clone());
                            None
                        }
                    },
                    (_, Some(si)) => selector_of(si, &mut out.warnings)
                        .map(|sel| peer_value(&dw.namespace, &inv.workloads[si].namespace, &sel)),
                    _ => None,
                };
                if let Some(peer) = peer {
                    let key = peer.to_string();
                    ingress
                        .entry(di)
                        .or_default()
                        .entry(key)
                        .or_insert_with(|| (peer, BTreeSet::new()))
                        .1
                        .insert(port);
                }
            }
        }
    }
    for u in unknown {
        out.warnings.push(format!(
            "{u} is not in the inventory; its edges are left out"
        ));
    }
    for a in bad_addresses {
        out.warnings.push(format!(
            "external peer {a:?} is not an IP address or CIDR; its edges are left out"
        ));
    }
    let mut policies: Vec<Value> = Vec::new();
    for ns in &namespaces {
        policies.push(policy(
            ns,
            "keycard-default-deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ));
        let mut to = Map::new();
        to.insert(
            "namespaceSelector".into(),
            json!({"matchLabels": {NAMESPACE_NAME_LABEL: dns.namespace}}),
        );
        to.insert("podSelector".into(), labels_value(&dns.selector));
        policies.push(policy(
            ns,
            "keycard-allow-dns",
            json!({
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [Value::Object(to)], "ports": dns_ports()}],
            }),
        ));
    }
    // Names: the workload's, unless two workloads of a namespace share it.
    let mut name_count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for w in &inv.workloads {
        *name_count.entry((&w.namespace, &w.name)).or_default() += 1;
    }
    for (i, w) in inv.workloads.iter().enumerate() {
        if !covered(&w.namespace) {
            continue;
        }
        let is_dns = dns.workloads.contains(&i);
        let ing = ingress.remove(&i);
        let eg = egress.remove(&i);
        if ing.is_none() && eg.is_none() && !is_dns {
            continue;
        }
        let Some(sel) = selector_of(i, &mut out.warnings) else {
            continue;
        };
        let mut spec = Map::new();
        spec.insert("podSelector".into(), selector_value(&sel));
        spec.insert("policyTypes".into(), json!(["Ingress", "Egress"]));
        let mut ing_rules = ing.map(|p| rules(p, "from")).unwrap_or_default();
        if is_dns {
            // Every pod resolves names: DNS in from anywhere.
            ing_rules.push(json!({"from": [{"namespaceSelector": {}}], "ports": dns_ports()}));
        }
        if !ing_rules.is_empty() {
            spec.insert("ingress".into(), Value::Array(ing_rules));
        }
        if let Some(p) = eg {
            spec.insert("egress".into(), Value::Array(rules(p, "to")));
        }
        let name = if name_count
            .get(&(w.namespace.as_str(), w.name.as_str()))
            .copied()
            .unwrap_or(0)
            > 1
        {
            format!("{}-{}", w.name, w.kind.to_ascii_lowercase())
        } else {
            w.name.clone()
        };
        policies.push(policy(&w.namespace, &name, Value::Object(spec)));
    }
    let key = |p: &Value| {
        (
            p.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            p.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    policies.sort_by_key(key);
    out.warnings.sort();
    out.warnings.dedup();
    out.policies = policies;
    out
}

/// A `from`/`to` entry selecting a workload from a policy in `policy_ns`.
fn peer_value(policy_ns: &str, peer_ns: &str, sel: &PodSel) -> Value {
    if policy_ns == peer_ns {
        json!({"podSelector": selector_value(sel)})
    } else {
        let mut m = Map::new();
        m.insert(
            "namespaceSelector".into(),
            json!({"matchLabels": {NAMESPACE_NAME_LABEL: peer_ns}}),
        );
        m.insert("podSelector".into(), selector_value(sel));
        Value::Object(m)
    }
}

/// Multi-document YAML, one document per policy, in order.
pub fn to_yaml(policies: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for p in policies {
        out.push_str("---\n");
        let y = yaml_serde::to_string(p).map_err(|e| e.to_string())?;
        out.push_str(&y);
        if !y.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
