#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Evaluates the objects of one manifest file with the default packs, for
//! instruction counts under a profiler:
//!
//!     profile_eval FILE [ROUNDS] [KIND]
//!
//! The file's objects are the inventory; every object (or every object of
//! KIND) is evaluated ROUNDS times (1 by default) on one evaluator. The cost
//! of one evaluation is the difference between two runs with different
//! ROUNDS, divided by the difference in evaluations, so that loading and
//! compiling cancel out. Prints the evaluations, findings and how many the
//! fast path decided. With `PROFILE_EVAL_OUT=PREFIX`, also writes the
//! findings as `keycard check` renders them (`PREFIX.json`, `.sarif`,
//! `.txt`) and serialized directly (`PREFIX.findings.json`), to compare
//! two builds byte for byte.

use keycard_k8s::{parse_str, LoadOptions};
use keycard_policy::report::CheckReport;
use keycard_policy::PolicySetBuilder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: profile_eval FILE [ROUNDS] [KIND]");
    let rounds: usize = args.get(2).map_or(1, |r| r.parse().expect("ROUNDS"));
    let kind = args.get(3);
    let text = std::fs::read_to_string(path).expect("read FILE");
    let (objs, errs) = parse_str(path, &text, &LoadOptions::default());
    assert!(errs.is_empty(), "{errs:?}");
    let set = PolicySetBuilder::new()
        .pack("pss-restricted")
        .pack("zero-trust")
        .inventory(&objs)
        .build()
        .unwrap();
    let mut ev = set.evaluator();
    let out = std::env::var("PROFILE_EVAL_OUT").ok();
    let (mut evaluations, mut findings) = (0usize, 0usize);
    let mut kept = Vec::new();
    for _ in 0..rounds {
        for (i, o) in objs.iter().enumerate() {
            if kind.is_some_and(|k| k != o.kind()) {
                continue;
            }
            let f = ev.evaluate_nth(i, o).unwrap();
            evaluations += 1;
            findings += f.len();
            if out.is_some() {
                kept.extend(f);
            } else {
                std::hint::black_box(f);
            }
        }
    }
    if let Some(prefix) = out {
        let write =
            |ext: &str, text: &[u8]| std::fs::write(format!("{prefix}.{ext}"), text).unwrap();
        write("findings.json", &serde_json::to_vec(&kept).unwrap());
        let report = CheckReport {
            findings: kept,
            objects: objs.len(),
            files: 1,
            ..Default::default()
        };
        let mut json = Vec::new();
        report.write_json(&mut json).unwrap();
        write("json", &json);
        write(
            "sarif",
            &serde_json::to_vec_pretty(&report.to_sarif()).unwrap(),
        );
        write("txt", report.to_human(true, false).as_bytes());
    }
    println!(
        "{evaluations} evaluations, {findings} findings, {} by the fast path",
        ev.fast_path_evaluations()
    );
}
