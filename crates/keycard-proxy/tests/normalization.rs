#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Path and host normalisation before matching: every spelling of a denied
//! path or host is denied, and the normal form is stable.

use keycard_proxy::{
    compile_str, normalize_target, Authorizer, EscapedSlashes, Mode, Outcome, PathOptions, Peer,
    Reason, Request,
};

fn req(path: &str) -> Request {
    Request {
        id: "r1".into(),
        source: Peer {
            principal: Some("spiffe://example.org/ns/prod/sa/web".into()),
            ..Peer::default()
        },
        destination: Peer {
            principal: Some("spiffe://example.org/ns/prod/sa/api".into()),
            port: Some(8080),
            ..Peer::default()
        },
        host: "api.prod.svc".into(),
        method: "GET".into(),
        path: path.into(),
        ..Request::default()
    }
}

fn authz(yaml: &str, opts: PathOptions) -> Authorizer {
    let set = compile_str("t.yaml", yaml, Mode::Enforce)
        .unwrap_or_else(|e| panic!("policy does not compile: {e}"));
    Authorizer::with_policies(set).path_options(opts)
}

const DENY_ADMIN: &str = "apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: prod}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin, \"/admin/*\"]}}]
";

/// Spellings of /admin (or a path under it) that an application resolving
/// dot segments, merging slashes or decoding escapes serves as /admin.
const ADMIN_VARIANTS: &[&str] = &[
    "/admin",
    "/admin/",
    "/admin/users",
    "/admin?x=1",
    "/admin#top",
    "/./admin",
    "//admin",
    "///admin//users",
    "/a/../admin",
    "/a/b/../../admin/users",
    "/../admin",
    "/public/..//admin",
    "/%61dmin",
    "/%61%64%6D%69%6E",
    "/%2e/admin",
    "/%2E%2E/admin",
    "/x/.%2e/admin",
    "/x/%2e./admin",
    "/x\\..\\admin",
    "\\/admin",
    "/admin/.",
    "/admin/x/..",
    "/admin%2F..%2Fadmin",
    "/admin%2fusers",
    "/x%2F..%2Fadmin",
    "/x%5C..%5Cadmin",
];

#[test]
fn every_spelling_of_a_denied_path_is_denied() {
    for esc in [
        EscapedSlashes::Reject,
        EscapedSlashes::UnescapeAndRedirect,
        EscapedSlashes::UnescapeAndForward,
        EscapedSlashes::Keep,
    ] {
        let a = authz(
            DENY_ADMIN,
            PathOptions {
                escaped_slashes: esc,
            },
        );
        for v in ADMIN_VARIANTS {
            let d = a.check(&req(v));
            let escaped = v.contains("%2F") || v.contains("%2f") || v.contains("%5C");
            if esc == EscapedSlashes::Keep && escaped {
                // Kept escaped: one opaque segment, forwarded as it was
                // authorised (for applications that never decode %2F).
                let t = normalize_target(
                    v,
                    PathOptions {
                        escaped_slashes: esc,
                    },
                );
                assert!(
                    t.is_ok_and(|t| t.path.contains("%2F") || t.path.contains("%5C")),
                    "{v}"
                );
                continue;
            }
            assert!(!d.is_allowed(), "{esc:?} {v}: {d:?}");
            if esc == EscapedSlashes::Reject && escaped {
                assert_eq!(d.reason, Reason::BadRequest, "{v}");
            } else if !v.starts_with('\\') {
                assert_eq!(d.reason, Reason::DeniedByPolicy, "{esc:?} {v}: {d:?}");
                assert_eq!(d.policy.as_deref(), Some("prod/no-admin"));
            }
        }
        for ok in [
            "/",
            "/administrator",
            "/public/admin",
            "/a/admin",
            "/.admin",
        ] {
            let d = a.check(&req(ok));
            assert_eq!(
                (d.outcome, d.reason),
                (Outcome::Allow, Reason::NoPolicy),
                "{ok}"
            );
        }
    }
}

#[test]
fn an_allow_list_cannot_be_escaped_with_dot_segments() {
    let a = authz(
        "apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: public, namespace: prod}
spec:
  rules:
  - to: [{operation: {paths: [\"/public/*\"]}}]
",
        PathOptions::default(),
    );
    assert!(a.check(&req("/public/index.html")).is_allowed());
    assert!(a.check(&req("/public/./x/../index.html")).is_allowed());
    for v in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/..%2Fadmin",
        "/public/x/../../admin",
    ] {
        assert!(!a.check(&req(v)).is_allowed(), "{v}");
    }
}

#[test]
fn malformed_targets_fail_closed() {
    let a = authz(DENY_ADMIN, PathOptions::default());
    for v in [
        "admin",
        "*",
        "/a%",
        "/a%4",
        "/a%zz",
        "/a%00",
        "/a\0b",
        "/a\rb",
        "/a b",
        "/\u{e9}",
        "/a?x=\u{1}",
    ] {
        let d = a.check(&req(v));
        assert_eq!(
            (d.outcome, d.reason),
            (Outcome::Deny, Reason::BadRequest),
            "{v:?}"
        );
        assert!(d.detail.is_some());
    }
    // An encoded slash is refused by default, whatever it would resolve to.
    for v in ["/admin%2F..", "/x%2f", "/a%5Cb"] {
        assert_eq!(a.check(&req(v)).reason, Reason::BadRequest, "{v}");
    }
    // No HTTP request (a TCP connection) has no path, which is not an error.
    let d = a.check(&req(""));
    assert_eq!(d.reason, Reason::NoPolicy);
}

#[test]
fn the_forwarded_target_is_the_authorised_one() {
    let t = normalize_target("/a/./b/../%63//d%3a?x=/../y#frag", PathOptions::default()).unwrap();
    assert_eq!(t.path, "/a/c/d%3A");
    assert_eq!(t.query.as_deref(), Some("x=/../y"));
    assert_eq!(t.path_and_query(), "/a/c/d%3A?x=/../y");
    assert!(!t.redirect);
    let redirect = PathOptions {
        escaped_slashes: EscapedSlashes::UnescapeAndRedirect,
    };
    let t = normalize_target("/a%2Fb", redirect).unwrap();
    assert_eq!((t.path.as_str(), t.redirect), ("/a/b", true));
    assert!(normalize_target("/a%2Fb", PathOptions::default()).is_err());
    assert_eq!("keep".parse::<EscapedSlashes>(), Ok(EscapedSlashes::Keep));
    assert!("nope".parse::<EscapedSlashes>().is_err());
}

#[test]
fn hosts_match_case_insensitively_and_by_port() {
    let a = authz(
        "apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: hosts, namespace: prod}
spec:
  action: DENY
  rules:
  - to: [{operation: {hosts: [admin.example.com, \"Billing.Example.com:8443\"]}}]
",
        PathOptions::default(),
    );
    let with_host = |h: &str| {
        let mut r = req("/");
        r.host = h.into();
        a.check(&r)
    };
    for h in [
        "admin.example.com",
        "ADMIN.Example.COM",
        "admin.example.com.",
        "admin.example.com:80",
        "Admin.Example.com.:08080",
        "billing.example.com:8443",
        "BILLING.example.com.:8443",
        "billing.example.com:08443",
    ] {
        assert_eq!(with_host(h).reason, Reason::DeniedByPolicy, "{h}");
    }
    for h in [
        "billing.example.com",
        "billing.example.com:443",
        "admin.example.org",
        "xadmin.example.com",
        "",
    ] {
        assert_eq!(with_host(h).reason, Reason::NoPolicy, "{h}");
    }
}

/// A small seeded generator (SplitMix64): reproducible without a
/// dependency; a failure prints the input.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Normalising is idempotent and its output has no `.`/`..` segment, no
/// `//`, no lower-case or unreserved escape; deciding on a raw target and
/// on its normal form gives the same verdict.
#[test]
fn normalisation_is_idempotent_and_total() {
    const PIECES: &[&str] = &[
        "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "a", "admin", "%61", "%41",
        "%3a", "%7e", "~", "?", "#", "\"", "%", "%zz", "%00", "-", ":", "@", "%25", "{", "é", " ",
        "\t",
    ];
    let a = authz(DENY_ADMIN, PathOptions::default());
    let mut g = Gen(0x6b65_7963_6172_6464);
    for _ in 0..20_000 {
        let mut raw = String::from("/");
        for _ in 0..g.below(12) {
            raw.push_str(PIECES[g.below(PIECES.len())]);
        }
        for esc in [
            EscapedSlashes::Reject,
            EscapedSlashes::UnescapeAndRedirect,
            EscapedSlashes::UnescapeAndForward,
            EscapedSlashes::Keep,
        ] {
            let opts = PathOptions {
                escaped_slashes: esc,
            };
            let Ok(t) = normalize_target(&raw, opts) else {
                continue;
            };
            let p = &t.path;
            assert!(p.starts_with('/'), "{raw:?} -> {p:?}");
            assert!(!p.contains("//"), "{raw:?} -> {p:?}");
            assert!(
                p.split('/').all(|s| s != "." && s != ".."),
                "{raw:?} -> {p:?}"
            );
            assert!(!p.contains('\\') && !p.contains('#'), "{raw:?} -> {p:?}");
            let again = normalize_target(&t.path_and_query(), opts)
                .unwrap_or_else(|e| panic!("{raw:?} -> {p:?}: {e}"));
            assert_eq!(&again.path, p, "{esc:?} {raw:?}");
            assert!(!again.redirect, "{raw:?}");
            if esc == EscapedSlashes::Reject {
                assert_eq!(
                    a.check(&req(&raw)),
                    a.check(&req(&t.path_and_query())),
                    "{raw:?}"
                );
            }
        }
    }
}

#[test]
fn rego_sees_the_normal_form() {
    let a = authz(
        "apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: rego-admin, namespace: prod}
spec:
  action: DENY
  rego: |
    package team.admin
    match if {
      startswith(input.request.path, \"/admin\")
      startswith(input.request.full_path, \"/admin\")
    }
",
        PathOptions::default(),
    );
    for v in ["/admin", "//admin?x=1", "/./%61dmin", "/x/../admin/y"] {
        let d = a.check(&req(v));
        assert_eq!(d.reason, Reason::DeniedByPolicy, "{v}: {d:?}");
    }
    assert_eq!(a.check(&req("/public?admin")).reason, Reason::NoPolicy);
}
