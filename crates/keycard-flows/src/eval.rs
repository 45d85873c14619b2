//! The evaluator: for every ordered pair of peers, the connections that
//! the egress side of the source AND the ingress side of the destination
//! allow, with admin policies, NetworkPolicies and the baseline applied in
//! the order Kubernetes applies them.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::conn::ConnSet;
use crate::model::{
    Action, AdminPeer, AdminPolicy, Cluster, IpRange, IpSet, Network, NetworkKind, NpPeer, PortRef,
    PortSpec, Workload, MAX_IPV4, NAMESPACE_NAME_LABEL,
};
use crate::ranges::{Point, Ranges};
use crate::selector::{Labels, Selector};

/// One allowed connection between two peers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Connection {
    pub src: String,
    pub dst: String,
    pub conn: String,
    /// The primary network the connection runs on (`None`: the pod network).
    #[serde(skip)]
    pub network: Option<Network>,
    /// Which policies and rules decided, egress side first. Empty unless
    /// asked for ([`evaluate_explained`]).
    #[serde(skip)]
    pub explanation: Vec<String>,
}

/// The name of the ingress-controller peer in the connlist.
pub const INGRESS_CONTROLLER: &str = "{ingress-controller}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn as_str(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
}

/// A peer: a workload (index), an external address interval, or the
/// ingress controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Workload(usize),
    External(IpRange),
    IngressController,
}

/// A rule with its peers resolved to workload indices and addresses once,
/// so a pair is decided by lookups instead of selector matching.
struct CRule {
    label: String,
    action: Action,
    workloads: Vec<bool>,
    addresses: IpSet,
    ingress_controller: bool,
    ports: Option<Vec<PortSpec>>,
    /// The rule's connections when they do not depend on the destination.
    fixed: Option<ConnSet>,
    /// Otherwise (named ports), its connections per distinct container
    /// port list of the destination, indexed by [`Compiled::sig`].
    by_sig: Vec<ConnSet>,
}

impl CRule {
    fn matches(&self, p: Peer) -> bool {
        match p {
            Peer::Workload(i) => self.workloads[i],
            Peer::External(r) => self.addresses.contains(r),
            Peer::IngressController => self.ingress_controller,
        }
    }

    /// The rule's connections towards `dst` (a workload's port signature,
    /// or `None` for a destination that is not a pod).
    fn conns(&self, dst_sig: Option<usize>) -> Cow<'_, ConnSet> {
        if let Some(f) = &self.fixed {
            return Cow::Borrowed(f);
        }
        match (dst_sig.and_then(|s| self.by_sig.get(s)), &self.ports) {
            (Some(c), _) => Cow::Borrowed(c),
            (None, None) => Cow::Owned(ConnSet::all()),
            (None, Some(ps)) => Cow::Owned(resolve_ports(ps, None)),
        }
    }
}

/// The connections named by a `ports` list; named ports resolve against the
/// destination pod's containers (nothing when the destination is not a pod).
pub(crate) fn resolve_ports(ports: &[PortSpec], dst: Option<&Workload>) -> ConnSet {
    let mut out = ConnSet::none();
    for p in ports {
        match (&p.port, p.protocol) {
            (PortRef::All, Some(proto)) => out = out.union(&ConnSet::protocol(proto)),
            (PortRef::All, None) => out = ConnSet::all(),
            (PortRef::Range(lo, hi), Some(proto)) => {
                out = out.union(&ConnSet::ports(proto, *lo, *hi))
            }
            (PortRef::Range(lo, hi), None) => {
                for proto in crate::conn::Protocol::ALL {
                    out = out.union(&ConnSet::ports(proto, *lo, *hi));
                }
            }
            (PortRef::Named(name), proto) => {
                let Some(w) = dst else { continue };
                for cp in &w.ports {
                    if cp.name.as_deref() == Some(name.as_str())
                        && proto.is_none_or(|pr| pr == cp.protocol)
                    {
                        out = out.union(&ConnSet::ports(cp.protocol, cp.port, cp.port));
                    }
                }
            }
        }
    }
    out
}

fn has_named(ports: &Option<Vec<PortSpec>>) -> bool {
    ports
        .iter()
        .flatten()
        .any(|p| matches!(p.port, PortRef::Named(_)))
}

fn new_rule(label: String, action: Action, n: usize, ports: Option<Vec<PortSpec>>) -> CRule {
    let fixed = if has_named(&ports) {
        None
    } else {
        Some(match &ports {
            None => ConnSet::all(),
            Some(ps) => resolve_ports(ps, None),
        })
    };
    CRule {
        label,
        action,
        workloads: vec![false; n],
        addresses: IpSet::empty(),
        ingress_controller: false,
        ports,
        fixed,
        by_sig: Vec::new(),
    }
}

/// Namespace labels of the ingress controllers that the connlist models
/// (OpenShift's and nginx's): a namespace selector matching one of them
/// admits the ingress controller.
fn ingress_controller_namespaces() -> Vec<Labels> {
    let mk = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        mk(&[
            (NAMESPACE_NAME_LABEL, "openshift-ingress-operator"),
            ("namespace.name", "openshift-ingress-operator"),
            ("openshift.io/cluster-monitoring", "true"),
        ]),
        mk(&[(NAMESPACE_NAME_LABEL, "ingress-nginx")]),
    ]
}

struct Compiled<'a> {
    cluster: &'a Cluster,
    /// Per workload: NetworkPolicy indices isolating it for ingress / egress.
    np_ingress: Vec<Vec<usize>>,
    np_egress: Vec<Vec<usize>>,
    /// Per policy: compiled ingress and egress rules.
    np_rules: Vec<[Vec<CRule>; 2]>,
    /// Per workload: admin policy indices whose subject selects it.
    anp_of: Vec<Vec<usize>>,
    anp_rules: Vec<[Vec<CRule>; 2]>,
    banp_selects: Vec<bool>,
    banp_rules: [Vec<CRule>; 2],
    /// Per workload: the index of its distinct container port list, so
    /// named ports resolve once per list rather than once per pair.
    sig: Vec<usize>,
}

fn ns_labels<'c>(c: &'c Cluster, ns: &str) -> Option<&'c Labels> {
    c.namespaces.get(ns)
}

fn admin_peer_matches(c: &Cluster, peer: &AdminPeer, w: &Workload) -> bool {
    let Some(nsl) = ns_labels(c, &w.namespace) else {
        return false;
    };
    match peer {
        AdminPeer::Namespaces(s) => s.matches(nsl),
        AdminPeer::Pods { namespaces, pods } => namespaces.matches(nsl) && pods.matches(&w.labels),
        AdminPeer::Networks(_) | AdminPeer::Nodes => false,
    }
}

fn compile_admin(c: &Cluster, p: &AdminPolicy, kind: &str) -> [Vec<CRule>; 2] {
    let n = c.workloads.len();
    let ic = ingress_controller_namespaces();
    let mut out: [Vec<CRule>; 2] = [Vec::new(), Vec::new()];
    for (d, rules) in [&p.ingress, &p.egress].into_iter().enumerate() {
        for (ri, r) in rules.iter().enumerate() {
            let rname = if r.name.is_empty() {
                format!("#{}", ri + 1)
            } else {
                format!("{:?}", r.name)
            };
            let label = format!(
                "{kind} {} {} rule {rname} ({:?})",
                p.name,
                if d == 0 { "ingress" } else { "egress" },
                r.action
            );
            let mut cr = new_rule(label, r.action, n, r.ports.clone());
            for peer in &r.peers {
                if let AdminPeer::Networks(nets) = peer {
                    cr.addresses = cr.addresses.union(nets);
                    continue;
                }
                for (i, w) in c.workloads.iter().enumerate() {
                    if !cr.workloads[i] && admin_peer_matches(c, peer, w) {
                        cr.workloads[i] = true;
                    }
                }
                let ic_match = match peer {
                    AdminPeer::Namespaces(s) => ic.iter().any(|l| s.matches(l)),
                    AdminPeer::Pods { namespaces, pods } => {
                        pods.is_everything() && ic.iter().any(|l| namespaces.matches(l))
                    }
                    _ => false,
                };
                cr.ingress_controller |= ic_match;
            }
            out[d].push(cr);
        }
    }
    out
}

fn np_peer_selects(
    c: &Cluster,
    policy_ns: &str,
    pods: &Option<Selector>,
    nss: &Option<Selector>,
    w: &Workload,
) -> bool {
    let ns_ok = match nss {
        None => w.namespace == policy_ns,
        Some(s) => ns_labels(c, &w.namespace).is_some_and(|l| s.matches(l)),
    };
    ns_ok && pods.as_ref().is_none_or(|s| s.matches(&w.labels))
}

impl<'a> Compiled<'a> {
    /// `network` names the secondary network being evaluated, if any.
    fn new(c: &'a Cluster, network: Option<&str>) -> Self {
        let n = c.workloads.len();
        let ic = ingress_controller_namespaces();
        let mut np_ingress = vec![Vec::new(); n];
        let mut np_egress = vec![Vec::new(); n];
        let mut np_rules = Vec::with_capacity(c.network_policies.len());
        for (pi, p) in c.network_policies.iter().enumerate() {
            for (i, w) in c.workloads.iter().enumerate() {
                if w.namespace == p.namespace && p.pod_selector.matches(&w.labels) {
                    if p.affects_ingress {
                        np_ingress[i].push(pi);
                    }
                    if p.affects_egress {
                        np_egress[i].push(pi);
                    }
                }
            }
            let mut compiled: [Vec<CRule>; 2] = [Vec::new(), Vec::new()];
            for (d, rules) in [&p.ingress, &p.egress].into_iter().enumerate() {
                for (ri, r) in rules.iter().enumerate() {
                    let label = format!(
                        "NetworkPolicy {}/{} {} rule #{}",
                        p.namespace,
                        p.name,
                        if d == 0 { "ingress" } else { "egress" },
                        ri + 1
                    );
                    let ports = if r.ports.is_empty() {
                        None
                    } else {
                        Some(r.ports.clone())
                    };
                    let mut cr = new_rule(label, Action::Allow, n, ports);
                    if r.peers.is_empty() {
                        cr.workloads = vec![true; n];
                        cr.addresses = IpSet::all();
                        cr.ingress_controller = true;
                    }
                    for peer in &r.peers {
                        match peer {
                            NpPeer::IpBlock { addresses, .. } => {
                                cr.addresses = cr.addresses.union(addresses);
                                // On a secondary network pods have known
                                // static addresses, so ipBlocks select them.
                                if let Some(net) = network {
                                    for (i, w) in c.workloads.iter().enumerate() {
                                        if w.secondary_addresses
                                            .iter()
                                            .any(|(n, ip)| n == net && addresses.contains(*ip))
                                        {
                                            cr.workloads[i] = true;
                                        }
                                    }
                                }
                            }
                            NpPeer::Pods { pods, namespaces } => {
                                for (i, w) in c.workloads.iter().enumerate() {
                                    if !cr.workloads[i]
                                        && np_peer_selects(c, &p.namespace, pods, namespaces, w)
                                    {
                                        cr.workloads[i] = true;
                                    }
                                }
                                if let Some(nss) = namespaces {
                                    if pods.as_ref().is_none_or(Selector::is_everything)
                                        && ic.iter().any(|l| nss.matches(l))
                                    {
                                        cr.ingress_controller = true;
                                    }
                                }
                            }
                        }
                    }
                    compiled[d].push(cr);
                }
            }
            np_rules.push(compiled);
        }
        let mut anp_of = vec![Vec::new(); n];
        let mut anp_rules = Vec::with_capacity(c.admin_policies.len());
        for (ai, p) in c.admin_policies.iter().enumerate() {
            for (i, w) in c.workloads.iter().enumerate() {
                if admin_peer_matches(c, &p.subject, w) {
                    anp_of[i].push(ai);
                }
            }
            anp_rules.push(compile_admin(c, p, "AdminNetworkPolicy"));
        }
        let (banp_selects, banp_rules) = match &c.baseline {
            Some(b) => (
                c.workloads
                    .iter()
                    .map(|w| admin_peer_matches(c, &b.subject, w))
                    .collect(),
                compile_admin(c, b, "BaselineAdminNetworkPolicy"),
            ),
            None => (vec![false; n], [Vec::new(), Vec::new()]),
        };
        let mut sig_of: HashMap<&[crate::model::ContainerPort], usize> = HashMap::new();
        let mut reps: Vec<usize> = Vec::new();
        let sig: Vec<usize> = c
            .workloads
            .iter()
            .enumerate()
            .map(|(i, w)| {
                *sig_of.entry(w.ports.as_slice()).or_insert_with(|| {
                    reps.push(i);
                    reps.len() - 1
                })
            })
            .collect();
        let fill = |r: &mut CRule| {
            if r.fixed.is_none() {
                if let Some(ps) = &r.ports {
                    r.by_sig = reps
                        .iter()
                        .map(|&i| resolve_ports(ps, c.workloads.get(i)))
                        .collect();
                }
            }
        };
        let mut banp_rules = banp_rules;
        for r in np_rules
            .iter_mut()
            .chain(anp_rules.iter_mut())
            .chain(std::iter::once(&mut banp_rules))
            .flat_map(|d| d.iter_mut())
            .flat_map(|v| v.iter_mut())
        {
            fill(r);
        }
        Compiled {
            sig,
            cluster: c,
            np_ingress,
            np_egress,
            np_rules,
            anp_of,
            anp_rules,
            banp_selects,
            banp_rules,
        }
    }

    /// What `subject`'s `dir` side allows to/from `other`. `None` means
    /// unrestricted (nothing selects the subject), which avoids building
    /// full sets for the common case.
    fn side(
        &self,
        dir: Dir,
        subject: usize,
        other: Peer,
        why: Option<&mut Vec<String>>,
    ) -> Option<ConnSet> {
        let d = match dir {
            Dir::Ingress => 0,
            Dir::Egress => 1,
        };
        let nps = match dir {
            Dir::Ingress => &self.np_ingress[subject],
            Dir::Egress => &self.np_egress[subject],
        };
        let anps = &self.anp_of[subject];
        let banp = self.banp_selects[subject];
        if nps.is_empty() && anps.is_empty() && !banp {
            if let Some(w) = why {
                w.push(format!(
                    "{}: no policy selects the {}",
                    dir.as_str(),
                    side_noun(dir)
                ));
            }
            return None;
        }
        let mut why = why;
        // Named ports always resolve against the destination of the flow.
        let dst: Option<usize> = match (dir, other) {
            (Dir::Ingress, _) => self.sig.get(subject).copied(),
            (Dir::Egress, Peer::Workload(j)) => self.sig.get(j).copied(),
            (Dir::Egress, _) => None,
        };
        if anps.is_empty() && why.is_none() {
            // NetworkPolicies only: the union of the matching rules.
            let mut acc: Option<ConnSet> = None;
            for &pi in nps {
                for r in &self.np_rules[pi][d] {
                    if r.matches(other) {
                        let c = r.conns(dst);
                        acc = Some(match acc {
                            None => c.into_owned(),
                            Some(a) => a.union(&c),
                        });
                    }
                }
            }
            if !nps.is_empty() {
                return Some(acc.unwrap_or_default());
            }
        }
        let mut rest = ConnSet::all();
        let mut allowed = ConnSet::none();
        let mut passed = ConnSet::none();
        for &ai in anps {
            for r in &self.anp_rules[ai][d] {
                if rest.is_empty() {
                    break;
                }
                if !r.matches(other) {
                    continue;
                }
                let c = r.conns(dst).intersect(&rest);
                if c.is_empty() {
                    continue;
                }
                if let Some(w) = why.as_deref_mut() {
                    w.push(format!("{}: {} decides {}", dir.as_str(), r.label, c));
                }
                match r.action {
                    Action::Allow => allowed = allowed.union(&c),
                    Action::Pass => passed = passed.union(&c),
                    Action::Deny => {}
                }
                rest = rest.subtract(&c);
            }
        }
        let rest = rest.union(&passed);
        if rest.is_empty() {
            return Some(allowed);
        }
        if !nps.is_empty() {
            let mut np_allowed = ConnSet::none();
            for &pi in nps {
                for r in &self.np_rules[pi][d] {
                    if r.matches(other) {
                        let c = r.conns(dst);
                        if let Some(w) = why.as_deref_mut() {
                            if !c.intersect(&rest).is_empty() {
                                w.push(format!(
                                    "{}: {} allows {}",
                                    dir.as_str(),
                                    r.label,
                                    c.intersect(&rest)
                                ));
                            }
                        }
                        np_allowed = np_allowed.union(&c);
                    }
                }
            }
            let denied = rest.subtract(&np_allowed);
            if let Some(w) = why.as_deref_mut() {
                if !denied.is_empty() {
                    let names: Vec<String> = nps
                        .iter()
                        .map(|&pi| {
                            let p = &self.cluster.network_policies[pi];
                            format!("{}/{}", p.namespace, p.name)
                        })
                        .collect();
                    w.push(format!(
                        "{}: {} denied: the {} is isolated by NetworkPolicy {} and no rule allows it",
                        dir.as_str(),
                        denied,
                        side_noun(dir),
                        names.join(", ")
                    ));
                }
            }
            return Some(allowed.union(&rest.intersect(&np_allowed)));
        }
        let mut rest = rest;
        if banp {
            for r in &self.banp_rules[d] {
                if rest.is_empty() {
                    break;
                }
                if !r.matches(other) {
                    continue;
                }
                let c = r.conns(dst).intersect(&rest);
                if c.is_empty() {
                    continue;
                }
                if let Some(w) = why.as_deref_mut() {
                    w.push(format!("{}: {} decides {}", dir.as_str(), r.label, c));
                }
                if r.action == Action::Allow {
                    allowed = allowed.union(&c);
                }
                rest = rest.subtract(&c);
            }
        }
        if !rest.is_empty() {
            if let Some(w) = why {
                w.push(format!(
                    "{}: {} allowed by default (no rule matched)",
                    dir.as_str(),
                    rest
                ));
            }
        }
        Some(allowed.union(&rest))
    }
}

fn side_noun(dir: Dir) -> &'static str {
    match dir {
        Dir::Ingress => "destination",
        Dir::Egress => "source",
    }
}

/// The disjoint address intervals that the policies distinguish on one
/// side: every CIDR and `except` boundary of the ingress rules (for
/// sources) or of the egress rules (for destinations) cuts
/// 0.0.0.0-255.255.255.255, so each interval is wholly inside or outside
/// every ipBlock and network of that direction. The IPv6 space
/// (`::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff`) is cut the same way and
/// listed only when the cluster is dual-stack (see [`uses_ipv6`]), so
/// IPv4-only inputs keep their connlist.
pub fn external_intervals(c: &Cluster, ingress: bool) -> Vec<IpRange> {
    let mut cuts4: Vec<u64> = vec![0];
    let mut cuts6: Vec<u128> = vec![0];
    let mut add = |r: &IpSet| {
        cut(&mut cuts4, &r.v4);
        cut(&mut cuts6, &r.v6);
    };
    for p in &c.network_policies {
        let rules = if ingress { &p.ingress } else { &p.egress };
        for r in rules {
            for peer in &r.peers {
                if let NpPeer::IpBlock { addresses, .. } = peer {
                    add(addresses);
                }
            }
        }
    }
    for p in c.admin_policies.iter().chain(c.baseline.iter()) {
        let rules = if ingress { &p.ingress } else { &p.egress };
        for r in rules {
            for peer in &r.peers {
                if let AdminPeer::Networks(n) = peer {
                    add(n);
                }
            }
        }
    }
    let mut out: Vec<IpRange> = pieces(cuts4, MAX_IPV4)
        .map(|(lo, hi)| IpRange::V4(lo, hi))
        .collect();
    if uses_ipv6(c) {
        out.extend(pieces(cuts6, u128::MAX).map(|(lo, hi)| IpRange::V6(lo, hi)));
    }
    out
}

/// Adds the boundaries of `r` (each interval's start and the value after
/// its end, if any) to `cuts`.
fn cut<T: Point>(cuts: &mut Vec<T>, r: &Ranges<T>) {
    for &(lo, hi) in r.intervals() {
        cuts.push(lo);
        if hi.succ_sat() != hi {
            cuts.push(hi.succ());
        }
    }
}

/// The intervals between sorted cut points, the last one ending at `max`.
fn pieces<T: Point>(mut cuts: Vec<T>, max: T) -> impl Iterator<Item = (T, T)> {
    cuts.retain(|&c| c <= max);
    cuts.sort_unstable();
    cuts.dedup();
    let ends: Vec<T> = cuts
        .iter()
        .skip(1)
        .map(|&c| c.pred())
        .chain([max])
        .collect();
    cuts.into_iter().zip(ends)
}

/// Whether the connlist lists the IPv6 outside world: the cluster is
/// marked dual-stack ([`Cluster::dual_stack`]) or a pod has an IPv6
/// secondary-network address. IPv6 blocks in policies alone do not turn it
/// on, since IPv4-only clusters carry such policies too.
pub fn uses_ipv6(c: &Cluster) -> bool {
    c.dual_stack
        || c.workloads.iter().any(|w| {
            w.secondary_addresses
                .iter()
                .any(|(_, a)| matches!(a, IpRange::V6(..)))
        })
}

fn peer_name(c: &Cluster, p: Peer) -> String {
    match p {
        Peer::Workload(i) => c
            .workloads
            .get(i)
            .map(|w| c.peer_name(w))
            .unwrap_or_default(),
        Peer::External(r) => format!("{r}[External]"),
        Peer::IngressController => INGRESS_CONTROLLER.to_string(),
    }
}

/// Every allowed connection, sorted as the connlist sorts them, without
/// explanations.
pub fn evaluate(cluster: &Cluster) -> Vec<Connection> {
    run(cluster, false)
}

/// Like [`evaluate`], with each connection's deciding policies and rules.
pub fn evaluate_explained(cluster: &Cluster) -> Vec<Connection> {
    run(cluster, true)
}

fn run(cluster: &Cluster, explain: bool) -> Vec<Connection> {
    let comp = Compiled::new(cluster, None);
    let n = cluster.workloads.len();
    let workloads: Vec<Peer> = (0..n).map(Peer::Workload).collect();
    let named = |ps: Vec<Peer>| -> Vec<(Peer, String)> {
        ps.into_iter().map(|p| (p, peer_name(cluster, p))).collect()
    };
    let externals = |ingress: bool| -> Vec<Peer> {
        external_intervals(cluster, ingress)
            .into_iter()
            .map(Peer::External)
            .collect()
    };
    let internal = named(workloads);
    let ext_src = named(externals(true));
    let ext_dst = named(externals(false));
    let mut out = Vec::new();
    let mut push = |src: &(Peer, String), dst: &(Peer, String)| {
        let s_w = match src.0 {
            Peer::Workload(a) => Some(a),
            _ => None,
        };
        let d_w = match dst.0 {
            Peer::Workload(b) => Some(b),
            _ => None,
        };
        let net_of = |i: Option<usize>| {
            cluster
                .workloads
                .get(i?)
                .and_then(|w| cluster.network_of(w))
        };
        let (s_net, d_net) = (net_of(s_w), net_of(d_w));
        // Pods on different primary networks are not connected at all.
        if s_w.is_some() && d_w.is_some() && s_net != d_net {
            return;
        }
        if let Some(c) = decide(&comp, src.0, s_w, dst.0, d_w, None, explain) {
            out.push(Connection {
                src: src.1.clone(),
                dst: dst.1.clone(),
                conn: c.0,
                network: s_net.or(d_net).cloned(),
                explanation: c.1,
            });
        }
    };
    for (si, s) in internal.iter().enumerate() {
        for (di, d) in internal.iter().enumerate() {
            if si != di {
                push(s, d);
            }
        }
        for d in &ext_dst {
            push(s, d);
        }
    }
    for s in &ext_src {
        for d in &internal {
            push(s, d);
        }
    }
    for e in &cluster.exposures {
        let Some(w) = cluster.workloads.get(e.workload) else {
            continue;
        };
        let mut exposed = resolve_ports(&e.ports, Some(w));
        if !w.ports.is_empty() {
            // A Service port that no container listens on carries nothing.
            let declared = w.ports.iter().fold(ConnSet::none(), |acc, p| {
                acc.union(&ConnSet::ports(p.protocol, p.port, p.port))
            });
            exposed = exposed.intersect(&declared);
        }
        if let Some(c) = decide(
            &comp,
            Peer::IngressController,
            None,
            Peer::Workload(e.workload),
            Some(e.workload),
            Some(exposed),
            explain,
        ) {
            out.push(Connection {
                src: INGRESS_CONTROLLER.to_string(),
                dst: cluster.peer_name(w),
                conn: c.0,
                network: cluster.network_of(w).cloned(),
                explanation: c.1,
            });
        }
    }
    // The connlist sorts lines bytewise by `src => dst`; a pair connected
    // over a secondary network too is listed with that network's entry first.
    let mut all = secondary_network_connections(cluster, explain);
    all.append(&mut out);
    let mut out = all;
    out.sort_by_cached_key(|c| format!("{} => {}", c.src, c.dst));
    out
}

/// Connections over secondary networks: between the workloads attached to
/// the same NetworkAttachmentDefinition, decided by the MultiNetworkPolicies
/// for that network alone (NetworkPolicies and admin policies govern only
/// the primary network).
fn secondary_network_connections(cluster: &Cluster, explain: bool) -> Vec<Connection> {
    let mut nads: Vec<&str> = cluster
        .workloads
        .iter()
        .flat_map(|w| w.secondary_networks.iter().map(String::as_str))
        .collect();
    nads.sort_unstable();
    nads.dedup();
    let mut out = Vec::new();
    for nad in nads {
        let sub = Cluster {
            workloads: cluster
                .workloads
                .iter()
                .filter(|w| w.secondary_networks.iter().any(|n| n == nad))
                .cloned()
                .collect(),
            namespaces: cluster.namespaces.clone(),
            network_policies: cluster
                .multi_network_policies
                .iter()
                .filter(|(_, nets)| nets.iter().any(|n| n == nad))
                .map(|(p, _)| p.clone())
                .collect(),
            ..Cluster::default()
        };
        let comp = Compiled::new(&sub, Some(nad));
        let network = Network {
            kind: NetworkKind::Nad,
            name: nad.to_string(),
        };
        for (i, a) in sub.workloads.iter().enumerate() {
            for (j, b) in sub.workloads.iter().enumerate() {
                if i == j {
                    continue;
                }
                let (sp, dp) = (Peer::Workload(i), Peer::Workload(j));
                if let Some(c) = decide(&comp, sp, Some(i), dp, Some(j), None, explain) {
                    out.push(Connection {
                        src: a.peer_name(),
                        dst: b.peer_name(),
                        conn: c.0,
                        network: Some(network.clone()),
                        explanation: c.1,
                    });
                }
            }
        }
    }
    out
}

/// The printed connection set between two peers, `None` when nothing is
/// allowed.
fn decide(
    comp: &Compiled<'_>,
    src: Peer,
    s_w: Option<usize>,
    dst: Peer,
    d_w: Option<usize>,
    limit: Option<ConnSet>,
    explain: bool,
) -> Option<(String, Vec<String>)> {
    let (conn, why) = decide_full(comp, src, s_w, dst, d_w, limit, explain, true);
    if conn.is_empty() {
        return None;
    }
    Some((conn.to_string(), why))
}

/// Egress of the source AND ingress of the destination (AND `limit`).
/// With `short_cut`, a denied egress skips the ingress side.
#[allow(clippy::too_many_arguments)]
fn decide_full(
    comp: &Compiled<'_>,
    src: Peer,
    s_w: Option<usize>,
    dst: Peer,
    d_w: Option<usize>,
    limit: Option<ConnSet>,
    explain: bool,
    short_cut: bool,
) -> (ConnSet, Vec<String>) {
    let mut why = Vec::new();
    let eg = s_w.and_then(|a| comp.side(Dir::Egress, a, dst, explain.then_some(&mut why)));
    if short_cut && eg.as_ref().is_some_and(ConnSet::is_empty) {
        return (ConnSet::none(), why);
    }
    let ing = d_w.and_then(|b| comp.side(Dir::Ingress, b, src, explain.then_some(&mut why)));
    let mut sets = [eg, ing, limit].into_iter().flatten();
    let conn = match sets.next() {
        None => ConnSet::all(),
        Some(first) => sets.fold(first, |acc, s| acc.intersect(&s)),
    };
    (conn, why)
}

/// Explains one pair on the primary network, allowed or not: the returned
/// connection's `conn` may be `No Connections`, and its explanation names
/// the rules that allowed traffic and the isolation that denied the rest.
/// Peers are named as in the connlist (`ns/name[Kind]`, an external range
/// such as `0.0.0.0-255.255.255.255[External]`) or, for the external
/// side, by a bare IPv4 address. `None` when a name is unknown, or when
/// both peers are external.
pub fn explain_pair(cluster: &Cluster, src: &str, dst: &str) -> Option<Connection> {
    let comp = Compiled::new(cluster, None);
    let find = |name: &str, ingress: bool| -> Option<(Peer, String)> {
        if let Some(i) = cluster
            .workloads
            .iter()
            .position(|w| cluster.peer_name(w) == name || w.peer_name() == name)
        {
            return Some((Peer::Workload(i), cluster.peer_name(&cluster.workloads[i])));
        }
        let ip = crate::model::parse_cidr(name).ok().map(IpRange::first);
        external_intervals(cluster, ingress)
            .into_iter()
            .map(Peer::External)
            .map(|p| (p, peer_name(cluster, p)))
            .find(|(p, n)| {
                n == name || matches!((p, ip), (Peer::External(r), Some(ip)) if r.contains(ip))
            })
    };
    let (sp, sn) = find(src, true)?;
    let (dp, dn) = find(dst, false)?;
    let idx = |p: Peer| match p {
        Peer::Workload(i) => Some(i),
        _ => None,
    };
    let (s_w, d_w) = (idx(sp), idx(dp));
    if s_w.is_none() && d_w.is_none() {
        return None;
    }
    let net = |i: Option<usize>| {
        cluster
            .workloads
            .get(i?)
            .and_then(|w| cluster.network_of(w))
    };
    let (s_net, d_net) = (net(s_w), net(d_w));
    if s_w.is_some() && d_w.is_some() && s_net != d_net {
        return Some(Connection {
            src: sn,
            dst: dn,
            conn: ConnSet::none().to_string(),
            network: s_net.cloned(),
            explanation: vec!["the peers are on different primary networks".to_string()],
        });
    }
    let (conn, explanation) = decide_full(&comp, sp, s_w, dp, d_w, None, true, false);
    Some(Connection {
        src: sn,
        dst: dn,
        conn: conn.to_string(),
        network: s_net.or(d_net).cloned(),
        explanation,
    })
}

/// The connections into the given destination workloads only (indices in
/// [`Cluster::workloads`]), from every other workload and from the outside
/// world, decided exactly as [`evaluate`] decides them. An assessment asks
/// who reaches its data stores; deciding only the pairs that end at them
/// keeps that linear in the cluster's size instead of quadratic. Sorted as
/// the connlist sorts them.
pub fn connections_to(cluster: &Cluster, dsts: &[usize]) -> Vec<Connection> {
    let comp = Compiled::new(cluster, None);
    let outside: Vec<(Peer, String)> = external_intervals(cluster, true)
        .into_iter()
        .map(Peer::External)
        .map(|p| (p, peer_name(cluster, p)))
        .collect();
    let mut out = Vec::new();
    for &d in dsts {
        let Some(dw) = cluster.workloads.get(d) else {
            continue;
        };
        let d_net = cluster.network_of(dw);
        let d_name = cluster.peer_name(dw);
        let mut push = |src: String, conn: Option<(String, Vec<String>)>| {
            if let Some((conn, explanation)) = conn {
                out.push(Connection {
                    src,
                    dst: d_name.clone(),
                    conn,
                    network: d_net.cloned(),
                    explanation,
                });
            }
        };
        for (s, sw) in cluster.workloads.iter().enumerate() {
            // Pods on different primary networks are not connected at all.
            if s == d || cluster.network_of(sw) != d_net {
                continue;
            }
            let c = decide(
                &comp,
                Peer::Workload(s),
                Some(s),
                Peer::Workload(d),
                Some(d),
                None,
                false,
            );
            push(cluster.peer_name(sw), c);
        }
        for (p, name) in &outside {
            let c = decide(&comp, *p, None, Peer::Workload(d), Some(d), None, false);
            push(name.clone(), c);
        }
    }
    out.sort_by_cached_key(|c| format!("{} => {}", c.src, c.dst));
    out
}

/// One end of an observed flow, for [`FlowDecider`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowPeer {
    /// A workload, by its index in [`Cluster::workloads`].
    Workload(usize),
    /// An IPv4 address outside the cluster, as an integer.
    Address(u64),
    /// An IPv6 address outside the cluster, as an integer.
    Address6(u128),
    /// An address the model cannot place: no ipBlock matches it.
    Unmodelled,
}

/// A NetworkPolicy rule that matched a flow: the policy's index in
/// [`Cluster::network_policies`], the direction, the rule's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    pub policy: usize,
    pub egress: bool,
    pub rule: usize,
}

/// The verdict on one flow, with each side's part in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDecision {
    pub allowed: bool,
    /// Whether the source's egress side lets it out.
    pub egress_allowed: bool,
    /// Whether the destination's ingress side lets it in.
    pub ingress_allowed: bool,
    /// The NetworkPolicy rules that allow this flow on either side.
    pub rules: Vec<RuleRef>,
}

/// Decides single observed flows (a port, not a whole connection set)
/// against a cluster's policies, compiled once: what simulation and drift
/// replay observed traffic through.
pub struct FlowDecider<'a> {
    comp: Compiled<'a>,
}

impl<'a> FlowDecider<'a> {
    pub fn new(cluster: &'a Cluster) -> Self {
        FlowDecider {
            comp: Compiled::new(cluster, None),
        }
    }

    fn peer(p: FlowPeer) -> (Peer, Option<usize>) {
        match p {
            FlowPeer::Workload(i) => (Peer::Workload(i), Some(i)),
            FlowPeer::Address(a) => (Peer::External(IpRange::V4(a, a)), None),
            FlowPeer::Address6(a) => (Peer::External(IpRange::V6(a, a)), None),
            // Outside the IPv4 space, so no set contains it.
            FlowPeer::Unmodelled => (
                Peer::External(IpRange::V4(MAX_IPV4 + 1, MAX_IPV4 + 1)),
                None,
            ),
        }
    }

    /// Whether `proto`/`port` from `src` to `dst` is allowed, and by which
    /// NetworkPolicy rules.
    pub fn decide(
        &self,
        src: FlowPeer,
        dst: FlowPeer,
        proto: crate::conn::Protocol,
        port: u16,
    ) -> FlowDecision {
        let c = self.comp.cluster;
        let (sp, s_w) = Self::peer(src);
        let (dp, d_w) = Self::peer(dst);
        let port = u64::from(port);
        let has = |set: &ConnSet| set.ranges(proto).contains_interval(port, port);
        if let (Some(a), Some(b)) = (s_w, d_w) {
            let net = |i: usize| c.workloads.get(i).and_then(|w| c.network_of(w));
            if net(a) != net(b) {
                return FlowDecision {
                    allowed: false,
                    egress_allowed: false,
                    ingress_allowed: false,
                    rules: Vec::new(),
                };
            }
        }
        let egress_allowed = s_w
            .and_then(|a| self.comp.side(Dir::Egress, a, dp, None))
            .is_none_or(|set| has(&set));
        let ingress_allowed = d_w
            .and_then(|b| self.comp.side(Dir::Ingress, b, sp, None))
            .is_none_or(|set| has(&set));
        let mut rules = Vec::new();
        let mut collect = |subject: usize, other: Peer, egress: bool| {
            let (list, d) = if egress {
                (&self.comp.np_egress[subject], 1)
            } else {
                (&self.comp.np_ingress[subject], 0)
            };
            let dst_sig = match (egress, other) {
                (false, _) => self.comp.sig.get(subject).copied(),
                (true, Peer::Workload(j)) => self.comp.sig.get(j).copied(),
                (true, _) => None,
            };
            for &pi in list {
                for (ri, r) in self.comp.np_rules[pi][d].iter().enumerate() {
                    if r.matches(other) && has(&r.conns(dst_sig)) {
                        rules.push(RuleRef {
                            policy: pi,
                            egress,
                            rule: ri,
                        });
                    }
                }
            }
        };
        if let Some(a) = s_w {
            collect(a, dp, true);
        }
        if let Some(b) = d_w {
            collect(b, sp, false);
        }
        FlowDecision {
            allowed: egress_allowed && ingress_allowed,
            egress_allowed,
            ingress_allowed,
            rules,
        }
    }
}
