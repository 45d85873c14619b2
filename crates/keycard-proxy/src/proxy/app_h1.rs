//! A lean HTTP/1.1 client to the local app.
//!
//! hyper's pooled client keeps, per app connection, a request channel, a
//! dispatch task and two 8 KiB buffers; with one app connection per
//! request in flight those were the largest part of the proxy's memory at
//! a burst. This client keeps an idle connection as a bare socket, and a
//! request in flight as the socket and one small read buffer.
//!
//! The framing is where a proxy gets smuggled through, so it is strict:
//! - the request's framing is what the inbound server decoded from the
//!   client (an exact length, or chunked), never the client's headers;
//!   `Expect` is not forwarded (the server side answers it);
//! - a response is framed per RFC 9112 section 6.3: no body for HEAD, 1xx,
//!   204 and 304; `Transfer-Encoding` over `Content-Length`, and then the
//!   connection is not reused; differing lengths are an error; otherwise
//!   to the end of the connection;
//! - 1xx responses other than 101 are skipped, an unasked-for 101 is an
//!   error (upgrades go through hyper's client);
//! - a connection is reused only after a complete response that allowed
//!   it, with no stray bytes after it;
//! - a request is retried once on a new connection only when it could not
//!   have been seen (a reused connection closed before any response byte)
//!   and it is safe to repeat (GET, HEAD, OPTIONS or TRACE with no body).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::h1::{
    chunk_line, connection_has, content_length, field, transfer_codings, Chunk, Decoder,
    FramingError, Kind, Step, MAX_FIELDS,
};
use super::inbound::AppConnector;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle connections kept at most; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// The first read of a response: most heads (and small bodies) fit.
const HEAD_READ: usize = 1024;
/// Reads of a body.
const BODY_READ: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    #[error("connecting to the app: {0}")]
    Connect(io::Error),
    #[error("talking to the app: {0}")]
    Io(#[from] io::Error),
    #[error("the app closed the connection before it answered")]
    Closed,
    #[error("the app closed the connection in the middle of a body")]
    Truncated,
    #[error("the app's response head is over {0} bytes")]
    HeadTooLarge(usize),
    #[error("the app sent a malformed response: {0}")]
    Malformed(&'static str),
    #[error("the request body failed: {0}")]
    RequestBody(BoxError),
}

impl From<FramingError> for AppError {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::Malformed(why) => AppError::Malformed(why),
            FramingError::TooLarge(n) => AppError::HeadTooLarge(n),
        }
    }
}

/// The pooled HTTP/1.1 client. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppH1 {
    pool: Arc<Pool>,
}

struct Pool {
    connector: AppConnector,
    idle: Mutex<VecDeque<Idle>>,
    idle_timeout: Duration,
    max_head: usize,
    reaping: AtomicBool,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl AppH1 {
    pub fn new(connector: AppConnector, idle_timeout: Duration, max_head: usize) -> Self {
        AppH1 {
            pool: Arc::new(Pool {
                connector,
                idle: Mutex::new(VecDeque::new()),
                idle_timeout,
                max_head: max_head.max(HEAD_READ),
                reaping: AtomicBool::new(false),
            }),
        }
    }

    /// Idle connections in the pool now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.pool.idle.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Send `req` (origin-form target from its URI; `Host` from its headers
    /// or, failing that, its URI) and return the response head with a body
    /// that streams from the connection.
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<AppBody>, AppError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let length = if body.is_end_stream() {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        let head = encode_head(&parts, length);
        let head_only = parts.method == Method::HEAD;
        let replayable = body.is_end_stream()
            && matches!(
                parts.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            );
        let mut body = (!body.is_end_stream()).then_some(body);
        let mut fresh_only = false;
        loop {
            let (stream, reused) = match (!fresh_only).then(|| self.pool.take()).flatten() {
                Some(s) => (s, true),
                None => (
                    self.pool
                        .connector
                        .connect()
                        .await
                        .map_err(AppError::Connect)?,
                    false,
                ),
            };
            match exchange(stream, &head, body.take(), length, self.pool.max_head).await {
                Ok(x) => return self.response(x, head_only),
                Err(Failed { unseen: true, .. }) if reused && replayable => {
                    tracing::debug!("a pooled app connection was closed; retrying on a new one");
                    fresh_only = true;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    fn response(&self, x: Exchanged, head_only: bool) -> Result<Response<AppBody>, AppError> {
        let Exchanged {
            stream,
            buf,
            head,
            mut reusable,
        } = x;
        let mut headers = head.headers;
        let kind = framing(head.status, head_only, &headers)?;
        if head.http10 {
            reusable &= connection_has(&headers, "keep-alive");
        }
        if connection_has(&headers, "close") {
            reusable = false;
        }
        match kind {
            Kind::Chunked(_) | Kind::Close => {
                if headers.contains_key(http::header::CONTENT_LENGTH) {
                    // Both lengths: the transfer coding wins, and a connection
                    // that said both is not trusted with another request.
                    headers.remove(http::header::CONTENT_LENGTH);
                    reusable = false;
                }
            }
            Kind::Length(_) | Kind::Done => {}
        }
        if kind == Kind::Close {
            reusable = false;
        }
        let body = AppBody {
            stream: Some(stream),
            buf,
            dec: Decoder::new(kind, self.pool.max_head),
            reusable,
            pool: Arc::downgrade(&self.pool),
        };
        let body = body.finish_if_done();
        let mut r = Response::new(body);
        *r.status_mut() = head.status;
        *r.headers_mut() = headers;
        Ok(r)
    }
}

impl Pool {
    /// A live idle connection, most recently used first.
    fn take(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(c) = idle.pop_back() {
            if c.since.elapsed() >= self.idle_timeout {
                continue;
            }
            // An idle connection has nothing to say: a byte or the end of
            // the stream means it cannot carry another request.
            let mut probe = [0u8; 1];
            match c.stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(c.stream),
                _ => continue,
            }
        }
        None
    }

    fn put(self: &Arc<Self>, stream: TcpStream) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        self.prune(&mut idle);
        if idle.len() >= MAX_IDLE {
            return;
        }
        idle.push_back(Idle {
            stream,
            since: Instant::now(),
        });
        drop(idle);
        if !self.reaping.swap(true, Ordering::AcqRel) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(reap(Arc::downgrade(self), self.idle_timeout));
            } else {
                self.reaping.store(false, Ordering::Release);
            }
        }
    }

    fn prune(&self, idle: &mut VecDeque<Idle>) {
        while idle
            .front()
            .is_some_and(|c| c.since.elapsed() >= self.idle_timeout)
        {
            idle.pop_front();
        }
    }
}

/// Close idle connections as they time out; ends when the pool is empty or gone.
async fn reap(pool: Weak<Pool>, every: Duration) {
    loop {
        tokio::time::sleep(every.max(Duration::from_millis(10))).await;
        let Some(p) = pool.upgrade() else { return };
        let Ok(mut idle) = p.idle.lock() else { return };
        p.prune(&mut idle);
        if idle.is_empty() {
            p.reaping.store(false, Ordering::Release);
            return;
        }
    }
}

/// The request line and header fields, with the framing this client chose.
fn encode_head(parts: &http::request::Parts, length: Option<u64>) -> Vec<u8> {
    use http::header::{CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let fields: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(parts.method.as_str().len() + target.len() + fields + 64);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(HOST) {
        if let Some(a) = parts.uri.authority() {
            field(&mut out, b"host", a.as_str().as_bytes());
        }
    }
    let had_length = parts.headers.contains_key(CONTENT_LENGTH);
    for (k, v) in &parts.headers {
        if k == CONTENT_LENGTH || k == TRANSFER_ENCODING || k == EXPECT {
            continue;
        }
        field(&mut out, k.as_str().as_bytes(), v.as_bytes());
    }
    match length {
        Some(0) if !had_length => {}
        Some(n) => field(&mut out, b"content-length", n.to_string().as_bytes()),
        None => field(&mut out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
    out
}

struct Head {
    status: StatusCode,
    http10: bool,
    headers: HeaderMap,
}

struct Exchanged {
    stream: TcpStream,
    /// Bytes read after the head: the start of the body.
    buf: BytesMut,
    head: Head,
    reusable: bool,
}

struct Failed {
    error: AppError,
    /// Nothing of a response arrived: the app cannot have answered.
    unseen: bool,
}

impl Failed {
    fn seen(error: AppError) -> Self {
        Failed {
            error,
            unseen: false,
        }
    }
}

/// Write the request, read the final response head.
async fn exchange<B>(
    mut stream: TcpStream,
    head: &[u8],
    body: Option<B>,
    length: Option<u64>,
    max_head: usize,
) -> Result<Exchanged, Failed>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let unseen = |e: io::Error| Failed {
        error: AppError::Io(e),
        unseen: true,
    };
    stream.write_all(head).await.map_err(unseen)?;
    let mut buf = BytesMut::with_capacity(HEAD_READ);
    if let Some(body) = body {
        // Send the body while watching for an early answer: an app may
        // refuse a request (413, 401) before it reads the body.
        let mut early = None;
        {
            let (mut r, mut w) = stream.split();
            let send = send_body(&mut w, body, length);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    sent = &mut send => {
                        sent.map_err(Failed::seen)?;
                        break;
                    }
                    n = r.read_buf(&mut buf) => {
                        if n.map_err(|e| Failed::seen(e.into()))? == 0 {
                            return Err(Failed::seen(AppError::Closed));
                        }
                        if let Some(head) = parse_head(&mut buf, max_head).map_err(Failed::seen)? {
                            early = Some(head);
                            break;
                        }
                    }
                }
            }
        }
        if let Some(head) = early {
            // Answered before the body was all sent: this connection ends
            // with this response.
            return Ok(Exchanged {
                stream,
                buf,
                head,
                reusable: false,
            });
        }
    }
    loop {
        if let Some(head) = parse_head(&mut buf, max_head).map_err(Failed::seen)? {
            return Ok(Exchanged {
                stream,
                buf,
                head,
                reusable: true,
            });
        }
        if buf.capacity() - buf.len() < 256 {
            buf.reserve(HEAD_READ);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => {
                return Err(Failed {
                    error: AppError::Closed,
                    unseen: buf.is_empty(),
                })
            }
            Ok(_) => {}
            Err(e) => {
                let unseen = buf.is_empty();
                return Err(Failed {
                    error: AppError::Io(e),
                    unseen,
                });
            }
        }
    }
}

/// The request body, framed as the head said: exactly `length` bytes, or chunked.
async fn send_body<W, B>(w: &mut W, mut body: B, length: Option<u64>) -> Result<(), AppError>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut sent: u64 = 0;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AppError::RequestBody(e.into()))?;
        let frame = match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                sent = sent.saturating_add(data.len() as u64);
                match length {
                    Some(n) if sent > n => {
                        return Err(AppError::RequestBody(
                            "the body is longer than its length".into(),
                        ))
                    }
                    Some(_) => w.write_all(&data).await?,
                    None => {
                        let mut size = Vec::with_capacity(18);
                        chunk_line(&mut size, data.len());
                        let mut chunk = Buf::chain(&size[..], data).chain(&b"\r\n"[..]);
                        w.write_all_buf(&mut chunk).await?;
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    match length {
        Some(n) if sent != n => {
            return Err(AppError::RequestBody(
                "the body is shorter than its length".into(),
            ))
        }
        Some(_) => {}
        None => {
            let mut end = Vec::with_capacity(64);
            end.extend_from_slice(b"0\r\n");
            for (k, v) in trailers.iter().flatten() {
                field(&mut end, k.as_str().as_bytes(), v.as_bytes());
            }
            end.extend_from_slice(b"\r\n");
            w.write_all(&end).await?;
        }
    }
    w.flush().await?;
    Ok(())
}

/// Parse a response head from the front of `buf`, skipping (and consuming)
/// informational responses. `None`: more bytes are needed.
fn parse_head(buf: &mut BytesMut, max_head: usize) -> Result<Option<Head>, AppError> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut res = httparse::Response::new(&mut fields);
        let n = match res.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > max_head {
                    return Err(AppError::HeadTooLarge(max_head));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(AppError::Malformed("too many header fields"))
            }
            Err(_) => return Err(AppError::Malformed("not an HTTP/1.x response head")),
        };
        if n > max_head {
            return Err(AppError::HeadTooLarge(max_head));
        }
        let code = res.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| AppError::Malformed("bad status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(AppError::Malformed("a protocol switch nobody asked for"));
        }
        if status.is_informational() {
            buf.advance(n);
            continue;
        }
        let mut headers = HeaderMap::with_capacity(res.headers.len());
        for h in res.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| AppError::Malformed("bad header name"))?;
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| AppError::Malformed("bad header value"))?;
            headers.append(name, value);
        }
        let http10 = res.version == Some(0);
        buf.advance(n);
        return Ok(Some(Head {
            status,
            http10,
            headers,
        }));
    }
}

/// How a response's body is delimited (RFC 9112 section 6.3).
fn framing(status: StatusCode, head_only: bool, h: &HeaderMap) -> Result<Kind, AppError> {
    let kind = Ok;
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return kind(Kind::Done);
    }
    if let Some(last) = transfer_codings(h).last() {
        return if last.eq_ignore_ascii_case(b"chunked") {
            kind(Kind::Chunked(Chunk::Size))
        } else {
            kind(Kind::Close)
        };
    }
    match content_length(h)? {
        Some(0) => kind(Kind::Done),
        Some(n) => kind(Kind::Length(n)),
        None => kind(Kind::Close),
    }
}

/// A response body streamed from the app's connection. When it ends
/// cleanly on a reusable connection, the connection goes back to the pool.
pub(crate) struct AppBody {
    stream: Option<TcpStream>,
    buf: BytesMut,
    dec: Decoder,
    reusable: bool,
    pool: Weak<Pool>,
}

impl AppBody {
    /// At the end of the body: give the connection back if it may carry more.
    fn finish_if_done(mut self) -> Self {
        if self.dec.is_done() {
            self.release();
        }
        self
    }

    fn release(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.reusable && self.buf.is_empty() {
            if let Some(pool) = self.pool.upgrade() {
                pool.put(stream);
            }
        }
        self.buf = BytesMut::new();
    }

    /// Read more of the body into `buf`. Ready(Ok(0)) is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, AppError>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(BODY_READ);
        }
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read_buf(&mut self.buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

impl Body for AppBody {
    type Data = Bytes;
    type Error = AppError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, AppError>>> {
        let me = &mut *self;
        loop {
            let step = match me.dec.step(&mut me.buf) {
                Ok(s) => s,
                Err(e) => {
                    me.fail();
                    return Poll::Ready(Some(Err(e.into())));
                }
            };
            match step {
                Step::Frame(f) => {
                    if me.dec.is_done() {
                        me.release();
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Step::Again => continue,
                Step::End => {
                    me.release();
                    return Poll::Ready(None);
                }
                Step::More => match ready!(me.poll_fill(cx)) {
                    Ok(0) if me.dec.kind == Kind::Close => {
                        me.dec.kind = Kind::Done;
                        me.release();
                        return Poll::Ready(None);
                    }
                    Ok(0) => {
                        me.fail();
                        return Poll::Ready(Some(Err(AppError::Truncated)));
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        me.fail();
                        return Poll::Ready(Some(Err(e)));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.dec.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.dec.kind {
            Kind::Done => SizeHint::with_exact(0),
            Kind::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl AppBody {
    /// A broken body: the connection is closed, never reused.
    fn fail(&mut self) {
        self.reusable = false;
        self.dec.kind = Kind::Done;
        self.stream = None;
        self.buf = BytesMut::new();
    }
}

impl std::fmt::Debug for AppBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBody")
            .field("kind", &self.dec.kind)
            .field("reusable", &self.reusable)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{Empty, Full, StreamBody};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// What the scripted app does with the next request it reads.
    #[derive(Clone, Copy)]
    enum Reply {
        /// Write these bytes and keep the connection.
        Send(&'static [u8]),
        /// Write these bytes and close.
        SendClose(&'static [u8]),
        /// Close without a word.
        Close,
        /// Write these bytes at once, before reading the request's body.
        Early(&'static [u8]),
    }

    struct App {
        addr: std::net::SocketAddr,
        accepted: Arc<AtomicUsize>,
        seen: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    /// A loopback app that answers requests, on any connection, with the
    /// scripted replies in order, and records the raw requests it read.
    async fn app(script: Vec<Reply>) -> App {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (a, s) = (accepted.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (seen, script) = (s.clone(), script.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(head_end) = read_until(&mut c, &mut buf, |b| {
                            b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
                        })
                        .await
                        else {
                            return;
                        };
                        let Some(reply) = script.lock().unwrap().pop_front() else {
                            return;
                        };
                        if let Reply::Early(bytes) = reply {
                            let _ = c.write_all(bytes).await;
                            seen.lock().unwrap().push(buf[..head_end].to_vec());
                            return;
                        }
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let end = if let Some(n) = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                        {
                            let n: usize = n.trim().parse().unwrap();
                            read_until(&mut c, &mut buf, |b| {
                                (b.len() >= head_end + n).then_some(head_end + n)
                            })
                            .await
                        } else if head.contains("transfer-encoding: chunked") {
                            read_until(&mut c, &mut buf, |b| {
                                let body = &b[head_end..];
                                (body.ends_with(b"\r\n\r\n")
                                    && (body.starts_with(b"0\r\n")
                                        || body.windows(5).any(|w| w == b"\r\n0\r\n")))
                                .then_some(b.len())
                            })
                            .await
                        } else {
                            Some(head_end)
                        };
                        let Some(end) = end else { return };
                        seen.lock().unwrap().push(buf.drain(..end).collect());
                        match reply {
                            Reply::Send(b) => {
                                if c.write_all(b).await.is_err() {
                                    return;
                                }
                            }
                            Reply::SendClose(b) => {
                                let _ = c.write_all(b).await;
                                return;
                            }
                            Reply::Close | Reply::Early(_) => return,
                        }
                    }
                });
            }
        });
        App {
            addr,
            accepted,
            seen,
        }
    }

    async fn read_until(
        c: &mut TcpStream,
        buf: &mut Vec<u8>,
        done: impl Fn(&[u8]) -> Option<usize>,
    ) -> Option<usize> {
        loop {
            if let Some(n) = done(buf) {
                return Some(n);
            }
            let mut chunk = [0u8; 4096];
            match c.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn client(app: &App) -> AppH1 {
        client_with(app, 64 * 1024)
    }

    fn client_with(app: &App, max_head: usize) -> AppH1 {
        let c = AppConnector::new(app.addr, Duration::from_secs(5));
        AppH1::new(c, Duration::from_secs(30), max_head)
    }

    fn get(path: &str) -> Request<Empty<Bytes>> {
        Request::get(format!("http://app.local{path}"))
            .body(Empty::new())
            .unwrap()
    }

    async fn body_of(r: Response<AppBody>) -> Result<(Bytes, Option<HeaderMap>), AppError> {
        let c = r.into_body().collect().await?;
        let trailers = c.trailers().cloned();
        Ok((c.to_bytes(), trailers))
    }

    fn seen(app: &App, i: usize) -> String {
        String::from_utf8_lossy(&app.seen.lock().unwrap()[i]).into_owned()
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[tokio::test]
    async fn a_connection_is_reused_after_a_complete_response() {
        let app = app(vec![Reply::Send(OK), Reply::Send(OK), Reply::Send(OK)]).await;
        let c = client(&app);
        for _ in 0..3 {
            let r = c.send(get("/a?b=c")).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(body_of(r).await.unwrap().0, "ok");
        }
        assert_eq!(app.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(c.idle(), 1);
        let first = seen(&app, 0);
        assert!(
            first.starts_with("GET /a?b=c HTTP/1.1\r\nhost: app.local\r\n"),
            "{first}"
        );
        assert!(!first.contains("content-length"), "{first}");
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_with_extensions_and_trailers() {
        let app = app(vec![
            Reply::Send(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                  5;ext=\"a b\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
            ),
            Reply::Send(OK),
        ])
        .await;
        let c = client(&app);
        let r = c.send(get("/")).await.unwrap();
        let (body, trailers) = body_of(r).await.unwrap();
        assert_eq!(body, "hello world");
        assert_eq!(trailers.unwrap()["x-sum"], "11");
        assert_eq!(
            body_of(c.send(get("/")).await.unwrap()).await.unwrap().0,
            "ok"
        );
        assert_eq!(
            app.accepted.load(Ordering::SeqCst),
            1,
            "chunked keeps the connection"
        );
    }

    #[tokio::test]
    async fn a_body_to_the_end_of_the_connection_is_read_whole_and_not_reused() {
        let app = app(vec![
            Reply::SendClose(b"HTTP/1.1 200 OK\r\n\r\nall of it"),
            Reply::Send(OK),
        ])
        .await;
        let c = client(&app);
        let r = c.send(get("/")).await.unwrap();
        assert_eq!(body_of(r).await.unwrap().0, "all of it");
        assert_eq!(c.idle(), 0);
        assert_eq!(
            body_of(c.send(get("/")).await.unwrap()).await.unwrap().0,
            "ok"
        );
        assert_eq!(app.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn transfer_encoding_wins_over_content_length_and_ends_the_connection() {
        let app = app(vec![
            Reply::Send(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n",
            ),
            Reply::Send(OK),
        ])
        .await;
        let c = client(&app);
        let r = c.send(get("/")).await.unwrap();
        assert!(!r.headers().contains_key(http::header::CONTENT_LENGTH));
        assert_eq!(body_of(r).await.unwrap().0, "hello");
        assert_eq!(
            c.idle(),
            0,
            "a response with both lengths ends its connection"
        );
        body_of(c.send(get("/")).await.unwrap()).await.unwrap();
        assert_eq!(app.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bytes_after_a_response_never_become_the_next_response() {
        let app = app(vec![Reply::Send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
              HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsmuggl",
        )])
        .await;
        let c = client(&app);
        let r = c.send(get("/")).await.unwrap();
        assert_eq!(body_of(r).await.unwrap().0, "ok");
        assert_eq!(c.idle(), 0, "a connection with stray bytes is not pooled");
    }

    #[tokio::test]
    async fn bad_lengths_and_bad_chunks_are_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\nabcd"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
            b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0x3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nfolded: a\r\n b\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
        ] {
            let app = app(vec![Reply::SendClose(bad)]).await;
            let e = client(&app).send(get("/")).await.err();
            assert!(
                matches!(e, Some(AppError::Malformed(_))),
                "{}: {e:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\n;x\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n11111111111111111\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
        ] {
            let app = app(vec![Reply::SendClose(bad)]).await;
            let r = client(&app).send(get("/")).await.unwrap();
            let e = body_of(r).await.err();
            assert!(
                matches!(e, Some(AppError::Malformed(_) | AppError::Truncated)),
                "{}: {e:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn informational_responses_are_skipped() {
        let app = app(vec![Reply::Send(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
              HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        )])
        .await;
        let r = client(&app).send(get("/")).await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(!r.headers().contains_key("link"));
        assert_eq!(body_of(r).await.unwrap().0, "ok");
    }

    #[tokio::test]
    async fn head_204_and_304_answers_have_no_body_and_keep_the_connection() {
        let app = app(vec![
            Reply::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
            Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Reply::Send(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n"),
            Reply::Send(OK),
        ])
        .await;
        let c = client(&app);
        let head = Request::head("http://app.local/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let r = c.send(head).await.unwrap();
        assert_eq!(r.headers()[http::header::CONTENT_LENGTH], "10");
        assert!(r.body().is_end_stream());
        assert_eq!(body_of(r).await.unwrap().0, "");
        for status in [204, 304] {
            let r = c.send(get("/")).await.unwrap();
            assert_eq!(r.status().as_u16(), status);
            assert_eq!(body_of(r).await.unwrap().0, "");
        }
        assert_eq!(
            body_of(c.send(get("/")).await.unwrap()).await.unwrap().0,
            "ok"
        );
        assert_eq!(app.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_closed_pooled_connection_is_retried_only_for_a_safe_request() {
        let app = app(vec![
            Reply::Send(OK),
            Reply::Close,
            Reply::Send(OK),
            Reply::Close,
        ])
        .await;
        let c = client(&app);
        body_of(c.send(get("/")).await.unwrap()).await.unwrap();
        // The app drops the pooled connection as it reads the next request.
        let r = c.send(get("/again")).await.unwrap();
        assert_eq!(body_of(r).await.unwrap().0, "ok");
        assert_eq!(app.accepted.load(Ordering::SeqCst), 2);
        // A POST may have been acted on: it is not sent twice.
        let post = Request::post("http://app.local/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let e = c.send(post).await.err();
        assert!(matches!(e, Some(AppError::Closed)), "{e:?}");
        assert_eq!(app.seen.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn request_bodies_are_framed_by_what_was_decoded_not_by_the_headers() {
        let app = app(vec![Reply::Send(OK), Reply::Send(OK)]).await;
        let c = client(&app);
        // A client's own framing headers are not trusted: the length is the body's.
        let req = Request::put("http://app.local/x")
            .header("content-length", "999")
            .header("transfer-encoding", "chunked")
            .header("expect", "100-continue")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        body_of(c.send(req).await.unwrap()).await.unwrap();
        let s = seen(&app, 0);
        assert!(s.contains("content-length: 5\r\n\r\nhello"), "{s}");
        assert!(!s.contains("999") && !s.contains("transfer-encoding") && !s.contains("expect"));
        // A body of unknown length goes chunked, trailers included.
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"defghijklmnopq"))),
            Ok(Frame::trailers({
                let mut t = HeaderMap::new();
                t.insert("x-check", HeaderValue::from_static("1"));
                t
            })),
        ];
        let req = Request::post("http://app.local/y")
            .body(StreamBody::new(futures::stream::iter(frames)))
            .unwrap();
        body_of(c.send(req).await.unwrap()).await.unwrap();
        let s = seen(&app, 1);
        assert!(
            s.ends_with("transfer-encoding: chunked\r\n\r\n3\r\nabc\r\ne\r\ndefghijklmnopq\r\n0\r\nx-check: 1\r\n\r\n"),
            "{s}"
        );
        assert_eq!(app.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_early_answer_stops_the_body_and_ends_the_connection() {
        let app = app(vec![Reply::Early(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig",
        )])
        .await;
        let c = client(&app);
        // A body that never ends: only the early answer can end this request.
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let req = Request::post("http://app.local/upload").body(body).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), c.send(req))
            .await
            .expect("the early answer ends the request")
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body_of(r).await.unwrap().0, "big");
        assert_eq!(c.idle(), 0);
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..50 {
            big.extend_from_slice(format!("x-filler-{i}: {}\r\n", "v".repeat(60)).as_bytes());
        }
        big.extend_from_slice(b"content-length: 0\r\n\r\n");
        let big: &'static [u8] = Box::leak(big.into_boxed_slice());
        let app = app(vec![Reply::SendClose(big)]).await;
        let e = client_with(&app, 2048).send(get("/")).await.err();
        assert!(matches!(e, Some(AppError::HeadTooLarge(2048))), "{e:?}");
    }

    #[test]
    fn mangled_response_heads_are_refused_or_parsed_never_a_panic() {
        use crate::proxy::h1::tests::mangle;
        use keycard_core::XorShift as Rng;
        let seeds: [&[u8]; 2] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 204 No\r\nconnection: keep-alive\r\n\r\n",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for i in 0..4000 {
            let input = mangle(&mut rng, seeds[i % seeds.len()]);
            let mut buf = BytesMut::from(&input[..]);
            if let Ok(Some(head)) = parse_head(&mut buf, 4096) {
                assert!(!head.status.is_informational());
                let _ = framing(head.status, false, &head.headers);
            }
        }
    }
}
