//! Printing connections in the connlist notation.

use std::fmt::Write;

use crate::eval::Connection;
use crate::model::{Cluster, NetworkKind, PrimaryNetwork};

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
    if !cluster.primary_networks.is_empty() {
        let mut nets: Vec<Option<&PrimaryNetwork>> = cluster
            .workloads
            .iter()
            .map(|w| cluster.network_of(w))
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
                    }
                }
                Some(n) => {
                    let kind = match n.kind {
                        NetworkKind::Udn => "UDN",
                        NetworkKind::Cudn => "CUDN",
                    };
                    let _ = writeln!(
                        out,
                        "Permitted connectivity analyzed in primary {kind} {}:",
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
    let mut rows: Vec<(String, String)> = cluster
        .workloads
        .iter()
        .map(|w| {
            let net = match cluster.network_of(w) {
                None => "pod-network".to_string(),
                Some(n) => format!(
                    "{}[{}]",
                    n.name,
                    match n.kind {
                        NetworkKind::Udn => "UDN",
                        NetworkKind::Cudn => "CUDN",
                    }
                ),
            };
            (w.peer_name(), net)
        })
        .collect();
    rows.sort();
    for (w, net) in rows {
        let _ = writeln!(out, "{w}: \n\tPrimary Network: {net}");
    }
    out
}
