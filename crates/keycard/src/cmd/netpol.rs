//! `keycard netpol eval`: decide every connection as Kubernetes would.

use keycard_flows::{evaluate, evaluate_explained, format_json, format_report, Cluster};
use keycard_k8s::{load_paths, LoadOptions};

use crate::cli::{NetpolEvalArgs, NetpolOutput};

pub fn eval(args: NetpolEvalArgs) -> anyhow::Result<u8> {
    let loaded = load_paths(&args.paths, &LoadOptions::default());
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    let (cluster, diagnostics) = Cluster::from_objects(&loaded.objects);
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
