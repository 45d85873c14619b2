//! `keycard flows ingest` and `keycard flows graph`: observed traffic in,
//! edges and the dependency graph out.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use keycard_flows::graph;
use keycard_flows::ingest::{
    read_edges, write_edges, Edge, FlowSource, IngestError, IngestOptions, Ingester,
};
use keycard_flows::inventory::Inventory;
use keycard_flows::time::parse_duration;
use keycard_k8s::{load_paths, LoadOptions};

use crate::cli::{FlowsGraphArgs, FlowsIngestArgs, GraphFormat};

/// Longest edge line read back (edges are short; this only stops garbage).
pub const MAX_EDGE_LINE: usize = 64 * 1024;

/// Loads the inventory; `None` when no path is given. Load problems are
/// reported and counted.
pub fn load_inventory(paths: &[PathBuf]) -> (Option<Inventory>, usize) {
    if paths.is_empty() {
        return (None, 0);
    }
    let loaded = load_paths(paths, &LoadOptions::default());
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    (
        Some(Inventory::from_objects(&loaded.objects)),
        loaded.errors.len(),
    )
}

/// Reads an edges file (`-` for stdin); bad lines are reported and counted.
pub fn load_edges(path: &Path) -> anyhow::Result<(Vec<Edge>, usize)> {
    let name = path.display().to_string();
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            File::open(path).with_context(|| format!("cannot open {name}"))?,
        ))
    };
    let (edges, errors) =
        read_edges(&name, reader, MAX_EDGE_LINE).with_context(|| format!("cannot read {name}"))?;
    for e in &errors {
        eprintln!("error: {e}");
    }
    Ok((edges, errors.len()))
}

/// Writes `text` to `path`, or stdout when `None` or `-`.
pub fn write_out(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(p) if p != Path::new("-") => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))
        }
        _ => super::emit(text),
    }
}

pub fn ingest(args: FlowsIngestArgs) -> anyhow::Result<u8> {
    let Some(window) = parse_duration(&args.window) else {
        bail!(
            "invalid --window {:?} (use e.g. 500ms, 5s, 1m)",
            args.window
        );
    };
    let (inventory, inv_errors) = load_inventory(&args.inventory);
    if args.strict && inv_errors > 0 {
        eprintln!("{inv_errors} inventory inputs could not be read (--strict)");
        return Ok(2);
    }
    let opts = IngestOptions {
        max_line_bytes: args.max_line_kib.max(1) * 1024,
        window,
        strict: args.strict,
        ..IngestOptions::default()
    };
    let mut total: u64 = 0;
    let mut readers: Vec<(String, Box<dyn Read>)> = Vec::new();
    for f in &args.files {
        let name = f.display().to_string();
        if f == Path::new("-") {
            readers.push((name, Box::new(std::io::stdin())));
            continue;
        }
        let file = File::open(f).with_context(|| format!("cannot open {name}"))?;
        total += file.metadata().map(|m| m.len()).unwrap_or(0);
        readers.push((name, Box::new(file)));
    }
    let bar = (!args.no_progress && std::io::stderr().is_terminal() && total > 0).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} ingesting {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let sources: Vec<FlowSource<'_>> = readers
        .into_iter()
        .map(|(name, r)| {
            let r: Box<dyn Read> = match &bar {
                Some(b) => Box::new(b.wrap_read(r)),
                None => r,
            };
            FlowSource::new(name, BufReader::with_capacity(1 << 16, r))
        })
        .collect();
    let mut ing = Ingester::new(inventory.as_ref(), opts);
    let run = ing.run(sources);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match run {
        Ok(()) => {}
        Err(IngestError::Strict(e)) => {
            eprintln!("error: {e}");
            eprintln!("stopped at the first bad line (--strict)");
            return Ok(2);
        }
        Err(e) => return Err(e.into()),
    }
    let (edges, report) = ing.finish()?;
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.error_count > report.errors.len() as u64 {
        eprintln!(
            "... and {} more bad lines",
            report.error_count - report.errors.len() as u64
        );
    }
    let mut buf: Vec<u8> = Vec::new();
    write_edges(&mut buf, &edges)?;
    if args.output == Path::new("-") {
        super::emit(&String::from_utf8_lossy(&buf))?;
    } else {
        let f = File::create(&args.output)
            .with_context(|| format!("cannot create {}", args.output.display()))?;
        let mut w = BufWriter::new(f);
        w.write_all(&buf)?;
        w.flush()?;
    }
    eprintln!(
        "{} lines: {} flows, {} replies dropped, {} duplicate observations merged, {} non-flow events, {} ignored, {} bad lines; {} connections in {} edges",
        report.lines,
        report.flows,
        report.replies,
        report.duplicates,
        report.non_flow_events,
        report.ignored,
        report.error_count,
        report.connections,
        report.edges
    );
    if report.events_lost > 0 {
        eprintln!(
            "warning: the flow source reports {} lost events; the edges may be incomplete",
            report.events_lost
        );
    }
    if report.window_overflows > 0 {
        eprintln!(
            "warning: {} connections were closed early (too many open at once); counts may be high",
            report.window_overflows
        );
    }
    Ok(0)
}

pub fn graph(args: FlowsGraphArgs) -> anyhow::Result<u8> {
    let (edges, bad) = load_edges(&args.edges)?;
    let (inventory, inv_errors) = load_inventory(&args.inventory);
    if args.strict && bad + inv_errors > 0 {
        eprintln!("{} inputs could not be used (--strict)", bad + inv_errors);
        return Ok(2);
    }
    let out = args.output.as_deref();
    if let Some(q) = &args.query {
        let q = graph::Query::parse(q).map_err(anyhow::Error::msg)?;
        let Some(inv) = &inventory else {
            bail!("--query needs --inventory (the labels live there)");
        };
        let hits = graph::query(&edges, inv, &q);
        let text = match args.format {
            Some(GraphFormat::Json) => format!("{}\n", serde_json::to_string_pretty(&hits)?),
            _ => graph::table(&hits),
        };
        write_out(out, &text)?;
        return Ok(0);
    }
    let text = match args.format.unwrap_or(GraphFormat::Json) {
        GraphFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&graph::to_json(&edges))?
        ),
        GraphFormat::Dot => graph::to_dot(&edges),
        GraphFormat::Mermaid => graph::to_mermaid(&edges),
        GraphFormat::Svg => graph::to_svg(&edges),
    };
    write_out(out, &text)?;
    Ok(0)
}
