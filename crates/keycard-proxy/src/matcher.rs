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

/// A string hash for the policy-defined sets, eight bytes at a time.
/// Request values are only looked up, never inserted, so the set's layout
/// (chosen by the policy author) bounds every lookup; flooding resistance
/// buys nothing here, and a request value is hashed once per decision
/// (see [`HStr`]), not once per rule.
#[inline]
pub fn hash_str(s: &str) -> u64 {
    hash_bytes(s.as_bytes())
}

#[inline]
fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut w = [0u8; 8];
        w[..rem.len()].copy_from_slice(rem);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    h ^ (h >> 29)
}

/// A request value and its [`hash_str`], computed once per decision.
#[derive(Debug, Clone, Copy)]
pub struct HStr<'a> {
    pub s: &'a str,
    pub h: u64,
}

impl<'a> HStr<'a> {
    #[inline]
    pub fn new(s: &'a str) -> Self {
        HStr { s, h: hash_str(s) }
    }
}

/// Exact strings, looked up by a precomputed hash.
#[derive(Debug, Clone, Default)]
struct ExactSet {
    /// Sorted; `values[i]` has hash `hashes[i]`.
    hashes: Vec<u64>,
    values: Vec<Box<str>>,
}

impl ExactSet {
    fn build(mut items: Vec<Box<str>>) -> Self {
        items.sort_by_cached_key(|v| (hash_str(v), v.clone()));
        items.dedup();
        ExactSet {
            hashes: items.iter().map(|v| hash_str(v)).collect(),
            values: items,
        }
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    #[inline]
    fn contains(&self, v: HStr<'_>) -> bool {
        let start = if self.hashes.len() <= 8 {
            match self.hashes.iter().position(|h| *h == v.h) {
                Some(i) => i,
                None => return false,
            }
        } else {
            self.hashes.partition_point(|h| *h < v.h)
        };
        self.hashes[start..]
            .iter()
            .zip(&self.values[start..])
            .take_while(|(h, _)| **h == v.h)
            .any(|(_, s)| **s == *v.s)
    }
}

/// A set of string patterns, Istio style: `*` matches any non-empty value,
/// `prefix*` a prefix, `*suffix` a suffix, anything else exactly.
#[derive(Debug, Clone, Default)]
pub struct StringSet {
    any: bool,
    exact: ExactSet,
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
        let mut exact = Vec::new();
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
                exact.push(p.into());
            }
        }
        set.exact = ExactSet::build(exact);
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.prefixes.is_empty() && self.suffixes.is_empty()
    }

    /// Whether a present value matches any pattern.
    #[inline]
    pub fn matches(&self, value: &str) -> bool {
        if self.lowercase && value.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = value.to_ascii_lowercase();
            return self.matches_hashed(HStr::new(&lower));
        }
        if value.is_empty() {
            return false;
        }
        if self.any {
            return true;
        }
        if !self.exact.is_empty() && self.exact.contains(HStr::new(value)) {
            return true;
        }
        self.matches_affix(value)
    }

    /// [`StringSet::matches`] for a value hashed once per request. A set
    /// compiled case-insensitive expects the value in lower case already.
    #[inline]
    pub fn matches_hashed(&self, value: HStr<'_>) -> bool {
        if value.s.is_empty() {
            return false;
        }
        self.any || self.exact.contains(value) || self.matches_affix(value.s)
    }

    #[inline]
    fn matches_affix(&self, value: &str) -> bool {
        self.prefixes.iter().any(|p| value.starts_with(&**p))
            || self.suffixes.iter().any(|s| value.ends_with(&**s))
    }

    /// Whether an optional value matches: an absent value matches nothing.
    pub fn matches_opt(&self, value: Option<&str>) -> bool {
        value.is_some_and(|v| self.matches(v))
    }

    /// [`StringSet::matches_opt`] for a value hashed once per request.
    #[inline]
    pub fn matches_hashed_opt(&self, value: Option<HStr<'_>>) -> bool {
        value.is_some_and(|v| self.matches_hashed(v))
    }
}

/// Keys with the ids that listed them, looked up by hash.
#[derive(Debug, Clone, Default)]
struct Keyed {
    /// Sorted by (hash, key).
    entries: Vec<(u64, Box<[u8]>, Vec<u32>)>,
}

impl Keyed {
    fn add(&mut self, key: &[u8], id: u32) {
        let h = hash_bytes(key);
        match self
            .entries
            .iter_mut()
            .find(|(eh, k, _)| *eh == h && **k == *key)
        {
            Some((_, _, ids)) => ids.push(id),
            None => self.entries.push((h, key.into(), vec![id])),
        }
    }

    fn finish(&mut self) {
        self.entries.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    }

    #[inline]
    fn get<'s>(&'s self, key: &'s [u8], h: u64) -> impl Iterator<Item = &'s u32> + 's {
        let start = self.entries.partition_point(|e| e.0 < h);
        self.entries[start..]
            .iter()
            .take_while(move |e| e.0 == h)
            .filter(move |e| *e.1 == *key)
            .flat_map(|e| e.2.iter())
    }
}

/// The patterns of many [`StringSet`]s, each set tagged with an id: one
/// lookup marks every id whose set matches a value, at the cost of one
/// hash per distinct prefix or suffix length instead of one test per set.
#[derive(Debug, Clone, Default)]
pub(crate) struct PatternIndex {
    any: Vec<u32>,
    exact: Keyed,
    /// By pattern length.
    prefixes: Vec<(usize, Keyed)>,
    suffixes: Vec<(usize, Keyed)>,
}

impl PatternIndex {
    /// Index a case-sensitive set under `id`.
    pub(crate) fn add(&mut self, set: &StringSet, id: u32) {
        if set.any {
            self.any.push(id);
        }
        for v in &set.exact.values {
            self.exact.add(v.as_bytes(), id);
        }
        for (list, pats) in [
            (&mut self.prefixes, &set.prefixes),
            (&mut self.suffixes, &set.suffixes),
        ] {
            for p in pats {
                let at = match list.iter().position(|(len, _)| *len == p.len()) {
                    Some(i) => i,
                    None => {
                        list.push((p.len(), Keyed::default()));
                        list.len() - 1
                    }
                };
                if let Some((_, k)) = list.get_mut(at) {
                    k.add(p.as_bytes(), id);
                }
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        self.exact.finish();
        for (_, k) in self.prefixes.iter_mut().chain(self.suffixes.iter_mut()) {
            k.finish();
        }
    }

    /// Set bit `id` in `bits` for every set that matches `value`, exactly
    /// as [`StringSet::matches_hashed`] would.
    #[inline]
    pub(crate) fn mark(&self, value: HStr<'_>, bits: &mut [u64]) {
        let b = value.s.as_bytes();
        if b.is_empty() {
            return;
        }
        let mut set = |id: &u32| {
            let i = *id as usize;
            if let Some(w) = bits.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
        };
        self.any.iter().for_each(&mut set);
        self.exact.get(b, value.h).for_each(&mut set);
        for (len, k) in &self.prefixes {
            if let Some(head) = b.get(..*len) {
                k.get(head, hash_bytes(head)).for_each(&mut set);
            }
        }
        for (len, k) in &self.suffixes {
            if let Some(tail) = b.len().checked_sub(*len).and_then(|at| b.get(at..)) {
                k.get(tail, hash_bytes(tail)).for_each(&mut set);
            }
        }
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
    fn the_index_agrees_with_the_sets() {
        let sets = [
            vec!["spiffe://td/ns/a/sa/web", "spiffe://td/ns/b/*"],
            vec!["*"],
            vec!["*/sa/web", "spiffe://td/ns/a/sa/web"],
            vec!["spiffe://td/ns/*", "*web"],
            vec!["spiffe://other/x"],
        ];
        let sets: Vec<StringSet> = sets
            .iter()
            .map(|p| StringSet::compile(p, false).unwrap())
            .collect();
        let mut idx = PatternIndex::default();
        for (i, s) in sets.iter().enumerate() {
            idx.add(s, i as u32);
        }
        idx.finish();
        for v in [
            "spiffe://td/ns/a/sa/web",
            "spiffe://td/ns/b/sa/x",
            "spiffe://td/ns/c/sa/web",
            "spiffe://other/x",
            "web",
            "",
            "spiffe://td/ns/",
        ] {
            let mut bits = [0u64; 1];
            idx.mark(HStr::new(v), &mut bits);
            for (i, s) in sets.iter().enumerate() {
                assert_eq!(bits[0] >> i & 1 == 1, s.matches(v), "{v} set {i}");
            }
        }
    }

    #[test]
    fn exact_sets_of_every_size() {
        for n in [1usize, 2, 8, 9, 40] {
            let vals: Vec<String> = (0..n)
                .map(|i| format!("spiffe://td/ns/n{i}/sa/s"))
                .collect();
            let s = StringSet::compile(&vals, false).unwrap();
            for v in &vals {
                assert!(s.matches(v), "{n} {v}");
                assert!(s.matches_hashed(HStr::new(v)), "{n} {v}");
            }
            assert!(!s.matches("spiffe://td/ns/n/sa/s"));
            assert!(!s.matches(&format!("spiffe://td/ns/n{n}/sa/s")));
        }
        // Every length around the 8-byte step hashes apart from its neighbours.
        let all: Vec<String> = (0..40).map(|i| "a".repeat(i)).collect();
        let s = StringSet::compile(&all[1..20], false).unwrap();
        assert!(!s.matches(&all[20]));
        assert!(s.matches(&all[19]) && s.matches(&all[1]));
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
