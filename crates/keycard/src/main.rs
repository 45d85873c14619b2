//! The `keycard` binary: parse the command line, set up logging, run the
//! subcommand. Everything else lives in the library crates.

use std::io::IsTerminal;
use std::process::ExitCode;

mod cli;
mod cmd;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_args();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYCARD_LOG").unwrap_or_else(|_| {
                // kube's client logs every failed request on its own; keycard
                // reports those failures itself, with what they mean.
                tracing_subscriber::EnvFilter::new(if cli.verbose {
                    "debug"
                } else {
                    "warn,kube=off,kube_client=off"
                })
            }),
        )
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match cmd::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
