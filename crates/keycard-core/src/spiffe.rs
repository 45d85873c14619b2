use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a SPIFFE ID (per the SPIFFE-ID spec, section 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("a SPIFFE ID must start with spiffe://")]
    Scheme,
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    #[error("the trust domain has a character outside [a-z0-9.-_]: {0:?}")]
    TrustDomainChar(char),
    #[error("the path has an empty, '.' or '..' segment")]
    PathSegment,
    #[error("the path has a character outside [a-zA-Z0-9.-_]: {0:?}")]
    PathChar(char),
    #[error("the path must not end with '/'")]
    TrailingSlash,
    #[error("a SPIFFE ID has no query or fragment")]
    QueryOrFragment,
    #[error("a SPIFFE ID is at most 2048 bytes")]
    TooLong,
}

/// A SPIFFE trust domain such as `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The SPIFFE ID of the trust domain itself, `spiffe://<td>`.
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix("spiffe://").unwrap_or(s);
        if s.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(SpiffeIdError::TrustDomainChar(c));
        }
        Ok(TrustDomain(s.to_string()))
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = SpiffeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TrustDomain> for String {
    fn from(t: TrustDomain) -> String {
        t.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID, `spiffe://<trust domain>/<path>`, validated per the spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    path: String,
}

impl SpiffeId {
    pub fn new(trust_domain: TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        validate_path(path)?;
        Ok(SpiffeId {
            trust_domain,
            path: path.to_string(),
        })
    }
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }
    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(SpiffeIdError::PathSegment);
    };
    if rest.is_empty() || path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    for seg in rest.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(SpiffeIdError::PathSegment);
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(SpiffeIdError::PathChar(c));
        }
    }
    Ok(())
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 2048 {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        if rest.contains(['?', '#']) {
            return Err(SpiffeIdError::QueryOrFragment);
        }
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        let trust_domain: TrustDomain = td.parse()?;
        SpiffeId::new(trust_domain, path)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> String {
        id.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for s in [
            "spiffe://example.org",
            "spiffe://example.org/a/b-c_d.e",
            "spiffe://td/x",
        ] {
            let id: SpiffeId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn rejects_invalid_ids() {
        let cases = [
            ("http://example.org/a", SpiffeIdError::Scheme),
            ("spiffe:///a", SpiffeIdError::EmptyTrustDomain),
            (
                "spiffe://Example.org/a",
                SpiffeIdError::TrustDomainChar('E'),
            ),
            ("spiffe://example.org/a/", SpiffeIdError::TrailingSlash),
            ("spiffe://example.org/a//b", SpiffeIdError::PathSegment),
            ("spiffe://example.org/a/../b", SpiffeIdError::PathSegment),
            ("spiffe://example.org/a?x=1", SpiffeIdError::QueryOrFragment),
            ("spiffe://example.org/a b", SpiffeIdError::PathChar(' ')),
            (
                "spiffe://user@example.org/a",
                SpiffeIdError::TrustDomainChar('@'),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<SpiffeId>().unwrap_err(), want, "{s}");
        }
    }
}
