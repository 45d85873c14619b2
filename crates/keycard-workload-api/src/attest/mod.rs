//! Workload attestation: from the kernel's view of the caller (peer
//! credentials of its Unix socket connection) to selectors.

use std::sync::Arc;

use keycard_core::Selector;

pub mod k8s;
pub mod kubelet;
pub mod unix;

/// The peer credentials of a Unix socket connection (`SO_PEERCRED`), taken
/// when the connection was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// The caller's process id; 0 when the kernel did not say.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// Why a caller could not be attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// The kernel gave no process id for the connection.
    #[error("the connection carries no process id")]
    NoPid,
    /// The process went away (or was replaced) while being inspected.
    #[error("process {pid} exited or its pid was reused during attestation")]
    ProcessGone {
        /// The pid.
        pid: i32,
    },
    /// Reading what the kernel says about the process failed.
    #[error("reading {what} of process {pid}: {reason}")]
    Proc {
        /// The pid.
        pid: i32,
        /// What was read (`exe`, `stat`, `cgroup`).
        what: &'static str,
        /// The error.
        reason: String,
    },
    /// A pod lookup (kubelet or API) failed.
    #[error("pod lookup failed: {0}")]
    PodLookup(String),
    /// Attestation took too long.
    #[error("attestation timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Anything else.
    #[error("attestation failed: {0}")]
    Other(String),
}

/// Finds the selectors of the process behind a connection.
pub trait Attestor: Send + Sync + 'static {
    /// The caller's selectors. May block (reads `/proc`, hashes binaries);
    /// the server runs it on a blocking thread under a time limit.
    fn attest(&self, peer: &PeerCred) -> Result<Vec<Selector>, AttestError>;
}

impl<T: Attestor + ?Sized> Attestor for Arc<T> {
    fn attest(&self, peer: &PeerCred) -> Result<Vec<Selector>, AttestError> {
        (**self).attest(peer)
    }
}

/// Runs several attestors and unions their selectors; any failure fails the
/// whole attestation (a partial view could match an entry it should not).
#[derive(Default, Clone)]
pub struct CompositeAttestor {
    parts: Vec<Arc<dyn Attestor>>,
}

impl CompositeAttestor {
    /// An attestor that produces nothing until parts are added.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds an attestor.
    #[must_use]
    pub fn with(mut self, part: Arc<dyn Attestor>) -> Self {
        self.parts.push(part);
        self
    }
}

impl std::fmt::Debug for CompositeAttestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositeAttestor")
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl Attestor for CompositeAttestor {
    fn attest(&self, peer: &PeerCred) -> Result<Vec<Selector>, AttestError> {
        let mut out = Vec::new();
        for p in &self.parts {
            for s in p.attest(peer)? {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    struct Fixed(Vec<&'static str>);
    impl Attestor for Fixed {
        fn attest(&self, _: &PeerCred) -> Result<Vec<Selector>, AttestError> {
            Ok(self.0.iter().map(|s| s.parse().unwrap()).collect())
        }
    }
    struct Fails;
    impl Attestor for Fails {
        fn attest(&self, p: &PeerCred) -> Result<Vec<Selector>, AttestError> {
            Err(AttestError::ProcessGone { pid: p.pid })
        }
    }

    #[test]
    fn composite_unions_and_fails_on_any_error() {
        let peer = PeerCred {
            pid: 1,
            uid: 0,
            gid: 0,
        };
        let a = CompositeAttestor::new()
            .with(Arc::new(Fixed(vec!["unix:uid:0", "unix:gid:0"])))
            .with(Arc::new(Fixed(vec!["unix:uid:0", "k8s:ns:prod"])));
        let got: Vec<String> = a
            .attest(&peer)
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(got, ["unix:uid:0", "unix:gid:0", "k8s:ns:prod"]);
        let b = a.with(Arc::new(Fails));
        assert_eq!(
            b.attest(&peer).unwrap_err(),
            AttestError::ProcessGone { pid: 1 }
        );
    }
}
