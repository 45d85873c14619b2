#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The authorization model, case by case: every field, the not-variants,
//! wildcards, the order of evaluation, audit mode, empty rules, Rego.

use keycard_proxy::{compile_str, Authorizer, Mode, Outcome, Peer, Reason, Request};

const WEB: &str = "spiffe://example.org/ns/prod/sa/web";
const API: &str = "spiffe://example.org/ns/prod/sa/api";
const DEV: &str = "spiffe://example.org/ns/dev/sa/tool";

fn req() -> Request {
    Request {
        id: "r1".into(),
        source: Peer {
            principal: Some(WEB.into()),
            ip: Some("10.1.2.3".parse().unwrap()),
            port: Some(40000),
        },
        destination: Peer {
            principal: Some(API.into()),
            ip: Some("10.9.9.9".parse().unwrap()),
            port: Some(8080),
        },
        host: "api.prod.svc:8080".into(),
        method: "GET".into(),
        path: "/v1/items?limit=5".into(),
        headers: vec![("x-tenant".into(), "blue".into())],
        destination_labels: [("app".to_string(), "api".to_string())].into(),
        ..Request::default()
    }
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: prod}}\nspec:\n{}\n---\n",
        spec.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
    )
}

fn decide(yaml: &str, r: &Request) -> keycard_proxy::AuthzDecision {
    let set = compile_str("t.yaml", yaml, Mode::Enforce)
        .unwrap_or_else(|e| panic!("policy does not compile: {e}\n{yaml}"));
    Authorizer::with_policies(set).check(r)
}

/// An ALLOW policy with one rule; `allowed` says whether it should match `req()`.
#[test]
fn each_field_matches_and_misses() {
    type Mutate = fn(&mut Request);
    let keep: Mutate = |_| {};
    let cases: Vec<(&str, &str, Mutate, bool)> = vec![
        // from.source
        ("principals exact", "from: [{source: {principals: [\"spiffe://example.org/ns/prod/sa/web\"]}}]", keep, true),
        ("principals other", "from: [{source: {principals: [\"spiffe://example.org/ns/prod/sa/other\"]}}]", keep, false),
        ("principals prefix", "from: [{source: {principals: [\"spiffe://example.org/ns/prod/*\"]}}]", keep, true),
        ("principals suffix", "from: [{source: {principals: [\"*/sa/web\"]}}]", keep, true),
        ("principals any", "from: [{source: {principals: [\"*\"]}}]", keep, true),
        ("principals any, unauthenticated", "from: [{source: {principals: [\"*\"]}}]", |r| r.source.principal = None, false),
        ("notPrincipals any, unauthenticated", "from: [{source: {notPrincipals: [\"*\"]}}]", |r| r.source.principal = None, true),
        ("notPrincipals excludes", "from: [{source: {notPrincipals: [\"*/sa/web\"]}}]", keep, false),
        ("notPrincipals other", "from: [{source: {notPrincipals: [\"*/sa/x\"]}}]", keep, true),
        ("namespaces", "from: [{source: {namespaces: [prod]}}]", keep, true),
        ("namespaces other", "from: [{source: {namespaces: [dev]}}]", keep, false),
        ("namespaces from a dev caller", "from: [{source: {namespaces: [dev]}}]", |r| r.source.principal = Some(DEV.into()), true),
        ("notNamespaces", "from: [{source: {notNamespaces: [prod]}}]", keep, false),
        ("ipBlocks", "from: [{source: {ipBlocks: [\"10.0.0.0/8\"]}}]", keep, true),
        ("ipBlocks single ip", "from: [{source: {ipBlocks: [\"10.1.2.3\"]}}]", keep, true),
        ("ipBlocks other", "from: [{source: {ipBlocks: [\"192.168.0.0/16\"]}}]", keep, false),
        ("notIpBlocks", "from: [{source: {notIpBlocks: [\"10.1.0.0/16\"]}}]", keep, false),
        ("remoteIpBlocks uses x-forwarded-for address", "from: [{source: {remoteIpBlocks: [\"203.0.113.0/24\"]}}]", |r| r.remote_ip = Some("203.0.113.9".parse().unwrap()), true),
        ("requestPrincipals without a JWT", "from: [{source: {requestPrincipals: [\"*\"]}}]", keep, false),
        ("notRequestPrincipals without a JWT", "from: [{source: {notRequestPrincipals: [\"*\"]}}]", keep, true),
        ("two fields in one source are AND", "from: [{source: {principals: [\"*/sa/web\"], namespaces: [dev]}}]", keep, false),
        ("two sources are OR", "from: [{source: {namespaces: [dev]}}, {source: {principals: [\"*/sa/web\"]}}]", keep, true),
        // to.operation
        ("methods", "to: [{operation: {methods: [GET, HEAD]}}]", keep, true),
        ("methods other", "to: [{operation: {methods: [POST]}}]", keep, false),
        ("notMethods", "to: [{operation: {notMethods: [GET]}}]", keep, false),
        ("paths exact ignores the query", "to: [{operation: {paths: [/v1/items]}}]", keep, true),
        ("paths exact other", "to: [{operation: {paths: [/v1/item]}}]", keep, false),
        ("paths prefix", "to: [{operation: {paths: [\"/v1/*\"]}}]", keep, true),
        ("paths suffix", "to: [{operation: {paths: [\"*/items\"]}}]", keep, true),
        ("notPaths prefix", "to: [{operation: {notPaths: [\"/v1/*\"]}}]", keep, false),
        ("notPaths other", "to: [{operation: {notPaths: [\"/admin/*\"]}}]", keep, true),
        ("ports", "to: [{operation: {ports: [\"8080\"]}}]", keep, true),
        ("ports as numbers", "to: [{operation: {ports: [8080]}}]", keep, true),
        ("ports other", "to: [{operation: {ports: [\"9090\"]}}]", keep, false),
        ("notPorts", "to: [{operation: {notPorts: [\"8080\"]}}]", keep, false),
        ("hosts with port stripped", "to: [{operation: {hosts: [api.prod.svc]}}]", keep, true),
        ("hosts with port", "to: [{operation: {hosts: [\"api.prod.svc:8080\"]}}]", keep, true),
        ("hosts case-insensitive prefix", "to: [{operation: {hosts: [\"API.*\"]}}]", keep, true),
        ("hosts suffix", "to: [{operation: {hosts: [\"*.svc\"]}}]", keep, true),
        ("notHosts", "to: [{operation: {notHosts: [\"*.svc\"]}}]", keep, false),
        ("two operation fields are AND", "to: [{operation: {methods: [GET], paths: [/other]}}]", keep, false),
        ("two operations are OR", "to: [{operation: {paths: [/other]}}, {operation: {methods: [GET]}}]", keep, true),
        // when
        ("when header", "when: [{key: \"request.headers[x-tenant]\", values: [blue]}]", keep, true),
        ("when header case of the name", "when: [{key: \"request.headers[X-Tenant]\", values: [blue]}]", keep, true),
        ("when header other", "when: [{key: \"request.headers[x-tenant]\", values: [red]}]", keep, false),
        ("when header absent", "when: [{key: \"request.headers[x-none]\", values: [\"*\"]}]", keep, false),
        ("when header notValues", "when: [{key: \"request.headers[x-tenant]\", notValues: [blue]}]", keep, false),
        ("when source.principal", "when: [{key: source.principal, values: [\"*/sa/web\"]}]", keep, true),
        ("when source.namespace", "when: [{key: source.namespace, notValues: [prod]}]", keep, false),
        ("when source.ip cidr", "when: [{key: source.ip, values: [\"10.0.0.0/8\"]}]", keep, true),
        ("when destination.port", "when: [{key: destination.port, values: [\"8080\"]}]", keep, true),
        ("when destination.ip", "when: [{key: destination.ip, notValues: [\"10.9.9.9\"]}]", keep, false),
        ("when connection.sni absent", "when: [{key: connection.sni, values: [\"*\"]}]", keep, false),
        ("when posture without posture", "when: [{key: posture.device_health, values: [healthy]}]", keep, false),
        ("when two conditions AND", "when: [{key: source.namespace, values: [prod]}, {key: \"request.headers[x-tenant]\", values: [red]}]", keep, false),
        ("from, to and when all match", "from: [{source: {namespaces: [prod]}}]\n  to: [{operation: {methods: [GET]}}]\n  when: [{key: \"request.headers[x-tenant]\", values: [blue]}]", keep, true),
        ("from matches, to misses", "from: [{source: {namespaces: [prod]}}]\n  to: [{operation: {methods: [PUT]}}]", keep, false),
    ];
    for (name, rule, mutate, allowed) in cases {
        let yaml = policy("p", &format!("rules:\n- {rule}"));
        let mut r = req();
        mutate(&mut r);
        let d = decide(&yaml, &r);
        assert_eq!(d.is_allowed(), allowed, "{name}: {d:?}");
        if allowed {
            assert_eq!(d.reason, Reason::AllowedByPolicy, "{name}");
            assert_eq!(d.policy.as_deref(), Some("prod/p"), "{name}");
            assert_eq!(d.rule.as_deref(), Some("rules[0]"), "{name}");
        } else {
            assert_eq!(d.reason, Reason::NoAllowMatch, "{name}");
        }
    }
}

#[test]
fn empty_rules_follow_istio() {
    // ALLOW without rules: applies and matches nothing, so it denies all.
    let d = decide(&policy("allow-nothing", "action: ALLOW"), &req());
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::NoAllowMatch));
    assert_eq!(d.policy.as_deref(), Some("prod/allow-nothing"));
    // An empty rule matches everything.
    let d = decide(&policy("allow-all", "rules: [{}]"), &req());
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Allow, Reason::AllowedByPolicy)
    );
    // DENY without rules matches nothing.
    let d = decide(&policy("deny-nothing", "action: DENY"), &req());
    assert_eq!((d.outcome, d.reason), (Outcome::Allow, Reason::NoPolicy));
    // DENY with an empty rule denies everything.
    let d = decide(&policy("deny-all", "action: DENY\nrules: [{}]"), &req());
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Deny, Reason::DeniedByPolicy)
    );
    // No policy at all: allowed.
    let d = decide("", &req());
    assert_eq!(
        (d.outcome, d.reason, d.policy),
        (Outcome::Allow, Reason::NoPolicy, None)
    );
}

#[test]
fn deny_is_evaluated_before_allow() {
    let yaml = policy(
        "a-allow-web",
        "rules:\n- name: web\n  from: [{source: {principals: [\"*/sa/web\"]}}]",
    ) + &policy(
        "z-deny-admin",
        "action: DENY\nrules:\n- name: admin\n  to: [{operation: {paths: [\"/admin/*\"]}}]",
    );
    let d = decide(&yaml, &req());
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Allow, Reason::AllowedByPolicy)
    );
    assert_eq!(d.rule.as_deref(), Some("web"));
    let mut r = req();
    r.path = "/admin/users".into();
    let d = decide(&yaml, &r);
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Deny, Reason::DeniedByPolicy)
    );
    assert_eq!(d.policy.as_deref(), Some("prod/z-deny-admin"));
    assert_eq!(d.rule.as_deref(), Some("admin"));
    assert_eq!(
        d.reason_header(),
        "prod/z-deny-admin/admin: denied_by_policy"
    );
}

#[test]
fn any_allow_policy_that_matches_allows() {
    let yaml = policy("a", "rules: [{from: [{source: {namespaces: [dev]}}]}]")
        + &policy("b", "rules: [{from: [{source: {namespaces: [prod]}}]}]");
    let d = decide(&yaml, &req());
    assert_eq!(
        (d.outcome, d.policy.as_deref()),
        (Outcome::Allow, Some("prod/b"))
    );
    let mut r = req();
    r.source.principal = Some("spiffe://example.org/ns/qa/sa/x".into());
    let d = decide(&yaml, &r);
    assert_eq!(
        (d.outcome, d.reason, d.policy.as_deref()),
        (Outcome::Deny, Reason::NoAllowMatch, Some("prod/a"))
    );
}

#[test]
fn selectors_scope_policies_to_workloads() {
    // An allow-nothing policy for another workload does not apply here.
    let other = policy("other", "selector: {matchLabels: {app: db}}");
    let d = decide(&other, &req());
    assert_eq!(d.reason, Reason::NoPolicy);
    let mine = policy("mine", "selector: {matchLabels: {app: api}}");
    assert_eq!(decide(&mine, &req()).reason, Reason::NoAllowMatch);
    let by_id = policy(
        "by-id",
        "selector: {spiffeIds: [\"spiffe://example.org/ns/prod/sa/*\"]}",
    );
    assert_eq!(decide(&by_id, &req()).reason, Reason::NoAllowMatch);
    let both = policy(
        "both",
        "selector: {matchLabels: {app: api}, spiffeIds: [\"spiffe://example.org/ns/prod/sa/db\"]}",
    );
    assert_eq!(decide(&both, &req()).reason, Reason::NoPolicy);
    // metadata.namespace scopes to destinations in that namespace.
    let mut r = req();
    r.destination.principal = Some("spiffe://example.org/ns/dev/sa/api".into());
    assert_eq!(decide(&mine, &r).reason, Reason::NoPolicy);
    // A policy without a namespace applies everywhere.
    let mesh = "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: mesh-default-deny}\nspec: {}\n";
    let d = decide(mesh, &r);
    assert_eq!(
        (d.reason, d.policy.as_deref()),
        (Reason::NoAllowMatch, Some("mesh-default-deny"))
    );
}

#[test]
fn audit_mode_lets_through_and_names_the_policy() {
    // An audit-mode DENY that matches: would deny.
    let yaml = policy(
        "deny-get",
        "action: DENY\nmode: audit\nrules: [{to: [{operation: {methods: [GET]}}]}]",
    );
    let d = decide(&yaml, &req());
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Audit, Reason::AuditWouldDeny)
    );
    assert!(d.is_allowed());
    assert_eq!(d.policy.as_deref(), Some("prod/deny-get"));
    assert_eq!(d.mode, Mode::Audit);
    // An audit-mode ALLOW that does not match: would deny.
    let yaml = policy(
        "allow-post",
        "mode: audit\nrules: [{to: [{operation: {methods: [POST]}}]}]",
    );
    let d = decide(&yaml, &req());
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Audit, Reason::AuditWouldDeny)
    );
    assert_eq!(d.policy.as_deref(), Some("prod/allow-post"));
    // ... and when it matches: allowed, no enforcing policy decided.
    let yaml = policy(
        "allow-get",
        "mode: audit\nrules: [{to: [{operation: {methods: [GET]}}]}]",
    );
    let d = decide(&yaml, &req());
    assert_eq!((d.outcome, d.reason), (Outcome::Allow, Reason::NoPolicy));
    // An enforcing deny wins over an audit-mode one.
    let yaml = policy("a-audit", "action: DENY\nmode: audit\nrules: [{}]")
        + &policy("b-enforce", "action: DENY\nrules: [{}]");
    let d = decide(&yaml, &req());
    assert_eq!(
        (d.outcome, d.policy.as_deref()),
        (Outcome::Deny, Some("prod/b-enforce"))
    );
    // The default mode applies to policies that do not say.
    let set = compile_str(
        "t.yaml",
        &policy("d", "action: DENY\nrules: [{}]"),
        Mode::Audit,
    )
    .unwrap();
    let d = Authorizer::with_policies(set).check(&req());
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Audit, Reason::AuditWouldDeny)
    );
}

#[test]
fn audit_action_marks_without_deciding() {
    let yaml = policy(
        "log-gets",
        "action: AUDIT\nrules: [{to: [{operation: {methods: [GET]}}]}]",
    ) + &policy(
        "log-posts",
        "action: AUDIT\nrules: [{to: [{operation: {methods: [POST]}}]}]",
    );
    let d = decide(&yaml, &req());
    assert_eq!((d.outcome, d.reason), (Outcome::Allow, Reason::NoPolicy));
    assert_eq!(
        d.audit_policies.iter().map(|p| &**p).collect::<Vec<_>>(),
        vec!["prod/log-gets"]
    );
}

#[test]
fn rego_rule_adds_a_condition() {
    let yaml = policy(
        "tenant",
        "rules: [{from: [{source: {namespaces: [prod]}}]}]\nrego: |\n  package team.tenant\n  match if {\n    input.request.headers[\"x-tenant\"] == \"blue\"\n    startswith(input.request.path, \"/v1/\")\n  }",
    );
    let d = decide(&yaml, &req());
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Allow, Reason::AllowedByPolicy)
    );
    let mut r = req();
    r.headers = vec![("x-tenant".into(), "red".into())];
    let d = decide(&yaml, &r);
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::NoAllowMatch));
    // Rego alone (no rules) decides.
    let yaml = policy(
        "rego-only",
        "action: DENY\nrego: |\n  package x\n  match if input.source.namespace == \"prod\"",
    );
    assert_eq!(decide(&yaml, &req()).reason, Reason::DeniedByPolicy);
}

#[test]
fn invalid_policies_name_file_and_field() {
    let cases = [
        ("spec: {action: PERMIT}", "spec.action"),
        ("spec: {mode: strict}", "spec.mode"),
        ("spec: {bogus: 1}", "spec.bogus"),
        (
            "spec: {rules: [{from: [{source: {ipBlocks: [\"10.0.0.0/99\"]}}]}]}",
            "spec.rules[0].from[0].source.ipBlocks",
        ),
        (
            "spec: {rules: [{from: [{source: {principal: [x]}}]}]}",
            "spec.rules[0].from[0].source.principal",
        ),
        (
            "spec: {rules: [{to: [{operation: {ports: [\"http\"]}}]}]}",
            "spec.rules[0].to[0].operation.ports[0]",
        ),
        (
            "spec: {rules: [{to: [{operation: {paths: [\"/a/*/b\"]}}]}]}",
            "spec.rules[0].to[0].operation.paths",
        ),
        (
            "spec: {rules: [{when: [{key: request.nope, values: [x]}]}]}",
            "spec.rules[0].when[0].key",
        ),
        (
            "spec: {rules: [{when: [{key: source.ip}]}]}",
            "spec.rules[0].when[0]",
        ),
        (
            "spec: {rules: [{}, {}], selector: {spiffeIds: [web]}}",
            "spec.selector.spiffeIds[0]",
        ),
        ("spec: {rego: \"package x\\nallow := true\"}", "spec.rego"),
        ("spec: {rego: \"package x\\nmatch if {\"}", "spec.rego"),
    ];
    for (spec, field) in cases {
        let yaml = format!("\n\napiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: bad}}\n{spec}\n");
        let err = compile_str("dir/bad.yaml", &yaml, Mode::Enforce).unwrap_err();
        let keycard_proxy::LoadError::Invalid(errs) = &err else {
            panic!("{err}")
        };
        assert!(
            errs.iter()
                .any(|e| e.file == "dir/bad.yaml" && e.line == 3 && e.field == field),
            "{spec}: want field {field}, got {err}"
        );
    }
    let err = compile_str(
        "k.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        Mode::Enforce,
    )
    .unwrap_err();
    assert!(err.to_string().contains("k.yaml:1: apiVersion"), "{err}");
    let err = compile_str(
        "n.yaml",
        "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nspec: {}\n",
        Mode::Enforce,
    )
    .unwrap_err();
    assert!(err.to_string().contains("metadata.name"), "{err}");
}
