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
//! fast path decided.

use keycard_k8s::{parse_str, LoadOptions};
use keycard_policy::PolicySetBuilder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: profile_eval FILE [ROUNDS] [KIND]");
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
    let (mut evaluations, mut findings) = (0usize, 0usize);
    for _ in 0..rounds {
        for (i, o) in objs.iter().enumerate() {
            if kind.is_some_and(|k| k != o.kind()) {
                continue;
            }
            let f = ev.evaluate_nth(i, o).unwrap();
            evaluations += 1;
            findings += std::hint::black_box(f).len();
        }
    }
    println!(
        "{evaluations} evaluations, {findings} findings, {} by the fast path",
        ev.fast_path_evaluations()
    );
}
