//! Kubernetes node attestation with projected service-account tokens
//! (PSAT), server side: picks the cluster (`[[k8s_psat]]`), gets its keys
//! (a JWKS file, the issuer's JWKS or OIDC discovery over HTTPS, cached and
//! refreshed) or asks its API server (TokenReview), and hands the verdict to
//! [`keycard_identity::attest`].
//!
//! The agent's ID is `spiffe://<td>/keycard/agent/k8s_psat/<cluster>/<node
//! uid>` (SPIRE's `/spire/agent/k8s_psat/<cluster>/<node uid>` with
//! keycard's agent prefix; the node name when the token carries no node
//! uid), with the selectors `k8s_psat:cluster`, `agent_ns`, `agent_sa` and
//! `agent_node_name`, for node entries to match. A token of a node that
//! already attested re-attests the same node, as SPIRE does; the ban list
//! still applies.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use keycard_core::TrustDomain;
use keycard_identity::attest::{BoxFuture, TokenReviewStatus};
use keycard_identity::{
    attest_psat, attest_psat_with_review, AttestError, AttestedNode, Jwks, JwtError, TokenReviewer,
};
use serde_json::Value;

use crate::config::{PsatCluster, PsatKeys};
use crate::outbound::{self, HttpsUrl};

/// The largest JWKS, discovery document or TokenReview answer read.
pub const MAX_DOCUMENT: usize = 1024 * 1024;
/// The time limit of one call to the issuer or the API server.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A token naming a key the cached JWKS lacks triggers a fetch, at most
/// this often (the issuer may have rotated its key).
const EARLY_REFRESH: Duration = Duration::from_secs(30);
const OIDC_SUFFIX: &str = "/.well-known/openid-configuration";

struct CachedJwks {
    jwks: Arc<Jwks>,
    fetched: Instant,
}

/// JWKS fetched over HTTPS, by URL (the same URL gives the same keys, so
/// one cache serves every server in the process).
static JWKS_CACHE: LazyLock<Mutex<HashMap<String, CachedJwks>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn unavailable(e: impl std::fmt::Display) -> AttestError {
    AttestError::Unavailable(e.to_string())
}

/// Attests `token` for the cluster named `cluster` (or the only one
/// configured).
pub async fn attest(
    clusters: &[PsatCluster],
    td: &TrustDomain,
    token: &str,
    cluster: Option<&str>,
) -> Result<AttestedNode, AttestError> {
    let c = pick(clusters, cluster)?;
    let token = token.trim();
    match &c.keys {
        PsatKeys::JwksFile(path) => {
            let bytes = read_limited(path, "jwks_file")?;
            let jwks = Jwks::parse(&bytes)
                .map_err(|e| AttestError::Config(format!("jwks_file {}: {e}", path.display())))?;
            attest_psat(token, td, &c.psat, &jwks, SystemTime::now())
        }
        PsatKeys::JwksUrl {
            url,
            ca_file,
            refresh,
        } => {
            let (jwks, age) = cached_jwks(url, ca_file.as_deref(), *refresh, false).await?;
            match attest_psat(token, td, &c.psat, &jwks, SystemTime::now()) {
                Err(AttestError::Signature) if age >= EARLY_REFRESH => {
                    tracing::info!(%url, "no key of the cached JWKS verifies the token; fetching it again");
                    let (jwks, _) = cached_jwks(url, ca_file.as_deref(), *refresh, true).await?;
                    attest_psat(token, td, &c.psat, &jwks, SystemTime::now())
                }
                r => r,
            }
        }
        PsatKeys::TokenReview {
            url,
            ca_file,
            token_file,
        } => {
            let reviewer = HttpReviewer {
                url: url.clone(),
                ca_file: ca_file.clone(),
                token_file: token_file.clone(),
            };
            attest_psat_with_review(token, td, &c.psat, &reviewer).await
        }
    }
}

fn pick<'a>(
    clusters: &'a [PsatCluster],
    name: Option<&str>,
) -> Result<&'a PsatCluster, AttestError> {
    match (name.filter(|n| !n.is_empty()), clusters) {
        (_, []) => Err(AttestError::Config(
            "service-account token attestation is not configured on this server ([[k8s_psat]])"
                .into(),
        )),
        (None, [only]) => Ok(only),
        (None, _) => Err(AttestError::Config(
            "several clusters are configured: the agent must name its cluster".into(),
        )),
        (Some(n), all) => all
            .iter()
            .find(|c| c.psat.cluster == n)
            .ok_or_else(|| AttestError::Config(format!("no cluster {n:?} is configured"))),
    }
}

fn read_limited(path: &Path, what: &str) -> Result<Vec<u8>, AttestError> {
    let bytes =
        std::fs::read(path).map_err(|e| unavailable(format!("{what} {}: {e}", path.display())))?;
    if bytes.len() > MAX_DOCUMENT {
        return Err(AttestError::Config(format!(
            "{what} {}: over {MAX_DOCUMENT} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

async fn get_json(tls: Arc<rustls::ClientConfig>, url: &HttpsUrl) -> Result<Vec<u8>, AttestError> {
    let (status, body) = outbound::call(
        tls,
        outbound::Request {
            method: http::Method::GET,
            url,
            headers: vec![],
            body: None,
            max_bytes: MAX_DOCUMENT,
            timeout: CALL_TIMEOUT,
        },
    )
    .await
    .map_err(unavailable)?;
    if status != 200 {
        return Err(unavailable(format!("{url}: HTTP {status}")));
    }
    Ok(body.to_vec())
}

/// The JWKS at `url` (or named by the OIDC discovery document at `url`),
/// from the cache while younger than `refresh` unless `force`. When a
/// fetch fails, the last good JWKS is kept.
async fn cached_jwks(
    url: &str,
    ca_file: Option<&Path>,
    refresh: Duration,
    force: bool,
) -> Result<(Arc<Jwks>, Duration), AttestError> {
    let held = {
        let cache = JWKS_CACHE.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(url)
            .map(|c| (Arc::clone(&c.jwks), c.fetched.elapsed()))
    };
    if let Some((jwks, age)) = &held {
        if !force && *age < refresh {
            return Ok((Arc::clone(jwks), *age));
        }
    }
    match fetch_jwks(url, ca_file).await {
        Ok(jwks) => {
            let jwks = Arc::new(jwks);
            tracing::info!(%url, keys = jwks.len(), "fetched the cluster issuer's JWKS");
            JWKS_CACHE.lock().unwrap_or_else(|p| p.into_inner()).insert(
                url.to_string(),
                CachedJwks {
                    jwks: Arc::clone(&jwks),
                    fetched: Instant::now(),
                },
            );
            Ok((jwks, Duration::ZERO))
        }
        Err(e) => match held {
            Some((jwks, age)) => {
                tracing::warn!(%url, error = %e, "could not refresh the cluster issuer's JWKS; using the last one");
                Ok((jwks, age))
            }
            None => {
                tracing::error!(%url, error = %e, "could not fetch the cluster issuer's JWKS");
                Err(e)
            }
        },
    }
}

async fn fetch_jwks(url: &str, ca_file: Option<&Path>) -> Result<Jwks, AttestError> {
    let roots = outbound::load_roots(ca_file).map_err(unavailable)?;
    let tls = outbound::web_tls(roots).map_err(unavailable)?;
    let mut target = HttpsUrl::parse(url).map_err(|e| AttestError::Config(e.to_string()))?;
    if target.path.ends_with(OIDC_SUFFIX) {
        let doc = get_json(Arc::clone(&tls), &target).await?;
        let v: Value = serde_json::from_slice(&doc)
            .map_err(|e| unavailable(format!("{target}: not JSON: {e}")))?;
        let uri = v
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| unavailable(format!("{target}: no jwks_uri")))?;
        target = HttpsUrl::parse(uri).map_err(|e| unavailable(format!("jwks_uri: {e}")))?;
    }
    let body = get_json(tls, &target).await?;
    Jwks::parse(&body).map_err(|e: JwtError| unavailable(format!("{target}: {e}")))
}

/// A TokenReview against the API server at `url`, authenticated by the
/// bearer token in `token_file` (re-read each time: projected tokens
/// rotate).
#[derive(Debug, Clone)]
pub struct HttpReviewer {
    pub url: String,
    pub ca_file: Option<std::path::PathBuf>,
    pub token_file: std::path::PathBuf,
}

const REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

impl HttpReviewer {
    async fn call(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<TokenReviewStatus, AttestError> {
        let base = HttpsUrl::parse(&self.url).map_err(|e| AttestError::Config(e.to_string()))?;
        let prefix = base.path.trim_end_matches('/');
        let url = base.with_path(&format!("{prefix}{REVIEW_PATH}"));
        let bearer = read_limited(&self.token_file, "token_review_token_file")?;
        let bearer = String::from_utf8(bearer)
            .map_err(|_| AttestError::Config("token_review_token_file is not text".into()))?;
        let roots = outbound::load_roots(self.ca_file.as_deref()).map_err(unavailable)?;
        let tls = outbound::web_tls(roots).map_err(unavailable)?;
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        });
        let (status, resp) = outbound::call(
            tls,
            outbound::Request {
                method: http::Method::POST,
                url: &url,
                headers: vec![
                    (
                        http::header::AUTHORIZATION,
                        format!("Bearer {}", bearer.trim()),
                    ),
                    (http::header::CONTENT_TYPE, "application/json".into()),
                ],
                body: Some(body.to_string().into_bytes()),
                max_bytes: MAX_DOCUMENT,
                timeout: CALL_TIMEOUT,
            },
        )
        .await
        .map_err(unavailable)?;
        if !(200..300).contains(&status) {
            tracing::error!(%url, status, "the API server refused the TokenReview");
            return Err(unavailable(format!("TokenReview: HTTP {status}")));
        }
        parse_review(&resp)
    }
}

/// Reads a TokenReview answer's `status`.
pub fn parse_review(body: &[u8]) -> Result<TokenReviewStatus, AttestError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| unavailable(format!("TokenReview answer is not JSON: {e}")))?;
    let st = v.get("status").cloned().unwrap_or(Value::Null);
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(String::from);
    let user = st.get("user");
    let extra = |k: &str| {
        user.and_then(|u| u.get("extra"))
            .and_then(|e| e.get(format!("authentication.kubernetes.io/{k}")))
            .and_then(|v| v.get(0))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Ok(TokenReviewStatus {
        authenticated: st
            .get("authenticated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        username: s(user.and_then(|u| u.get("username"))).unwrap_or_default(),
        audiences: st
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        pod_name: extra("pod-name"),
        pod_uid: extra("pod-uid"),
        node_name: extra("node-name"),
        node_uid: extra("node-uid"),
        error: s(st.get("error")).filter(|e| !e.is_empty()),
    })
}

impl TokenReviewer for HttpReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<TokenReviewStatus, AttestError>> {
        Box::pin(self.call(token, audiences))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_review_answer_is_read() {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "status": {
                "authenticated": true,
                "audiences": ["keycard"],
                "user": {
                    "username": "system:serviceaccount:keycard:agent",
                    "extra": {
                        "authentication.kubernetes.io/pod-name": ["agent-1"],
                        "authentication.kubernetes.io/pod-uid": ["p-uid"],
                        "authentication.kubernetes.io/node-name": ["n1"],
                        "authentication.kubernetes.io/node-uid": ["n-uid"]
                    }
                }
            }
        });
        let st = parse_review(body.to_string().as_bytes()).unwrap();
        assert!(st.authenticated);
        assert_eq!(st.username, "system:serviceaccount:keycard:agent");
        assert_eq!(st.node_uid.as_deref(), Some("n-uid"));
        assert_eq!(st.pod_name.as_deref(), Some("agent-1"));
        let st =
            parse_review(br#"{"status": {"authenticated": false, "error": "expired"}}"#).unwrap();
        assert!(!st.authenticated);
        assert_eq!(st.error.as_deref(), Some("expired"));
        assert!(parse_review(b"<html>").is_err());
    }
}
