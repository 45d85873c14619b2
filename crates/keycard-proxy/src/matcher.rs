//! Compiled matchers for the hot path: string patterns with Istio's
//! wildcard rules, CIDR sets, port sets.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

/// FNV-1a: a fast hash for the policy-defined sets. Request values are
/// only looked up, never inserted, so the set's layout (chosen by the
/// policy author) bounds every lookup; SipHash's flooding resistance buys
/// nothing here and costs most of a decision.
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A hash set with [`Fnv`].
pub type FastSet<T> = HashSet<T, BuildHasherDefault<Fnv>>;

/// Why a pattern cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty value")]
    Empty,
    #[error("{0:?}: '*' is only allowed at the start or the end of a value")]
    InnerWildcard(String),
    #[error("{0:?} is not an IP address or CIDR block")]
    Cidr(String),
    #[error("{0:?} is not a port number (1-65535)")]
    Port(String),
}

/// A set of string patterns, Istio style: `*` matches any non-empty value,
/// `prefix*` a prefix, `*suffix` a suffix, anything else exactly.
#[derive(Debug, Clone, Default)]
pub struct StringSet {
    any: bool,
    exact: FastSet<Box<str>>,
    prefixes: Vec<Box<str>>,
    suffixes: Vec<Box<str>>,
    lowercase: bool,
}

impl StringSet {
    /// Compile patterns; with `case_insensitive` both sides are compared in
    /// lower case (hosts).
    pub fn compile<S: AsRef<str>>(
        patterns: &[S],
        case_insensitive: bool,
    ) -> Result<Self, PatternError> {
        let mut set = StringSet {
            lowercase: case_insensitive,
            ..StringSet::default()
        };
        for p in patterns {
            let p = p.as_ref();
            let p = if case_insensitive {
                p.to_ascii_lowercase()
            } else {
                p.to_string()
            };
            if p.is_empty() {
                return Err(PatternError::Empty);
            }
            if p == "*" {
                set.any = true;
                continue;
            }
            let inner = p.trim_start_matches('*').trim_end_matches('*');
            if inner.contains('*') || (p.starts_with('*') && p.ends_with('*')) {
                return Err(PatternError::InnerWildcard(p));
            }
            if let Some(rest) = p.strip_suffix('*') {
                set.prefixes.push(rest.into());
            } else if let Some(rest) = p.strip_prefix('*') {
                set.suffixes.push(rest.into());
            } else {
                set.exact.insert(p.into());
            }
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.prefixes.is_empty() && self.suffixes.is_empty()
    }

    /// Whether a present value matches any pattern.
    #[inline]
    pub fn matches(&self, value: &str) -> bool {
        if self.lowercase && value.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.matches_exact_case(&value.to_ascii_lowercase());
        }
        self.matches_exact_case(value)
    }

    fn matches_exact_case(&self, value: &str) -> bool {
        if value.is_empty() {
            return false;
        }
        if self.any || self.exact.contains(value) {
            return true;
        }
        self.prefixes.iter().any(|p| value.starts_with(&**p))
            || self.suffixes.iter().any(|s| value.ends_with(&**s))
    }

    /// Whether an optional value matches: an absent value matches nothing.
    pub fn matches_opt(&self, value: Option<&str>) -> bool {
        value.is_some_and(|v| self.matches(v))
    }
}

/// A set of CIDR blocks (a bare address is a /32 or /128).
#[derive(Debug, Clone, Default)]
pub struct CidrSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl CidrSet {
    pub fn compile<S: AsRef<str>>(blocks: &[S]) -> Result<Self, PatternError> {
        let mut set = CidrSet::default();
        for b in blocks {
            let b = b.as_ref().trim();
            let bad = || PatternError::Cidr(b.to_string());
            let (addr, len) = match b.split_once('/') {
                Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
                None => (b, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| bad())?;
            match ip {
                IpAddr::V4(v4) => {
                    let len = len.unwrap_or(32);
                    if len > 32 {
                        return Err(bad());
                    }
                    let mask = if len == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(len))
                    };
                    set.v4.push((u32::from(v4) & mask, mask));
                }
                IpAddr::V6(v6) => {
                    let len = len.unwrap_or(128);
                    if len > 128 {
                        return Err(bad());
                    }
                    let mask = if len == 0 {
                        0
                    } else {
                        u128::MAX << (128 - u32::from(len))
                    };
                    set.v6.push((u128::from(v6) & mask, mask));
                }
            }
        }
        Ok(set)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            },
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|(net, mask)| a & mask == *net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|(net, mask)| a & mask == *net)
            }
        }
    }

    pub fn contains_opt(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.contains(ip))
    }
}

/// Parse a port written as a number or a string.
pub fn parse_port(s: &str) -> Result<u16, PatternError> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(PatternError::Port(s.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn string_patterns() {
        let s = StringSet::compile(&["/api/*", "*.png", "/exact"], false).unwrap();
        assert!(s.matches("/api/x"));
        assert!(s.matches("/api/"));
        assert!(!s.matches("/api"));
        assert!(s.matches("/img/a.png"));
        assert!(s.matches("/exact"));
        assert!(!s.matches("/exact/"));
        assert!(!s.matches(""));
        let any = StringSet::compile(&["*"], false).unwrap();
        assert!(any.matches("x"));
        assert!(!any.matches(""));
        assert!(!any.matches_opt(None));
        assert_eq!(
            StringSet::compile(&["/a*b"], false).unwrap_err(),
            PatternError::InnerWildcard("/a*b".into())
        );
        assert!(StringSet::compile(&["*a*"], false).is_err());
        assert!(StringSet::compile(&[""], false).is_err());
    }

    #[test]
    fn hosts_are_case_insensitive() {
        let s = StringSet::compile(&["API.example.com", "*.Internal"], true).unwrap();
        assert!(s.matches("api.EXAMPLE.com"));
        assert!(s.matches("db.internal"));
        assert!(!s.matches("example.com"));
    }

    #[test]
    fn cidrs() {
        let c = CidrSet::compile(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]).unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("192.168.1.7".parse().unwrap()));
        assert!(!c.contains("192.168.1.8".parse().unwrap()));
        assert!(c.contains("2001:db8::1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!c.contains("2001:db9::1".parse().unwrap()));
        let all = CidrSet::compile(&["0.0.0.0/0"]).unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert!(CidrSet::compile(&["10.0.0.0/33"]).is_err());
        assert!(CidrSet::compile(&["nope"]).is_err());
    }
}
