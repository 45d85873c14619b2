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
use keycard_identity::{EndpointProfile, PsatConfig, RefreshBounds};
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
    /// Kubernetes workload attestation through the kubelet
    /// (`[agent.k8s]`); `None` = off.
    pub agent_k8s: Option<keycard_workload_api::KubeletConfig>,
    /// Kubernetes clusters whose agents attest with projected
    /// service-account tokens (`[[k8s_psat]]`).
    pub k8s_psat: Vec<PsatCluster>,
    /// Other trust domains whose bundles this server fetches
    /// (`[[federation]]`).
    pub federation: Vec<Federation>,
    /// How this server's own bundle is published (`[bundle_endpoint]`).
    pub bundle_endpoint: BundleEndpoint,
}

/// One Kubernetes cluster for PSAT node attestation.
#[derive(Debug, Clone)]
pub struct PsatCluster {
    pub psat: PsatConfig,
    pub keys: PsatKeys,
}

/// Where a cluster's service-account tokens are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsatKeys {
    /// The issuer's JWKS in a file (re-read on every attestation).
    JwksFile(PathBuf),
    /// The issuer's JWKS, or its OIDC discovery document, over HTTPS;
    /// cached for `refresh` (and re-fetched early when a token names an
    /// unknown key).
    JwksUrl {
        url: String,
        ca_file: Option<PathBuf>,
        refresh: Duration,
    },
    /// A TokenReview on the API server, as `token_file`'s bearer.
    TokenReview {
        url: String,
        ca_file: Option<PathBuf>,
        token_file: PathBuf,
    },
}

/// A federation relationship: another trust domain's bundle endpoint.
#[derive(Debug, Clone)]
pub struct Federation {
    pub trust_domain: TrustDomain,
    pub url: String,
    pub profile: EndpointProfile,
    /// `https_web`: the roots for the endpoint (`None`: the system's).
    pub ca_file: Option<PathBuf>,
    /// `https_spiffe`: the endpoint trust domain's bundle to start from.
    pub bundle_file: Option<PathBuf>,
    pub refresh: RefreshBounds,
}

/// The bundle endpoint: `/bundle` on the API listener always; optionally a
/// listener of its own, with a Web PKI certificate (`https_web`) or the
/// server's SVID (`https_spiffe`).
#[derive(Debug, Clone)]
pub struct BundleEndpoint {
    pub listen: Option<SocketAddr>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `spiffe_refresh_hint` of the served bundle.
    pub refresh_hint: Duration,
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
    #[serde(default)]
    k8s_psat: Vec<RawPsat>,
    #[serde(default)]
    federation: Vec<RawFederation>,
    #[serde(default)]
    bundle_endpoint: RawBundleEndpoint,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPsat {
    cluster: String,
    audience: Option<String>,
    #[serde(default)]
    allowed_service_accounts: Vec<String>,
    issuer: Option<String>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    jwks_ca_file: Option<PathBuf>,
    jwks_refresh: Option<String>,
    token_review_url: Option<String>,
    token_review_ca_file: Option<PathBuf>,
    token_review_token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    trust_domain: String,
    bundle_endpoint_url: String,
    profile: String,
    endpoint_spiffe_id: Option<String>,
    bundle_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    min_refresh: Option<String>,
    max_refresh: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundleEndpoint {
    listen: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    refresh_hint: Option<String>,
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
    #[serde(default)]
    k8s: RawAgentK8s,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentK8s {
    enabled: Option<bool>,
    kubelet_url: Option<String>,
    ca_file: Option<PathBuf>,
    skip_verify: Option<bool>,
    token_file: Option<PathBuf>,
    node_name: Option<String>,
    node_name_env: Option<String>,
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
        let agent_k8s = match raw.agent.k8s {
            k if k.enabled.unwrap_or(false) => {
                let env = k.node_name_env.filter(|v| !v.is_empty());
                let node_name = match (k.node_name.filter(|n| !n.is_empty()), env) {
                    (Some(n), _) => Some(n),
                    (None, Some(var)) => match std::env::var(&var) {
                        Ok(n) if !n.is_empty() => Some(n),
                        _ => {
                            return Err(invalid(
                                "agent.k8s.node_name_env",
                                format!("the environment variable {var} is not set"),
                            ))
                        }
                    },
                    (None, None) => None,
                };
                let kubelet = keycard_workload_api::KubeletConfig {
                    url: k.kubelet_url.filter(|u| !u.is_empty()),
                    ca_file: k.ca_file.filter(|p| !p.as_os_str().is_empty()),
                    skip_verify: k.skip_verify.unwrap_or(false),
                    token_file: k
                        .token_file
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or_else(|| {
                            PathBuf::from(keycard_workload_api::attest::kubelet::DEFAULT_TOKEN_FILE)
                        }),
                    node_name,
                    ..keycard_workload_api::KubeletConfig::default()
                };
                kubelet
                    .resolved_url()
                    .map_err(|e| invalid("agent.k8s.kubelet_url", e.to_string()))?;
                Some(kubelet)
            }
            _ => None,
        };
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
        let k8s_psat = resolve_psat(raw.k8s_psat).map_err(|r| invalid("k8s_psat", r))?;
        let federation = resolve_federation(raw.federation, &trust_domain)
            .map_err(|r| invalid("federation", r))?;
        let be = raw.bundle_endpoint;
        let bundle_endpoint = BundleEndpoint {
            listen: match be.listen.filter(|s| !s.is_empty()) {
                None => None,
                Some(v) => Some(addr("bundle_endpoint.listen", Some(v), "")?),
            },
            cert_file: nonempty(be.cert_file),
            key_file: nonempty(be.key_file),
            refresh_hint: dur("bundle_endpoint.refresh_hint", be.refresh_hint, 300)?,
        };
        if bundle_endpoint.cert_file.is_some() != bundle_endpoint.key_file.is_some() {
            return Err(invalid(
                "bundle_endpoint.cert_file",
                "bundle_endpoint.cert_file and bundle_endpoint.key_file go together".into(),
            ));
        }
        if bundle_endpoint.cert_file.is_some() && bundle_endpoint.listen.is_none() {
            return Err(invalid(
                "bundle_endpoint.listen",
                "a Web PKI certificate needs a listener of its own (bundle_endpoint.listen)".into(),
            ));
        }
        if bundle_endpoint.refresh_hint < Duration::from_secs(1) {
            return Err(invalid(
                "bundle_endpoint.refresh_hint",
                "must be at least one second".into(),
            ));
        }
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
            agent_k8s,
            k8s_psat,
            federation,
            bundle_endpoint,
        })
    }
}

fn nonempty_path(p: Option<PathBuf>) -> Option<PathBuf> {
    p.filter(|p| !p.as_os_str().is_empty())
}

fn nonempty_str(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn https_url(what: &str, v: &str) -> Result<(), String> {
    crate::outbound::HttpsUrl::parse(v)
        .map(|_| ())
        .map_err(|_| format!("{what}: {v:?} is not an https:// URL"))
}

fn resolve_psat(raw: Vec<RawPsat>) -> Result<Vec<PsatCluster>, String> {
    let mut out: Vec<PsatCluster> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = format!("[{i}] (cluster {:?})", r.cluster);
        let psat = PsatConfig {
            cluster: r.cluster.clone(),
            audience: nonempty_str(r.audience).unwrap_or_else(|| "keycard".to_string()),
            issuer: nonempty_str(r.issuer),
            allowed_service_accounts: r.allowed_service_accounts,
        };
        psat.check().map_err(|e| format!("{at}: {e}"))?;
        for sa in &psat.allowed_service_accounts {
            let ok = sa
                .split_once(':')
                .is_some_and(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains(':'));
            if !ok {
                return Err(format!(
                    "{at}: allowed_service_accounts: {sa:?} is not namespace:name"
                ));
            }
        }
        if out.iter().any(|c| c.psat.cluster == psat.cluster) {
            return Err(format!("{at}: cluster {:?} is listed twice", psat.cluster));
        }
        let jwks_file = nonempty_path(r.jwks_file);
        let jwks_url = nonempty_str(r.jwks_url);
        let review = nonempty_str(r.token_review_url);
        let keys = match (jwks_file, jwks_url, review) {
            (Some(f), None, None) => PsatKeys::JwksFile(f),
            (None, Some(url), None) => {
                https_url(&format!("{at}: jwks_url"), &url)?;
                let refresh = match nonempty_str(r.jwks_refresh) {
                    None => Duration::from_secs(300),
                    Some(s) => {
                        parse_duration(&s).map_err(|e| format!("{at}: jwks_refresh: {e}"))?
                    }
                };
                if refresh < Duration::from_secs(1) {
                    return Err(format!("{at}: jwks_refresh must be at least 1s"));
                }
                PsatKeys::JwksUrl {
                    url,
                    ca_file: nonempty_path(r.jwks_ca_file),
                    refresh,
                }
            }
            (None, None, Some(url)) => {
                https_url(&format!("{at}: token_review_url"), &url)?;
                let token_file = nonempty_path(r.token_review_token_file).ok_or_else(|| {
                    format!("{at}: token_review_url needs token_review_token_file (the API bearer token)")
                })?;
                PsatKeys::TokenReview {
                    url,
                    ca_file: nonempty_path(r.token_review_ca_file),
                    token_file,
                }
            }
            _ => {
                return Err(format!(
                    "{at}: give exactly one of jwks_file, jwks_url and token_review_url"
                ))
            }
        };
        out.push(PsatCluster { psat, keys });
    }
    Ok(out)
}

fn resolve_federation(
    raw: Vec<RawFederation>,
    own: &TrustDomain,
) -> Result<Vec<Federation>, String> {
    let mut out: Vec<Federation> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = format!("[{i}] (trust domain {:?})", r.trust_domain);
        let trust_domain: TrustDomain = r
            .trust_domain
            .parse()
            .map_err(|e| format!("{at}: trust_domain: {e}"))?;
        if &trust_domain == own {
            return Err(format!(
                "{at}: a server does not federate with its own trust domain"
            ));
        }
        if out.iter().any(|f| f.trust_domain == trust_domain) {
            return Err(format!("{at}: listed twice"));
        }
        https_url(
            &format!("{at}: bundle_endpoint_url"),
            &r.bundle_endpoint_url,
        )?;
        let profile = EndpointProfile::parse(&r.profile, r.endpoint_spiffe_id.as_deref())
            .map_err(|e| format!("{at}: {e}"))?;
        let ca_file = nonempty_path(r.ca_file);
        let bundle_file = nonempty_path(r.bundle_file);
        match &profile {
            EndpointProfile::HttpsWeb => {
                if bundle_file.is_some() {
                    return Err(format!("{at}: bundle_file is for the https_spiffe profile"));
                }
            }
            EndpointProfile::HttpsSpiffe { endpoint_id } => {
                if ca_file.is_some() {
                    return Err(format!("{at}: ca_file is for the https_web profile"));
                }
                if bundle_file.is_none() {
                    return Err(format!(
                        "{at}: the https_spiffe profile needs bundle_file (the endpoint trust domain's bundle to start from)"
                    ));
                }
                if endpoint_id.trust_domain() != &trust_domain {
                    return Err(format!(
                        "{at}: endpoint_spiffe_id {endpoint_id} is not in {trust_domain}"
                    ));
                }
            }
        }
        let d = |k: &str, v: Option<String>, def: u64| match nonempty_str(v) {
            None => Ok(Duration::from_secs(def)),
            Some(s) => parse_duration(&s).map_err(|e| format!("{at}: {k}: {e}")),
        };
        let refresh = RefreshBounds::new(
            d("min_refresh", r.min_refresh, 30)?,
            d("max_refresh", r.max_refresh, 3600)?,
        )
        .map_err(|e| format!("{at}: {e}"))?;
        out.push(Federation {
            trust_domain,
            url: r.bundle_endpoint_url,
            profile,
            ca_file,
            bundle_file,
            refresh,
        });
    }
    Ok(out)
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

    /// The commented `[[k8s_psat]]` and `[[federation]]` examples, made live.
    fn uncommented_example() -> String {
        EXAMPLE_CONFIG
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with("[[")
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        }) =>
                {
                    rest.to_string()
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replace("jwks_file = \"\"", "jwks_file = \"jwks.json\"")
    }

    #[test]
    fn the_commented_psat_and_federation_examples_parse() {
        let c = parse(&uncommented_example()).unwrap();
        assert_eq!(c.k8s_psat.len(), 1);
        let p = &c.k8s_psat[0];
        assert_eq!(p.psat.cluster, "prod");
        assert_eq!(p.psat.audience, "keycard");
        assert_eq!(p.psat.allowed_service_accounts, ["keycard:keycard-agent"]);
        assert_eq!(p.keys, PsatKeys::JwksFile("jwks.json".into()));
        assert_eq!(c.federation.len(), 1);
        let f = &c.federation[0];
        assert_eq!(f.trust_domain.as_str(), "b.example");
        assert!(matches!(f.profile, EndpointProfile::HttpsSpiffe { .. }));
        assert_eq!(f.refresh.min, Duration::from_secs(30));
        assert_eq!(c.bundle_endpoint.refresh_hint, Duration::from_secs(300));
        assert!(c.bundle_endpoint.listen.is_none());
    }

    #[test]
    fn psat_and_federation_errors_name_the_key() {
        let psat = |extra: &str| {
            parse(&format!(
                "[[k8s_psat]]\ncluster = \"c\"\nallowed_service_accounts = [\"ns:sa\"]\n{extra}"
            ))
        };
        assert!(psat("jwks_file = \"j\"").is_ok());
        let e = psat("").unwrap_err().to_string();
        assert!(e.contains("k8s_psat") && e.contains("exactly one"), "{e}");
        let e = psat("jwks_file = \"j\"\ntoken_review_url = \"https://k\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one"), "{e}");
        let e = psat("token_review_url = \"https://k\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("token_review_token_file"), "{e}");
        let e = psat("jwks_url = \"http://k/jwks\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("https://"), "{e}");
        let e = parse(
            "[[k8s_psat]]\ncluster = \"c\"\nallowed_service_accounts = [\"sa\"]\njwks_file = \"j\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("namespace:name"), "{e}");
        let e = parse("[[k8s_psat]]\ncluster = \"c/d\"\nallowed_service_accounts = [\"a:b\"]\njwks_file = \"j\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster"), "{e}");

        let fed = |extra: &str| {
            parse(&format!(
                "[[federation]]\ntrust_domain = \"b.test\"\nbundle_endpoint_url = \"https://127.0.0.1:1/bundle\"\n{extra}"
            ))
        };
        assert!(fed("profile = \"https_web\"").is_ok());
        let e = fed("profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://b.test/s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bundle_file"), "{e}");
        let e = fed("profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://c.test/s\"\nbundle_file = \"b\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in b.test"), "{e}");
        let e = fed("profile = \"https_web\"\nmin_refresh = \"2h\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("federation") && e.contains("maximum"), "{e}");
        let e = parse("[[federation]]\ntrust_domain = \"keycard.local\"\nbundle_endpoint_url = \"https://x/\"\nprofile = \"https_web\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("own trust domain"), "{e}");
        let e = parse("[bundle_endpoint]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bundle_endpoint.listen"), "{e}");
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
    fn agent_k8s_is_off_by_default_and_checked_when_on() {
        assert!(parse("").unwrap().agent_k8s.is_none());
        let c = parse("[agent.k8s]\nenabled = true\nnode_name = \"node-a\"\nca_file = \"/etc/kubelet-ca.pem\"")
            .unwrap();
        let k = c.agent_k8s.unwrap();
        assert_eq!(k.resolved_url().unwrap(), "https://node-a:10250");
        assert_eq!(k.ca_file, Some(PathBuf::from("/etc/kubelet-ca.pem")));
        assert!(!k.skip_verify);
        assert!(k.token_file.ends_with("serviceaccount/token"));
        let e = parse("[agent.k8s]\nenabled = true\nkubelet_url = \"http://node-a:10255\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.k8s.kubelet_url"), "{e}");
        let e =
            parse("[agent.k8s]\nenabled = true\nnode_name_env = \"KEYCARD_TEST_UNSET_NODE_NAME\"")
                .unwrap_err()
                .to_string();
        assert!(e.contains("agent.k8s.node_name_env"), "{e}");
        let e = parse("[agent.k8s]\nenable = true").unwrap_err().to_string();
        assert!(e.contains("enable"), "{e}");
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
