//! The Kubernetes validating admission webhook.
