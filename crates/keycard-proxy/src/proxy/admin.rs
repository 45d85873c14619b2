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

/// The decision log fails closed and cannot take records: every request is refused.
fn log_closed(ctx: &ProxyContext) -> bool {
    ctx.audit.as_ref().is_some_and(|a| {
        a.writer().mode() == keycard_audit::FailureMode::FailClosed && !a.writer().available()
    })
}

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
            if let Some(a) = &ctx.audit {
                text.push_str(&a.encode_metrics());
            }
            text.push_str("# EOF\n");
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => {
            if log_closed(ctx) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: the decision log cannot take records (requests are refused)\n"
                        .to_string(),
                )
            } else if ctx.identity.is_ready() {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use http_body_util::BodyExt;
    use keycard_audit::writer::{DecisionWriter, Rejected, WriterStats};
    use keycard_audit::{FailureMode, Record};
    use keycard_identity::{Ca, CaConfig, MemoryKeyStore, RootSource, SvidOptions};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;
    use crate::proxy::{Bundles, IdentityState, Svid};
    use crate::{compile_str, Authorizer, Mode};

    /// A decision log that is up or down on command.
    struct Switchable {
        up: AtomicBool,
        mode: FailureMode,
    }

    impl DecisionWriter for Switchable {
        fn available(&self) -> bool {
            self.up.load(Ordering::Acquire)
        }
        fn submit(&self, _rec: Record) -> Result<(), Rejected> {
            Ok(())
        }
        fn try_submit(&self, _rec: Record) -> Result<(), Rejected> {
            Ok(())
        }
        fn stats(&self) -> WriterStats {
            WriterStats {
                available: self.available(),
                ..WriterStats::default()
            }
        }
        fn mode(&self) -> FailureMode {
            self.mode
        }
        fn unavailable_reason(&self) -> Rejected {
            Rejected::WriteFailed("disk full".into())
        }
        fn shutdown(&self, _timeout: Duration) -> bool {
            true
        }
    }

    /// A ready proxy context (SVID and bundle loaded) whose decision log is `w`.
    fn ctx(w: Arc<Switchable>) -> ProxyContext {
        let ca = Ca::open(
            CaConfig::new("example.org".parse().unwrap(), "t"),
            RootSource::Generate,
            &mut keycard_store::MemoryStore::new(),
            &MemoryKeyStore::new(),
            SystemTime::now(),
        )
        .unwrap();
        let id = "spiffe://example.org/ns/prod/sa/api".parse().unwrap();
        let (s, key) = ca
            .mint_x509_svid_with_key(&id, &SvidOptions::default(), SystemTime::now())
            .unwrap();
        let svid = Svid::new(
            s.chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec())),
        )
        .unwrap();
        let mut bundles = Bundles::new();
        bundles
            .insert(ca.trust_domain().as_str(), &ca.bundle().x509_authorities)
            .unwrap();
        let authorizer = Arc::new(Authorizer::with_policies(
            compile_str("none", "", Mode::Enforce).unwrap(),
        ));
        let mut ctx = ProxyContext::new(IdentityState::with(svid, bundles), authorizer);
        ctx.audit = Some(Arc::new(crate::record::AuditSink::new(
            w,
            keycard_audit::EnforcementPoint::Proxy,
            None,
            ctx.authz_metrics.clone(),
        )));
        ctx
    }

    async fn get(ctx: &ProxyContext, path: &str) -> (StatusCode, String) {
        let r = respond(ctx, path);
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_and_metrics_follow_the_decision_log() {
        let w = Arc::new(Switchable {
            up: AtomicBool::new(true),
            mode: FailureMode::FailClosed,
        });
        let ctx = ctx(w.clone());
        assert_eq!(get(&ctx, "/readyz").await.0, StatusCode::OK);
        let (_, m) = get(&ctx, "/metrics").await;
        assert!(m.contains("keycard_audit_available 1\n"), "{m}");
        assert!(
            m.ends_with("# EOF\n") && m.matches("# EOF").count() == 1,
            "{m}"
        );
        let audit_at = m.find("keycard_audit_available").unwrap();
        assert!(audit_at < m.find("# EOF").unwrap());

        // Failing closed: not ready, and the gauge says so.
        w.up.store(false, Ordering::Release);
        let (status, body) = get(&ctx, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("decision log"), "{body}");
        let (_, m) = get(&ctx, "/metrics").await;
        assert!(m.contains("keycard_audit_available 0\n"), "{m}");
        assert!(m.ends_with("# EOF\n"), "{m}");

        // Back: ready again.
        w.up.store(true, Ordering::Release);
        assert_eq!(get(&ctx, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_fail_open_log_that_is_down_keeps_the_proxy_ready() {
        let w = Arc::new(Switchable {
            up: AtomicBool::new(false),
            mode: FailureMode::FailOpen,
        });
        let ctx = ctx(w);
        assert_eq!(get(&ctx, "/readyz").await.0, StatusCode::OK);
        let (_, m) = get(&ctx, "/metrics").await;
        assert!(m.contains("keycard_audit_available 0\n"), "{m}");
    }
}
