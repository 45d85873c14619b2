//! RBAC resolved into effective permissions per subject.

use keycard_k8s::Object;

use crate::model::{Gap, Permission, Subject};

/// Roles, ClusterRoles (aggregation resolved) and bindings of the input.
#[derive(Debug, Default)]
pub struct Rbac {}

/// "Can VERB RESOURCE (in NAMESPACE, named NAME)?"
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessQuery {
    pub verb: String,
    /// `deployments`, `deployments.apps`, `pods/exec`.
    pub resource: String,
    /// None: any namespace (cluster-wide grants and every namespace's).
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// A subject that can, and the permissions that let it.
#[derive(Debug, Clone)]
pub struct WhoCan {
    pub subject: Subject,
    pub via: Vec<Permission>,
}

impl Rbac {
    pub fn from_objects(_objects: &[Object]) -> Rbac {
        Rbac {}
    }
    /// Bindings that point to missing roles, and other holes.
    pub fn gaps(&self) -> Vec<Gap> {
        Vec::new()
    }
    /// Every subject named in a binding.
    pub fn subjects(&self) -> Vec<Subject> {
        Vec::new()
    }
    /// Effective permissions of a subject, including those of the groups it
    /// is implicitly in (`system:serviceaccounts`, ...).
    pub fn permissions(&self, _subject: &Subject) -> Vec<Permission> {
        Vec::new()
    }
    pub fn who_can(&self, _q: &AccessQuery) -> Vec<WhoCan> {
        Vec::new()
    }
}
