//! A synthetic Hubble flow file, shared by the ingest bench and the
//! `gen_hubble` example (which writes it for the `keycard flows` command).

/// One realistic `{"flow":...}` line of about 900 bytes: Hubble's fields,
/// labels and workloads, both directions of one connection a millisecond
/// apart (even `i`: the source node's EGRESS observation; odd: the
/// destination node's INGRESS one). 200 clients talk to 40 servers.
pub fn line(i: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    let conn = i / 2;
    let dir = if i % 2 == 0 { "EGRESS" } else { "INGRESS" };
    let ms = i as u64;
    let (client, server) = (conn % 200, conn % 40);
    let _ = write!(
        out,
        concat!(
            r#"{{"flow":{{"time":"2024-05-01T{:02}:{:02}:{:02}.{:03}456789Z","uuid":"6f1c2e8a-0000-4000-8000-{:012}","verdict":"FORWARDED","#,
            r#""ethernet":{{"source":"aa:bb:cc:dd:ee:01","destination":"aa:bb:cc:dd:ee:02"}},"#,
            r#""IP":{{"source":"10.1.{}.{}","destination":"10.2.0.{}","ipVersion":"IPv4"}},"#,
            r#""l4":{{"TCP":{{"source_port":{},"destination_port":{},"flags":{{"SYN":true}}}}}},"#,
            r#""source":{{"ID":1234,"identity":56789,"namespace":"load","labels":["k8s:app=client{}","k8s:io.cilium.k8s.policy.serviceaccount=client{}","k8s:io.kubernetes.pod.namespace=load"],"pod_name":"client{}-5d9f7c6b8-abcd{}","workloads":[{{"name":"client{}","kind":"Deployment"}}]}},"#,
            r#""destination":{{"ID":4321,"identity":98765,"namespace":"load","labels":["k8s:app=server{}","k8s:io.kubernetes.pod.namespace=load"],"pod_name":"server{}-6c8d7b9f4-wxyz{}"}},"#,
            r#""Type":"L3_L4","node_name":"node-{}","event_type":{{"type":4}},"traffic_direction":"{}","trace_observation_point":"TO_STACK","is_reply":false,"Summary":"TCP Flags: SYN"}},"node_name":"node-{}","time":"2024-05-01T00:00:00Z"}}"#,
            "\n"
        ),
        (ms / 3_600_000) % 24,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000,
        i,
        (conn / 256) % 4,
        conn % 256,
        server,
        20_000 + (conn % 40_000),
        8000 + server,
        client,
        client,
        client,
        conn % 5,
        client,
        server,
        server,
        conn % 3,
        i % 2,
        dir,
        i % 2
    );
}
