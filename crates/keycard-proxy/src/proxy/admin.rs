//! The admin listener (/metrics, /healthz, /readyz) and the reload loop
//! (policies, revocations, posture; revoked peers' connections closed).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::metrics::strip_eof;
use super::{ListenerHandle, ProxyContext, ProxyError};
use crate::files::{PostureDb, Revocations, Watched};
use crate::loader::{PolicyStore, Reload};

fn respond(ctx: &ProxyContext, path: &str) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => {
            if let Some(s) = ctx.identity.svid() {
                let secs = match s.info.not_after.duration_since(SystemTime::now()) {
                    Ok(d) => d.as_secs() as i64,
                    Err(e) => -(e.duration().as_secs() as i64),
                };
                ctx.metrics.set_svid_expiry(secs);
            }
            let mut text = strip_eof(ctx.authz_metrics.encode());
            text.push_str(&ctx.metrics.encode());
            text.push_str("# EOF\n");
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => {
            if ctx.identity.is_ready() {
                (StatusCode::OK, "text/plain", "ready\n".to_string())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no SVID yet\n".to_string(),
                )
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    r
}

/// Serve /metrics, /healthz and /readyz.
pub async fn start(
    ctx: Arc<ProxyContext>,
    listen: SocketAddr,
) -> Result<ListenerHandle, ProxyError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ProxyError::Io {
            what: format!("admin listener {listen}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Io {
        what: "admin listener".into(),
        source,
    })?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let r = respond(&ctx, req.uri().path());
                    async move { Ok::<_, Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            });
        }
    });
    Ok(ListenerHandle::new(addr, task))
}

/// Files the proxy watches.
#[derive(Default, Clone)]
pub struct Watchers {
    pub policies: Option<Arc<PolicyStore>>,
    pub revocations: Option<Arc<Watched<Revocations>>>,
    pub posture: Option<Arc<Watched<PostureDb>>>,
    pub grants: Option<Arc<Watched<crate::grants::Grants>>>,
}

/// Re-read changed files every `every`; on a revocation change close the
/// connections of revoked identities at once.
pub fn spawn_reload(ctx: Arc<ProxyContext>, w: Watchers, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(20)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let w2 = w.clone();
            let m = ctx.authz_metrics.clone();
            let res = tokio::task::spawn_blocking(move || {
                if let Some(p) = &w2.policies {
                    match p.reload_if_changed() {
                        Reload::Failed(_) => m.reload_error("policies"),
                        Reload::Reloaded(n) => m.set_policies(n),
                        Reload::Unchanged => {}
                    }
                }
                if let Some(p) = &w2.posture {
                    if p.reload_if_changed().is_err() {
                        m.reload_error("posture");
                    }
                }
                if let Some(g) = &w2.grants {
                    if g.reload_if_changed().is_err() {
                        m.reload_error("grants");
                    }
                }
                match &w2.revocations {
                    Some(r) => match r.reload_if_changed() {
                        Ok(changed) => changed,
                        Err(_) => {
                            m.reload_error("revocations");
                            false
                        }
                    },
                    None => false,
                }
            })
            .await;
            if let (Ok(true), Some(r)) = (res, &w.revocations) {
                let n = ctx.conns.close_revoked(&r.current());
                if n > 0 {
                    tracing::info!(connections = n, "closing connections of revoked identities");
                }
            }
        }
    })
}
