#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Conformance against np-guard netpol-analyzer's expected connlists.
//!
//! Every plain `<case>_connlist_output.txt` (no tool-option suffix, with a
//! matching `tests/<case>/` input directory) is evaluated and compared line
//! by line. The floor is a ratchet: raise it when more cases pass.

use std::path::{Path, PathBuf};

use keycard_flows::{evaluate, format_report, Cluster};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/netpol-analyzer"
);

/// Lowest number of exactly matching cases this crate must keep.
const FLOOR: usize = 135;

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
    let mut objects = loaded.objects;
    recover_list_items(&loaded.errors, &mut objects);
    let (cluster, _diags) = Cluster::from_objects(&objects);
    format_report(&cluster, &evaluate(&cluster), false)
}

/// kubectl writes `PodList`/`NamespaceList` items without `kind` and
/// `apiVersion`; the shared loader rejects such items. Until it infers them
/// from the list kind, recover them here from the files it complained about.
fn recover_list_items(errors: &[keycard_k8s::LoadError], objects: &mut Vec<keycard_k8s::Object>) {
    let mut files: Vec<&str> = errors
        .iter()
        .filter(|e| e.message.contains("has no kind") || e.message.contains("has no apiVersion"))
        .map(|e| e.file.as_str())
        .collect();
    files.sort();
    files.dedup();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let docs: Vec<String> = if text.trim_start().starts_with('{') {
            vec![text]
        } else {
            text.split("\n---").map(str::to_string).collect()
        };
        for d in docs {
            let Ok(v) = yaml_serde::from_str::<serde_json::Value>(&d) else {
                continue;
            };
            let Some(kind) = v.get("kind").and_then(|k| k.as_str()) else {
                continue;
            };
            let Some(item_kind) = kind.strip_suffix("List") else {
                continue;
            };
            for it in v
                .get("items")
                .and_then(|i| i.as_array())
                .into_iter()
                .flatten()
            {
                if it.get("kind").is_some() && it.get("apiVersion").is_some() {
                    continue;
                }
                let mut it = it.clone();
                let Some(m) = it.as_object_mut() else {
                    continue;
                };
                m.entry("kind").or_insert_with(|| item_kind.into());
                m.entry("apiVersion").or_insert_with(|| "v1".into());
                objects.push(keycard_k8s::Object::new(it, f.into(), 1));
            }
        }
    }
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
        let got: Vec<&str> = got.lines().filter(|l| !l.trim().is_empty()).collect();
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

#[test]
fn netpol_analyzer_connlist_json() {
    let root = Path::new(DATA);
    if !root.is_dir() {
        return;
    }
    let mut passed = 0;
    let mut failed = Vec::new();
    for (case, txt) in plain_cases(root) {
        let json_path = txt.with_extension("json");
        let Ok(text) = std::fs::read_to_string(&json_path) else {
            continue;
        };
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        let loaded = keycard_k8s::load_paths(
            &[root.join("tests").join(&case)],
            &keycard_k8s::LoadOptions::default(),
        );
        let mut objects = loaded.objects;
        recover_list_items(&loaded.errors, &mut objects);
        let (cluster, _) = Cluster::from_objects(&objects);
        let got = keycard_flows::format_json(&evaluate(&cluster));
        if got == expected {
            passed += 1;
        } else {
            failed.push(case);
        }
    }
    println!(
        "netpol conformance (json): {passed}/{} plain connlist cases match exactly",
        passed + failed.len()
    );
    for f in &failed {
        println!("  failing: {f}");
    }
    assert!(
        passed >= JSON_FLOOR,
        "json conformance fell below {JSON_FLOOR}"
    );
}

/// Ratchet for the JSON comparison.
const JSON_FLOOR: usize = 71;
