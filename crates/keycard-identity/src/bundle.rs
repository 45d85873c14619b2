//! Trust bundles in the SPIFFE bundle format (a JWKS with `x509-svid` and
//! `jwt-svid` keys, `spiffe_sequence`, `spiffe_refresh_hint`) and the set of
//! bundles of every trust domain keycard trusts (its own and federated ones).

use std::collections::BTreeMap;

use keycard_core::TrustDomain;
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value};
use x509_parser::prelude::*;

use crate::jose::{b64_std, b64_std_decode, JwkKey};

/// The largest bundle document accepted.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// The most keys a bundle may hold.
pub const MAX_BUNDLE_KEYS: usize = 1024;

/// Why a bundle document was refused; `field` names where (`keys[2].x5c`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("bundle is {0} bytes, over the {MAX_BUNDLE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("bundle is not JSON: {0}")]
    Json(String),
    #[error("bundle field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error("bundle for {got} given where {want} was expected")]
    TrustDomain { got: String, want: String },
    #[error("bundle sequence {got} is older than the {have} already held for {td}")]
    Rollback { td: String, got: u64, have: u64 },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> BundleError {
    BundleError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A JWT signing key of a trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    /// Key id, as found in the `kid` header of tokens it signs.
    pub kid: String,
    /// The public key.
    pub key: JwkKey,
}

/// The trust anchors of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    pub trust_domain: TrustDomain,
    /// X.509 roots (DER).
    pub x509_authorities: Vec<CertificateDer<'static>>,
    /// JWT signing keys.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// `spiffe_sequence`: incremented on every change.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint`, seconds.
    pub refresh_hint: Option<u64>,
}

/// One JWT authority as a JWK of the SPIFFE bundle format.
fn jwt_jwk(a: &JwtAuthority) -> Value {
    let mut obj = Map::new();
    obj.insert("use".into(), "jwt-svid".into());
    obj.insert("kid".into(), a.kid.clone().into());
    a.key.write_jwk(&mut obj);
    Value::Object(obj)
}

impl TrustBundle {
    /// An empty bundle.
    pub fn new(trust_domain: TrustDomain) -> Self {
        TrustBundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: None,
            refresh_hint: None,
        }
    }

    /// The JWT key with `kid`.
    pub fn jwt_key(&self, kid: &str) -> Option<&JwkKey> {
        self.jwt_authorities
            .iter()
            .find(|a| a.kid == kid)
            .map(|a| &a.key)
    }

    /// The document as a JSON value.
    pub fn to_value(&self) -> Value {
        let mut keys = Vec::new();
        for cert in &self.x509_authorities {
            let mut obj = Map::new();
            obj.insert("use".into(), "x509-svid".into());
            if let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) {
                if let Ok(k) = JwkKey::from_parsed_spki(parsed.public_key()) {
                    k.write_jwk(&mut obj);
                }
            }
            obj.insert("x5c".into(), Value::Array(vec![b64_std(cert).into()]));
            keys.push(Value::Object(obj));
        }
        keys.extend(self.jwt_authorities.iter().map(jwt_jwk));
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        if let Some(s) = self.sequence {
            doc.insert("spiffe_sequence".into(), s.into());
        }
        if let Some(h) = self.refresh_hint {
            doc.insert("spiffe_refresh_hint".into(), h.into());
        }
        Value::Object(doc)
    }

    /// The JWT authorities alone as a JWKS (`{"keys":[...]}`, each with its
    /// `kid`): what the Workload API's `FetchJWTBundles` carries per trust
    /// domain. Clients parse every key there as a JWT authority, so the
    /// X.509 roots (which have no `kid`) must not be in it.
    pub fn jwt_jwks_json(&self) -> String {
        let keys: Vec<Value> = self.jwt_authorities.iter().map(jwt_jwk).collect();
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        Value::Object(doc).to_string()
    }

    /// The document as JSON text (what the bundle endpoint serves).
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The X.509 roots concatenated as PEM.
    pub fn x509_pem(&self) -> String {
        self.x509_authorities
            .iter()
            .map(|c| ::pem::encode(&::pem::Pem::new("CERTIFICATE", c.to_vec())))
            .collect()
    }

    /// Parses a bundle document of `trust_domain`. Strict: `keys` is
    /// required; every key needs `use` and `kty`; an `x509-svid` key needs
    /// `x5c` with exactly one certificate, which must be a CA whose public
    /// key equals the JWK's; a `jwt-svid` key needs a unique `kid`. Keys with
    /// a `use` this version does not know are skipped (forward
    /// compatibility); anything malformed is an error naming the field.
    pub fn parse(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        if json.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(json.len()));
        }
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| BundleError::Json(e.to_string()))?;
        let doc = doc
            .as_object()
            .ok_or_else(|| field("(document)", "must be a JSON object"))?;
        let keys = doc
            .get("keys")
            .ok_or_else(|| field("keys", "is missing"))?
            .as_array()
            .ok_or_else(|| field("keys", "must be an array"))?;
        if keys.len() > MAX_BUNDLE_KEYS {
            return Err(field(
                "keys",
                format!("{} keys, over the limit of {MAX_BUNDLE_KEYS}", keys.len()),
            ));
        }
        let num = |name: &str| -> Result<Option<u64>, BundleError> {
            match doc.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| field(name, "must be a non-negative integer")),
            }
        };
        let mut bundle = TrustBundle::new(trust_domain);
        bundle.sequence = num("spiffe_sequence")?;
        bundle.refresh_hint = num("spiffe_refresh_hint")?;
        for (i, k) in keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            let obj = k
                .as_object()
                .ok_or_else(|| field(&at, "must be an object"))?;
            let use_ = obj
                .get("use")
                .ok_or_else(|| field(format!("{at}.use"), "is missing"))?
                .as_str()
                .ok_or_else(|| field(format!("{at}.use"), "must be a string"))?;
            match use_ {
                "x509-svid" => {
                    let x5c = obj
                        .get("x5c")
                        .ok_or_else(|| field(format!("{at}.x5c"), "is missing"))?
                        .as_array()
                        .ok_or_else(|| field(format!("{at}.x5c"), "must be an array"))?;
                    if x5c.len() != 1 {
                        return Err(field(
                            format!("{at}.x5c"),
                            format!("must hold exactly one certificate, has {}", x5c.len()),
                        ));
                    }
                    let der = x5c[0]
                        .as_str()
                        .and_then(|s| b64_std_decode(s).ok())
                        .ok_or_else(|| field(format!("{at}.x5c[0]"), "must be base64 DER"))?;
                    let (rest, cert) = X509Certificate::from_der(&der).map_err(|e| {
                        field(format!("{at}.x5c[0]"), format!("not a certificate: {e}"))
                    })?;
                    if !rest.is_empty() {
                        return Err(field(
                            format!("{at}.x5c[0]"),
                            "trailing bytes after the certificate",
                        ));
                    }
                    if !cert.is_ca() {
                        return Err(field(format!("{at}.x5c[0]"), "is not a CA certificate"));
                    }
                    let cert_key = JwkKey::from_parsed_spki(cert.public_key())
                        .map_err(|e| field(format!("{at}.x5c[0]"), e))?;
                    if obj.contains_key("kty") {
                        let jwk =
                            JwkKey::from_jwk(obj, &at).map_err(|e| field(&at, e.to_string()))?;
                        if jwk != cert_key {
                            return Err(field(
                                &at,
                                "the JWK public key differs from the certificate's",
                            ));
                        }
                    } else {
                        return Err(field(format!("{at}.kty"), "is missing"));
                    }
                    bundle.x509_authorities.push(CertificateDer::from(der));
                }
                "jwt-svid" => {
                    let kid = obj
                        .get("kid")
                        .ok_or_else(|| field(format!("{at}.kid"), "is missing"))?
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| field(format!("{at}.kid"), "must be a non-empty string"))?;
                    if bundle.jwt_key(kid).is_some() {
                        return Err(field(format!("{at}.kid"), format!("duplicate kid {kid:?}")));
                    }
                    let key = JwkKey::from_jwk(obj, &at).map_err(|e| field(&at, e.to_string()))?;
                    bundle.jwt_authorities.push(JwtAuthority {
                        kid: kid.to_string(),
                        key,
                    });
                }
                other => {
                    tracing::warn!(key = %at, r#use = other, "skipping bundle key with an unknown use");
                }
            }
        }
        Ok(bundle)
    }
}

/// The bundles of every trust domain keycard trusts: its own and the
/// federated ones.
#[derive(Debug, Clone, Default)]
pub struct BundleSet {
    bundles: BTreeMap<TrustDomain, TrustBundle>,
}

impl BundleSet {
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets (replaces) the bundle of its trust domain.
    pub fn insert(&mut self, bundle: TrustBundle) {
        self.bundles.insert(bundle.trust_domain.clone(), bundle);
    }
    pub fn get(&self, td: &TrustDomain) -> Option<&TrustBundle> {
        self.bundles.get(td)
    }
    pub fn remove(&mut self, td: &TrustDomain) -> Option<TrustBundle> {
        self.bundles.remove(td)
    }
    pub fn iter(&self) -> impl Iterator<Item = &TrustBundle> {
        self.bundles.values()
    }
    pub fn len(&self) -> usize {
        self.bundles.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }

    /// Imports a federated bundle document fetched for `td`: parses it
    /// strictly, refuses roots that name another trust domain in a SPIFFE
    /// URI SAN, an empty bundle, and a `spiffe_sequence` lower than the one
    /// held (a rollback). Returns whether the held bundle changed.
    pub fn import(&mut self, td: &TrustDomain, json: &[u8]) -> Result<bool, BundleError> {
        let bundle = TrustBundle::parse(td.clone(), json)?;
        validate_for_domain(&bundle)?;
        if let (Some(old), Some(new)) = (
            self.bundles.get(td).and_then(|b| b.sequence),
            bundle.sequence,
        ) {
            if new < old {
                return Err(BundleError::Rollback {
                    td: td.to_string(),
                    got: new,
                    have: old,
                });
            }
        }
        let changed = self.bundles.get(td) != Some(&bundle);
        if changed {
            tracing::info!(trust_domain = %td, sequence = ?bundle.sequence,
                x509 = bundle.x509_authorities.len(), jwt = bundle.jwt_authorities.len(),
                "federated bundle updated");
            self.bundles.insert(td.clone(), bundle);
        }
        Ok(changed)
    }
}

/// Checks that a bundle's content belongs to its trust domain.
pub fn validate_for_domain(bundle: &TrustBundle) -> Result<(), BundleError> {
    if bundle.x509_authorities.is_empty() && bundle.jwt_authorities.is_empty() {
        return Err(field("keys", "the bundle holds no usable key"));
    }
    for (i, der) in bundle.x509_authorities.iter().enumerate() {
        let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
            return Err(field(format!("keys[{i}].x5c[0]"), "not a certificate"));
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name {
                    if let Ok(id) = uri.parse::<keycard_core::SpiffeId>() {
                        if id.trust_domain() != &bundle.trust_domain {
                            return Err(BundleError::TrustDomain {
                                got: id.trust_domain().to_string(),
                                want: bundle.trust_domain.to_string(),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
