//! keycard's shared model, free of I/O.
//!
//! ```
//! use keycard_core::{Severity, SpiffeId};
//!
//! let id: SpiffeId = "spiffe://example.org/ns/prod/sa/api".parse().unwrap();
//! assert_eq!(id.trust_domain().as_str(), "example.org");
//! assert!(Severity::Critical > Severity::High);
//! ```

mod decision;
mod identity;
mod resource;
mod rng;
mod severity;
mod spiffe;

pub use decision::{Decision, Outcome};
pub use identity::{
    AgentRecord, JoinToken, RegistrationEntry, Revocation, RevocationKind, Selector, SelectorError,
    TokenUse,
};
pub use resource::ResourceRef;
pub use rng::XorShift;
pub use severity::{ParseSeverityError, Severity};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
