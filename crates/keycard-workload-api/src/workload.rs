//! The `SpiffeWorkloadAPI` gRPC service: a hand-written tonic service (no
//! protoc) routing the five RPCs to handlers over an [`IdentitySource`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use keycard_core::{Selector, SpiffeId};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};

use crate::attest::Attestor;
use crate::proto::{
    json_to_struct, JwtBundlesRequest, JwtBundlesResponse, JwtSvid, JwtSvidRequest,
    JwtSvidResponse, ValidateJwtSvidRequest, ValidateJwtSvidResponse, X509BundlesRequest,
    X509BundlesResponse, X509Svid, X509SvidRequest, X509SvidResponse,
};
use crate::server::{ConnInfo, ServeOptions, WORKLOAD_API_HEADER};
use crate::{concat_der, IdentitySource, SourceError};

/// What every handler needs: the source, the attestor, the options and the
/// shutdown signal that ends streams.
pub(crate) struct Shared<S, A> {
    pub(crate) source: Arc<S>,
    pub(crate) attestor: Arc<A>,
    pub(crate) options: ServeOptions,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl<S: IdentitySource, A: Attestor> Shared<S, A> {
    /// Attests the caller of `req` from its connection's peer credentials,
    /// on a blocking thread, under the attestation time limit.
    pub(crate) async fn attest(&self, ext: &http::Extensions) -> Result<Vec<Selector>, Status> {
        let Some(peer) = ext.get::<ConnInfo>().and_then(|c| c.peer) else {
            return Err(Status::permission_denied(
                "the connection carries no peer credentials",
            ));
        };
        let attestor = Arc::clone(&self.attestor);
        let job = tokio::task::spawn_blocking(move || attestor.attest(&peer));
        match tokio::time::timeout(self.options.attestation_timeout, job).await {
            Ok(Ok(Ok(selectors))) => {
                tracing::debug!(
                    pid = peer.pid,
                    uid = peer.uid,
                    n = selectors.len(),
                    "attested"
                );
                Ok(selectors)
            }
            Ok(Ok(Err(e))) => {
                tracing::info!(pid = peer.pid, uid = peer.uid, error = %e, "attestation failed");
                Err(Status::permission_denied(format!(
                    "attestation failed: {e}"
                )))
            }
            Ok(Err(e)) => {
                tracing::warn!(pid = peer.pid, error = %e, "attestation task failed");
                Err(Status::internal("attestation failed"))
            }
            Err(_) => {
                tracing::warn!(pid = peer.pid, uid = peer.uid, "attestation timed out");
                Err(Status::permission_denied("attestation timed out"))
            }
        }
    }
}

pub(crate) fn source_status(e: SourceError) -> Status {
    match e {
        SourceError::NotEntitled(m) => Status::permission_denied(m),
        SourceError::Invalid(m) => Status::invalid_argument(m),
        SourceError::Unavailable(m) => Status::unavailable(m),
        SourceError::Internal(m) => {
            tracing::warn!(error = %m, "identity source failed");
            Status::internal("identity source failed")
        }
    }
}

fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

fn check_header(md: &tonic::metadata::MetadataMap) -> Result<(), Status> {
    match md.get(WORKLOAD_API_HEADER).map(|v| v.as_bytes()) {
        Some(b"true") => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

/// Streams `first`, then a fresh message from `compute` each time the
/// source's update counter moves and the message differs from the last one
/// sent; ends on shutdown, when the client goes away, or with the error
/// `compute` returns (such as a revoked identity).
fn stream_updates<T, F>(
    first: T,
    mut compute: F,
    mut updates: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<T, Status>>
where
    T: prost::Message + Send + 'static,
    F: FnMut() -> Result<T, Status> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut last = first.encode_to_vec();
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return },
                () = crate::workload::stopped(&mut shutdown) => return,
                () = tx.closed() => return,
            }
            match compute() {
                Ok(msg) => {
                    let bytes = msg.encode_to_vec();
                    if bytes == last {
                        continue;
                    }
                    last = bytes;
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

impl<S: IdentitySource, A: Attestor> Shared<S, A> {
    fn x509_svid_response(&self, selectors: &[Selector]) -> Result<X509SvidResponse, Status> {
        let svids = self.source.x509_svids(selectors).map_err(source_status)?;
        if svids.is_empty() {
            return Err(no_identity());
        }
        let bundles = self.source.bundles();
        let own = self.source.trust_domain();
        let mut resp = X509SvidResponse::default();
        for svid in svids {
            let td = svid.spiffe_id.trust_domain();
            let bundle = bundles
                .get(td)
                .or_else(|| bundles.get(&own))
                .map(|b| concat_der(&b.x509_authorities))
                .unwrap_or_default();
            resp.svids.push(X509Svid {
                spiffe_id: svid.spiffe_id.to_string(),
                x509_svid: concat_der(&svid.cert_chain),
                x509_svid_key: svid.private_key_pkcs8,
                bundle,
                hint: svid.hint,
            });
        }
        for (td, b) in &bundles {
            if *td != own && !b.x509_authorities.is_empty() {
                resp.federated_bundles
                    .insert(td.id_string(), concat_der(&b.x509_authorities));
            }
        }
        Ok(resp)
    }

    fn entitled(&self, selectors: &[Selector]) -> Result<(), Status> {
        let svids = self.source.x509_svids(selectors).map_err(source_status)?;
        if svids.is_empty() {
            Err(no_identity())
        } else {
            Ok(())
        }
    }

    fn x509_bundles_response(&self, selectors: &[Selector]) -> Result<X509BundlesResponse, Status> {
        self.entitled(selectors)?;
        let bundles: HashMap<String, Vec<u8>> = self
            .source
            .bundles()
            .iter()
            .filter(|(_, b)| !b.x509_authorities.is_empty())
            .map(|(td, b)| (td.id_string(), concat_der(&b.x509_authorities)))
            .collect();
        Ok(X509BundlesResponse {
            crl: Vec::new(),
            bundles,
        })
    }

    fn jwt_bundles_response(&self, selectors: &[Selector]) -> Result<JwtBundlesResponse, Status> {
        self.entitled(selectors)?;
        let bundles = self
            .source
            .bundles()
            .into_iter()
            .filter(|(_, b)| !b.jwks.is_empty())
            .map(|(td, b)| (td.id_string(), b.jwks))
            .collect();
        Ok(JwtBundlesResponse { bundles })
    }
}

type Api<S, A> = Arc<Shared<S, A>>;

async fn fetch_x509_svid<S: IdentitySource, A: Attestor>(
    api: Api<S, A>,
    req: Request<X509SvidRequest>,
) -> Result<Response<ReceiverStream<Result<X509SvidResponse, Status>>>, Status> {
    check_header(req.metadata())?;
    let selectors = api.attest(req.extensions()).await?;
    // Subscribe before building the first message, so that no change in
    // between is missed.
    let updates = api.source.updates();
    let first = api.x509_svid_response(&selectors)?;
    let shutdown = api.shutdown.clone();
    let compute = move || api.x509_svid_response(&selectors);
    Ok(Response::new(stream_updates(
        first, compute, updates, shutdown,
    )))
}

async fn fetch_x509_bundles<S: IdentitySource, A: Attestor>(
    api: Api<S, A>,
    req: Request<X509BundlesRequest>,
) -> Result<Response<ReceiverStream<Result<X509BundlesResponse, Status>>>, Status> {
    check_header(req.metadata())?;
    let selectors = api.attest(req.extensions()).await?;
    // Subscribe before building the first message, so that no change in
    // between is missed.
    let updates = api.source.updates();
    let first = api.x509_bundles_response(&selectors)?;
    let shutdown = api.shutdown.clone();
    let compute = move || api.x509_bundles_response(&selectors);
    Ok(Response::new(stream_updates(
        first, compute, updates, shutdown,
    )))
}

async fn fetch_jwt_bundles<S: IdentitySource, A: Attestor>(
    api: Api<S, A>,
    req: Request<JwtBundlesRequest>,
) -> Result<Response<ReceiverStream<Result<JwtBundlesResponse, Status>>>, Status> {
    check_header(req.metadata())?;
    let selectors = api.attest(req.extensions()).await?;
    // Subscribe before building the first message, so that no change in
    // between is missed.
    let updates = api.source.updates();
    let first = api.jwt_bundles_response(&selectors)?;
    let shutdown = api.shutdown.clone();
    let compute = move || api.jwt_bundles_response(&selectors);
    Ok(Response::new(stream_updates(
        first, compute, updates, shutdown,
    )))
}

async fn fetch_jwt_svid<S: IdentitySource, A: Attestor>(
    api: Api<S, A>,
    req: Request<JwtSvidRequest>,
) -> Result<Response<JwtSvidResponse>, Status> {
    check_header(req.metadata())?;
    let body = req.get_ref();
    if body.audience.is_empty() || body.audience.iter().any(String::is_empty) {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    let wanted: Option<SpiffeId> = if body.spiffe_id.is_empty() {
        None
    } else {
        Some(body.spiffe_id.parse().map_err(|e| {
            Status::invalid_argument(format!("spiffe_id {:?}: {e}", body.spiffe_id))
        })?)
    };
    let selectors = api.attest(req.extensions()).await?;
    let svids = api
        .source
        .jwt_svids(&selectors, wanted.as_ref(), &body.audience)
        .map_err(source_status)?;
    if svids.is_empty() {
        return Err(no_identity());
    }
    Ok(Response::new(JwtSvidResponse {
        svids: svids
            .into_iter()
            .map(|s| JwtSvid {
                spiffe_id: s.spiffe_id.to_string(),
                svid: s.token,
                hint: s.hint,
            })
            .collect(),
    }))
}

async fn validate_jwt_svid<S: IdentitySource, A: Attestor>(
    api: Api<S, A>,
    req: Request<ValidateJwtSvidRequest>,
) -> Result<Response<ValidateJwtSvidResponse>, Status> {
    check_header(req.metadata())?;
    let body = req.get_ref();
    if body.audience.is_empty() {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if body.svid.is_empty() {
        return Err(Status::invalid_argument("svid must be specified"));
    }
    // Any attested local process may verify tokens (it is a verifier, not
    // an identity holder), as with SPIRE.
    api.attest(req.extensions()).await?;
    let (id, claims) = api
        .source
        .validate_jwt(&body.svid, &body.audience)
        .map_err(|e| match e {
            SourceError::Invalid(m) | SourceError::NotEntitled(m) => Status::invalid_argument(m),
            other => source_status(other),
        })?;
    Ok(Response::new(ValidateJwtSvidResponse {
        spiffe_id: id.to_string(),
        claims: Some(json_to_struct(&claims)),
    }))
}

/// A closure as a tower service, the shape tonic's `Grpc` wants.
struct Rpc<F>(F);

impl<F, Fut, M, R> Service<Request<M>> for Rpc<F>
where
    F: FnMut(Request<M>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    type Response = Response<R>;
    type Error = Status;
    type Future = Fut;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<M>) -> Fut {
        (self.0)(req)
    }
}

/// The `SpiffeWorkloadAPI` service for tonic's router.
pub(crate) struct WorkloadApiService<S, A> {
    api: Api<S, A>,
}

impl<S, A> WorkloadApiService<S, A> {
    pub(crate) fn new(api: Arc<Shared<S, A>>) -> Self {
        WorkloadApiService { api }
    }
}

impl<S, A> Clone for WorkloadApiService<S, A> {
    fn clone(&self) -> Self {
        WorkloadApiService {
            api: Arc::clone(&self.api),
        }
    }
}

impl<S, A> NamedService for WorkloadApiService<S, A> {
    const NAME: &'static str = crate::proto::SERVICE_NAME;
}

/// A largest request: the Workload API's requests are tiny; a token to
/// validate is the largest thing a client sends.
const MAX_REQUEST_BYTES: usize = 256 * 1024;

fn grpc<T, U>() -> tonic::server::Grpc<tonic_prost::ProstCodec<T, U>>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
        .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None)
}

impl<S, A, B> Service<http::Request<B>> for WorkloadApiService<S, A>
where
    S: IdentitySource,
    A: Attestor,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let api = Arc::clone(&self.api);
        match req.uri().path() {
            "/SpiffeWorkloadAPI/FetchX509SVID" => Box::pin(async move {
                let svc = Rpc(move |r| fetch_x509_svid(Arc::clone(&api), r));
                Ok(grpc().server_streaming(svc, req).await)
            }),
            "/SpiffeWorkloadAPI/FetchX509Bundles" => Box::pin(async move {
                let svc = Rpc(move |r| fetch_x509_bundles(Arc::clone(&api), r));
                Ok(grpc().server_streaming(svc, req).await)
            }),
            "/SpiffeWorkloadAPI/FetchJWTBundles" => Box::pin(async move {
                let svc = Rpc(move |r| fetch_jwt_bundles(Arc::clone(&api), r));
                Ok(grpc().server_streaming(svc, req).await)
            }),
            "/SpiffeWorkloadAPI/FetchJWTSVID" => Box::pin(async move {
                let svc = Rpc(move |r| fetch_jwt_svid(Arc::clone(&api), r));
                Ok(grpc().unary(svc, req).await)
            }),
            "/SpiffeWorkloadAPI/ValidateJWTSVID" => Box::pin(async move {
                let svc = Rpc(move |r| validate_jwt_svid(Arc::clone(&api), r));
                Ok(grpc().unary(svc, req).await)
            }),
            _ => Box::pin(async move {
                Ok(Status::new(Code::Unimplemented, "unknown method").into_http())
            }),
        }
    }
}

/// Completes when the server shuts down (or is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
