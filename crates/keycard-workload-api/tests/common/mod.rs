//! A test CA and identity source: rcgen-minted SPIFFE X509-SVIDs (URI SAN,
//! leaf constraints), ES256 JWT-SVIDs signed with ring, a JWKS bundle.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use keycard_workload_api::{
    BundleMaterial, IdentitySource, JwtSvidMaterial, Selector, SourceError, SpiffeId, TrustDomain,
    X509SvidMaterial,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use tokio::sync::watch;

/// A SPIFFE CA for one trust domain.
pub struct TestCa {
    pub td: TrustDomain,
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(td: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{td} test CA"));
        params.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            td: td.parse().unwrap(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An X509-SVID for `id` with serial `serial`.
    pub fn mint(&self, id: &str, serial: u64) -> X509SvidMaterial {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        X509SvidMaterial {
            spiffe_id: id.parse().unwrap(),
            cert_chain: vec![cert.der().to_vec()],
            private_key_pkcs8: key.serialize_der(),
            hint: String::new(),
        }
    }

    pub fn bundle(&self, jwks: Vec<u8>) -> BundleMaterial {
        BundleMaterial {
            x509_authorities: vec![self.der.clone()],
            jwks,
        }
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// An ES256 JWT-SVID signer and its JWKS.
pub struct JwtSigner {
    key: EcdsaKeyPair,
    pub kid: String,
}

impl JwtSigner {
    pub fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        JwtSigner {
            key,
            kid: kid.into(),
        }
    }

    pub fn public_point(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// The SPIFFE bundle JWKS holding this key as a `jwt-svid` key.
    pub fn jwks(&self) -> Vec<u8> {
        let p = self.public_point();
        serde_json::to_vec(&serde_json::json!({
            "keys": [{
                "kty": "EC", "crv": "P-256", "use": "jwt-svid", "kid": self.kid,
                "x": b64(&p[1..33]), "y": b64(&p[33..65]),
            }],
            "spiffe_sequence": 1,
        }))
        .unwrap()
    }

    pub fn sign(&self, sub: &SpiffeId, aud: &[String], ttl: Duration) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let claims = serde_json::json!({
            "sub": sub.to_string(), "aud": aud, "iat": now, "exp": now + ttl.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(&claims).unwrap())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!("{signing_input}.{}", b64(sig.as_ref()))
    }

    /// Verifies signature, audience and expiry.
    pub fn verify(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<(SpiffeId, serde_json::Map<String, serde_json::Value>), SourceError> {
        let bad = |m: &str| SourceError::Invalid(m.to_string());
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a compact JWS"));
        };
        let sig = unb64(s).ok_or_else(|| bad("signature encoding"))?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            self.public_point(),
        )
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| bad("bad signature"))?;
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&unb64(c).ok_or_else(|| bad("claims encoding"))?)
                .map_err(|_| bad("claims json"))?;
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => a == audience,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(bad("audience mismatch"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if claims.get("exp").and_then(|e| e.as_u64()).unwrap_or(0) <= now {
            return Err(bad("expired"));
        }
        let sub = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("sub"))?;
        Ok((sub, claims))
    }
}

/// Who gets what: SVIDs keyed by the one selector that entitles to them.
pub struct TestSource {
    pub td: TrustDomain,
    pub jwt: JwtSigner,
    entries: Mutex<Vec<(Selector, X509SvidMaterial)>>,
    bundles: Mutex<BTreeMap<TrustDomain, BundleMaterial>>,
    tx: watch::Sender<u64>,
}

impl TestSource {
    pub fn new(ca: &TestCa) -> Arc<Self> {
        let jwt = JwtSigner::new("key-1");
        let mut bundles = BTreeMap::new();
        bundles.insert(ca.td.clone(), ca.bundle(jwt.jwks()));
        let (tx, _) = watch::channel(0);
        Arc::new(TestSource {
            td: ca.td.clone(),
            jwt,
            entries: Mutex::new(Vec::new()),
            bundles: Mutex::new(bundles),
            tx,
        })
    }

    fn bump(&self) {
        self.tx.send_modify(|v| *v += 1);
    }

    /// Entitles `selector` to `svid`, replacing an SVID with the same ID
    /// (a rotation).
    pub fn set_svid(&self, selector: &str, svid: X509SvidMaterial) {
        let selector: Selector = selector.parse().unwrap();
        let mut e = self.entries.lock().unwrap();
        e.retain(|(s, m)| !(s == &selector && m.spiffe_id == svid.spiffe_id));
        e.push((selector, svid));
        drop(e);
        self.bump();
    }

    pub fn add_bundle(&self, td: TrustDomain, b: BundleMaterial) {
        self.bundles.lock().unwrap().insert(td, b);
        self.bump();
    }
}

impl IdentitySource for TestSource {
    fn x509_svids(&self, selectors: &[Selector]) -> Result<Vec<X509SvidMaterial>, SourceError> {
        Ok(self
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| selectors.contains(s))
            .map(|(_, m)| m.clone())
            .collect())
    }
    fn jwt_svids(
        &self,
        selectors: &[Selector],
        spiffe_id: Option<&SpiffeId>,
        audience: &[String],
    ) -> Result<Vec<JwtSvidMaterial>, SourceError> {
        Ok(self
            .x509_svids(selectors)?
            .into_iter()
            .filter(|m| spiffe_id.is_none_or(|id| *id == m.spiffe_id))
            .map(|m| JwtSvidMaterial {
                token: self
                    .jwt
                    .sign(&m.spiffe_id, audience, Duration::from_secs(300)),
                spiffe_id: m.spiffe_id,
                hint: m.hint,
            })
            .collect())
    }
    fn bundles(&self) -> BTreeMap<TrustDomain, BundleMaterial> {
        self.bundles.lock().unwrap().clone()
    }
    fn validate_jwt(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<(SpiffeId, serde_json::Map<String, serde_json::Value>), SourceError> {
        self.jwt.verify(token, audience)
    }
    fn updates(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
    fn trust_domain(&self) -> TrustDomain {
        self.td.clone()
    }
}

/// This process's effective uid and gid.
pub fn my_ids() -> (u32, u32) {
    let m = std::fs::metadata("/proc/self").unwrap();
    (m.uid(), m.gid())
}

/// A running server on a socket in a temp dir.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<Result<(), keycard_workload_api::ServeError>>>,
}

impl TestServer {
    pub fn start<S: IdentitySource>(source: Arc<S>) -> Self {
        Self::start_with(source, keycard_workload_api::ServeOptions::default())
    }

    pub fn start_with<S: IdentitySource>(
        source: Arc<S>,
        options: keycard_workload_api::ServeOptions,
    ) -> Self {
        Self::start_full(
            source,
            Arc::new(keycard_workload_api::UnixAttestor::new()),
            options,
        )
    }

    pub fn start_full<S: IdentitySource, A: keycard_workload_api::Attestor>(
        source: Arc<S>,
        attestor: Arc<A>,
        options: keycard_workload_api::ServeOptions,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = keycard_workload_api::bind_socket(&socket, 0o666).unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(keycard_workload_api::serve_with(
            listener,
            source,
            attestor,
            options,
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            dir,
            socket,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// Stops the server and waits (bounded) for it to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("server did not stop")
                .unwrap()
                .unwrap();
        }
    }
}

/// Connects tonic's channel to a Unix socket (no Workload API header added).
#[derive(Clone)]
pub struct UnixConnector(pub PathBuf);

impl tonic::codegen::Service<http::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            Ok(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        })
    }
}

/// A raw gRPC client on the socket.
pub async fn raw_client(
    socket: &std::path::Path,
) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(UnixConnector(socket.to_path_buf()))
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

/// A request with the Workload API header.
pub fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

pub async fn unary<Req, Resp>(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    req: tonic::Request<Req>,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready().await.unwrap();
    grpc.unary(
        req,
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(|r| r.into_inner())
}

pub async fn server_stream<Req, Resp>(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    req: tonic::Request<Req>,
) -> Result<tonic::Streaming<Resp>, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready().await.unwrap();
    grpc.server_streaming(
        req,
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(|r| r.into_inner())
}
