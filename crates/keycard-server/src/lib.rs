//! keycard's control plane.
//!
//! `keycard up` runs everything in one process on one machine: the server
//! (CA, registration, API, admission webhook, decision log) and a local
//! agent (Workload API, SDS), with SQLite in a data directory. `keycard
//! server` runs the server alone (SQLite or PostgreSQL), for agents on other
//! nodes.

pub mod admission;
pub mod agent;
pub mod api;
pub mod auth;
pub mod config;
pub mod control;
pub mod decisions;
pub mod enforce;
pub mod federation;
pub mod https;
pub mod metrics;
pub mod node_api;
pub mod outbound;
pub mod policies;
pub mod psat;
pub mod remote_agent;
pub mod state;
pub mod up;

pub use config::{ConfigError, Overrides, UpConfig};
pub use up::{connect_data_dir, start, Endpoints, Up, UpError};
