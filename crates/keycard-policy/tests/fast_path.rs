#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The built-in packs' native fast path against regorus alone: the same
//! findings (rule, policy, severity, message, path, value, in the same order)
//! or the same error, object by object, on
//!
//! - every Kubernetes pod-security fixture, at its own level and version and
//!   at the other level of the same version, with the pss-baseline and
//!   pss-restricted packs;
//! - generated corpora (`scripts/gen-corpus`, several seeds) with the default
//!   packs, default parameters and unusual ones;
//! - generated RBAC objects (Roles, ClusterRoles and their bindings, odd
//!   fields included) and hand-written RBAC edge cases.
//!
//! Each run also asserts that the fast path decided most objects, so that a
//! fast path that always defers to regorus does not pass unnoticed.

use std::path::{Path, PathBuf};
use std::process::Command;

use keycard_k8s::{parse_str, LoadOptions, Object};
use keycard_policy::{EvalError, Finding, PolicySet, PolicySetBuilder};
use serde_json::{json, Value as Json};

const FIXTURE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/pod-security"
);
const EXPECTED_FIXTURES: usize = 4537;
const MAX_VERSION: u32 = 37;

type Key = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn key(f: &Finding) -> Key {
    (
        f.rule.clone(),
        f.policy.clone(),
        format!("{:?}", f.severity),
        f.message.clone(),
        f.path.clone(),
        f.value.as_ref().map(|v| v.to_string()),
    )
}

fn keys(r: &Result<Vec<Finding>, EvalError>) -> Result<Vec<Key>, String> {
    match r {
        Ok(f) => Ok(f.iter().map(key).collect()),
        Err(e) => Err(format!("{}: {}", e.policy, e.message)),
    }
}

/// Evaluates every object with both paths and compares; returns (objects,
/// findings, objects the fast path decided).
fn compare(
    set: &PolicySet,
    objects: &[Object],
    with_index: bool,
    what: &str,
) -> (usize, usize, u64) {
    compare_counting(set, objects, with_index, what, &mut Default::default())
}

/// [`compare`], adding up the findings of each rule id into `per_rule`.
fn compare_counting(
    set: &PolicySet,
    objects: &[Object],
    with_index: bool,
    what: &str,
    per_rule: &mut std::collections::BTreeMap<String, usize>,
) -> (usize, usize, u64) {
    let reference = set.without_fast_path();
    let (mut fast, mut slow) = (set.evaluator(), reference.evaluator());
    let mut findings = 0;
    for (i, o) in objects.iter().enumerate() {
        let index = if with_index { i } else { usize::MAX };
        let a = keys(&fast.evaluate_nth(index, o));
        let b = keys(&slow.evaluate_nth(index, o));
        assert_eq!(
            a,
            b,
            "{what}: {} ({} {}): fast path (left) and regorus (right) differ",
            o.source,
            o.kind(),
            o.name()
        );
        for f in a.iter().flatten() {
            *per_rule.entry(f.0.clone()).or_default() += 1;
        }
        findings += a.map(|f| f.len()).unwrap_or(0);
    }
    assert_eq!(slow.fast_path_evaluations(), 0);
    eprintln!(
        "{what}: {} objects, {findings} findings, {} decided by the fast path",
        objects.len(),
        fast.fast_path_evaluations()
    );
    (objects.len(), findings, fast.fast_path_evaluations())
}

fn fixture_files(level: &str, version: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for outcome in ["pass", "fail"] {
        let dir = Path::new(FIXTURE_DIR)
            .join(level)
            .join(format!("v1.{version}"))
            .join(outcome);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.extension().and_then(|e| e.to_str()) == Some("yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn pod_security_fixtures_every_level_and_version() {
    let builds: Vec<(&str, PolicySet)> = ["baseline", "restricted"]
        .into_iter()
        .map(|level| {
            let set = PolicySetBuilder::new()
                .pack(&format!("pss-{level}"))
                .build()
                .unwrap();
            (level, set)
        })
        .collect();
    let mut files = 0;
    let (mut evaluated, mut findings, mut fast) = (0, 0, 0);
    for (fixture_level, _) in &builds {
        for version in 0..=MAX_VERSION {
            let paths = fixture_files(fixture_level, version);
            files += paths.len();
            let mut objects = Vec::new();
            for p in &paths {
                let text = std::fs::read_to_string(p).unwrap();
                let (objs, errs) =
                    parse_str(&p.display().to_string(), &text, &LoadOptions::default());
                assert!(errs.is_empty(), "{}: {errs:?}", p.display());
                objects.extend(objs);
            }
            // The fixture at its own level, and at the other one.
            for (level, set) in &builds {
                let set = set.with_pss_version(version);
                let (n, f, h) =
                    compare(&set, &objects, false, &format!("pss-{level} v1.{version}"));
                evaluated += n;
                findings += f;
                fast += h;
            }
        }
    }
    assert_eq!(
        files, EXPECTED_FIXTURES,
        "fixtures missing under {FIXTURE_DIR}"
    );
    assert!(findings > 5000, "{findings} findings");
    assert!(
        fast * 10 >= evaluated as u64 * 9,
        "the fast path decided only {fast} of {evaluated} evaluations"
    );
}

fn corpus(count: usize, seed: u64) -> Vec<Object> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/gen-corpus");
    let out = Command::new("python3")
        .arg(script)
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .output()
        .expect("python3 runs scripts/gen-corpus");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (objs, errs) = parse_str(
        &format!("corpus-{seed}.yaml"),
        &text,
        &LoadOptions::default(),
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert!(objs.len() >= count / 2, "{} objects", objs.len());
    objs
}

#[test]
fn generated_corpora_default_packs() {
    for seed in [1, 2, 3] {
        let objs = corpus(2000, seed);
        let set = PolicySetBuilder::new()
            .pack("pss-restricted")
            .pack("zero-trust")
            .inventory(&objs)
            .build()
            .unwrap();
        let (n, f, h) = compare(&set, &objs, true, &format!("seed {seed}"));
        assert!(f > n, "seed {seed}: {f} findings on {n} objects");
        assert!(
            h * 10 >= n as u64 * 7,
            "seed {seed}: fast path on {h} of {n}"
        );
        // Objects given without their inventory index convert on their own.
        compare(&set, &objs[..200], false, &format!("seed {seed}, no index"));
    }
}

#[test]
fn generated_corpus_other_levels_versions_and_parameters() {
    let objs = corpus(2000, 7);
    let params = serde_json::json!({
        "allowed_registries": ["registry.example.com", "ghcr.io/acme/", 5, "docker.io/library"],
        "require_image_digest": false,
        "allowed_host_paths": ["/var/log", "/", "relative"],
        "token_service_accounts": "checkout",
        "required_labels": ["owner", 3, "team"],
        "allowed_label_values": {"data-classification": ["public"], "tier": [], "owner": "x"},
        "network_policy_exempt_namespaces": "kube-system",
    });
    for (packs, params, version) in [
        (&["pss-baseline", "zero-trust"][..], None, 37),
        (
            &["pss-restricted", "zero-trust"][..],
            Some(params.clone()),
            37,
        ),
        (&["pss-restricted"][..], None, 18),
        (&["pss-baseline"][..], None, 24),
        (
            &["zero-trust"][..],
            Some(serde_json::json!({"required_labels": "owner"})),
            37,
        ),
    ] {
        let mut b = PolicySetBuilder::new()
            .inventory(&objs)
            .pss_version(version);
        for p in packs {
            b = b.pack(p);
        }
        if let Some(p) = params {
            b = b.params("params.yaml", p);
        }
        let set = b.build().unwrap();
        let (n, _, h) = compare(&set, &objs, true, &format!("{packs:?} v1.{version}"));
        assert!(h * 10 >= n as u64 * 5, "{packs:?}: fast path on {h} of {n}");
    }
}

/// The 10,000-object corpus `keycard check` is measured on (seed 1), default
/// packs and parameters: both paths agree object by object, and the total is
/// the count `keycard check` reports on it. Slow on regorus (about a minute
/// on a loaded machine): `cargo test --release --test fast_path -- --ignored`.
#[test]
#[ignore]
fn corpus_10k_as_keycard_check() {
    let objs = corpus(10_000, 1);
    let set = PolicySetBuilder::new()
        .pack("pss-restricted")
        .pack("zero-trust")
        .inventory(&objs)
        .build()
        .unwrap();
    let (n, f, h) = compare(&set, &objs, true, "10k seed 1");
    assert_eq!(n, 10_000);
    assert_eq!(f, 16_395);
    assert!(h * 10 >= n as u64 * 7, "fast path on {h} of {n}");
}

// ---- RBAC ---------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so the RBAC corpus needs
/// nothing outside the test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick(&mut self, xs: &[Json]) -> Json {
        xs[self.below(xs.len())].clone()
    }

    /// An array of up to `max` picks, or (now and then) an odd value.
    fn list(&mut self, xs: &[Json], max: usize) -> Json {
        if self.chance(8) {
            return self.pick(&[
                json!(null),
                json!("bind"),
                json!({"verbs": ["*"]}),
                json!(7),
            ]);
        }
        let n = self.below(max + 1);
        Json::Array((0..n).map(|_| self.pick(xs)).collect())
    }
}

/// Sets `key` on an object unless `value` is the marker for "absent".
fn put(m: &mut serde_json::Map<String, Json>, key: &str, value: Json) {
    if value != json!("<absent>") {
        m.insert(key.to_string(), value);
    }
}

/// Names: plain, Kubernetes' own, quotes and escapes `%q` must render, and
/// non-ASCII ones the fast path is allowed to leave to regorus.
fn rbac_names() -> Vec<Json> {
    vec![
        json!("reader"),
        json!("cluster-admin"),
        json!("admin"),
        json!("view"),
        json!("system:aggregate-to-edit"),
        json!("system:controller:clusterrole-aggregation-controller"),
        json!("acme-operator"),
        json!("ops \"quoted\""),
        json!("back\\slash\ttab"),
        json!(""),
        json!("caf\u{e9}"),
    ]
}

fn rbac_metadata(g: &mut Rng) -> Json {
    let mut m = serde_json::Map::new();
    let mut names = rbac_names();
    names.push(json!("<absent>"));
    names.push(json!(5));
    put(&mut m, "name", g.pick(&names));
    put(
        &mut m,
        "namespace",
        g.pick(&[
            json!("shop"),
            json!("build"),
            json!("<absent>"),
            json!("<absent>"),
            json!(""),
            json!(null),
            json!(3),
            json!("na\u{ef}ve"),
        ]),
    );
    let labels = g.pick(&[
        json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
        json!({"kubernetes.io/bootstrapping": "rbac-defaults", "team": "x"}),
        json!({"kubernetes.io/bootstrapping": "RBAC-defaults"}),
        json!({"kubernetes.io/bootstrapping": true}),
        json!({"app": "x"}),
        json!(null),
        json!("rbac-defaults"),
        json!("<absent>"),
    ]);
    put(&mut m, "labels", labels);
    Json::Object(m)
}

fn rbac_rule(g: &mut Rng) -> Json {
    if g.chance(6) {
        return g.pick(&[json!(null), json!("get pods"), json!(3), json!([])]);
    }
    let verbs = [
        json!("get"),
        json!("list"),
        json!("*"),
        json!("bind"),
        json!("Bind"),
        json!("ESCALATE"),
        json!("escalate"),
        json!("impersonate"),
        json!("IMPERSONATE"),
        json!("escalate "),
        json!("b\u{130}nd"),
        json!("\u{212a}ill"),
        json!("**"),
        json!(1),
        json!(null),
        json!(true),
        json!(["bind"]),
        json!({"escalate": true}),
        json!(1.5),
    ];
    let resources = [
        json!("pods"),
        json!("secrets"),
        json!("pods/*"),
        json!("*/scale"),
        json!("*"),
        json!("**"),
        json!(""),
        json!("pods/exec"),
        json!("clusterroles"),
        json!("rolebindings"),
        json!("users"),
        json!("s\u{ea}crets"),
        json!("s\u{ea}crets/*"),
        json!("q\"uote*"),
        json!(3),
        json!(null),
        json!(["*"]),
    ];
    let groups = [
        json!(""),
        json!("apps"),
        json!("*"),
        json!("rbac.authorization.k8s.io"),
        json!("apps*"),
        json!(0),
    ];
    let urls = [json!("*"), json!("/api/*"), json!("/healthz"), json!(false)];
    let mut m = serde_json::Map::new();
    if g.chance(85) {
        let v = g.list(&verbs, 4);
        m.insert("verbs".into(), v);
    }
    if g.chance(75) {
        let v = g.list(&resources, 3);
        m.insert("resources".into(), v);
    }
    if g.chance(70) {
        let v = g.list(&groups, 2);
        m.insert("apiGroups".into(), v);
    }
    if g.chance(15) {
        let v = g.list(&urls, 2);
        m.insert("nonResourceURLs".into(), v);
    }
    if g.chance(10) {
        m.insert("resourceNames".into(), json!(["*", "db-password"]));
    }
    Json::Object(m)
}

fn rbac_role(g: &mut Rng) -> Json {
    let kind = g.pick(&[json!("Role"), json!("ClusterRole"), json!("ClusterRole")]);
    let mut m = serde_json::Map::new();
    m.insert("apiVersion".into(), json!("rbac.authorization.k8s.io/v1"));
    m.insert("kind".into(), kind);
    m.insert("metadata".into(), rbac_metadata(g));
    if g.chance(10) {
        // An aggregated ClusterRole: the controller fills its rules.
        m.insert(
            "aggregationRule".into(),
            json!({"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate-to-ops": "true"}}]}),
        );
        let rules = g.pick(&[json!([]), json!(null), json!("<absent>")]);
        put(&mut m, "rules", rules);
    } else if g.chance(8) {
        let rules = g.pick(&[json!(null), json!({"verbs": ["*"]}), json!("*"), json!([])]);
        m.insert("rules".into(), rules);
    } else {
        let n = g.below(4);
        let rules = (0..n).map(|_| rbac_rule(g)).collect();
        m.insert("rules".into(), Json::Array(rules));
    }
    Json::Object(m)
}

fn rbac_subject(g: &mut Rng) -> Json {
    if g.chance(6) {
        return g.pick(&[json!(null), json!("ci"), json!(4), json!([])]);
    }
    let mut m = serde_json::Map::new();
    let kind = g.pick(&[
        json!("ServiceAccount"),
        json!("User"),
        json!("Group"),
        json!(""),
        json!(7),
        json!(null),
        json!("<absent>"),
    ]);
    put(&mut m, "kind", kind);
    let name = g.pick(&[
        json!("ci"),
        json!("system:masters"),
        json!("oncall"),
        json!("alice@example.com"),
        json!(""),
        json!("q\"uote"),
        json!("\u{fc}n\u{ef}"),
        json!(3),
        json!("<absent>"),
    ]);
    put(&mut m, "name", name);
    let ns = g.pick(&[
        json!("build"),
        json!("shop"),
        json!(""),
        json!(null),
        json!(5),
        json!("<absent>"),
        json!("<absent>"),
    ]);
    put(&mut m, "namespace", ns);
    if g.chance(40) {
        m.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
    }
    if g.chance(5) {
        // Values the finding carries back as they were read.
        m.insert(
            "extra".into(),
            json!({"weight": 1.5, "big": 12_345_678_901_234_567_890u64, "neg": -3, "list": [1, null, "x"]}),
        );
    }
    Json::Object(m)
}

fn rbac_binding(g: &mut Rng) -> Json {
    let kind = g.pick(&[json!("RoleBinding"), json!("ClusterRoleBinding")]);
    let mut m = serde_json::Map::new();
    m.insert("apiVersion".into(), json!("rbac.authorization.k8s.io/v1"));
    m.insert("kind".into(), kind);
    m.insert("metadata".into(), rbac_metadata(g));
    let role_ref = if g.chance(60) {
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"})
    } else if g.chance(10) {
        g.pick(&[
            json!(null),
            json!("cluster-admin"),
            json!([]),
            json!("<absent>"),
        ])
    } else {
        let mut r = serde_json::Map::new();
        let kind = g.pick(&[
            json!("ClusterRole"),
            json!("Role"),
            json!("clusterrole"),
            json!(5),
            json!("<absent>"),
        ]);
        put(&mut r, "kind", kind);
        let name = g.pick(&[
            json!("cluster-admin"),
            json!("Cluster-Admin"),
            json!("view"),
            json!("cluster-admin "),
            json!(null),
            json!("<absent>"),
        ]);
        put(&mut r, "name", name);
        Json::Object(r)
    };
    put(&mut m, "roleRef", role_ref);
    let subjects = if g.chance(8) {
        g.pick(&[
            json!(null),
            json!({"kind": "User", "name": "x"}),
            json!("ci"),
            json!("<absent>"),
        ])
    } else {
        let n = g.below(5);
        Json::Array((0..n).map(|_| rbac_subject(g)).collect())
    };
    put(&mut m, "subjects", subjects);
    Json::Object(m)
}

/// Hand-written edge cases, on top of the generated ones.
fn rbac_edge_cases() -> Vec<Json> {
    let role = |kind: &str, meta: Json, rules: Json| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules});
    let binding = |kind: &str, role_ref: Json, subjects: Json| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
               "metadata": {"name": "b", "namespace": "shop"}, "roleRef": role_ref, "subjects": subjects})
    };
    let boot = json!({"name": "system:controller:x", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}});
    let admin_ref = json!({"kind": "ClusterRole", "name": "cluster-admin"});
    vec![
        // An empty string is a named resource; only strings are named.
        role(
            "Role",
            json!({"name": "r", "namespace": "shop"}),
            json!([{"resources": [""], "verbs": ["bind"]}]),
        ),
        role(
            "Role",
            json!({"name": "r", "namespace": "shop"}),
            json!([{"resources": ["", ""], "verbs": ["escalate"]}]),
        ),
        role(
            "Role",
            json!({"name": "r", "namespace": "shop"}),
            json!([{"resources": [1, null], "verbs": ["impersonate"]}]),
        ),
        role(
            "Role",
            json!({"name": "r"}),
            json!([{"verbs": "bind"}, {"verbs": null}, {"verbs": [null, 1, "Bind"]}]),
        ),
        // Every wildcard of one rule, twice the same verb.
        role(
            "ClusterRole",
            json!({"name": "god"}),
            json!([{"apiGroups": ["*"], "resources": ["*", "pods/*"], "verbs": ["*", "*"], "nonResourceURLs": ["*"]}]),
        ),
        // Bootstrapped ClusterRoles are skipped, look-alikes are not.
        role(
            "ClusterRole",
            boot.clone(),
            json!([{"resources": ["*"], "verbs": ["escalate"]}]),
        ),
        role(
            "Role",
            boot,
            json!([{"resources": ["*"], "verbs": ["escalate"]}]),
        ),
        role(
            "ClusterRole",
            json!({"name": "system:evil"}),
            json!([{"resources": ["*"], "verbs": ["bind"]}]),
        ),
        role(
            "ClusterRole",
            json!({"name": "cluster-admin", "labels": null}),
            json!([{"verbs": ["*"]}]),
        ),
        // Kinds the rules do not read.
        role(
            "ConfigMap",
            json!({"name": "c"}),
            json!([{"verbs": ["*"], "resources": ["*"]}]),
        ),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "roleRef": admin_ref.clone(), "subjects": [{"kind": "User", "name": "x"}]}),
        // Bindings.
        binding(
            "ClusterRoleBinding",
            admin_ref.clone(),
            json!([{"kind": "Group", "name": "system:masters"}, {"kind": "Group", "name": "system:masters", "namespace": "x"}]),
        ),
        binding(
            "RoleBinding",
            admin_ref.clone(),
            json!([{}, {"namespace": ""}, {"namespace": 3, "name": "n"}, null, "s"]),
        ),
        binding(
            "RoleBinding",
            json!({"kind": "Role", "name": "cluster-admin"}),
            json!([{"kind": "User", "name": "x"}]),
        ),
        binding("ClusterRoleBinding", admin_ref.clone(), json!([])),
        binding(
            "ClusterRoleBinding",
            admin_ref,
            json!({"kind": "User", "name": "x"}),
        ),
        binding(
            "ClusterRoleBinding",
            json!(null),
            json!([{"kind": "User", "name": "x"}]),
        ),
    ]
}

/// Objects from JSON values, one file, one line each (`Object::new` keeps
/// odd metadata the loader would refuse).
fn objects_of(values: Vec<Json>, file: &str) -> Vec<Object> {
    let file: std::sync::Arc<str> = file.into();
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Object::new(v, file.clone(), i + 1))
        .collect()
}

/// RBAC objects first (generated, then the edge cases, then a few with
/// metadata the loader refuses), then a Namespace for each namespace they
/// name, so that the default-deny rules leave them to the fast path.
fn rbac_corpus(count: usize, seed: u64) -> (Vec<Object>, usize) {
    let mut g = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut values: Vec<Json> = (0..count)
        .map(|_| {
            if g.chance(55) {
                rbac_role(&mut g)
            } else {
                rbac_binding(&mut g)
            }
        })
        .collect();
    values.extend(rbac_edge_cases());
    for meta in [json!(null), json!("x"), json!([])] {
        values.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": [{"verbs": ["*", "bind"]}]}));
        values.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
                           "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "User", "name": "x"}]}));
    }
    let rbac = values.len();
    let mut namespaces = std::collections::BTreeSet::new();
    for v in &values {
        if let Some(ns) = v["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            namespaces.insert(ns.to_string());
        }
    }
    for ns in namespaces {
        values.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    (objects_of(values, &format!("rbac-{seed}.yaml")), rbac)
}

/// The RBAC twins against regorus on generated Roles, ClusterRoles and
/// bindings (wildcards, escalate/bind/impersonate in any case, bootstrapped
/// and look-alike roles, aggregated roles, cluster-admin bindings and the
/// allowed subjects, missing, null and mistyped fields at every level),
/// with default and unusual parameters, with and without dispatch by kind.
#[test]
fn rbac_twins_match_regorus() {
    let (objs, rbac) = rbac_corpus(1500, 11);
    let params = json!({
        "rbac_exempt_cluster_roles": ["view", 3, "system:*", "**", "", "acme-*"],
        "cluster_admin_subjects": [
            {"kind": "ServiceAccount", "name": "ci"},
            {"kind": "User", "name": "alice@example.com", "namespace": ""},
            {"kind": "Group", "name": "oncall", "namespace": "build"},
            {"kind": "", "name": ""},
            "system:masters",
            5,
        ],
    });
    let odd_params = json!({
        "rbac_exempt_cluster_roles": "*",
        "cluster_admin_subjects": {"kind": "Group", "name": "system:masters"},
    });
    let mut per_rule = std::collections::BTreeMap::new();
    for (what, params, dispatch) in [
        ("default", None, true),
        ("default, no dispatch", None, false),
        ("custom parameters", Some(params), true),
        ("odd parameters", Some(odd_params), true),
    ] {
        let mut b = PolicySetBuilder::new()
            .pack("pss-restricted")
            .pack("zero-trust")
            .inventory(&objs);
        if let Some(p) = params {
            b = b.params("params.yaml", p);
        }
        if !dispatch {
            b = b.without_dispatch();
        }
        let set = b.build().unwrap();
        let (n, f, h) = compare_counting(
            &set,
            &objs[..rbac],
            true,
            &format!("rbac, {what}"),
            &mut per_rule,
        );
        assert!(f > n / 2, "rbac, {what}: {f} findings on {n} objects");
        // Only names `%q` would escape unusually are left to regorus.
        assert!(
            h * 10 >= n as u64 * 8,
            "rbac, {what}: fast path on {h} of {n}"
        );
    }
    for rule in [
        "zt-rbac-wildcard",
        "zt-rbac-escalation-verbs",
        "zt-rbac-cluster-admin",
    ] {
        let n = per_rule.get(rule).copied().unwrap_or(0);
        assert!(n > 200, "{rule}: {n} findings");
    }
}
