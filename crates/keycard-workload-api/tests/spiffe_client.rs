//! The `spiffe` crate's Workload API client against the server: X509-SVID,
//! bundles, JWT-SVID, JWT bundles, validation, rotation on the stream, and
//! the refusals (missing header, caller entitled to nothing).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{my_ids, TestCa, TestServer, TestSource};
use futures::StreamExt;
use spiffe::WorkloadApiClient;

const T: Duration = Duration::from_secs(10);

/// PermissionDenied, which the client reports as "no identity issued" when
/// the message says so.
fn denied(e: &spiffe::WorkloadApiError) -> bool {
    matches!(
        e,
        spiffe::WorkloadApiError::NoIdentityIssued | spiffe::WorkloadApiError::PermissionDenied(_)
    )
}

fn serial_of(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial().to_vec()
}

#[tokio::test]
async fn spiffe_crate_client_gets_everything_and_rotations() {
    let ca = TestCa::new("example.org");
    let other = TestCa::new("other.org");
    let source = TestSource::new(&ca);
    source.add_bundle(other.td.clone(), other.bundle(Vec::new()));
    let (uid, _) = my_ids();
    let me = format!("unix:uid:{uid}");
    let svid = ca.mint("spiffe://example.org/workload", 1);
    source.set_svid(&me, svid.clone());
    let server = TestServer::start(source.clone());

    let client = tokio::time::timeout(T, WorkloadApiClient::connect_to(server.endpoint()))
        .await
        .unwrap()
        .unwrap();

    // X509-SVID
    let got = tokio::time::timeout(T, client.fetch_x509_svid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.spiffe_id().to_string(), "spiffe://example.org/workload");
    assert_eq!(got.leaf().as_bytes(), svid.cert_chain[0].as_slice());
    assert_eq!(
        got.private_key().as_bytes(),
        svid.private_key_pkcs8.as_slice()
    );

    // Context: own bundle plus the federated one.
    let ctx = client.fetch_x509_context().await.unwrap();
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    let otd = spiffe::TrustDomain::new("other.org").unwrap();
    assert_eq!(
        ctx.bundle_set().get(&td).unwrap().authorities()[0].as_bytes(),
        ca.der.as_slice()
    );
    assert!(ctx.bundle_set().get(&otd).is_some());

    // X.509 bundles
    let bundles = client.fetch_x509_bundles().await.unwrap();
    assert_eq!(bundles.len(), 2);
    assert_eq!(
        bundles.get(&otd).unwrap().authorities()[0].as_bytes(),
        other.der.as_slice()
    );

    // JWT-SVID, JWT bundles, validation.
    let jwt = client.fetch_jwt_svid(["svc-a"], None).await.unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), "spiffe://example.org/workload");
    assert_eq!(jwt.audience(), ["svc-a".to_string()]);
    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    let jb = jwt_bundles.get(&td).unwrap();
    assert!(jb.find_jwt_authority("key-1").is_some());
    let validated = client
        .validate_jwt_token("svc-a", jwt.token())
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id(), jwt.spiffe_id());
    let wrong = client.validate_jwt_token("svc-b", jwt.token()).await;
    assert!(wrong.is_err(), "wrong audience must not validate");
    // A specific SPIFFE ID the caller does not hold: refused.
    let not_mine: spiffe::SpiffeId = "spiffe://example.org/other".parse().unwrap();
    assert!(client
        .fetch_jwt_svid(["svc-a"], Some(&not_mine))
        .await
        .is_err());

    // Rotation: the stream delivers the new SVID.
    let mut stream = client.stream_x509_svids().await.unwrap();
    let first = tokio::time::timeout(T, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        serial_of(first.leaf().as_bytes()),
        serial_of(&svid.cert_chain[0])
    );
    let rotated = ca.mint("spiffe://example.org/workload", 2);
    source.set_svid(&me, rotated.clone());
    let next = tokio::time::timeout(T, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.leaf().as_bytes(), rotated.cert_chain[0].as_slice());
    assert_ne!(
        serial_of(next.leaf().as_bytes()),
        serial_of(&svid.cert_chain[0])
    );

    // Bundle streams follow federation changes too.
    let mut bstream = client.stream_x509_bundles().await.unwrap();
    let b1 = tokio::time::timeout(T, bstream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b1.len(), 2);
    let third = TestCa::new("third.org");
    source.add_bundle(third.td.clone(), third.bundle(Vec::new()));
    let b2 = tokio::time::timeout(T, bstream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b2.len(), 3);

    // Shutdown ends the open streams cleanly and the server returns.
    server.stop().await;
    // (It may still hold the update the federation change caused.)
    for _ in 0..3 {
        match tokio::time::timeout(T, stream.next()).await.unwrap() {
            Some(Ok(_)) => continue,
            _ => return,
        }
    }
    panic!("the SVID stream did not end on shutdown");
}

#[tokio::test]
async fn a_caller_entitled_to_nothing_is_denied() {
    let ca = TestCa::new("example.org");
    let source = TestSource::new(&ca);
    let (uid, _) = my_ids();
    // Entitle only a uid this process does not have.
    let other_uid = uid.wrapping_add(4242);
    source.set_svid(
        &format!("unix:uid:{other_uid}"),
        ca.mint("spiffe://example.org/someone-else", 1),
    );
    let server = TestServer::start(source);
    let client = WorkloadApiClient::connect_to(server.endpoint())
        .await
        .unwrap();

    let err = client.fetch_x509_svid().await.unwrap_err();
    assert!(denied(&err), "{err:?}");
    let err = client.fetch_x509_bundles().await.unwrap_err();
    assert!(denied(&err), "{err:?}");
    let err = client.fetch_jwt_svid(["a"], None).await.unwrap_err();
    assert!(denied(&err), "{err:?}");
    let err = client.fetch_jwt_bundles().await.unwrap_err();
    assert!(denied(&err), "{err:?}");
    server.stop().await;
}
