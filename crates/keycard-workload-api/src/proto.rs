//! The SPIFFE Workload API messages (`workload.proto`, no package), written
//! as prost structs with the field numbers of the SPIFFE Workload API spec.

use std::collections::HashMap;

/// Fully qualified service name: the proto file declares no package.
pub const SERVICE_NAME: &str = "SpiffeWorkloadAPI";

/// `X509SVIDRequest`: no parameters.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct X509SvidResponse {
    /// The caller's SVIDs; the first is the default.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// DER CRLs.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// Concatenated DER CA certificates of foreign trust domains, keyed by
    /// the trust domain's SPIFFE ID.
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct X509Svid {
    /// The SVID's SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// Concatenated DER chain, leaf first.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// PKCS#8 DER private key.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// Concatenated DER CA certificates of the SVID's trust domain.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// Operator guidance.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesRequest`: no parameters.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct X509BundlesResponse {
    /// DER CRLs.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub crl: Vec<Vec<u8>>,
    /// Concatenated DER CA certificates keyed by trust domain SPIFFE ID.
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// `JWTSVIDRequest`.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct JwtSvidRequest {
    /// Required audiences.
    #[prost(string, repeated, tag = "1")]
    pub audience: Vec<String>,
    /// Optional: restrict to this SPIFFE ID.
    #[prost(string, tag = "2")]
    pub spiffe_id: String,
}

/// `JWTSVIDResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct JwtSvidResponse {
    /// The JWT-SVIDs.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<JwtSvid>,
}

/// `JWTSVID`.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct JwtSvid {
    /// The token's SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The token, JWS compact serialization.
    #[prost(string, tag = "2")]
    pub svid: String,
    /// Operator guidance.
    #[prost(string, tag = "3")]
    pub hint: String,
}

/// `JWTBundlesRequest`: no parameters.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct JwtBundlesRequest {}

/// `JWTBundlesResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct JwtBundlesResponse {
    /// JWKS documents keyed by trust domain SPIFFE ID.
    #[prost(map = "string, bytes", tag = "1")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// `ValidateJWTSVIDRequest`.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct ValidateJwtSvidRequest {
    /// The validator's audience.
    #[prost(string, tag = "1")]
    pub audience: String,
    /// The token to validate.
    #[prost(string, tag = "2")]
    pub svid: String,
}

/// `ValidateJWTSVIDResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ValidateJwtSvidResponse {
    /// The token's SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The token's claims.
    #[prost(message, optional, tag = "2")]
    pub claims: Option<prost_types::Struct>,
}

/// A JSON value as a `google.protobuf.Value`.
pub fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn json_to_struct(o: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}
