package keycard.zt.rbac_wildcard_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.rbac_wildcard

role(kind, name, rules) := {
	"apiVersion": "rbac.authorization.k8s.io/v1",
	"kind": kind,
	"metadata": {"name": name, "namespace": "shop"},
	"rules": rules,
}

bootstrapped(name, rules) := {
	"apiVersion": "rbac.authorization.k8s.io/v1",
	"kind": "ClusterRole",
	"metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
	"rules": rules,
}

findings(obj) := d if {
	inp1 := f.plain(obj)
	d := rbac_wildcard.deny with input as inp1
}

everything := [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]

test_narrow_role_passes if {
	count(findings(role("Role", "reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]))) == 0
}

test_each_wildcard_fires_once if {
	deny := findings(role("Role", "god", everything))
	{v.path | some v in deny} == {"rules[0].apiGroups[0]", "rules[0].resources[0]", "rules[0].verbs[0]"}
	count(deny) == 3
}

test_message_names_role_and_field if {
	deny := findings(role("Role", "ops", [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "*"]}]))
	deny == {{
		"msg": `Role "shop/ops" grants verbs "*" in rules[0]`,
		"path": "rules[0].verbs[1]",
		"value": "*",
	}}
}

test_subresource_wildcards_fire if {
	deny := findings(role("ClusterRole", "sub", [{"apiGroups": [""], "resources": ["pods/*", "*/scale", "pods"], "verbs": ["get"]}]))
	{v.value | some v in deny} == {"pods/*", "*/scale"}
}

test_non_resource_url_wildcard_fires if {
	deny := findings(role("ClusterRole", "urls", [{"nonResourceURLs": ["*"], "verbs": ["get"]}]))
	{v.path | some v in deny} == {"rules[0].nonResourceURLs[0]"}
}

test_bootstrapped_cluster_roles_are_skipped if {
	count(findings(bootstrapped("cluster-admin", everything))) == 0
	count(findings(bootstrapped("system:controller:foo", everything))) == 0
}

test_lookalike_without_label_fires if {
	unlabelled := role("ClusterRole", "cluster-admin", everything)
	count(findings(unlabelled)) == 3
	impostor := role("ClusterRole", "system:evil", everything)
	count(findings(impostor)) == 3
}

test_label_alone_does_not_exempt if {
	count(findings(bootstrapped("my-admin", everything))) == 3
}

test_namespaced_role_is_never_exempt if {
	r := object.union(role("Role", "admin", everything), {"metadata": {"labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}})
	count(findings(r)) == 3
}

test_other_kinds_are_ignored if {
	count(findings({"kind": "ConfigMap", "metadata": {"name": "x"}, "rules": everything})) == 0
}
