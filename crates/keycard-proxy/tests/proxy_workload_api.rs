#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Two keycard proxies whose SVIDs come from a real `keycard up` (in
//! process) over its Workload API socket.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keycard_proxy::proxy::run::{start, LogTarget, ProxyConfig, SvidSourceConfig};
use keycard_proxy::proxy::{Expected, Limits, MtlsMode, Protocol, PEER_ID_HEADER};
use keycard_proxy::Mode;
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use serde_json::json;
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(15);

fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

async fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let seen = req
                        .headers()
                        .get(PEER_ID_HEADER)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_else(|| "none".into());
                    let mut r = Response::new(Full::new(Bytes::from(seen)));
                    r.headers_mut().insert(
                        "x-seen-version",
                        format!("{:?}", req.version()).parse().unwrap(),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(socket: &Path, dir: &Path) -> ProxyConfig {
    ProxyConfig {
        inbound: Vec::new(),
        outbound: Vec::new(),
        upstream_id: None,
        mode: MtlsMode::Strict,
        protocol: Protocol::Http,
        source: SvidSourceConfig::WorkloadApi(format!("unix://{}", socket.display())),
        policy_dir: Some(dir.join("policies")),
        default_mode: Mode::Enforce,
        revocations: None,
        posture: None,
        decision_log: Some(LogTarget::File(dir.join("decisions.jsonl"))),
        flow_log: None,
        audit_log: None,
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        server_names: Vec::new(),
        poll_interval: Duration::from_millis(100),
        limits: Limits::default(),
        workload_api_timeout: T,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_with_svids_from_keycard_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kc");
    let o = Overrides {
        data_dir: Some(dir.clone()),
        trust_domain: Some("up.test".into()),
        api_listen: Some("127.0.0.1:0".into()),
        agent_socket: Some(dir.join("agent.sock")),
        no_admission: true,
        ..Overrides::default()
    };
    let _up = keycard_server::start(UpConfig::parse("", "test", &o).unwrap())
        .await
        .unwrap();
    let api = connect_data_dir(&dir).unwrap().client;
    let me = "spiffe://up.test/ns/demo/sa/me";
    let r = api
        .call(
            Method::POST,
            "/v1/entries",
            Some(&json!({"spiffe_id": me, "selectors": [format!("unix:uid:{}", my_uid())]})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    let socket = dir.join("agent.sock");

    // The policy: only `me` may call the api (both proxies run as `me` here).
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("policies")).unwrap();
    std::fs::write(
        work.join("policies/api.yaml"),
        format!(
            "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: api, namespace: demo}}\nspec:\n  rules:\n  - from: [{{source: {{principals: [\"{me}\"]}}}}]\n"
        ),
    )
    .unwrap();

    let app = app().await;
    // The server side; the entry may take a moment to reach the agent.
    let deadline = tokio::time::Instant::now() + T;
    let server = loop {
        let mut cfg = config(&socket, &work);
        cfg.inbound = vec![("127.0.0.1:0".parse().unwrap(), app)];
        cfg.workload_api_timeout = Duration::from_secs(3);
        match start(cfg).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no SVID from keycard up: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(server.ctx.own_id().as_deref(), Some(me));
    let mut cfg = config(&socket, &work);
    cfg.outbound = vec![("127.0.0.1:0".parse().unwrap(), server.inbound[0])];
    cfg.upstream_id = Some(Expected::parse(me).unwrap());
    cfg.policy_dir = None;
    let client = start(cfg).await.unwrap();

    // Ready: both have an SVID and the bundle.
    let plain: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for admin in [server.admin.unwrap(), client.admin.unwrap()] {
        let r = tokio::time::timeout(
            T,
            plain.get(format!("http://{admin}/readyz").parse().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(r.status(), 200);
    }

    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for (c, version) in [(&plain, "HTTP/1.1"), (&h2, "HTTP/2.0")] {
        let r = tokio::time::timeout(
            T,
            c.get(
                format!("http://{}/hello", client.outbound[0])
                    .parse()
                    .unwrap(),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-seen-version"], version);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], me.as_bytes());
    }

    // Metrics name the decisions and the SVID expiry.
    let r = tokio::time::timeout(
        T,
        plain.get(
            format!("http://{}/metrics", server.admin.unwrap())
                .parse()
                .unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let text =
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("keycard_proxy_svid_expiry_seconds"), "{text}");
    assert!(
        text.contains("keycard_authz_decisions_total{outcome=\"allow\""),
        "{text}"
    );
    client.stop().await;
    server.stop().await;
}
