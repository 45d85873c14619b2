//! HTTP/1.1 `Upgrade` (WebSocket and the like) and `CONNECT`: once the
//! request is authorized and the far side agreed (101, or 2xx to CONNECT),
//! both connections become one bidirectional byte stream.

use std::sync::Mutex;

use http::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

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

/// Wait for the downstream side's upgrade, then copy both ways until
/// either side closes.
pub(crate) async fn splice<T>(downstream: OnUpgrade, upstream: T, what: &'static str)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let down = match downstream.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, what, "downstream upgrade failed");
            return;
        }
    };
    copy(down, upstream, what).await;
}

/// Both sides upgraded: copy until either closes.
pub(crate) async fn splice_upgrades(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    what: &'static str,
) {
    let (down, up) = match tokio::join!(downstream, upstream) {
        (Ok(d), Ok(u)) => (d, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, what, "upgrade failed");
            return;
        }
    };
    copy(down, TokioIo::new(up), what).await;
}

async fn copy<T>(down: Upgraded, mut up: T, what: &'static str)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut down = TokioIo::new(down);
    match tokio::io::copy_bidirectional(&mut down, &mut up).await {
        Ok((a, b)) => tracing::debug!(what, to_upstream = a, to_downstream = b, "tunnel closed"),
        Err(e) => tracing::debug!(error = %e, what, "tunnel ended"),
    }
}
