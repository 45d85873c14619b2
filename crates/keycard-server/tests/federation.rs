//! Federation end to end: two `keycard server`s in one process, trust
//! domains a.test and b.test, federate over 127.0.0.1. a.test fetches
//! b.test's bundle from b's own bundle endpoint listener with a Web PKI
//! certificate (`https_web`); b.test fetches a.test's from a's API
//! `/bundle`, authenticating a's server SVID (`https_spiffe`, seeded with
//! a's bundle.pem). An agent of a.test serves b.test's bundle to a workload
//! (the `spiffe` crate: X.509 and JWT bundles), and when b.test's CA
//! publishes a new root, the next refresh brings it to the workload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use keycard_core::TrustDomain;
use keycard_server::remote_agent::{read_pem_certs, start_agent, AgentConfig};
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// A test CA (PEM) and a certificate for 127.0.0.1 it issued (PEM chain
/// and PKCS#8 key), for the https_web bundle endpoint.
fn web_pki(dir: &Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "web CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (ca_f, cert_f, key_f) = (
        dir.join("web-ca.pem"),
        dir.join("web.pem"),
        dir.join("web.key"),
    );
    std::fs::write(&ca_f, ca.pem()).unwrap();
    std::fs::write(&cert_f, cert.pem()).unwrap();
    std::fs::write(&key_f, key.serialize_pem()).unwrap();
    (
        ca_f.display().to_string(),
        cert_f.display().to_string(),
        key_f.display().to_string(),
    )
}

fn config(dir: &Path, td: &str, api_port: u16, text: &str) -> UpConfig {
    let o = Overrides {
        data_dir: Some(dir.to_path_buf()),
        trust_domain: Some(td.into()),
        api_listen: Some(format!("127.0.0.1:{api_port}")),
        no_admission: true,
        ..Overrides::default()
    };
    let mut c = UpConfig::parse(text, td, &o).unwrap();
    c.agent_enabled = false;
    c
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + T;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn api(dir: &Path, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let c = connect_data_dir(dir).unwrap().client;
    let r = c.call(method, path, body.as_ref()).await.unwrap();
    (r.status, r.body)
}

/// X.509 authorities of `td` the workload sees, if any.
async fn x509_roots(socket: &Path, td: &str) -> Option<usize> {
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display()))
        .await
        .ok()?;
    let set = tokio::time::timeout(T, client.fetch_x509_bundles())
        .await
        .ok()?
        .ok()?;
    let td = spiffe::TrustDomain::new(td).ok()?;
    set.get(&td).map(|b| b.authorities().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trust_domains_federate_and_an_agent_serves_the_other_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let (web_ca, web_cert, web_key) = web_pki(tmp.path());
    let (port_a, port_b, port_b_bundle) = (free_port(), free_port(), free_port());

    // a.test: fetches b.test's bundle (https_web), starting before b is up
    // (the first fetches fail and back off).
    let a_text = format!(
        r#"
instance = "a1"
[bundle_endpoint]
refresh_hint = "1s"

[[federation]]
trust_domain = "b.test"
bundle_endpoint_url = "https://127.0.0.1:{port_b_bundle}/"
profile = "https_web"
ca_file = "{web_ca}"
min_refresh = "1s"
max_refresh = "2s"
"#
    );
    let a = keycard_server::start(config(&dir_a, "a.test", port_a, &a_text))
        .await
        .unwrap();
    std::fs::copy(dir_a.join("bundle.pem"), tmp.path().join("a-bundle.pem")).unwrap();

    // b.test: its bundle on a listener of its own with the Web PKI
    // certificate; fetches a.test's over https_spiffe.
    let b_text = format!(
        r#"
instance = "b1"
[bundle_endpoint]
listen = "127.0.0.1:{port_b_bundle}"
cert_file = "{web_cert}"
key_file = "{web_key}"
refresh_hint = "1s"

[[federation]]
trust_domain = "a.test"
bundle_endpoint_url = "https://127.0.0.1:{port_a}/bundle"
profile = "https_spiffe"
endpoint_spiffe_id = "spiffe://a.test/keycard/server/a1"
bundle_file = "{a_bundle}"
min_refresh = "1s"
max_refresh = "2s"
"#,
        a_bundle = tmp.path().join("a-bundle.pem").display(),
    );
    let b = keycard_server::start(config(&dir_b, "b.test", port_b, &b_text))
        .await
        .unwrap();
    assert_eq!(
        b.endpoints.bundle,
        format!("https://127.0.0.1:{port_b_bundle}/")
    );

    let td_a: TrustDomain = "a.test".parse().unwrap();
    let td_b: TrustDomain = "b.test".parse().unwrap();
    // Each holds the other's bundle, as served.
    until("a.test to hold b.test's bundle", || async {
        keycard_server::federation::stored_bundle(&a.state, &td_b).as_ref()
            == Some(b.state.ca().bundle())
    })
    .await;
    until("b.test to hold a.test's bundle", || async {
        keycard_server::federation::stored_bundle(&b.state, &td_a).as_ref()
            == Some(a.state.ca().bundle())
    })
    .await;

    // https_spiffe checks the endpoint's SPIFFE ID.
    let wrong = keycard_server::config::Federation {
        profile: keycard_identity::EndpointProfile::HttpsSpiffe {
            endpoint_id: "spiffe://a.test/keycard/server/other".parse().unwrap(),
        },
        ..b.state.config.federation[0].clone()
    };
    let a_bundle = a.state.ca().bundle().clone();
    let e = keycard_server::federation::fetch(&wrong, Some(&a_bundle))
        .await
        .unwrap_err();
    assert!(e.contains("keycard/server/a1"), "{e}");
    // https_web checks the certificate against the CA file.
    let untrusted = keycard_server::config::Federation {
        ca_file: Some(dir_a.join("bundle.pem")),
        ..a.state.config.federation[0].clone()
    };
    assert!(keycard_server::federation::fetch(&untrusted, None)
        .await
        .is_err());

    // An agent of a.test with a workload entry for this process.
    let (st, body) = api(&dir_a, Method::POST, "/v1/join-tokens", Some(json!({}))).await;
    assert_eq!(st, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let (st, body) = api(
        &dir_a,
        Method::POST,
        "/v1/entries",
        Some(json!({
            "spiffe_id": "spiffe://a.test/workload",
            "selectors": [format!("unix:uid:{}", my_uid())],
        })),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let agent_dir = tmp.path().join("agent-a");
    let mut cfg = AgentConfig::new(
        &a.endpoints.api,
        read_pem_certs(&dir_a.join("bundle.pem")).unwrap(),
        &agent_dir,
    );
    cfg.join_token = Some(token);
    cfg.sync_wait = Duration::from_secs(5);
    let agent = tokio::time::timeout(T, start_agent(cfg))
        .await
        .unwrap()
        .unwrap();
    let socket = agent.socket.clone().unwrap();

    until("the workload to see b.test's X.509 bundle", || async {
        x509_roots(&socket, "b.test").await == Some(1)
    })
    .await;
    assert_eq!(x509_roots(&socket, "a.test").await, Some(1));
    // JWT bundles of both trust domains, as the spiffe crate parses them
    // (every key a JWT authority with its kid).
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display()))
        .await
        .unwrap();
    let jwt = tokio::time::timeout(T, client.fetch_jwt_bundles())
        .await
        .unwrap()
        .unwrap();
    for td in ["a.test", "b.test"] {
        let b = jwt
            .get(&spiffe::TrustDomain::new(td).unwrap())
            .unwrap_or_else(|| panic!("no JWT bundle for {td}"));
        assert!(b.jwt_authorities().count() > 0, "{td}: no JWT authority");
    }
    // b.test publishes its next root (past half the root's life): the
    // next refresh brings it to a.test, its agent and the workload.
    let seq_before = b.state.ca().bundle().sequence;
    {
        let mut st = b.state.store();
        let keys = std::sync::Arc::clone(&b.state.keys);
        b.state
            .ca_mut()
            .rotate(
                st.as_mut(),
                keys.as_ref(),
                SystemTime::now() + Duration::from_secs(200 * 86400),
            )
            .unwrap();
    }
    assert_eq!(b.state.ca().bundle().x509_authorities.len(), 2);
    assert!(b.state.ca().bundle().sequence > seq_before);
    until("the workload to see b.test's rotated bundle", || async {
        x509_roots(&socket, "b.test").await == Some(2)
    })
    .await;
    let held = keycard_server::federation::stored_bundle(&a.state, &td_b).unwrap();
    assert_eq!(held.sequence, b.state.ca().bundle().sequence);

    agent.shutdown(Duration::from_secs(2)).await;
    b.shutdown(Duration::from_secs(2)).await;
    a.shutdown(Duration::from_secs(2)).await;
}
