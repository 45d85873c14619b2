#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The built-in packs' native fast path against regorus alone: the same
//! findings (rule, policy, severity, message, path, value, in the same order)
//! or the same error, object by object, on
//!
//! - every Kubernetes pod-security fixture, at its own level and version and
//!   at the other level of the same version, with the pss-baseline and
//!   pss-restricted packs;
//! - generated corpora (`scripts/gen-corpus`, several seeds) with the default
//!   packs, default parameters and unusual ones.
//!
//! Each run also asserts that the fast path decided most objects, so that a
//! fast path that always defers to regorus does not pass unnoticed.

use std::path::{Path, PathBuf};
use std::process::Command;

use keycard_k8s::{parse_str, LoadOptions, Object};
use keycard_policy::{EvalError, Finding, PolicySet, PolicySetBuilder};

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
