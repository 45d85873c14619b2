//! Printing connections in the connlist notation.

use std::fmt::Write;

use crate::eval::Connection;
use crate::model::{Cluster, Network, NetworkKind};

/// One line per connection, `src => dst : conn`, each ending in a newline.
/// With `explain`, the deciding policies and rules follow each line,
/// indented.
pub fn format_connlist(conns: &[Connection], explain: bool) -> String {
    let mut out = String::new();
    for c in conns {
        let _ = writeln!(out, "{} => {} : {}", c.src, c.dst, c.conn);
        if explain {
            for e in &c.explanation {
                let _ = writeln!(out, "    {e}");
            }
        }
    }
    out
}

/// `[{"src", "dst", "conn"}]`, as the connlist's JSON output.
pub fn format_json(conns: &[Connection]) -> serde_json::Value {
    serde_json::Value::Array(
        conns
            .iter()
            .map(|c| serde_json::json!({"src": c.src, "dst": c.dst, "conn": c.conn}))
            .collect(),
    )
}

/// The full connlist report. Without user-defined networks or virtual
/// machines it is [`format_connlist`]; with them, connections are grouped
/// per primary network (the pod network first, then UDNs, then CUDNs) and a
/// workload-to-network mapping follows, as netpol-analyzer prints it.
pub fn format_report(cluster: &Cluster, conns: &[Connection], explain: bool) -> String {
    if !cluster.network_aware {
        return format_connlist(conns, explain);
    }
    let mut out = String::new();
    let secondary: Vec<Network> = {
        let mut v: Vec<Network> = cluster
            .workloads
            .iter()
            .flat_map(|w| w.secondary_networks.iter())
            .map(|n| Network {
                kind: NetworkKind::Nad,
                name: n.clone(),
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    if !cluster.primary_networks.is_empty() || !secondary.is_empty() {
        let mut nets: Vec<Option<&Network>> = cluster
            .workloads
            .iter()
            .map(|w| cluster.network_of(w))
            .chain(secondary.iter().map(Some))
            .collect();
        nets.push(None);
        nets.sort();
        nets.dedup();
        for net in nets {
            let here: Vec<Connection> = conns
                .iter()
                .filter(|c| c.network.as_ref() == net)
                .cloned()
                .collect();
            match net {
                None => {
                    out.push_str("Permitted connectivity analyzed in Pod network:\n");
                    if cluster
                        .workloads
                        .iter()
                        .all(|w| cluster.network_of(w).is_some())
                    {
                        out.push_str("all input workloads are configured with (C)UDN as their primary network interface\n");
                    } else if here.is_empty() {
                        out.push_str(
                            "All connections are not allowed for the workloads in the pod-network\n",
                        );
                    }
                }
                Some(n) => {
                    let role = if n.kind == NetworkKind::Nad {
                        "secondary"
                    } else {
                        "primary"
                    };
                    let _ = writeln!(
                        out,
                        "Permitted connectivity analyzed in {role} {} {}:",
                        kind_tag(n.kind),
                        n.name
                    );
                }
            }
            out.push_str(&format_connlist(&here, explain));
            out.push('\n');
        }
    } else {
        out.push_str(&format_connlist(conns, explain));
        out.push('\n');
    }
    out.push_str("Workload-to-Networks Mapping:\n");
    let mut rows: Vec<(String, String, String)> = cluster
        .workloads
        .iter()
        .map(|w| {
            let net = match cluster.network_of(w) {
                None => "pod-network".to_string(),
                Some(n) => format!("{}[{}]", n.name, kind_tag(n.kind)),
            };
            let secondary: Vec<String> = w
                .secondary_networks
                .iter()
                .map(|n| format!("{n}[NAD]"))
                .collect();
            (w.peer_name(), net, secondary.join(","))
        })
        .collect();
    rows.sort();
    for (w, net, secondary) in rows {
        let _ = writeln!(out, "{w}: \n\tPrimary Network: {net}");
        if !secondary.is_empty() {
            let _ = writeln!(out, "\tSecondary Networks: {secondary}");
        }
    }
    out
}

fn kind_tag(k: NetworkKind) -> &'static str {
    match k {
        NetworkKind::Udn => "UDN",
        NetworkKind::Cudn => "CUDN",
        NetworkKind::Nad => "NAD",
    }
}
