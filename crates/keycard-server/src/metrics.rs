//! Prometheus metrics of the control plane, at `/metrics` on the API (an
//! auditor credential is needed, like every control-plane call; point
//! Prometheus' `authorization.credentials_file` at an auditor token).
//!
//! - `keycard_certificate_expiry_seconds{kind,name}`: seconds until every
//!   CA certificate, JWT key and cached X509-SVID expires (negative once
//!   expired): alert well before zero.
//! - `keycard_entries`, `keycard_agents`, `keycard_revocations`: sizes.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::agent::LocalAgent;
use crate::api::{caller, ApiError, ApiResult, PeerIdentity};
use crate::auth::Role;
use crate::state::ServerState;

type Labels = Vec<(String, String)>;

/// Renders the metrics of `state` (and of the local agent, if any).
pub fn render(state: &ServerState, agent: Option<&LocalAgent>) -> Result<String, String> {
    let now = SystemTime::now();
    let mut reg = Registry::default();
    let expiry = Family::<Labels, Gauge>::default();
    reg.register(
        "keycard_certificate_expiry_seconds",
        "Seconds until each CA certificate, JWT key and cached X509-SVID expires",
        expiry.clone(),
    );
    for e in state.ca().expiries(now) {
        expiry
            .get_or_create(&vec![
                ("kind".into(), e.kind.to_string()),
                ("name".into(), e.name.clone()),
            ])
            .set(e.seconds);
    }
    if let Some(a) = agent {
        for (id, secs) in a.expiries(now) {
            expiry
                .get_or_create(&vec![
                    ("kind".into(), "x509_svid".into()),
                    ("name".into(), id),
                ])
                .set(secs);
        }
    }
    let (entries, agents, revocations) = {
        let st = state.store();
        (
            st.list_entries().map_err(|e| e.to_string())?.len(),
            st.list_agents().map_err(|e| e.to_string())?.len(),
            st.revocations_since(0).map_err(|e| e.to_string())?.len(),
        )
    };
    for (name, help, v) in [
        ("keycard_entries", "Registration entries", entries),
        ("keycard_agents", "Known agents", agents),
        (
            "keycard_revocations",
            "Revocations in the feed",
            revocations,
        ),
    ] {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        reg.register(name, help, g);
    }
    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The `/metrics` route.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(
    State(s): State<Arc<ServerState>>,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
) -> ApiResult<Response> {
    caller(&s, &h, &p, Role::Auditor)?;
    let body = render(&s, s.local_agent.get().map(Arc::as_ref))
        .map_err(|e| ApiError(axum::http::StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
