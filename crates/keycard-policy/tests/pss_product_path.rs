#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The pod-security fixtures again, but through the path `keycard check`
//! takes: the loader reads each fixture file, a `PolicySet` is built for the
//! pack and version exactly as `--pack pss-LEVEL --pss-version v1.N` builds
//! it, and the evaluator's findings decide. (`pss_conformance.rs` checks the
//! Rego packages directly, with the check each fixture names.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keycard_k8s::{load_paths, LoadOptions};
use keycard_policy::{Evaluator, PolicySetBuilder};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/pod-security"
);

fn fixtures() -> Vec<(String, u32, bool, PathBuf)> {
    let mut out = Vec::new();
    for level in ["baseline", "restricted"] {
        for v in 0..=37u32 {
            for (outcome, pass) in [("pass", true), ("fail", false)] {
                let dir = Path::new(FIXTURES)
                    .join(level)
                    .join(format!("v1.{v}"))
                    .join(outcome);
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut files: Vec<_> = rd.map(|e| e.unwrap().path()).collect();
                files.sort();
                for f in files {
                    out.push((level.to_string(), v, pass, f));
                }
            }
        }
    }
    out
}

#[test]
fn every_fixture_through_check_s_path() {
    let all = fixtures();
    assert_eq!(
        all.len(),
        4537,
        "pod-security fixtures missing from {FIXTURES}"
    );
    let mut sets: BTreeMap<(String, u32), Evaluator> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (level, v, pass, file) in &all {
        let ev = sets.entry((level.clone(), *v)).or_insert_with(|| {
            PolicySetBuilder::new()
                .pack(&format!("pss-{level}"))
                .pss_version(*v)
                .build()
                .unwrap()
                .evaluator()
        });
        let loaded = load_paths(&[file], &LoadOptions::default());
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.objects.len(), 1, "{}", file.display());
        let findings = ev.evaluate(&loaded.objects[0]).unwrap();
        if findings.is_empty() != *pass {
            let rules: Vec<_> = findings.iter().map(|f| f.rule.as_str()).collect();
            wrong.push(format!("{} ({level} v1.{v}): {rules:?}", file.display()));
        } else if let Some(f) = findings.first() {
            // Findings carry the metadata a report needs.
            assert!(f.rule.starts_with("pss-"), "{}", f.rule);
            assert!(
                !f.remediation.is_empty() && !f.title.is_empty(),
                "{}",
                f.rule
            );
            assert_eq!(f.file, file.display().to_string());
        }
    }
    println!(
        "pss via check: {}/{} fixtures as expected",
        all.len() - wrong.len(),
        all.len()
    );
    assert!(
        wrong.is_empty(),
        "{} fixtures wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
