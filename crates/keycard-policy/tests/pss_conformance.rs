#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Conformance of the built-in Pod Security Standards packs (`packs/pss`)
//! against the fixtures of Kubernetes' pod-security-admission, for every
//! version v1.0..v1.37 and both levels.
//!
//! A fixture under `LEVEL/v1.N/pass/` must produce no finding at LEVEL and
//! version N; one under `fail/` must produce at least one, and among them one
//! from the check the file stem names (so that a fixture is not "passed" by an
//! unrelated check firing by accident).
//!
//! The packs are evaluated exactly as the engine calls them: one package per
//! check, `input.pod` holding the pod's metadata and spec, `input.pss_version`
//! the minor version and `input.pss_level` the level; the restricted level
//! evaluates every baseline package as well.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use regorus::{Engine, Value};

const PACK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packs/pss");
const FIXTURE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/pod-security"
);
/// The number of fixtures upstream ships; a smaller count means the data is
/// missing or was not walked, which must not pass silently.
const EXPECTED_FIXTURES: usize = 4537;
const LEVELS: [&str; 2] = ["baseline", "restricted"];
const MAX_VERSION: u32 = 37;

/// Every `.rego` file below `dir`, sorted, unit-test files included or not.
fn rego_files(dir: &Path, with_tests: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".rego") && (with_tests || !name.ends_with("_test.rego")) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The package a Rego file declares.
fn package_of(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .expect("a package line")
        .trim()
        .to_string()
}

struct Pack {
    /// Package names (without `data.`) of the checks of each level.
    checks: [Vec<String>; 2],
    /// One query per level binding `findings` to `{package: deny set}` for all
    /// its checks.
    queries: [String; 2],
}

fn load_pack() -> (Engine, Pack) {
    let mut engine = Engine::new();
    let mut packages = Vec::new();
    for path in rego_files(Path::new(PACK_DIR), false) {
        let text = std::fs::read_to_string(&path).unwrap();
        packages.push(package_of(&text));
        engine
            .add_policy(path.display().to_string(), text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let baseline: Vec<String> = packages
        .iter()
        .filter(|p| p.starts_with("keycard.pss.baseline."))
        .cloned()
        .collect();
    let restricted_only: Vec<String> = packages
        .iter()
        .filter(|p| p.starts_with("keycard.pss.restricted."))
        .cloned()
        .collect();
    assert!(baseline.len() >= 12, "baseline checks: {baseline:?}");
    assert!(
        restricted_only.len() >= 7,
        "restricted checks: {restricted_only:?}"
    );
    let restricted: Vec<String> = baseline.iter().chain(&restricted_only).cloned().collect();
    let query = |checks: &[String]| {
        let fields: Vec<String> = checks
            .iter()
            .map(|p| format!("{p:?}: data.{p}.deny"))
            .collect();
        format!("findings := {{\n{}\n}}", fields.join(",\n"))
    };
    let queries = [query(&baseline), query(&restricted)];
    (
        engine,
        Pack {
            checks: [baseline, restricted],
            queries,
        },
    )
}

struct Fixture {
    path: PathBuf,
    level: usize,
    version: u32,
    expect_pass: bool,
    /// The check named by the file stem, lower case without underscores.
    check: String,
    input: Value,
}

fn load_fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for (level, level_name) in LEVELS.iter().enumerate() {
        for version in 0..=MAX_VERSION {
            for (outcome, expect_pass) in [("pass", true), ("fail", false)] {
                let dir = Path::new(FIXTURE_DIR)
                    .join(level_name)
                    .join(format!("v1.{version}"))
                    .join(outcome);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                        continue;
                    }
                    let text = std::fs::read_to_string(&path).unwrap();
                    let pod: serde_json::Value = yaml_serde::from_str(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    let input = serde_json::json!({
                        "object": pod,
                        "pod": {"metadata": pod["metadata"], "spec": pod["spec"]},
                        "pss_version": version,
                        "pss_level": level_name,
                    });
                    let stem = path.file_stem().unwrap().to_string_lossy();
                    let check = stem
                        .trim_end_matches(|c: char| c.is_ascii_digit())
                        .replace('_', "")
                        .to_lowercase();
                    out.push(Fixture {
                        input: Value::from_json_str(&input.to_string()).unwrap(),
                        path,
                        level,
                        version,
                        expect_pass,
                        check,
                    });
                }
            }
        }
    }
    out
}

/// The checks (package leaf names, lower case without underscores) that deny
/// the fixture, evaluated with a single query.
fn denying_checks(
    engine: &mut Engine,
    pack: &Pack,
    fx: &Fixture,
) -> Result<BTreeSet<String>, String> {
    engine.set_input(fx.input.clone());
    let results = engine
        .eval_query(pack.queries[fx.level].clone(), false)
        .map_err(|e| e.to_string())?;
    let value = &results
        .result
        .first()
        .ok_or("query gave no result")?
        .bindings[&Value::from("findings")];
    let mut denying = BTreeSet::new();
    for package in &pack.checks[fx.level] {
        let deny = &value[&Value::from(package.as_str())];
        let set = deny
            .as_set()
            .map_err(|_| format!("{package}.deny is not a set: {deny}"))?;
        for finding in set.iter() {
            for key in ["msg", "path"] {
                if finding[&Value::from(key)].as_string().is_err() {
                    return Err(format!(
                        "{package}: finding without a string {key}: {finding}"
                    ));
                }
            }
        }
        if !set.is_empty() {
            let leaf = package.rsplit('.').next().unwrap_or_default();
            denying.insert(leaf.replace('_', ""));
        }
    }
    Ok(denying)
}

/// The check expected to deny a failing fixture: the one its stem names,
/// unless upstream lets a restricted check supersede it at that level and
/// version.
fn expected_check(fx: &Fixture) -> String {
    let restricted = LEVELS[fx.level] == "restricted";
    match fx.check.as_str() {
        "hostpathvolumes" if restricted => "restrictedvolumes".into(),
        "capabilitiesbaseline" if restricted && fx.version >= 22 => "capabilitiesrestricted".into(),
        "seccompprofilebaseline" if restricted && fx.version >= 19 => {
            "seccompprofilerestricted".into()
        }
        "procmount" if restricted && fx.version >= 35 => "procmountrestricted".into(),
        other => other.into(),
    }
}

fn check_fixture(engine: &mut Engine, pack: &Pack, fx: &Fixture) -> Option<String> {
    let label = fx
        .path
        .strip_prefix(FIXTURE_DIR)
        .unwrap_or(&fx.path)
        .display()
        .to_string();
    match denying_checks(engine, pack, fx) {
        Err(e) => Some(format!("{label}: evaluation error: {e}")),
        Ok(denying) if fx.expect_pass && !denying.is_empty() => {
            Some(format!("{label}: expected allowed, denied by {denying:?}"))
        }
        Ok(denying) if !fx.expect_pass && !denying.contains(&expected_check(fx)) => Some(format!(
            "{label}: expected denied by {}, denied by {denying:?}",
            expected_check(fx)
        )),
        Ok(_) => None,
    }
}

#[test]
fn pss_packs_conform_to_pod_security_admission() {
    let (engine, pack) = load_pack();
    let fixtures = load_fixtures();
    assert_eq!(fixtures.len(), EXPECTED_FIXTURES, "fixture count");

    let started = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let chunk = fixtures.len().div_ceil(threads);
    let mismatches: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = fixtures
            .chunks(chunk)
            .map(|part| {
                let mut engine = engine.clone();
                let pack = &pack;
                scope.spawn(move || {
                    part.iter()
                        .filter_map(|fx| check_fixture(&mut engine, pack, fx))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed();

    for m in &mismatches {
        println!("{m}");
    }
    println!(
        "pss conformance: {}/{} fixtures as expected ({:.1} ms, {:.1} us per fixture)",
        fixtures.len() - mismatches.len(),
        fixtures.len(),
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / fixtures.len() as f64,
    );
    assert!(mismatches.is_empty(), "{} mismatches", mismatches.len());
}

/// The `test_*` rules of the packs' `*_test.rego` files, which pin down the
/// finding shape, level overrides and version boundaries, all hold.
#[test]
fn pss_rego_unit_tests_pass() {
    let mut engine = Engine::new();
    let mut tests = Vec::new();
    for path in rego_files(Path::new(PACK_DIR), true) {
        let text = std::fs::read_to_string(&path).unwrap();
        if path.to_string_lossy().ends_with("_test.rego") {
            let package = package_of(&text);
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("test_") {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    tests.push(format!("data.{package}.test_{name}"));
                }
            }
        }
        engine
            .add_policy(path.display().to_string(), text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    assert!(tests.len() >= 5, "unit tests found: {tests:?}");
    let failed: Vec<String> = tests
        .iter()
        .filter(|t| !matches!(engine.eval_rule((*t).clone()), Ok(Value::Bool(true))))
        .cloned()
        .collect();
    println!(
        "pss unit tests: {}/{} passed",
        tests.len() - failed.len(),
        tests.len()
    );
    assert!(failed.is_empty(), "failed: {failed:?}");
}

/// Every check package carries the metadata the engine reports with its
/// findings: a title, a description and, under `custom`, a unique id, a
/// severity, the scope, a remediation and compliance controls.
#[test]
fn pss_packages_carry_metadata() {
    let mut ids = BTreeSet::new();
    let mut checked = 0;
    for path in rego_files(Path::new(PACK_DIR), false) {
        let text = std::fs::read_to_string(&path).unwrap();
        let package = package_of(&text);
        if !(package.starts_with("keycard.pss.baseline.")
            || package.starts_with("keycard.pss.restricted."))
        {
            continue;
        }
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim() != "# METADATA")
            .skip(1)
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect();
        let meta: serde_json::Value = yaml_serde::from_str(&block.join("\n"))
            .unwrap_or_else(|e| panic!("{package}: metadata is not YAML: {e}"));
        let text_field = |v: &serde_json::Value, k: &str| {
            let s = v[k].as_str().unwrap_or_default().trim().to_string();
            assert!(!s.is_empty(), "{package}: missing {k}");
            s
        };
        text_field(&meta, "title");
        text_field(&meta, "description");
        let custom = &meta["custom"];
        let id = text_field(custom, "id");
        let level = if package.starts_with("keycard.pss.baseline.") {
            "pss-baseline-"
        } else {
            "pss-restricted-"
        };
        assert!(
            id.starts_with(level),
            "{package}: id {id} should start with {level}"
        );
        assert!(ids.insert(id.clone()), "{package}: duplicate id {id}");
        let severity = text_field(custom, "severity");
        assert!(
            ["critical", "high", "medium", "low"].contains(&severity.as_str()),
            "{package}: severity {severity}"
        );
        assert_eq!(text_field(custom, "scope"), "pod", "{package}: scope");
        text_field(custom, "remediation");
        let controls = custom["controls"].as_object().expect("controls");
        for framework in ["cis", "nsa", "iso27001", "soc2"] {
            assert!(
                controls.get(framework).is_some_and(|v| v.is_array()),
                "{package}: controls.{framework}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 19, "check packages with metadata");
}
