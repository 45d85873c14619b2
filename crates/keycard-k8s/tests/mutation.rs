#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A deterministic mutation run over the manifest parser, in every CI run:
//! thousands of damaged manifests must each give objects or errors with a
//! line, never a panic. (Coverage-guided fuzzing lives in `fuzz/`.)

use keycard_k8s::{parse_str, LoadOptions};

const SEEDS: &[&str] = &[
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: nginx@sha256:abc\n        ports: [{containerPort: 80, name: http}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: ClusterIP, ports: [{port: 80}]}\n",
    "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: n}\n  spec: {containers: [{name: c, image: x}]}\n",
    "{\"apiVersion\":\"batch/v1\",\"kind\":\"CronJob\",\"metadata\":{\"name\":\"c\"},\"spec\":{\"jobTemplate\":{\"spec\":{\"template\":{\"spec\":{\"containers\":[]}}}}}}\n",
    "a: &x {b: [1, 2, *y]}\nc: *x\n--- |\n  text\n...\n%YAML 1.2\n---\nkey: 'quoted # not a comment'\n",
];

const TOKENS: &[&str] = &[
    "[", "]", "{", "}", ":", "- ", "---\n", "...\n", "&a ", "*a", "'", "\"", "\t", "\n", "#",
    "!!str ", "? ", "|\n", ">-\n", "\u{0}", "\u{feff}", "\\", "%",
];

/// Deterministic, so a failure reproduces.
use keycard_core::XorShift as Rng;

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(s.len() + 1);
        match rng.below(4) {
            0 if !s.is_empty() => {
                let end = (at + rng.below(20)).min(s.len());
                s.drain(at.min(end)..end);
            }
            1 => {
                let tok = TOKENS[rng.below(TOKENS.len())];
                for (i, c) in tok.chars().enumerate() {
                    s.insert((at + i).min(s.len()), c);
                }
            }
            2 if !s.is_empty() => {
                let i = at.min(s.len() - 1);
                s[i] = char::from_u32(32 + rng.below(95) as u32).unwrap_or(' ');
            }
            _ => {
                // Duplicate a slice: repetition and nesting.
                let end = (at + rng.below(40)).min(s.len());
                let piece: Vec<char> = s[at.min(end)..end].to_vec();
                for (i, c) in piece.into_iter().enumerate() {
                    s.insert((end + i).min(s.len()), c);
                }
            }
        }
    }
    s.into_iter().collect()
}

#[test]
fn damaged_manifests_never_panic_and_errors_have_lines() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let opts = LoadOptions::default();
    let mut errors = 0;
    for i in 0..4000 {
        let seed = SEEDS[i % SEEDS.len()];
        let text = mutate(&mut rng, seed);
        let name = if i % 5 == 0 { "m.json" } else { "m.yaml" };
        let (objects, errs) = parse_str(name, &text, &opts);
        let lines = text.lines().count().max(1);
        for o in &objects {
            assert!(!o.kind().is_empty() && !o.api_version().is_empty());
            assert!(o.source.line >= 1 && o.source.line <= lines, "{text:?}");
            let _ = o.pod_template();
        }
        for e in &errs {
            errors += 1;
            if let Some(l) = e.line {
                assert!(
                    l >= 1 && l <= lines + 1,
                    "line {l} out of range for {text:?}: {e}"
                );
            }
        }
    }
    // The mutations must actually exercise the error paths.
    assert!(
        errors > 1000,
        "only {errors} errors: the mutator is too gentle"
    );
}
