//! JWT-SVID validation per the SPIFFE JWT-SVID spec.

use std::time::{SystemTime, UNIX_EPOCH};

use keycard_core::SpiffeId;
use serde_json::{Map, Value};

use crate::bundle::BundleSet;
use crate::jose::{Jws, JwtError};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// What a valid JWT-SVID says.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSvidClaims {
    /// `sub`.
    pub spiffe_id: SpiffeId,
    /// `aud`.
    pub audience: Vec<String>,
    /// `exp`, Unix seconds.
    pub expiry: u64,
    /// Every claim, for the Workload API's `ValidateJWTSVID` response.
    pub claims: Map<String, Value>,
}

/// Validates a JWT-SVID: size, header (`alg` not `none`, `kid` present, no
/// `crit`, `typ` JWT/JOSE if set), `sub` a SPIFFE ID whose trust domain has
/// a bundle in `bundles`, the `kid`'s key in that bundle, the algorithm
/// matching the key, the signature, `exp` (with [`LEEWAY_SECS`]) and `aud`
/// containing `audience`.
pub fn validate_jwt_svid(
    token: &str,
    bundles: &BundleSet,
    audience: &str,
    now: SystemTime,
) -> Result<JwtSvidClaims, JwtError> {
    let jws = Jws::decode(token)?;
    let kid = jws.kid.clone().ok_or(JwtError::MissingHeader("kid"))?;
    let sub = jws
        .claims
        .get("sub")
        .ok_or(JwtError::MissingClaim("sub"))?
        .as_str()
        .ok_or(JwtError::BadClaim {
            claim: "sub",
            reason: "must be a string".into(),
        })?;
    let spiffe_id: SpiffeId = sub.parse().map_err(|e| JwtError::BadClaim {
        claim: "sub",
        reason: format!("not a SPIFFE ID: {e}"),
    })?;
    let bundle = bundles
        .get(spiffe_id.trust_domain())
        .ok_or_else(|| JwtError::NoBundle(spiffe_id.trust_domain().to_string()))?;
    let key = bundle
        .jwt_key(&kid)
        .ok_or_else(|| JwtError::UnknownKid(kid.clone()))?;
    key.verify(&kid, &jws.alg, jws.signing_input, &jws.signature)?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expiry = jws.check_times(now, LEEWAY_SECS)?;
    let audiences = jws.audiences()?;
    if !audiences.iter().any(|a| a == audience) {
        return Err(JwtError::Audience {
            got: audiences,
            want: audience.to_string(),
        });
    }
    Ok(JwtSvidClaims {
        spiffe_id,
        audience: audiences,
        expiry,
        claims: jws.claims,
    })
}
