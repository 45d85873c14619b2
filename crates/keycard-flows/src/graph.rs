//! The service dependency graph: workloads and external addresses as
//! nodes, observed edges between them, rendered as JSON, Graphviz DOT,
//! Mermaid or a standalone SVG, and queried by the labels of the
//! destination ("which workloads talk to the databases, and on what").
//!
//! Every renderer is deterministic (nodes and edges sorted) so that a graph
//! committed to Git only changes when the traffic does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::ingest::{Edge, Peer, Verdict};
use crate::inventory::Inventory;

/// Edges merged per (source, destination, verdict), ports listed.
struct Link<'e> {
    src: usize,
    dst: usize,
    verdict: Verdict,
    edges: Vec<&'e Edge>,
}

struct Graph<'e> {
    nodes: Vec<&'e Peer>,
    links: Vec<Link<'e>>,
}

fn build(edges: &[Edge]) -> Graph<'_> {
    let set: BTreeSet<&Peer> = edges.iter().flat_map(|e| [&e.src, &e.dst]).collect();
    let nodes: Vec<&Peer> = set.into_iter().collect();
    let index: BTreeMap<&Peer, usize> = nodes.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut links: BTreeMap<(usize, usize, Verdict), Vec<&Edge>> = BTreeMap::new();
    for e in edges {
        let (Some(&s), Some(&d)) = (index.get(&e.src), index.get(&e.dst)) else {
            continue;
        };
        links.entry((s, d, e.verdict)).or_default().push(e);
    }
    let links = links
        .into_iter()
        .map(|((src, dst, verdict), mut edges)| {
            edges.sort_by_key(|e| (e.protocol, e.port));
            Link {
                src,
                dst,
                verdict,
                edges,
            }
        })
        .collect();
    Graph { nodes, links }
}

fn ports_label(edges: &[&Edge]) -> String {
    edges
        .iter()
        .map(|e| format!("{} {} ×{}", e.protocol.as_str(), e.port, e.count))
        .collect::<Vec<_>>()
        .join(", ")
}

fn peer_json(p: &Peer) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

/// `{"nodes": [...], "edges": [...]}` with every edge's counts and times.
pub fn to_json(edges: &[Edge]) -> Value {
    let g = build(edges);
    let nodes: Vec<Value> = g
        .nodes
        .iter()
        .map(|p| {
            let mut v = peer_json(p);
            if let Some(m) = v.as_object_mut() {
                m.insert("id".into(), Value::String(p.display()));
            }
            v
        })
        .collect();
    let mut out_edges = Vec::new();
    for l in &g.links {
        for e in &l.edges {
            out_edges.push(json!({
                "src": g.nodes[l.src].display(),
                "dst": g.nodes[l.dst].display(),
                "protocol": e.protocol.as_str(),
                "port": e.port,
                "verdict": e.verdict.as_str(),
                "count": e.count,
                "bytes": e.bytes,
                "first_seen": e.first_seen,
                "last_seen": e.last_seen,
            }));
        }
    }
    json!({"nodes": nodes, "edges": out_edges})
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT: denied edges red and dashed, externals as boxes.
pub fn to_dot(edges: &[Edge]) -> String {
    let g = build(edges);
    let mut out = String::from(
        "digraph flows {\n  rankdir=LR;\n  node [shape=ellipse, fontname=\"sans-serif\"];\n",
    );
    for (i, p) in g.nodes.iter().enumerate() {
        let shape = match p {
            Peer::External { .. } => ", shape=box, style=dashed",
            Peer::Workload { .. } => "",
        };
        let _ = writeln!(
            out,
            "  n{i} [label=\"{}\"{shape}];",
            dot_escape(&p.display())
        );
    }
    for l in &g.links {
        let style = match l.verdict {
            Verdict::Allowed => "",
            Verdict::Denied => ", color=red, fontcolor=red, style=dashed",
        };
        let _ = writeln!(
            out,
            "  n{} -> n{} [label=\"{}{}\"{style}];",
            l.src,
            l.dst,
            if l.verdict == Verdict::Denied {
                "DENIED "
            } else {
                ""
            },
            dot_escape(&ports_label(&l.edges))
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
        .replace('|', "#124;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// A Mermaid flowchart: denied edges dotted and red.
pub fn to_mermaid(edges: &[Edge]) -> String {
    let g = build(edges);
    let mut out = String::from("flowchart LR\n");
    for (i, p) in g.nodes.iter().enumerate() {
        let label = mermaid_escape(&p.display());
        match p {
            Peer::External { .. } => {
                let _ = writeln!(out, "  n{i}[/\"{label}\"/]");
            }
            Peer::Workload { .. } => {
                let _ = writeln!(out, "  n{i}(\"{label}\")");
            }
        }
    }
    let mut denied = Vec::new();
    for (k, l) in g.links.iter().enumerate() {
        let label = mermaid_escape(&ports_label(&l.edges));
        let arrow = match l.verdict {
            Verdict::Allowed => "-->",
            Verdict::Denied => {
                denied.push(k.to_string());
                "-.->"
            }
        };
        let prefix = if l.verdict == Verdict::Denied {
            "DENIED "
        } else {
            ""
        };
        let _ = writeln!(out, "  n{} {arrow}|\"{prefix}{label}\"| n{}", l.src, l.dst);
    }
    if !denied.is_empty() {
        let _ = writeln!(
            out,
            "  linkStyle {} stroke:#c62828,color:#c62828",
            denied.join(",")
        );
    }
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// Layers by longest path from the sources (edges that close a cycle are
/// ignored for layering), so traffic flows left to right.
fn layers(n: usize, links: &[Link<'_>]) -> Vec<usize> {
    let mut layer = vec![0usize; n];
    // Bellman-Ford style relaxation, at most n rounds: a cycle cannot push
    // a node past layer n-1.
    for _ in 0..n {
        let mut changed = false;
        for l in links {
            if l.src != l.dst && layer[l.dst] <= layer[l.src] && layer[l.src] + 1 < n {
                layer[l.dst] = layer[l.src] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

/// A standalone SVG with a layered layout: columns by dependency depth,
/// workloads as rounded boxes, externals dashed, denied edges red and
/// dashed, each edge labelled with its ports and counts.
pub fn to_svg(edges: &[Edge]) -> String {
    let g = build(edges);
    const BOX_W: usize = 260;
    const BOX_H: usize = 36;
    const COL_GAP: usize = 160;
    const ROW_GAP: usize = 40;
    const MARGIN: usize = 30;
    let layer = layers(g.nodes.len(), &g.links);
    let mut columns: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in layer.iter().enumerate() {
        columns.entry(l).or_default().push(i);
    }
    let mut pos = vec![(0usize, 0usize); g.nodes.len()];
    let mut max_rows = 0;
    for (ci, (_, members)) in columns.iter().enumerate() {
        max_rows = max_rows.max(members.len());
        for (ri, &i) in members.iter().enumerate() {
            pos[i] = (
                MARGIN + ci * (BOX_W + COL_GAP),
                MARGIN + ri * (BOX_H + ROW_GAP),
            );
        }
    }
    let width = MARGIN * 2 + columns.len().max(1) * (BOX_W + COL_GAP) - COL_GAP;
    let height = MARGIN * 2 + max_rows.max(1) * (BOX_H + ROW_GAP) - ROW_GAP + 20;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    out.push_str("<title>keycard flows: service dependency graph</title>\n");
    out.push_str("<defs>\n<marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#455a64\"/></marker>\n<marker id=\"arrow-denied\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#c62828\"/></marker>\n</defs>\n");
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    out.push_str("<g class=\"edges\" fill=\"none\">\n");
    for l in &g.links {
        let (sx, sy) = pos[l.src];
        let (dx, dy) = pos[l.dst];
        let (x1, y1) = (sx + BOX_W, sy + BOX_H / 2);
        let (x2, y2) = (dx, dy + BOX_H / 2);
        let (x1, y1, x2, y2) = (x1 as i64, y1 as i64, x2 as i64, y2 as i64);
        let (path, lx, ly) = if l.src == l.dst {
            let (x, y) = (sx as i64 + BOX_W as i64 / 2, sy as i64);
            (
                format!(
                    "M{},{} C{},{} {},{} {},{}",
                    x - 20,
                    y,
                    x - 40,
                    y - 30,
                    x + 40,
                    y - 30,
                    x + 20,
                    y
                ),
                x,
                y - 28,
            )
        } else if x2 > x1 {
            let mid = (x1 + x2) / 2;
            (
                format!("M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"),
                mid,
                (y1 + y2) / 2 - 4,
            )
        } else {
            // Backwards (a cycle or same column): loop below the boxes.
            let (bx1, bx2) = (sx as i64 + BOX_W as i64 / 2, dx as i64 + BOX_W as i64 / 2);
            let (by1, by2) = (sy as i64 + BOX_H as i64, dy as i64 + BOX_H as i64);
            let low = by1.max(by2) + ROW_GAP as i64 / 2 + 10;
            (
                format!("M{bx1},{by1} C{bx1},{low} {bx2},{low} {bx2},{by2}"),
                (bx1 + bx2) / 2,
                low - 6,
            )
        };
        let (stroke, dash, marker, prefix) = match l.verdict {
            Verdict::Allowed => ("#455a64", "", "arrow", ""),
            Verdict::Denied => (
                "#c62828",
                " stroke-dasharray=\"6 4\"",
                "arrow-denied",
                "DENIED ",
            ),
        };
        let label = xml_escape(&format!("{prefix}{}", ports_label(&l.edges)));
        let title = xml_escape(&format!(
            "{} -> {}: {}",
            g.nodes[l.src].display(),
            g.nodes[l.dst].display(),
            l.edges
                .iter()
                .map(|e| format!(
                    "{} {} {} x{} ({} .. {})",
                    e.verdict.as_str(),
                    e.protocol.as_str(),
                    e.port,
                    e.count,
                    e.first_seen,
                    e.last_seen
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        let _ = writeln!(
            out,
            "<g class=\"edge {}\"><title>{title}</title><path d=\"{path}\" stroke=\"{stroke}\" stroke-width=\"1.5\"{dash} marker-end=\"url(#{marker})\"/><text x=\"{lx}\" y=\"{ly}\" text-anchor=\"middle\" fill=\"{stroke}\" stroke=\"none\" font-size=\"11\">{label}</text></g>",
            l.verdict.as_str()
        );
    }
    out.push_str("</g>\n<g class=\"nodes\">\n");
    for (i, p) in g.nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let (fill, dash) = match p {
            Peer::Workload { .. } => ("#e3f2fd", ""),
            Peer::External { .. } => ("#fff8e1", " stroke-dasharray=\"4 3\""),
        };
        let text = p.display();
        let shown: String = if text.chars().count() > 40 {
            let mut s: String = text.chars().take(39).collect();
            s.push('…');
            s
        } else {
            text.clone()
        };
        let _ = writeln!(
            out,
            "<g class=\"node\"><title>{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"8\" fill=\"{fill}\" stroke=\"#1e88e5\"{dash}/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#0d47a1\">{}</text></g>",
            xml_escape(&text),
            x + BOX_W / 2,
            y + BOX_H / 2 + 4,
            xml_escape(&shown)
        );
    }
    out.push_str("</g>\n</svg>\n");
    out
}

/// A destination-label query: `label:KEY=VALUE` or `label:KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub key: String,
    pub value: Option<String>,
}

impl Query {
    pub fn parse(s: &str) -> Result<Query, String> {
        let rest = s
            .strip_prefix("label:")
            .ok_or_else(|| format!("unsupported query {s:?}: use label:KEY=VALUE or label:KEY"))?;
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (rest, None),
        };
        if key.is_empty() {
            return Err(format!("query {s:?} names no label"));
        }
        Ok(Query {
            key: key.to_string(),
            value,
        })
    }
}

/// The edges into workloads whose labels (object or pod template) match.
pub fn query<'e>(edges: &'e [Edge], inv: &Inventory, q: &Query) -> Vec<&'e Edge> {
    edges
        .iter()
        .filter(|e| {
            e.dst
                .workload()
                .and_then(|(ns, kind, name)| inv.find(ns, kind, name))
                .and_then(|i| inv.workloads.get(i))
                .is_some_and(|w| w.has_label(&q.key, q.value.as_deref()))
        })
        .collect()
}

/// A plain text table of edges.
pub fn table(edges: &[&Edge]) -> String {
    let header = [
        "DESTINATION",
        "SOURCE",
        "PORT",
        "VERDICT",
        "COUNT",
        "LAST SEEN",
    ];
    let rows: Vec<[String; 6]> = {
        let mut v: Vec<&&Edge> = edges.iter().collect();
        v.sort_by(|a, b| {
            (&a.dst, &a.src, a.protocol, a.port).cmp(&(&b.dst, &b.src, b.protocol, b.port))
        });
        v.into_iter()
            .map(|e| {
                [
                    e.dst.display(),
                    e.src.display(),
                    format!("{} {}", e.protocol.as_str(), e.port),
                    e.verdict.as_str().to_string(),
                    e.count.to_string(),
                    e.last_seen.clone(),
                ]
            })
            .collect()
    };
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i] - c.chars().count();
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&header, &mut out);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&cells, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Protocol;

    fn wl(ns: &str, name: &str) -> Peer {
        Peer::Workload {
            namespace: ns.into(),
            kind: "Deployment".into(),
            name: name.into(),
            service_account: None,
            identity: None,
        }
    }

    fn edge(src: Peer, dst: Peer, port: u16, verdict: Verdict) -> Edge {
        Edge {
            src,
            dst,
            protocol: Protocol::Tcp,
            port,
            verdict,
            count: 2,
            bytes: 0,
            first_seen: "2024-05-01T10:00:00Z".into(),
            last_seen: "2024-05-01T11:00:00Z".into(),
        }
    }

    fn sample() -> Vec<Edge> {
        vec![
            edge(wl("shop", "web"), wl("shop", "db"), 5432, Verdict::Allowed),
            edge(wl("shop", "web"), wl("shop", "db"), 22, Verdict::Denied),
            edge(
                wl("shop", "db"),
                Peer::External {
                    address: "203.0.113.7".into(),
                },
                443,
                Verdict::Allowed,
            ),
            edge(wl("shop", "db"), wl("shop", "web"), 8080, Verdict::Allowed),
        ]
    }

    #[test]
    fn renders_every_format() {
        let e = sample();
        let j = to_json(&e);
        assert_eq!(j["nodes"].as_array().unwrap().len(), 3);
        assert_eq!(j["edges"].as_array().unwrap().len(), 4);
        let dot = to_dot(&e);
        assert!(dot.contains("color=red"), "{dot}");
        assert!(dot.contains("TCP 5432 ×2"));
        let m = to_mermaid(&e);
        assert!(m.starts_with("flowchart LR\n"));
        assert!(m.contains("-.->"));
        assert!(m.contains("linkStyle"));
        let svg = to_svg(&e);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.ends_with("</svg>\n"));
        assert!(svg.contains("arrow-denied"));
        assert_eq!(svg.matches("<g class=\"node\">").count(), 3);
        // Deterministic.
        assert_eq!(svg, to_svg(&e));
    }

    #[test]
    fn queries_parse() {
        assert_eq!(
            Query::parse("label:tier=db").unwrap(),
            Query {
                key: "tier".into(),
                value: Some("db".into())
            }
        );
        assert!(Query::parse("name:x").is_err());
        assert!(Query::parse("label:").is_err());
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml_escape("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
