#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Ingestion of the hand-written flow files, the generate-then-evaluate
//! round trip, simulation, drift, and the memory bound of ingestion.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use keycard_flows::generate::{generate, to_yaml, GenerateOptions};
use keycard_flows::ingest::{Edge, FlowSource, IngestOptions, Ingester, Peer, Verdict};
use keycard_flows::inventory::Inventory;
use keycard_flows::simulate::{diff_policies, drift, simulate};
use keycard_flows::{FlowDecider, FlowPeer, Protocol};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn inventory(text: &str) -> Inventory {
    let (objects, errors) = keycard_k8s::parse_str("inv.yaml", text, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    Inventory::from_objects(&objects)
}

fn shop() -> Inventory {
    inventory(&std::fs::read_to_string(fixture("inventory.yaml")).unwrap())
}

fn ingest_fixtures(inv: &Inventory) -> (Vec<Edge>, keycard_flows::ingest::IngestReport) {
    let mut ing = Ingester::new(Some(inv), IngestOptions::default());
    let sources = ["hubble-json.jsonl", "hubble-jsonpb.jsonl", "keycard.jsonl"]
        .iter()
        .map(|n| {
            let f = std::fs::File::open(fixture(n)).unwrap();
            FlowSource::new(*n, BufReader::new(f))
        })
        .collect();
    ing.run(sources).unwrap();
    ing.finish().unwrap()
}

fn line(e: &Edge) -> String {
    format!(
        "{} => {} : {} {} {} x{}",
        e.src.display(),
        e.dst.display(),
        e.protocol.as_str(),
        e.port,
        e.verdict.as_str(),
        e.count
    )
}

#[test]
fn fixtures_ingest_to_exact_edges() {
    let inv = shop();
    let (edges, rep) = ingest_fixtures(&inv);
    let got: Vec<String> = edges.iter().map(line).collect();
    assert_eq!(
        got,
        [
            "shop/api[Deployment] => shop/db[StatefulSet] : TCP 5432 allowed x1",
            "shop/api[Deployment] => 203.0.113.7[External] : TCP 443 allowed x1",
            "shop/web[Deployment] => kube-system/coredns[Deployment] : UDP 53 allowed x1",
            "shop/web[Deployment] => shop/api[Deployment] : TCP 8080 allowed x3",
            "shop/web[Deployment] => shop/db[StatefulSet] : TCP 5432 denied x1",
        ]
    );
    // The keycard record brought the SPIFFE ID; Hubble the rest.
    match &edges[3].src {
        Peer::Workload {
            service_account,
            identity,
            ..
        } => {
            assert_eq!(service_account.as_deref(), Some("web"));
            assert_eq!(
                identity.as_deref(),
                Some("spiffe://example.org/ns/shop/sa/web")
            );
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(edges[3].bytes, 5120);
    assert_eq!(edges[3].first_seen, "2024-05-01T10:00:00.1Z");
    assert_eq!(edges[3].last_seen, "2024-05-01T10:20:00Z");
    assert_eq!(rep.replies, 1);
    assert_eq!(rep.duplicates, 2);
    assert_eq!(rep.non_flow_events, 3);
    assert_eq!(rep.events_lost, 7);
    assert_eq!(rep.ignored, 1);
    let errs: Vec<String> = rep
        .errors
        .iter()
        .map(|e| format!("{}:{}", e.file, e.line))
        .collect();
    assert_eq!(
        errs,
        [
            "hubble-json.jsonl:8",
            "hubble-jsonpb.jsonl:6",
            "hubble-jsonpb.jsonl:7",
            "keycard.jsonl:2"
        ],
        "{:?}",
        rep.errors
    );
    assert!(rep.errors[1].message.contains("not in the inventory"));
}

fn decide(
    c: &keycard_flows::Cluster,
    d: &FlowDecider<'_>,
    src: &Peer,
    dst: &Peer,
    proto: Protocol,
    port: u16,
) -> bool {
    let peer = |p: &Peer| match p {
        Peer::Workload {
            namespace,
            kind,
            name,
            ..
        } => FlowPeer::Workload(
            c.workloads
                .iter()
                .position(|w| &w.namespace == namespace && &w.kind == kind && &w.name == name)
                .unwrap(),
        ),
        Peer::External { address } => match keycard_flows::parse_cidr(address).unwrap() {
            keycard_flows::IpRange::V4(lo, _) => FlowPeer::Address(lo),
            keycard_flows::IpRange::V6(lo, _) => FlowPeer::Address6(lo),
        },
    };
    d.decide(peer(src), peer(dst), proto, port).allowed
}

/// The generated policies allow every observed allowed flow and nothing
/// else between workloads of the covered namespaces, DNS aside.
fn assert_round_trip(inv: &Inventory, edges: &[Edge]) -> String {
    let gen = generate(edges, inv, &GenerateOptions::default());
    let yaml = to_yaml(&gen.policies).unwrap();
    let (objects, errors) = keycard_k8s::parse_str("gen.yaml", &yaml, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    let (cluster, diags) = inv.to_cluster(&objects);
    assert!(diags.is_empty(), "{diags:?}");
    let d = FlowDecider::new(&cluster);
    for e in edges.iter().filter(|e| e.verdict == Verdict::Allowed) {
        assert!(
            decide(&cluster, &d, &e.src, &e.dst, e.protocol, e.port),
            "observed flow denied: {}\n{yaml}",
            line(e)
        );
    }
    let peers: Vec<Peer> = inv
        .workloads
        .iter()
        .map(|w| Peer::Workload {
            namespace: w.namespace.clone(),
            kind: w.kind.clone(),
            name: w.name.clone(),
            service_account: None,
            identity: None,
        })
        .collect();
    let system = |p: &Peer| p.workload().unwrap().0 == "kube-system";
    let is_dns = |p: &Peer| p.workload().unwrap().2 == "coredns";
    let mut ports: Vec<u16> = vec![1, 22, 53, 80, 443, 5432, 8080, 9090, 65535];
    ports.extend(edges.iter().map(|e| e.port));
    ports.sort_unstable();
    ports.dedup();
    for s in &peers {
        for t in &peers {
            if system(s) && system(t) {
                continue;
            }
            for proto in Protocol::ALL {
                for &port in &ports {
                    let observed = edges.iter().any(|e| {
                        e.verdict == Verdict::Allowed
                            && e.src.workload() == s.workload()
                            && e.dst.workload() == t.workload()
                            && e.protocol == proto
                            && e.port == port
                    });
                    let dns = is_dns(t) && port == 53 && proto != Protocol::Sctp;
                    let allowed = decide(&cluster, &d, s, t, proto, port);
                    assert_eq!(
                        allowed,
                        observed || dns,
                        "{} => {} : {} {port}\n{yaml}",
                        s.display(),
                        t.display(),
                        proto.as_str()
                    );
                }
            }
        }
    }
    yaml
}

#[test]
fn generated_policies_allow_exactly_what_was_observed() {
    let inv = shop();
    let (edges, _) = ingest_fixtures(&inv);
    let yaml = assert_round_trip(&inv, &edges);
    // Named ports, /32 blocks, no churning labels, stable output.
    assert!(yaml.contains("port: pg"), "{yaml}");
    assert!(yaml.contains("cidr: 203.0.113.7/32"), "{yaml}");
    assert!(!yaml.contains("version: v3"), "{yaml}");
    assert!(yaml.contains("name: keycard-default-deny"));
    let again = to_yaml(&generate(&edges, &inv, &GenerateOptions::default()).policies).unwrap();
    assert_eq!(yaml, again);
    // The external side: only the observed address and port.
    let (objects, _) = keycard_k8s::parse_str("gen.yaml", &yaml, &Default::default());
    let (cluster, _) = inv.to_cluster(&objects);
    let d = FlowDecider::new(&cluster);
    let api = Peer::Workload {
        namespace: "shop".into(),
        kind: "Deployment".into(),
        name: "api".into(),
        service_account: None,
        identity: None,
    };
    let ext = |a: &str| Peer::External { address: a.into() };
    assert!(decide(
        &cluster,
        &d,
        &api,
        &ext("203.0.113.7"),
        Protocol::Tcp,
        443
    ));
    assert!(!decide(
        &cluster,
        &d,
        &api,
        &ext("203.0.113.8"),
        Protocol::Tcp,
        443
    ));
    assert!(!decide(
        &cluster,
        &d,
        &api,
        &ext("203.0.113.7"),
        Protocol::Tcp,
        80
    ));
}

const TWO_NAMESPACES: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: front, namespace: a}
spec:
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front, pod-template-hash: abc123}}
    spec: {containers: [{name: c, image: x, ports: [{name: web, containerPort: 80}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: front-canary, namespace: a}
spec:
  selector: {matchLabels: {app: front, track: canary}}
  template:
    metadata: {labels: {app: front, track: canary}}
    spec: {containers: [{name: c, image: x, ports: [{name: web, containerPort: 81}]}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache, namespace: b}
spec:
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache, controller-revision-hash: cache-5d8}}
    spec: {containers: [{name: c, image: x}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: b}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: x}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system}
spec:
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec: {containers: [{name: c, image: x}]}
"#;

fn wl(ns: &str, kind: &str, name: &str) -> Peer {
    Peer::Workload {
        namespace: ns.into(),
        kind: kind.into(),
        name: name.into(),
        service_account: None,
        identity: None,
    }
}

fn edge(src: Peer, dst: Peer, proto: Protocol, port: u16, verdict: Verdict) -> Edge {
    Edge {
        src,
        dst,
        protocol: proto,
        port,
        verdict,
        count: 4,
        bytes: 0,
        first_seen: "2024-05-01T10:00:00Z".into(),
        last_seen: "2024-05-02T10:00:00Z".into(),
    }
}

#[test]
fn round_trip_across_namespaces_with_overlapping_selectors() {
    let inv = inventory(TWO_NAMESPACES);
    let front = wl("a", "Deployment", "front");
    let canary = wl("a", "Deployment", "front-canary");
    let cache = wl("b", "StatefulSet", "cache");
    let agent = wl("b", "DaemonSet", "agent");
    let edges = vec![
        edge(
            front.clone(),
            cache.clone(),
            Protocol::Tcp,
            6379,
            Verdict::Allowed,
        ),
        edge(
            canary.clone(),
            cache.clone(),
            Protocol::Tcp,
            6380,
            Verdict::Allowed,
        ),
        edge(
            agent.clone(),
            front.clone(),
            Protocol::Tcp,
            80,
            Verdict::Allowed,
        ),
        edge(
            agent.clone(),
            canary.clone(),
            Protocol::Tcp,
            81,
            Verdict::Allowed,
        ),
        edge(
            front.clone(),
            front.clone(),
            Protocol::Udp,
            7946,
            Verdict::Allowed,
        ),
        edge(
            Peer::External {
                address: "198.51.100.4".into(),
            },
            front.clone(),
            Protocol::Tcp,
            80,
            Verdict::Allowed,
        ),
        edge(
            cache.clone(),
            agent.clone(),
            Protocol::Tcp,
            9100,
            Verdict::Denied,
        ),
    ];
    let yaml = assert_round_trip(&inv, &edges);
    // `front`'s own selector would also pick the canary: it is narrowed.
    let gen = generate(&edges, &inv, &GenerateOptions::default());
    assert!(gen.warnings.is_empty(), "{:?}", gen.warnings);
    assert!(!yaml.contains("pod-template-hash"));
    assert!(!yaml.contains("controller-revision-hash"));
    assert!(yaml.contains("port: web"));
}

#[test]
fn simulation_reports_what_would_break() {
    let inv = shop();
    let (edges, _) = ingest_fixtures(&inv);
    // Only web -> api is allowed into the shop; db is isolated.
    let policies = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: unused, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 8080}]
  - from: [{podSelector: {matchLabels: {app: db}}}]
"#;
    let (objects, errors) = keycard_k8s::parse_str("p.yaml", policies, &Default::default());
    assert!(errors.is_empty());
    let (cluster, diags) = inv.to_cluster(&objects);
    assert!(diags.is_empty());
    let sim = simulate(&cluster, &edges);
    assert_eq!(sim.observed_connections, 6);
    assert_eq!(sim.allowed_connections, 5);
    let denied = &sim.denied["shop/db[StatefulSet]"];
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].src, "shop/api[Deployment]");
    assert_eq!(denied[0].denied_by, "ingress");
    // web -> db was dropped when observed; this policy set would allow it.
    assert_eq!(sim.newly_allowed.len(), 1);
    let d = drift(&cluster, &edges, Some("2024-05-01T10:10:00Z")).unwrap();
    let unused: Vec<String> = d
        .unused_rules
        .iter()
        .map(|u| format!("{} {} #{}", u.policy, u.direction, u.rule))
        .collect();
    assert_eq!(unused, ["shop/db ingress #1", "shop/unused ingress #2"]);
    assert_eq!(d.denied_attempts.len(), 1);
    assert_eq!(d.new_flows.len(), 2);
}

#[test]
fn declared_versus_cluster() {
    let git = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{ports: [{port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b, namespace: x}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#;
    // The API server filled in defaults for a; b is gone, c changed, d new.
    let live = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicyList
items:
- metadata: {name: a, namespace: x, resourceVersion: "7"}
  spec:
    podSelector: {matchLabels: {app: a}}
    policyTypes: [Ingress]
    ingress: [{ports: [{port: 80, protocol: TCP}]}]
- metadata: {name: c, namespace: x}
  spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
- metadata: {name: d, namespace: x}
  spec: {podSelector: {}}
"#;
    let parse = |t: &str| keycard_k8s::parse_str("t.yaml", t, &Default::default()).0;
    let d = diff_policies(&parse(git), &parse(live));
    assert_eq!(d.added, ["x/d"]);
    assert_eq!(d.removed, ["x/b"]);
    assert_eq!(d.changed.len(), 1);
    assert_eq!(d.changed[0].policy, "x/c");
    assert_eq!(d.changed[0].fields, ["policyTypes"]);
}

/// Generates Hubble lines on the fly, so the input never sits in memory.
struct Generated {
    n: usize,
    i: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl Generated {
    fn line(i: usize) -> String {
        // 50 client pods of 10 workloads calling 5 servers; each connection
        // observed at both ends, one millisecond apart.
        let conn = i / 2;
        let dir = if i % 2 == 0 { "EGRESS" } else { "INGRESS" };
        let ms = i as u64;
        let client = conn % 10;
        let server = conn % 5;
        format!(
            concat!(
                r#"{{"flow":{{"time":"2024-05-01T{:02}:{:02}:{:02}.{:03}Z","verdict":"FORWARDED","#,
                r#""IP":{{"source":"10.1.0.{}","destination":"10.2.0.{}","ipVersion":"IPv4"}},"#,
                r#""l4":{{"TCP":{{"source_port":{},"destination_port":{}}}}},"#,
                r#""source":{{"namespace":"load","pod_name":"client{}-5d9f7c6b8-abcd{}","labels":["k8s:app=client{}"]}},"#,
                r#""destination":{{"namespace":"load","pod_name":"server{}-6c8d7b9f4-wxyz{}","labels":["k8s:app=server{}"]}},"#,
                r#""Type":"L3_L4","traffic_direction":"{}","is_reply":false}},"node_name":"n","time":"2024-05-01T00:00:00Z"}}"#,
                "\n"
            ),
            ms / 3_600_000,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000,
            conn % 50,
            server,
            20_000 + (conn % 40_000),
            8000 + server,
            client,
            conn % 5,
            client,
            server,
            conn % 3,
            server,
            dir
        )
    }
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.i == self.n {
                return Ok(0);
            }
            self.buf = Generated::line(self.i).into_bytes();
            self.pos = 0;
            self.i += 1;
        }
        let k = out.len().min(self.buf.len() - self.pos);
        out[..k].copy_from_slice(&self.buf[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

#[test]
fn a_hundred_thousand_lines_stream_in_bounded_memory() {
    let opts = IngestOptions {
        window: 100_000_000, // 100 ms: about 100 connections open at once
        max_pending: 4096,
        max_edges: 1000,
        ..IngestOptions::default()
    };
    let mut ing = Ingester::new(None, opts);
    let src = Generated {
        n: 100_000,
        i: 0,
        buf: Vec::new(),
        pos: 0,
    };
    ing.ingest_reader("generated", BufReader::new(src)).unwrap();
    assert!(ing.open_connections() <= 4096);
    let (edges, rep) = ing.finish().unwrap();
    assert_eq!(rep.lines, 100_000);
    assert_eq!(rep.error_count, 0, "{:?}", rep.errors);
    // Never more connections open than the bound: nothing flushed early.
    assert_eq!(rep.window_overflows, 0);
    assert_eq!(rep.duplicates, 50_000);
    assert_eq!(rep.connections, 50_000);
    // client c calls server c % 5 only: 10 edges.
    assert_eq!(edges.len(), 10);
    assert_eq!(edges.iter().map(|e| e.count).sum::<u64>(), 50_000);
}
