//! Envoy SDS (`envoy.service.secret.v3.SecretDiscoveryService`) with
//! SPIRE's resource names:
//!
//! * `default`: the caller's default X509-SVID as a `tls_certificate`;
//! * `ROOTCA`: a validation context with the own trust domain's CAs;
//! * `ALL`: a validation context using Envoy's SPIFFE certificate validator
//!   (`envoy.tls.cert_validator.spiffe`) with every trust domain's bundle;
//! * `spiffe://<td>`: a validation context with that trust domain's CAs;
//! * `spiffe://<td>/<path>`: that SVID as a `tls_certificate`, when the
//!   caller is entitled to it.
//!
//! `StreamSecrets` follows the state-of-the-world xDS protocol: a response
//! carries `version_info` (a digest of its resources) and a fresh `nonce`;
//! an ACK (the nonce echoed, no error) or NACK (with `error_detail`) is not
//! answered; a request naming other resources is; stale nonces are
//! ignored; a change of the source's update counter sends again when the
//! caller's resources changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource, TypedExtensionConfig};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, spiffe_cert_validator_config, CertificateValidationContext, Secret,
    SpiffeCertValidatorConfig, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use envoy_types::pb::google::protobuf::Any;
use keycard_core::{Selector, SpiffeId, TrustDomain};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::attest::Attestor;
use crate::workload::{source_status, stopped, Shared};
use crate::{BundleMaterial, IdentitySource, SourceError, X509SvidMaterial};

/// The type URL of SDS resources.
pub const SDS_SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const SPIFFE_VALIDATOR_NAME: &str = "envoy.tls.cert_validator.spiffe";
const SPIFFE_VALIDATOR_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";
/// Most resource names one request may name.
const MAX_RESOURCE_NAMES: usize = 256;

pub(crate) struct SdsService<S, A> {
    api: Arc<Shared<S, A>>,
}

impl<S, A> SdsService<S, A> {
    pub(crate) fn new(api: Arc<Shared<S, A>>) -> Self {
        SdsService { api }
    }
}

fn pem(label: &str, ders: &[Vec<u8>]) -> Vec<u8> {
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN ");
        out.push_str(label);
        out.push_str("-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END ");
        out.push_str(label);
        out.push_str("-----\n");
    }
    out.into_bytes()
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..Default::default()
    })
}

fn tls_certificate(name: &str, svid: &X509SvidMaterial) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(pem("CERTIFICATE", &svid.cert_chain)),
            private_key: inline(pem(
                "PRIVATE KEY",
                std::slice::from_ref(&svid.private_key_pkcs8),
            )),
            ..Default::default()
        })),
    }
}

fn trusted_ca(name: &str, bundle: &BundleMaterial) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(pem("CERTIFICATE", &bundle.x509_authorities)),
                ..Default::default()
            },
        )),
    }
}

fn spiffe_validator(name: &str, bundles: &BTreeMap<TrustDomain, BundleMaterial>) -> Secret {
    let config = SpiffeCertValidatorConfig {
        trust_domains: bundles
            .iter()
            .filter(|(_, b)| !b.x509_authorities.is_empty())
            .map(|(td, b)| spiffe_cert_validator_config::TrustDomain {
                name: td.to_string(),
                trust_bundle: inline(pem("CERTIFICATE", &b.x509_authorities)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                custom_validator_config: Some(TypedExtensionConfig {
                    name: SPIFFE_VALIDATOR_NAME.to_string(),
                    typed_config: Some(Any {
                        type_url: SPIFFE_VALIDATOR_TYPE_URL.to_string(),
                        value: config.encode_to_vec(),
                    }),
                }),
                ..Default::default()
            },
        )),
    }
}

impl<S: IdentitySource, A: Attestor> Shared<S, A> {
    /// The secrets `names` resolve to for a caller with `selectors`; names
    /// the caller may not have or that do not exist are left out.
    fn secrets(&self, selectors: &[Selector], names: &[String]) -> Result<Vec<Secret>, Status> {
        let svids = match self.source.x509_svids(selectors) {
            Ok(s) => s,
            Err(SourceError::NotEntitled(_)) => Vec::new(),
            Err(e) => return Err(source_status(e)),
        };
        let bundles = self.source.bundles();
        let own = self.source.trust_domain();
        let names: Vec<String> = if names.is_empty() {
            vec!["default".into(), "ROOTCA".into()]
        } else {
            names.to_vec()
        };
        let mut out = Vec::new();
        for name in &names {
            let secret = match name.as_str() {
                "default" => svids.first().map(|s| tls_certificate(name, s)),
                "ROOTCA" => bundles.get(&own).map(|b| trusted_ca(name, b)),
                "ALL" => Some(spiffe_validator(name, &bundles)),
                _ => match name.parse::<SpiffeId>() {
                    Ok(id) if id.path().is_empty() => {
                        bundles.get(id.trust_domain()).map(|b| trusted_ca(name, b))
                    }
                    Ok(id) => svids
                        .iter()
                        .find(|s| s.spiffe_id == id)
                        .map(|s| tls_certificate(name, s)),
                    Err(_) => None,
                },
            };
            match secret {
                Some(s) => out.push(s),
                None => tracing::debug!(resource = %name, "SDS resource not available to caller"),
            }
        }
        Ok(out)
    }
}

fn response(secrets: &[Secret], nonce: u64) -> DiscoveryResponse {
    let resources: Vec<Any> = secrets
        .iter()
        .map(|s| Any {
            type_url: SDS_SECRET_TYPE_URL.to_string(),
            value: s.encode_to_vec(),
        })
        .collect();
    let mut h = Sha256::new();
    for r in &resources {
        h.update((r.value.len() as u64).to_be_bytes());
        h.update(&r.value);
    }
    let digest = h.finalize();
    DiscoveryResponse {
        version_info: hex::encode(&digest[..8]),
        resources,
        type_url: SDS_SECRET_TYPE_URL.to_string(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

fn check_request(req: &DiscoveryRequest) -> Result<(), Status> {
    if !req.type_url.is_empty() && req.type_url != SDS_SECRET_TYPE_URL {
        return Err(Status::invalid_argument(format!(
            "type_url {:?}: this server serves only {SDS_SECRET_TYPE_URL}",
            req.type_url
        )));
    }
    if req.resource_names.len() > MAX_RESOURCE_NAMES {
        return Err(Status::invalid_argument(format!(
            "resource_names: at most {MAX_RESOURCE_NAMES}"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl<S: IdentitySource, A: Attestor> SecretDiscoveryService for SdsService<S, A> {
    type DeltaSecretsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "delta SDS is not supported; use StreamSecrets",
        ))
    }

    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let selectors = self.api.attest(request.extensions()).await?;
        let api = Arc::clone(&self.api);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut updates = api.source.updates();
            let mut shutdown = api.shutdown.clone();
            // The subscription, the last response's nonce and version.
            let mut names: Option<Vec<String>> = None;
            let mut nonce: u64 = 0;
            let mut sent_version: Option<String> = None;
            loop {
                let mut send = false;
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(req)) => {
                            if let Err(status) = check_request(&req) {
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                            if !req.response_nonce.is_empty() {
                                if req.response_nonce != nonce.to_string() {
                                    tracing::debug!(nonce = %req.response_nonce, "SDS: stale nonce ignored");
                                    continue;
                                }
                                if let Some(err) = &req.error_detail {
                                    tracing::warn!(
                                        resources = ?req.resource_names,
                                        version = %req.version_info,
                                        error = %err.message,
                                        "SDS: Envoy rejected the secrets (NACK)"
                                    );
                                    continue;
                                }
                                // ACK: answer only when the subscription changed.
                                if names.as_deref() == Some(req.resource_names.as_slice()) {
                                    continue;
                                }
                            }
                            names = Some(req.resource_names);
                            send = true;
                        }
                        Ok(None) => return,
                        Err(e) => {
                            tracing::debug!(error = %e, "SDS stream ended");
                            return;
                        }
                    },
                    changed = updates.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if names.is_none() {
                            continue;
                        }
                    },
                    () = stopped(&mut shutdown) => return,
                }
                let Some(current) = &names else { continue };
                let secrets = match api.secrets(&selectors, current) {
                    Ok(s) => s,
                    Err(status) => {
                        tracing::warn!(error = %status, "SDS: cannot build secrets");
                        continue;
                    }
                };
                let candidate = response(&secrets, nonce + 1);
                if !send && sent_version.as_deref() == Some(candidate.version_info.as_str()) {
                    continue;
                }
                nonce += 1;
                sent_version = Some(candidate.version_info.clone());
                tracing::debug!(
                    resources = secrets.len(),
                    version = %candidate.version_info,
                    nonce,
                    "SDS: sending secrets"
                );
                if tx.send(Ok(candidate)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        check_request(request.get_ref())?;
        let selectors = self.api.attest(request.extensions()).await?;
        let secrets = self
            .api
            .secrets(&selectors, &request.get_ref().resource_names)?;
        Ok(Response::new(response(&secrets, 1)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn pem_wraps_at_64() {
        let p = String::from_utf8(pem("CERTIFICATE", &[vec![0u8; 100]])).unwrap();
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END CERTIFICATE-----"));
    }

    #[test]
    fn version_follows_content() {
        let a = response(&[], 1);
        let b = response(&[], 2);
        assert_eq!(a.version_info, b.version_info);
        assert_ne!(a.nonce, b.nonce);
        let s = Secret {
            name: "x".into(),
            r#type: None,
        };
        assert_ne!(response(&[s], 1).version_info, a.version_info);
    }
}
