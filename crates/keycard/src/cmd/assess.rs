//! `keycard assess` and `keycard who-can`: the cluster's identities, what
//! each can do, where implicit trust lives, the maturity score per pillar
//! and the compliance evidence.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use keycard_assess::diff::{self, DiffFormat};
use keycard_assess::report::{self, Format};
use keycard_assess::{AccessQuery, Assessment, Input, Options, Scope};
use keycard_core::Severity;
use keycard_k8s::LoadOptions;

use crate::cli::FailOn;

#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "\
Inputs: a cluster dump, a directory of manifests, or - for stdin. Dump a
cluster with the explicit resource list (`kubectl get all` leaves out RBAC,
ServiceAccounts, NetworkPolicies and Secrets; see docs/assess-input.md):

  kubectl get namespaces,pods,replicationcontrollers,deployments,replicasets,\\
statefulsets,daemonsets,jobs,cronjobs,services,ingresses,networkpolicies,\\
serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,secrets,\\
configmaps,nodes -A -o yaml > cluster.yaml

Examples:
  keycard assess cluster.yaml                          # Markdown summary on stdout
  keycard assess cluster.yaml --out report.html        # format from the extension
  keycard assess k8s/ --output sarif > assess.sarif    # findings for code scanning
  keycard assess cluster.yaml -o json --out week-47.json
  keycard assess diff week-46.json week-47.json        # progress between two runs
  keycard assess --live --context prod --out prod.html # the live API, read-only

What the input did not show (a partial dump, RBAC that points to missing
roles) is listed under coverage gaps, and the pillars it limits are capped.

Exit status: 0 done, 1 a finding at or above --fail-on, 2 usage or input error."
)]
pub struct AssessArgs {
    #[command(subcommand)]
    pub command: Option<AssessCommand>,
    /// Cluster dumps, manifest directories (searched recursively), or - for stdin.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub live: LiveArgs,
    /// Report format (default: from --out's extension, else md).
    #[arg(long, short, value_enum)]
    pub output: Option<ReportFormat>,
    /// Write the report here instead of stdout (created 0644; the report holds
    /// no secret values).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Lowest finding severity that fails the run (exit 1).
    #[arg(long, value_enum, default_value_t = FailOn::Never)]
    pub fail_on: FailOn,
    /// Label keys that name a workload's owner (repeatable; replaces the defaults:
    /// owner, team, app.kubernetes.io/owner, keycard.dev/owner).
    #[arg(long = "owner-label", value_name = "KEY")]
    pub owner_labels: Vec<String>,
    /// Label keys that carry a data classification (repeatable; replaces the defaults:
    /// data-classification, data.classification, keycard.dev/data-classification, classification).
    #[arg(long = "classification-label", value_name = "KEY")]
    pub classification_labels: Vec<String>,
    /// Largest input file read, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub max_file_mib: u64,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Reading the live API instead of files.
#[derive(Args, Debug, Default)]
pub struct LiveArgs {
    /// Read the live cluster (read-only) through the kubeconfig, as kubectl
    /// resolves it: --kubeconfig, KUBECONFIG, ~/.kube/config, in-cluster.
    #[arg(long, conflicts_with = "paths")]
    pub live: bool,
    /// The kubeconfig file (implies --live).
    #[arg(long, value_name = "FILE", conflicts_with = "paths")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (implies --live; default: its current context).
    #[arg(long, value_name = "NAME", conflicts_with = "paths")]
    pub context: Option<String>,
    /// Longest the whole read of the API may take, in seconds; what is not
    /// listed by then is reported as a coverage gap.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub deadline_secs: u64,
}

impl LiveArgs {
    fn wanted(&self) -> bool {
        self.live || self.kubeconfig.is_some() || self.context.is_some()
    }
}

#[derive(Subcommand, Debug)]
pub enum AssessCommand {
    /// Compare two JSON assessments: new and resolved findings, stage changes.
    Diff(DiffArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
Both files come from `keycard assess -o json`. Findings are matched by id
(rule and resource), so a renamed workload shows as one resolved and one new.

Exit status: 0 no regression (or --fail-on-regression not given), 1 with
--fail-on-regression when a finding appeared or a pillar's stage went down,
2 usage or input error.")]
pub struct DiffArgs {
    /// The earlier assessment (JSON).
    pub old: PathBuf,
    /// The later assessment (JSON).
    pub new: PathBuf,
    #[arg(long, short, value_enum, default_value_t = DiffOutput::Text)]
    pub output: DiffOutput,
    /// Exit 1 when a new finding appeared or a pillar's stage went down.
    #[arg(long)]
    pub fail_on_regression: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Html,
    Md,
    Json,
    Sarif,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffOutput {
    Text,
    Md,
    Json,
}

#[derive(Args, Debug)]
#[command(after_help = "\
VERB is a Kubernetes API verb (get, list, watch, create, update, patch,
delete, deletecollection, escalate, bind, impersonate, or *). RESOURCE is a
plural resource, optionally with its group or a subresource: deployments,
deployments.apps, secrets, pods/exec, clusterrolebindings.

Examples:
  keycard who-can create deployments -n prod cluster.yaml   # who can deploy to prod
  keycard who-can get secrets cluster.yaml                  # who can read secrets, anywhere
  keycard who-can create pods/exec cluster.yaml             # who can exec into pods
  keycard who-can get secrets --name db-password -n prod cluster.yaml -o json

Groups are listed as subjects (their members are not in the cluster's
objects). Grants limited to named objects (resourceNames) are marked.

Exit status: 0 answered (even when nobody can), 2 usage or input error.")]
pub struct WhoCanArgs {
    /// The verb: get, list, create, delete, ..., or *.
    pub verb: String,
    /// The resource: secrets, deployments.apps, pods/exec, ...
    pub resource: String,
    /// Cluster dumps, manifest directories, or - for stdin.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub live: LiveArgs,
    /// Only in this namespace (cluster-wide grants count too). Default: anywhere.
    #[arg(long, short, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only for the object of this name (grants limited by resourceNames count).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Also list the known members of groups that can (service accounts of
    /// system:serviceaccounts[:ns], every known subject for system:authenticated).
    #[arg(long)]
    pub expand_groups: bool,
    #[arg(long, short, value_enum, default_value_t = WhoCanOutput::Table)]
    pub output: WhoCanOutput,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhoCanOutput {
    Table,
    Json,
}

/// The live API, with a progress bar on a terminal.
fn load_live(live: &LiveArgs, no_progress: bool) -> anyhow::Result<Input> {
    let opts = keycard_assess::live::LiveOptions {
        kubeconfig: live.kubeconfig.clone(),
        context: live.context.clone(),
        deadline: std::time::Duration::from_secs(live.deadline_secs.max(1)),
        ..Default::default()
    };
    let bar = if !no_progress && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} reading the API [{bar:30}] {pos}/{len} resources, {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let input = keycard_assess::live::load_live(&opts, &|p| {
        if let Some(bar) = &bar {
            bar.set_length(p.resources_total as u64);
            bar.set_position(p.resources_done as u64);
            bar.set_message(format!("{} objects ({})", p.objects, p.resource));
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for p in &input.problems {
        eprintln!("warning: {}: {}", p.file, p.message);
    }
    for g in &input.gaps {
        eprintln!("warning: {}: {}", g.what, g.impact);
    }
    if input.objects.is_empty() {
        anyhow::bail!("nothing could be read from the cluster's API (see the warnings above)");
    }
    Ok(input)
}

fn load(paths: &[PathBuf], max_file_mib: u64) -> anyhow::Result<Input> {
    let mut paths = paths.to_vec();
    if paths.is_empty() {
        if std::io::stdin().is_terminal() {
            anyhow::bail!(
                "no input: give a cluster dump, a directory of manifests, or - to read stdin \
                 (see keycard assess --help for the dump command)"
            );
        }
        paths.push(PathBuf::from("-"));
    }
    let opts = LoadOptions {
        max_file_bytes: max_file_mib.saturating_mul(1024 * 1024),
        ..LoadOptions::default()
    };
    let input = Input::load(&paths, &opts);
    for p in &input.problems {
        match p.line {
            Some(l) => eprintln!("warning: {}:{l}: {}", p.file, p.message),
            None => eprintln!("warning: {}: {}", p.file, p.message),
        }
    }
    if input.objects.is_empty() {
        anyhow::bail!(
            "no Kubernetes objects could be read from {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(input)
}

fn format_for(args: &AssessArgs) -> anyhow::Result<Format> {
    if let Some(f) = args.output {
        return Ok(match f {
            ReportFormat::Html => Format::Html,
            ReportFormat::Md => Format::Markdown,
            ReportFormat::Json => Format::Json,
            ReportFormat::Sarif => Format::Sarif,
        });
    }
    let ext = args
        .out
        .as_deref()
        .and_then(Path::extension)
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    Ok(match ext.as_deref() {
        None | Some("md" | "markdown" | "txt") => Format::Markdown,
        Some("html" | "htm") => Format::Html,
        Some("json") => Format::Json,
        Some("sarif") => Format::Sarif,
        Some(other) => anyhow::bail!(
            "--out {}: cannot tell the format from .{other}; give --output html|md|json|sarif",
            args.out.as_deref().unwrap_or(Path::new("")).display()
        ),
    })
}

pub fn run(args: AssessArgs) -> anyhow::Result<u8> {
    if let Some(AssessCommand::Diff(d)) = args.command {
        return run_diff(d);
    }
    let format = format_for(&args)?;
    let input = if args.live.wanted() {
        load_live(&args.live, args.no_progress)?
    } else {
        load(&args.paths, args.max_file_mib)?
    };
    let mut options = Options::default();
    if !args.owner_labels.is_empty() {
        options.owner_labels = args.owner_labels.clone();
    }
    if !args.classification_labels.is_empty() {
        options.classification_labels = args.classification_labels.clone();
    }
    let started = std::time::Instant::now();
    let assessment = keycard_assess::assess(&input, &options);
    tracing::debug!(
        objects = input.objects.len(),
        ms = started.elapsed().as_millis() as u64,
        "assessed"
    );
    let text = report::render(&assessment, format);
    match &args.out {
        Some(path) => write_atomic(path, &text)?,
        None => super::emit(&text)?,
    }
    summarise(&assessment, args.out.as_deref());
    let fail_on = match args.fail_on {
        FailOn::Critical => Some(Severity::Critical),
        FailOn::High => Some(Severity::High),
        FailOn::Medium => Some(Severity::Medium),
        FailOn::Low => Some(Severity::Low),
        FailOn::Never => None,
    };
    let failed = fail_on.is_some_and(|min| assessment.findings.iter().any(|f| f.severity >= min));
    Ok(u8::from(failed))
}

/// One line per pillar and the gaps, on stderr, when the report went to a file.
fn summarise(a: &Assessment, out: Option<&Path>) {
    let Some(out) = out else { return };
    let crit = a
        .summary
        .findings_by_severity
        .get("critical")
        .copied()
        .unwrap_or(0);
    let high = a
        .summary
        .findings_by_severity
        .get("high")
        .copied()
        .unwrap_or(0);
    eprintln!(
        "{}: {} objects, {} identities, {} workloads, {} findings ({crit} critical, {high} high)",
        out.display(),
        a.source.objects,
        a.summary.identities,
        a.summary.workloads,
        a.findings.len(),
    );
    for p in &a.maturity.pillars {
        let note = if !p.assessed {
            " (not assessed)"
        } else if !p.limited_by.is_empty() {
            " (limited by coverage gaps)"
        } else {
            ""
        };
        eprintln!(
            "  {:<28} {:<12} {:>3}{note}",
            p.pillar.title(),
            p.stage.title(),
            p.score
        );
    }
    if !a.coverage.gaps.is_empty() {
        eprintln!(
            "  {} coverage gaps: the report lists what it could not see",
            a.coverage.gaps.len()
        );
    }
}

/// Write through a temporary file in the same directory, so a failed run
/// never leaves half a report where the last good one was.
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create a file next to it", path.display()))?;
    tmp.write_all(text.as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("{}: cannot set permissions", path.display()))?;
    }
    tmp.persist(path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

fn read_assessment(path: &Path) -> anyhow::Result<Assessment> {
    const MAX: u64 = 512 * 1024 * 1024;
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if meta.len() > MAX {
        anyhow::bail!("{}: larger than {} MiB", path.display(), MAX >> 20);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(diff::parse_assessment(&text, &path.display().to_string())?)
}

fn run_diff(args: DiffArgs) -> anyhow::Result<u8> {
    let old = read_assessment(&args.old)?;
    let new = read_assessment(&args.new)?;
    let d = diff::diff(&old, &new);
    let format = match args.output {
        DiffOutput::Text => DiffFormat::Text,
        DiffOutput::Md => DiffFormat::Markdown,
        DiffOutput::Json => DiffFormat::Json,
    };
    super::emit(&d.render(format))?;
    Ok(u8::from(args.fail_on_regression && d.regressed()))
}

pub fn who_can(args: WhoCanArgs) -> anyhow::Result<u8> {
    if args.verb.is_empty() || args.resource.is_empty() {
        anyhow::bail!(
            "VERB and RESOURCE must not be empty (e.g. keycard who-can get secrets cluster.yaml)"
        );
    }
    let input = if args.live.wanted() {
        load_live(&args.live, false)?
    } else {
        if args.paths.is_empty() {
            anyhow::bail!("no input: give a cluster dump or a directory of manifests, or --live");
        }
        load(&args.paths, 256)?
    };
    let rbac = keycard_assess::Rbac::from_objects(&input.objects);
    let q = AccessQuery {
        verb: args.verb.to_ascii_lowercase(),
        resource: args.resource.to_ascii_lowercase(),
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        expand_groups: args.expand_groups,
    };
    let answers = rbac.who_can(&q);
    for gap in rbac.gaps() {
        eprintln!("warning: {}: {}", gap.what, gap.impact);
    }
    match args.output {
        WhoCanOutput::Json => {
            let rows: Vec<serde_json::Value> = answers
                .iter()
                .map(|w| {
                    serde_json::json!({
                        "subject": w.subject.to_string(),
                        "kind": w.subject.kind.to_string(),
                        "via": w.via,
                        "restricted_to": w.restricted_to,
                    })
                })
                .collect();
            super::emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
        }
        WhoCanOutput::Table => {
            let mut out = String::new();
            let target = match (&q.namespace, &q.name) {
                (Some(ns), Some(n)) => format!("{} {} {n} in namespace {ns}", q.verb, q.resource),
                (Some(ns), None) => format!("{} {} in namespace {ns}", q.verb, q.resource),
                (None, Some(n)) => format!("{} {} {n}", q.verb, q.resource),
                (None, None) => format!("{} {}", q.verb, q.resource),
            };
            if answers.is_empty() {
                out.push_str(&format!("nobody can {target}\n"));
            } else {
                out.push_str(&format!("{} subjects can {target}\n\n", answers.len()));
                let width = answers
                    .iter()
                    .map(|w| w.subject.to_string().len())
                    .max()
                    .unwrap_or(7)
                    .max(7);
                out.push_str(&format!("{:<width$}  {:<22}  VIA\n", "SUBJECT", "SCOPE"));
                for w in &answers {
                    // Several rules of one role (an aggregated one, say)
                    // can grant the same access: one line per grant path.
                    let mut seen = std::collections::HashSet::new();
                    let via = w.via.iter().filter(|p| {
                        seen.insert((
                            &p.scope,
                            &p.binding,
                            &p.role,
                            &p.via_group,
                            &p.resource_names,
                        ))
                    });
                    for (i, p) in via.enumerate() {
                        let subject = if i == 0 {
                            w.subject.to_string()
                        } else {
                            String::new()
                        };
                        let scope = match &p.scope {
                            Scope::Cluster => "cluster-wide".to_string(),
                            Scope::Namespace(ns) => format!("namespace {ns}"),
                        };
                        let mut via = format!("{} -> {}", p.binding, p.role);
                        if let Some(g) = &p.via_group {
                            via.push_str(&format!(" (as member of {g})"));
                        }
                        if !p.resource_names.is_empty() {
                            via.push_str(&format!(" [only: {}]", p.resource_names.join(", ")));
                        }
                        out.push_str(&format!("{subject:<width$}  {scope:<22}  {via}\n"));
                    }
                }
            }
            super::emit(&out)?;
        }
    }
    Ok(0)
}
