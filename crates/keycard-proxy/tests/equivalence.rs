#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The optimised evaluator agrees with a naive reference evaluation of the
//! documented semantics (policy module and engine module docs) over
//! randomly generated policy sets and requests.
//!
//! The reference works on plain strings: no hashing, no precompiled sets,
//! no normaliser (requests carry their path's normal form from a table).

use keycard_proxy::{compile_str, Authorizer, Mode, Outcome, Peer, Reason, Request};

/// SplitMix64: reproducible without a dependency.
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
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const PRINCIPALS: &[&str] = &[
    "spiffe://example.org/ns/prod/sa/web",
    "spiffe://example.org/ns/prod/sa/api",
    "spiffe://example.org/ns/dev/sa/tool",
    "spiffe://other.org/ns/prod/sa/web",
];
const DESTINATIONS: &[&str] = &[
    "spiffe://example.org/ns/prod/sa/api",
    "spiffe://example.org/ns/prod/sa/db",
];
const NAMESPACES: &[&str] = &["prod", "dev"];
/// (raw request path, its normal form)
const PATHS: &[(&str, &str)] = &[
    ("/v1/items", "/v1/items"),
    ("/v1/items?limit=5", "/v1/items"),
    ("/v1//items", "/v1/items"),
    ("/admin", "/admin"),
    ("/x/../admin/users", "/admin/users"),
    ("/%61dmin/users", "/admin/users"),
    ("/v1/", "/v1/"),
    ("/", "/"),
];
const PATH_VALUES: &[&str] = &["/v1/items", "/admin", "/admin/users", "/v1/", "/"];
const METHODS: &[&str] = &["GET", "POST", "DELETE"];
/// (raw Host, normalised with port, normalised without port)
const HOSTS: &[(&str, &str, &str)] = &[
    ("api.svc", "api.svc", "api.svc"),
    ("API.svc:8080", "api.svc:8080", "api.svc"),
    ("admin.svc:9090", "admin.svc:9090", "admin.svc"),
    ("Admin.SVC.", "admin.svc", "admin.svc"),
];
const HOST_VALUES: &[&str] = &["api.svc", "api.svc:8080", "admin.svc", "admin.svc:9090"];
const PORTS: &[u16] = &[8080, 9090];
const TENANTS: &[&str] = &["blue", "red"];
const IPS: &[[u8; 4]] = &[[10, 1, 2, 3], [192, 168, 1, 1]];
const BLOCKS: &[(&str, [u8; 4], u32)] = &[
    ("10.0.0.0/8", [10, 0, 0, 0], 8),
    ("10.1.2.3", [10, 1, 2, 3], 32),
    ("192.168.0.0/16", [192, 168, 0, 0], 16),
];

/// An Istio-style pattern over one attribute.
#[derive(Clone, Debug)]
enum Pat {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Any,
}

impl Pat {
    fn gen(g: &mut Gen, values: &[&str], lowercase_only: bool) -> Pat {
        let v = g.pick(values).to_string();
        let v = if lowercase_only || !g.chance(20) {
            v
        } else {
            v.to_ascii_uppercase()
        };
        let cut = if v.len() > 1 {
            1 + g.below(v.len() - 1)
        } else {
            1
        };
        match g.below(10) {
            0..=4 => Pat::Exact(v),
            5..=6 => Pat::Prefix(v[..cut].to_string()),
            7..=8 => Pat::Suffix(v[cut..].to_string()),
            _ => Pat::Any,
        }
    }
    fn yaml(&self) -> String {
        match self {
            Pat::Exact(v) => format!("{v:?}"),
            Pat::Prefix(v) => format!("\"{v}*\""),
            Pat::Suffix(v) => format!("\"*{v}\""),
            Pat::Any => "\"*\"".into(),
        }
    }
    fn matches(&self, value: &str, ci: bool) -> bool {
        let (pat, value) = if ci {
            (self.lower(), value.to_ascii_lowercase())
        } else {
            (self.clone(), value.to_string())
        };
        if value.is_empty() {
            return false;
        }
        match pat {
            Pat::Exact(p) => value == p,
            Pat::Prefix(p) => value.starts_with(&p),
            Pat::Suffix(p) => value.ends_with(&p),
            Pat::Any => true,
        }
    }
    fn lower(&self) -> Pat {
        match self {
            Pat::Exact(v) => Pat::Exact(v.to_ascii_lowercase()),
            Pat::Prefix(v) => Pat::Prefix(v.to_ascii_lowercase()),
            Pat::Suffix(v) => Pat::Suffix(v.to_ascii_lowercase()),
            Pat::Any => Pat::Any,
        }
    }
}

/// One field: a key (`principals`), negated or not, its patterns.
#[derive(Clone, Debug)]
struct FieldSpec {
    key: &'static str,
    not: bool,
    pats: Vec<String>,
}

impl FieldSpec {
    fn yaml_key(&self) -> String {
        if self.not {
            format!(
                "not{}{}",
                self.key[..1].to_ascii_uppercase(),
                &self.key[1..]
            )
        } else {
            self.key.to_string()
        }
    }
}

#[derive(Clone, Debug)]
struct Cond {
    key: &'static str,
    not: bool,
    values: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct RuleSpec {
    from: Vec<Vec<FieldSpec>>,
    to: Vec<Vec<FieldSpec>>,
    when: Vec<Cond>,
}

#[derive(Clone, Debug)]
struct PolicySpec {
    name: String,
    action: &'static str,
    mode: Mode,
    selector: Option<Vec<String>>,
    namespace: Option<&'static str>,
    rules: Vec<RuleSpec>,
}

fn gen_pats(g: &mut Gen, values: &[&str], ci: bool) -> Vec<String> {
    (0..1 + g.below(2))
        .map(|_| Pat::gen(g, values, !ci).yaml())
        .collect()
}

/// One entry per key: a mapping cannot repeat one.
fn dedup_keys(fields: &mut Vec<FieldSpec>) {
    let mut seen = Vec::new();
    fields.retain(|f| {
        let k = f.yaml_key();
        let fresh = !seen.contains(&k);
        seen.push(k);
        fresh
    });
}

fn gen_policy(g: &mut Gen, i: usize) -> PolicySpec {
    let mut rules = Vec::new();
    for _ in 0..g.below(4) {
        let mut r = RuleSpec::default();
        for _ in 0..g.below(3) {
            let mut src = Vec::new();
            for _ in 0..1 + g.below(2) {
                let not = g.chance(30);
                src.push(match g.below(3) {
                    0 => FieldSpec {
                        key: "principals",
                        not,
                        pats: gen_pats(g, PRINCIPALS, false),
                    },
                    1 => FieldSpec {
                        key: "namespaces",
                        not,
                        pats: gen_pats(g, NAMESPACES, false),
                    },
                    _ => FieldSpec {
                        key: "ipBlocks",
                        not,
                        pats: vec![format!("{:?}", g.pick(BLOCKS).0)],
                    },
                });
            }
            dedup_keys(&mut src);
            r.from.push(src);
        }
        for _ in 0..g.below(3) {
            let mut op = Vec::new();
            for _ in 0..1 + g.below(2) {
                let not = g.chance(30);
                op.push(match g.below(4) {
                    0 => FieldSpec {
                        key: "methods",
                        not,
                        pats: gen_pats(g, METHODS, false),
                    },
                    1 => FieldSpec {
                        key: "paths",
                        not,
                        pats: gen_pats(g, PATH_VALUES, false),
                    },
                    2 => FieldSpec {
                        key: "hosts",
                        not,
                        pats: gen_pats(g, HOST_VALUES, true),
                    },
                    _ => FieldSpec {
                        key: "ports",
                        not,
                        pats: vec![format!("\"{}\"", g.pick(PORTS))],
                    },
                });
            }
            dedup_keys(&mut op);
            r.to.push(op);
        }
        for _ in 0..g.below(2) {
            let not = g.chance(30);
            r.when.push(if g.chance(50) {
                Cond {
                    key: "request.headers[x-tenant]",
                    not,
                    values: gen_pats(g, TENANTS, false),
                }
            } else {
                Cond {
                    key: "source.principal",
                    not,
                    values: gen_pats(g, PRINCIPALS, false),
                }
            });
        }
        rules.push(r);
    }
    PolicySpec {
        name: format!("p{i:02}"),
        action: ["ALLOW", "ALLOW", "DENY", "AUDIT"][g.below(4)],
        mode: if g.chance(25) {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        selector: g.chance(30).then(|| {
            vec![g
                .pick(&[
                    "\"spiffe://example.org/ns/prod/sa/api\"",
                    "\"spiffe://example.org/ns/prod/sa/d*\"",
                    "\"*\"",
                ])
                .to_string()]
        }),
        namespace: *g.pick(&[Some("prod"), Some("prod"), Some("dev"), None]),
        rules,
    }
}

fn yaml(p: &PolicySpec) -> String {
    let mut out = String::from("---\napiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\n");
    match p.namespace {
        Some(ns) => out.push_str(&format!(
            "metadata: {{name: {}, namespace: {ns}}}\n",
            p.name
        )),
        None => out.push_str(&format!("metadata: {{name: {}}}\n", p.name)),
    }
    out.push_str(&format!(
        "spec:\n  action: {}\n  mode: {}\n",
        p.action,
        p.mode.as_str()
    ));
    if let Some(sel) = &p.selector {
        out.push_str(&format!(
            "  selector: {{spiffeIds: [{}]}}\n",
            sel.join(", ")
        ));
    }
    if p.rules.is_empty() {
        out.push_str("  rules: []\n");
    } else {
        out.push_str("  rules:\n");
    }
    let fields = |fs: &[FieldSpec]| {
        fs.iter()
            .map(|f| format!("{}: [{}]", f.yaml_key(), f.pats.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for r in &p.rules {
        out.push_str("  - {");
        let mut parts = Vec::new();
        if !r.from.is_empty() {
            let srcs: Vec<String> = r
                .from
                .iter()
                .map(|s| format!("{{source: {{{}}}}}", fields(s)))
                .collect();
            parts.push(format!("from: [{}]", srcs.join(", ")));
        }
        if !r.to.is_empty() {
            let ops: Vec<String> =
                r.to.iter()
                    .map(|o| format!("{{operation: {{{}}}}}", fields(o)))
                    .collect();
            parts.push(format!("to: [{}]", ops.join(", ")));
        }
        if !r.when.is_empty() {
            let conds: Vec<String> = r
                .when
                .iter()
                .map(|c| {
                    format!(
                        "{{key: \"{}\", {}: [{}]}}",
                        c.key,
                        if c.not { "notValues" } else { "values" },
                        c.values.join(", ")
                    )
                })
                .collect();
            parts.push(format!("when: [{}]", conds.join(", ")));
        }
        out.push_str(&parts.join(", "));
        out.push_str("}\n");
    }
    out
}

/// A request and what the reference reads from it.
struct Case {
    req: Request,
    path_normal: &'static str,
    host_full: &'static str,
    host_name: &'static str,
}

fn gen_request(g: &mut Gen) -> Case {
    let (raw_path, path_normal) = *g.pick(PATHS);
    let (raw_host, host_full, host_name) = *g.pick(HOSTS);
    let mut headers = Vec::new();
    if g.chance(70) {
        headers.push(("x-tenant".to_string(), g.pick(TENANTS).to_string()));
    }
    Case {
        req: Request {
            id: "r".into(),
            source: Peer {
                principal: g.chance(85).then(|| g.pick(PRINCIPALS).to_string()),
                ip: Some(std::net::IpAddr::from(*g.pick(IPS))),
                port: Some(40000),
            },
            destination: Peer {
                principal: Some(g.pick(DESTINATIONS).to_string()),
                ip: Some(std::net::IpAddr::from([10, 9, 9, 9])),
                port: Some(*g.pick(PORTS)),
            },
            host: raw_host.into(),
            method: g.pick(METHODS).to_string(),
            path: raw_path.into(),
            headers,
            ..Request::default()
        },
        path_normal,
        host_full,
        host_name,
    }
}

fn unquote(p: &str) -> String {
    p.trim_matches('"').to_string()
}

fn pat_of(p: &str) -> Pat {
    let p = unquote(p);
    if p == "*" {
        Pat::Any
    } else if let Some(x) = p.strip_suffix('*') {
        Pat::Prefix(x.into())
    } else if let Some(x) = p.strip_prefix('*') {
        Pat::Suffix(x.into())
    } else {
        Pat::Exact(p)
    }
}

fn in_block(ip: [u8; 4], block: &str) -> bool {
    let (_, net, len) = BLOCKS
        .iter()
        .find(|(b, _, _)| *b == block)
        .expect("known block");
    let a = u32::from_be_bytes(ip);
    let n = u32::from_be_bytes(*net);
    let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == n & mask
}

fn namespace_of(id: &str) -> Option<&str> {
    let parts: Vec<&str> = id.strip_prefix("spiffe://")?.split('/').collect();
    parts
        .iter()
        .position(|s| *s == "ns")
        .and_then(|i| parts.get(i + 1).copied())
}

/// Does one field hold for the request? Absent values match no positive
/// field and every negative one.
fn field_holds(f: &FieldSpec, c: &Case) -> bool {
    let r = &c.req;
    let any = |value: Option<&str>, ci: bool| {
        value.is_some_and(|v| f.pats.iter().any(|p| pat_of(p).matches(v, ci)))
    };
    let hit = match f.key {
        "principals" => any(r.source.principal.as_deref(), false),
        "namespaces" => any(r.source.principal.as_deref().and_then(namespace_of), false),
        "ipBlocks" => f.pats.iter().any(|b| {
            let ip = match r.source.ip {
                Some(std::net::IpAddr::V4(v4)) => v4.octets(),
                _ => return false,
            };
            in_block(ip, &unquote(b))
        }),
        "methods" => any(Some(&r.method), false),
        "paths" => any(Some(c.path_normal), false),
        "hosts" => any(Some(c.host_full), true) || any(Some(c.host_name), true),
        "ports" => f
            .pats
            .iter()
            .any(|p| r.destination.port.map(|x| x.to_string()) == Some(unquote(p))),
        other => panic!("unknown field {other}"),
    };
    hit != f.not
}

fn rule_matches(rule: &RuleSpec, c: &Case) -> bool {
    let from = rule.from.is_empty()
        || rule
            .from
            .iter()
            .any(|s| s.iter().all(|f| field_holds(f, c)));
    let to = rule.to.is_empty() || rule.to.iter().any(|o| o.iter().all(|f| field_holds(f, c)));
    let when = rule.when.iter().all(|cond| {
        let values: Vec<&str> = match cond.key {
            "source.principal" => c.req.source.principal.as_deref().into_iter().collect(),
            _ => c
                .req
                .headers
                .iter()
                .filter(|(k, _)| k == "x-tenant")
                .map(|(_, v)| v.as_str())
                .collect(),
        };
        let hit = values
            .iter()
            .any(|v| cond.values.iter().any(|p| pat_of(p).matches(v, false)));
        hit != cond.not
    });
    from && to && when
}

fn full_name(p: &PolicySpec) -> String {
    match p.namespace {
        Some(ns) => format!("{ns}/{}", p.name),
        None => p.name.clone(),
    }
}

fn applies(p: &PolicySpec, c: &Case) -> bool {
    let dest = c.req.destination.principal.as_deref().unwrap_or("");
    if let Some(ns) = p.namespace {
        if namespace_of(dest) != Some(ns) {
            return false;
        }
    }
    p.selector
        .as_ref()
        .is_none_or(|sel| sel.iter().any(|s| pat_of(s).matches(dest, false)))
}

/// The first matching rule's id, when the policy applies and matches.
fn first_rule(p: &PolicySpec, c: &Case) -> Option<String> {
    p.rules
        .iter()
        .position(|r| rule_matches(r, c))
        .map(|i| format!("rules[{i}]"))
}

/// (outcome, reason, policy, rule, mode, audit policies)
type Verdict = (
    Outcome,
    Reason,
    Option<String>,
    Option<String>,
    Mode,
    Vec<String>,
);

fn reference(policies: &[PolicySpec], c: &Case) -> Verdict {
    let mut sorted: Vec<&PolicySpec> = policies.iter().collect();
    sorted.sort_by_key(|p| full_name(p));
    let audits: Vec<String> = sorted
        .iter()
        .filter(|p| p.action == "AUDIT" && applies(p, c) && first_rule(p, c).is_some())
        .map(|p| full_name(p))
        .collect();
    let verdict = |o, r, p: Option<&PolicySpec>, rule: Option<String>| -> Verdict {
        (
            o,
            r,
            p.map(full_name),
            rule,
            p.map_or(Mode::Enforce, |p| p.mode),
            audits.clone(),
        )
    };
    let of = |action: &str, mode: Mode| -> Vec<&PolicySpec> {
        sorted
            .iter()
            .copied()
            .filter(|p| p.action == action && p.mode == mode && applies(p, c))
            .collect()
    };
    // 2. The first enforcing DENY that matches denies.
    for p in of("DENY", Mode::Enforce) {
        if let Some(rule) = first_rule(p, c) {
            return verdict(Outcome::Deny, Reason::DeniedByPolicy, Some(p), Some(rule));
        }
    }
    // 3. Enforcing ALLOW policies apply: one must match.
    let allow_enforce = of("ALLOW", Mode::Enforce);
    let allowed_by = allow_enforce
        .iter()
        .find_map(|p| first_rule(p, c).map(|r| (*p, r)));
    if !allow_enforce.is_empty() && allowed_by.is_none() {
        return verdict(
            Outcome::Deny,
            Reason::NoAllowMatch,
            Some(allow_enforce[0]),
            None,
        );
    }
    // 4. The shadow verdict: audit-mode DENY, then audit-mode ALLOW.
    for p in of("DENY", Mode::Audit) {
        if let Some(rule) = first_rule(p, c) {
            return verdict(Outcome::Audit, Reason::AuditWouldDeny, Some(p), Some(rule));
        }
    }
    let allow_audit = of("ALLOW", Mode::Audit);
    if !allow_audit.is_empty()
        && allowed_by.is_none()
        && allow_audit.iter().all(|p| first_rule(p, c).is_none())
    {
        return verdict(
            Outcome::Audit,
            Reason::AuditWouldDeny,
            Some(allow_audit[0]),
            None,
        );
    }
    match allowed_by {
        Some((p, rule)) => verdict(Outcome::Allow, Reason::AllowedByPolicy, Some(p), Some(rule)),
        None => verdict(Outcome::Allow, Reason::NoPolicy, None, None),
    }
}

#[test]
fn optimised_evaluator_agrees_with_the_reference() {
    let mut g = Gen(0x6b65_7963_6172_6421);
    let mut decided = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..400 {
        let policies: Vec<PolicySpec> =
            (0..1 + g.below(8)).map(|i| gen_policy(&mut g, i)).collect();
        let text: String = policies.iter().map(yaml).collect();
        let set = compile_str("gen.yaml", &text, Mode::Enforce)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{text}"));
        let authz = Authorizer::with_policies(set);
        for _ in 0..60 {
            let c = gen_request(&mut g);
            let want = reference(&policies, &c);
            let d = authz.check(&c.req);
            let got: Verdict = (
                d.outcome,
                d.reason,
                d.policy.as_deref().map(str::to_string),
                d.rule.as_deref().map(str::to_string),
                d.mode,
                d.audit_policies.iter().map(|p| p.to_string()).collect(),
            );
            assert_eq!(got, want, "round {round}\nrequest: {:?}\n{text}", c.req);
            *decided.entry(d.reason.as_str().to_string()).or_default() += 1;
        }
    }
    // The generator reaches every verdict the engine can give here.
    for reason in [
        "denied_by_policy",
        "no_allow_match",
        "allowed_by_policy",
        "no_policy",
        "audit_would_deny",
    ] {
        assert!(
            decided.get(reason).copied().unwrap_or(0) > 100,
            "{reason}: {decided:?}"
        );
    }
}
