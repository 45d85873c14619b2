#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! IPv6 and dual stack: v6 ipBlocks with `except`, families that never
//! match each other, a dual-stack pod, Hubble flows with v6 addresses to an
//! ipBlock-allowed external address, and the generator's v6 ipBlocks.

use keycard_flows::generate::{generate, to_yaml, GenerateOptions};
use keycard_flows::ingest::{IngestOptions, Ingester, Peer};
use keycard_flows::inventory::Inventory;
use keycard_flows::simulate::simulate;
use keycard_flows::{
    evaluate, format_connlist, parse_cidr, Cluster, FlowDecider, FlowPeer, IpRange, Protocol,
};

fn cluster(text: &str) -> Cluster {
    let (objects, errors) = keycard_k8s::parse_str("in.yaml", text, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    let (c, diags) = Cluster::from_objects(&objects);
    assert!(diags.is_empty(), "{diags:?}");
    c
}

fn addr(s: &str) -> FlowPeer {
    match parse_cidr(s).unwrap() {
        IpRange::V4(lo, _) => FlowPeer::Address(lo),
        IpRange::V6(lo, _) => FlowPeer::Address6(lo),
    }
}

const NS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: app}
";

/// A pod with an IPv4 and an IPv6 address.
const DUAL_STACK_POD: &str = "
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec:
  containers: [{name: c, image: c:1}]
status:
  podIP: 10.0.0.7
  podIPs: [{ip: 10.0.0.7}, {ip: 'fd00:10::7'}]
";

const V4_ONLY_POD: &str = "
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec:
  containers: [{name: c, image: c:1}]
status:
  podIPs: [{ip: 10.0.0.7}]
";

/// Egress to 2001:db8::/32 but not 2001:db8:1::/48, on TCP 443, and to
/// 10.0.0.0/8 on TCP 53.
const MIXED_POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress, namespace: app}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: '2001:db8::/32', except: ['2001:db8:1::/48']}}]
    ports: [{port: 443}]
  - to: [{ipBlock: {cidr: 10.0.0.0/8}}]
    ports: [{port: 53}]
";

#[test]
fn v6_block_with_except_decides_flows() {
    let c = cluster(&format!("{NS}---{DUAL_STACK_POD}---{MIXED_POLICY}"));
    let d = FlowDecider::new(&c);
    let client = FlowPeer::Workload(0);
    let ok = |dst: &str, port: u16| d.decide(client, addr(dst), Protocol::Tcp, port).allowed;
    assert!(ok("2001:db8::1", 443));
    assert!(ok("2001:db8:ffff::1", 443));
    assert!(!ok("2001:db8:1::1", 443), "inside the except");
    assert!(
        !ok("2001:db8:1:ffff:ffff:ffff:ffff:ffff", 443),
        "end of except"
    );
    assert!(ok("2001:db8:2::", 443), "just past the except");
    assert!(!ok("2001:db9::1", 443), "outside the block");
    assert!(!ok("2001:db8::1", 53), "port of the v4 rule only");
    assert!(ok("10.1.2.3", 53));
    assert!(!ok("10.1.2.3", 443), "the v6 rule does not cover v4");
    // ::a01:203 has the same integer as 10.1.2.3 but is IPv6.
    assert!(
        !ok("::a01:203", 53),
        "a v4 block never matches a v6 address"
    );
    // IPv4-mapped IPv6 is the IPv4 address.
    assert!(ok("::ffff:10.1.2.3", 53));
}

#[test]
fn mixed_families_never_cross() {
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in, namespace: app}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: '::/0'}}]
    ports: [{port: 80}]
  - from: [{ipBlock: {cidr: 0.0.0.0/0, except: [192.168.0.0/16]}}]
    ports: [{port: 22}]
";
    let c = cluster(&format!("{NS}---{DUAL_STACK_POD}---{policy}"));
    let d = FlowDecider::new(&c);
    let pod = FlowPeer::Workload(0);
    let ok = |src: &str, port: u16| d.decide(addr(src), pod, Protocol::Tcp, port).allowed;
    assert!(ok("::", 80) && ok("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 80));
    assert!(!ok("8.8.8.8", 80), "::/0 is none of IPv4");
    assert!(ok("8.8.8.8", 22));
    assert!(!ok("192.168.1.1", 22));
    assert!(!ok("2001:db8::1", 22), "0.0.0.0/0 is none of IPv6");
    // An except of the other family is invalid, as the API server says.
    let bad = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: app}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: '::/0', except: [10.0.0.0/8]}}]
";
    let (objects, _) = keycard_k8s::parse_str("in.yaml", bad, &Default::default());
    let (c, diags) = Cluster::from_objects(&objects);
    assert!(c.network_policies.is_empty());
    assert!(diags[0].message.contains("not inside"), "{diags:?}");
}

#[test]
fn dual_stack_connlist_lists_the_v6_world_cut_by_blocks() {
    let c = cluster(&format!("{NS}---{DUAL_STACK_POD}---{MIXED_POLICY}"));
    assert!(c.dual_stack);
    let text = format_connlist(&evaluate(&c), false);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    for want in [
        "app/client[Pod] => 10.0.0.0-10.255.255.255[External] : TCP 53",
        "app/client[Pod] => 2001:db8::-2001:db8:0:ffff:ffff:ffff:ffff:ffff[External] : TCP 443",
        "app/client[Pod] => 2001:db8:2::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff[External] : TCP 443",
        "0.0.0.0-255.255.255.255[External] => app/client[Pod] : All Connections",
        "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff[External] => app/client[Pod] : All Connections",
    ] {
        assert!(lines.contains(&want), "missing {want}:\n{text}");
    }
    // The except and everything outside the blocks get nothing.
    assert_eq!(lines.len(), 5, "{text}");
    // The same input without a v6 pod address keeps the IPv4-only
    // connlist: no IPv6 peer at all.
    let c = cluster(&format!("{NS}---{V4_ONLY_POD}---{MIXED_POLICY}"));
    assert!(!c.dual_stack);
    let text = format_connlist(&evaluate(&c), false);
    assert!(!text.contains("::"), "{text}");
    assert!(text.contains("app/client[Pod] => 10.0.0.0-10.255.255.255[External] : TCP 53"));
}

#[test]
fn admin_policy_v6_networks_are_decided() {
    let anp = "
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: deny-v6}
spec:
  priority: 10
  subject: {namespaces: {}}
  egress:
  - name: deny-doc
    action: Deny
    to: [{networks: ['2001:db8::/32']}]
";
    let c = cluster(&format!("{NS}---{DUAL_STACK_POD}---{anp}"));
    let d = FlowDecider::new(&c);
    let ok = |dst: &str| {
        d.decide(FlowPeer::Workload(0), addr(dst), Protocol::Tcp, 443)
            .allowed
    };
    assert!(!ok("2001:db8::5"));
    assert!(ok("2001:db9::5"));
    assert!(
        ok("32.1.13.184"),
        "same leading bits in IPv4 are not denied"
    );
}

const INVENTORY: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web:1}]
";

fn hubble(dst_ip: &str, port: u16) -> String {
    format!(
        r#"{{"flow":{{"time":"2024-05-01T10:00:00Z","verdict":"FORWARDED","IP":{{"source":"fd00:10::7","destination":"{dst_ip}","ipVersion":"IPv6"}},"l4":{{"TCP":{{"source_port":40000,"destination_port":{port},"flags":{{"SYN":true}}}}}},"source":{{"namespace":"shop","pod_name":"web-5d9f7c6b8-x2x7q","labels":["k8s:app=web"],"workloads":[{{"name":"web","kind":"Deployment"}}]}},"destination":{{}},"Type":"L3_L4","traffic_direction":"EGRESS","is_reply":false}},"node_name":"n1","time":"2024-05-01T10:00:00Z"}}"#
    )
}

fn inventory() -> Inventory {
    let (objects, errors) = keycard_k8s::parse_str("inv.yaml", INVENTORY, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    Inventory::from_objects(&objects)
}

#[test]
fn hubble_v6_flows_to_an_ipblock_allowed_address() {
    let inv = inventory();
    let flows = [
        hubble("2001:db8:5::10", 443),
        hubble("2001:db8:6::10", 443),
        // Same integer as 1.2.3.4: a different peer from the IPv4 address.
        hubble("::102:304", 443),
        hubble("1.2.3.4", 443).replace("IPv6", "IPv4"),
    ]
    .join("\n");
    let mut ing = Ingester::new(Some(&inv), IngestOptions::default());
    ing.ingest_reader("v6.jsonl", flows.as_bytes()).unwrap();
    let (edges, rep) = ing.finish().unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let mut dsts: Vec<String> = edges.iter().map(|e| e.dst.display()).collect();
    dsts.sort();
    assert_eq!(dsts.len(), 4, "{dsts:?}");
    for e in &edges {
        assert!(matches!(&e.src, Peer::Workload { name, .. } if name == "web"));
        assert!(matches!(e.dst, Peer::External { .. }));
    }
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: '2001:db8:5::/64'}}, {ipBlock: {cidr: 1.2.3.0/24}}]
    ports: [{port: 443}]
";
    let (objects, errors) = keycard_k8s::parse_str("p.yaml", policy, &Default::default());
    assert!(errors.is_empty());
    let (c, diags) = inv.to_cluster(&objects);
    assert!(diags.is_empty(), "{diags:?}");
    let sim = simulate(&c, &edges);
    assert_eq!(sim.observed_edges, 4);
    assert_eq!(sim.allowed_edges, 2, "{sim:?}");
    let mut denied: Vec<String> = sim
        .denied
        .values()
        .flatten()
        .map(|f| f.dst.clone())
        .collect();
    denied.sort();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied.iter().any(|d| d.contains("2001:db8:6::10")),
        "{denied:?}"
    );
    assert!(denied.iter().any(|d| d.contains("::102:304")), "{denied:?}");
}

#[test]
fn generator_writes_v6_ipblocks_that_allow_the_flows() {
    let inv = inventory();
    let flows = [hubble("2001:db8:5::10", 443), hubble("fd00:99::1", 8443)].join("\n");
    let mut ing = Ingester::new(Some(&inv), IngestOptions::default());
    ing.ingest_reader("v6.jsonl", flows.as_bytes()).unwrap();
    let (edges, _) = ing.finish().unwrap();
    let gen = generate(&edges, &inv, &GenerateOptions::default());
    let yaml = to_yaml(&gen.policies).unwrap();
    assert!(yaml.contains("2001:db8:5::10/128"), "{yaml}");
    assert!(yaml.contains("fd00:99::1/128"), "{yaml}");
    let (objects, errors) = keycard_k8s::parse_str("gen.yaml", &yaml, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    let (c, diags) = inv.to_cluster(&objects);
    assert!(diags.is_empty(), "{diags:?}");
    let sim = simulate(&c, &edges);
    assert_eq!(sim.allowed_edges, 2, "{sim:?}\n{yaml}");
    // Only the observed /128s: a neighbour and the v4 twin stay denied.
    let d = FlowDecider::new(&c);
    let web = FlowPeer::Workload(0);
    assert!(
        d.decide(web, addr("2001:db8:5::10"), Protocol::Tcp, 443)
            .allowed
    );
    assert!(
        !d.decide(web, addr("2001:db8:5::11"), Protocol::Tcp, 443)
            .allowed
    );
    assert!(
        !d.decide(web, addr("fd00:99::1"), Protocol::Tcp, 443)
            .allowed
    );
}

#[test]
fn generator_writes_canonical_cidrs_and_skips_what_is_no_address() {
    let inv = inventory();
    let edge = |addr: &str| {
        format!(
            r#"{{"src":{{"type":"workload","namespace":"shop","kind":"Deployment","name":"web"}},"dst":{{"type":"external","address":"{addr}"}},"protocol":"TCP","port":443,"verdict":"allowed","count":1,"first_seen":"2024-05-01T10:00:00Z","last_seen":"2024-05-01T10:00:00Z"}}"#
        )
    };
    // Edges from a file: spellings a tool other than ingest may write.
    let text = [
        "2001:0DB8:0:0:0:0:0:0007",
        "2001:db8::7",
        "::ffff:203.0.113.9",
        "2001:db8:77::1/48",
        "payments.example",
        "fe80::1%eth0",
    ]
    .map(edge)
    .join("\n");
    let (edges, errors) =
        keycard_flows::ingest::read_edges("e.jsonl", text.as_bytes(), 1 << 16).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let gen = generate(&edges, &inv, &GenerateOptions::default());
    let yaml = to_yaml(&gen.policies).unwrap();
    assert_eq!(
        yaml.matches("cidr: 2001:db8::7/128").count(),
        1,
        "two spellings, one peer:\n{yaml}"
    );
    assert!(yaml.contains("cidr: 203.0.113.9/32"), "{yaml}");
    assert!(yaml.contains("cidr: 2001:db8:77::/48"), "{yaml}");
    assert!(!yaml.contains("::ffff") && !yaml.contains("DB8"), "{yaml}");
    assert!(
        !yaml.contains("payments") && !yaml.contains("%eth0"),
        "{yaml}"
    );
    let mut warned: Vec<&str> = gen
        .warnings
        .iter()
        .filter(|w| w.contains("is not an IP address or CIDR"))
        .map(String::as_str)
        .collect();
    warned.sort();
    assert_eq!(warned.len(), 2, "{:?}", gen.warnings);
    assert!(warned[1].contains("\"payments.example\""), "{warned:?}");
    // The output is valid: every policy loads and allows its flows.
    let (objects, errors) = keycard_k8s::parse_str("gen.yaml", &yaml, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    let (c, diags) = inv.to_cluster(&objects);
    assert!(diags.is_empty(), "{diags:?}");
    let d = FlowDecider::new(&c);
    let web = FlowPeer::Workload(0);
    for (dst, allowed) in [
        ("2001:db8::7", true),
        ("2001:db8::8", false),
        ("203.0.113.9", true),
        ("2001:db8:77:ffff::1", true),
        ("2001:db8:78::1", false),
    ] {
        assert_eq!(
            d.decide(web, addr(dst), Protocol::Tcp, 443).allowed,
            allowed,
            "{dst}\n{yaml}"
        );
    }
}
