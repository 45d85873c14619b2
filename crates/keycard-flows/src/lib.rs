//! Kubernetes NetworkPolicy evaluation: which workloads may talk to which,
//! on which ports, decided exactly as a cluster would decide it.
//!
//! ```
//! use keycard_flows::{evaluate, format_connlist, Cluster};
//!
//! let text = r#"
//! apiVersion: apps/v1
//! kind: Deployment
//! metadata: {name: web, namespace: shop}
//! spec:
//!   template:
//!     metadata: {labels: {app: web}}
//!     spec: {containers: [{name: web, image: nginx}]}
//! ---
//! apiVersion: apps/v1
//! kind: Deployment
//! metadata: {name: db, namespace: shop}
//! spec:
//!   template:
//!     metadata: {labels: {app: db}}
//!     spec: {containers: [{name: db, image: postgres, ports: [{name: pg, containerPort: 5432}]}]}
//! ---
//! apiVersion: networking.k8s.io/v1
//! kind: NetworkPolicy
//! metadata: {name: db, namespace: shop}
//! spec:
//!   podSelector: {matchLabels: {app: db}}
//!   ingress:
//!   - from: [{podSelector: {matchLabels: {app: web}}}]
//!     ports: [{port: pg}]
//! "#;
//! let (objects, errors) = keycard_k8s::parse_str("example.yaml", text, &Default::default());
//! assert!(errors.is_empty());
//! let (cluster, diagnostics) = Cluster::from_objects(&objects);
//! assert!(diagnostics.is_empty());
//! let out = format_connlist(&evaluate(&cluster), false);
//! assert!(out.contains("shop/web[Deployment] => shop/db[Deployment] : TCP 5432\n"));
//! assert!(!out.contains("=> shop/db[Deployment] : All"));
//! ```
//!
//! The model follows the Kubernetes semantics that are easy to get wrong:
//! a peer with both a pod and a namespace selector is their AND while two
//! peers are an OR; `ingress: []` isolates while `- {}` allows everything;
//! a policy isolates egress only when `Egress` is listed in `policyTypes`
//! or it has egress rules; named ports resolve against each destination
//! pod; AdminNetworkPolicies (by priority) come before NetworkPolicies and
//! the BaselineAdminNetworkPolicy after them. Output follows the notation of
//! np-guard's netpol-analyzer (`ns/name[Kind] => ns/name[Kind] : TCP 8080`).
//!
//! Beyond the pod network, workloads on a primary UserDefinedNetwork (or
//! ClusterUserDefinedNetwork) only reach their own network, and secondary
//! networks (NetworkAttachmentDefinitions) are governed by
//! MultiNetworkPolicies; [`format_report`] prints those per-network sections
//! and the workload-to-network mapping. [`explain_pair`] tells why one pair
//! is allowed or denied.
//!
//! Everything here is a pure function over parsed objects: reading files is
//! the caller's job (see `keycard_k8s::load_paths`).

mod conn;
mod eval;
pub mod generate;
pub mod graph;
pub mod ingest;
pub mod inventory;
mod ip;
mod model;
mod output;
mod ranges;
mod selector;
pub mod simulate;
pub mod time;

pub use conn::{ConnSet, Protocol};
pub use eval::{
    connections_to, evaluate, evaluate_explained, explain_pair, external_intervals, uses_ipv6,
    Connection, FlowDecider, FlowDecision, FlowPeer, RuleRef, INGRESS_CONTROLLER,
};
pub use model::{format_ip, parse_cidr, IpRange, IpSet, MAX_IPV4};
pub use model::{
    Action, AdminPeer, AdminPolicy, AdminRule, Cluster, ContainerPort, Diagnostic, Exposure,
    Network, NetworkKind, NetworkPolicy, NpPeer, NpRule, PortRef, PortSpec, Workload,
    NAMESPACE_NAME_LABEL,
};
pub use output::{format_connlist, format_json, format_report};
pub use ranges::Ranges;
pub use selector::{Labels, Operator, Requirement, Selector};
