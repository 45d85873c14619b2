//! keycard's policy engine: Rego policies (built-in packs, the team's own
//! Rego, Gatekeeper templates) compiled once and evaluated many times, every
//! finding explained with the policy and rule that made it.
//!
//! ```
//! use keycard_policy::PolicySetBuilder;
//! use keycard_k8s::{parse_str, LoadOptions};
//!
//! let policy = PolicySetBuilder::new()
//!     .source("team/latest.rego", r#"
//! ## METADATA
//! ## custom:
//! ##   id: team-no-latest
//! ##   severity: high
//! package team.latest
//! deny contains msg if {
//!     some c in input.spec.containers
//!     endswith(c.image, ":latest")
//!     msg := sprintf("container %s uses a :latest image", [c.name])
//! }
//! "#)
//!     .build()
//!     .unwrap();
//! let (objects, _) = parse_str("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: 'nginx:latest'}]\n", &LoadOptions::default());
//! let findings = policy.evaluator().evaluate(&objects[0]).unwrap();
//! assert_eq!(findings[0].rule, "team-no-latest");
//! assert_eq!(findings[0].message, "container app uses a :latest image");
//! ```
//!
//! (In this doc example `##` stands for the `#` of a Rego comment.)

mod engine;
mod error;
pub mod exceptions;
mod finding;
pub mod gatekeeper;
pub mod limits;
mod metadata;
mod native;
pub mod packs;
pub mod report;
pub mod testing;

pub use engine::{
    Evaluator, PolicySet, PolicySetBuilder, PssLevel, DEFAULT_MEMORY_LIMIT, LATEST_PSS_VERSION,
};
pub use error::{EvalError, PolicyError};
pub use finding::{Controls, Enforcement, ExceptionState, Finding};
pub use metadata::{parse_annotations, RuleMeta, Scope};
