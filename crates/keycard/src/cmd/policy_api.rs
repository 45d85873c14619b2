//! `keycard policy push|list --server|show-pushed|delete` and `keycard
//! exception ...`: policies and exceptions as resources of a running
//! server, through its API. The server validates every push (an invalid
//! file is refused with its file, line and field, and nothing is stored)
//! and its agents bring each change to the enforcers of their nodes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::entry::{call, ServerArgs};

/// What a pushed file holds.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushKind {
    /// keycard AuthorizationPolicies (proxy, ext_authz).
    Authz,
    /// A Rego module (admission).
    Rego,
    /// Gatekeeper ConstraintTemplates and constraints (admission).
    Gatekeeper,
}

impl PushKind {
    fn as_str(self) -> &'static str {
        match self {
            PushKind::Authz => "authz",
            PushKind::Rego => "rego",
            PushKind::Gatekeeper => "gatekeeper",
        }
    }
}

#[derive(Args, Debug)]
pub struct PolicyListArgs {
    /// List the policies pushed to the server instead of the built-in packs.
    #[arg(long)]
    pub server: bool,
    #[command(flatten)]
    pub api: ServerArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
The kind is guessed from the file: .rego is rego, a YAML/JSON file with a
ConstraintTemplate or a constraints.gatekeeper.sh object is gatekeeper, any
other YAML/JSON is authz. The name is the file's name without extension
(lower-cased), unless --name is given. Pushing a name again replaces it.

Examples:
  keycard policy push policies/web-allow.yaml
  keycard policy push --name team-rules policies/team.rego
  keycard policy list --server
  keycard policy delete web-allow")]
pub struct PushArgs {
    /// Policy files to push, one policy each.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// The policy's name (with one file only).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The kind, when the guess is wrong.
    #[arg(long, value_enum)]
    pub kind: Option<PushKind>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Subcommand, Debug)]
pub enum ExceptionCommand {
    /// Create or replace an exceptions document from a file (exceptions: [...]).
    Push {
        /// The exceptions file.
        file: PathBuf,
        /// Its name [default: the file's name without extension].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List exception documents.
    List(ServerArgs),
    /// Print one exceptions document.
    Show {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete an exceptions document.
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// The name a file is pushed under: its stem, lower-cased, with anything
/// but `[a-z0-9._-]` turned into `-`.
pub fn name_from_file(path: &Path) -> anyhow::Result<String> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{}: no file name to name the policy by", path.display()))?;
    let name: String = stem
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if name.is_empty() {
        bail!("{}: give --name", path.display());
    }
    Ok(name.chars().take(63).collect())
}

/// The kind a file probably holds.
pub fn guess_kind(path: &Path, text: &str) -> PushKind {
    if path.extension().and_then(|e| e.to_str()) == Some("rego") {
        return PushKind::Rego;
    }
    let gatekeeper = text.lines().any(|l| {
        let l = l.trim();
        (l.starts_with("kind:") && l.contains("ConstraintTemplate"))
            || (l.starts_with("apiVersion:") && l.contains("constraints.gatekeeper.sh"))
            || l.contains("\"ConstraintTemplate\"")
            || l.contains("constraints.gatekeeper.sh/")
    });
    if gatekeeper {
        PushKind::Gatekeeper
    } else {
        PushKind::Authz
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn show_json(
    server: &ServerArgs,
    v: &Value,
    text: impl FnOnce(&Value) -> String,
) -> anyhow::Result<u8> {
    if server.json {
        super::emit(&format!("{}\n", serde_json::to_string_pretty(v)?))?;
    } else {
        super::emit(&text(v))?;
    }
    Ok(0)
}

fn line(v: &Value) -> String {
    let s = |k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(x) if !x.is_null() => x.to_string(),
        _ => "-".into(),
    };
    format!(
        "{}  {}  rev {}  {}  by {}\n",
        s("name"),
        s("kind"),
        s("revision"),
        s("digest").get(..12).unwrap_or("-"),
        s("updated_by")
    )
}

fn table(v: &Value, key: &str) -> String {
    let items = v
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if items.is_empty() {
        return format!("no {key}\n");
    }
    items.iter().map(line).collect()
}

/// `keycard policy push`.
pub fn push(a: PushArgs) -> anyhow::Result<u8> {
    if a.name.is_some() && a.files.len() > 1 {
        bail!("--name names one policy: push one file with it");
    }
    for f in &a.files {
        let text = read(f)?;
        let name = match &a.name {
            Some(n) => n.clone(),
            None => name_from_file(f)?,
        };
        let kind = a.kind.unwrap_or_else(|| guess_kind(f, &text));
        let v = call(
            &a.server,
            http::Method::PUT,
            &format!("/v1/policies/{name}"),
            Some(json!({ "kind": kind.as_str(), "text": text })),
        )
        .with_context(|| format!("pushing {}", f.display()))?;
        show_json(&a.server, &v, |v| format!("pushed {}", line(v)))?;
    }
    Ok(0)
}

/// `keycard policy list`: the built-in packs, or with `--server` the
/// policies pushed to the server.
pub fn list(a: PolicyListArgs, packs: impl FnOnce() -> anyhow::Result<u8>) -> anyhow::Result<u8> {
    if !a.server {
        return packs();
    }
    let v = call(&a.api, http::Method::GET, "/v1/policies", None)?;
    show_json(&a.api, &v, |v| table(v, "policies"))
}

/// `keycard policy show-pushed NAME`.
pub fn show(name: &str, server: &ServerArgs) -> anyhow::Result<u8> {
    let v = call(
        server,
        http::Method::GET,
        &format!("/v1/policies/{name}"),
        None,
    )?;
    show_json(server, &v, |v| {
        v.get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    })
}

/// `keycard policy delete NAME`.
pub fn delete(name: &str, server: &ServerArgs) -> anyhow::Result<u8> {
    let v = call(
        server,
        http::Method::DELETE,
        &format!("/v1/policies/{name}"),
        None,
    )?;
    show_json(server, &v, |_| format!("deleted policy {name}\n"))
}

/// `keycard exception ...`.
pub fn exception(cmd: ExceptionCommand) -> anyhow::Result<u8> {
    match cmd {
        ExceptionCommand::Push { file, name, server } => {
            let text = read(&file)?;
            let name = match name {
                Some(n) => n,
                None => name_from_file(&file)?,
            };
            let v = call(
                &server,
                http::Method::PUT,
                &format!("/v1/exceptions/{name}"),
                Some(json!({ "text": text })),
            )
            .with_context(|| format!("pushing {}", file.display()))?;
            show_json(&server, &v, |v| format!("pushed {}", line(v)))
        }
        ExceptionCommand::List(server) => {
            let v = call(&server, http::Method::GET, "/v1/exceptions", None)?;
            show_json(&server, &v, |v| table(v, "exceptions"))
        }
        ExceptionCommand::Show { name, server } => {
            let v = call(
                &server,
                http::Method::GET,
                &format!("/v1/exceptions/{name}"),
                None,
            )?;
            show_json(&server, &v, |v| {
                v.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            })
        }
        ExceptionCommand::Delete { name, server } => {
            let v = call(
                &server,
                http::Method::DELETE,
                &format!("/v1/exceptions/{name}"),
                None,
            )?;
            show_json(&server, &v, |_| format!("deleted exceptions {name}\n"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kinds_come_from_the_file() {
        assert_eq!(
            name_from_file(Path::new("p/Web Allow.yaml")).unwrap(),
            "web-allow"
        );
        assert!(name_from_file(Path::new("p/__.yaml")).is_err());
        assert_eq!(guess_kind(Path::new("a.rego"), ""), PushKind::Rego);
        assert_eq!(
            guess_kind(
                Path::new("t.yaml"),
                "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\n"
            ),
            PushKind::Gatekeeper
        );
        assert_eq!(
            guess_kind(
                Path::new("a.yaml"),
                "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\n"
            ),
            PushKind::Authz
        );
    }
}
