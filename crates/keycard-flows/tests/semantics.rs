#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The NetworkPolicy traps, each with a tiny hand-written policy.

use keycard_flows::{evaluate, evaluate_explained, format_connlist, format_json, Cluster};

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: blue}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec:
  containers:
  - name: c
    image: x
    ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: cli, namespace: a, labels: {app: cli}}
spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 9090}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: cli, namespace: b, labels: {app: cli}}
spec: {containers: [{name: c, image: x}]}
"#;

fn run(policies: &str) -> (String, usize) {
    let text = format!("{PODS}\n---\n{policies}");
    let (objects, errors) = keycard_k8s::parse_str("t.yaml", &text, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    let (cluster, diags) = Cluster::from_objects(&objects);
    let errs = diags.iter().filter(|d| !d.warning).count();
    (format_connlist(&evaluate(&cluster), false), errs)
}

fn line(out: &str, src: &str, dst: &str) -> Option<String> {
    let prefix = format!("{src} => {dst} : ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

const WEB: &str = "a/web[Pod]";
const CLI_A: &str = "a/cli[Pod]";
const CLI_B: &str = "b/cli[Pod]";
const EXT: &str = "0.0.0.0-255.255.255.255[External]";

#[test]
fn no_policy_allows_everything() {
    let (out, _) = run("");
    assert_eq!(line(&out, CLI_B, WEB).as_deref(), Some("All Connections"));
    assert_eq!(line(&out, EXT, WEB).as_deref(), Some("All Connections"));
    assert_eq!(line(&out, WEB, EXT).as_deref(), Some("All Connections"));
}

#[test]
fn selectors_in_one_peer_are_and_in_two_peers_are_or() {
    let and = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: blue}}
      podSelector: {matchLabels: {app: cli}}
"#;
    let (out, _) = run(and);
    assert_eq!(line(&out, CLI_B, WEB).as_deref(), Some("All Connections"));
    assert_eq!(line(&out, CLI_A, WEB), None);
    let or = and.replace("      podSelector", "    - podSelector");
    let (out, _) = run(&or);
    assert_eq!(line(&out, CLI_B, WEB).as_deref(), Some("All Connections"));
    // The lone podSelector peer selects pods of the policy's own namespace.
    assert_eq!(line(&out, CLI_A, WEB).as_deref(), Some("All Connections"));
}

#[test]
fn empty_ingress_isolates_and_empty_rule_allows_all() {
    let deny = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
  ingress: []
"#;
    let (out, _) = run(deny);
    assert_eq!(line(&out, CLI_B, WEB), None);
    assert_eq!(line(&out, EXT, WEB), None);
    assert_eq!(line(&out, WEB, CLI_B).as_deref(), Some("All Connections"));
    let allow = deny.replace("ingress: []", "ingress:\n  - {}");
    let (out, _) = run(&allow);
    assert_eq!(line(&out, CLI_B, WEB).as_deref(), Some("All Connections"));
    assert_eq!(line(&out, EXT, WEB).as_deref(), Some("All Connections"));
}

#[test]
fn egress_isolation_only_when_listed_or_with_rules() {
    let ingress_only = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
"#;
    let (out, _) = run(ingress_only);
    assert_eq!(line(&out, WEB, EXT).as_deref(), Some("All Connections"));
    assert_eq!(line(&out, CLI_A, WEB), None);
    let listed = format!("{ingress_only}  policyTypes: [Egress]\n");
    let (out, _) = run(&listed);
    assert_eq!(line(&out, WEB, EXT), None);
    // Egress only: ingress stays open.
    assert_eq!(line(&out, CLI_A, WEB).as_deref(), Some("All Connections"));
    let with_rules = format!("{ingress_only}  egress:\n  - ports: [{{port: 53, protocol: UDP}}]\n");
    let (out, _) = run(&with_rules);
    assert_eq!(line(&out, WEB, EXT).as_deref(), Some("UDP 53"));
}

#[test]
fn named_ports_resolve_per_destination_pod() {
    let p = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http}]
"#;
    let (out, _) = run(p);
    assert_eq!(line(&out, CLI_B, WEB).as_deref(), Some("TCP 8080"));
    assert_eq!(line(&out, CLI_B, CLI_A).as_deref(), Some("TCP 9090"));
    // The protocol must match too: `dns` is UDP on web.
    let (out, _) = run(&p.replace("port: http", "port: dns"));
    assert_eq!(line(&out, CLI_B, WEB), None);
    let (out, _) = run(&p.replace("port: http", "port: dns, protocol: UDP"));
    assert_eq!(line(&out, CLI_B, WEB).as_deref(), Some("UDP 53"));
}

#[test]
fn end_port_ranges_and_protocol_merging() {
    let p = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 80, endPort: 90}, {port: 91}, {port: 443}, {protocol: SCTP}]
"#;
    let (out, _) = run(p);
    assert_eq!(
        line(&out, CLI_B, WEB).as_deref(),
        Some("SCTP 1-65535,TCP 80-91,443")
    );
}

#[test]
fn invalid_policies_are_reported_and_skipped() {
    for bad in [
        "  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]\n",
        "  ingress:\n  - ports: [{port: http, endPort: 90}]\n",
        "  ingress:\n  - ports: [{endPort: 90}]\n",
        "  ingress:\n  - from: [{podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}}]\n",
    ] {
        let p = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: a}}\nspec:\n  podSelector: {{}}\n{bad}"
        );
        let (out, errs) = run(&p);
        assert_eq!(errs, 1, "{bad}");
        // Skipped: nothing is isolated.
        assert_eq!(line(&out, CLI_B, WEB).as_deref(), Some("All Connections"));
    }
    let text = format!(
        "{PODS}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: a}}\nspec:\n  podSelector: {{}}\n  ingress:\n  - ports: [{{endPort: 90}}]\n"
    );
    let (objects, _) = keycard_k8s::parse_str("t.yaml", &text, &Default::default());
    let (_, diags) = Cluster::from_objects(&objects);
    let d = &diags[0];
    assert_eq!(d.file, "t.yaml");
    assert!(d.line >= 28, "{d}");
    assert!(d.to_string().contains("NetworkPolicy a/p"), "{d}");
}

#[test]
fn ip_blocks_split_the_external_world() {
    let p = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
"#;
    let (out, _) = run(p);
    assert_eq!(
        line(&out, WEB, "10.0.0.0-10.0.255.255[External]").as_deref(),
        Some("All Connections")
    );
    assert_eq!(line(&out, WEB, "10.1.0.0-10.1.255.255[External]"), None);
    assert_eq!(
        line(&out, WEB, "10.2.0.0-10.255.255.255[External]").as_deref(),
        Some("All Connections")
    );
    assert_eq!(line(&out, WEB, "0.0.0.0-9.255.255.255[External]"), None);
    // ipBlocks never select pods.
    assert_eq!(line(&out, WEB, CLI_A), None);
    // Unselected pods still reach the split ranges.
    assert_eq!(
        line(&out, CLI_A, "10.1.0.0-10.1.255.255[External]").as_deref(),
        Some("All Connections")
    );
}

#[test]
fn admin_policies_come_first_then_network_policies_then_baseline() {
    let p = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: first}
spec:
  priority: 1
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - {name: deny-53, action: Deny, from: [{namespaces: {}}], ports: [{portNumber: {protocol: UDP, port: 53}}]}
  - {name: pass-blue, action: Pass, from: [{namespaces: {matchLabels: {team: blue}}}]}
  - {name: allow-rest, action: Allow, from: [{namespaces: {}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 8080}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}
"#;
    let (out, errs) = run(p);
    assert_eq!(errs, 0);
    // blue passes to the NetworkPolicy, which allows only 8080.
    assert_eq!(line(&out, CLI_B, WEB).as_deref(), Some("TCP 8080"));
    // red is allowed by the admin policy before the NetworkPolicy, minus UDP 53.
    assert_eq!(
        line(&out, CLI_A, WEB).as_deref(),
        Some("SCTP 1-65535,TCP 1-65535,UDP 1-52,54-65535")
    );
    // cli in a is not selected by the NetworkPolicy: passed blue traffic
    // falls to the baseline, which denies.
    assert_eq!(line(&out, CLI_B, CLI_A), None);
    // b is not a subject of the admin policy: the baseline denies.
    assert_eq!(line(&out, CLI_A, CLI_B), None);
    let json = format_json(&evaluate(
        &Cluster::from_objects(
            &keycard_k8s::parse_str("t.yaml", &format!("{PODS}\n---\n{p}"), &Default::default()).0,
        )
        .0,
    ));
    assert!(json
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["src"] == CLI_B && c["conn"] == "TCP 8080"));
}

#[test]
fn explanations_name_the_deciding_rule() {
    let p = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 8080}]
"#;
    let text = format!("{PODS}\n---\n{p}");
    let (objects, _) = keycard_k8s::parse_str("t.yaml", &text, &Default::default());
    let (cluster, _) = Cluster::from_objects(&objects);
    let conns = evaluate_explained(&cluster);
    let c = conns
        .iter()
        .find(|c| c.src == CLI_B && c.dst == WEB)
        .unwrap();
    assert!(
        c.explanation
            .iter()
            .any(|e| e.contains("NetworkPolicy a/web-in ingress rule #1")),
        "{:?}",
        c.explanation
    );
    let text = format_connlist(&conns, true);
    assert!(text.contains("    ingress: NetworkPolicy a/web-in"));
}

/// 1,000 pods and 500 policies: must stay fast (the bound is loose for
/// debug builds; release is far below it).
#[test]
fn large_cluster_is_fast() {
    let mut text = String::new();
    for ns in 0..20 {
        text.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{ns}, labels: {{tier: t{}}}}}\n", ns % 4));
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
    let (objects, errors) = keycard_k8s::parse_str("big.yaml", &text, &Default::default());
    assert!(errors.is_empty());
    let (cluster, diags) = Cluster::from_objects(&objects);
    assert!(diags.is_empty(), "{diags:?}");
    let start = std::time::Instant::now();
    let conns = evaluate(&cluster);
    let took = start.elapsed();
    eprintln!(
        "1000 pods, 500 policies: {} connections in {took:?}",
        conns.len()
    );
    assert!(!conns.is_empty());
    assert!(took.as_secs() < 60, "took {took:?}");
}

#[test]
fn explain_pair_names_the_isolation_that_denies() {
    let p = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: cli}}}]
    ports: [{port: 8080}]
"#;
    let text = format!("{PODS}\n---\n{p}");
    let (objects, _) = keycard_k8s::parse_str("t.yaml", &text, &Default::default());
    let (cluster, _) = Cluster::from_objects(&objects);
    let denied = keycard_flows::explain_pair(&cluster, CLI_B, WEB).unwrap();
    assert_eq!(denied.conn, "No Connections");
    assert!(
        denied
            .explanation
            .iter()
            .any(|e| e.contains("isolated by NetworkPolicy a/web-in")),
        "{:?}",
        denied.explanation
    );
    let allowed = keycard_flows::explain_pair(&cluster, CLI_A, WEB).unwrap();
    assert_eq!(allowed.conn, "TCP 8080");
    let ext = keycard_flows::explain_pair(&cluster, WEB, "8.8.8.8").unwrap();
    assert_eq!(ext.dst, EXT);
    assert_eq!(ext.conn, "All Connections");
    assert!(keycard_flows::explain_pair(&cluster, "nope/x[Pod]", WEB).is_none());
}

/// Every input directory of the conformance data, including the malformed
/// ones, is evaluated without a panic.
#[test]
fn every_conformance_input_evaluates_without_panic() {
    let root = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/netpol-analyzer/tests"
    ));
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut dirs = 0;
    let mut diagnostics = 0;
    for e in entries.flatten() {
        if !e.path().is_dir() {
            continue;
        }
        let loaded = keycard_k8s::load_paths(&[e.path()], &keycard_k8s::LoadOptions::default());
        let (cluster, diags) = Cluster::from_objects(&loaded.objects);
        diagnostics += diags.len();
        if std::env::var("SHOW_DIAGS").is_ok() {
            for d in &diags {
                eprintln!("{d}");
            }
        }
        let _ = keycard_flows::format_report(&cluster, &evaluate(&cluster), false);
        dirs += 1;
    }
    eprintln!("{dirs} input directories, {diagnostics} diagnostics");
    assert!(dirs > 100);
    assert!(diagnostics > 0);
}
