//! The command line, parsed once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// keycard: zero trust, operable, in one fast binary.
///
/// Assess where implicit trust lives, check manifests with policy-as-code,
/// issue workload identities, enforce and prove every decision.
#[derive(Parser, Debug)]
#[command(name = "keycard", version, propagate_version = true)]
pub struct Cli {
    /// Log more (also: KEYCARD_LOG=debug, or any tracing filter).
    #[arg(long, short, global = true, display_order = VERBOSE_ORDER)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `--verbose` is listed last in every help (it is global).
const VERBOSE_ORDER: usize = 10_000;

const PROXY_ABOUT: &str =
    "Enforcement: the identity-aware mTLS sidecar proxy (inbound and outbound listeners).";

/// `keycard proxy` parsed on its own. A sidecar runs beside every workload,
/// and its resident memory counts every page of code it has touched:
/// building the whole command tree touches the parsers of every other
/// subcommand (about 2 MB of the binary). The same arguments, help and
/// errors as `keycard proxy` through [`Cli`]; a test holds them equal.
#[derive(Parser, Debug)]
#[command(name = "keycard-proxy", bin_name = "keycard proxy", version, about = PROXY_ABOUT)]
pub struct ProxyCli {
    /// Log more (also: KEYCARD_LOG=debug, or any tracing filter).
    #[arg(long, short, display_order = VERBOSE_ORDER)]
    pub verbose: bool,
    #[command(flatten)]
    pub args: crate::cmd::proxy::ProxyArgs,
}

impl Cli {
    /// Parse the process's arguments; `keycard proxy ...` takes the short way.
    pub fn parse_args() -> Cli {
        let mut args = std::env::args_os();
        if args.nth(1).is_some_and(|a| a == "proxy") {
            // The subcommand's name stands where clap expects the binary's.
            let p = ProxyCli::parse_from(std::env::args_os().skip(1));
            return Cli {
                verbose: p.verbose,
                command: Command::Proxy(p.args),
            };
        }
        Cli::parse()
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check Kubernetes manifests against policy packs and your own Rego (for CI).
    Check(CheckArgs),
    /// Assess a cluster: identities and what they can do, trust findings,
    /// zero-trust maturity per pillar, compliance evidence (html, md, json, sarif).
    Assess(crate::cmd::assess::AssessArgs),
    /// Who can VERB RESOURCE (in a namespace), from a cluster's RBAC.
    WhoCan(crate::cmd::assess::WhoCanArgs),
    /// List, show and test policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Evaluate Kubernetes NetworkPolicies: who can reach whom.
    #[command(subcommand)]
    Netpol(NetpolCommand),
    /// Observed traffic: ingest flows (keycard, Cilium Hubble), draw the dependency graph.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// The tamper-evident decision log: append, verify, why, query, export, prune.
    #[command(subcommand)]
    Audit(crate::cmd::audit::AuditCommand),
    /// The Kubernetes admission webhook: serve it, print its ValidatingWebhookConfiguration.
    #[command(subcommand)]
    Admission(crate::cmd::admission::AdmissionCommand),
    /// Enforcement: the Envoy ext_authz decision point over keycard's authorization policies.
    #[command(subcommand)]
    Authz(crate::cmd::authz::AuthzCommand),
    #[command(about = PROXY_ABOUT)]
    Proxy(crate::cmd::proxy::ProxyArgs),
    /// Run a whole trust domain on this machine: CA, API, agent (Workload API, SDS).
    Up(crate::cmd::up::UpArgs),
    /// Run the server alone (CA, API, node API), SQLite or PostgreSQL, for remote agents.
    Server(crate::cmd::server::ServerArgs),
    /// Run a node agent: attest, sync from the server, serve the Workload API and SDS.
    Agent(crate::cmd::agent::AgentArgs),
    /// Registration entries: which workloads get which SPIFFE ID.
    #[command(subcommand)]
    Entry(crate::cmd::entry::EntryCommand),
    /// Join tokens for agents.
    #[command(subcommand)]
    Token(crate::cmd::token::TokenCommand),
    /// Exceptions (owned, expiring waivers of a rule) on a server.
    #[command(subcommand)]
    Exception(crate::cmd::policy_api::ExceptionCommand),
}

#[derive(Subcommand, Debug)]
pub enum FlowsCommand {
    /// Read flow files and aggregate them into edges (JSON lines).
    Ingest(FlowsIngestArgs),
    /// Draw the dependency graph of an edges file, or query it.
    Graph(FlowsGraphArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
Inputs: keycard flow records, `hubble observe -o json` (bare Flow lines) and
`-o jsonpb` or exporter files ({\"flow\": ...} lines), mixed freely. Replies are
dropped, the two observations of one connection (source and destination
node) count once, pods fold into their workloads.

Examples:
  hubble observe -o jsonpb --last 100000 > flows.jsonl
  keycard flows ingest flows.jsonl --inventory cluster-dump/ -o edges.jsonl
  keycard flows ingest node-a.jsonl node-b.jsonl -o edges.jsonl --strict

Exit status: 0 done (bad lines reported and skipped), 2 usage or input
error, or any bad line with --strict.")]
pub struct FlowsIngestArgs {
    /// Flow files (JSON lines), or - for stdin.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Kubernetes objects (a cluster dump or manifests) to resolve pods to workloads.
    /// Flows naming pods outside it are reported and skipped.
    #[arg(long, value_name = "DIR")]
    pub inventory: Vec<PathBuf>,
    /// Where to write the edges (JSON lines); - for stdout.
    #[arg(long, short, value_name = "OUT.jsonl")]
    pub output: PathBuf,
    /// Observations of one connection closer than this are counted once (ms, s, m, h).
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub window: String,
    /// Longest flow line read, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub max_line_kib: usize,
    /// Fail (exit 2) at the first bad line instead of reporting and skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    Json,
    Dot,
    Mermaid,
    Svg,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  keycard flows graph edges.jsonl --format svg -o deps.svg
  keycard flows graph edges.jsonl --format mermaid
  keycard flows graph edges.jsonl --inventory dump/ --query 'label:data-classification=confidential'

A query prints a table of who talks to the workloads whose labels match
(label:KEY=VALUE or label:KEY), on which ports, instead of the graph.")]
pub struct FlowsGraphArgs {
    /// The edges file written by `keycard flows ingest`, or - for stdin.
    #[arg(value_name = "EDGES")]
    pub edges: PathBuf,
    /// Output format (default: json; a table for --query).
    #[arg(long, short, value_enum)]
    pub format: Option<GraphFormat>,
    /// Kubernetes objects, for the workloads' labels (queries need it).
    #[arg(long, value_name = "DIR")]
    pub inventory: Vec<PathBuf>,
    /// Only edges into workloads whose labels match: label:KEY=VALUE or label:KEY.
    #[arg(long, value_name = "QUERY")]
    pub query: Option<String>,
    /// Write here instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Fail (exit 2) on any bad edge line or inventory problem.
    #[arg(long)]
    pub strict: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOutput {
    Human,
    Json,
    Sarif,
    Junit,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    Critical,
    High,
    Medium,
    Low,
    Never,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  keycard check deploy/                       # pss-restricted + zero-trust, fail on high
  helm template ./chart | keycard check -     # rendered Helm or kustomize output on stdin
  keycard check k8s/ --policy policies/ --exceptions exceptions.yaml --output sarif > keycard.sarif
  keycard check k8s/ --pack pss-baseline --pss-version v1.29 --fail-on critical
  keycard check k8s/ --explain                # what each rule read, and why it fired

Exit status: 0 nothing at or above --fail-on remains, 1 something does, 2 usage or input error.")]
pub struct CheckArgs {
    /// Files, directories (searched recursively for *.yaml, *.yml, *.json) or - for stdin.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// A built-in pack (repeatable): pss-baseline, pss-restricted, zero-trust, or none.
    /// Default: pss-restricted and zero-trust.
    #[arg(long = "pack", value_name = "NAME")]
    pub packs: Vec<String>,
    /// A directory or file of your own Rego, data files and Gatekeeper
    /// ConstraintTemplates and Constraints (repeatable).
    #[arg(long = "policy", value_name = "DIR")]
    pub policies: Vec<PathBuf>,
    /// YAML or JSON file of pack parameters (e.g. allowed_registries, required_labels).
    #[arg(long, value_name = "FILE")]
    pub params: Option<PathBuf>,
    /// YAML file of exceptions, each with rule, match, owner, reason and expires.
    #[arg(long, value_name = "FILE")]
    pub exceptions: Option<PathBuf>,
    /// Pod Security Standards version: v1.0 .. v1.37, or latest.
    #[arg(long, value_name = "v1.N", default_value = "latest")]
    pub pss_version: String,
    #[arg(long, short, value_enum, default_value_t = CheckOutput::Human)]
    pub output: CheckOutput,
    /// Lowest severity that fails the run (exit 1).
    #[arg(long, value_enum, default_value_t = FailOn::High)]
    pub fail_on: FailOn,
    /// Show, for each finding, the rule, the input value it read and why it fired.
    #[arg(long)]
    pub explain: bool,
    /// Most time one object's evaluation may take, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Most memory one object's evaluation may allocate, in MiB (0: no limit).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub memory_limit_mib: u64,
    /// Largest input file read, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_file_mib: u64,
    /// Also record one decision per object checked in the tamper-evident
    /// decision log in DIR (audit.db, audit.key; see `keycard audit`). If the
    /// log cannot take them, the check fails (exit 2): no decision without
    /// evidence.
    #[arg(long, value_name = "DIR")]
    pub audit_log: Option<PathBuf>,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// List the built-in packs and their rules (--server: the policies pushed to a server).
    List(crate::cmd::policy_api::PolicyListArgs),
    /// Create or replace policies on a server (validated there), for its enforcers.
    Push(crate::cmd::policy_api::PushArgs),
    /// Print a policy pushed to a server.
    ShowPushed {
        /// The policy's name.
        name: String,
        #[command(flatten)]
        server: crate::cmd::entry::ServerArgs,
    },
    /// Delete a policy from a server.
    Delete {
        /// The policy's name.
        name: String,
        #[command(flatten)]
        server: crate::cmd::entry::ServerArgs,
    },
    /// Print a built-in pack's Rego source.
    Show {
        /// pss-baseline, pss-restricted or zero-trust.
        pack: String,
    },
    /// Run `test_*` rules in Rego files, like `opa test`.
    Test(PolicyTestArgs),
}

#[derive(Args, Debug)]
pub struct PolicyTestArgs {
    /// Directories or files of Rego and data (use `builtin` for the built-in packs' own tests).
    #[arg(value_name = "DIR", required = true)]
    pub paths: Vec<PathBuf>,
    /// Report line coverage per file.
    #[arg(long)]
    pub coverage: bool,
    /// Only tests whose package.name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub run: Option<String>,
    /// Most time one test may take, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = TestOutput::Human)]
    pub output: TestOutput,
    /// Print passing tests too, not only failures.
    #[arg(long)]
    pub show_passing: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestOutput {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum NetpolCommand {
    /// Decide every connection between workloads as Kubernetes would.
    Eval(NetpolEvalArgs),
    /// Least-privilege NetworkPolicies from observed edges (`keycard flows ingest`).
    Generate(NetpolGenerateArgs),
    /// Replay observed edges against a policy set: what would break, and the coverage.
    Simulate(NetpolSimulateArgs),
    /// Unused allow rules, denied attempts and new flows; or Git versus a cluster dump.
    Drift(NetpolDriftArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutput {
    Human,
    Json,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Writes a default-deny and a DNS allowance per namespace and one policy per
workload with ingress from its observed sources and egress to its observed
destinations. kube-system, kube-public and kube-node-lease are left alone
unless --include-system-namespaces.

Examples:
  keycard netpol generate edges.jsonl --inventory dump/ > policies.yaml
  keycard netpol generate edges.jsonl --inventory dump/ --output-dir policies/")]
pub struct NetpolGenerateArgs {
    /// The edges file written by `keycard flows ingest`, or - for stdin.
    #[arg(value_name = "EDGES")]
    pub edges: PathBuf,
    /// Kubernetes objects (a cluster dump or manifests) with the workloads.
    #[arg(long, value_name = "DIR", required = true)]
    pub inventory: Vec<PathBuf>,
    /// Write one file per namespace (NAMESPACE.yaml) here instead of stdout.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Also generate for kube-system, kube-public and kube-node-lease.
    #[arg(long)]
    pub include_system_namespaces: bool,
    /// Fail (exit 2) on any bad edge line, inventory problem or warning.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Exit status: 0 every observed allowed flow stays allowed, 1 some would be
denied, 2 usage or input error.")]
pub struct NetpolSimulateArgs {
    /// The edges file written by `keycard flows ingest`, or - for stdin.
    #[arg(value_name = "EDGES")]
    pub edges: PathBuf,
    /// Kubernetes objects with the workloads.
    #[arg(long, value_name = "DIR", required = true)]
    pub inventory: Vec<PathBuf>,
    /// The policy set to try (NetworkPolicies, admin policies).
    #[arg(long, value_name = "DIR", required = true)]
    pub policies: Vec<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = ReportOutput::Human)]
    pub output: ReportOutput,
    /// Fail (exit 2) on any bad input.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  keycard netpol drift edges.jsonl --inventory dump/ --policies policies/ --since 2024-05-01T00:00:00Z
  keycard netpol drift --declared policies/ --cluster dump/")]
pub struct NetpolDriftArgs {
    /// The edges file written by `keycard flows ingest` (not with --declared).
    #[arg(
        value_name = "EDGES",
        required_unless_present = "declared",
        conflicts_with = "declared"
    )]
    pub edges: Option<PathBuf>,
    /// Kubernetes objects with the workloads.
    #[arg(long, value_name = "DIR", requires = "edges")]
    pub inventory: Vec<PathBuf>,
    /// The policy set in force.
    #[arg(long, value_name = "DIR", requires = "edges")]
    pub policies: Vec<PathBuf>,
    /// Report edges first seen at or after this time (RFC 3339) as new.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Policies as declared in Git...
    #[arg(long, value_name = "DIR", requires = "cluster")]
    pub declared: Vec<PathBuf>,
    /// ...compared with the policies of a cluster dump.
    #[arg(long, value_name = "DUMP")]
    pub cluster: Vec<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = ReportOutput::Human)]
    pub output: ReportOutput,
    /// Fail (exit 2) on any bad input.
    #[arg(long)]
    pub strict: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetpolOutput {
    Connlist,
    Json,
}

#[derive(Args, Debug)]
pub struct NetpolEvalArgs {
    /// Files or directories of workloads, namespaces and policies, or - for stdin.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = NetpolOutput::Connlist)]
    pub output: NetpolOutput,
    /// Add the policy and rule that allowed each connection.
    #[arg(long)]
    pub explain: bool,
    /// Treat the cluster as dual-stack (or IPv6-only): list the IPv6
    /// outside world as external peers too.
    ///
    /// keycard detects dual-stack from Pods' status.podIPs, which manifests
    /// such as Deployments never carry; without this flag their IPv6 ipBlock
    /// rules stay out of the report. With it the IPv6 space is cut at every
    /// IPv6 ipBlock and except, and each piece is listed with what it may
    /// reach or be reached by. Workload-to-workload and IPv4 results are the
    /// same either way; `simulate` and `drift` judge IPv6 flows regardless.
    #[arg(long)]
    pub dual_stack: bool,
    /// Fail (exit 2) on any unreadable input or invalid policy, instead of
    /// reporting it on stderr and skipping it.
    #[arg(long)]
    pub strict: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
        super::ProxyCli::command().debug_assert();
    }

    /// `keycard proxy` parsed alone reads and explains itself exactly as
    /// the subcommand of the whole command line does.
    #[test]
    fn proxy_alone_matches_the_proxy_subcommand() {
        let mut full = super::Cli::command();
        full.build();
        let mut sub = full.find_subcommand_mut("proxy").unwrap().clone();
        let mut alone = super::ProxyCli::command();
        alone.build();
        assert_eq!(
            alone.render_long_help().to_string(),
            sub.render_long_help().to_string()
        );
        assert_eq!(
            alone.render_help().to_string(),
            sub.render_help().to_string()
        );
        assert_eq!(
            alone.render_usage().to_string(),
            sub.render_usage().to_string()
        );
        assert_eq!(alone.render_version(), sub.render_version());
    }
}
