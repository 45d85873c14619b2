//! In-process policy decision for a 100-rule policy set.
//!
//! 20 policies x 5 rules (4 ALLOW policies with principals, namespaces,
//! methods, paths, ports, headers and posture-free conditions; DENY
//! policies on paths and ip blocks). The allowed request matches the last
//! ALLOW rule, so every DENY rule and most ALLOW rules are tried first.
//!
//! `allow_unnormalised_path` is the allowed request spelled
//! `/api//v99/./items`, which pays for path normalisation.
//!
//! For instruction counts, `KEYCARD_BENCH_ITERS=N` skips criterion and
//! makes exactly N decisions of `KEYCARD_BENCH_CASE` (`allow`, `deny` or
//! `unnormalised`), so that an instruction count (`perf stat -e
//! instructions`, or `valgrind --tool=cachegrind --cache-sim=no` where the
//! machine has no counters) with N and with 0 gives the cost of one
//! decision: (count(N) - count(0)) / N.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keycard_proxy::{compile_str, Authorizer, Mode, Peer, Request};

fn policies() -> String {
    let mut out = String::new();
    for p in 0..20 {
        let deny = p % 5 == 0;
        out.push_str(&format!(
            "---\napiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{p:02}}}\nspec:\n  action: {}\n  rules:\n",
            if deny { "DENY" } else { "ALLOW" }
        ));
        for r in 0..5 {
            let n = p * 5 + r;
            if deny {
                out.push_str(&format!(
                    "  - from: [{{source: {{ipBlocks: [\"192.168.{n}.0/24\"]}}}}]\n    to: [{{operation: {{paths: [\"/admin{n}/*\"], methods: [DELETE, PUT]}}}}]\n"
                ));
            } else {
                out.push_str(&format!(
                    "  - from: [{{source: {{principals: [\"spiffe://example.org/ns/ns{n}/sa/client{n}\", \"spiffe://example.org/ns/ns{n}/sa/other*\"], notNamespaces: [quarantine]}}}}]\n    to: [{{operation: {{methods: [GET, POST], paths: [\"/api/v{n}/*\", \"*/status{n}\"], ports: [\"8080\"]}}}}]\n    when: [{{key: \"request.headers[x-tenant]\", values: [\"tenant-{n}\", \"shared\"]}}]\n"
                ));
            }
        }
    }
    out
}

fn request(n: usize) -> Request {
    Request {
        id: "bench".into(),
        source: Peer {
            principal: Some(format!("spiffe://example.org/ns/ns{n}/sa/client{n}")),
            ip: Some(
                "10.1.2.3"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([10, 1, 2, 3])),
            ),
            port: Some(40000),
        },
        destination: Peer {
            principal: Some("spiffe://example.org/ns/prod/sa/api".into()),
            ip: Some(std::net::IpAddr::from([10, 9, 9, 9])),
            port: Some(8080),
        },
        host: "api.prod.svc".into(),
        method: "GET".into(),
        path: format!("/api/v{n}/items?limit=10"),
        headers: vec![
            ("x-tenant".into(), "shared".into()),
            ("user-agent".into(), "bench".into()),
            ("accept".into(), "application/json".into()),
        ],
        ..Request::default()
    }
}

fn bench(c: &mut Criterion) {
    let Ok(set) = compile_str("bench.yaml", &policies(), Mode::Enforce) else {
        eprintln!("the bench policies do not compile");
        return;
    };
    assert_eq!(set.rule_count(), 100);
    let authz = Authorizer::with_policies(set);
    // Last ALLOW rule (policy p19, rule 4): n = 99.
    let allowed = request(99);
    assert!(authz.check(&allowed).is_allowed());
    let mut denied = request(99);
    denied.source.principal = Some("spiffe://example.org/ns/x/sa/nobody".into());
    assert!(!authz.check(&denied).is_allowed());
    let mut unnormalised = request(99);
    unnormalised.path = "/api//v99/./items?limit=10".into();
    assert!(authz.check(&unnormalised).is_allowed());
    if let Some(n) = std::env::var("KEYCARD_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let case = std::env::var("KEYCARD_BENCH_CASE").unwrap_or_default();
        let req = match case.as_str() {
            "deny" => &denied,
            "unnormalised" => &unnormalised,
            _ => &allowed,
        };
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            black_box(authz.check(black_box(req)));
        }
        let spent = t0.elapsed();
        if n > 0 {
            eprintln!(
                "{n} decisions ({}): {:.0} ns each",
                if case.is_empty() {
                    "allow"
                } else {
                    case.as_str()
                },
                spent.as_nanos() as f64 / n as f64
            );
        }
        std::process::exit(0);
    }
    let mut g = c.benchmark_group("decision_100_rules");
    g.bench_function("allow_last_rule", |b| {
        b.iter(|| black_box(authz.check(black_box(&allowed))))
    });
    g.bench_function("allow_unnormalised_path", |b| {
        b.iter(|| black_box(authz.check(black_box(&unnormalised))))
    });
    g.bench_function("deny_no_match", |b| {
        b.iter(|| black_box(authz.check(black_box(&denied))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
