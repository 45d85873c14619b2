//! Federation: the rules for keeping another trust domain's bundle fresh,
//! apart from how it is fetched (the server does the HTTPS).
//!
//! * [`RefreshBounds::next`]: when to fetch again, from the bundle's
//!   `spiffe_refresh_hint`, held between a minimum and a maximum.
//! * [`Backoff`]: how long to wait after a failed fetch (doubling, capped
//!   at the maximum); the last good bundle stays in use meanwhile.
//! * [`accept_federated`]: whether a fetched document may replace the held
//!   bundle: it must parse strictly, belong to the expected trust domain
//!   (no root naming another one), hold a usable key, and not go back in
//!   `spiffe_sequence`.
//! * [`EndpointProfile`]: how the bundle endpoint is authenticated
//!   (`https_web` or `https_spiffe`, as in the SPIFFE federation spec).
//!
//! ```
//! use std::time::Duration;
//! use keycard_identity::federation::RefreshBounds;
//!
//! let b = RefreshBounds::new(Duration::from_secs(30), Duration::from_secs(3600)).unwrap();
//! assert_eq!(b.next(Some(300)), Duration::from_secs(300));
//! assert_eq!(b.next(Some(1)), Duration::from_secs(30));
//! assert_eq!(b.next(Some(86_400)), Duration::from_secs(3600));
//! ```

use std::time::Duration;

use keycard_core::{SpiffeId, TrustDomain};

use crate::bundle::{validate_for_domain, BundleError, TrustBundle};

/// The refresh interval used when a bundle carries no hint (the SPIFFE
/// federation spec suggests five minutes).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Limits on how often a federated bundle is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshBounds {
    pub min: Duration,
    pub max: Duration,
}

impl RefreshBounds {
    /// Bounds with `min <= max` and `min` of at least one second.
    pub fn new(min: Duration, max: Duration) -> Result<Self, String> {
        if min < Duration::from_secs(1) {
            return Err("the minimum refresh interval is one second".into());
        }
        if min > max {
            return Err(format!(
                "minimum refresh {min:?} is above the maximum {max:?}"
            ));
        }
        Ok(RefreshBounds { min, max })
    }

    /// When to fetch again after a good fetch whose bundle said `hint`
    /// seconds (none: [`DEFAULT_REFRESH`]), held within the bounds.
    pub fn next(&self, hint: Option<u64>) -> Duration {
        hint.map_or(DEFAULT_REFRESH, Duration::from_secs)
            .clamp(self.min, self.max)
    }
}

impl Default for RefreshBounds {
    fn default() -> Self {
        RefreshBounds {
            min: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        }
    }
}

/// Exponential backoff after failed fetches: `min`, then doubling up to
/// `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The wait after one more failure.
    pub fn fail(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Decides whether `doc`, fetched from `td`'s bundle endpoint, replaces
/// `held`. `Ok(None)`: the same bundle as held; `Ok(Some(b))`: a new
/// bundle to store and serve; `Err`: refused (the caller keeps `held`).
pub fn accept_federated(
    td: &TrustDomain,
    held: Option<&TrustBundle>,
    doc: &[u8],
) -> Result<Option<TrustBundle>, BundleError> {
    let bundle = TrustBundle::parse(td.clone(), doc)?;
    validate_for_domain(&bundle)?;
    if let Some(old) = held {
        if let (Some(have), Some(got)) = (old.sequence, bundle.sequence) {
            if got < have {
                return Err(BundleError::Rollback {
                    td: td.to_string(),
                    got,
                    have,
                });
            }
        }
        if old == &bundle {
            return Ok(None);
        }
    }
    Ok(Some(bundle))
}

/// Reads an initial bundle for a trust domain: a SPIFFE bundle document
/// (JSON) or PEM certificates (X.509 authorities only).
pub fn parse_initial_bundle(td: &TrustDomain, bytes: &[u8]) -> Result<TrustBundle, BundleError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let bundle = if first == Some(&b'{') {
        TrustBundle::parse(td.clone(), bytes)?
    } else {
        if bytes.len() > crate::bundle::MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(bytes.len()));
        }
        let pems = ::pem::parse_many(bytes).map_err(|e| BundleError::Field {
            field: "(pem)".into(),
            reason: e.to_string(),
        })?;
        let mut b = TrustBundle::new(td.clone());
        for p in pems.into_iter().filter(|p| p.tag() == "CERTIFICATE") {
            b.x509_authorities
                .push(rustls_pki_types::CertificateDer::from(p.into_contents()));
        }
        b
    };
    validate_for_domain(&bundle)?;
    Ok(bundle)
}

/// How a bundle endpoint proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProfile {
    /// A Web PKI server certificate for the URL's host, checked against
    /// the system's roots or the given CA file.
    HttpsWeb,
    /// An X509-SVID with this SPIFFE ID, checked against the bundle held
    /// for the endpoint's trust domain (the initial one, then each fetched
    /// one).
    HttpsSpiffe { endpoint_id: SpiffeId },
}

impl EndpointProfile {
    /// `https_web`, or `https_spiffe` with the endpoint's SPIFFE ID.
    pub fn parse(name: &str, endpoint_id: Option<&str>) -> Result<Self, String> {
        match (name, endpoint_id.filter(|s| !s.is_empty())) {
            ("https_web", None) => Ok(EndpointProfile::HttpsWeb),
            ("https_web", Some(_)) => {
                Err("endpoint_spiffe_id is for the https_spiffe profile only".into())
            }
            ("https_spiffe", Some(id)) => Ok(EndpointProfile::HttpsSpiffe {
                endpoint_id: id
                    .parse()
                    .map_err(|e| format!("endpoint_spiffe_id {id:?}: {e}"))?,
            }),
            ("https_spiffe", None) => {
                Err("the https_spiffe profile needs endpoint_spiffe_id".into())
            }
            (other, _) => Err(format!(
                "profile {other:?}: expected https_web or https_spiffe"
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn refresh_follows_the_hint_within_bounds() {
        let b = RefreshBounds::new(Duration::from_secs(10), Duration::from_secs(100)).unwrap();
        assert_eq!(b.next(None), Duration::from_secs(100));
        assert_eq!(b.next(Some(0)), Duration::from_secs(10));
        assert_eq!(b.next(Some(42)), Duration::from_secs(42));
        assert!(RefreshBounds::new(Duration::from_secs(5), Duration::from_secs(1)).is_err());
        assert!(RefreshBounds::new(Duration::ZERO, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<u64> = (0..5).map(|_| b.fail().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_secs(1));
    }

    #[test]
    fn profiles() {
        assert_eq!(
            EndpointProfile::parse("https_web", None).unwrap(),
            EndpointProfile::HttpsWeb
        );
        assert!(EndpointProfile::parse("https_web", Some("spiffe://b.test/x")).is_err());
        assert!(EndpointProfile::parse("https_spiffe", None).is_err());
        assert!(EndpointProfile::parse("https_spiffe", Some("not an id")).is_err());
        assert!(EndpointProfile::parse("http", None).is_err());
        let p = EndpointProfile::parse("https_spiffe", Some("spiffe://b.test/keycard/server/up"))
            .unwrap();
        assert!(matches!(p, EndpointProfile::HttpsSpiffe { .. }));
    }
}
