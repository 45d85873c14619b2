//! One file per subcommand.

use crate::cli::{Command, FlowsCommand, NetpolCommand, PolicyCommand};

pub mod admission;
pub mod agent;
pub mod assess;
pub mod audit;
pub mod authz;
mod check;
pub mod entry;
mod flows;
mod netpol;
mod policy;
pub mod policy_api;
pub mod proxy;
pub mod server;
pub mod token;
pub mod up;

/// Run a subcommand; the value is the process exit code.
pub fn run(cmd: Command) -> anyhow::Result<u8> {
    match cmd {
        Command::Check(args) => check::run(args),
        Command::Assess(args) => assess::run(args),
        Command::WhoCan(args) => assess::who_can(args),
        Command::Policy(PolicyCommand::List(a)) => policy_api::list(a, policy::list),
        Command::Policy(PolicyCommand::Push(a)) => policy_api::push(a),
        Command::Policy(PolicyCommand::ShowPushed { name, server }) => {
            policy_api::show(&name, &server)
        }
        Command::Policy(PolicyCommand::Delete { name, server }) => {
            policy_api::delete(&name, &server)
        }
        Command::Policy(PolicyCommand::Show { pack }) => policy::show(&pack),
        Command::Policy(PolicyCommand::Test(args)) => policy::test(args),
        Command::Netpol(NetpolCommand::Eval(args)) => netpol::eval(args),
        Command::Netpol(NetpolCommand::Generate(args)) => netpol::generate(args),
        Command::Netpol(NetpolCommand::Simulate(args)) => netpol::simulate(args),
        Command::Netpol(NetpolCommand::Drift(args)) => netpol::drift(args),
        Command::Flows(FlowsCommand::Ingest(args)) => flows::ingest(args),
        Command::Flows(FlowsCommand::Graph(args)) => flows::graph(args),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Admission(cmd) => admission::run(cmd),
        Command::Authz(cmd) => authz::run(cmd),
        Command::Proxy(args) => proxy::run(args),
        Command::Up(args) => up::run(args),
        Command::Server(args) => server::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Entry(cmd) => entry::run(cmd),
        Command::Token(cmd) => token::run(cmd),
        Command::Exception(cmd) => policy_api::exception(cmd),
    }
}

/// Write to stdout; a closed pipe (`keycard … | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
