# METADATA
# title: No bindings to cluster-admin
# description: >-
#   cluster-admin can do anything to any object in the cluster, Secrets and
#   RBAC included: a subject bound to it is a single credential away from a
#   full cluster compromise, and a RoleBinding to it still grants everything
#   in its namespace. Each bound subject is reported, except those in the
#   cluster_admin_subjects parameter (system:masters, Kubernetes' own
#   break-glass group, by default).
# custom:
#   id: zt-rbac-cluster-admin
#   severity: critical
#   scope: object
#   kinds: [RoleBinding, ClusterRoleBinding]
#   remediation: >-
#     Bind the subject to a role that grants only what it needs; keep
#     cluster-admin for break-glass access through just-in-time grants that
#     expire, never a standing binding.
#   controls:
#     cis: ["5.1.1"]
#     nsa: ["Authentication and authorization"]
#     iso27001: ["A.5.15", "A.5.18", "A.8.2"]
#     soc2: ["CC6.1", "CC6.3"]
package keycard.zt.rbac_cluster_admin

import data.keycard.zt.lib
import data.keycard.zt.lib.input_object
import data.keycard.zt.lib.kind
import data.keycard.zt.lib.namespace
import data.keycard.zt.lib.object_label

deny contains v if {
	kind in {"RoleBinding", "ClusterRoleBinding"}
	ref := lib.obj(input_object, "roleRef")
	ref.kind == "ClusterRole"
	ref.name == "cluster-admin"
	some j, subject in lib.arr(input_object, "subjects")
	is_object(subject)
	not allowed(subject)
	v := {
		"msg": sprintf("%s binds cluster-admin to %s%s", [object_label, lib.subject_label(subject), reach]),
		"path": sprintf("subjects[%d]", [j]),
		"value": subject,
	}
}

reach := " across the whole cluster" if {
	kind == "ClusterRoleBinding"
} else := sprintf(" in namespace %q", [namespace])

allowed(subject) if {
	some a in lib.param_list("cluster_admin_subjects")
	is_object(a)
	lib.str(a, "kind") == lib.str(subject, "kind")
	lib.str(a, "name") == lib.str(subject, "name")
	same_namespace(a, subject)
}

# An allowed entry without a namespace matches the subject in any namespace.
same_namespace(a, _) if lib.str(a, "namespace") == ""

same_namespace(a, subject) if lib.str(a, "namespace") == lib.str(subject, "namespace")
