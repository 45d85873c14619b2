//! The live reader against a fake Kubernetes API server on loopback:
//! pagination, metadata-only Secrets, a forbidden resource, an optional API
//! group that is not installed, and API servers that cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use keycard_assess::live::{load_live, LiveOptions, Progress};
use keycard_assess::{input, Pillar, SourceKind};
use serde_json::{json, Value};

/// Every request the fake server saw: method, path and query, Accept.
type Log = Arc<Mutex<Vec<(String, String, String)>>>;

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn list(items: Vec<Value>, cont: Option<&str>) -> Value {
    json!({"kind": "List", "apiVersion": "v1",
           "metadata": {"resourceVersion": "100", "continue": cont.unwrap_or("")},
           "items": items})
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%2F", "/")
                .replace("%3D", "=")
                .replace("%21", "!")
                .replace("%2C", ",")
        })
    })
}

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "shop", "uid": name, "resourceVersion": "1",
                        "managedFields": [{"manager": "kubectl"}]},
           "spec": {"serviceAccountName": "web", "containers": [{"name": "a", "image": "x"}]},
           "status": {"phase": "Running"}})
}

fn secret_meta(name: &str) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": {"name": name, "namespace": "shop", "uid": name,
                        "annotations": {"kubernetes.io/service-account.name": "web",
                                        "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}}})
}

fn handle(req: &Request<hyper::body::Incoming>, log: &Log) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    log.lock().unwrap().push((
        req.method().to_string(),
        format!("{path}?{query}"),
        accept.clone(),
    ));
    if req.method() != hyper::Method::GET {
        return reply(
            405,
            json!({"kind": "Status", "message": "read-only test server"}),
        );
    }
    let limit = query_param(&query, "limit");
    match path.as_str() {
        "/version" => reply(
            200,
            json!({"major": "1", "minor": "31", "gitVersion": "v1.31.2"}),
        ),
        "/api/v1/pods" => {
            assert_eq!(limit.as_deref(), Some("500"), "pods are listed in pages");
            match query_param(&query, "continue").as_deref() {
                None => reply(200, list(vec![pod("web-1")], Some("page-2"))),
                Some("page-2") => reply(200, list(vec![pod("web-2")], None)),
                Some(other) => reply(
                    410,
                    json!({"kind": "Status", "message": format!("bad continue {other}")}),
                ),
            }
        }
        "/api/v1/secrets" => {
            if !accept.contains("as=PartialObjectMetadataList") {
                // A full list would carry the data: hand it out so the
                // test sees it, and fail below.
                return reply(
                    200,
                    list(
                        vec![json!({"metadata": {"name": "leak", "namespace": "shop"},
                                    "data": {"password": "aHVudGVyMg=="}})],
                        None,
                    ),
                );
            }
            let sel = query_param(&query, "fieldSelector").unwrap_or_default();
            let items = match sel.as_str() {
                "type=kubernetes.io/service-account-token" => vec![secret_meta("web-token")],
                "type=Opaque" => vec![secret_meta("db-password")],
                s if s.starts_with("type!=") => vec![secret_meta("helm-release")],
                _ => vec![],
            };
            reply(
                200,
                json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                       "metadata": {}, "items": items}),
            )
        }
        "/api/v1/configmaps" => reply(
            200,
            list(
                vec![json!({"metadata": {"name": "app", "namespace": "shop"},
                            "data": {"DB_PASSWORD": "hunter2"},
                            "binaryData": {"blob": "AAAA"}})],
                None,
            ),
        ),
        "/api/v1/serviceaccounts" => reply(
            200,
            list(
                vec![json!({"metadata": {"name": "web", "namespace": "shop"}})],
                None,
            ),
        ),
        "/api/v1/nodes" => reply(
            200,
            list(
                vec![json!({"metadata": {"name": "n1"},
                            "status": {"images": [{"names": ["x"], "sizeBytes": 1}],
                                       "nodeInfo": {"kubeletVersion": "v1.31.2"}}})],
                None,
            ),
        ),
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings" => reply(
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                   "message": "clusterrolebindings.rbac.authorization.k8s.io is forbidden: User \"keycard\" cannot list resource \"clusterrolebindings\""}),
        ),
        p if p.starts_with("/apis/policy.networking.k8s.io/") => reply(
            404,
            json!({"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"}),
        ),
        _ => reply(200, list(vec![], None)),
    }
}

/// Serve the fake API on 127.0.0.1 from its own thread and runtime.
fn fake_api() -> (SocketAddr, Log) {
    serve(None)
}

/// The fake API, over TLS when given an acceptor.
fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = l.accept().await.unwrap();
                let log = log2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let resp = handle(&req, &log);
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(s) => {
                                http.serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                    .await
                            }
                            Err(_) => return,
                        },
                        None => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await
                        }
                    };
                });
            }
        });
    });
    (rx.recv().unwrap(), log)
}

fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    kubeconfig_with(dir, server, "")
}

/// `cluster_extra`: more fields of the cluster entry (`, certificate-authority: ...`).
fn kubeconfig_with(dir: &Path, server: &str, cluster_extra: &str) -> PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"{server}\"{cluster_extra}}}
users:
- name: keycard
  user: {{token: test-token}}
contexts:
- name: fake-ctx
  context: {{cluster: fake, user: keycard}}
current-context: fake-ctx
"
        ),
    )
    .unwrap();
    p
}

fn options(kubeconfig: PathBuf) -> LiveOptions {
    LiveOptions {
        kubeconfig: Some(kubeconfig),
        request_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(30),
        ..LiveOptions::default()
    }
}

#[test]
fn lists_every_resource_read_only_with_pages_metadata_only_secrets_and_gaps() {
    let (addr, log) = fake_api();
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://{addr}");
    let opts = options(kubeconfig(dir.path(), &server));
    let seen: std::cell::RefCell<Vec<Progress>> = Default::default();
    let input = load_live(&opts, &|p| seen.borrow_mut().push(p));

    // Nothing but GETs, and Secrets only ever as metadata.
    let requests = log.lock().unwrap().clone();
    assert!(requests.iter().all(|(m, _, _)| m == "GET"), "{requests:?}");
    let secret_requests: Vec<_> = requests
        .iter()
        .filter(|(_, p, _)| p.starts_with("/api/v1/secrets"))
        .collect();
    assert_eq!(
        secret_requests.len(),
        keycard_assess::live::SECRET_TYPES.len() + 1,
        "one metadata list per type, one for the rest"
    );
    for (_, p, accept) in &secret_requests {
        assert!(
            accept.contains("as=PartialObjectMetadataList"),
            "secrets listed with their data: {p} Accept {accept}"
        );
    }
    assert!(
        requests
            .iter()
            .any(|(_, p, _)| p.contains("continue=page-2")),
        "the second page of pods was asked for"
    );

    assert_eq!(input.source.kind, SourceKind::Live);
    assert_eq!(
        input.source.locations,
        [
            "context fake-ctx".to_string(),
            server.clone(),
            "Kubernetes v1.31.2".into()
        ]
    );
    let names = |kind: &str| -> Vec<String> {
        input
            .objects
            .iter()
            .filter(|o| o.kind() == kind)
            .map(|o| o.name())
            .collect()
    };
    assert_eq!(names("Pod"), ["web-1", "web-2"], "both pages read");
    let pod = input.objects.iter().find(|o| o.kind() == "Pod").unwrap();
    assert_eq!(pod.api_version(), "v1");
    assert_eq!(&*pod.source.file, format!("{server}/pods"));
    assert!(pod.metadata().get("managedFields").is_none());

    let secrets: Vec<_> = input
        .objects
        .iter()
        .filter(|o| o.kind() == "Secret")
        .collect();
    assert_eq!(secrets.len(), 3);
    for s in &secrets {
        assert!(s.value.get("data").is_none(), "{:?}", s.value);
        assert!(
            !s.value.to_string().contains("aHVudGVyMg"),
            "no trace of the data (last-applied annotation dropped): {}",
            s.value
        );
        assert_eq!(s.api_version(), "v1");
    }
    let ty = |name: &str| {
        secrets
            .iter()
            .find(|s| s.name() == name)
            .unwrap()
            .value
            .get("type")
            .cloned()
    };
    assert_eq!(
        ty("web-token"),
        Some(json!("kubernetes.io/service-account-token"))
    );
    assert_eq!(ty("db-password"), Some(json!("Opaque")));
    assert_eq!(ty("helm-release"), None);
    // Metadata other than the last-applied annotation is kept.
    assert!(secrets[0].metadata()["annotations"]
        .get("kubernetes.io/service-account.name")
        .is_some());

    let cm = input
        .objects
        .iter()
        .find(|o| o.kind() == "ConfigMap")
        .unwrap();
    assert_eq!(
        cm.value["data"]["DB_PASSWORD"], "hunter2",
        "ConfigMap data is read"
    );
    assert!(cm.value.get("binaryData").is_none());
    let node = input.objects.iter().find(|o| o.kind() == "Node").unwrap();
    assert!(node.value["status"].get("images").is_none());

    // 403: a gap, and the rest still listed.
    let ids: Vec<&str> = input.gaps.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(
        ids,
        ["forbidden:clusterrolebindings"],
        "404 of an optional group is no gap"
    );
    assert_eq!(input.gaps[0].pillars, [Pillar::Identity]);
    assert!(input.gaps[0].what.contains("403"));
    assert!(input.problems.is_empty(), "{:?}", input.problems);

    // Coverage of a live read: only what could not be listed.
    let cov = input::coverage(&input);
    assert_eq!(cov.gaps.len(), 1);
    assert!(cov.limits(Pillar::Identity));
    assert!(!cov.limits(Pillar::Networks));

    // Progress: every resource reported done, object count grows to the total.
    let seen = seen.into_inner();
    let last = seen.last().unwrap();
    assert_eq!(last.resources_done, keycard_assess::live::RESOURCES.len());
    assert_eq!(last.resources_done, last.resources_total);
    assert_eq!(last.objects, input.objects.len());
    assert!(seen.windows(2).all(|w| w[0].objects <= w[1].objects));
}

#[test]
fn configmap_data_beyond_the_budget_is_dropped_and_said() {
    let (addr, _) = fake_api();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(kubeconfig(dir.path(), &format!("http://{addr}")));
    opts.configmap_budget_bytes = 4;
    let input = load_live(&opts, &|_| {});
    let cm = input
        .objects
        .iter()
        .find(|o| o.kind() == "ConfigMap")
        .unwrap();
    assert!(cm.value.get("data").is_none());
    let g = input
        .gaps
        .iter()
        .find(|g| g.id == "truncated:configmaps")
        .unwrap();
    assert_eq!(g.pillars, [Pillar::Data]);
}

#[test]
fn an_api_server_nobody_listens_on_is_reported_promptly() {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://127.0.0.1:{port}");
    let opts = options(kubeconfig(dir.path(), &server));
    let t = Instant::now();
    let input = load_live(&opts, &|_| {});
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(input.objects.is_empty());
    let ids: Vec<&str> = input.gaps.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["unreachable-api"]);
    assert!(
        input.gaps[0].what.contains(&server),
        "{}",
        input.gaps[0].what
    );
    assert_eq!(input.problems.len(), 1);
    assert_eq!(input.problems[0].file, server);
    let cov = input::coverage(&input);
    for p in [
        Pillar::Identity,
        Pillar::Networks,
        Pillar::ApplicationsAndWorkloads,
        Pillar::Data,
    ] {
        assert!(cov.limits(p));
    }
}

#[test]
fn an_api_server_that_never_answers_costs_one_request_timeout() {
    // Accepts connections and says nothing.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(kubeconfig(dir.path(), &format!("http://{addr}")));
    opts.request_timeout = Duration::from_secs(1);
    let t = Instant::now();
    let input = load_live(&opts, &|_| {});
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(input.gaps.len(), 1);
    assert_eq!(input.gaps[0].id, "unreachable-api");
    assert!(
        input.problems[0].message.contains("within"),
        "{:?}",
        input.problems
    );
}

#[test]
fn a_missing_kubeconfig_is_a_problem_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path().join("nope"));
    let input = load_live(&opts, &|_| {});
    assert_eq!(input.gaps[0].id, "unreachable-api");
    assert!(input.problems[0].file.ends_with("nope"));
}

/// Real clusters speak HTTPS with their own CA: kube's rustls (ring, no
/// aws-lc, no OpenSSL) verifies the server against the kubeconfig's CA.
#[test]
fn reads_over_tls_with_the_kubeconfig_ca() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![ck.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into()),
        )
        .unwrap();
    let (addr, log) = serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let server = format!("https://{addr}");
    let opts = options(kubeconfig_with(
        dir.path(),
        &server,
        &format!(", certificate-authority: \"{}\"", ca.display()),
    ));
    let input = load_live(&opts, &|_| {});
    assert!(input.problems.is_empty(), "{:?}", input.problems);
    assert_eq!(
        input.objects.iter().filter(|o| o.kind() == "Pod").count(),
        2
    );
    assert!(!log.lock().unwrap().is_empty());

    // A server whose certificate the kubeconfig's CA did not sign is not
    // read: one gap, nothing sent past the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let before = log.lock().unwrap().len();
    let input = load_live(&opts, &|_| {});
    assert_eq!(input.gaps.len(), 1);
    assert_eq!(input.gaps[0].id, "unreachable-api");
    assert!(
        input.problems[0].message.contains("certificate"),
        "the reason is given: {}",
        input.problems[0].message
    );
    assert!(input.objects.is_empty());
    assert_eq!(log.lock().unwrap().len(), before);
}
