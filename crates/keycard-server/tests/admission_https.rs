//! The webhook end to end over HTTPS on 127.0.0.1: a real TLS client
//! (tokio-rustls + hyper, HTTP/1.1 and HTTP/2) sends AdmissionReviews as the
//! API server does; bad bodies get 400, 413 and 415 and the server goes on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admission_fixtures;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admission_fixtures::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keycard_server::admission::{
    serve, tls_config_from_pem, AdmissionPolicy, MemorySink, PolicyOptions, Recorder,
    ServerOptions, Webhook, WebhookConfig,
};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(30);

struct Server {
    addr: SocketAddr,
    ca_pem: String,
    sink: Arc<MemorySink>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(opts: PolicyOptions) -> Server {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let cert_pem = ck.cert.pem();
        let key_pem = ck.signing_key.serialize_pem();
        let tls = tls_config_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        let sink = Arc::new(MemorySink::new());
        let recorder = Recorder::spawn(sink.clone(), 256, 64);
        let policy = AdmissionPolicy::load(&opts).unwrap();
        let webhook = Arc::new(Webhook::new(
            policy,
            WebhookConfig::default(),
            Some(recorder),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(
                listener,
                Arc::new(tls),
                webhook,
                ServerOptions::default(),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        Server {
            addr,
            ca_pem: cert_pem,
            sink,
            stop: Some(stop),
            task,
        }
    }

    async fn connect(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::time::timeout(WAIT, TcpStream::connect(self.addr))
            .await
            .unwrap()
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(WAIT, TlsConnector::from(Arc::new(cfg)).connect(name, tcp))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(alpn),
            "ALPN negotiated"
        );
        tls
    }

    async fn http1(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let io = TokioIo::new(self.connect(b"http/1.1").await);
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send
    }

    async fn http2(&self) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
        let io = TokioIo::new(self.connect(b"h2").await);
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops in bounded time")
            .unwrap();
    }
}

fn post(body: Vec<u8>, content_type: &str) -> Request<Full<Bytes>> {
    Request::post("/validate")
        .header("content-type", content_type)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> (StatusCode, Value) {
    let status = resp.status();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let v = serde_json::from_slice(&body)
        .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, v)
}

macro_rules! send {
    ($client:expr, $req:expr) => {
        read(
            tokio::time::timeout(WAIT, async {
                $client.ready().await.unwrap();
                $client.send_request($req).await
            })
            .await
            .expect("answered in bounded time")
            .unwrap(),
        )
        .await
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliant_and_privileged_deployments_over_http1_and_http2() {
    let server = Server::start(PolicyOptions::default()).await;

    let mut h1 = server.http1().await;
    let body = serde_json::to_vec(&review(
        "e2e-ok",
        "CREATE",
        "payments",
        &compliant_deployment("api"),
    ))
    .unwrap();
    let (status, v) = send!(h1, post(body, "application/json"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["response"]["uid"], "e2e-ok");
    assert_eq!(v["response"]["allowed"], true, "{v}");

    let mut h2 = server.http2().await;
    let body = serde_json::to_vec(&review(
        "e2e-bad",
        "CREATE",
        "payments",
        &privileged_deployment("api"),
    ))
    .unwrap();
    let (status, v) = send!(h2, post(body, "application/json; charset=utf-8"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert_eq!(v["response"]["status"]["code"], 403);
    assert!(v["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("[zt-privileged]"));

    // Many requests at once on one HTTP/2 connection, as the API server sends them.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut c = h2.clone();
        let obj = if i % 2 == 0 {
            compliant_deployment("web")
        } else {
            privileged_deployment("web")
        };
        let body = serde_json::to_vec(&review(&format!("c-{i}"), "CREATE", "shop", &obj)).unwrap();
        tasks.spawn(async move {
            let (status, v) = send!(c, post(body, "application/json"));
            assert_eq!(status, StatusCode::OK);
            (i, v["response"]["allowed"].as_bool().unwrap())
        });
    }
    let mut answered = 0;
    while let Some(r) = tokio::time::timeout(WAIT, tasks.join_next()).await.unwrap() {
        let (i, allowed) = r.unwrap();
        assert_eq!(allowed, i % 2 == 0, "request {i}");
        answered += 1;
    }
    assert_eq!(answered, 40);
    let recs = server.sink.records();
    assert_eq!(recs.len(), 42, "every decision is recorded");
    drop((h1, h2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatekeeper_constraint_over_https() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("labels.yaml"), GATEKEEPER_POLICY).unwrap();
    let server = Server::start(PolicyOptions {
        policies: vec![dir.path().to_path_buf()],
        ..PolicyOptions::default()
    })
    .await;
    let mut h2 = server.http2().await;
    let body = serde_json::to_vec(&review(
        "gk-1",
        "CREATE",
        "payments",
        &compliant_deployment("api"),
    ))
    .unwrap();
    let (_, v) = send!(h2, post(body, "application/json"));
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("K8sRequiredLabels/deployments-need-costcenter"),
        "{msg}"
    );
    let mut d = compliant_deployment("api");
    d["metadata"]["labels"]["costcenter"] = "cc-1".into();
    let body = serde_json::to_vec(&review("gk-2", "CREATE", "payments", &d)).unwrap();
    let (_, v) = send!(h2, post(body, "application/json"));
    assert_eq!(v["response"]["allowed"], true, "{v}");
    drop(h2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_status_codes_and_the_server_goes_on() {
    let server = Server::start(PolicyOptions::default()).await;
    let mut h1 = server.http1().await;

    // Garbage: 400 with a Status body.
    let (status, v) = send!(
        h1,
        post(b"\x00\xffnot json at all".to_vec(), "application/json")
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["kind"], "Status");
    assert!(
        v["message"].as_str().unwrap().contains("not valid JSON"),
        "{v}"
    );

    // Nesting bombs: 400, not a stack overflow.
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
    let (status, v) = send!(h1, post(deep.into_bytes(), "application/json"));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap().contains("deeper than"),
        "{v}"
    );

    // Wrong or missing content type: 415.
    let body = serde_json::to_vec(&review("x", "CREATE", "p", &compliant_deployment("a"))).unwrap();
    let (status, _) = send!(h1, post(body.clone(), "text/plain"));
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let req = Request::post("/validate")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let (status, _) = send!(h1, req);
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Oversized with a Content-Length: 413 before the body is read.
    let mut big = vec![b' '; 3 * 1024 * 1024 + 1];
    big[0] = b'{';
    let (status, v) = send!(h1, post(big, "application/json"));
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["message"].as_str().unwrap().contains("3145728"), "{v}");

    // Oversized without one (chunked): 413 once the limit is passed.
    let mut h1s = {
        let io = TokioIo::new(server.connect(b"http/1.1").await);
        let (send, conn) = hyper::client::conn::http1::handshake::<_, Chunked>(io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    };
    let req = Request::post("/validate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Chunked {
            left: 40,
            chunk: Bytes::from(vec![b' '; 100 * 1024]),
        })
        .unwrap();
    let (status, _) = send!(h1s, req);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Health, unknown paths, wrong methods.
    let mut h2 = server.http2().await;
    let req = Request::get("/healthz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, v) = send!(h2, req);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, Value::String("ok\n".into()));
    let req = Request::get("/nope").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(send!(h2, req).0, StatusCode::NOT_FOUND);
    let req = Request::get("/validate")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send!(h2, req).0, StatusCode::METHOD_NOT_ALLOWED);

    // The server still answers real reviews.
    let (status, v) = send!(h2, post(body, "application/json"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["response"]["allowed"], true, "{v}");
    // Only the real review was recorded.
    assert_eq!(server.sink.records().len(), 1);
    drop((h1, h1s, h2));
    server.stop().await;
}

/// A body of `n` chunks with no declared length (sent chunked).
struct Chunked {
    left: usize,
    chunk: Bytes,
}

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}
