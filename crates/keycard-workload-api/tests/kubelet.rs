//! Kubernetes attestation through a kubelet: a fake kubelet on 127.0.0.1
//! serves a realistic `PodList` over HTTPS and checks the bearer token; the
//! caller (this test process, through a fake `/proc/<pid>/cgroup`) gets the
//! identity of its own pod over the Workload API, a new pod is found on the
//! first call after it appears, a rotated token is picked up, and a kubelet
//! that is down, slow, wrong or talkative gets the caller PermissionDenied.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{raw_client, server_stream, with_header, TestCa, TestServer, TestSource};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use keycard_workload_api::proto::{X509SvidRequest, X509SvidResponse};
use keycard_workload_api::{
    kubelet_pod_lookup, AttestError, K8sAttestor, KubeletConfig, PodLookup, RefreshOptions,
    ServeOptions,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use serde_json::json;
use tonic::Code;

const T: Duration = Duration::from_secs(15);

const WEB_UID: &str = "4a6e8c2e-1b2c-4d5e-8f90-0123456789ab";
const DB_UID: &str = "7f3d2a10-9c8b-4e7f-a6d5-c4b3a2918070";
const NEW_UID: &str = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";

fn cid(c: char) -> String {
    c.to_string().repeat(64)
}

/// A pod as the kubelet's `/pods` lists it (trimmed of nothing that
/// matters: owner references, volumes, conditions and all).
fn pod(
    name: &str,
    ns: &str,
    uid: &str,
    sa: &str,
    labels: serde_json::Value,
    containers: &[(&str, &str, Option<String>)],
) -> serde_json::Value {
    let specs: Vec<_> = containers
        .iter()
        .map(|(n, image, _)| {
            json!({
                "name": n, "image": image, "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": {"cpu": "100m"}},
                "volumeMounts": [{"name": "kube-api-access-x", "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
            })
        })
        .collect();
    let statuses: Vec<_> = containers
        .iter()
        .map(|(n, image, id)| {
            let mut s = json!({
                "name": n, "image": format!("docker.io/library/{image}"),
                "imageID": format!("docker.io/library/{image}@sha256:{}", "e".repeat(64)),
                "ready": id.is_some(), "restartCount": 0, "started": id.is_some(),
                "lastState": {},
                "state": if id.is_some() {
                    json!({"running": {"startedAt": "2026-11-22T14:00:00Z"}})
                } else {
                    json!({"waiting": {"reason": "ContainerCreating"}})
                }
            });
            if let Some(id) = id {
                s["containerID"] = json!(format!("containerd://{id}"));
            }
            s
        })
        .collect();
    json!({
        "metadata": {
            "name": name, "generateName": format!("{name}-"), "namespace": ns, "uid": uid,
            "resourceVersion": "48213", "creationTimestamp": "2026-11-22T13:59:58Z",
            "labels": labels,
            "annotations": {"kubernetes.io/config.seen": "2026-11-22T13:59:58.1Z",
                            "kubernetes.io/config.source": "api"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{name}-rs"), "uid": "11111111-2222-4333-8444-555555555555",
                "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "containers": specs,
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": sa, "serviceAccount": sa,
            "nodeName": "node-a", "securityContext": {}, "schedulerName": "default-scheduler",
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True",
                "lastProbeTime": null, "lastTransitionTime": "2026-11-22T14:00:01Z"}],
            "hostIP": "172.18.0.2", "hostIPs": [{"ip": "172.18.0.2"}],
            "podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}],
            "startTime": "2026-11-22T13:59:58Z",
            "containerStatuses": statuses,
            "qosClass": "Burstable"
        }
    })
}

fn web() -> serde_json::Value {
    pod(
        "web-7d9f8b6c5-x2x4q",
        "prod",
        WEB_UID,
        "web-sa",
        json!({"app": "web", "pod-template-hash": "7d9f8b6c5"}),
        &[
            ("web", "nginx:1.27", Some(cid('a'))),
            ("istio-proxy", "proxyv2:1.24", Some(cid('b'))),
        ],
    )
}

fn db() -> serde_json::Value {
    pod(
        "db-0",
        "data",
        DB_UID,
        "db-sa",
        json!({"app": "db"}),
        &[("postgres", "postgres:17", Some(cid('c')))],
    )
}

fn pod_list(items: Vec<serde_json::Value>) -> String {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}).to_string()
}

/// What the fake kubelet answers.
#[derive(Clone)]
enum Answer {
    Pods,
    Status(u16),
    Body(&'static str),
    /// A body that never ends (chunked).
    Endless,
    /// No answer for a minute.
    Stall,
}

struct KubeletState {
    token: String,
    pods: String,
    answer: Answer,
    requests: usize,
    last: Option<(String, String)>,
}

/// A fake kubelet: HTTPS on 127.0.0.1, a certificate for that address
/// signed by its own CA, `GET /pods` with a bearer token.
struct FakeKubelet {
    addr: SocketAddr,
    ca_pem: String,
    state: Arc<Mutex<KubeletState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

impl FakeKubelet {
    async fn start(token: &str, pods: String) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["node-a".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &issuer).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(KubeletState {
            token: token.to_string(),
            pods,
            answer: Answer::Pods,
            requests: 0,
            last: None,
        }));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, st) = (acceptor.clone(), Arc::clone(&st));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let st = Arc::clone(&st);
                        async move { Ok::<_, Infallible>(answer(&st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        FakeKubelet {
            addr,
            ca_pem: ca_cert.pem(),
            state,
            task,
        }
    }

    fn set(&self, f: impl FnOnce(&mut KubeletState)) {
        f(&mut self.state.lock().unwrap());
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }
}

async fn answer(
    st: &Mutex<KubeletState>,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    let full = |status: u16, body: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap()
    };
    let (answer, pods) = {
        let mut s = st.lock().unwrap();
        s.requests += 1;
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        s.last = Some((req.uri().path().to_string(), auth.clone()));
        if auth != format!("Bearer {}", s.token) {
            return full(401, "Unauthorized".into());
        }
        if req.method() != http::Method::GET || req.uri().path() != "/pods" {
            return full(404, "404 page not found".into());
        }
        (s.answer.clone(), s.pods.clone())
    };
    match answer {
        Answer::Pods => full(200, pods),
        Answer::Status(code) => full(code, "{\"kind\":\"Status\"}".into()),
        Answer::Body(b) => full(200, b.to_string()),
        Answer::Endless => {
            let chunk = Bytes::from(vec![b' '; 16 * 1024]);
            let stream = futures::stream::repeat_with(move || {
                Ok::<_, Infallible>(hyper::body::Frame::data(chunk.clone()))
            });
            http::Response::builder()
                .status(200)
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        Answer::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            full(200, pods)
        }
    }
}

/// A fake `/proc` where this process's cgroup says what the test wants.
struct FakeProc(tempfile::TempDir);

impl FakeProc {
    fn new() -> Self {
        FakeProc(tempfile::tempdir().unwrap())
    }
    fn root(&self) -> &Path {
        self.0.path()
    }
    /// This process is `container` of pod `uid` (cgroup v2, systemd, containerd).
    fn place(&self, uid: &str, container: &str) {
        let dir = self.0.path().join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cgroup"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container}.scope\n",
                uid.replace('-', "_")
            ),
        )
        .unwrap();
    }
}

struct Files {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    token: PathBuf,
}

fn files(kubelet: &FakeKubelet, token: &str) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("kubelet-ca.pem");
    std::fs::write(&ca, &kubelet.ca_pem).unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, token).unwrap();
    Files {
        _dir: dir,
        ca,
        token: token_path,
    }
}

fn config(kubelet: &FakeKubelet, f: &Files, refresh: RefreshOptions) -> KubeletConfig {
    KubeletConfig {
        url: Some(format!("https://{}", kubelet.addr)),
        ca_file: Some(f.ca.clone()),
        token_file: f.token.clone(),
        node_name: Some("node-a".into()),
        timeout: Duration::from_millis(800),
        refresh,
        ..KubeletConfig::default()
    }
}

/// Always fetch: every call sees the kubelet as it is now.
const NO_CACHE: RefreshOptions = RefreshOptions {
    max_age: Duration::ZERO,
    min_refresh: Duration::ZERO,
    new_pod_wait: Duration::ZERO,
};

/// One Workload API call: the SPIFFE ID served, or the status code.
async fn fetch(socket: &Path) -> Result<String, Code> {
    let mut c = raw_client(socket).await;
    let r = tokio::time::timeout(
        T,
        server_stream::<_, X509SvidResponse>(
            &mut c,
            "/SpiffeWorkloadAPI/FetchX509SVID",
            with_header(X509SvidRequest {}),
        ),
    )
    .await
    .expect("call timed out");
    let mut stream = r.map_err(|s| s.code())?;
    let first = tokio::time::timeout(T, stream.message())
        .await
        .expect("stream timed out")
        .map_err(|s| s.code())?
        .expect("a first message");
    Ok(first.svids[0].spiffe_id.clone())
}

fn source(ca: &TestCa) -> Arc<TestSource> {
    let source = TestSource::new(ca);
    source.set_svid(
        "k8s:container-name:web",
        ca.mint("spiffe://example.org/web", 1),
    );
    source.set_svid("k8s:sa:db-sa", ca.mint("spiffe://example.org/db", 2));
    source
}

async fn lookup_blocking(
    lookup: &Arc<impl PodLookup>,
    uid: &'static str,
    container: String,
) -> Result<Option<String>, AttestError> {
    let l = Arc::clone(lookup);
    tokio::task::spawn_blocking(move || l.find_pod(Some(uid), &container))
        .await
        .unwrap()
        .map(|p| p.map(|p| p.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_its_own_pods_identity_from_the_kubelet() {
    let kubelet = FakeKubelet::start("token-1", pod_list(vec![web(), db()])).await;
    let f = files(&kubelet, "token-1\n");
    let refresh = RefreshOptions {
        new_pod_wait: Duration::from_millis(600),
        min_refresh: Duration::from_millis(100),
        ..RefreshOptions::default()
    };
    let lookup = Arc::new(kubelet_pod_lookup(&config(&kubelet, &f, refresh)).unwrap());
    let proc = FakeProc::new();
    let attestor = Arc::new(K8sAttestor::with_proc_root(proc.root(), lookup));
    let ca = TestCa::new("example.org");
    let server = TestServer::start_full(source(&ca), attestor.clone(), ServeOptions::default());

    proc.place(WEB_UID, &cid('a'));
    assert_eq!(
        fetch(&server.socket).await.unwrap(),
        "spiffe://example.org/web"
    );
    let (path, auth) = kubelet.state.lock().unwrap().last.clone().unwrap();
    assert_eq!((path.as_str(), auth.as_str()), ("/pods", "Bearer token-1"));

    // The selectors of the caller's pod and container, and no other's.
    let pid = keycard_workload_api::PeerCred {
        pid: std::process::id() as i32,
        uid: 0,
        gid: 0,
    };
    let a = attestor.clone();
    let sel: Vec<String> = tokio::task::spawn_blocking(move || {
        keycard_workload_api::Attestor::attest(&*a, &pid).unwrap()
    })
    .await
    .unwrap()
    .iter()
    .map(|s| s.to_string())
    .collect();
    for want in [
        "k8s:ns:prod",
        "k8s:sa:web-sa",
        "k8s:pod-name:web-7d9f8b6c5-x2x4q",
        &format!("k8s:pod-uid:{WEB_UID}"),
        "k8s:pod-label:app:web",
        "k8s:pod-label:pod-template-hash:7d9f8b6c5",
        "k8s:container-name:web",
        "k8s:container-image:docker.io/library/nginx:1.27",
        "k8s:node-name:node-a",
    ] {
        assert!(sel.iter().any(|s| s == want), "{want} not in {sel:?}");
    }
    assert!(
        !sel.iter()
            .any(|s| s.contains("istio-proxy") || s.contains("data")),
        "{sel:?}"
    );

    // The other pod's container: the other identity (from the cache).
    proc.place(DB_UID, &cid('c'));
    assert_eq!(
        fetch(&server.socket).await.unwrap(),
        "spiffe://example.org/db"
    );
    // The web pod's sidecar is in the web pod, but only the `web`
    // container is entitled.
    proc.place(WEB_UID, &cid('b'));
    assert_eq!(fetch(&server.socket).await, Err(Code::PermissionDenied));
    // A container ID of one pod claimed under another pod's UID.
    proc.place(DB_UID, &cid('a'));
    assert_eq!(fetch(&server.socket).await, Err(Code::PermissionDenied));
    // A pod the kubelet does not know: refused after a bounded wait, with
    // a bounded number of requests.
    let before = kubelet.requests();
    proc.place(NEW_UID, &cid('f'));
    let started = Instant::now();
    assert_eq!(fetch(&server.socket).await, Err(Code::PermissionDenied));
    assert!(started.elapsed() < Duration::from_secs(4));
    let made = kubelet.requests() - before;
    assert!((1..=10).contains(&made), "{made} requests");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pod_is_found_on_the_first_call_after_it_starts() {
    let kubelet = FakeKubelet::start("t", pod_list(vec![web()])).await;
    let f = files(&kubelet, "t");
    let lookup =
        Arc::new(kubelet_pod_lookup(&config(&kubelet, &f, RefreshOptions::default())).unwrap());
    assert_eq!(
        lookup_blocking(&lookup, WEB_UID, cid('a'))
            .await
            .unwrap()
            .as_deref(),
        Some("web-7d9f8b6c5-x2x4q")
    );
    assert_eq!(kubelet.requests(), 1);
    // Cached: no request.
    assert!(lookup_blocking(&lookup, WEB_UID, cid('b'))
        .await
        .unwrap()
        .is_some());
    assert_eq!(kubelet.requests(), 1);

    // The pod starts: the first call after it is in the kubelet finds it.
    // (The last fetch is more than `min_refresh` old by then.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    kubelet.set(|s| s.pods = pod_list(vec![web(), db()]));
    assert_eq!(
        lookup_blocking(&lookup, DB_UID, cid('c'))
            .await
            .unwrap()
            .as_deref(),
        Some("db-0")
    );
    assert_eq!(kubelet.requests(), 2);

    // A pod whose container the kubelet lists without an ID for a moment
    // (it is being created): waited for, not refused.
    let creating = |id: Option<String>| {
        pod(
            "job-abc",
            "batch",
            NEW_UID,
            "default",
            json!({}),
            &[("main", "busybox:1.37", id)],
        )
    };
    kubelet.set(|s| s.pods = pod_list(vec![web(), db(), creating(None)]));
    let st = Arc::clone(&kubelet.state);
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        st.lock().unwrap().pods = pod_list(vec![web(), db(), creating(Some(cid('f')))]);
    });
    let started = Instant::now();
    assert_eq!(
        lookup_blocking(&lookup, NEW_UID, cid('f'))
            .await
            .unwrap()
            .as_deref(),
        Some("job-abc")
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
    later.await.unwrap();
    // Polling stayed `min_refresh` apart.
    let made = kubelet.requests();
    assert!((3..=10).contains(&made), "{made} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_is_read_again() {
    let kubelet = FakeKubelet::start("token-1", pod_list(vec![web()])).await;
    let f = files(&kubelet, "token-1");
    let lookup = Arc::new(kubelet_pod_lookup(&config(&kubelet, &f, NO_CACHE)).unwrap());
    assert!(lookup_blocking(&lookup, WEB_UID, cid('a'))
        .await
        .unwrap()
        .is_some());
    // The kubelet now wants the new token; the file still has the old one.
    kubelet.set(|s| s.token = "token-2".into());
    let e = lookup_blocking(&lookup, WEB_UID, cid('a'))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && !e.contains("token-1"), "{e}");
    // The kubelet's rename of the projected token.
    let next = f.token.with_extension("new");
    std::fs::write(&next, "token-2\n").unwrap();
    std::fs::rename(&next, &f.token).unwrap();
    assert!(lookup_blocking(&lookup, WEB_UID, cid('a'))
        .await
        .unwrap()
        .is_some());
    let (_, auth) = kubelet.state.lock().unwrap().last.clone().unwrap();
    assert_eq!(auth, "Bearer token-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_that_fails_gets_the_caller_refused() {
    let kubelet = FakeKubelet::start("t", pod_list(vec![web()])).await;
    let f = files(&kubelet, "t");
    let mut cfg = config(&kubelet, &f, NO_CACHE);
    cfg.max_response_bytes = 256 * 1024;
    let lookup = Arc::new(kubelet_pod_lookup(&cfg).unwrap());
    let proc = FakeProc::new();
    proc.place(WEB_UID, &cid('a'));
    let ca = TestCa::new("example.org");
    let server = TestServer::start_full(
        source(&ca),
        Arc::new(K8sAttestor::with_proc_root(proc.root(), lookup)),
        ServeOptions::default(),
    );
    assert_eq!(
        fetch(&server.socket).await.unwrap(),
        "spiffe://example.org/web"
    );

    for (what, answer) in [
        ("a server error", Answer::Status(500)),
        ("forbidden", Answer::Status(403)),
        ("not JSON", Answer::Body("<html>oops</html>")),
        (
            "JSON that is no pod list",
            Answer::Body("{\"kind\":\"Status\"}"),
        ),
        (
            "a truncated list",
            Answer::Body("{\"items\":[{\"metadata\":"),
        ),
        ("a body past the size limit", Answer::Endless),
        ("no answer within the time limit", Answer::Stall),
    ] {
        kubelet.set(|s| s.answer = answer);
        let started = Instant::now();
        assert_eq!(
            fetch(&server.socket).await,
            Err(Code::PermissionDenied),
            "{what}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
    }
    kubelet.set(|s| s.answer = Answer::Pods);
    assert_eq!(
        fetch(&server.socket).await.unwrap(),
        "spiffe://example.org/web"
    );

    // A kubelet whose certificate our CA did not sign; then the same with
    // verification explicitly skipped.
    let other = FakeKubelet::start("t", pod_list(vec![web()])).await;
    let mut wrong_ca = config(&other, &f, NO_CACHE);
    wrong_ca.ca_file = Some(f.ca.clone());
    let lookup = Arc::new(kubelet_pod_lookup(&wrong_ca).unwrap());
    let e = lookup_blocking(&lookup, WEB_UID, cid('a'))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
    assert_eq!(other.requests(), 0);
    wrong_ca.skip_verify = true;
    let lookup = Arc::new(kubelet_pod_lookup(&wrong_ca).unwrap());
    assert!(lookup_blocking(&lookup, WEB_UID, cid('a'))
        .await
        .unwrap()
        .is_some());

    // The kubelet goes away.
    drop(kubelet);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fetch(&server.socket).await, Err(Code::PermissionDenied));
    server.stop().await;
}
