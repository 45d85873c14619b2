//! keycard's identity system: the SPIFFE CA, X509- and JWT-SVID minting,
//! bundles and federation, registration, attestation, join tokens,
//! rotation and revocation.
//!
//! ```
//! use std::time::SystemTime;
//! use keycard_identity::{validate_jwt_svid, BundleSet, Ca, CaConfig, MemoryKeyStore, RootSource, SvidOptions};
//! use keycard_store::MemoryStore;
//!
//! let td = "example.org".parse().unwrap();
//! let (mut store, keys) = (MemoryStore::new(), MemoryKeyStore::new());
//! let now = SystemTime::now();
//! let ca = Ca::open(CaConfig::new(td, "server-1"), RootSource::Generate, &mut store, &keys, now).unwrap();
//!
//! // An X509-SVID with a fresh P-256 key: leaf and intermediate; the root is in the bundle.
//! let id = "spiffe://example.org/app".parse().unwrap();
//! let (svid, _key) = ca.mint_x509_svid_with_key(&id, &SvidOptions::default(), now).unwrap();
//! assert_eq!(svid.chain.len(), 2);
//!
//! // A JWT-SVID, validated against the bundle (as a workload's peer would).
//! let jwt = ca.mint_jwt_svid(&id, &["db".to_string()], None, now).unwrap();
//! let mut bundles = BundleSet::new();
//! bundles.insert(ca.bundle().clone());
//! let claims = validate_jwt_svid(&jwt.token, &bundles, "db", now).unwrap();
//! assert_eq!(claims.spiffe_id, id);
//!
//! // The bundle in the SPIFFE format, for the bundle endpoint.
//! assert!(ca.bundle().to_json().contains("\"use\":\"x509-svid\""));
//! ```
//!
//! How a server uses it: [`Ca::open`] at start (a [`FileKeyStore`] in the
//! data directory and the store; the same CA comes back after a restart),
//! [`Ca::rotate`] every minute or so, [`Ca::bundle`] on the bundle
//! endpoint, [`Registry::authorises`] and [`RevocationSet::check_renewal`]
//! before [`Ca::mint_x509_svid`] for an agent's CSR, [`attest_join_token`]
//! or [`attest_psat`] when an agent connects, and
//! [`revocation::delete_entry`]/[`revocation::ban_agent`] for the admin API.
//! An agent keeps its SVIDs in a [`Rotator`], which renews each at about
//! half-life with jitter. Trust bundles hold roots only; intermediates
//! travel in the SVID chains.

pub mod attest;
pub mod bundle;
pub mod ca;
pub mod federation;
pub mod jose;
pub mod jwt;
pub mod keystore;
pub mod registry;
pub mod revocation;
pub mod rotation;

pub use attest::{
    attest_join_token, attest_psat, attest_psat_with_review, generate_join_token, AttestError,
    AttestedNode, GeneratedJoinToken, PsatConfig, TokenReviewStatus, TokenReviewer,
};
pub use bundle::{BundleError, BundleSet, JwtAuthority, TrustBundle};
pub use ca::{
    Ca, CaConfig, CaError, CaEvent, Expiry, JwtSvid, RootSource, SvidKey, SvidOptions, X509Svid,
};
pub use federation::{accept_federated, Backoff, EndpointProfile, RefreshBounds};
pub use jose::{JwkKey, Jwks, JwtError};
pub use jwt::{validate_jwt_svid, JwtSvidClaims};
pub use keystore::{FileKeyStore, KeyStore, KeyStoreError, MemoryKeyStore, PrivateKey};
pub use registry::{validate_entry, EntryLimits, NewEntry, RegistrationError, Registry};
pub use revocation::{ban_agent, delete_entry, revoke_identity, RevocationSet, Revoked};
pub use rotation::{
    renewal_time, CacheEvent, Clock, Expiring, RenewError, Renewer, RotationConfig, RotationStats,
    Rotator, SystemClock, TokioClock,
};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_and_sync() {
        send_sync::<crate::Ca>();
        send_sync::<crate::BundleSet>();
        send_sync::<crate::RevocationSet>();
        send_sync::<crate::FileKeyStore>();
        send_sync::<crate::Rotator<crate::X509Svid>>();
    }
}
