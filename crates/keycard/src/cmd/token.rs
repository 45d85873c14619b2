//! `keycard token`: single-use join tokens for agents.

use clap::Subcommand;
use serde_json::json;

use super::entry::{call, ServerArgs};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a single-use, expiring join token for `keycard agent --join-token`.
    Generate {
        /// Lifetime in seconds (10 to 604800).
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        ttl: u64,
        /// Fix the agent's SPIFFE ID [default: derived from the token].
        #[arg(long, value_name = "ID")]
        agent_id: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<u8> {
    match cmd {
        TokenCommand::Generate {
            ttl,
            agent_id,
            server,
        } => {
            let v = call(
                &server,
                http::Method::POST,
                "/v1/join-tokens",
                Some(json!({ "ttl_secs": ttl, "agent_id": agent_id })),
            )?;
            if server.json {
                super::emit(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let s = |k: &str| {
                    v.get(k)
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                        .unwrap_or_default()
                };
                super::emit(&format!("{}\n", s("token")))?;
                eprintln!(
                    "single use; expires at {} (Unix seconds); agent ID {}",
                    s("expires_at"),
                    s("agent_id")
                );
            }
            Ok(0)
        }
    }
}
