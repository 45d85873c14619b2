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
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check Kubernetes manifests against policy packs and your own Rego (for CI).
    Check(CheckArgs),
    /// List, show and test policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Evaluate Kubernetes NetworkPolicies: who can reach whom.
    #[command(subcommand)]
    Netpol(NetpolCommand),
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
    /// Largest input file read, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_file_mib: u64,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// List the built-in packs and their rules.
    List,
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
    }
}
