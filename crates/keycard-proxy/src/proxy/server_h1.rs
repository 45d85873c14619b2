//! keycard's own HTTP/1.1 server, for inbound mTLS connections that
//! negotiated `http/1.1`.
//!
//! It exists for memory. hyper's server keeps, for each connection's whole
//! life, an 8 KiB read buffer, an 8 KiB write buffer and its dispatch
//! state; with a sidecar holding a thousand mostly idle connections those
//! were the largest part of the proxy's memory. Here an idle connection
//! holds no buffer: a head is read through a scratch buffer on the stack
//! into an allocation of its own size, a body is read in pieces while it
//! flows, and a response is written from a buffer freed when it is sent.
//!
//! The rules (RFC 9112), strict where request smuggling lives:
//! - the request line and fields are parsed by httparse: no obs-fold, no
//!   whitespace before a colon, at most [`MAX_FIELDS`] fields, the head at
//!   most `max_head` bytes (431 beyond), and complete within the header
//!   timeout from its first byte (408);
//! - the body is framed by `Transfer-Encoding: chunked` (HTTP/1.1 only,
//!   and the only coding accepted: others get 501) or by a
//!   `Content-Length` of digits (repeated values must agree); a request
//!   with both is refused (400), as is a second `Host` field;
//! - the target is origin-form, absolute-form, `*` for OPTIONS, and
//!   authority-form for CONNECT only;
//! - `Expect: 100-continue` is answered when the handler first reads the
//!   body, so a request refused before that never has its body sent;
//! - a response's framing comes from its body: an exact length becomes
//!   `Content-Length`, anything else is chunked (to an HTTP/1.0 client:
//!   delimited by the close); no body for HEAD, 1xx, 204 and 304;
//! - a connection is kept for the next request only when both sides allow
//!   it and the request's body was read to its end; pipelined requests are
//!   answered in order;
//! - a 101 to a request that asked for an upgrade, or a 2xx to CONNECT,
//!   hands the connection (and any bytes read past the head) to whoever
//!   holds the request's [`OnUpgrade`].

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::app_h1::BoxError;
use super::h1::{
    chunk_line, connection_has, content_length, field, transfer_codings, Chunk, Decoder,
    FramingError, Kind, Step, MAX_FIELDS,
};

/// The stack buffer reads go through.
const SCRATCH: usize = 8 * 1024;
/// Response bytes gathered before they are written, while the body has more.
const WRITE_BATCH: usize = 64 * 1024;

/// The server's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub max_head: usize,
    pub header_timeout: Duration,
}

/// Why a connection ended in error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// The client sent something this server refuses; it was answered
    /// with `status` and the connection closed.
    #[error("{why} (answered {status})")]
    Refused {
        status: StatusCode,
        why: &'static str,
    },
    #[error("the request head was not complete within {0:?}")]
    HeadTimeout(Duration),
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("the response body failed: {0}")]
    ResponseBody(BoxError),
}

impl ServeError {
    /// The metric reason, when the client is at fault.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            ServeError::Refused { status, .. }
                if *status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE =>
            {
                Some("header_too_large")
            }
            ServeError::Refused { .. } => Some("malformed_http"),
            ServeError::HeadTimeout(_) => Some("header_timeout"),
            ServeError::Io(_) | ServeError::ResponseBody(_) => None,
        }
    }
}

fn refused(status: StatusCode, why: &'static str) -> ServeError {
    ServeError::Refused { status, why }
}

/// What the connection state offers to a request body and to an upgraded
/// stream, whatever the transport under it.
trait Shared: Send {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>;
    fn body_hint(&self) -> SizeHint;
    fn poll_read_up(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>)
        -> Poll<io::Result<()>>;
    fn poll_write_up(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    fn poll_flush_up(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_shutdown_up(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

type SharedConn = Arc<Mutex<dyn Shared>>;

/// The `100 Continue` of the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
    /// Not asked for, or no longer wanted (the response has begun).
    No,
    /// Asked for: sent when the body is first read.
    Asked,
    /// This many bytes of it are written.
    Sending(usize),
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One connection: its transport, the bytes read and not yet consumed,
/// and where the current request's body is.
struct Conn<S> {
    io: S,
    buf: BytesMut,
    body: Decoder,
    cont: Continue,
    /// The exchange is over: its body may no longer be read.
    closed_body: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Write what is left of a `100 Continue` that was begun.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let at = match self.cont {
                Continue::No => return Poll::Ready(Ok(())),
                Continue::Asked => 0,
                Continue::Sending(at) if at == CONTINUE.len() => {
                    ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                    self.cont = Continue::No;
                    return Poll::Ready(Ok(()));
                }
                Continue::Sending(at) => at,
            };
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &CONTINUE[at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.cont = Continue::Sending(at + n);
        }
    }

    /// Read into `buf` through a buffer on the stack, so that a connection
    /// waiting for its next request holds no buffer, and `buf` grows only
    /// by what arrived. Ready(Ok(0)) is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Left uninitialised: `ReadBuf` tracks what the read filled, so no
        // read pays for zeroing 8 KiB first.
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); SCRATCH];
        let mut rb = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        self.buf.extend_from_slice(rb.filled());
        Poll::Ready(Ok(rb.filled().len()))
    }

    fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
        at: &mut usize,
    ) -> Poll<io::Result<()>> {
        while *at < data.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &data[*at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Shared for Conn<S> {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.closed_body {
            return Poll::Ready(Some(Err("the request is over".into())));
        }
        if self.cont == Continue::Asked || matches!(self.cont, Continue::Sending(_)) {
            if self.body.is_done() {
                self.cont = Continue::No;
            } else if let Err(e) = ready!(self.poll_continue(cx)) {
                return Poll::Ready(Some(Err(e.into())));
            }
        }
        loop {
            match self.body.step(&mut self.buf) {
                Err(e) => {
                    self.body.kind = Kind::Done;
                    self.closed_body = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(Step::Frame(f)) => return Poll::Ready(Some(Ok(f))),
                Ok(Step::Again) => continue,
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::More) => match ready!(self.poll_fill(cx)) {
                    Ok(0) => {
                        self.closed_body = true;
                        return Poll::Ready(Some(Err(
                            "the client closed the connection in the middle of the body".into(),
                        )));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.closed_body = true;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
            }
        }
    }

    fn body_hint(&self) -> SizeHint {
        match self.body.kind {
            Kind::Done => SizeHint::with_exact(0),
            Kind::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }

    fn poll_read_up(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            let n = self.buf.len().min(out.remaining());
            out.put_slice(&self.buf.split_to(n));
            if self.buf.is_empty() {
                self.buf = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }

    fn poll_write_up(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush_up(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown_up(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn poisoned() -> io::Error {
    io::Error::other("the connection's state was poisoned")
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| poisoned())
}

/// A request body read from the client's connection as the handler asks.
pub(crate) struct ReqBody {
    conn: Option<SharedConn>,
}

impl ReqBody {
    fn empty() -> Self {
        ReqBody { conn: None }
    }
}

impl hyper::body::Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(conn) = &self.conn else {
            return Poll::Ready(None);
        };
        let r = match conn.lock() {
            Ok(mut c) => ready!(c.poll_body(cx)),
            Err(_) => Some(Err(poisoned().into())),
        };
        if r.is_none() {
            // The end: let go of the connection.
            self.conn = None;
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.size_hint().exact() == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.conn {
            None => SizeHint::with_exact(0),
            Some(c) => c.lock().map(|c| c.body_hint()).unwrap_or_default(),
        }
    }
}

impl std::fmt::Debug for ReqBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqBody")
            .field("open", &self.conn.is_some())
            .finish()
    }
}

/// The client's side of an upgrade or CONNECT, in a request's extensions:
/// it resolves to the connection once the response that switched it is
/// written.
/// (Extensions must be `Clone`: a clone shares the one connection, and
/// whichever asks first gets it.)
#[derive(Clone)]
pub(crate) struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub async fn upgraded(self) -> io::Result<Upgraded> {
        let rx = lock(&self.0)?.take();
        match rx {
            Some(rx) => rx
                .await
                .map_err(|_| io::Error::other("the connection was not upgraded")),
            None => Err(io::Error::other("the upgrade was taken already")),
        }
    }
}

/// A connection handed over after a protocol switch: the bytes the client
/// sent after its request head first, then the connection itself.
pub(crate) struct Upgraded(SharedConn);

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        lock(&self.0)?.poll_read_up(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        lock(&self.0)?.poll_write_up(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.0)?.poll_flush_up(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.0)?.poll_shutdown_up(cx)
    }
}

/// What the server needs to know of a request to answer it.
struct Exchange {
    head_only: bool,
    http10: bool,
    connect: bool,
    asked_upgrade: bool,
    keep_alive: bool,
    upgrade: Option<oneshot::Sender<Upgraded>>,
}

/// Serve one connection until it ends, is upgraded, or fails. `handler`
/// answers each request; its future is boxed per request, so that the
/// connection keeps only this loop's small state while it idles.
pub(crate) async fn serve<S, H>(io: S, cfg: Config, handler: H) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<ReqBody>) -> Pin<Box<dyn Future<Output = Response<super::inbound::Body>> + Send>>,
{
    let conn = Arc::new(Mutex::new(Conn {
        io,
        buf: BytesMut::new(),
        body: Decoder::new(Kind::Done, cfg.max_head),
        cont: Continue::No,
        closed_body: false,
    }));
    let mut first = true;
    loop {
        let head = match read_head(&conn, &cfg, first).await {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(e) => {
                if let Some(status) = match &e {
                    ServeError::Refused { status, .. } => Some(*status),
                    ServeError::HeadTimeout(_) => Some(StatusCode::REQUEST_TIMEOUT),
                    _ => None,
                } {
                    let _ = answer_and_close(&conn, status).await;
                }
                return Err(e);
            }
        };
        first = false;
        let (req, mut x) = {
            let mut c = lock(&conn)?;
            let (parts, kind, x) = head;
            c.body = Decoder::new(kind, cfg.max_head);
            c.closed_body = false;
            let has_body = kind != Kind::Done;
            c.cont = if has_body
                && parts
                    .headers
                    .get(header::EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
                && !x.http10
            {
                Continue::Asked
            } else {
                Continue::No
            };
            drop(c);
            let body = if has_body {
                ReqBody {
                    conn: Some(conn.clone() as SharedConn),
                }
            } else {
                ReqBody::empty()
            };
            let mut req = Request::from_parts(parts, body);
            let mut x = x;
            if x.connect || x.asked_upgrade {
                let (tx, rx) = oneshot::channel();
                req.extensions_mut()
                    .insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
                x.upgrade = Some(tx);
            }
            (req, x)
        };
        let resp = handler(req).await;
        let body_read = {
            let mut c = lock(&conn)?;
            let done = c.body.is_done() && !c.closed_body;
            c.closed_body = true;
            done
        };
        if !body_read {
            x.keep_alive = false;
        }
        let switched = write_response(&conn, &mut x, resp).await?;
        if switched {
            if let Some(tx) = x.upgrade.take() {
                let _ = tx.send(Upgraded(conn as SharedConn));
            }
            return Ok(());
        }
        if !x.keep_alive {
            let _ = poll_fn(|cx| lock(&conn)?.poll_shutdown_up(cx)).await;
            return Ok(());
        }
        let mut c = lock(&conn)?;
        if c.buf.is_empty() {
            // Nothing pipelined: let the buffer go while the connection idles.
            c.buf = BytesMut::new();
        }
    }
}

type Head = (http::request::Parts, Kind, Exchange);

/// Read and parse the next request head. `None`: the client closed the
/// connection between requests.
async fn read_head<S>(
    conn: &Arc<Mutex<Conn<S>>>,
    cfg: &Config,
    first: bool,
) -> Result<Option<Head>, ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // The timer starts at the connection's start, or at the first byte of
    // a later head (the wait between requests is the idle timeout's).
    let mut deadline = first.then(|| Instant::now() + cfg.header_timeout);
    loop {
        {
            let mut c = lock(conn)?;
            if let Some(head) = parse_head(&mut c.buf, cfg.max_head)? {
                if c.buf.is_empty() {
                    // The head is copied out: the buffer need not wait
                    // with the request for its answer.
                    c.buf = BytesMut::new();
                }
                return Ok(Some(head));
            }
            if deadline.is_none() && !c.buf.is_empty() {
                deadline = Some(Instant::now() + cfg.header_timeout);
            }
        }
        let read = poll_fn(|cx| lock(conn)?.poll_fill(cx));
        let n = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), read).await {
                Ok(r) => r?,
                Err(_) => return Err(ServeError::HeadTimeout(cfg.header_timeout)),
            },
            None => read.await?,
        };
        if n == 0 {
            let c = lock(conn)?;
            if !c.buf.iter().all(|b| b.is_ascii_whitespace()) {
                tracing::debug!("the client closed the connection in the middle of a request head");
            }
            return Ok(None);
        }
    }
}

/// Parse a request head from the front of `buf`; `None`: more bytes are needed.
fn parse_head(buf: &mut BytesMut, max_head: usize) -> Result<Option<Head>, ServeError> {
    let bad = |why| refused(StatusCode::BAD_REQUEST, why);
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_head {
                return Err(refused(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request head too large",
                ));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ))
        }
        Err(httparse::Error::Version) => {
            return Err(refused(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "not HTTP/1.0 or HTTP/1.1",
            ))
        }
        Err(_) => return Err(bad("not an HTTP/1.x request head")),
    };
    if n > max_head {
        return Err(refused(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        ));
    }
    let method =
        Method::from_bytes(req.method.unwrap_or("").as_bytes()).map_err(|_| bad("bad method"))?;
    let target = req.path.unwrap_or("");
    let connect = method == Method::CONNECT;
    let uri: Uri = target.parse().map_err(|_| bad("bad request target"))?;
    let form_ok = if connect {
        uri.scheme().is_none() && uri.authority().is_some() && uri.path_and_query().is_none()
    } else if target == "*" {
        method == Method::OPTIONS
    } else {
        target.starts_with('/') || (uri.scheme().is_some() && uri.authority().is_some())
    };
    if !form_ok {
        return Err(bad("request target of the wrong form"));
    }
    let http10 = req.version == Some(0);
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for f in req.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| bad("bad field name"))?;
        let value = HeaderValue::from_bytes(f.value).map_err(|_| bad("bad field value"))?;
        headers.append(name, value);
    }
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(bad("more than one Host field"));
    }
    let codings = transfer_codings(&headers);
    let kind = if codings.is_empty() {
        match content_length(&headers).map_err(|e| {
            bad(match e {
                FramingError::Malformed(why) => why,
                FramingError::TooLarge(_) => "bad content-length",
            })
        })? {
            None | Some(0) => Kind::Done,
            Some(n) => Kind::Length(n),
        }
    } else {
        if http10 {
            return Err(bad("transfer-encoding in an HTTP/1.0 request"));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(bad("both content-length and transfer-encoding"));
        }
        if !(codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked")) {
            return Err(
                if codings
                    .last()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
                {
                    refused(
                        StatusCode::NOT_IMPLEMENTED,
                        "a transfer coding other than chunked",
                    )
                } else {
                    bad("transfer-encoding not ending in chunked")
                },
            );
        }
        Kind::Chunked(Chunk::Size)
    };
    let keep_alive = if http10 {
        connection_has(&headers, "keep-alive")
    } else {
        !connection_has(&headers, "close")
    };
    let asked_upgrade = !http10
        && !connect
        && connection_has(&headers, "upgrade")
        && headers.contains_key(header::UPGRADE);
    let x = Exchange {
        head_only: method == Method::HEAD,
        http10,
        connect,
        asked_upgrade,
        keep_alive,
        upgrade: None,
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    parts.headers = headers;
    bytes::Buf::advance(buf, n);
    Ok(Some((parts, kind, x)))
}

/// Write the response; true when it switched protocols (the connection is
/// then the upgrade's).
async fn write_response<S>(
    conn: &Arc<Mutex<Conn<S>>>,
    x: &mut Exchange,
    resp: Response<super::inbound::Body>,
) -> Result<bool, ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut parts, mut body) = resp.into_parts();
    let status = parts.status;
    let switched = (status == StatusCode::SWITCHING_PROTOCOLS && x.asked_upgrade)
        || (x.connect && status.is_success());
    if status == StatusCode::SWITCHING_PROTOCOLS && !switched {
        // A switch the client did not ask for cannot be relayed.
        parts.status = StatusCode::BAD_GATEWAY;
        parts.headers.clear();
        body = super::inbound::empty_body();
        x.keep_alive = false;
    }
    let status = parts.status;
    let h = &mut parts.headers;
    let no_body = x.head_only
        || switched
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    h.remove(header::TRANSFER_ENCODING);
    let exact = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let mut chunked = false;
    if no_body {
        if status == StatusCode::NO_CONTENT || status.is_informational() || switched {
            h.remove(header::CONTENT_LENGTH);
        } else if x.head_only && !h.contains_key(header::CONTENT_LENGTH) {
            if let Some(n) = exact {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
    } else if let Some(n) = exact {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    } else {
        h.remove(header::CONTENT_LENGTH);
        if x.http10 {
            x.keep_alive = false;
        } else {
            chunked = true;
            h.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
    if !switched {
        h.remove(header::CONNECTION);
        if !x.keep_alive {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else if x.http10 {
            h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
    }
    if !h.contains_key(header::DATE) {
        h.insert(header::DATE, http_date());
    }
    let mut out = encode_head(&parts);
    if no_body {
        write_out(conn, &out).await?;
        flush(conn).await?;
        return Ok(switched);
    }
    // Stream the body, gathering what is ready into one write.
    let mut sent: u64 = 0;
    let mut trailers = None;
    loop {
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Pending if !out.is_empty() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
            Poll::Ready(f) => Poll::Ready(Some(f)),
        })
        .await;
        let frame = match next {
            None => {
                write_out(conn, &out).await?;
                out.clear();
                continue;
            }
            Some(None) => break,
            Some(Some(Err(e))) => {
                x.keep_alive = false;
                // What was gathered goes out; the framing stays incomplete,
                // so the client sees a cut body, never a whole wrong one.
                let _ = write_out(conn, &out).await;
                return Err(ServeError::ResponseBody(e));
            }
            Some(Some(Ok(f))) => f,
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                sent = sent.saturating_add(data.len() as u64);
                if exact.is_some_and(|n| sent > n) {
                    let _ = write_out(conn, &out).await;
                    return Err(ServeError::ResponseBody(
                        "the response body is longer than its length".into(),
                    ));
                }
                if chunked {
                    chunk_line(&mut out, data.len());
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                } else if out.len() + data.len() <= WRITE_BATCH {
                    out.extend_from_slice(&data);
                } else {
                    write_out(conn, &out).await?;
                    out.clear();
                    write_out(conn, &data).await?;
                }
            }
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
        if out.len() >= WRITE_BATCH {
            write_out(conn, &out).await?;
            out.clear();
        }
    }
    if exact.is_some_and(|n| sent != n) {
        let _ = write_out(conn, &out).await;
        return Err(ServeError::ResponseBody(
            "the response body is shorter than its length".into(),
        ));
    }
    if chunked {
        out.extend_from_slice(b"0\r\n");
        for (k, v) in trailers.iter().flatten() {
            field(&mut out, k.as_str().as_bytes(), v.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    write_out(conn, &out).await?;
    flush(conn).await?;
    Ok(false)
}

/// The status line and fields.
fn encode_head(parts: &http::response::Parts) -> Vec<u8> {
    let fields: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(fields + 64);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in &parts.headers {
        field(&mut out, k.as_str().as_bytes(), v.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

async fn write_out<S>(conn: &Arc<Mutex<Conn<S>>>, data: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut at = 0;
    poll_fn(|cx| {
        let mut c = lock(conn)?;
        // A `100 Continue` begun goes out whole before the response; one
        // not begun is not sent at all.
        if c.cont == Continue::Asked {
            c.cont = Continue::No;
        }
        ready!(c.poll_continue(cx))?;
        c.poll_write_all(cx, data, &mut at)
    })
    .await
}

async fn flush<S>(conn: &Arc<Mutex<Conn<S>>>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    poll_fn(|cx| lock(conn)?.poll_flush_up(cx)).await
}

/// Answer a refused request and close the connection.
async fn answer_and_close<S>(conn: &Arc<Mutex<Conn<S>>>, status: StatusCode) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let text = format!(
        "{}\n",
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_ascii_lowercase()
    );
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    let h = &mut parts.headers;
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::DATE, http_date());
    let mut out = encode_head(&parts);
    out.extend_from_slice(text.as_bytes());
    {
        let mut c = lock(conn)?;
        c.cont = Continue::No;
    }
    write_out(conn, &out).await?;
    flush(conn).await?;
    poll_fn(|cx| lock(conn)?.poll_shutdown_up(cx)).await
}

/// The `Date` field, formatted once a second per thread.
fn http_date() -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    LAST.with(|l| {
        let mut l = l.borrow_mut();
        match &*l {
            Some((s, v)) if *s == secs => v.clone(),
            _ => {
                let v = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                    .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
                *l = Some((secs, v.clone()));
                v
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::proxy::inbound::Body;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;

    type Handler = Arc<dyn Fn(Request<ReqBody>) -> BoxFut + Send + Sync>;
    type BoxFut = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

    fn cfg() -> Config {
        Config {
            max_head: 2048,
            header_timeout: Duration::from_millis(300),
        }
    }

    fn full(text: impl Into<Bytes>) -> Body {
        Full::new(text.into())
            .map_err(|never| match never {})
            .boxed()
    }

    fn start(h: Handler) -> (DuplexStream, JoinHandle<Result<(), ServeError>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(serve(server, cfg(), move |req| h(req)));
        (client, task)
    }

    /// Answers every request with its method, target, and body read whole
    /// (or the error reading it), and counts the requests.
    fn echo(seen: Arc<AtomicUsize>) -> Handler {
        Arc::new(move |req: Request<ReqBody>| {
            seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let (parts, body) = req.into_parts();
                let text = match body.collect().await {
                    Ok(c) => {
                        let trailers = c.trailers().map(|t| format!(" trailers {t:?}"));
                        format!(
                            "{} {} body {:?}{}",
                            parts.method,
                            parts.uri,
                            String::from_utf8_lossy(&c.to_bytes()),
                            trailers.unwrap_or_default()
                        )
                    }
                    Err(e) => format!("body error: {e}"),
                };
                Response::new(full(text))
            })
        })
    }

    /// Send `input`, then read until the server closes (bounded).
    async fn exchange(client: &mut DuplexStream, input: &[u8]) -> String {
        client.write_all(input).await.unwrap();
        read_to_close(client).await
    }

    /// Send `input` and end the client's side, then read until the server closes.
    async fn finish(client: &mut DuplexStream, input: &[u8]) -> String {
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        read_to_close(client).await
    }

    async fn read_to_close(client: &mut DuplexStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
            .await
            .expect("the server neither answered nor closed")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_on_one_connection() {
        let seen = Arc::new(AtomicUsize::new(0));
        let (mut c, task) = start(echo(seen.clone()));
        let out = exchange(
            &mut c,
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n\
              POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
              POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
              3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n\
              GET /d HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(seen.load(Ordering::SeqCst), 4, "{out}");
        let a = out.find("GET /a body \"\"").unwrap();
        let b = out.find("POST /b body \"hello\"").unwrap();
        let c3 = out.find("POST /c body \"abcde\" trailers").unwrap();
        let d = out.find("GET /d body").unwrap();
        assert!(a < b && b < c3 && c3 < d, "{out}");
        assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{out}");
        assert!(out.contains("x-t"), "{out}");
        // Only the last answer says the connection ends; each has a length and a date.
        assert_eq!(out.matches("connection: close\r\n").count(), 1, "{out}");
        assert_eq!(out.matches("content-length: ").count(), 4, "{out}");
        assert_eq!(out.matches("date: ").count(), 4, "{out}");
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn ambiguous_framing_is_refused_and_nothing_after_it_is_served() {
        let cases: [(&[u8], &str); 9] = [
            (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n", "400"),
            (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n", "400"),
            (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\n", "400"),
            (b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n", "400"),
            (b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n", "501"),
            (b"POST / HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nhost: x\r\nbad header: 1\r\n\r\n", "400"),
            (b"GET / HTTP/1.1\r\nhost: x\r\nfolded: a\r\n b\r\n\r\n", "400"),
        ];
        for (head, status) in cases {
            let seen = Arc::new(AtomicUsize::new(0));
            let (mut c, task) = start(echo(seen.clone()));
            let mut input = head.to_vec();
            // What a smuggler would hide behind the ambiguity.
            input.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n");
            let out = exchange(&mut c, &input).await;
            let case = String::from_utf8_lossy(head);
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status} ")),
                "{case}: {out}"
            );
            assert!(out.contains("connection: close\r\n"), "{case}: {out}");
            assert_eq!(seen.load(Ordering::SeqCst), 0, "{case}: {out}");
            assert!(!out.contains("smuggled"), "{case}: {out}");
            let e = task.await.unwrap().unwrap_err();
            assert_eq!(e.reason(), Some("malformed_http"), "{case}");
        }
    }

    #[tokio::test]
    async fn request_targets_must_have_the_form_their_method_allows() {
        let ok: [&[u8]; 4] = [
            b"GET /p?q=1 HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET http://x/p HTTP/1.1\r\nhost: x\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nhost: x\r\n\r\n",
            b"CONNECT db:5432 HTTP/1.1\r\nhost: db:5432\r\n\r\n",
        ];
        let bad: [&[u8]; 4] = [
            b"GET db:5432 HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET * HTTP/1.1\r\nhost: x\r\n\r\n",
            b"CONNECT /p HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET p HTTP/1.1\r\nhost: x\r\n\r\n",
        ];
        for (input, good) in ok
            .iter()
            .map(|i| (i, true))
            .chain(bad.iter().map(|i| (i, false)))
        {
            let seen = Arc::new(AtomicUsize::new(0));
            let (mut c, _task) = start(echo(seen.clone()));
            c.write_all(input).await.unwrap();
            c.shutdown().await.unwrap();
            let out = read_to_close(&mut c).await;
            let case = String::from_utf8_lossy(input);
            assert_eq!(
                seen.load(Ordering::SeqCst),
                usize::from(good),
                "{case}: {out}"
            );
            let status = if good { "HTTP/1.1 200" } else { "HTTP/1.1 400" };
            assert!(out.starts_with(status), "{case}: {out}");
        }
    }

    #[tokio::test]
    async fn oversized_heads_and_slow_heads_are_answered_and_counted() {
        let seen = Arc::new(AtomicUsize::new(0));
        let (mut c, task) = start(echo(seen.clone()));
        let big = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(4096)
        );
        let out = exchange(&mut c, big.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert_eq!(
            task.await.unwrap().unwrap_err().reason(),
            Some("header_too_large")
        );

        let (mut c, task) = start(echo(seen.clone()));
        let many: String = (0..MAX_FIELDS + 1)
            .map(|i| format!("x-{i}: 1\r\n"))
            .collect();
        let out = exchange(&mut c, format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert_eq!(
            task.await.unwrap().unwrap_err().reason(),
            Some("header_too_large")
        );

        // A head that trickles in slower than the header timeout.
        let (mut c, task) = start(echo(seen.clone()));
        let t0 = Instant::now();
        let out = exchange(&mut c, b"GET / HTTP/1.1\r\nhost: x\r\n").await;
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        assert!(t0.elapsed() >= cfg().header_timeout);
        assert_eq!(
            task.await.unwrap().unwrap_err().reason(),
            Some("header_timeout")
        );
        assert_eq!(seen.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_continue_is_sent_only_when_the_handler_reads_the_body() {
        let seen = Arc::new(AtomicUsize::new(0));
        let (mut c, _task) = start(echo(seen.clone()));
        c.write_all(
            b"PUT /up HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = vec![0u8; 25];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"HTTP/1.1 100 Continue\r\n\r\n");
        let out = finish(&mut c, b"data").await;
        assert!(out.contains("PUT /up body \"data\""), "{out}");

        // Refused before the body is read: no 100, and the connection ends.
        let refuse: Handler = Arc::new(|_req| {
            Box::pin(async {
                let mut r = Response::new(full("no"));
                *r.status_mut() = StatusCode::FORBIDDEN;
                r
            })
        });
        let (mut c, task) = start(refuse);
        let out = exchange(
            &mut c,
            b"PUT /up HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 403 "), "{out}");
        assert!(!out.contains("100 Continue"), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn responses_are_framed_by_their_body_and_the_request() {
        let h: Handler = Arc::new(|req: Request<ReqBody>| {
            Box::pin(async move {
                let path = req.uri().path().to_string();
                let mut r = match path.as_str() {
                    "/stream" => Response::new(
                        StreamBody::new(futures::stream::iter(
                            ["ab", "cd"].map(|s| Ok::<_, BoxError>(Frame::data(Bytes::from(s)))),
                        ))
                        .boxed(),
                    ),
                    "/none" => {
                        let mut r = Response::new(crate::proxy::inbound::empty_body());
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        r.headers_mut()
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(9));
                        r
                    }
                    _ => Response::new(full("twelve bytes")),
                };
                // What the app said about its framing never reaches the client.
                r.headers_mut()
                    .insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
                r
            })
        });
        let (mut c, _) = start(h.clone());
        let out = exchange(
            &mut c,
            b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n\
              HEAD /full HTTP/1.1\r\nhost: x\r\n\r\n\
              GET /none HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        let parts: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(parts.len(), 3, "{out}");
        assert!(parts[0].contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(
            parts[0].ends_with("\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),
            "{out}"
        );
        assert!(parts[1].contains("content-length: 12\r\n"), "{out}");
        assert!(parts[1].ends_with("\r\n\r\n"), "HEAD has no body: {out}");
        assert!(parts[2].starts_with("204 "), "{out}");
        assert!(!parts[2].contains("content-length"), "{out}");
        assert!(!out.contains("gzip"), "{out}");

        // HTTP/1.0: no chunked coding; an unknown length ends with the connection.
        let (mut c, _) = start(h);
        let out = exchange(
            &mut c,
            b"GET /stream HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
        )
        .await;
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert!(!out.contains("chunked"), "{out}");
        assert!(out.ends_with("\r\n\r\nabcd"), "{out}");
    }

    #[tokio::test]
    async fn a_client_gone_in_the_middle_of_a_body_is_an_error_to_the_handler() {
        let seen = Arc::new(AtomicUsize::new(0));
        let (mut c, _task) = start(echo(seen.clone()));
        c.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
        c.shutdown().await.unwrap();
        let out = read_to_close(&mut c).await;
        assert!(out.contains("body error: the client closed"), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");

        let (mut c, _task) = start(echo(seen));
        let out = exchange(
            &mut c,
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n\
              GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        assert!(out.contains("body error: bad chunk size"), "{out}");
        assert!(!out.contains("smuggled"), "{out}");
    }

    #[tokio::test]
    async fn an_accepted_upgrade_hands_over_the_connection_with_bytes_sent_early() {
        let h: Handler = Arc::new(|mut req: Request<ReqBody>| {
            Box::pin(async move {
                let up = req.extensions_mut().remove::<OnUpgrade>();
                tokio::spawn(async move {
                    let Some(up) = up else { return };
                    let mut io = up.upgraded().await.unwrap();
                    let mut b = [0u8; 64];
                    loop {
                        let n = io.read(&mut b).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        io.write_all(&b[..n]).await.unwrap();
                    }
                    io.shutdown().await.unwrap();
                });
                let mut r = Response::new(crate::proxy::inbound::empty_body());
                *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                r.headers_mut()
                    .insert(header::UPGRADE, HeaderValue::from_static("echo"));
                r
            })
        });
        let (mut c, task) = start(h.clone());
        c.write_all(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nearly",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"early") {
            let mut b = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        let head = String::from_utf8_lossy(&got).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(head.contains("upgrade: echo\r\n"), "{head}");
        assert!(task.await.unwrap().is_ok());
        let out = finish(&mut c, b" and late").await;
        assert_eq!(out, " and late");

        // A 101 the client never asked for is not relayed.
        let (mut c, _) = start(h);
        let out = finish(&mut c, b"GET /ws HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 502 "), "{out}");
    }

    #[tokio::test]
    async fn mangled_requests_get_an_answer_or_a_close_never_a_panic_or_a_hang() {
        use crate::proxy::h1::tests::mangle;
        use keycard_core::XorShift as Rng;
        let seeds: [&[u8]; 3] = [
            b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"PUT /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\nabc",
            b"GET /c HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /d HTTP/1.1\r\nhost: x\r\n\r\n",
        ];
        let mut rng = Rng(0x5851_f42d_4c95_7f2d);
        for i in 0..600 {
            let input = mangle(&mut rng, seeds[i % seeds.len()]);
            let seen = Arc::new(AtomicUsize::new(0));
            let (mut c, task) = start(echo(seen));
            c.write_all(&input).await.unwrap();
            c.shutdown().await.unwrap();
            let out = read_to_close(&mut c).await;
            assert!(
                out.is_empty() || out.starts_with("HTTP/1.1 "),
                "{input:?}: {out}"
            );
            // The task ends: it neither panics nor waits on a closed client.
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the connection task hung")
                .expect("the connection task panicked")
                .ok();
        }
    }
}
