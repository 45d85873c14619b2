//! Bearer JWT validation with ring: JWT-SVIDs against a SPIFFE bundle
//! (JWKS), OIDC tokens against a provider's JWKS (file or URL).
//!
//! Refused: `alg: none`, HMAC algorithms, a key whose type or `alg` does not
//! fit the token's `alg` (algorithm confusion), tokens over
//! [`MAX_TOKEN_BYTES`], a bad signature, an unknown `kid`, a missing or
//! past `exp`, a future `nbf` (both with leeway), the wrong `iss` or `aud`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::request::Claims;

/// Largest bearer token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// Most keys kept from one JWKS.
pub const MAX_JWKS_KEYS: usize = 256;

/// Why a token was refused. The messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is over {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the token is not a compact JWS (header.payload.signature)")]
    Malformed,
    #[error("the token header is not valid: {0}")]
    Header(String),
    #[error("alg {0:?} is not accepted")]
    Algorithm(String),
    #[error("the claims are not a JSON object")]
    Claims,
    #[error("no configured provider accepts this issuer ({0})")]
    UnknownIssuer(String),
    #[error("no key with kid {0:?} (provider {1})")]
    UnknownKid(String, String),
    #[error("no key of provider {0} fits alg {1}")]
    NoKey(String, String),
    #[error("bad signature")]
    BadSignature,
    #[error("the token has no exp")]
    NoExpiry,
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the audience does not match (provider {0})")]
    Audience(String),
    #[error("the subject is not a SPIFFE ID of trust domain {0}")]
    Subject(String),
}

/// A problem with provider configuration or a JWKS document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct JwksError {
    pub what: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Alg {
    Es256,
    Es384,
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    EdDsa,
}

impl Alg {
    fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "EdDSA" => Alg::EdDsa,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    P256(Vec<u8>),
    P384(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ed25519(Vec<u8>),
}

/// One verification key of a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    key: KeyMaterial,
}

impl Jwk {
    fn fits(&self, alg: Alg, alg_name: &str) -> bool {
        if self.alg.as_deref().is_some_and(|a| a != alg_name) {
            return false;
        }
        matches!(
            (alg, &self.key),
            (Alg::Es256, KeyMaterial::P256(_))
                | (Alg::Es384, KeyMaterial::P384(_))
                | (
                    Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512,
                    KeyMaterial::Rsa { .. }
                )
                | (Alg::EdDsa, KeyMaterial::Ed25519(_))
        )
    }

    fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        match (&self.key, alg) {
            (KeyMaterial::P256(pt), Alg::Es256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, pt)
                    .verify(msg, sig)
                    .is_ok()
            }
            (KeyMaterial::P384(pt), Alg::Es384) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, pt)
                    .verify(msg, sig)
                    .is_ok()
            }
            (KeyMaterial::Ed25519(x), Alg::EdDsa) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(msg, sig)
                .is_ok(),
            (KeyMaterial::Rsa { n, e }, alg) => {
                let params: &signature::RsaParameters = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
            _ => false,
        }
    }
}

fn b64(field: &str, v: Option<&Value>) -> Result<Vec<u8>, String> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{field} is missing"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("{field} is not base64url"))
}

/// Parse a JWKS document (also a SPIFFE bundle: only its `jwt-svid` keys
/// are used). Keys of unknown types are skipped; malformed keys are errors.
pub fn parse_jwks(what: &str, text: &str) -> Result<Vec<Jwk>, JwksError> {
    let err = |message: String| JwksError {
        what: what.to_string(),
        message,
    };
    let doc: Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| err("expected {\"keys\": [...]}".into()))?;
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let at = |m: String| err(format!("keys[{i}]: {m}"));
        match k.get("use").and_then(Value::as_str) {
            None | Some("sig") | Some("jwt-svid") => {}
            Some(_) => continue,
        }
        let kid = k.get("kid").and_then(Value::as_str).map(str::to_string);
        let alg = k.get("alg").and_then(Value::as_str).map(str::to_string);
        let key = match k.get("kty").and_then(Value::as_str) {
            Some("EC") => {
                let x = b64("x", k.get("x")).map_err(at)?;
                let y = b64("y", k.get("y")).map_err(at)?;
                let (len, p384) = match k.get("crv").and_then(Value::as_str) {
                    Some("P-256") => (32, false),
                    Some("P-384") => (48, true),
                    _ => continue,
                };
                if x.len() != len || y.len() != len {
                    return Err(at("x and y have the wrong length for the curve".into()));
                }
                let mut pt = Vec::with_capacity(1 + 2 * len);
                pt.push(4);
                pt.extend_from_slice(&x);
                pt.extend_from_slice(&y);
                if p384 {
                    KeyMaterial::P384(pt)
                } else {
                    KeyMaterial::P256(pt)
                }
            }
            Some("RSA") => {
                let n = b64("n", k.get("n")).map_err(at)?;
                let e = b64("e", k.get("e")).map_err(at)?;
                if n.len() < 256 {
                    return Err(at("RSA keys under 2048 bits are refused".into()));
                }
                KeyMaterial::Rsa { n, e }
            }
            Some("OKP") => {
                if k.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                    continue;
                }
                let x = b64("x", k.get("x")).map_err(at)?;
                if x.len() != 32 {
                    return Err(at("an Ed25519 key is 32 bytes".into()));
                }
                KeyMaterial::Ed25519(x)
            }
            _ => continue,
        };
        out.push(Jwk { kid, alg, key });
        if out.len() > MAX_JWKS_KEYS {
            return Err(err(format!("more than {MAX_JWKS_KEYS} keys")));
        }
    }
    Ok(out)
}

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

/// What kind of tokens a provider issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// JWT-SVIDs of a trust domain: `sub` is a SPIFFE ID in it.
    Spiffe { trust_domain: String },
    /// OIDC (or any JWT issuer): `iss` must equal the issuer.
    Oidc,
}

/// One token issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Required for OIDC; optional for SPIFFE (checked when set).
    pub issuer: Option<String>,
    /// Accepted audiences; a token must name one. Required for SPIFFE.
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    pub leeway: Duration,
    /// How often keys are refreshed.
    pub refresh_interval: Duration,
    /// Least time between two refreshes triggered by unknown kids.
    pub min_refresh_gap: Duration,
}

impl ProviderConfig {
    /// Check the configuration for the mistakes that would open a hole.
    pub fn validate(&self) -> Result<(), JwksError> {
        let err = |m: &str| JwksError {
            what: format!("provider {}", self.name),
            message: m.to_string(),
        };
        match &self.kind {
            ProviderKind::Oidc if self.issuer.as_deref().is_none_or(str::is_empty) => {
                Err(err("an OIDC provider needs an issuer"))
            }
            ProviderKind::Spiffe { .. } if self.audiences.is_empty() => Err(err(
                "a SPIFFE provider needs the audiences JWT-SVIDs must name",
            )),
            ProviderKind::Spiffe { trust_domain }
                if trust_domain.parse::<keycard_core::TrustDomain>().is_err() =>
            {
                Err(err("trust_domain is not a SPIFFE trust domain"))
            }
            _ => Ok(()),
        }
    }
}

struct Provider {
    cfg: ProviderConfig,
    keys: RwLock<Arc<Vec<Jwk>>>,
    last_refresh: Mutex<Option<Instant>>,
    /// Set when a token named an unknown kid; the refresher acts on it.
    wanted: std::sync::atomic::AtomicBool,
}

/// Validates bearer tokens against configured providers.
pub struct JwtValidator {
    providers: Vec<Provider>,
}

fn part(s: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)
}

impl JwtValidator {
    /// Providers with their keys already loaded (files are read now; URL
    /// providers start empty until [`JwtValidator::refresh`] runs).
    pub fn new(configs: Vec<ProviderConfig>) -> Result<Self, JwksError> {
        let mut providers = Vec::new();
        for cfg in configs {
            cfg.validate()?;
            let keys = match &cfg.jwks {
                JwksSource::File(p) => read_jwks_file(p)?,
                JwksSource::Url(_) => Vec::new(),
            };
            providers.push(Provider {
                cfg,
                keys: RwLock::new(Arc::new(keys)),
                last_refresh: Mutex::new(Some(Instant::now())),
                wanted: std::sync::atomic::AtomicBool::new(false),
            });
        }
        Ok(JwtValidator { providers })
    }

    /// A validator over keys given directly (tests, embedding).
    pub fn with_keys(cfg: ProviderConfig, jwks_json: &str) -> Result<Self, JwksError> {
        cfg.validate()?;
        let keys = parse_jwks(&cfg.name, jwks_json)?;
        Ok(JwtValidator {
            providers: vec![Provider {
                cfg,
                keys: RwLock::new(Arc::new(keys)),
                last_refresh: Mutex::new(Some(Instant::now())),
                wanted: std::sync::atomic::AtomicBool::new(false),
            }],
        })
    }

    pub fn provider_names(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.cfg.name.as_str()).collect()
    }

    /// The URLs of URL-backed providers (for the refresher).
    pub fn url_providers(&self) -> Vec<(usize, String)> {
        self.providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.cfg.jwks {
                JwksSource::Url(u) => Some((i, u.clone())),
                JwksSource::File(_) => None,
            })
            .collect()
    }

    /// Whether provider `i` is due a refresh now: its interval passed, or a
    /// token named an unknown kid and the least gap passed.
    pub fn refresh_due(&self, i: usize) -> bool {
        let Some(p) = self.providers.get(i) else {
            return false;
        };
        let last = p.last_refresh.lock().ok().and_then(|g| *g);
        let Some(last) = last else { return true };
        let age = last.elapsed();
        age >= p.cfg.refresh_interval
            || (p.wanted.load(std::sync::atomic::Ordering::Relaxed) && age >= p.cfg.min_refresh_gap)
            || (p.keys.read().map(|k| k.is_empty()).unwrap_or(false)
                && age >= p.cfg.min_refresh_gap)
    }

    /// Install fresh keys for provider `i` (parsed from a JWKS document).
    pub fn install(&self, i: usize, jwks_json: &str) -> Result<usize, JwksError> {
        let Some(p) = self.providers.get(i) else {
            return Ok(0);
        };
        if let Ok(mut g) = p.last_refresh.lock() {
            *g = Some(Instant::now());
        }
        let keys = parse_jwks(&p.cfg.name, jwks_json)?;
        let n = keys.len();
        if let Ok(mut g) = p.keys.write() {
            *g = Arc::new(keys);
        }
        p.wanted.store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    /// Note a failed refresh of provider `i` (the old keys stay).
    pub fn refresh_failed(&self, i: usize) {
        if let Some(p) = self.providers.get(i) {
            if let Ok(mut g) = p.last_refresh.lock() {
                *g = Some(Instant::now());
            }
        }
    }

    /// Re-read file-backed providers whose interval passed or that saw an
    /// unknown kid (rate-limited by the least gap).
    pub fn refresh_files(&self) {
        for (i, p) in self.providers.iter().enumerate() {
            if let JwksSource::File(path) = &p.cfg.jwks {
                if !self.refresh_due(i) {
                    continue;
                }
                match read_jwks_file(path) {
                    Ok(keys) => {
                        if let Ok(mut g) = p.keys.write() {
                            *g = Arc::new(keys);
                        }
                        p.wanted.store(false, std::sync::atomic::Ordering::Relaxed);
                        if let Ok(mut g) = p.last_refresh.lock() {
                            *g = Some(Instant::now());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(provider = %p.cfg.name, error = %e, "JWKS reload failed; keeping the old keys");
                        self.refresh_failed(i);
                    }
                }
            }
        }
    }

    /// Validate a compact JWS at a time (Unix seconds).
    pub fn validate(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge);
        }
        let mut it = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Map<String, Value> =
            serde_json::from_slice(&part(h64)?).map_err(|e| JwtError::Header(e.to_string()))?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| JwtError::Header("alg is missing".into()))?;
        let alg = Alg::parse(alg_name).ok_or_else(|| JwtError::Algorithm(alg_name.to_string()))?;
        if header.contains_key("crit") {
            return Err(JwtError::Header("crit extensions are not supported".into()));
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let claims: Map<String, Value> =
            serde_json::from_slice(&part(p64)?).map_err(|_| JwtError::Claims)?;
        let sig = part(s64)?;
        let iss = claims.get("iss").and_then(Value::as_str);
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        let provider = self
            .providers
            .iter()
            .find(|p| match &p.cfg.kind {
                ProviderKind::Oidc => iss.is_some() && iss == p.cfg.issuer.as_deref(),
                ProviderKind::Spiffe { trust_domain } => {
                    p.cfg.issuer.as_deref().is_none_or(|i| iss == Some(i))
                        && sub
                            .parse::<keycard_core::SpiffeId>()
                            .is_ok_and(|id| id.trust_domain().as_str() == trust_domain)
                }
            })
            .ok_or_else(|| {
                JwtError::UnknownIssuer(match iss {
                    Some(i) => format!("iss {i:?}"),
                    None => "no iss".to_string(),
                })
            })?;
        let keys = provider.keys.read().map(|k| k.clone()).unwrap_or_default();
        let candidates: Vec<&Jwk> = keys
            .iter()
            .filter(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .collect();
        if candidates.is_empty() {
            if let Some(kid) = kid {
                provider
                    .wanted
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(JwtError::UnknownKid(
                    kid.to_string(),
                    provider.cfg.name.clone(),
                ));
            }
        }
        let fitting: Vec<&&Jwk> = candidates
            .iter()
            .filter(|k| k.fits(alg, alg_name))
            .collect();
        if fitting.is_empty() {
            return Err(JwtError::NoKey(
                provider.cfg.name.clone(),
                alg_name.to_string(),
            ));
        }
        let signed = &token[..h64.len() + 1 + p64.len()];
        if !fitting
            .iter()
            .any(|k| k.verify(alg, signed.as_bytes(), &sig))
        {
            return Err(JwtError::BadSignature);
        }
        let leeway = provider.cfg.leeway.as_secs() as i64;
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(JwtError::NoExpiry)?;
        if now as f64 >= exp + leeway as f64 {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
            if now as f64 + (leeway as f64) < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        let audiences: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        if !provider.cfg.audiences.is_empty()
            && !audiences.iter().any(|a| provider.cfg.audiences.contains(a))
        {
            return Err(JwtError::Audience(provider.cfg.name.clone()));
        }
        if let ProviderKind::Spiffe { trust_domain } = &provider.cfg.kind {
            if sub.is_empty() {
                return Err(JwtError::Subject(trust_domain.clone()));
            }
        }
        let issuer = iss.unwrap_or("").to_string();
        Ok(Claims {
            principal: format!("{issuer}/{sub}"),
            issuer,
            subject: sub.to_string(),
            audiences,
            presenter: claims
                .get("azp")
                .and_then(Value::as_str)
                .map(str::to_string),
            provider: provider.cfg.name.clone(),
            raw: claims,
        })
    }
}

fn read_jwks_file(p: &std::path::Path) -> Result<Vec<Jwk>, JwksError> {
    let what = p.display().to_string();
    let text = crate::loader::read_limited(p, MAX_JWKS_BYTES).map_err(|e| JwksError {
        what: what.clone(),
        message: e.to_string(),
    })?;
    parse_jwks(&what, &text)
}

/// Parse the `--jwks` provider configuration file (YAML or JSON):
///
/// ```yaml
/// providers:
/// - name: spiffe
///   spiffe_trust_domain: example.org     # JWT-SVIDs
///   jwks_file: bundle.jwks               # the SPIFFE bundle
///   audiences: ["spiffe://example.org/ns/prod/sa/api"]
/// - name: corp
///   issuer: https://idp.example.com      # OIDC
///   jwks_url: https://idp.example.com/keys
///   audiences: [api]
///   leeway_seconds: 60                   # default 60
///   refresh_seconds: 300                 # default 300
/// ```
///
/// Relative paths are resolved against `base`.
pub fn parse_provider_config(
    what: &str,
    text: &str,
    base: &std::path::Path,
) -> Result<Vec<ProviderConfig>, JwksError> {
    let err = |message: String| JwksError {
        what: what.to_string(),
        message,
    };
    let doc: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| err(e.to_string()))?
    } else {
        yaml_serde::from_str(text).map_err(|e| err(e.to_string()))?
    };
    let list = doc
        .get("providers")
        .and_then(Value::as_array)
        .ok_or_else(|| err("expected providers: [...]".into()))?;
    let mut out = Vec::new();
    let mut names = HashMap::new();
    for (i, p) in list.iter().enumerate() {
        let at = |m: String| err(format!("providers[{i}]: {m}"));
        let Value::Object(m) = p else {
            return Err(at("expected a mapping".into()));
        };
        const KNOWN: &[&str] = &[
            "name",
            "issuer",
            "spiffe_trust_domain",
            "jwks_file",
            "jwks_url",
            "audiences",
            "leeway_seconds",
            "refresh_seconds",
        ];
        if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(at(format!(
                "unknown field {k:?} (expected one of {})",
                KNOWN.join(", ")
            )));
        }
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let name = s("name").unwrap_or_else(|| format!("provider-{i}"));
        if names.insert(name.clone(), i).is_some() {
            return Err(at(format!("duplicate name {name:?}")));
        }
        let jwks = match (s("jwks_file"), s("jwks_url")) {
            (Some(f), None) => JwksSource::File(base.join(f)),
            (None, Some(u)) if u.starts_with("http://") || u.starts_with("https://") => {
                JwksSource::Url(u)
            }
            (None, Some(u)) => return Err(at(format!("jwks_url {u:?} is not an http(s) URL"))),
            _ => return Err(at("set exactly one of jwks_file, jwks_url".into())),
        };
        let kind = match s("spiffe_trust_domain") {
            Some(td) => ProviderKind::Spiffe { trust_domain: td },
            None => ProviderKind::Oidc,
        };
        let audiences = match m.get("audiences") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| at("audiences: expected strings".into()))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(at("audiences: expected a list".into())),
        };
        let secs = |k: &str, default: u64| -> Result<Duration, JwksError> {
            match m.get(k) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v
                    .as_u64()
                    .filter(|s| *s <= 86_400)
                    .map(Duration::from_secs)
                    .ok_or_else(|| at(format!("{k}: expected seconds (0-86400)"))),
            }
        };
        let cfg = ProviderConfig {
            name,
            kind,
            issuer: s("issuer"),
            audiences,
            jwks,
            leeway: secs("leeway_seconds", 60)?,
            refresh_interval: secs("refresh_seconds", 300)?.max(Duration::from_secs(1)),
            min_refresh_gap: Duration::from_secs(5),
        };
        cfg.validate().map_err(|e| at(e.message))?;
        out.push(cfg);
    }
    Ok(out)
}
