//! `keycard netpol eval`: decide every connection as Kubernetes would.
//! `generate`, `simulate` and `drift`: from observed edges to policies and
//! back.

use std::fmt::Write as _;

use anyhow::Context;
use keycard_flows::generate::{generate as generate_policies, to_yaml, GenerateOptions};
use keycard_flows::simulate::{diff_policies, drift as drift_report, simulate as simulate_edges};
use keycard_flows::{evaluate, evaluate_explained, format_json, format_report, Cluster};
use keycard_k8s::{load_paths, LoadOptions};

use super::flows::{load_edges, load_inventory};
use crate::cli::{
    NetpolDriftArgs, NetpolEvalArgs, NetpolGenerateArgs, NetpolOutput, NetpolSimulateArgs,
    ReportOutput,
};

pub fn eval(args: NetpolEvalArgs) -> anyhow::Result<u8> {
    let loaded = load_paths(&args.paths, &LoadOptions::default());
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    let (mut cluster, diagnostics) = Cluster::from_objects(&loaded.objects);
    cluster.dual_stack |= args.dual_stack;
    for d in &diagnostics {
        let level = if d.warning { "warning" } else { "error" };
        eprintln!(
            "{level}: {}:{}: {}: {}",
            d.file, d.line, d.object, d.message
        );
    }
    let conns = if args.explain {
        evaluate_explained(&cluster)
    } else {
        evaluate(&cluster)
    };
    let text = match args.output {
        NetpolOutput::Connlist => format_report(&cluster, &conns, args.explain),
        NetpolOutput::Json => format!("{}\n", serde_json::to_string_pretty(&format_json(&conns))?),
    };
    super::emit(&text)?;
    let problems = loaded.errors.len() + diagnostics.iter().filter(|d| !d.warning).count();
    if problems > 0 {
        eprintln!(
            "{problems} inputs skipped{}",
            if args.strict {
                ""
            } else {
                " (--strict makes this fatal)"
            }
        );
    }
    Ok(if args.strict && problems > 0 { 2 } else { 0 })
}

fn inventory_or_fail(
    paths: &[std::path::PathBuf],
) -> anyhow::Result<(keycard_flows::inventory::Inventory, usize)> {
    let (inv, errors) = load_inventory(paths);
    let inv = inv.context("--inventory is required")?;
    if inv.workloads.is_empty() {
        anyhow::bail!("the inventory has no workloads");
    }
    Ok((inv, errors))
}

pub fn generate(args: NetpolGenerateArgs) -> anyhow::Result<u8> {
    let (edges, bad) = load_edges(&args.edges)?;
    let (inv, inv_errors) = inventory_or_fail(&args.inventory)?;
    let opts = GenerateOptions {
        include_system_namespaces: args.include_system_namespaces,
    };
    let out = generate_policies(&edges, &inv, &opts);
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    if args.strict && bad + inv_errors + out.warnings.len() > 0 {
        eprintln!("inputs were skipped or policies are incomplete (--strict)");
        return Ok(2);
    }
    let n_policies = out.policies.len();
    match &args.output_dir {
        None => super::emit(&to_yaml(&out.policies).map_err(anyhow::Error::msg)?)?,
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut by_ns: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
                Default::default();
            for p in out.policies {
                let ns = p
                    .pointer("/metadata/namespace")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("default")
                    .to_string();
                by_ns.entry(ns).or_default().push(p);
            }
            for (ns, ps) in by_ns {
                let path = dir.join(format!("{ns}.yaml"));
                std::fs::write(&path, to_yaml(&ps).map_err(anyhow::Error::msg)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    eprintln!("{n_policies} policies from {} edges", edges.len());
    Ok(0)
}

/// Loads a policy set, reporting unusable objects.
fn load_policies(paths: &[std::path::PathBuf]) -> (Vec<keycard_k8s::Object>, usize) {
    let loaded = load_paths(paths, &LoadOptions::default());
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    (loaded.objects, loaded.errors.len())
}

fn report_diagnostics(diags: &[keycard_flows::Diagnostic]) -> usize {
    for d in diags {
        let level = if d.warning { "warning" } else { "error" };
        eprintln!(
            "{level}: {}:{}: {}: {}",
            d.file, d.line, d.object, d.message
        );
    }
    diags.iter().filter(|d| !d.warning).count()
}

pub fn simulate(args: NetpolSimulateArgs) -> anyhow::Result<u8> {
    let (edges, bad) = load_edges(&args.edges)?;
    let (inv, inv_errors) = inventory_or_fail(&args.inventory)?;
    let (objects, pol_errors) = load_policies(&args.policies);
    let (cluster, diags) = inv.to_cluster(&objects);
    let problems = bad + inv_errors + pol_errors + report_diagnostics(&diags);
    if args.strict && problems > 0 {
        eprintln!("{problems} inputs skipped (--strict)");
        return Ok(2);
    }
    let sim = simulate_edges(&cluster, &edges);
    let text = match args.output {
        ReportOutput::Json => format!("{}\n", serde_json::to_string_pretty(&sim)?),
        ReportOutput::Human => {
            let mut t = String::new();
            for (w, flows) in &sim.denied {
                let _ = writeln!(t, "{w}: {} observed flows would be denied", flows.len());
                for f in flows {
                    let _ = writeln!(
                        t,
                        "  {} => {} : {} {} ({} connections, last seen {}, denied by {})",
                        f.src, f.dst, f.protocol, f.port, f.count, f.last_seen, f.denied_by
                    );
                }
            }
            for f in &sim.newly_allowed {
                let _ = writeln!(
                    t,
                    "newly allowed (denied when observed): {} => {} : {} {}",
                    f.src, f.dst, f.protocol, f.port
                );
            }
            for u in &sim.unresolved {
                let _ = writeln!(t, "not in the inventory (skipped): {u}");
            }
            let _ = writeln!(
                t,
                "coverage: {:.1}% of observed connections allowed ({} of {}; {} of {} edges)",
                sim.coverage * 100.0,
                sim.allowed_connections,
                sim.observed_connections,
                sim.allowed_edges,
                sim.observed_edges
            );
            t
        }
    };
    super::emit(&text)?;
    Ok(if sim.denied.is_empty() { 0 } else { 1 })
}

pub fn drift(args: NetpolDriftArgs) -> anyhow::Result<u8> {
    if !args.declared.is_empty() {
        let (declared, e1) = load_policies(&args.declared);
        let (live, e2) = load_policies(&args.cluster);
        let diff = diff_policies(&declared, &live);
        for e in &diff.errors {
            eprintln!("error: {e}");
        }
        if args.strict && e1 + e2 + diff.errors.len() > 0 {
            return Ok(2);
        }
        let text = match args.output {
            ReportOutput::Json => format!("{}\n", serde_json::to_string_pretty(&diff)?),
            ReportOutput::Human => {
                let mut t = String::new();
                for a in &diff.added {
                    let _ = writeln!(t, "added (in the cluster, not in Git): {a}");
                }
                for r in &diff.removed {
                    let _ = writeln!(t, "removed (in Git, not in the cluster): {r}");
                }
                for c in &diff.changed {
                    let _ = writeln!(t, "changed: {} ({})", c.policy, c.fields.join(", "));
                }
                let _ = writeln!(
                    t,
                    "{} added, {} removed, {} changed",
                    diff.added.len(),
                    diff.removed.len(),
                    diff.changed.len()
                );
                t
            }
        };
        super::emit(&text)?;
        let drifted =
            !(diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty());
        return Ok(u8::from(drifted));
    }
    let Some(edges_path) = &args.edges else {
        anyhow::bail!("give an edges file, or --declared DIR --cluster DUMP");
    };
    let (edges, bad) = load_edges(edges_path)?;
    let (inv, inv_errors) = inventory_or_fail(&args.inventory)?;
    let (objects, pol_errors) = load_policies(&args.policies);
    let (cluster, diags) = inv.to_cluster(&objects);
    let problems = bad + inv_errors + pol_errors + report_diagnostics(&diags);
    if args.strict && problems > 0 {
        eprintln!("{problems} inputs skipped (--strict)");
        return Ok(2);
    }
    let d = drift_report(&cluster, &edges, args.since.as_deref()).map_err(anyhow::Error::msg)?;
    let text = match args.output {
        ReportOutput::Json => format!("{}\n", serde_json::to_string_pretty(&d)?),
        ReportOutput::Human => {
            let mut t = String::new();
            for u in &d.unused_rules {
                let _ = writeln!(
                    t,
                    "unused: {} {} rule #{} ({}:{}): no observed flow needs it",
                    u.policy, u.direction, u.rule, u.file, u.line
                );
            }
            for f in &d.denied_attempts {
                let _ = writeln!(
                    t,
                    "denied attempt: {} => {} : {} {} ({} connections, last seen {})",
                    f.src, f.dst, f.protocol, f.port, f.count, f.last_seen
                );
            }
            for f in &d.new_flows {
                let _ = writeln!(
                    t,
                    "new flow: {} => {} : {} {} ({} connections)",
                    f.src, f.dst, f.protocol, f.port, f.count
                );
            }
            for u in &d.unresolved {
                let _ = writeln!(t, "not in the inventory (skipped): {u}");
            }
            let _ = writeln!(
                t,
                "{} unused rules, {} denied attempts, {} new flows",
                d.unused_rules.len(),
                d.denied_attempts.len(),
                d.new_flows.len()
            );
            t
        }
    };
    super::emit(&text)?;
    Ok(0)
}
