//! `keycard check`: policy-as-code over manifests, for CI.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use keycard_core::Severity;
use keycard_k8s::{is_known_kind, load_paths, LoadOptions};
use keycard_policy::exceptions::{today_days, Exceptions};
use keycard_policy::packs::DEFAULT_PACKS;
use keycard_policy::report::CheckReport;
use keycard_policy::{PolicySetBuilder, LATEST_PSS_VERSION};
use rayon::prelude::*;

use crate::cli::{CheckArgs, CheckOutput, FailOn};

/// Objects above which a progress bar is drawn (when stderr is a terminal).
const PROGRESS_THRESHOLD: usize = 2_000;

/// `v1.N` or `latest` to N.
pub fn parse_pss_version(s: &str) -> anyhow::Result<u32> {
    if s == "latest" {
        return Ok(LATEST_PSS_VERSION);
    }
    let n = s
        .strip_prefix("v1.")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n <= LATEST_PSS_VERSION)
        .with_context(|| {
            format!("--pss-version {s:?}: expected v1.0 .. v1.{LATEST_PSS_VERSION} or latest")
        })?;
    Ok(n)
}

fn fail_on(f: FailOn) -> Option<Severity> {
    match f {
        FailOn::Critical => Some(Severity::Critical),
        FailOn::High => Some(Severity::High),
        FailOn::Medium => Some(Severity::Medium),
        FailOn::Low => Some(Severity::Low),
        FailOn::Never => None,
    }
}

fn read_structured(path: &PathBuf) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let v: serde_json::Value =
        yaml_serde::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(v)
}

pub fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let mut paths = args.paths.clone();
    if paths.is_empty() {
        if std::io::stdin().is_terminal() {
            anyhow::bail!(
                "no input: give files, directories, or - to read stdin (see keycard check --help)"
            );
        }
        paths.push(PathBuf::from("-"));
    }
    let pss_version = parse_pss_version(&args.pss_version)?;
    let opts = LoadOptions {
        max_file_bytes: args.max_file_mib.saturating_mul(1024 * 1024),
        ..LoadOptions::default()
    };
    let loaded = load_paths(&paths, &opts);
    let memory_limit = args.memory_limit_mib.saturating_mul(1024 * 1024);

    let mut builder = PolicySetBuilder::new()
        .pss_version(pss_version)
        .timeout(Duration::from_millis(args.timeout_ms.max(1)))
        .memory_limit(memory_limit)
        .inventory(&loaded.objects);
    let packs: Vec<String> = if args.packs.is_empty() {
        DEFAULT_PACKS.iter().map(|s| s.to_string()).collect()
    } else {
        args.packs
            .iter()
            .filter(|p| p.as_str() != "none")
            .cloned()
            .collect()
    };
    for p in &packs {
        builder = builder.pack(p);
    }
    for d in &args.policies {
        builder = builder.dir(d);
    }
    if let Some(p) = &args.params {
        builder = builder.params(&p.display().to_string(), read_structured(p)?);
    }
    let set = builder.build()?;
    if memory_limit > 0 {
        // Every evaluation on the bytecode VM has its own budget; this
        // ceiling also bounds the interpreter (Gatekeeper templates) and a
        // single builtin call: what is in use now plus one limit per thread.
        let threads = rayon::current_num_threads() as u64 + 1;
        keycard_policy::limits::set_process_memory_ceiling(Some(
            keycard_policy::limits::allocated_bytes()
                .saturating_add(threads.saturating_mul(memory_limit)),
        ));
    }
    let exceptions = match &args.exceptions {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            Some(Exceptions::parse(&p.display().to_string(), &text)?)
        }
        None => None,
    };

    let progress = (!args.no_progress
        && std::io::stderr().is_terminal()
        && loaded.objects.len() >= PROGRESS_THRESHOLD)
        .then(|| {
            let bar = indicatif::ProgressBar::new(loaded.objects.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} checking {pos}/{len} objects {wide_bar} {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
    let results: Vec<_> = loaded
        .objects
        .par_iter()
        .enumerate()
        .map_init(
            || set.evaluator(),
            |ev, (i, obj)| {
                let r = ev.evaluate_nth(i, obj);
                if let Some(b) = &progress {
                    b.inc(1);
                }
                (obj, r)
            },
        )
        .collect();
    if let Some(b) = progress {
        b.finish_and_clear();
    }

    let mut report = CheckReport {
        objects: loaded.objects.len(),
        files: loaded.files,
        fail_on: fail_on(args.fail_on),
        version: env!("CARGO_PKG_VERSION").to_string(),
        errors: loaded.errors.iter().map(|e| e.to_string()).collect(),
        notes: loaded
            .objects
            .iter()
            .filter(|o| !is_known_kind(o.kind()))
            .map(|o| {
                format!(
                    "{}: unknown kind {} ({}): no built-in rule applies, only --policy rules see it",
                    o.source,
                    o.kind(),
                    o.api_version()
                )
            })
            .collect(),
        ..CheckReport::default()
    };
    for (obj, r) in results {
        match r {
            Ok(f) => report.findings.extend(f),
            Err(e) => report
                .errors
                .push(format!("{}: {}: {e}", obj.source, obj.resource_ref())),
        }
    }
    report.findings.sort_by(|a, b| {
        (
            a.file.as_str(),
            a.line,
            std::cmp::Reverse(a.severity),
            a.rule.as_str(),
            a.path.as_deref(),
        )
            .cmp(&(
                b.file.as_str(),
                b.line,
                std::cmp::Reverse(b.severity),
                b.rule.as_str(),
                b.path.as_deref(),
            ))
    });
    if let Some(ex) = &exceptions {
        let (expired, unused) = ex.apply(&mut report.findings, &loaded.objects, today_days());
        report.expired_exceptions = expired;
        report.unused_exceptions = unused;
        report.exceptions_file = Some(ex.file.clone());
    }

    if let Some(dir) = &args.audit_log {
        let n = record_decisions(dir, &loaded.objects, &report)
            .with_context(|| format!("recording decisions in {}", dir.display()))?;
        tracing::info!(records = n, dir = %dir.display(), "decisions recorded");
    }

    let text = match args.output {
        CheckOutput::Human => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            report.to_human(args.explain, color)
        }
        CheckOutput::Json => {
            // Streamed: the document is never held whole in memory.
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let res = report
                .write_json(&mut out)
                .map_err(std::io::Error::from)
                .and_then(|_| out.write_all(b"\n"))
                .and_then(|_| out.flush());
            match res {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => String::new(),
            }
        }
        CheckOutput::Sarif => format!("{}\n", serde_json::to_string_pretty(&report.to_sarif())?),
        CheckOutput::Junit => report.to_junit(),
    };
    super::emit(&text)?;
    if args.output != CheckOutput::Human {
        for e in &report.errors {
            eprintln!("error: {e}");
        }
    }
    Ok(report.exit_code() as u8)
}

/// One decision record per object: deny when a finding blocks it (the most
/// severe one names the policy and rule), allow otherwise, with the
/// findings in `attributes` and a digest of the object as the input.
fn record_decisions(
    dir: &std::path::Path,
    objects: &[keycard_k8s::Object],
    report: &CheckReport,
) -> anyhow::Result<usize> {
    use keycard_audit::{input_digest, EnforcementPoint, Outcome, Record};
    use std::collections::HashMap;

    let mut by_object: HashMap<(&str, usize), Vec<&keycard_policy::Finding>> = HashMap::new();
    for f in &report.findings {
        by_object
            .entry((f.file.as_str(), f.line))
            .or_default()
            .push(f);
    }
    let subject = std::env::var("KEYCARD_ACTOR")
        .or_else(|_| std::env::var("GITHUB_ACTOR"))
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "ci".to_string());
    let revision = format!("keycard/{}", env!("CARGO_PKG_VERSION"));
    let mut records = Vec::with_capacity(objects.len());
    for o in objects {
        let findings = by_object
            .get(&(&*o.source.file, o.source.line))
            .cloned()
            .unwrap_or_default();
        let blocking = findings
            .iter()
            .filter(|f| f.blocks(report.fail_on))
            .max_by_key(|f| f.severity);
        let bytes = serde_json::to_vec(&o.value)?;
        let summary: Vec<serde_json::Value> = findings
            .iter()
            .take(64)
            .map(|f| {
                serde_json::json!({
                    "rule": f.rule,
                    "severity": f.severity.as_str(),
                    "excepted": f.exception.is_some(),
                    "blocks": f.blocks(report.fail_on),
                })
            })
            .collect();
        records.push(Record {
            action: "check".into(),
            actor: None,
            attributes: Some(serde_json::json!({
                "file": &*o.source.file,
                "line": o.source.line,
                "findings": summary,
            })),
            bundle_revision: revision.clone(),
            change: None,
            id: String::new(),
            index: 0,
            input_digest: input_digest(&bytes),
            outcome: if blocking.is_some() {
                Outcome::Deny
            } else {
                Outcome::Allow
            },
            point: EnforcementPoint::Check,
            policy: blocking.map(|f| f.policy.clone()).unwrap_or_default(),
            reason: blocking.map_or_else(
                || format!("{} findings, none blocking", findings.len()),
                |f| f.message.clone(),
            ),
            resource: o.resource_ref().to_string(),
            rule: blocking.map(|f| f.rule.clone()).unwrap_or_default(),
            subject: subject.clone(),
            time: String::new(),
            v: 0,
        });
    }
    let mut log = keycard_server::decisions::open(dir)?;
    let n = records.len();
    log.append(records)?;
    log.checkpoint()?;
    Ok(n)
}
