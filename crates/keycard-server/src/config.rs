//! The configuration of `keycard up` and `keycard server`: a TOML file, every
//! key optional with a documented default, parsed once into [`UpConfig`] and
//! shared. Unknown keys are errors, and every error names the key.
//!
//! Every key, with its default and meaning, is in [`EXAMPLE_CONFIG`]
//! (`keycard up --print-config` prints it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keycard_core::TrustDomain;
use serde::Deserialize;

/// The documented configuration: every key with its default.
pub const EXAMPLE_CONFIG: &str = include_str!("../keycard.example.toml");

/// Why a configuration is unusable. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: String,
        key: &'static str,
        reason: String,
    },
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct UpConfig {
    pub data_dir: PathBuf,
    pub trust_domain: TrustDomain,
    pub instance: String,
    pub api_listen: SocketAddr,
    pub agent_socket: PathBuf,
    pub agent_socket_mode: u32,
    pub admission_enabled: bool,
    pub admission_listen: SocketAddr,
    pub admission_dry_run: bool,
    pub x509_svid_ttl: Duration,
    pub jwt_svid_ttl: Duration,
    pub intermediate_ttl: Duration,
    pub root_cert: Option<PathBuf>,
    pub root_key: Option<PathBuf>,
    pub postgres: Option<String>,
    /// Run the in-process agent and its Workload API socket (`keycard up`);
    /// `keycard server` turns it off and serves remote agents only.
    pub agent_enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    data_dir: Option<PathBuf>,
    trust_domain: Option<String>,
    instance: Option<String>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    admission: RawAdmission,
    #[serde(default)]
    ca: RawCa,
    #[serde(default)]
    store: RawStore,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    socket: Option<PathBuf>,
    socket_mode: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmission {
    enabled: Option<bool>,
    listen: Option<String>,
    dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    x509_svid_ttl: Option<String>,
    jwt_svid_ttl: Option<String>,
    intermediate_ttl: Option<String>,
    root_cert: Option<PathBuf>,
    root_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    postgres: Option<String>,
}

/// Command-line values, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub trust_domain: Option<String>,
    pub api_listen: Option<String>,
    pub agent_socket: Option<PathBuf>,
    pub admission_listen: Option<String>,
    pub no_admission: bool,
    pub postgres: Option<String>,
}

/// A duration written `90s`, `5m`, `1h`, `3d` or as plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 5m, 1h or 3d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

impl UpConfig {
    /// Reads `path` (if given) and applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let (raw, name) = match path {
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: name.clone(),
                    source,
                })?;
                (Self::parse_raw(&text, &name)?, name)
            }
            None => (Raw::default(), "command line".to_string()),
        };
        Self::resolve(raw, overrides, &name)
    }

    /// Parses configuration text (`name` labels errors).
    pub fn parse(text: &str, name: &str, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::resolve(Self::parse_raw(text, name)?, overrides, name)
    }

    fn parse_raw(text: &str, name: &str) -> Result<Raw, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    fn resolve(raw: Raw, o: &Overrides, path: &str) -> Result<Self, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_string(),
            key,
            reason,
        };
        let data_dir = o
            .data_dir
            .clone()
            .or(raw.data_dir)
            .unwrap_or_else(|| PathBuf::from(".keycard"));
        let td = o
            .trust_domain
            .clone()
            .or(raw.trust_domain)
            .unwrap_or_else(|| "keycard.local".to_string());
        let trust_domain: TrustDomain = td
            .parse()
            .map_err(|e| invalid("trust_domain", format!("{td:?}: {e}")))?;
        let instance = raw.instance.unwrap_or_else(|| "up".to_string());
        if instance.is_empty()
            || instance.len() > 64
            || !instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "instance",
                format!("{instance:?} must be 1-64 of [A-Za-z0-9_-]"),
            ));
        }
        let addr = |key: &'static str, v: Option<String>, default: &str| {
            let v = v.unwrap_or_else(|| default.to_string());
            v.parse::<SocketAddr>()
                .map_err(|e| invalid(key, format!("{v:?} is not host:port ({e})")))
        };
        let api_listen = addr(
            "api.listen",
            o.api_listen.clone().or(raw.api.listen),
            "127.0.0.1:8443",
        )?;
        let admission_listen = addr(
            "admission.listen",
            o.admission_listen.clone().or(raw.admission.listen),
            "127.0.0.1:8444",
        )?;
        let agent_socket = o
            .agent_socket
            .clone()
            .or(raw.agent.socket)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| data_dir.join("agent.sock"));
        let agent_socket_mode = raw.agent.socket_mode.unwrap_or(0o666);
        if agent_socket_mode > 0o777 {
            return Err(invalid(
                "agent.socket_mode",
                format!("{agent_socket_mode:o} is not a permission mode"),
            ));
        }
        let dur = |key: &'static str, v: Option<String>, default: u64| match v {
            None => Ok(Duration::from_secs(default)),
            Some(s) => parse_duration(&s).map_err(|e| invalid(key, e)),
        };
        let x509_svid_ttl = dur("ca.x509_svid_ttl", raw.ca.x509_svid_ttl, 3600)?;
        let jwt_svid_ttl = dur("ca.jwt_svid_ttl", raw.ca.jwt_svid_ttl, 300)?;
        let intermediate_ttl = dur("ca.intermediate_ttl", raw.ca.intermediate_ttl, 3 * 86400)?;
        if intermediate_ttl <= x509_svid_ttl * 2 {
            return Err(invalid(
                "ca.intermediate_ttl",
                "must be more than twice ca.x509_svid_ttl, so SVIDs renew before their CA expires"
                    .into(),
            ));
        }
        let nonempty = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        let root_cert = nonempty(raw.ca.root_cert);
        let root_key = nonempty(raw.ca.root_key);
        if root_cert.is_some() != root_key.is_some() {
            return Err(invalid(
                "ca.root_cert",
                "ca.root_cert and ca.root_key go together".into(),
            ));
        }
        let postgres = o
            .postgres
            .clone()
            .or(raw.store.postgres)
            .filter(|s| !s.is_empty());
        Ok(UpConfig {
            data_dir,
            trust_domain,
            instance,
            api_listen,
            agent_socket,
            agent_socket_mode,
            admission_enabled: !o.no_admission && raw.admission.enabled.unwrap_or(true),
            admission_listen,
            admission_dry_run: raw.admission.dry_run.unwrap_or(false),
            x509_svid_ttl,
            jwt_svid_ttl,
            intermediate_ttl,
            root_cert,
            root_key,
            postgres,
            agent_enabled: true,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UpConfig, ConfigError> {
        UpConfig::parse(text, "keycard.toml", &Overrides::default())
    }

    #[test]
    fn defaults_are_a_working_local_trust_domain() {
        let c = parse("").unwrap();
        assert_eq!(c.trust_domain.as_str(), "keycard.local");
        assert_eq!(c.agent_socket, PathBuf::from(".keycard/agent.sock"));
        assert_eq!(c.api_listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.x509_svid_ttl, Duration::from_secs(3600));
        assert!(c.admission_enabled && c.postgres.is_none());
    }

    #[test]
    fn the_documented_example_parses() {
        let body = EXAMPLE_CONFIG;
        let c = parse(body).unwrap();
        assert_eq!(c.admission_listen.to_string(), "127.0.0.1:8444");
        assert_eq!(c.jwt_svid_ttl, Duration::from_secs(300));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("trust_domain = \"Bad Domain\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("trust_domain"), "{e}");
        let e = parse("[api]\nlisten = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.listen"), "{e}");
        let e = parse("[ca]\nx509_svid_ttl = \"1 fortnight\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca.x509_svid_ttl"), "{e}");
        let e = parse("[ca]\nx509_svid_ttl = \"2d\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca.intermediate_ttl"), "{e}");
        let e = parse("[api]\nlisten_on = \"x\"").unwrap_err().to_string();
        assert!(e.contains("listen_on"), "{e}");
        let e = parse("[ca]\nroot_cert = \"a.pem\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("root_key"), "{e}");
    }

    #[test]
    fn command_line_wins_over_the_file() {
        let o = Overrides {
            data_dir: Some("/tmp/kc".into()),
            trust_domain: Some("example.org".into()),
            ..Overrides::default()
        };
        let c = UpConfig::parse("trust_domain = \"file.org\"", "f", &o).unwrap();
        assert_eq!(c.trust_domain.as_str(), "example.org");
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/kc/agent.sock"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("3d").unwrap(), Duration::from_secs(259200));
        assert_eq!(parse_duration("42").unwrap(), Duration::from_secs(42));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
