#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Reloading a policy directory: an invalid file keeps the last good set.

use std::sync::Arc;

use keycard_proxy::{Authorizer, Mode, Peer, PolicyStore, Reason, Reload, Request};

const DENY_ADMIN: &str = "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/admin/*\"]}}]}]\n";
const DENY_ALL: &str = "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all}\nspec:\n  action: DENY\n  rules: [{}]\n";

fn req(path: &str) -> Request {
    Request {
        source: Peer {
            principal: Some("spiffe://td/ns/a/sa/b".into()),
            ..Peer::default()
        },
        method: "GET".into(),
        path: path.into(),
        ..Request::default()
    }
}

#[test]
fn invalid_reload_keeps_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), DENY_ADMIN).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let store = Arc::new(PolicyStore::open(dir.path(), Mode::Enforce).unwrap());
    let authz = Authorizer::new(store.clone());
    assert_eq!(authz.check(&req("/admin/x")).reason, Reason::DeniedByPolicy);
    assert_eq!(authz.check(&req("/x")).reason, Reason::NoPolicy);
    assert_eq!(store.reload_if_changed(), Reload::Unchanged);

    // A broken file: the reload fails, names the file and field, and the old set stays.
    std::fs::write(dir.path().join("b.yaml"), DENY_ALL.replace("DENY", "BLOCK")).unwrap();
    let Reload::Failed(msg) = store.reload_if_changed() else {
        panic!("reload should fail")
    };
    assert!(msg.contains("b.yaml:1: spec.action"), "{msg}");
    assert_eq!(store.reload_errors(), 1);
    assert!(store.last_error().is_some());
    assert_eq!(authz.check(&req("/x")).reason, Reason::NoPolicy);
    assert_eq!(authz.check(&req("/admin/x")).reason, Reason::DeniedByPolicy);
    // Polling again without a change does not count the error twice.
    assert_eq!(store.reload_if_changed(), Reload::Unchanged);
    assert_eq!(store.reload_errors(), 1);

    // Fixed: the new set is in force.
    std::fs::write(dir.path().join("b.yaml"), DENY_ALL).unwrap();
    assert_eq!(store.reload_if_changed(), Reload::Reloaded(2));
    assert_eq!(store.last_error(), None);
    assert_eq!(store.generation(), 2);
    let d = authz.check(&req("/x"));
    assert_eq!(
        (d.reason, d.policy.as_deref()),
        (Reason::DeniedByPolicy, Some("deny-all"))
    );

    // A duplicate name across files is an error too.
    std::fs::write(dir.path().join("c.yaml"), DENY_ALL).unwrap();
    let Reload::Failed(msg) = store.reload_if_changed() else {
        panic!("duplicate should fail")
    };
    assert!(msg.contains("duplicate policy deny-all"), "{msg}");
    assert_eq!(authz.check(&req("/x")).policy.as_deref(), Some("deny-all"));

    // Removing the file restores a valid set.
    std::fs::remove_file(dir.path().join("c.yaml")).unwrap();
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    assert_eq!(store.reload_if_changed(), Reload::Reloaded(1));
    assert_eq!(authz.check(&req("/x")).reason, Reason::NoPolicy);
}

#[test]
fn open_refuses_an_invalid_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {rules: [{to: [{operation: {ports: [0]}}]}]}\n").unwrap();
    let err = PolicyStore::open(dir.path(), Mode::Enforce).err().unwrap();
    assert!(
        err.to_string()
            .contains("spec.rules[0].to[0].operation.ports[0]"),
        "{err}"
    );
    assert!(PolicyStore::open(dir.path().join("missing"), Mode::Enforce).is_err());
}

#[test]
fn the_examples_compile() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/authz");
    let store = PolicyStore::open(dir.join("policies"), Mode::Enforce).unwrap();
    assert_eq!(store.current().len(), 6);
    let text = std::fs::read_to_string(dir.join("providers.yaml")).unwrap();
    assert_eq!(
        keycard_proxy::jwt::parse_provider_config("providers.yaml", &text, &dir)
            .unwrap()
            .len(),
        2
    );
    let text = std::fs::read_to_string(dir.join("revocations.yaml")).unwrap();
    keycard_proxy::files::Revocations::parse("revocations.yaml", &text).unwrap();
    let text = std::fs::read_to_string(dir.join("posture.yaml")).unwrap();
    keycard_proxy::files::PostureDb::parse("posture.yaml", &text).unwrap();

    // The example policies decide as their comments say.
    let authz = Authorizer::new(std::sync::Arc::new(store));
    let api = "spiffe://example.org/ns/shop/sa/api";
    let mut r = Request {
        source: Peer {
            principal: Some("spiffe://example.org/ns/shop/sa/web".into()),
            ip: Some("10.1.1.1".parse().unwrap()),
            port: None,
        },
        destination: Peer {
            principal: Some(api.into()),
            ..Peer::default()
        },
        method: "GET".into(),
        path: "/v1/products/42".into(),
        ..Request::default()
    };
    let d = authz.check(&r);
    assert_eq!(
        (d.reason, d.rule.as_deref()),
        (Reason::AllowedByPolicy, Some("web-reads"))
    );
    r.method = "POST".into();
    let d = authz.check(&r);
    assert_eq!(
        (d.reason, d.policy.as_deref()),
        (Reason::NoAllowMatch, Some("default-deny"))
    );
    r.path = "/admin/x".into();
    r.source.ip = Some("203.0.113.5".parse().unwrap());
    assert_eq!(authz.check(&r).reason, Reason::DeniedByPolicy);
    // Payments: the Rego rule.
    let mut p = Request {
        source: Peer {
            principal: Some("spiffe://example.org/ns/payments/sa/ui".into()),
            ..Peer::default()
        },
        destination: Peer {
            principal: Some("spiffe://example.org/ns/payments/sa/api".into()),
            ..Peer::default()
        },
        method: "POST".into(),
        path: "/v1/refunds".into(),
        headers: vec![("x-refund-amount".into(), "5000".into())],
        ..Request::default()
    };
    let d = authz.check(&p);
    assert_eq!(
        (d.reason, d.policy.as_deref()),
        (Reason::DeniedByPolicy, Some("payments/payments-refunds"))
    );
    p.headers = vec![("x-refund-amount".into(), "50".into())];
    assert_eq!(
        authz.check(&p).policy.as_deref(),
        Some("default-deny"),
        "small refunds pass the DENY, then default deny"
    );
}
