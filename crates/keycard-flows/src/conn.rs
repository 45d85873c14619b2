//! Connection sets: which ports of which protocols a flow may use, and
//! how netpol-analyzer prints them.

use std::fmt;

use crate::ranges::Ranges;

/// The transport protocols that NetworkPolicy distinguishes, in the order
/// the connlist notation prints them (alphabetical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Sctp,
    Tcp,
    Udp,
}

impl Protocol {
    /// All protocols in print order.
    pub const ALL: [Protocol; 3] = [Protocol::Sctp, Protocol::Tcp, Protocol::Udp];

    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Protocol::Sctp => 0,
            Protocol::Tcp => 1,
            Protocol::Udp => 2,
        }
    }

    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sctp => "SCTP",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// Lowest and highest port a policy can name.
pub const MIN_PORT: u64 = 1;
pub const MAX_PORT: u64 = 65535;

/// A set of (protocol, port) pairs. Policies allow sets, not single ports,
/// so intersections and differences of whole sets are what decide a flow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConnSet {
    ports: [Ranges; 3],
}

impl ConnSet {
    /// No connections at all.
    pub fn none() -> Self {
        ConnSet::default()
    }

    /// Every port of every protocol.
    pub fn all() -> Self {
        let full = Ranges::interval(MIN_PORT, MAX_PORT);
        ConnSet {
            ports: [full.clone(), full.clone(), full],
        }
    }

    /// Ports `lo..=hi` of one protocol.
    pub fn ports(proto: Protocol, lo: u64, hi: u64) -> Self {
        let mut c = ConnSet::none();
        c.ports[proto.index()] = Ranges::interval(lo.max(MIN_PORT), hi.min(MAX_PORT));
        c
    }

    /// Every port of one protocol.
    pub fn protocol(proto: Protocol) -> Self {
        ConnSet::ports(proto, MIN_PORT, MAX_PORT)
    }

    pub fn is_empty(&self) -> bool {
        self.ports.iter().all(Ranges::is_empty)
    }

    pub fn is_all(&self) -> bool {
        self.ports
            .iter()
            .all(|r| r.intervals() == [(MIN_PORT, MAX_PORT)])
    }

    pub fn union(&self, o: &ConnSet) -> ConnSet {
        ConnSet {
            ports: [
                self.ports[0].union(&o.ports[0]),
                self.ports[1].union(&o.ports[1]),
                self.ports[2].union(&o.ports[2]),
            ],
        }
    }

    pub fn intersect(&self, o: &ConnSet) -> ConnSet {
        ConnSet {
            ports: [
                self.ports[0].intersect(&o.ports[0]),
                self.ports[1].intersect(&o.ports[1]),
                self.ports[2].intersect(&o.ports[2]),
            ],
        }
    }

    pub fn subtract(&self, o: &ConnSet) -> ConnSet {
        ConnSet {
            ports: [
                self.ports[0].subtract(&o.ports[0]),
                self.ports[1].subtract(&o.ports[1]),
                self.ports[2].subtract(&o.ports[2]),
            ],
        }
    }

    /// The port ranges of one protocol.
    pub fn ranges(&self, proto: Protocol) -> &Ranges {
        &self.ports[proto.index()]
    }
}

/// Prints `All Connections`, `No Connections`, or per protocol in
/// alphabetical order the merged port ranges: `SCTP 9003,TCP 80,UDP 1-52,54-65535`.
impl fmt::Display for ConnSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("All Connections");
        }
        if self.is_empty() {
            return f.write_str("No Connections");
        }
        let mut first_proto = true;
        for p in Protocol::ALL {
            let r = self.ranges(p);
            if r.is_empty() {
                continue;
            }
            if !first_proto {
                f.write_str(",")?;
            }
            first_proto = false;
            write!(f, "{} ", p.as_str())?;
            for (i, &(lo, hi)) in r.intervals().iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                if lo == hi {
                    write!(f, "{lo}")?;
                } else {
                    write!(f, "{lo}-{hi}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_the_connlist() {
        assert_eq!(ConnSet::all().to_string(), "All Connections");
        assert_eq!(ConnSet::none().to_string(), "No Connections");
        let c = ConnSet::ports(Protocol::Tcp, 10053, 10054).union(&ConnSet::ports(
            Protocol::Udp,
            10053,
            10053,
        ));
        assert_eq!(c.to_string(), "TCP 10053-10054,UDP 10053");
        let c = ConnSet::all().subtract(&ConnSet::ports(Protocol::Udp, 5353, 5353));
        assert_eq!(
            c.to_string(),
            "SCTP 1-65535,TCP 1-65535,UDP 1-5352,5354-65535"
        );
        let c =
            ConnSet::ports(Protocol::Tcp, 80, 80).union(&ConnSet::ports(Protocol::Tcp, 443, 443));
        assert_eq!(c.to_string(), "TCP 80,443");
    }
}
