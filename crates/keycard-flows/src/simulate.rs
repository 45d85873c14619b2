//! Replaying observed traffic against a policy set: what would break
//! (simulation), and where policies and traffic have drifted apart (rules
//! nothing uses, denied attempts, new flows, Git versus cluster).
//!
//! Observed flows are decided one port at a time with the same evaluator
//! that `keycard netpol eval` uses, so a simulation and an evaluation never
//! disagree about what a policy means.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use keycard_k8s::{Object, Source};
use serde::Serialize;

use crate::eval::{FlowDecider, FlowPeer, RuleRef};
use crate::ingest::{Edge, Peer, Verdict};
use crate::model::{parse_cidr, Cluster, IpRange, NetworkPolicy};
use crate::time::parse_rfc3339;

/// Maps edge peers onto the evaluator's peers.
fn flow_peer(index: &HashMap<(&str, &str, &str), usize>, p: &Peer) -> Option<FlowPeer> {
    match p {
        Peer::Workload {
            namespace,
            kind,
            name,
            ..
        } => index
            .get(&(namespace.as_str(), kind.as_str(), name.as_str()))
            .map(|&i| FlowPeer::Workload(i)),
        Peer::External { address } => match parse_cidr(address) {
            Ok(IpRange::V4(lo, _)) => Some(FlowPeer::Address(lo)),
            Ok(IpRange::V6(lo, _)) => Some(FlowPeer::Address6(lo)),
            Err(_) => None,
        },
    }
}

fn workload_index(c: &Cluster) -> HashMap<(&str, &str, &str), usize> {
    c.workloads
        .iter()
        .enumerate()
        .map(|(i, w)| ((w.namespace.as_str(), w.kind.as_str(), w.name.as_str()), i))
        .collect()
}

/// One observed edge the policy set would deny.
#[derive(Debug, Clone, Serialize)]
pub struct DeniedFlow {
    pub src: String,
    pub dst: String,
    pub protocol: String,
    pub port: u16,
    pub count: u64,
    pub last_seen: String,
    /// `egress` (the source may not send), `ingress` (the destination may
    /// not receive) or `both`.
    pub denied_by: String,
}

/// What applying a policy set would do to the observed traffic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Simulation {
    /// Connections that went through when observed.
    pub observed_connections: u64,
    /// Of those, the connections the policy set allows.
    pub allowed_connections: u64,
    /// `allowed_connections / observed_connections` (1 when nothing was
    /// observed).
    pub coverage: f64,
    pub observed_edges: u64,
    pub allowed_edges: u64,
    /// Per workload (`ns/name[Kind]`) whose policy denies them, the flows
    /// that would break.
    pub denied: BTreeMap<String, Vec<DeniedFlow>>,
    /// Flows denied when observed that the policy set would allow.
    pub newly_allowed: Vec<DeniedFlow>,
    /// Peers of edges that are not in the inventory (left out).
    pub unresolved: Vec<String>,
}

fn denied_flow(e: &Edge, denied_by: &str) -> DeniedFlow {
    DeniedFlow {
        src: e.src.display(),
        dst: e.dst.display(),
        protocol: e.protocol.as_str().to_string(),
        port: e.port,
        count: e.count,
        last_seen: e.last_seen.clone(),
        denied_by: denied_by.to_string(),
    }
}

/// Replays `edges` against the policies in `cluster`.
pub fn simulate(cluster: &Cluster, edges: &[Edge]) -> Simulation {
    let decider = FlowDecider::new(cluster);
    let index = workload_index(cluster);
    let mut sim = Simulation::default();
    let mut unresolved = BTreeSet::new();
    for e in edges {
        let (Some(s), Some(d)) = (flow_peer(&index, &e.src), flow_peer(&index, &e.dst)) else {
            for p in [&e.src, &e.dst] {
                if flow_peer(&index, p).is_none() {
                    unresolved.insert(p.display());
                }
            }
            continue;
        };
        let dec = decider.decide(s, d, e.protocol, e.port);
        match e.verdict {
            Verdict::Allowed => {
                sim.observed_connections += e.count;
                sim.observed_edges += 1;
                if dec.allowed {
                    sim.allowed_connections += e.count;
                    sim.allowed_edges += 1;
                    continue;
                }
                let by = match (dec.egress_allowed, dec.ingress_allowed) {
                    (false, false) => "both",
                    (false, true) => "egress",
                    _ => "ingress",
                };
                if !dec.egress_allowed {
                    sim.denied
                        .entry(e.src.display())
                        .or_default()
                        .push(denied_flow(e, by));
                }
                // A workload talking to itself is listed once.
                let listed_at_src = !dec.egress_allowed;
                if !dec.ingress_allowed && (e.src != e.dst || !listed_at_src) {
                    sim.denied
                        .entry(e.dst.display())
                        .or_default()
                        .push(denied_flow(e, by));
                }
            }
            Verdict::Denied => {
                if dec.allowed {
                    sim.newly_allowed.push(denied_flow(e, ""));
                }
            }
        }
    }
    sim.coverage = if sim.observed_connections == 0 {
        1.0
    } else {
        sim.allowed_connections as f64 / sim.observed_connections as f64
    };
    sim.unresolved = unresolved.into_iter().collect();
    sim
}

/// A NetworkPolicy rule that no observed flow used.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnusedRule {
    /// `ns/name`.
    pub policy: String,
    pub direction: String,
    /// 1-based, as people count rules in the YAML.
    pub rule: usize,
    pub file: String,
    pub line: usize,
}

/// Where observed traffic and the policy set disagree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Drift {
    /// Allow rules that no observed allowed flow matched: candidates for
    /// removal (least privilege), or traffic not seen yet.
    pub unused_rules: Vec<UnusedRule>,
    /// Observed attempts that were denied.
    pub denied_attempts: Vec<DeniedFlow>,
    /// Edges first seen at or after `since`.
    pub new_flows: Vec<DeniedFlow>,
    pub unresolved: Vec<String>,
}

/// Drift between observed edges and the policies in `cluster`. `since`
/// (RFC 3339) selects the new flows.
pub fn drift(cluster: &Cluster, edges: &[Edge], since: Option<&str>) -> Result<Drift, String> {
    let since = match since {
        Some(s) => Some(parse_rfc3339(s).ok_or_else(|| format!("invalid time {s:?}"))?),
        None => None,
    };
    let decider = FlowDecider::new(cluster);
    let index = workload_index(cluster);
    let mut used: BTreeSet<RuleRef> = BTreeSet::new();
    let mut out = Drift::default();
    let mut unresolved = BTreeSet::new();
    for e in edges {
        if e.verdict == Verdict::Denied {
            out.denied_attempts.push(denied_flow(e, ""));
        }
        if let Some(t) = since {
            if parse_rfc3339(&e.first_seen).is_some_and(|f| f >= t) {
                out.new_flows.push(denied_flow(e, ""));
            }
        }
        let (Some(s), Some(d)) = (flow_peer(&index, &e.src), flow_peer(&index, &e.dst)) else {
            for p in [&e.src, &e.dst] {
                if flow_peer(&index, p).is_none() {
                    unresolved.insert(p.display());
                }
            }
            continue;
        };
        if e.verdict == Verdict::Allowed {
            used.extend(decider.decide(s, d, e.protocol, e.port).rules);
        }
    }
    for (pi, p) in cluster.network_policies.iter().enumerate() {
        for (egress, rules) in [(false, &p.ingress), (true, &p.egress)] {
            for ri in 0..rules.len() {
                let r = RuleRef {
                    policy: pi,
                    egress,
                    rule: ri,
                };
                if !used.contains(&r) {
                    out.unused_rules.push(UnusedRule {
                        policy: format!("{}/{}", p.namespace, p.name),
                        direction: if egress { "egress" } else { "ingress" }.to_string(),
                        rule: ri + 1,
                        file: p.source.file.to_string(),
                        line: p.source.line,
                    });
                }
            }
        }
    }
    out.unused_rules.sort();
    out.unresolved = unresolved.into_iter().collect();
    Ok(out)
}

/// One policy's change between Git and the cluster.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyChange {
    /// `ns/name`.
    pub policy: String,
    /// What differs: `podSelector`, `policyTypes`, `ingress`, `egress`.
    pub fields: Vec<String>,
}

/// Policies declared in Git versus found in a cluster dump.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PolicyDiff {
    /// In the cluster, not in Git (added by hand?).
    pub added: Vec<String>,
    /// In Git, not in the cluster (not applied, or deleted).
    pub removed: Vec<String>,
    pub changed: Vec<PolicyChange>,
    /// Objects that could not be parsed, `file:line: message`.
    pub errors: Vec<String>,
}

fn policies_by_name(
    objects: &[Object],
    errors: &mut Vec<String>,
) -> BTreeMap<String, NetworkPolicy> {
    let nps: Vec<Object> = objects
        .iter()
        .filter(|o| matches!(o.kind(), "NetworkPolicy" | "NetworkPolicyList" | "List"))
        .cloned()
        .collect();
    let (cluster, diags) = Cluster::from_objects(&nps);
    for d in diags.iter().filter(|d| !d.warning) {
        errors.push(d.to_string());
    }
    let blank = Source {
        file: Arc::from(""),
        line: 0,
    };
    cluster
        .network_policies
        .into_iter()
        .map(|mut p| {
            p.source = blank.clone();
            (format!("{}/{}", p.namespace, p.name), p)
        })
        .collect()
}

/// Compares NetworkPolicies by meaning, not by text: defaults the API
/// server fills in (`protocol: TCP`, `policyTypes`) and key order do not
/// count as changes.
pub fn diff_policies(declared: &[Object], cluster: &[Object]) -> PolicyDiff {
    let mut out = PolicyDiff::default();
    let git = policies_by_name(declared, &mut out.errors);
    let live = policies_by_name(cluster, &mut out.errors);
    for (name, p) in &live {
        match git.get(name) {
            None => out.added.push(name.clone()),
            Some(g) if g != p => {
                let mut fields = Vec::new();
                if g.pod_selector != p.pod_selector {
                    fields.push("podSelector".to_string());
                }
                if (g.affects_ingress, g.affects_egress) != (p.affects_ingress, p.affects_egress) {
                    fields.push("policyTypes".to_string());
                }
                if g.ingress != p.ingress {
                    fields.push("ingress".to_string());
                }
                if g.egress != p.egress {
                    fields.push("egress".to_string());
                }
                out.changed.push(PolicyChange {
                    policy: name.clone(),
                    fields,
                });
            }
            Some(_) => {}
        }
    }
    for name in git.keys() {
        if !live.contains_key(name) {
            out.removed.push(name.clone());
        }
    }
    out
}
