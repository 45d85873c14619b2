//! The small part of JOSE keycard needs, written on ring: JWK public keys
//! (EC P-256/P-384, RSA), compact JWS decoding with limits, ES256 signing
//! and ES256/ES384/RS256/RS384/RS512/PS256 verification.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Map, Value};
use x509_parser::prelude::FromDer;

/// The largest JWT keycard accepts (bytes of the compact serialisation).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is {0} bytes, over the {MAX_TOKEN_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("token is not a compact JWS (header.payload.signature)")]
    Shape,
    #[error("token {part} is not valid base64url or JSON: {reason}")]
    Encoding { part: &'static str, reason: String },
    #[error("token header field `{0}` is missing")]
    MissingHeader(&'static str),
    #[error("token algorithm `none` is refused")]
    AlgNone,
    #[error("token algorithm `{0}` is not supported")]
    UnsupportedAlg(String),
    #[error("token header has `crit` extensions, which keycard does not understand")]
    Critical,
    #[error("token header `typ` is {0:?}, expected JWT or JOSE")]
    Typ(String),
    #[error("token algorithm `{alg}` does not match the key `{kid}` ({key})")]
    AlgKeyMismatch {
        alg: String,
        kid: String,
        key: String,
    },
    #[error("no key with kid {0:?} in the trust bundle")]
    UnknownKid(String),
    #[error("no trust bundle for trust domain {0}")]
    NoBundle(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token claim `{0}` is missing")]
    MissingClaim(&'static str),
    #[error("token claim `{claim}` is invalid: {reason}")]
    BadClaim { claim: &'static str, reason: String },
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("token is not valid before {nbf} (now {now})")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("token audience {got:?} does not include {want:?}")]
    Audience { got: Vec<String>, want: String },
    #[error("issuer {got:?} is not {want:?}")]
    Issuer { got: String, want: String },
    #[error("JWK {field}: {reason}")]
    Jwk { field: String, reason: String },
    #[error("signing failed")]
    Sign,
}

/// An elliptic curve of a JWK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }
    fn coord_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// A public key as a JWK (RFC 7517/7518).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum JwkKey {
    /// `kty: EC`.
    Ec { crv: Curve, x: Vec<u8>, y: Vec<u8> },
    /// `kty: RSA`.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl std::fmt::Debug for JwkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwkKey({})", self.describe())
    }
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

fn b64url(field: &str, v: &Value) -> Result<Vec<u8>, JwtError> {
    let s = v.as_str().ok_or_else(|| JwtError::Jwk {
        field: field.to_string(),
        reason: "must be a string".into(),
    })?;
    URL_SAFE_NO_PAD.decode(s).map_err(|e| JwtError::Jwk {
        field: field.to_string(),
        reason: format!("not base64url without padding: {e}"),
    })
}

impl JwkKey {
    /// A short description (`EC P-256`, `RSA 2048`).
    pub fn describe(&self) -> String {
        match self {
            JwkKey::Ec { crv, .. } => format!("EC {}", crv.name()),
            JwkKey::Rsa { n, .. } => format!("RSA {}", n.len() * 8),
        }
    }

    /// The key's fields (`kty`, `crv`, `x`, `y` or `n`, `e`) of `obj`;
    /// `at` names the object in errors (`keys[1]`).
    pub fn from_jwk(obj: &Map<String, Value>, at: &str) -> Result<Self, JwtError> {
        let field = |f: &str| format!("{at}.{f}");
        let get = |f: &str| {
            obj.get(f).ok_or_else(|| JwtError::Jwk {
                field: field(f),
                reason: "is missing".into(),
            })
        };
        match get("kty")?.as_str() {
            Some("EC") => {
                let crv = match get("crv")?.as_str() {
                    Some("P-256") => Curve::P256,
                    Some("P-384") => Curve::P384,
                    other => {
                        return Err(JwtError::Jwk {
                            field: field("crv"),
                            reason: format!("unsupported curve {other:?}"),
                        })
                    }
                };
                let x = b64url(&field("x"), get("x")?)?;
                let y = b64url(&field("y"), get("y")?)?;
                for (name, c) in [("x", &x), ("y", &y)] {
                    if c.len() != crv.coord_len() {
                        return Err(JwtError::Jwk {
                            field: field(name),
                            reason: format!(
                                "{} bytes, {} needs {}",
                                c.len(),
                                crv.name(),
                                crv.coord_len()
                            ),
                        });
                    }
                }
                Ok(JwkKey::Ec { crv, x, y })
            }
            Some("RSA") => {
                let n = b64url(&field("n"), get("n")?)?;
                let e = b64url(&field("e"), get("e")?)?;
                if n.len() < 256 || n.len() > 1024 {
                    return Err(JwtError::Jwk {
                        field: field("n"),
                        reason: format!("{}-bit modulus; 2048 to 8192 bits accepted", n.len() * 8),
                    });
                }
                Ok(JwkKey::Rsa { n, e })
            }
            other => Err(JwtError::Jwk {
                field: field("kty"),
                reason: format!("unsupported key type {other:?}"),
            }),
        }
    }

    /// Writes the key's fields into `obj`.
    pub fn write_jwk(&self, obj: &mut Map<String, Value>) {
        match self {
            JwkKey::Ec { crv, x, y } => {
                obj.insert("kty".into(), "EC".into());
                obj.insert("crv".into(), crv.name().into());
                obj.insert("x".into(), URL_SAFE_NO_PAD.encode(x).into());
                obj.insert("y".into(), URL_SAFE_NO_PAD.encode(y).into());
            }
            JwkKey::Rsa { n, e } => {
                obj.insert("kty".into(), "RSA".into());
                obj.insert("n".into(), URL_SAFE_NO_PAD.encode(n).into());
                obj.insert("e".into(), URL_SAFE_NO_PAD.encode(e).into());
            }
        }
    }

    /// The key of a DER SubjectPublicKeyInfo.
    pub fn from_spki(spki_der: &[u8]) -> Result<Self, JwtError> {
        let bad = |reason: String| JwtError::Jwk {
            field: "subjectPublicKeyInfo".into(),
            reason,
        };
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| bad(e.to_string()))?;
        Self::from_parsed_spki(&spki).map_err(bad)
    }

    pub(crate) fn from_parsed_spki(
        spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
    ) -> Result<Self, String> {
        match spki.parsed().map_err(|e| e.to_string())? {
            x509_parser::public_key::PublicKey::EC(point) => {
                let curve_oid = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                let crv = match curve_oid.as_str() {
                    OID_P256 => Curve::P256,
                    OID_P384 => Curve::P384,
                    other => return Err(format!("unsupported EC curve {other:?}")),
                };
                let data = point.data();
                let l = crv.coord_len();
                if data.len() != 1 + 2 * l || data[0] != 4 {
                    return Err("EC point is not uncompressed".into());
                }
                Ok(JwkKey::Ec {
                    crv,
                    x: data[1..1 + l].to_vec(),
                    y: data[1 + l..].to_vec(),
                })
            }
            x509_parser::public_key::PublicKey::RSA(rsa) => Ok(JwkKey::Rsa {
                n: strip_zeros(rsa.modulus).to_vec(),
                e: strip_zeros(rsa.exponent).to_vec(),
            }),
            _ => Err("unsupported public key type (EC P-256/P-384 or RSA)".into()),
        }
    }

    /// Verifies `sig` over `msg` with algorithm `alg`, which must suit the key.
    pub fn verify(&self, kid: &str, alg: &str, msg: &[u8], sig: &[u8]) -> Result<(), JwtError> {
        let mismatch = || JwtError::AlgKeyMismatch {
            alg: alg.to_string(),
            kid: kid.to_string(),
            key: self.describe(),
        };
        match self {
            JwkKey::Ec { crv, x, y } => {
                let algo: &dyn signature::VerificationAlgorithm = match (alg, crv) {
                    ("ES256", Curve::P256) => &signature::ECDSA_P256_SHA256_FIXED,
                    ("ES384", Curve::P384) => &signature::ECDSA_P384_SHA384_FIXED,
                    ("ES256" | "ES384" | "RS256" | "RS384" | "RS512" | "PS256", _) => {
                        return Err(mismatch())
                    }
                    _ => return Err(JwtError::UnsupportedAlg(alg.to_string())),
                };
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                signature::UnparsedPublicKey::new(algo, &point)
                    .verify(msg, sig)
                    .map_err(|_| JwtError::BadSignature)
            }
            JwkKey::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "ES256" | "ES384" => return Err(mismatch()),
                    _ => return Err(JwtError::UnsupportedAlg(alg.to_string())),
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .map_err(|_| JwtError::BadSignature)
            }
        }
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[i..]
}

/// A decoded (not yet verified) compact JWS.
#[derive(Debug)]
pub struct Jws<'a> {
    pub alg: String,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub claims: Map<String, Value>,
    pub signing_input: &'a [u8],
    pub signature: Vec<u8>,
}

impl<'a> Jws<'a> {
    /// Splits and decodes `token`, refusing oversized tokens, `alg: none`,
    /// `crit` headers and `typ` other than JWT/JOSE.
    pub fn decode(token: &'a str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge(token.len()));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Shape);
        };
        let json = |part: &'static str, b64: &str| -> Result<Map<String, Value>, JwtError> {
            let bytes = URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|e| JwtError::Encoding {
                    part,
                    reason: e.to_string(),
                })?;
            serde_json::from_slice(&bytes).map_err(|e| JwtError::Encoding {
                part,
                reason: e.to_string(),
            })
        };
        let header = json("header", h)?;
        let claims = json("payload", p)?;
        let signature = URL_SAFE_NO_PAD.decode(s).map_err(|e| JwtError::Encoding {
            part: "signature",
            reason: e.to_string(),
        })?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwtError::MissingHeader("alg"))?
            .to_string();
        if alg.eq_ignore_ascii_case("none") {
            return Err(JwtError::AlgNone);
        }
        if header.contains_key("crit") {
            return Err(JwtError::Critical);
        }
        let typ = match header.get("typ") {
            None => None,
            Some(Value::String(t)) if t == "JWT" || t == "JOSE" => Some(t.clone()),
            Some(other) => return Err(JwtError::Typ(other.to_string())),
        };
        let kid = header.get("kid").and_then(Value::as_str).map(String::from);
        Ok(Jws {
            alg,
            kid,
            typ,
            claims,
            signing_input: &token.as_bytes()[..h.len() + 1 + p.len()],
            signature,
        })
    }

    /// A numeric date claim (seconds).
    pub fn time_claim(&self, claim: &'static str) -> Result<Option<u64>, JwtError> {
        match self.claims.get(claim) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or(JwtError::BadClaim {
                    claim,
                    reason: "must be a non-negative number of seconds".into(),
                }),
        }
    }

    /// `aud` as a list (a string or an array of strings).
    pub fn audiences(&self) -> Result<Vec<String>, JwtError> {
        match self.claims.get("aud") {
            None => Err(JwtError::MissingClaim("aud")),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or(JwtError::BadClaim {
                    claim: "aud",
                    reason: "must be strings".into(),
                }),
            Some(_) => Err(JwtError::BadClaim {
                claim: "aud",
                reason: "must be a string or a non-empty array of strings".into(),
            }),
        }
    }

    /// Checks `exp` (required) and `nbf` (if present) against `now` with
    /// `leeway` seconds.
    pub fn check_times(&self, now: u64, leeway: u64) -> Result<u64, JwtError> {
        let exp = self
            .time_claim("exp")?
            .ok_or(JwtError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(JwtError::Expired { exp, now });
        }
        if let Some(nbf) = self.time_claim("nbf")? {
            if now.saturating_add(leeway) < nbf {
                return Err(JwtError::NotYetValid { nbf, now });
            }
        }
        Ok(exp)
    }
}

/// An ES256 signing key with its key id.
pub struct Es256Signer {
    kid: String,
    key: EcdsaKeyPair,
    public: JwkKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Es256Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Es256Signer(kid={})", self.kid)
    }
}

impl Es256Signer {
    /// From a P-256 PKCS#8 key; the kid is derived from the public key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, JwtError> {
        let rng = SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|e| JwtError::Jwk {
                    field: "private key".into(),
                    reason: e.to_string(),
                })?;
        let point = key.public_key().as_ref();
        if point.len() != 65 {
            return Err(JwtError::Jwk {
                field: "private key".into(),
                reason: "not a P-256 key".into(),
            });
        }
        let public = JwkKey::Ec {
            crv: Curve::P256,
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, point);
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..18]);
        Ok(Es256Signer {
            kid,
            key,
            public,
            rng,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn public_key(&self) -> &JwkKey {
        &self.public
    }

    /// Signs `claims` as a compact JWS with header `{alg: ES256, kid, typ: JWT}`.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, JwtError> {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string()));
        let sig = self
            .key
            .sign(&self.rng, out.as_bytes())
            .map_err(|_| JwtError::Sign)?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Ok(out)
    }
}

/// Standard base64 (for `x5c`).
pub(crate) fn b64_std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn b64_std_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(s)
}

/// A JWKS document (`{"keys": [...]}`) as kid -> key, for verifying
/// tokens of an external issuer (a Kubernetes cluster).
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<(Option<String>, JwkKey)>,
}

impl Jwks {
    /// Parses a JWKS of at most 1 MiB; keys of unsupported types are skipped.
    pub fn parse(json: &[u8]) -> Result<Self, JwtError> {
        if json.len() > 1024 * 1024 {
            return Err(JwtError::Jwk {
                field: "jwks".into(),
                reason: format!("{} bytes is over the 1 MiB limit", json.len()),
            });
        }
        let v: Value = serde_json::from_slice(json).map_err(|e| JwtError::Jwk {
            field: "jwks".into(),
            reason: e.to_string(),
        })?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwtError::Jwk {
                field: "keys".into(),
                reason: "missing or not an array".into(),
            })?;
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate().take(1000) {
            let at = format!("keys[{i}]");
            let Some(obj) = k.as_object() else {
                return Err(JwtError::Jwk {
                    field: at,
                    reason: "not an object".into(),
                });
            };
            if obj
                .get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            match JwkKey::from_jwk(obj, &at) {
                Ok(key) => out.push((
                    obj.get("kid").and_then(Value::as_str).map(String::from),
                    key,
                )),
                Err(e) => tracing::debug!(error = %e, "skipping JWK"),
            }
        }
        Ok(Jwks { keys: out })
    }

    /// Candidate keys for a token: the one with `kid`, or every key when
    /// the token has no kid.
    pub fn candidates<'s>(&'s self, kid: Option<&'s str>) -> impl Iterator<Item = &'s JwkKey> + 's {
        self.keys
            .iter()
            .filter(move |(k, _)| kid.is_none() || k.as_deref() == kid)
            .map(|(_, key)| key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
