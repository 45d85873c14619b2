package keycard.zt.rbac_cluster_admin_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.rbac_cluster_admin

binding(kind, role_name, subjects) := {
	"apiVersion": "rbac.authorization.k8s.io/v1",
	"kind": kind,
	"metadata": {"name": "b", "namespace": "shop"},
	"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
	"subjects": subjects,
}

findings(obj) := d if {
	inp1 := f.plain(obj)
	d := rbac_cluster_admin.deny with input as inp1
}

ci := {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}

test_other_roles_pass if {
	count(findings(binding("ClusterRoleBinding", "view", [ci]))) == 0
}

test_cluster_binding_fires if {
	findings(binding("ClusterRoleBinding", "cluster-admin", [ci])) == {{
		"msg": `ClusterRoleBinding "shop/b" binds cluster-admin to ServiceAccount "build/ci" across the whole cluster`,
		"path": "subjects[0]",
		"value": ci,
	}}
}

test_role_binding_fires_with_namespace_scope if {
	some v in findings(binding("RoleBinding", "cluster-admin", [{"kind": "User", "name": "alice"}]))
	v.msg == `RoleBinding "shop/b" binds cluster-admin to User "alice" in namespace "shop"`
}

test_each_subject_fires if {
	deny := findings(binding("ClusterRoleBinding", "cluster-admin", [ci, {"kind": "Group", "name": "devs"}]))
	{v.path | some v in deny} == {"subjects[0]", "subjects[1]"}
}

test_system_masters_is_allowed_by_default if {
	deny := findings(binding("ClusterRoleBinding", "cluster-admin", [{"kind": "Group", "name": "system:masters"}, ci]))
	{v.path | some v in deny} == {"subjects[1]"}
}

test_allowed_subjects_parameter if {
	b := binding("ClusterRoleBinding", "cluster-admin", [ci])
	inp2 := f.with_params(f.plain(b), {"cluster_admin_subjects": [ci]})
	count(rbac_cluster_admin.deny) == 0 with input as inp2
	# A namespace in the entry must match.
	other := {"kind": "ServiceAccount", "name": "ci", "namespace": "prod"}
	inp3 := f.with_params(f.plain(b), {"cluster_admin_subjects": [other]})
	count(rbac_cluster_admin.deny) == 1 with input as inp3
	# An entry without a namespace matches any.
	any_ns := {"kind": "ServiceAccount", "name": "ci"}
	inp4 := f.with_params(f.plain(b), {"cluster_admin_subjects": [any_ns]})
	count(rbac_cluster_admin.deny) == 0 with input as inp4
}

test_role_named_cluster_admin_is_not_the_cluster_role if {
	b := object.union(binding("RoleBinding", "cluster-admin", [ci]), {"roleRef": {"kind": "Role"}})
	count(findings(b)) == 0
}

test_binding_without_subjects_passes if {
	count(findings(object.remove(binding("ClusterRoleBinding", "cluster-admin", []), ["subjects"]))) == 0
}
