//! HTTP/1.1 `Upgrade` (WebSocket and the like) and `CONNECT`: once the
//! request is authorized and the far side agreed (101, or 2xx to CONNECT),
//! both connections become one bidirectional byte stream.

use std::sync::Mutex;

use http::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use super::server_h1;

/// The `Upgrade` value of a request or response that asks for one
/// (`Connection: upgrade` and an `Upgrade` header), before hop-by-hop
/// headers are stripped.
pub(crate) fn upgrade_of(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    h.get(UPGRADE).cloned()
}

/// Put back the two hop-by-hop headers an upgrade needs on the next hop.
pub(crate) fn restore_upgrade(h: &mut HeaderMap, upgrade: HeaderValue) {
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, upgrade);
}

/// The tunnels of one downstream connection: they outlive the HTTP
/// connection that started them, and end with it (revocation, idle).
#[derive(Default)]
pub(crate) struct Tunnels(Mutex<Vec<JoinHandle<()>>>);

impl Tunnels {
    pub fn push(&self, h: JoinHandle<()>) {
        match self.0.lock() {
            Ok(mut v) => v.push(h),
            // A poisoned list: nobody can wait on it, so do not leave it running.
            Err(_) => h.abort(),
        }
    }

    pub fn take(&self) -> Vec<JoinHandle<()>> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl Drop for Tunnels {
    /// The connection is gone (ended, revoked, idle): so are its tunnels.
    fn drop(&mut self) {
        for h in self.take() {
            h.abort();
        }
    }
}

/// Wait for every tunnel; abort them all when dropped before that.
pub(crate) async fn join_all(handles: Vec<JoinHandle<()>>) {
    struct AbortOnDrop(Vec<JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for h in &self.0 {
                h.abort();
            }
        }
    }
    let mut guard = AbortOnDrop(handles);
    for h in guard.0.iter_mut() {
        let _ = h.await;
    }
    guard.0.clear();
}

/// The client's side of an upgrade: hyper's, or keycard's own HTTP/1.1
/// server's.
pub(crate) enum Downstream {
    Hyper(OnUpgrade),
    Own(server_h1::OnUpgrade),
}

impl Downstream {
    /// Take the client's side of an upgrade out of a request's extensions.
    pub fn take(ext: &mut http::Extensions) -> Option<Self> {
        if let Some(u) = ext.remove::<OnUpgrade>() {
            return Some(Downstream::Hyper(u));
        }
        ext.remove::<server_h1::OnUpgrade>().map(Downstream::Own)
    }
}

/// Wait for the downstream side's upgrade, then copy both ways until
/// either side closes.
pub(crate) async fn splice<T>(downstream: Downstream, upstream: T, what: &'static str)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    match downstream {
        Downstream::Hyper(u) => match u.await {
            Ok(down) => copy(TokioIo::new(down), upstream, what).await,
            Err(e) => tracing::debug!(error = %e, what, "downstream upgrade failed"),
        },
        Downstream::Own(u) => match u.upgraded().await {
            Ok(down) => copy(down, upstream, what).await,
            Err(e) => tracing::debug!(error = %e, what, "downstream upgrade failed"),
        },
    }
}

/// Both sides upgraded: copy until either closes.
pub(crate) async fn splice_upgrades(
    downstream: Downstream,
    upstream: OnUpgrade,
    what: &'static str,
) {
    match upstream.await {
        Ok(up) => splice(downstream, TokioIo::new(up), what).await,
        Err(e) => tracing::debug!(error = %e, what, "upstream upgrade failed"),
    }
}

async fn copy<D, U>(mut down: D, mut up: U, what: &'static str)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut down, &mut up).await {
        Ok((a, b)) => tracing::debug!(what, to_upstream = a, to_downstream = b, "tunnel closed"),
        Err(e) => tracing::debug!(error = %e, what, "tunnel ended"),
    }
}
