//! keycard's enforcement points: the authorization model, JWT validation,
//! the ext_authz server and the mTLS proxy. Just-in-time grants (exceptions
//! to a policy for a principal, until they expire) are described in
//! [`grants`].
//!
//! The [`Authorizer`] is the one entry point every enforcement point calls,
//! in process, on its hot path:
//!
//! ```
//! use keycard_proxy::{compile_str, Authorizer, Mode, Request, Peer};
//!
//! let policies = compile_str("inline.yaml", r#"
//! apiVersion: keycard.dev/v1
//! kind: AuthorizationPolicy
//! metadata: {name: web-to-api, namespace: prod}
//! spec:
//!   selector: {spiffeIds: ["spiffe://example.org/ns/prod/sa/api"]}
//!   rules:
//!   - from: [{source: {principals: ["spiffe://example.org/ns/prod/sa/web"]}}]
//!     to: [{operation: {methods: [GET], paths: ["/v1/*"]}}]
//! "#, Mode::Enforce).unwrap();
//! let authz = Authorizer::with_policies(policies);
//! let mut req = Request {
//!     source: Peer { principal: Some("spiffe://example.org/ns/prod/sa/web".into()), ..Peer::default() },
//!     destination: Peer { principal: Some("spiffe://example.org/ns/prod/sa/api".into()), ..Peer::default() },
//!     method: "GET".into(),
//!     path: "/v1/items".into(),
//!     ..Request::default()
//! };
//! assert!(authz.check(&req).is_allowed());
//! req.method = "DELETE".into();
//! let d = authz.check(&req);
//! assert!(!d.is_allowed());
//! assert_eq!(d.reason_header(), "prod/web-to-api/-: no_allow_match");
//! ```

mod authorizer;
mod engine;
pub mod ext_authz;
mod fetch;
pub mod files;
pub mod grants;
pub mod jwt;
mod loader;
pub mod matcher;
pub mod metrics;
mod policy;
pub mod proxy;
pub mod record;
mod rego;
mod request;
pub mod serve;
pub mod time;

pub use authorizer::{Authorizer, Checked};
pub use engine::{AuthzDecision, PolicySet, Reason};
pub use keycard_core::Outcome;
pub use loader::{compile_str, load_dir, LoadError, PolicyStore, Reload};
pub use policy::{Action, Mode, Policy, PolicyError, PolicyMatch, API_VERSION, KIND};
pub use request::{
    normalize_host, normalize_path, normalize_target, spiffe_namespace, Attrs, Claims,
    EscapedSlashes, PathError, PathOptions, Peer, Posture, Request, Target,
};
