//! Envoy SDS over the socket with a raw xDS client: SPIRE's resource names,
//! and the state-of-the-world protocol (ACK and NACK not answered, updates
//! pushed, stale nonces ignored, subscription changes answered).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{my_ids, TestCa, TestServer, TestSource, UnixConnector};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, Secret, SpiffeCertValidatorConfig,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use keycard_workload_api::SDS_SECRET_TYPE_URL;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const T: Duration = Duration::from_secs(10);

async fn client(
    socket: &std::path::Path,
) -> SecretDiscoveryServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_static("http://sds")
        .connect_with_connector(UnixConnector(socket.to_path_buf()))
        .await
        .unwrap();
    SecretDiscoveryServiceClient::new(channel)
}

fn secrets(resp: &DiscoveryResponse) -> Vec<Secret> {
    resp.resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, SDS_SECRET_TYPE_URL);
            Secret::decode(a.value.as_slice()).unwrap()
        })
        .collect()
}

fn cert_pem(s: &Secret) -> String {
    match &s.r#type {
        Some(secret::Type::TlsCertificate(t)) => {
            match &t.certificate_chain.as_ref().unwrap().specifier {
                Some(
                    envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(
                        b,
                    ),
                ) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("chain {other:?}"),
            }
        }
        other => panic!("not a tls certificate: {other:?}"),
    }
}

fn request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: SDS_SECRET_TYPE_URL.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn fetch_secrets_resolves_spire_resource_names() {
    let ca = TestCa::new("example.org");
    let other = TestCa::new("other.org");
    let source = TestSource::new(&ca);
    source.add_bundle(other.td.clone(), other.bundle(Vec::new()));
    let me = format!("unix:uid:{}", my_ids().0);
    source.set_svid(&me, ca.mint("spiffe://example.org/web", 1));
    source.set_svid(&me, ca.mint("spiffe://example.org/web-admin", 2));
    let server = TestServer::start(source.clone());
    let mut c = client(&server.socket).await;

    let names = [
        "default",
        "ROOTCA",
        "ALL",
        "spiffe://example.org",
        "spiffe://other.org",
        "spiffe://example.org/web-admin",
        "spiffe://example.org/not-mine",
        "spiffe://unknown.org",
        "bogus",
    ];
    let resp = c
        .fetch_secrets(request(&names, "", ""))
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.version_info.is_empty());
    let got = secrets(&resp);
    let got_names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        got_names,
        [
            "default",
            "ROOTCA",
            "ALL",
            "spiffe://example.org",
            "spiffe://other.org",
            "spiffe://example.org/web-admin"
        ]
    );
    // default is the first SVID; the named one is that SVID.
    let pem_of = |der: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(der)[..60].to_string()
    };
    let svids = {
        use keycard_workload_api::IdentitySource;
        source.x509_svids(&[me.parse().unwrap()]).unwrap()
    };
    assert!(cert_pem(&got[0]).contains(&pem_of(&svids[0].cert_chain[0])));
    assert!(cert_pem(&got[5]).contains(&pem_of(&svids[1].cert_chain[0])));
    match &got[0].r#type {
        Some(secret::Type::TlsCertificate(t)) => {
            let key = format!("{:?}", t.private_key);
            assert!(key.contains("PRIVATE KEY") || key.contains("InlineBytes"));
        }
        _ => panic!(),
    }
    // ROOTCA: own trust domain's CA only.
    match &got[1].r#type {
        Some(secret::Type::ValidationContext(vc)) => {
            assert!(vc.trusted_ca.is_some());
            assert!(vc.custom_validator_config.is_none());
        }
        other => panic!("{other:?}"),
    }
    // ALL: the SPIFFE validator with both trust domains.
    match &got[2].r#type {
        Some(secret::Type::ValidationContext(vc)) => {
            let tec = vc.custom_validator_config.as_ref().unwrap();
            assert_eq!(tec.name, "envoy.tls.cert_validator.spiffe");
            let any = tec.typed_config.as_ref().unwrap();
            assert!(any.type_url.ends_with("SPIFFECertValidatorConfig"));
            let cfg = SpiffeCertValidatorConfig::decode(any.value.as_slice()).unwrap();
            let tds: Vec<&str> = cfg.trust_domains.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(tds, ["example.org", "other.org"]);
        }
        other => panic!("{other:?}"),
    }

    // A wrong type URL is refused.
    let mut bad = request(&["default"], "", "");
    bad.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    assert_eq!(
        c.fetch_secrets(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    server.stop().await;
}

async fn next(inbound: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(T, inbound.message())
        .await
        .expect("no SDS response in time")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn stream_secrets_follows_the_xds_protocol() {
    let ca = TestCa::new("example.org");
    let source = TestSource::new(&ca);
    let me = format!("unix:uid:{}", my_ids().0);
    source.set_svid(&me, ca.mint("spiffe://example.org/web", 1));
    let server = TestServer::start(source.clone());
    let mut c = client(&server.socket).await;

    let (tx, rx) = mpsc::channel(8);
    tx.send(request(&["default"], "", "")).await.unwrap();
    let mut inbound = c
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    let r1 = next(&mut inbound).await;
    assert_eq!(secrets(&r1).len(), 1);
    let pem1 = cert_pem(&secrets(&r1)[0]);

    // ACK: not answered. The next response is the rotation's.
    tx.send(request(&["default"], &r1.version_info, &r1.nonce))
        .await
        .unwrap();
    source.set_svid(&me, ca.mint("spiffe://example.org/web", 2));
    let r2 = next(&mut inbound).await;
    assert_ne!(r2.nonce, r1.nonce);
    assert_ne!(r2.version_info, r1.version_info);
    assert_ne!(cert_pem(&secrets(&r2)[0]), pem1);

    // NACK: logged, not answered.
    let mut nack = request(&["default"], &r1.version_info, &r2.nonce);
    nack.error_detail = Some(envoy_types::pb::google::rpc::Status {
        code: 3,
        message: "bad certificate".into(),
        details: Vec::new(),
    });
    tx.send(nack).await.unwrap();
    // A request with a stale nonce: ignored, even though it names more.
    tx.send(request(&["default", "ROOTCA"], &r1.version_info, &r1.nonce))
        .await
        .unwrap();
    source.set_svid(&me, ca.mint("spiffe://example.org/web", 3));
    let r3 = next(&mut inbound).await;
    assert_eq!(secrets(&r3).len(), 1, "the stale request was acted on");
    assert_ne!(r3.version_info, r2.version_info);

    // An ACK that names other resources changes the subscription: answered.
    tx.send(request(&["default", "ROOTCA"], &r3.version_info, &r3.nonce))
        .await
        .unwrap();
    let r4 = next(&mut inbound).await;
    let names: Vec<String> = secrets(&r4).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["default", "ROOTCA"]);
    tx.send(request(&["default", "ROOTCA"], &r4.version_info, &r4.nonce))
        .await
        .unwrap();

    // An update that changes nothing of this caller's: not sent. The next
    // response is the rotation's.
    let unrelated = TestCa::new("unrelated.org");
    source.add_bundle(unrelated.td.clone(), unrelated.bundle(Vec::new()));
    source.set_svid(&me, ca.mint("spiffe://example.org/web", 4));
    let r5 = next(&mut inbound).await;
    assert_eq!(
        r5.nonce.parse::<u64>().unwrap(),
        r4.nonce.parse::<u64>().unwrap() + 1
    );
    assert_ne!(r5.version_info, r4.version_info);

    // Shutdown ends the stream.
    drop(tx);
    server.stop().await;
}
