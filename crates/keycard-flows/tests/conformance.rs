#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Conformance against np-guard netpol-analyzer's expected connlists.
//!
//! Every plain `<case>_connlist_output.txt` (no tool-option suffix, with a
//! matching `tests/<case>/` input directory) is evaluated and compared line
//! by line. The floor is a ratchet: raise it when more cases pass.

use std::path::{Path, PathBuf};

use keycard_flows::{evaluate, format_connlist, Cluster};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/netpol-analyzer"
);

/// Lowest number of exactly matching cases this crate must keep.
const FLOOR: usize = 80;

/// Output names whose suffix is a tool option rather than part of the case.
fn is_plain(case: &str) -> bool {
    !["focus_workload", "explain", "exposure"]
        .iter()
        .any(|s| case.contains(s))
}

fn plain_cases(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let dir = root.join("test_outputs/connlist");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(case) = name.strip_suffix("_connlist_output.txt") else {
            continue;
        };
        if !is_plain(case) || !root.join("tests").join(case).is_dir() {
            continue;
        }
        out.push((case.to_string(), e.path()));
    }
    out.sort();
    out
}

pub fn run_case(root: &Path, case: &str) -> String {
    let loaded = keycard_k8s::load_paths(
        &[root.join("tests").join(case)],
        &keycard_k8s::LoadOptions::default(),
    );
    let (cluster, _diags) = Cluster::from_objects(&loaded.objects);
    format_connlist(&evaluate(&cluster), false)
}

#[test]
fn netpol_analyzer_connlists() {
    let root = Path::new(DATA);
    if !root.is_dir() {
        eprintln!("conformance data not found at {DATA}; skipping");
        return;
    }
    let cases = plain_cases(root);
    let only = std::env::var("NETPOL_CASE").ok();
    let mut failed = Vec::new();
    let mut passed = 0;
    for (case, expected_path) in &cases {
        if only.as_deref().is_some_and(|o| o != case) {
            continue;
        }
        let expected = std::fs::read_to_string(expected_path).unwrap();
        let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        let got = run_case(root, case);
        let got: Vec<&str> = got.lines().collect();
        if got == expected {
            passed += 1;
        } else {
            if only.is_some() {
                let missing: Vec<_> = expected.iter().filter(|l| !got.contains(l)).collect();
                let extra: Vec<_> = got.iter().filter(|l| !expected.contains(l)).collect();
                eprintln!("missing:\n{missing:#?}\nextra:\n{extra:#?}");
            }
            failed.push(case.clone());
        }
    }
    println!(
        "netpol conformance: {passed}/{} plain connlist cases match exactly",
        passed + failed.len()
    );
    for f in &failed {
        println!("  failing: {f}");
    }
    assert!(
        passed >= FLOOR,
        "conformance fell below the floor of {FLOOR}"
    );
}
