package keycard.zt.rbac_escalation_verbs_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.rbac_escalation_verbs
import data.keycard.zt.rbac_wildcard_test as t

findings(obj) := d if {
	inp1 := f.plain(obj)
	d := rbac_escalation_verbs.deny with input as inp1
}

test_ordinary_verbs_pass if {
	count(findings(t.role("ClusterRole", "deployer", [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]}]))) == 0
}

test_escalate_and_bind_fire if {
	deny := findings(t.role("ClusterRole", "rbac-manager", [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "rolebindings"], "verbs": ["get", "escalate", "bind"]}]))
	deny == {
		{
			"msg": `ClusterRole "shop/rbac-manager" grants the escalate verb on clusterroles, rolebindings in rules[0]`,
			"path": "rules[0].verbs[1]",
			"value": "escalate",
		},
		{
			"msg": `ClusterRole "shop/rbac-manager" grants the bind verb on clusterroles, rolebindings in rules[0]`,
			"path": "rules[0].verbs[2]",
			"value": "bind",
		},
	}
}

test_impersonate_fires if {
	deny := findings(t.role("Role", "sudo", [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}]))
	{v.path | some v in deny} == {"rules[0].verbs[0]"}
}

test_wildcard_verb_is_left_to_the_wildcard_rule if {
	count(findings(t.role("Role", "all", t.everything))) == 0
}

test_bootstrapped_roles_are_skipped if {
	count(findings(t.bootstrapped("system:controller:clusterrole-aggregation-controller", [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]}]))) == 0
}

test_second_rule_is_located if {
	deny := findings(t.role("Role", "two", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["bind"]}]))
	{v.path | some v in deny} == {"rules[1].verbs[0]"}
}
