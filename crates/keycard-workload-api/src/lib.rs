//! The SPIFFE Workload API and Envoy SDS servers on the agent's Unix socket, with kernel-based workload attestation.
