//! NetworkPolicy evaluator speed on a cluster of 1,000 pods (20
//! namespaces) and 500 policies (namespace and pod selectors with
//! expressions, named and ranged ports, ipBlocks):
//!
//! - `netpol_eval/connlist_1000_pods_500_policies`: the whole
//!   connectivity map (`keycard netpol eval`), every ordered pair of pods
//!   and the external ranges decided; throughput in pod pairs;
//! - `netpol_eval/flow_decisions`: single connections (`FlowDecider`, what
//!   simulation replays per flow), 10,000 per iteration over spread pairs
//!   and ports; throughput in connections decided.
//!
//! `cargo bench -p keycard-flows --bench eval`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keycard_flows::{evaluate, Cluster, FlowDecider, FlowPeer, Protocol};

fn cluster() -> Cluster {
    let mut text = String::new();
    for ns in 0..20 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{ns}, labels: {{tier: t{}}}}}\n",
            ns % 4
        ));
    }
    for i in 0..1000 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns{}, labels: {{app: a{}, role: r{}}}}}\nspec: {{containers: [{{name: c, image: x, ports: [{{name: http, containerPort: {}}}]}}]}}\n",
            i % 20, i % 50, i % 7, 8000 + i % 10
        ));
    }
    for j in 0..500 {
        text.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{j}, namespace: ns{}}}\nspec:\n  podSelector: {{matchLabels: {{app: a{}}}}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{tier: t{}}}}}, podSelector: {{matchExpressions: [{{key: role, operator: In, values: [r1, r2]}}]}}}}]\n    ports: [{{port: http}}, {{port: 9000, endPort: 9100}}]\n  egress:\n  - to: [{{ipBlock: {{cidr: 10.{}.0.0/16}}}}, {{podSelector: {{}}}}]\n",
            j % 20, j % 50, j % 4, j % 200
        ));
    }
    let (objects, errors) = keycard_k8s::parse_str("bench.yaml", &text, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    let (cluster, diags) = Cluster::from_objects(&objects);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(cluster.workloads.len(), 1000);
    cluster
}

fn bench(c: &mut Criterion) {
    let cluster = cluster();
    let n = cluster.workloads.len() as u64;
    let mut g = c.benchmark_group("netpol_eval");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(n * n));
    g.bench_function("connlist_1000_pods_500_policies", |b| {
        b.iter(|| black_box(evaluate(&cluster).len()))
    });
    let decider = FlowDecider::new(&cluster);
    const FLOWS: u64 = 10_000;
    let flows: Vec<(FlowPeer, FlowPeer, u16)> = (0..FLOWS as usize)
        .map(|k| {
            let src = (k * 7_919) % 1000;
            let dst = (k * 104_729 + 13) % 1000;
            let port = [8000 + (k % 10) as u16, 9050, 443][k % 3];
            let dst = if k % 17 == 0 {
                FlowPeer::Address(0x0a00_0000 + k as u64)
            } else {
                FlowPeer::Workload(dst)
            };
            (FlowPeer::Workload(src), dst, port)
        })
        .collect();
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(FLOWS));
    g.bench_function("flow_decisions", |b| {
        b.iter(|| {
            let mut allowed = 0u32;
            for (s, d, port) in &flows {
                if decider.decide(*s, *d, Protocol::Tcp, *port).allowed {
                    allowed += 1;
                }
            }
            black_box(allowed)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
