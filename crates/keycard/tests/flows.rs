#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keycard flows` and `keycard netpol generate|simulate|drift` end to end,
//! on the hand-written Hubble and keycard flow files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn keycard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keycard"));
    c.env("NO_COLOR", "1").env_remove("KEYCARD_LOG");
    c
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../keycard-flows/tests/fixtures")
}

fn f(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn run(args: &[&str]) -> Output {
    keycard().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Ingests the three fixture files into `dir/edges.jsonl`.
fn ingest(dir: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let out = dir.join("edges.jsonl");
    let mut args = vec![
        "flows".to_string(),
        "ingest".into(),
        f("hubble-json.jsonl"),
        f("hubble-jsonpb.jsonl"),
        f("keycard.jsonl"),
        "--inventory".into(),
        f("inventory.yaml"),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (run(&refs), out)
}

fn edge_line(v: &Value) -> String {
    let peer = |p: &Value| match p["type"].as_str().unwrap() {
        "workload" => format!(
            "{}/{}[{}]",
            p["namespace"].as_str().unwrap(),
            p["name"].as_str().unwrap(),
            p["kind"].as_str().unwrap()
        ),
        _ => format!("{}[External]", p["address"].as_str().unwrap()),
    };
    format!(
        "{} => {} : {} {} {} x{}",
        peer(&v["src"]),
        peer(&v["dst"]),
        v["protocol"].as_str().unwrap(),
        v["port"],
        v["verdict"].as_str().unwrap(),
        v["count"]
    )
}

#[test]
fn ingest_reports_bad_lines_and_writes_exact_edges() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = ingest(dir.path(), &[]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    for want in [
        "hubble-json.jsonl:8: malformed JSON",
        "hubble-jsonpb.jsonl:6: source: pod shop/ghost-7c9f8d6b5-zzzzz is not in the inventory",
        "hubble-jsonpb.jsonl:7: malformed JSON",
        "keycard.jsonl:2: invalid flow record: unknown field `colour`",
        "1 replies dropped, 2 duplicate observations merged, 3 non-flow events, 1 ignored, 4 bad lines; 7 connections in 5 edges",
        "7 lost events",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let edges: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| edge_line(&serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(
        edges,
        [
            "shop/api[Deployment] => shop/db[StatefulSet] : TCP 5432 allowed x1",
            "shop/api[Deployment] => 203.0.113.7[External] : TCP 443 allowed x1",
            "shop/web[Deployment] => kube-system/coredns[Deployment] : UDP 53 allowed x1",
            "shop/web[Deployment] => shop/api[Deployment] : TCP 8080 allowed x3",
            "shop/web[Deployment] => shop/db[StatefulSet] : TCP 5432 denied x1",
        ]
    );
}

#[test]
fn strict_stops_at_the_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = ingest(dir.path(), &["--strict"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("hubble-json.jsonl:8"));
}

#[test]
fn without_inventory_pods_are_guessed_and_nothing_is_fatal() {
    let o = run(&["flows", "ingest", &f("hubble-json.jsonl"), "-o", "-"]);
    assert_eq!(o.status.code(), Some(0));
    let out = text(&o.stdout);
    let lines: Vec<String> = out
        .lines()
        .map(|l| edge_line(&serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(
        lines,
        [
            "shop/web[Deployment] => kube-system/coredns[Deployment] : UDP 53 allowed x1",
            "shop/web[Deployment] => shop/api[Deployment] : TCP 8080 allowed x2",
            "shop/web[Deployment] => shop/db-0[Pod] : TCP 5432 denied x1",
        ]
    );
}

#[test]
fn graph_formats_and_the_database_query() {
    let dir = tempfile::tempdir().unwrap();
    let (_, edges) = ingest(dir.path(), &[]);
    let e = edges.display().to_string();
    let svg = dir.path().join("g.svg");
    let o = run(&[
        "flows",
        "graph",
        &e,
        "--format",
        "svg",
        "-o",
        &svg.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<?xml") && s.trim_end().ends_with("</svg>"));
    assert!(s.contains("DENIED TCP 5432"));
    let dot = text(&run(&["flows", "graph", &e, "--format", "dot"]).stdout);
    assert!(dot.starts_with("digraph flows {"));
    let json: Value =
        serde_json::from_slice(&run(&["flows", "graph", &e, "--format", "json"]).stdout).unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 5);
    let q = run(&[
        "flows",
        "graph",
        &e,
        "--inventory",
        &f("inventory.yaml"),
        "--query",
        "label:data-classification=confidential",
    ]);
    let table = text(&q.stdout);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("DESTINATION"));
    assert!(rows[1].contains("shop/api[Deployment]") && rows[1].contains("TCP 5432"));
    assert!(rows[2].contains("shop/web[Deployment]") && rows[2].contains("denied"));
}

#[test]
fn generate_then_simulate_then_drift() {
    let dir = tempfile::tempdir().unwrap();
    let (_, edges) = ingest(dir.path(), &[]);
    let e = edges.display().to_string();
    let inv = f("inventory.yaml");
    let g = run(&["netpol", "generate", &e, "--inventory", &inv]);
    assert_eq!(g.status.code(), Some(0), "{}", text(&g.stderr));
    let yaml = text(&g.stdout);
    // Deterministic.
    assert_eq!(
        yaml,
        text(&run(&["netpol", "generate", &e, "--inventory", &inv]).stdout)
    );
    let pol = dir.path().join("policies");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(pol.join("shop.yaml"), &yaml).unwrap();
    let p = pol.display().to_string();
    let s = run(&[
        "netpol",
        "simulate",
        &e,
        "--inventory",
        &inv,
        "--policies",
        &p,
    ]);
    assert_eq!(s.status.code(), Some(0), "{}", text(&s.stdout));
    assert!(text(&s.stdout).contains("coverage: 100.0% of observed connections allowed (6 of 6"));
    // The connectivity evaluator agrees: web reaches api on 8080 only.
    let ev = run(&["netpol", "eval", &inv, &p]);
    let conns = text(&ev.stdout);
    assert!(
        conns.contains("shop/web[Deployment] => shop/api[Deployment] : TCP 8080"),
        "{conns}"
    );
    assert!(
        !conns.contains("shop/web[Deployment] => shop/db[StatefulSet]"),
        "{conns}"
    );
    // Take away api's egress to db: the simulation names what breaks.
    let broken = yaml.replace("port: pg", "port: 15432");
    std::fs::write(pol.join("shop.yaml"), broken).unwrap();
    let s = run(&[
        "netpol",
        "simulate",
        &e,
        "--inventory",
        &inv,
        "--policies",
        &p,
        "-o",
        "json",
    ]);
    assert_eq!(s.status.code(), Some(1));
    let sim: Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(sim["allowed_connections"], 5);
    let denied = sim["denied"].as_object().unwrap();
    assert!(denied.contains_key("shop/api[Deployment]"), "{sim}");
    assert!(denied.contains_key("shop/db[StatefulSet]"), "{sim}");
    let d = run(&[
        "netpol",
        "drift",
        &e,
        "--inventory",
        &inv,
        "--policies",
        &p,
        "-o",
        "json",
    ]);
    let drift: Value = serde_json::from_slice(&d.stdout).unwrap();
    assert_eq!(
        drift["unused_rules"].as_array().unwrap().len(),
        2,
        "{drift}"
    );
    assert_eq!(drift["denied_attempts"].as_array().unwrap().len(), 1);
    let dd = run(&["netpol", "drift", "--declared", &p, "--cluster", &inv]);
    assert_eq!(dd.status.code(), Some(1));
    assert!(text(&dd.stdout).contains("0 added, 5 removed, 0 changed"));
}

/// keycard flow records of shop/api calling IPv6 services (one spelled in
/// capitals) and an IPv4 one written as IPv4-mapped IPv6.
const V6_RECORDS: &str = r#"{"time":"2024-05-01T10:00:00Z","src":{"namespace":"shop","workload":{"kind":"Deployment","name":"api"},"port":40000},"dst":{"address":"2001:DB8:5::10","port":443},"protocol":"TCP","verdict":"allow"}
{"time":"2024-05-01T10:00:01Z","src":{"namespace":"shop","workload":{"kind":"Deployment","name":"api"},"port":40001},"dst":{"address":"fd00:99::1","port":8443},"protocol":"TCP","verdict":"allow"}
{"time":"2024-05-01T10:00:02Z","src":{"namespace":"shop","workload":{"kind":"Deployment","name":"api"},"port":40002},"dst":{"address":"::ffff:203.0.113.9","port":443},"protocol":"TCP","verdict":"allow"}
"#;

/// Edges written by hand or by another tool: a non-canonical IPv6 address,
/// an IPv6 block, and something that is no address at all.
const V6_EDGES: &str = r#"{"src":{"type":"workload","namespace":"shop","kind":"Deployment","name":"api"},"dst":{"type":"external","address":"2001:0DB8:0:0:0:0:0:0007"},"protocol":"TCP","port":443,"verdict":"allowed","count":1,"first_seen":"2024-05-01T10:00:00Z","last_seen":"2024-05-01T10:00:00Z"}
{"src":{"type":"workload","namespace":"shop","kind":"Deployment","name":"api"},"dst":{"type":"external","address":"2001:db8:77::1/48"},"protocol":"TCP","port":443,"verdict":"allowed","count":1,"first_seen":"2024-05-01T10:00:00Z","last_seen":"2024-05-01T10:00:00Z"}
{"src":{"type":"workload","namespace":"shop","kind":"Deployment","name":"api"},"dst":{"type":"external","address":"payments.example"},"protocol":"TCP","port":443,"verdict":"allowed","count":1,"first_seen":"2024-05-01T10:00:00Z","last_seen":"2024-05-01T10:00:00Z"}
"#;

#[test]
fn ipv6_peers_become_canonical_ipblocks_and_dual_stack_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("v6.jsonl");
    std::fs::write(&records, V6_RECORDS).unwrap();
    let edges = dir.path().join("edges.jsonl");
    let inv = f("inventory.yaml");
    let e = edges.display().to_string();
    let o = run(&[
        "flows",
        "ingest",
        &records.display().to_string(),
        "--inventory",
        &inv,
        "-o",
        &e,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mut all = std::fs::read_to_string(&edges).unwrap();
    all.push_str(V6_EDGES);
    std::fs::write(&edges, all).unwrap();

    // generate: /128 and /32 in canonical form, the block as its network,
    // and a warning (not a broken policy) for the peer that is no address.
    let g = run(&["netpol", "generate", &e, "--inventory", &inv]);
    assert_eq!(g.status.code(), Some(0), "{}", text(&g.stderr));
    let yaml = text(&g.stdout);
    for want in [
        "cidr: 2001:db8:5::10/128",
        "cidr: fd00:99::1/128",
        "cidr: 203.0.113.9/32",
        "cidr: 2001:db8::7/128",
        "cidr: 2001:db8:77::/48",
    ] {
        assert!(yaml.contains(want), "missing {want:?} in:\n{yaml}");
    }
    assert!(!yaml.contains("::ffff:") && !yaml.contains("DB8"), "{yaml}");
    assert!(!yaml.contains("payments.example"), "{yaml}");
    let err = text(&g.stderr);
    assert!(
        err.contains("external peer \"payments.example\" is not an IP address or CIDR"),
        "{err}"
    );
    let pol = dir.path().join("policies");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(pol.join("shop.yaml"), &yaml).unwrap();
    let p = pol.display().to_string();

    // The generated policies are valid and allow everything observed; the
    // peer that is no address cannot be placed and is named.
    let s = run(&[
        "netpol",
        "simulate",
        &e,
        "--inventory",
        &inv,
        "--policies",
        &p,
    ]);
    let sim = text(&s.stdout);
    assert_eq!(s.status.code(), Some(0), "{sim}{}", text(&s.stderr));
    assert!(
        sim.contains("coverage: 100.0% of observed connections allowed (5 of 5"),
        "{sim}"
    );
    assert!(sim.contains("payments.example[External]"), "{sim}");

    // eval: manifests carry no pod IPs, so without --dual-stack the report
    // is IPv4-only and the IPv6 ipBlocks do not show...
    let v4 = run(&["netpol", "eval", &inv, &p, "--strict"]);
    assert_eq!(v4.status.code(), Some(0), "{}", text(&v4.stderr));
    let v4 = text(&v4.stdout);
    assert!(
        v4.contains("shop/api[Deployment] => 203.0.113.9-203.0.113.9[External] : TCP 443"),
        "{v4}"
    );
    assert!(
        !v4.contains("::"),
        "an IPv6 peer without --dual-stack:\n{v4}"
    );
    // ...with it, each IPv6 block is an external peer with its port, and
    // everything else is as before.
    let ds = run(&["netpol", "eval", &inv, &p, "--strict", "--dual-stack"]);
    assert_eq!(ds.status.code(), Some(0), "{}", text(&ds.stderr));
    let ds = text(&ds.stdout);
    for want in [
        "shop/api[Deployment] => 2001:db8:5::10-2001:db8:5::10[External] : TCP 443",
        "shop/api[Deployment] => fd00:99::1-fd00:99::1[External] : TCP 8443",
        "shop/api[Deployment] => 2001:db8::7-2001:db8::7[External] : TCP 443",
        "shop/api[Deployment] => 2001:db8:77::-2001:db8:77:ffff:ffff:ffff:ffff:ffff[External] : TCP 443",
    ] {
        assert!(ds.lines().any(|l| l == want), "missing {want:?} in:\n{ds}");
    }
    assert!(
        !ds.contains("shop/api[Deployment] => 2001:db8::8-"),
        "a neighbour of a /128 is not allowed:\n{ds}"
    );
    for line in v4.lines() {
        assert!(
            ds.lines().any(|l| l == line),
            "{line:?} lost with --dual-stack"
        );
    }
    // JSON says the same.
    let js = run(&["netpol", "eval", &inv, &p, "--dual-stack", "-o", "json"]);
    let js: Value = serde_json::from_slice(&js.stdout).unwrap();
    assert!(
        js.to_string().contains("fd00:99::1-fd00:99::1[External]"),
        "{js}"
    );
    // --help says what the flag changes.
    let h = text(&run(&["netpol", "eval", "--help"]).stdout);
    assert!(
        h.contains("--dual-stack") && h.contains("IPv6 ipBlock"),
        "{h}"
    );
}
