//! Addresses of both families. IPv4 and IPv6 are separate spaces, as in
//! Kubernetes: an IPv4 block never contains an IPv6 address and `::/0` is
//! all of IPv6 and nothing of IPv4. An IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`) is the IPv4 address, and a CIDR written that way with
//! a prefix of at least 96 is the IPv4 block (Go's `net.IPNet` reads both
//! so, and flow ingestion canonicalizes such addresses to IPv4).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ranges::Ranges;

/// Highest IPv4 address as an integer.
pub const MAX_IPV4: u64 = u32::MAX as u64;

/// One interval of addresses of one family, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpRange {
    V4(u64, u64),
    V6(u128, u128),
}

impl IpRange {
    /// The first address of the interval, as a one-address interval.
    pub fn first(self) -> IpRange {
        match self {
            IpRange::V4(lo, _) => IpRange::V4(lo, lo),
            IpRange::V6(lo, _) => IpRange::V6(lo, lo),
        }
    }

    /// Whether `a` lies in this interval (same family only).
    pub fn contains(self, a: IpRange) -> bool {
        match (self, a) {
            (IpRange::V4(lo, hi), IpRange::V4(a, b)) => lo <= a && b <= hi,
            (IpRange::V6(lo, hi), IpRange::V6(a, b)) => lo <= a && b <= hi,
            _ => false,
        }
    }
}

impl std::fmt::Display for IpRange {
    /// `lo-hi`, as the connlist names an external peer.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            IpRange::V4(lo, hi) => write!(f, "{}-{}", format_ip(lo), format_ip(hi)),
            IpRange::V6(lo, hi) => write!(f, "{}-{}", Ipv6Addr::from(lo), Ipv6Addr::from(hi)),
        }
    }
}

/// A set of addresses of both families.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IpSet {
    pub v4: Ranges<u64>,
    pub v6: Ranges<u128>,
}

impl IpSet {
    pub fn empty() -> Self {
        IpSet::default()
    }

    /// Every IPv4 and every IPv6 address.
    pub fn all() -> Self {
        IpSet {
            v4: Ranges::interval(0, MAX_IPV4),
            v6: Ranges::interval(0, u128::MAX),
        }
    }

    pub fn from_range(r: IpRange) -> Self {
        match r {
            IpRange::V4(lo, hi) => IpSet {
                v4: Ranges::interval(lo, hi),
                v6: Ranges::empty(),
            },
            IpRange::V6(lo, hi) => IpSet {
                v4: Ranges::empty(),
                v6: Ranges::interval(lo, hi),
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn union(&self, other: &IpSet) -> IpSet {
        IpSet {
            v4: self.v4.union(&other.v4),
            v6: self.v6.union(&other.v6),
        }
    }

    pub fn subtract(&self, other: &IpSet) -> IpSet {
        IpSet {
            v4: self.v4.subtract(&other.v4),
            v6: self.v6.subtract(&other.v6),
        }
    }

    /// Whether every address of `r` is in the set.
    #[inline]
    pub fn contains(&self, r: IpRange) -> bool {
        match r {
            IpRange::V4(lo, hi) => self.v4.contains_interval(lo, hi),
            IpRange::V6(lo, hi) => self.v6.contains_interval(lo, hi),
        }
    }
}

/// Parses `a.b.c.d/n`, an IPv6 `x::y/n`, or a bare address into the
/// interval it covers. Host bits below the prefix are ignored.
pub fn parse_cidr(s: &str) -> Result<IpRange, String> {
    let bad = || format!("invalid CIDR {s:?}");
    if s.contains(':') {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u32>().map_err(|_| bad())?),
            None => (s, 128),
        };
        let ip: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        if len > 128 {
            return Err(bad());
        }
        if let Some(v4) = ip.to_ipv4_mapped() {
            if len >= 96 {
                return Ok(v4_block(u64::from(u32::from(v4)), len - 96));
            }
        }
        let n = u128::from(ip);
        let host = if len == 0 {
            u128::MAX
        } else {
            (1u128 << (128 - len)) - 1
        };
        let lo = n & !host;
        return Ok(IpRange::V6(lo, lo | host));
    }
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().map_err(|_| bad())?),
        None => (s, 32),
    };
    if len > 32 {
        return Err(bad());
    }
    let parts: Vec<&str> = addr.split('.').collect();
    if parts.len() != 4 {
        return Err(bad());
    }
    let mut ip: u64 = 0;
    for p in parts {
        let b: u8 = p.parse().map_err(|_| bad())?;
        ip = (ip << 8) | u64::from(b);
    }
    Ok(v4_block(ip, len))
}

fn v4_block(ip: u64, len: u32) -> IpRange {
    let size = 1u64 << (32 - len.min(32));
    let lo = ip & !(size - 1);
    IpRange::V4(lo, lo + size - 1)
}

/// Formats an IPv4 address held as an integer.
pub fn format_ip(ip: u64) -> String {
    Ipv4Addr::from((ip & MAX_IPV4) as u32).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_of_both_families() {
        assert_eq!(
            parse_cidr("10.1.2.3/8"),
            Ok(IpRange::V4(0x0a00_0000, 0x0aff_ffff))
        );
        assert_eq!(parse_cidr("::/0"), Ok(IpRange::V6(0, u128::MAX)));
        assert_eq!(
            parse_cidr("2001:db8::1/32"),
            Ok(IpRange::V6(
                0x2001_0db8 << 96,
                (0x2001_0db8 << 96) | ((1u128 << 96) - 1)
            ))
        );
        assert_eq!(
            parse_cidr("fd00::5"),
            Ok(IpRange::V6(0xfd00 << 112 | 5, 0xfd00 << 112 | 5))
        );
        // IPv4-mapped IPv6 is IPv4.
        assert_eq!(parse_cidr("::ffff:10.0.0.0/104"), parse_cidr("10.0.0.0/8"));
        for bad in [
            "::/129",
            "1.2.3.4/33",
            "fe80::zz",
            "1.2.3/8",
            "::/x",
            "::/-1",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn families_never_overlap() {
        let v6all = IpSet::from_range(IpRange::V6(0, u128::MAX));
        assert!(!v6all.contains(IpRange::V4(0, 0)));
        assert!(!IpSet::from_range(IpRange::V4(0, MAX_IPV4)).contains(IpRange::V6(1, 1)));
        // ::1.2.3.4 and 1.2.3.4 have the same integer, not the same family.
        assert!(!v6all
            .subtract(&IpSet::from_range(IpRange::V6(0, 0xffff_ffff)))
            .contains(IpRange::V6(0x0102_0304, 0x0102_0304)));
        assert_eq!(
            IpRange::V6(0, u128::MAX).to_string(),
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(
            IpRange::V4(0, MAX_IPV4).to_string(),
            "0.0.0.0-255.255.255.255"
        );
    }
}
