//! `netpol eval` input: NetworkPolicy, AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy YAML with the workloads they select is
//! untrusted. Any manifest must become a cluster model plus diagnostics,
//! then a connlist, never a panic or a hang.
#![no_main]
use keycard_flows::{evaluate, explain_pair, Cluster, FlowDecider, FlowPeer, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = keycard_k8s::LoadOptions {
        max_file_bytes: 256 * 1024,
        max_objects: 64,
    };
    let (objects, _) = keycard_k8s::parse_str("fuzz.yaml", text, &opts);
    let (cluster, _diags) = Cluster::from_objects(&objects);
    // Evaluation is quadratic in workloads by design; keep runs short.
    if cluster.workloads.len() > 16 {
        return;
    }
    let conns = evaluate(&cluster);
    let _ = keycard_flows::format_connlist(&conns, false);
    if let Some(c) = conns.first() {
        let _ = explain_pair(&cluster, &c.src, &c.dst);
    }
    let d = FlowDecider::new(&cluster);
    let peers = [
        FlowPeer::Address(0x0a00_0001),
        FlowPeer::Address6(0x2001_0db8 << 96),
        FlowPeer::Unmodelled,
    ];
    for i in 0..cluster.workloads.len() {
        for p in peers {
            let _ = d.decide(FlowPeer::Workload(i), p, Protocol::Tcp, 443);
            let _ = d.decide(p, FlowPeer::Workload(i), Protocol::Udp, 53);
        }
    }
});
