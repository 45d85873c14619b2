//! The Workload API's refusals and robustness, with a raw gRPC client:
//! missing security header, missing audience, bad SPIFFE ID, unknown
//! method, garbage on the socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{
    my_ids, raw_client, server_stream, unary, with_header, TestCa, TestServer, TestSource,
};
use keycard_workload_api::proto::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const T: Duration = Duration::from_secs(10);

fn setup() -> (TestCa, std::sync::Arc<TestSource>, TestServer) {
    let ca = TestCa::new("example.org");
    let source = TestSource::new(&ca);
    source.set_svid(
        &format!("unix:uid:{}", my_ids().0),
        ca.mint("spiffe://example.org/raw", 1),
    );
    let server = TestServer::start(source.clone());
    (ca, source, server)
}

#[tokio::test]
async fn every_call_without_the_header_is_invalid_argument() {
    let (_ca, _source, server) = setup();
    let mut c = raw_client(&server.socket).await;
    let code = |r: Result<(), tonic::Status>| r.unwrap_err().code();

    let r = server_stream::<_, X509SvidResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/FetchX509SVID",
        tonic::Request::new(X509SvidRequest {}),
    )
    .await;
    assert_eq!(code(r.map(|_| ())), Code::InvalidArgument);
    let r = server_stream::<_, X509BundlesResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/FetchX509Bundles",
        tonic::Request::new(X509BundlesRequest {}),
    )
    .await;
    assert_eq!(code(r.map(|_| ())), Code::InvalidArgument);
    let r = server_stream::<_, JwtBundlesResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/FetchJWTBundles",
        tonic::Request::new(JwtBundlesRequest {}),
    )
    .await;
    assert_eq!(code(r.map(|_| ())), Code::InvalidArgument);
    let r = unary::<_, JwtSvidResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/FetchJWTSVID",
        tonic::Request::new(JwtSvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }),
    )
    .await;
    assert_eq!(code(r.map(|_| ())), Code::InvalidArgument);
    let r = unary::<_, ValidateJwtSvidResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/ValidateJWTSVID",
        tonic::Request::new(ValidateJwtSvidRequest {
            audience: "a".into(),
            svid: "x.y.z".into(),
        }),
    )
    .await;
    assert_eq!(code(r.map(|_| ())), Code::InvalidArgument);

    // A wrong header value is as bad as none.
    let mut req = tonic::Request::new(X509SvidRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", "yes".parse().unwrap());
    let r =
        server_stream::<_, X509SvidResponse>(&mut c, "/SpiffeWorkloadAPI/FetchX509SVID", req).await;
    assert_eq!(code(r.map(|_| ())), Code::InvalidArgument);

    // With the header the same connection works.
    let mut s = server_stream::<_, X509SvidResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/FetchX509SVID",
        with_header(X509SvidRequest {}),
    )
    .await
    .unwrap();
    let first = tokio::time::timeout(T, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.svids.len(), 1);
    assert_eq!(first.svids[0].spiffe_id, "spiffe://example.org/raw");
    assert!(!first.svids[0].bundle.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bad_arguments_are_invalid_argument() {
    let (_ca, source, server) = setup();
    let mut c = raw_client(&server.socket).await;
    let jwt = |audience: Vec<&str>, id: &str| JwtSvidRequest {
        audience: audience.into_iter().map(String::from).collect(),
        spiffe_id: id.into(),
    };
    for (req, what) in [
        (jwt(vec![], ""), "no audience"),
        (jwt(vec![""], ""), "empty audience"),
        (jwt(vec!["a"], "not-a-spiffe-id"), "bad spiffe id"),
    ] {
        let r = unary::<_, JwtSvidResponse>(
            &mut c,
            "/SpiffeWorkloadAPI/FetchJWTSVID",
            with_header(req),
        )
        .await;
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument, "{what}");
    }
    // Entitled JWT for a SPIFFE ID the caller has: fine; another: denied.
    let ok = unary::<_, JwtSvidResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/FetchJWTSVID",
        with_header(jwt(vec!["a", "b"], "spiffe://example.org/raw")),
    )
    .await
    .unwrap();
    assert_eq!(ok.svids.len(), 1);
    let denied = unary::<_, JwtSvidResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/FetchJWTSVID",
        with_header(jwt(vec!["a"], "spiffe://example.org/not-mine")),
    )
    .await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);

    for (audience, svid, what) in [
        ("", ok.svids[0].svid.as_str(), "no audience"),
        ("a", "", "no token"),
        ("a", "garbage", "garbage token"),
        ("c", ok.svids[0].svid.as_str(), "wrong audience"),
    ] {
        let r = unary::<_, ValidateJwtSvidResponse>(
            &mut c,
            "/SpiffeWorkloadAPI/ValidateJWTSVID",
            with_header(ValidateJwtSvidRequest {
                audience: audience.into(),
                svid: svid.into(),
            }),
        )
        .await;
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument, "{what}");
    }
    let v = unary::<_, ValidateJwtSvidResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/ValidateJWTSVID",
        with_header(ValidateJwtSvidRequest {
            audience: "b".into(),
            svid: ok.svids[0].svid.clone(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(v.spiffe_id, "spiffe://example.org/raw");
    let claims = v.claims.unwrap();
    assert!(claims.fields.contains_key("exp"));
    assert!(claims.fields.contains_key("aud"));

    let r = unary::<_, JwtSvidResponse>(
        &mut c,
        "/SpiffeWorkloadAPI/NoSuchMethod",
        with_header(jwt(vec!["a"], "")),
    )
    .await;
    assert_eq!(r.unwrap_err().code(), Code::Unimplemented);
    drop(source);
    server.stop().await;
}

async fn closed_by_server(socket: &std::path::Path, bytes: &[u8]) {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    // The server may close before everything is written.
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 4096];
    let mut total = 0usize;
    loop {
        match tokio::time::timeout(T, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                total += n;
                assert!(total < 1 << 20, "server keeps talking to garbage");
            }
            Err(_) => panic!("the server did not close a connection that sent garbage"),
        }
    }
}

#[tokio::test]
async fn garbage_closes_the_connection_and_the_server_keeps_serving() {
    let (_ca, _source, server) = setup();
    let mut preface_then_garbage = keycard_workload_api::h2fix::PREFACE.to_vec();
    preface_then_garbage.extend_from_slice(&[0, 0, 4, 0x9, 0x4, 0, 0, 0, 1, 1, 2, 3, 4]);
    let mut bad_hpack = keycard_workload_api::h2fix::PREFACE.to_vec();
    bad_hpack.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
    bad_hpack.extend_from_slice(&[0, 0, 2, 1, 0x5, 0, 0, 0, 1, 0xff, 0xff]);
    let inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        (0..=255u8).cycle().take(5000).collect(),
        preface_then_garbage,
        bad_hpack,
    ];
    for input in &inputs {
        closed_by_server(&server.socket, input).await;
    }
    // A client that connects and says nothing does not block others.
    let idle = tokio::net::UnixStream::connect(&server.socket)
        .await
        .unwrap();
    let client = spiffe::WorkloadApiClient::connect_to(server.endpoint())
        .await
        .unwrap();
    let svid = tokio::time::timeout(T, client.fetch_x509_svid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/raw");
    drop(idle);
    server.stop().await;
}

struct SlowAttestor;
impl keycard_workload_api::Attestor for SlowAttestor {
    fn attest(
        &self,
        _: &keycard_workload_api::PeerCred,
    ) -> Result<Vec<keycard_workload_api::Selector>, keycard_workload_api::AttestError> {
        std::thread::sleep(Duration::from_secs(1));
        Ok(vec![format!("unix:uid:{}", my_ids().0).parse().unwrap()])
    }
}

#[tokio::test]
async fn attestation_is_time_bounded() {
    let ca = TestCa::new("example.org");
    let source = TestSource::new(&ca);
    source.set_svid(
        &format!("unix:uid:{}", my_ids().0),
        ca.mint("spiffe://example.org/raw", 1),
    );
    let server = TestServer::start_full(
        source,
        std::sync::Arc::new(SlowAttestor),
        keycard_workload_api::ServeOptions {
            attestation_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let mut c = raw_client(&server.socket).await;
    let r = tokio::time::timeout(
        T,
        server_stream::<_, X509SvidResponse>(
            &mut c,
            "/SpiffeWorkloadAPI/FetchX509SVID",
            with_header(X509SvidRequest {}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test]
async fn composite_unix_and_k8s_attestation_serves_a_host_process() {
    let ca = TestCa::new("example.org");
    let source = TestSource::new(&ca);
    source.set_svid(
        &format!("unix:uid:{}", my_ids().0),
        ca.mint("spiffe://example.org/host", 1),
    );
    let attestor = keycard_workload_api::CompositeAttestor::new()
        .with(std::sync::Arc::new(
            keycard_workload_api::UnixAttestor::new(),
        ))
        .with(std::sync::Arc::new(keycard_workload_api::K8sAttestor::new(
            std::sync::Arc::new(keycard_workload_api::StaticPodLookup::default()),
        )));
    let server = TestServer::start_full(
        source,
        std::sync::Arc::new(attestor),
        keycard_workload_api::ServeOptions::default(),
    );
    let client = spiffe::WorkloadApiClient::connect_to(server.endpoint())
        .await
        .unwrap();
    let svid = tokio::time::timeout(T, client.fetch_x509_svid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/host");
    server.stop().await;
}
