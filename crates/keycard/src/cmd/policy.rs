//! `keycard policy list|show|test`.

use std::time::Duration;

use keycard_policy::packs::{self, PACKS};
use keycard_policy::testing::{run_tests, run_tests_sources, TestOptions, TestOutcome, TestReport};
use keycard_policy::{parse_annotations, PolicySetBuilder};

use crate::cli::{PolicyTestArgs, TestOutput};

pub fn list() -> anyhow::Result<u8> {
    let mut out = String::new();
    for p in PACKS {
        let set = PolicySetBuilder::new().pack(p.name).build()?;
        out.push_str(&format!(
            "{:<16} {:>3} rules  {}\n",
            p.name,
            set.rule_count(),
            p.title
        ));
        for (path, text) in packs::rego_sources(p) {
            let info = parse_annotations(path, text)?;
            if !p
                .prefixes
                .iter()
                .any(|pre| format!("{}.", info.package).starts_with(pre))
            {
                continue;
            }
            if let Some(m) = info.package_meta {
                let sev = m.severity.map(|s| s.as_str()).unwrap_or("-");
                out.push_str(&format!(
                    "    {:<44} {:<8} {}\n",
                    m.id.unwrap_or(info.package),
                    sev,
                    m.title
                ));
            }
        }
    }
    super::emit(&out)?;
    Ok(0)
}

pub fn show(name: &str) -> anyhow::Result<u8> {
    let pack = packs::find(name).ok_or_else(|| {
        let names: Vec<_> = PACKS.iter().map(|p| p.name).collect();
        anyhow::anyhow!(
            "unknown pack {name:?}: the built-in packs are {}",
            names.join(", ")
        )
    })?;
    super::emit(&packs::show(pack))?;
    Ok(0)
}

/// Runs like `opa test`: exit 0 when every test passes, 1 when any fails or
/// errors, 2 when the policies cannot be loaded.
pub fn test(args: PolicyTestArgs) -> anyhow::Result<u8> {
    let opts = TestOptions {
        coverage: args.coverage,
        run: args.run.clone(),
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    };
    let (builtin, paths): (Vec<_>, Vec<_>) = args
        .paths
        .iter()
        .cloned()
        .partition(|p| p.as_os_str() == "builtin");
    let mut reports = Vec::new();
    if !builtin.is_empty() {
        let mut seen = Vec::new();
        let mut sources = Vec::new();
        for p in PACKS {
            if seen.contains(&p.dir) {
                continue;
            }
            seen.push(p.dir);
            for (path, text) in packs::all_rego_sources(p) {
                sources.push((format!("packs/{path}"), text.to_string()));
            }
        }
        reports.push(run_tests_sources(&sources, &opts)?);
    }
    if !paths.is_empty() {
        reports.push(run_tests(&paths, &opts)?);
    }
    let mut report = TestReport::default();
    for r in reports {
        report.results.extend(r.results);
        report.notes.extend(r.notes);
        if let Some(c) = r.coverage {
            report.coverage.get_or_insert_with(Vec::new).extend(c);
        }
    }
    let text = match args.output {
        TestOutput::Human => {
            let mut t = String::new();
            if args.show_passing {
                for r in report
                    .results
                    .iter()
                    .filter(|r| r.outcome == TestOutcome::Pass)
                {
                    t.push_str(&format!(
                        "{}:{}: PASS {} ({:?})\n",
                        r.file,
                        r.line,
                        r.full_name(),
                        r.duration
                    ));
                }
            }
            format!("{t}{report}\n")
        }
        TestOutput::Json => {
            let results: Vec<_> = report
                .results
                .iter()
                .map(|r| {
                    let (outcome, error) = match &r.outcome {
                        TestOutcome::Pass => ("pass", None),
                        TestOutcome::Fail => ("fail", None),
                        TestOutcome::Error(m) => ("error", Some(m.clone())),
                    };
                    serde_json::json!({
                        "package": r.package, "name": r.name, "file": r.file, "line": r.line,
                        "outcome": outcome, "error": error, "duration_ns": r.duration.as_nanos() as u64,
                    })
                })
                .collect();
            let coverage = report.coverage.as_ref().map(|files| {
                files
                    .iter()
                    .map(|c| serde_json::json!({"file": c.file, "percent": c.percent(), "covered": c.covered, "not_covered": c.not_covered}))
                    .collect::<Vec<_>>()
            });
            let v = serde_json::json!({
                "results": results,
                "passed": report.passed(),
                "failed": report.failed() ,
                "coverage": coverage,
                "notes": report.notes,
            });
            format!("{}\n", serde_json::to_string_pretty(&v)?)
        }
    };
    super::emit(&text)?;
    Ok(
        if report
            .results
            .iter()
            .all(|r| r.outcome == TestOutcome::Pass)
        {
            0
        } else {
            1
        },
    )
}
