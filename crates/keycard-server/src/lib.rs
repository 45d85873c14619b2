//! keycard's control plane.
//!
//! `keycard up` runs everything in one process on one machine: the server
//! (CA, registration, API, admission webhook, decision log) and a local
//! agent (Workload API, SDS), with SQLite in a data directory. `keycard
//! server` runs the server alone (SQLite or PostgreSQL), for agents on other
//! nodes.

pub mod admission;
