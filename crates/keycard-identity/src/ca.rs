//! The SPIFFE certificate authority of one trust domain: a root (generated
//! or the operator's), an intermediate and a JWT signing key per server
//! instance, X509-SVID and JWT-SVID minting, the trust bundle, and CA
//! rotation with overlap.
//!
//! State lives in two places: private keys in a [`KeyStore`], everything
//! public (certificates, which key is active, the bundle sequence) in the
//! [`IdentityStore`]'s named values, so a restart keeps the same CA and
//! several servers on one database share one root and one bundle, each with
//! its own intermediate and JWT key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keycard_core::{SpiffeId, TrustDomain};
use keycard_store::{CasOutcome, IdentityStore};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::bundle::{JwtAuthority, TrustBundle};
use crate::jose::{b64_std, b64_std_decode, Es256Signer, JwkKey, JwtError};
use crate::keystore::{KeyStore, KeyStoreError, PrivateKey};

/// How far not-before is set in the past, for clock skew between hosts.
pub const BACKDATE: Duration = Duration::from_secs(30);
/// The most DNS names an SVID may carry.
pub const MAX_DNS_NAMES: usize = 64;
/// The largest CSR accepted.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Why the CA could not start, rotate or mint.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    #[error("store: {0}")]
    Store(#[from] keycard_store::StoreError),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("CA state in the store is damaged ({what}): {reason}")]
    State { what: String, reason: String },
    #[error("the root CA key {0} is not in this server's key store: give every server the same root (--root-cert/--root-key PEM files) or a shared key store")]
    RootKeyUnavailable(String),
    #[error("operator root CA: {0}")]
    OperatorRoot(String),
    #[error("invalid CA configuration: {0}")]
    Config(String),
    #[error("SPIFFE ID {id} is not in trust domain {td}")]
    ForeignId { id: String, td: String },
    #[error("the CSR is invalid: {0}")]
    Csr(String),
    #[error("the CSR asks for {asked} but the caller is authorised for {authorised}")]
    CsrIdMismatch { asked: String, authorised: String },
    #[error("the public key is not acceptable: {0}")]
    PublicKey(String),
    #[error("DNS name {0:?} is invalid")]
    DnsName(String),
    #[error("JWT-SVID: {0}")]
    Jwt(#[from] JwtError),
    #[error("a JWT-SVID needs at least one audience, each non-empty")]
    Audience,
    #[error("the signing CA expired at {0} (Unix seconds); rotation has not run")]
    CaExpired(u64),
}

/// Where the root comes from.
#[derive(Clone)]
pub enum RootSource {
    /// Generate one (P-256) on first start; kept in the stores afterwards,
    /// and rotated automatically.
    Generate,
    /// The operator's root: a certificate and its PKCS#8 private key, PEM.
    /// Not rotated automatically (the operator replaces the files).
    Pem { cert_pem: String, key_pem: String },
}

impl std::fmt::Debug for RootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSource::Generate => f.write_str("Generate"),
            RootSource::Pem { .. } => f.write_str("Pem { cert_pem, key_pem: <redacted> }"),
        }
    }
}

/// CA settings.
#[derive(Debug, Clone)]
pub struct CaConfig {
    pub trust_domain: TrustDomain,
    /// This server instance's name (`[A-Za-z0-9_-]`, at most 64): names its
    /// intermediate and JWT key.
    pub instance: String,
    /// Lifetime of a generated root. Default 365 days.
    pub root_ttl: Duration,
    /// Lifetime of an intermediate. Default 3 days.
    pub intermediate_ttl: Duration,
    /// Lifetime of a JWT signing key. Default 3 days.
    pub jwt_key_ttl: Duration,
    /// Default X509-SVID lifetime. Default 1 hour.
    pub x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime. Default 5 minutes.
    pub jwt_svid_ttl: Duration,
    /// `spiffe_refresh_hint` of the bundle. Default 5 minutes.
    pub refresh_hint: Duration,
}

impl CaConfig {
    /// Defaults for `trust_domain` and server `instance`.
    pub fn new(trust_domain: TrustDomain, instance: &str) -> Self {
        CaConfig {
            trust_domain,
            instance: instance.to_string(),
            root_ttl: Duration::from_secs(365 * 86400),
            intermediate_ttl: Duration::from_secs(3 * 86400),
            jwt_key_ttl: Duration::from_secs(3 * 86400),
            x509_svid_ttl: Duration::from_secs(3600),
            jwt_svid_ttl: Duration::from_secs(300),
            refresh_hint: Duration::from_secs(300),
        }
    }

    fn validate(&self) -> Result<(), CaError> {
        let i = &self.instance;
        if i.is_empty()
            || i.len() > 64
            || !i
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CaError::Config(format!(
                "instance name {i:?} must be 1-64 of [A-Za-z0-9_-]"
            )));
        }
        for (name, d) in [
            ("root_ttl", self.root_ttl),
            ("intermediate_ttl", self.intermediate_ttl),
            ("jwt_key_ttl", self.jwt_key_ttl),
            ("x509_svid_ttl", self.x509_svid_ttl),
            ("jwt_svid_ttl", self.jwt_svid_ttl),
        ] {
            if d.as_secs() < 10 {
                return Err(CaError::Config(format!("{name} must be at least 10 s")));
            }
        }
        if self.intermediate_ttl <= self.x509_svid_ttl || self.jwt_key_ttl <= self.jwt_svid_ttl {
            return Err(CaError::Config(
                "CA and JWT key lifetimes must exceed the SVID lifetimes".into(),
            ));
        }
        Ok(())
    }
}

/// How an SVID's public key is given.
#[derive(Debug, Clone, Copy)]
pub enum SvidKey<'a> {
    /// A PKCS#10 CSR (DER): its signature is checked (proof of possession)
    /// and its key used; any URI SAN it carries must be the authorised ID.
    Csr(&'a [u8]),
    /// A DER SubjectPublicKeyInfo.
    Spki(&'a [u8]),
}

/// Options of an X509-SVID.
#[derive(Debug, Clone, Default)]
pub struct SvidOptions {
    /// DNS SANs after the URI SAN.
    pub dns_names: Vec<String>,
    /// Lifetime; the CA default when `None`. Never beyond the CA's expiry.
    pub ttl: Option<Duration>,
}

/// A minted X509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Svid {
    pub spiffe_id: SpiffeId,
    /// Leaf first, then the intermediate. The root is in the bundle.
    pub chain: Vec<CertificateDer<'static>>,
    /// Serial number, lowercase hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl X509Svid {
    /// The chain as PEM.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| ::pem::encode(&::pem::Pem::new("CERTIFICATE", c.to_vec())))
            .collect()
    }
}

/// A minted JWT-SVID. `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvid {
    pub spiffe_id: SpiffeId,
    pub token: String,
    pub audience: Vec<String>,
    pub issued_at: SystemTime,
    pub expiry: SystemTime,
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("audience", &self.audience)
            .field("expiry", &self.expiry)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Something with an expiry, for the seconds-to-expiry metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// `root`, `intermediate`, `jwt_key`, `x509_svid`...
    pub kind: &'static str,
    /// Which one (fingerprint, kid, SPIFFE ID).
    pub name: String,
    /// Seconds until expiry (negative once expired).
    pub seconds: i64,
}

/// A change made by [`Ca::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaEvent {
    RootPrepared(String),
    RootActivated(String),
    RootRemoved(String),
    /// The operator's root passed half its life: replace the PEM files.
    RootNeedsReplacement {
        expires_at: u64,
    },
    IntermediatePrepared(String),
    IntermediateActivated(String),
    JwtKeyPrepared(String),
    JwtKeyActivated(String),
    JwtKeyRemoved(String),
}

// ---------------------------------------------------------------- state --

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Prepared,
    Active,
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RootRecord {
    /// Base64 DER.
    cert: String,
    /// Key store name (roots are signed for with it).
    key: String,
    fingerprint: String,
    status: Status,
    not_before: u64,
    not_after: u64,
    /// Generated by keycard (rotated automatically) or the operator's.
    generated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JwtKeyRecord {
    kid: String,
    jwk: Map<String, Value>,
    instance: String,
    not_after: u64,
}

/// The trust domain's shared state: roots, published JWT keys, sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TrustState {
    sequence: u64,
    roots: Vec<RootRecord>,
    jwt_keys: Vec<JwtKeyRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IntermediateRecord {
    cert: String,
    key: String,
    root_fingerprint: String,
    not_before: u64,
    not_after: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JwtRecord {
    kid: String,
    key: String,
    not_before: u64,
    not_after: u64,
}

/// One server instance's state: its intermediate and JWT key, current and
/// prepared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InstanceState {
    intermediate: IntermediateRecord,
    next_intermediate: Option<IntermediateRecord>,
    jwt: JwtRecord,
    next_jwt: Option<JwtRecord>,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn time_of(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

fn odt(s: u64) -> Result<::time::OffsetDateTime, CaError> {
    ::time::OffsetDateTime::from_unix_timestamp(s.min(253_402_300_799) as i64)
        .map_err(|e| CaError::Config(format!("time out of range: {e}")))
}

fn fingerprint(der: &[u8]) -> String {
    hex::encode(&Sha256::digest(der)[..8])
}

/// Has `now` reached `num/den` of the life from `nb` to `na`?
fn past(nb: u64, na: u64, num: u64, den: u64, now: u64) -> bool {
    now >= nb + (na.saturating_sub(nb)) * num / den
}

fn random_serial() -> [u8; 16] {
    let mut s: [u8; 16] = rand::random();
    // Positive, and exactly 16 bytes long once DER-encoded.
    s[0] = (s[0] & 0x7f) | 0x40;
    s
}

fn ca_params(
    cn: &str,
    td: &TrustDomain,
    nb: u64,
    na: u64,
    path_len: Option<u8>,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "keycard");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = odt(nb)?;
    p.not_after = odt(na)?;
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names = vec![SanType::URI(td.id_string().try_into()?)];
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

fn state_err(what: &str) -> impl Fn(String) -> CaError + '_ {
    move |reason| CaError::State {
        what: what.to_string(),
        reason,
    }
}

fn load_key(keys: &dyn KeyStore, name: &str) -> Result<Option<KeyPair>, CaError> {
    match keys.load(name)? {
        None => Ok(None),
        Some(k) => KeyPair::try_from(k.pkcs8_der())
            .map(Some)
            .map_err(|e| CaError::State {
                what: format!("key {name}"),
                reason: e.to_string(),
            }),
    }
}

fn new_key(keys: &dyn KeyStore, name: &str) -> Result<KeyPair, CaError> {
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    keys.store(name, &PrivateKey::from_pkcs8_der(kp.serialize_der()))?;
    Ok(kp)
}

// ------------------------------------------------------------------- CA --

struct ActiveRoot {
    der: CertificateDer<'static>,
    fingerprint: String,
    issuer: Option<Issuer<'static, KeyPair>>,
    not_after: u64,
}

struct Intermediate {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    not_before: u64,
    not_after: u64,
    fingerprint: String,
}

struct JwtKey {
    signer: Es256Signer,
    not_after: u64,
}

/// The CA of one trust domain on one server instance.
pub struct Ca {
    config: CaConfig,
    trust_key: String,
    instance_key: String,
    trust: TrustState,
    instance: InstanceState,
    root: ActiveRoot,
    intermediate: Intermediate,
    jwt: JwtKey,
    bundle: TrustBundle,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.config.trust_domain.as_str())
            .field("instance", &self.config.instance)
            .field("root", &self.root.fingerprint)
            .field("intermediate", &self.intermediate.fingerprint)
            .field("jwt_kid", &self.jwt.signer.kid())
            .field("sequence", &self.trust.sequence)
            .finish()
    }
}

impl Ca {
    /// Starts the CA: loads its state from the stores, creating what is
    /// missing (root, this instance's intermediate and JWT key), and saves
    /// it back, so the next start finds the same CA.
    pub fn open(
        config: CaConfig,
        root: RootSource,
        store: &mut dyn IdentityStore,
        keys: &dyn KeyStore,
        now: SystemTime,
    ) -> Result<Ca, CaError> {
        config.validate()?;
        let now = secs(now);
        let td = config.trust_domain.clone();
        let trust_key = format!("ca/{td}/trust");
        let instance_key = format!("ca/{td}/instance/{}", config.instance);
        // The root: read-modify-CAS, so servers starting together agree on
        // one (a loser re-reads and takes the winner's).
        let mut generated: Vec<String> = Vec::new();
        let (trust, root_rec) = update_trust(store, &trust_key, |trust| {
            match &root {
                RootSource::Generate => {
                    if !trust.roots.iter().any(|r| r.status == Status::Active) {
                        let rec = generate_root(&config, keys, now)?;
                        tracing::info!(trust_domain = %td, root = %rec.fingerprint, "generated root CA");
                        generated.push(rec.key.clone());
                        trust.roots.push(rec);
                    }
                }
                RootSource::Pem { cert_pem, key_pem } => {
                    let rec = operator_root(&config, cert_pem, key_pem, keys, now)?;
                    let known = trust
                        .roots
                        .iter()
                        .any(|r| r.fingerprint == rec.fingerprint && r.status == Status::Active);
                    if !known {
                        for r in trust
                            .roots
                            .iter_mut()
                            .filter(|r| r.status == Status::Active)
                        {
                            r.status = Status::Retired;
                        }
                        trust.roots.retain(|r| r.fingerprint != rec.fingerprint);
                        tracing::info!(trust_domain = %td, root = %rec.fingerprint, "using the operator's root CA");
                        trust.roots.push(rec);
                    }
                }
            }
            trust
                .roots
                .iter()
                .find(|r| r.status == Status::Active)
                .cloned()
                .ok_or_else(|| state_err("trust")("no active root".into()))
        })?;
        forget_unpublished_roots(&generated, &trust, keys);
        let root = load_root(&root_rec, keys)?;

        let loaded = load_json::<InstanceState>(store, &instance_key)?;
        let instance = match loaded {
            Some(st)
                if st.intermediate.root_fingerprint == root.fingerprint
                    && st.intermediate.not_after > now
                    && st.jwt.not_after > now
                    && keys.load(&st.intermediate.key)?.is_some()
                    && keys.load(&st.jwt.key)?.is_some() =>
            {
                st
            }
            _ => {
                let intermediate = issue_intermediate(&config, &root, keys, now)?;
                let jwt = new_jwt_key(&config, keys, now, root.not_after)?;
                tracing::info!(trust_domain = %td, instance = %config.instance, "issued intermediate CA and JWT key");
                InstanceState {
                    intermediate,
                    next_intermediate: None,
                    jwt,
                    next_jwt: None,
                }
            }
        };
        let intermediate = load_intermediate(&instance.intermediate, keys)?;
        let jwt = load_jwt(&instance.jwt, keys)?;
        // This instance's JWT key joins the bundle beside the other
        // servers' (read-modify-CAS: none is dropped).
        let (trust, ()) = update_trust(store, &trust_key, |t| {
            publish_jwt(t, &config.instance, &jwt)
        })?;
        save_json(store, &instance_key, &instance)?;
        let mut ca = Ca {
            bundle: TrustBundle::new(td),
            config,
            trust_key,
            instance_key,
            trust,
            instance,
            root,
            intermediate,
            jwt,
        };
        ca.rebuild_bundle()?;
        Ok(ca)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The trust bundle of this trust domain (every root and JWT key not
    /// yet expired: the active, prepared and retired ones).
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The active root certificate.
    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root.der
    }

    /// This instance's active intermediate certificate.
    pub fn intermediate_der(&self) -> &CertificateDer<'static> {
        &self.intermediate.der
    }

    /// When this instance's intermediate expires.
    pub fn intermediate_not_after(&self) -> SystemTime {
        time_of(self.intermediate.not_after)
    }

    /// The key id of the active JWT signing key.
    pub fn jwt_kid(&self) -> &str {
        self.jwt.signer.kid()
    }

    /// Seconds to expiry of every root, this instance's intermediates and
    /// JWT keys, for the metric.
    pub fn expiries(&self, now: SystemTime) -> Vec<Expiry> {
        let now = secs(now) as i64;
        let mut out = Vec::new();
        for r in &self.trust.roots {
            out.push(Expiry {
                kind: "root",
                name: r.fingerprint.clone(),
                seconds: r.not_after as i64 - now,
            });
        }
        out.push(Expiry {
            kind: "intermediate",
            name: self.intermediate.fingerprint.clone(),
            seconds: self.intermediate.not_after as i64 - now,
        });
        if let Some(n) = &self.instance.next_intermediate {
            out.push(Expiry {
                kind: "intermediate",
                name: n.key.clone(),
                seconds: n.not_after as i64 - now,
            });
        }
        for k in &self.trust.jwt_keys {
            out.push(Expiry {
                kind: "jwt_key",
                name: k.kid.clone(),
                seconds: k.not_after as i64 - now,
            });
        }
        out
    }

    fn check_id(&self, id: &SpiffeId) -> Result<(), CaError> {
        if id.trust_domain() != &self.config.trust_domain {
            return Err(CaError::ForeignId {
                id: id.to_string(),
                td: self.config.trust_domain.to_string(),
            });
        }
        Ok(())
    }

    fn leaf_params(
        &self,
        id: &SpiffeId,
        opts: &SvidOptions,
        now: u64,
    ) -> Result<(CertificateParams, String, u64, u64), CaError> {
        self.check_id(id)?;
        if now >= self.intermediate.not_after {
            return Err(CaError::CaExpired(self.intermediate.not_after));
        }
        if opts.dns_names.len() > MAX_DNS_NAMES {
            return Err(CaError::DnsName(format!(
                "{} names (at most {MAX_DNS_NAMES})",
                opts.dns_names.len()
            )));
        }
        let ttl = opts
            .ttl
            .unwrap_or(self.config.x509_svid_ttl)
            .as_secs()
            .max(1);
        let nb = now
            .saturating_sub(BACKDATE.as_secs())
            .max(self.intermediate.not_before);
        let na = now.saturating_add(ttl).min(self.intermediate.not_after);
        let serial = random_serial();
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "keycard");
        if let Some(first) = opts.dns_names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        p.distinguished_name = dn;
        p.not_before = odt(nb)?;
        p.not_after = odt(na)?;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let mut sans = Vec::with_capacity(1 + opts.dns_names.len());
        sans.push(SanType::URI(id.to_string().try_into().map_err(|_| {
            CaError::ForeignId {
                id: id.to_string(),
                td: self.config.trust_domain.to_string(),
            }
        })?));
        for d in &opts.dns_names {
            if !crate::registry::valid_dns_name(d) {
                return Err(CaError::DnsName(d.clone()));
            }
            sans.push(SanType::DnsName(
                d.as_str()
                    .try_into()
                    .map_err(|_| CaError::DnsName(d.clone()))?,
            ));
        }
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        Ok((p, hex::encode(serial), nb, na))
    }

    fn finish(
        &self,
        id: &SpiffeId,
        der: CertificateDer<'static>,
        serial: String,
        nb: u64,
        na: u64,
    ) -> X509Svid {
        tracing::debug!(spiffe_id = %id, serial = %serial, not_after = na, "minted X509-SVID");
        X509Svid {
            spiffe_id: id.clone(),
            chain: vec![der, self.intermediate.der.clone()],
            serial,
            not_before: time_of(nb),
            not_after: time_of(na),
        }
    }

    /// Mints an X509-SVID for `id` (which the caller has authorised) over
    /// the public key of a CSR or SPKI.
    pub fn mint_x509_svid(
        &self,
        id: &SpiffeId,
        key: SvidKey<'_>,
        opts: &SvidOptions,
        now: SystemTime,
    ) -> Result<X509Svid, CaError> {
        let public = match key {
            SvidKey::Csr(der) => csr_public_key(der, id)?,
            SvidKey::Spki(der) => spki_public_key(der)?,
        };
        let (p, serial, nb, na) = self.leaf_params(id, opts, secs(now))?;
        let cert = p.signed_by(&public, &self.intermediate.issuer)?;
        Ok(self.finish(id, cert.der().clone(), serial, nb, na))
    }

    /// Generates a P-256 key and mints an X509-SVID for it.
    pub fn mint_x509_svid_with_key(
        &self,
        id: &SpiffeId,
        opts: &SvidOptions,
        now: SystemTime,
    ) -> Result<(X509Svid, PrivateKey), CaError> {
        let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let (p, serial, nb, na) = self.leaf_params(id, opts, secs(now))?;
        let cert = p.signed_by(&kp, &self.intermediate.issuer)?;
        Ok((
            self.finish(id, cert.der().clone(), serial, nb, na),
            PrivateKey::from_pkcs8_der(kp.serialize_der()),
        ))
    }

    /// Mints a JWT-SVID (ES256) for `id` and `audience` (one or more).
    pub fn mint_jwt_svid(
        &self,
        id: &SpiffeId,
        audience: &[String],
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<JwtSvid, CaError> {
        self.check_id(id)?;
        if audience.is_empty() || audience.iter().any(|a| a.is_empty()) || audience.len() > 32 {
            return Err(CaError::Audience);
        }
        let now = secs(now);
        if now >= self.jwt.not_after {
            return Err(CaError::CaExpired(self.jwt.not_after));
        }
        let ttl = ttl.unwrap_or(self.config.jwt_svid_ttl).as_secs().max(1);
        let exp = now.saturating_add(ttl).min(self.jwt.not_after);
        let mut claims = Map::new();
        claims.insert("sub".into(), id.to_string().into());
        claims.insert(
            "aud".into(),
            if audience.len() == 1 {
                Value::String(audience[0].clone())
            } else {
                Value::Array(audience.iter().cloned().map(Value::String).collect())
            },
        );
        claims.insert("exp".into(), exp.into());
        claims.insert("iat".into(), now.into());
        let token = self.jwt.signer.sign(&claims)?;
        Ok(JwtSvid {
            spiffe_id: id.clone(),
            token,
            audience: audience.to_vec(),
            issued_at: time_of(now),
            expiry: time_of(exp),
        })
    }

    fn rebuild_bundle(&mut self) -> Result<(), CaError> {
        let mut b = TrustBundle::new(self.config.trust_domain.clone());
        for r in &self.trust.roots {
            let der = b64_std_decode(&r.cert).map_err(|e| state_err("root")(e.to_string()))?;
            b.x509_authorities.push(CertificateDer::from(der));
        }
        for k in &self.trust.jwt_keys {
            let key = JwkKey::from_jwk(&k.jwk, "jwt_keys")?;
            b.jwt_authorities.push(JwtAuthority {
                kid: k.kid.clone(),
                key,
            });
        }
        b.sequence = Some(self.trust.sequence);
        b.refresh_hint = Some(self.config.refresh_hint.as_secs());
        self.bundle = b;
        Ok(())
    }

    /// Re-reads the shared trust state (another server may have rotated the
    /// root or published its JWT key) and rebuilds the bundle. Returns
    /// whether the bundle changed.
    pub fn reload(&mut self, store: &dyn IdentityStore) -> Result<bool, CaError> {
        let trust = load_json::<TrustState>(store, &self.trust_key)?.unwrap_or_default();
        if trust == self.trust {
            return Ok(false);
        }
        self.trust = trust;
        self.rebuild_bundle()?;
        Ok(true)
    }

    /// One rotation step, to run on a timer (say every minute) on every
    /// server. Prepares the next root, intermediate and JWT key at half
    /// life (the next root and JWT key are published in the bundle from
    /// then on), switches to them at five sixths of life, and drops roots
    /// and JWT keys from the bundle once expired. Every bundle change
    /// increments `spiffe_sequence`.
    pub fn rotate(
        &mut self,
        store: &mut dyn IdentityStore,
        keys: &dyn KeyStore,
        now: SystemTime,
    ) -> Result<Vec<CaEvent>, CaError> {
        let now = secs(now);

        // 1. The shared roots, and JWT keys past expiry: read-modify-CAS,
        //    so a server rotating never undoes another's change.
        let mut generated: Vec<String> = Vec::new();
        let config = &self.config;
        let (trust, mut events) = update_trust(store, &self.trust_key, |trust| {
            let mut events = Vec::new();
            trust.roots.retain(|r| {
                let keep = r.status != Status::Retired || r.not_after > now;
                if !keep {
                    events.push(CaEvent::RootRemoved(r.fingerprint.clone()));
                }
                keep
            });
            if let Some(active) = trust
                .roots
                .iter()
                .find(|r| r.status == Status::Active)
                .cloned()
            {
                let prepared = trust.roots.iter().any(|r| r.status == Status::Prepared);
                if past(active.not_before, active.not_after, 1, 2, now) && !prepared {
                    if active.generated {
                        let mut rec = generate_root(config, keys, now)?;
                        rec.status = Status::Prepared;
                        generated.push(rec.key.clone());
                        events.push(CaEvent::RootPrepared(rec.fingerprint.clone()));
                        trust.roots.push(rec);
                    } else {
                        tracing::warn!(
                            expires_at = active.not_after,
                            "the operator's root CA is past half its life; replace it"
                        );
                        events.push(CaEvent::RootNeedsReplacement {
                            expires_at: active.not_after,
                        });
                    }
                }
                if past(active.not_before, active.not_after, 5, 6, now) {
                    if let Some(i) = trust
                        .roots
                        .iter()
                        .position(|r| r.status == Status::Prepared)
                    {
                        for r in trust
                            .roots
                            .iter_mut()
                            .filter(|r| r.status == Status::Active)
                        {
                            r.status = Status::Retired;
                        }
                        trust.roots[i].status = Status::Active;
                        events.push(CaEvent::RootActivated(trust.roots[i].fingerprint.clone()));
                    }
                }
            }
            trust.jwt_keys.retain(|k| {
                let keep = k.not_after > now;
                if !keep {
                    events.push(CaEvent::JwtKeyRemoved(k.kid.clone()));
                }
                keep
            });
            Ok(events)
        })?;
        forget_unpublished_roots(&generated, &trust, keys);
        let active = trust
            .roots
            .iter()
            .find(|r| r.status == Status::Active)
            .cloned()
            .ok_or_else(|| state_err("trust")("no active root".into()))?;
        let root_switched = active.fingerprint != self.root.fingerprint;
        let new_root = if root_switched {
            Some(load_root(&active, keys)?)
        } else {
            None
        };
        let root = new_root.as_ref().unwrap_or(&self.root);

        // 2. This instance's intermediate and JWT key (its own state: no
        //    other server writes it). Nothing changes in memory, and no old
        //    key is deleted, until the shared state has taken the change.
        let mut inst = self.instance.clone();
        let mut new_intermediate = None;
        let mut new_jwt = None;
        let mut old_keys = Vec::new();
        if inst
            .next_intermediate
            .as_ref()
            .is_some_and(|n| n.root_fingerprint != root.fingerprint)
        {
            inst.next_intermediate = None;
        }
        let cur = &inst.intermediate;
        if inst.next_intermediate.is_none()
            && (root_switched || past(cur.not_before, cur.not_after, 1, 2, now))
        {
            let next = issue_intermediate(&self.config, root, keys, now)?;
            events.push(CaEvent::IntermediatePrepared(next.key.clone()));
            inst.next_intermediate = Some(next);
        }
        let cur = &inst.intermediate;
        if root_switched
            || cur.root_fingerprint != root.fingerprint
            || past(cur.not_before, cur.not_after, 5, 6, now)
        {
            if let Some(next) = inst.next_intermediate.take() {
                new_intermediate = Some(load_intermediate(&next, keys)?);
                old_keys.push(std::mem::replace(&mut inst.intermediate, next).key);
                events.push(CaEvent::IntermediateActivated(
                    inst.intermediate.key.clone(),
                ));
            }
        }
        let cur = &inst.jwt;
        if inst.next_jwt.is_none() && past(cur.not_before, cur.not_after, 1, 2, now) {
            let next = new_jwt_key(&self.config, keys, now, root.not_after)?;
            events.push(CaEvent::JwtKeyPrepared(next.kid.clone()));
            inst.next_jwt = Some(next);
        }
        let next_signer = inst
            .next_jwt
            .as_ref()
            .map(|n| load_jwt(n, keys))
            .transpose()?;
        let cur = &inst.jwt;
        if past(cur.not_before, cur.not_after, 5, 6, now) {
            if let Some(next) = inst.next_jwt.take() {
                new_jwt = Some(load_jwt(&next, keys)?);
                // The old key stays published until it expires; its private
                // half is no longer needed.
                old_keys.push(std::mem::replace(&mut inst.jwt, next).key);
                events.push(CaEvent::JwtKeyActivated(inst.jwt.kid.clone()));
            }
        }

        // 3. Publish this instance's next and current JWT keys beside the
        //    other servers' (read-modify-CAS again).
        let current = new_jwt.as_ref().unwrap_or(&self.jwt);
        let instance = &self.config.instance;
        let (trust, ()) = update_trust(store, &self.trust_key, |t| {
            if let Some(n) = &next_signer {
                publish_jwt(t, instance, n)?;
            }
            publish_jwt(t, instance, current)
        })?;

        // 4. Commit: this instance's state, then memory, then old keys.
        if inst != self.instance {
            save_json(store, &self.instance_key, &inst)?;
            self.instance = inst;
        }
        if let Some(r) = new_root {
            self.root = r;
        }
        if let Some(i) = new_intermediate {
            self.intermediate = i;
        }
        if let Some(j) = new_jwt {
            self.jwt = j;
        }
        for k in old_keys {
            if let Err(e) = keys.delete(&k) {
                tracing::warn!(key = %k, error = %e, "could not delete a replaced CA key");
            }
        }
        if trust != self.trust {
            self.trust = trust;
            self.rebuild_bundle()?;
        }
        for e in &events {
            tracing::info!(trust_domain = %self.config.trust_domain, event = ?e, "CA rotation");
        }
        Ok(events)
    }
}

/// How often a read-modify-CAS of the shared trust state is tried before
/// giving up (each retry means another server wrote in between).
const TRUST_CAS_ATTEMPTS: usize = 64;

/// Read-modify-CAS of the trust domain's shared state, which every server
/// on the database writes: `edit` changes a fresh copy and runs again on a
/// fresh copy whenever another server wrote in between, so no server's
/// change is lost. The state is written only if `edit` changed it, with
/// the sequence one above the one read: the bundle sequence only grows.
/// Returns the state as stored and `edit`'s result.
fn update_trust<R>(
    store: &mut dyn IdentityStore,
    key: &str,
    mut edit: impl FnMut(&mut TrustState) -> Result<R, CaError>,
) -> Result<(TrustState, R), CaError> {
    for _ in 0..TRUST_CAS_ATTEMPTS {
        let (version, mut trust) = match store.versioned_value(key)? {
            None => (0, TrustState::default()),
            Some(v) => (
                v.version,
                serde_json::from_slice(&v.value).map_err(|e| state_err(key)(e.to_string()))?,
            ),
        };
        let before = trust.clone();
        let out = edit(&mut trust)?;
        if trust == before {
            return Ok((trust, out));
        }
        trust.sequence = before.sequence + 1;
        let bytes = serde_json::to_vec(&trust).map_err(|e| state_err(key)(e.to_string()))?;
        match store.compare_and_put_value(key, version, &bytes)? {
            CasOutcome::Written { .. } => return Ok((trust, out)),
            CasOutcome::Conflict { actual } => {
                tracing::debug!(
                    key,
                    read = version,
                    actual,
                    "another server changed the trust state; retrying"
                );
            }
        }
    }
    Err(state_err(key)(format!(
        "gave up after {TRUST_CAS_ATTEMPTS} attempts: other servers kept changing it"
    )))
}

/// Deletes the keys of roots generated in attempts that lost a race (never
/// published, so never used).
fn forget_unpublished_roots(generated: &[String], trust: &TrustState, keys: &dyn KeyStore) {
    for k in generated {
        if !trust.roots.iter().any(|r| &r.key == k) {
            if let Err(e) = keys.delete(k) {
                tracing::warn!(key = %k, error = %e, "could not delete an unpublished root key");
            }
        }
    }
}

fn load_json<T: for<'de> Deserialize<'de>>(
    store: &dyn IdentityStore,
    key: &str,
) -> Result<Option<T>, CaError> {
    match store.value(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| state_err(key)(e.to_string())),
    }
}

fn save_json<T: Serialize>(store: &mut dyn IdentityStore, key: &str, v: &T) -> Result<(), CaError> {
    let bytes = serde_json::to_vec(v).map_err(|e| state_err(key)(e.to_string()))?;
    store.put_value(key, &bytes)?;
    Ok(())
}

fn generate_root(config: &CaConfig, keys: &dyn KeyStore, now: u64) -> Result<RootRecord, CaError> {
    let td = &config.trust_domain;
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let nb = now.saturating_sub(BACKDATE.as_secs());
    let na = now + config.root_ttl.as_secs();
    let p = ca_params(&format!("keycard root CA {td}"), td, nb, na, None)?;
    let cert = p.self_signed(&kp)?;
    let fp = fingerprint(cert.der());
    let key = format!("{td}.root.{fp}");
    keys.store(&key, &PrivateKey::from_pkcs8_der(kp.serialize_der()))?;
    Ok(RootRecord {
        cert: b64_std(cert.der()),
        key,
        fingerprint: fp,
        status: Status::Active,
        not_before: nb,
        not_after: na,
        generated: true,
    })
}

fn operator_root(
    config: &CaConfig,
    cert_pem: &str,
    key_pem: &str,
    keys: &dyn KeyStore,
    now: u64,
) -> Result<RootRecord, CaError> {
    let bad = |s: String| CaError::OperatorRoot(s);
    let cert_der = ::pem::parse(cert_pem)
        .map_err(|e| bad(format!("certificate PEM: {e}")))?
        .into_contents();
    let (_, cert) =
        X509Certificate::from_der(&cert_der).map_err(|e| bad(format!("certificate: {e}")))?;
    if !cert.is_ca() {
        return Err(bad(
            "the certificate is not a CA (basicConstraints CA=true)".into(),
        ));
    }
    let na = cert.validity().not_after.timestamp().max(0) as u64;
    let nb = cert.validity().not_before.timestamp().max(0) as u64;
    if na <= now {
        return Err(bad(format!(
            "the certificate expired at {na} (Unix seconds)"
        )));
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::URI(u) = n {
                if u.starts_with("spiffe://") && *u != config.trust_domain.id_string() {
                    return Err(bad(format!(
                        "its URI SAN {u} is not {}",
                        config.trust_domain.id_string()
                    )));
                }
            }
        }
    }
    let key_der = ::pem::parse(key_pem)
        .map_err(|_| bad("private key PEM could not be parsed".into()))?
        .into_contents();
    let kp = KeyPair::try_from(key_der.as_slice()).map_err(|_| {
        bad("the private key is not a PKCS#8 key keycard can use (P-256, P-384 or Ed25519)".into())
    })?;
    if kp.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(bad(
            "the private key does not belong to the certificate".into()
        ));
    }
    let fp = fingerprint(&cert_der);
    let key = format!("{}.root.{fp}", config.trust_domain);
    keys.store(&key, &PrivateKey::from_pkcs8_der(key_der))?;
    Ok(RootRecord {
        cert: b64_std(&cert_der),
        key,
        fingerprint: fp,
        status: Status::Active,
        not_before: nb,
        not_after: na,
        generated: false,
    })
}

fn load_root(rec: &RootRecord, keys: &dyn KeyStore) -> Result<ActiveRoot, CaError> {
    let der = CertificateDer::from(
        b64_std_decode(&rec.cert).map_err(|e| state_err("root")(e.to_string()))?,
    );
    let kp = load_key(keys, &rec.key)?;
    let issuer = match kp {
        Some(kp) => Some(Issuer::from_ca_cert_der(&der, kp)?),
        None => None,
    };
    Ok(ActiveRoot {
        der,
        fingerprint: rec.fingerprint.clone(),
        issuer,
        not_after: rec.not_after,
    })
}

fn issue_intermediate(
    config: &CaConfig,
    root: &ActiveRoot,
    keys: &dyn KeyStore,
    now: u64,
) -> Result<IntermediateRecord, CaError> {
    let issuer = root
        .issuer
        .as_ref()
        .ok_or_else(|| CaError::RootKeyUnavailable(root.fingerprint.clone()))?;
    let nb = now.saturating_sub(BACKDATE.as_secs());
    let na = (now + config.intermediate_ttl.as_secs()).min(root.not_after);
    let p = ca_params(
        &format!(
            "keycard intermediate CA {} {}",
            config.trust_domain, config.instance
        ),
        &config.trust_domain,
        nb,
        na,
        Some(0),
    )?;
    let tag = hex::encode(rand::random::<[u8; 6]>());
    let key = format!(
        "{}.intermediate.{}.{tag}",
        config.trust_domain, config.instance
    );
    let kp = new_key(keys, &key)?;
    let mut p = p;
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&kp, issuer)?;
    Ok(IntermediateRecord {
        cert: b64_std(cert.der()),
        key,
        root_fingerprint: root.fingerprint.clone(),
        not_before: nb,
        not_after: na,
    })
}

fn load_intermediate(
    rec: &IntermediateRecord,
    keys: &dyn KeyStore,
) -> Result<Intermediate, CaError> {
    let der = CertificateDer::from(
        b64_std_decode(&rec.cert).map_err(|e| state_err("intermediate")(e.to_string()))?,
    );
    let kp = load_key(keys, &rec.key)?
        .ok_or_else(|| state_err("intermediate")(format!("key {} is missing", rec.key)))?;
    let issuer = Issuer::from_ca_cert_der(&der, kp)?;
    Ok(Intermediate {
        fingerprint: fingerprint(&der),
        der,
        issuer,
        not_before: rec.not_before,
        not_after: rec.not_after,
    })
}

fn new_jwt_key(
    config: &CaConfig,
    keys: &dyn KeyStore,
    now: u64,
    root_not_after: u64,
) -> Result<JwtRecord, CaError> {
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let der = kp.serialize_der();
    let signer = Es256Signer::from_pkcs8(&der)?;
    let key = format!(
        "{}.jwt.{}.{}",
        config.trust_domain,
        config.instance,
        hex::encode(rand::random::<[u8; 6]>())
    );
    keys.store(&key, &PrivateKey::from_pkcs8_der(der))?;
    Ok(JwtRecord {
        kid: signer.kid().to_string(),
        key,
        not_before: now,
        not_after: (now + config.jwt_key_ttl.as_secs()).min(root_not_after),
    })
}

fn load_jwt(rec: &JwtRecord, keys: &dyn KeyStore) -> Result<JwtKey, CaError> {
    let k = keys
        .load(&rec.key)?
        .ok_or_else(|| state_err("jwt key")(format!("key {} is missing", rec.key)))?;
    Ok(JwtKey {
        signer: Es256Signer::from_pkcs8(k.pkcs8_der())?,
        not_after: rec.not_after,
    })
}

fn publish_jwt(trust: &mut TrustState, instance: &str, key: &JwtKey) -> Result<(), CaError> {
    if trust.jwt_keys.iter().any(|k| k.kid == key.signer.kid()) {
        return Ok(());
    }
    let mut jwk = Map::new();
    key.signer.public_key().write_jwk(&mut jwk);
    trust.jwt_keys.push(JwtKeyRecord {
        kid: key.signer.kid().to_string(),
        jwk,
        instance: instance.to_string(),
        not_after: key.not_after,
    });
    Ok(())
}

/// A leaf's public key as rcgen wants it, with the algorithm taken from
/// the parsed SubjectPublicKeyInfo (no second parse).
struct LeafKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for LeafKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// Parses and checks a leaf public key (DER SubjectPublicKeyInfo).
fn spki_public_key(der: &[u8]) -> Result<LeafKey, CaError> {
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
        .map_err(|e| CaError::PublicKey(format!("not a SubjectPublicKeyInfo: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::PublicKey(
            "trailing bytes after the SubjectPublicKeyInfo".into(),
        ));
    }
    leaf_key(&spki)
}

const OID_ED25519: &str = "1.3.101.112";

/// Accepts EC P-256/P-384, Ed25519 and RSA of 2048 bits or more.
fn leaf_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<LeafKey, CaError> {
    let raw = spki.subject_public_key.data.to_vec();
    if spki.algorithm.algorithm.to_id_string() == OID_ED25519 {
        return if raw.len() == 32 {
            Ok(LeafKey {
                raw,
                alg: &rcgen::PKCS_ED25519,
            })
        } else {
            Err(CaError::PublicKey("Ed25519 key is not 32 bytes".into()))
        };
    }
    let alg = match JwkKey::from_parsed_spki(spki).map_err(CaError::PublicKey)? {
        JwkKey::Rsa { n, .. } if n.len() < 256 => {
            return Err(CaError::PublicKey(format!(
                "RSA key of {} bits; at least 2048",
                n.len() * 8
            )))
        }
        JwkKey::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        JwkKey::Ec {
            crv: crate::jose::Curve::P256,
            ..
        } => &rcgen::PKCS_ECDSA_P256_SHA256,
        JwkKey::Ec {
            crv: crate::jose::Curve::P384,
            ..
        } => &rcgen::PKCS_ECDSA_P384_SHA384,
    };
    Ok(LeafKey { raw, alg })
}

/// Checks a CSR (DER): parses it, verifies its signature with its own key,
/// checks that any URI SAN it asks for is `authorised`, and returns its
/// public key.
fn csr_public_key(der: &[u8], authorised: &SpiffeId) -> Result<LeafKey, CaError> {
    use ring::signature as sig;
    if der.len() > MAX_CSR_BYTES {
        return Err(CaError::Csr(format!(
            "{} bytes, over the {MAX_CSR_BYTES}-byte limit",
            der.len()
        )));
    }
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| CaError::Csr(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::Csr("trailing bytes after the request".into()));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let key = leaf_key(spki)?;
    let alg: &dyn sig::VerificationAlgorithm =
        match csr.signature_algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.10045.4.3.2" => &sig::ECDSA_P256_SHA256_ASN1,
            "1.2.840.10045.4.3.3" => &sig::ECDSA_P384_SHA384_ASN1,
            "1.3.101.112" => &sig::ED25519,
            "1.2.840.113549.1.1.11" => &sig::RSA_PKCS1_2048_8192_SHA256,
            "1.2.840.113549.1.1.12" => &sig::RSA_PKCS1_2048_8192_SHA384,
            "1.2.840.113549.1.1.13" => &sig::RSA_PKCS1_2048_8192_SHA512,
            other => {
                return Err(CaError::Csr(format!(
                    "unsupported signature algorithm {other}"
                )))
            }
        };
    sig::UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(info.raw, csr.signature_value.data.as_ref())
        .map_err(|_| {
            CaError::Csr("its signature does not verify with its own public key".into())
        })?;
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    if let GeneralName::URI(u) = n {
                        if *u != authorised.to_string() {
                            return Err(CaError::CsrIdMismatch {
                                asked: u.to_string(),
                                authorised: authorised.to_string(),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(key)
}
