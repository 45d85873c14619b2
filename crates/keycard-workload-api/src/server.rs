//! The socket, the accept loop (peer credentials captured at accept), and
//! one tonic server carrying the Workload API and SDS.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

use crate::attest::{Attestor, PeerCred};
use crate::h2fix::AuthorityFix;
use crate::sds::SdsService;
use crate::workload::{Shared, WorkloadApiService};
use crate::IdentitySource;

/// The metadata every Workload API call must carry with value `true`.
pub const WORKLOAD_API_HEADER: &str = "workload.spiffe.io";

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Binding or preparing the socket failed.
    #[error("socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// Server knobs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest a caller's attestation may take; past it the call gets
    /// PermissionDenied.
    pub attestation_timeout: Duration,
    /// How long streams and connections get to finish after shutdown.
    pub shutdown_grace: Duration,
    /// Most connections open at once; further clients wait to be accepted.
    pub max_connections: usize,
    /// Most concurrent calls on one connection.
    pub max_concurrent_streams: u32,
    /// Replace an invalid HTTP/2 `:authority` (grpc-python and grpc-java
    /// send the socket path) with `localhost`; see [`crate::h2fix`]. On by
    /// default; off only to demonstrate what it fixes.
    pub rewrite_invalid_authority: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            attestation_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            max_connections: 1024,
            max_concurrent_streams: 256,
            rewrite_invalid_authority: true,
        }
    }
}

/// What the server knows of a connection; every request carries it in its
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The peer credentials taken at accept; `None` if the kernel gave none.
    pub peer: Option<PeerCred>,
}

/// Binds the Workload API socket at `path`: creates the parent directory,
/// replaces a stale socket (never another kind of file), and sets `mode`
/// (0o666 lets any local process call; the API authenticates callers by
/// attestation, not by file permissions).
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to replace it",
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

/// One accepted connection: the :authority fix over the Unix stream, its
/// peer credentials, and a slot of the connection limit.
pub(crate) struct Conn {
    io: AuthorityFix<UnixStream>,
    info: ConnInfo,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

fn peer_cred(stream: &UnixStream) -> Option<PeerCred> {
    match stream.peer_cred() {
        Ok(c) => Some(PeerCred {
            pid: c.pid().unwrap_or(0),
            uid: c.uid(),
            gid: c.gid(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials on connection");
            None
        }
    }
}

/// Serves the Workload API and SDS on `listener` until `shutdown`
/// completes, with default [`ServeOptions`].
pub async fn serve<S, A>(
    listener: UnixListener,
    source: Arc<S>,
    attestor: Arc<A>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    S: IdentitySource,
    A: Attestor,
{
    serve_with(
        listener,
        source,
        attestor,
        ServeOptions::default(),
        shutdown,
    )
    .await
}

/// Serves the Workload API and SDS on `listener` until `shutdown`
/// completes. On shutdown, streams end cleanly (the client sees the end of
/// the stream), connections get `shutdown_grace` to close, then are
/// dropped.
pub async fn serve_with<S, A>(
    listener: UnixListener,
    source: Arc<S>,
    attestor: Arc<A>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    S: IdentitySource,
    A: Attestor,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        source,
        attestor,
        options: options.clone(),
        shutdown: stop_rx.clone(),
    });
    let workload = WorkloadApiService::new(Arc::clone(&shared));
    let sds = SecretDiscoveryServiceServer::new(SdsService::new(Arc::clone(&shared)))
        .max_decoding_message_size(1 << 20);

    let limit = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let rewrite = options.rewrite_invalid_authority;
    let incoming =
        futures::stream::unfold((listener, limit), move |(listener, limit)| async move {
            loop {
                let permit = Arc::clone(&limit).acquire_owned().await.ok()?;
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let info = ConnInfo {
                            peer: peer_cred(&stream),
                        };
                        let conn = Conn {
                            io: if rewrite {
                                AuthorityFix::new(stream)
                            } else {
                                AuthorityFix::passthrough(stream)
                            },
                            info,
                            _permit: permit,
                        };
                        return Some((Ok::<_, io::Error>(conn), (listener, limit)));
                    }
                    Err(e) => {
                        drop(permit);
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });

    let signal = async move {
        shutdown.await;
        tracing::info!("workload API shutting down");
        let _ = stop_tx.send(true);
    };
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(options.max_concurrent_streams)
        .add_service(workload)
        .add_service(sds)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(server);
    let mut stopped = stop_rx;
    let grace = options.shutdown_grace;
    tokio::select! {
        r = &mut server => r.map_err(ServeError::from),
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("connections still open after the shutdown grace period; dropping them");
            Ok(())
        }
    }
}
