package keycard.zt.default_deny_ingress_test

import data.keycard.zt.default_deny_ingress
import data.keycard.zt.fixtures_test as f

namespace(name) := {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

policy(ns, spec) := {
	"apiVersion": "networking.k8s.io/v1",
	"kind": "NetworkPolicy",
	"metadata": {"name": "p", "namespace": ns},
	"spec": spec,
}

deny_ingress(ns) := policy(ns, {"podSelector": {}, "policyTypes": ["Ingress"]})

inventory(objects) := {
	"by_kind": {k: [o | some o in objects; o.kind == k] | some k in {o.kind | some o in objects}},
	"namespaces": sort({ns | some o in objects; ns := object.get(o.metadata, "namespace", o.metadata.name)}),
	"first_by_namespace": {ns: first |
		some ns in {n | some o in objects; n := o.metadata.namespace}
		first := [o | some o in objects; o.metadata.namespace == ns][0]
	},
}

findings(obj, objects) := d if {
	inp1 := f.plain(obj)
	inv2 := inventory(objects)
	d := default_deny_ingress.deny with input as inp1 with data.keycard.inventory as inv2
}

test_namespace_with_default_deny_passes if {
	objects := [namespace("shop"), deny_ingress("shop")]
	count(findings(namespace("shop"), objects)) == 0
}

test_namespace_without_policy_fires if {
	findings(namespace("shop"), [namespace("shop")]) == {{
		"msg": `namespace "shop" has no default-deny ingress NetworkPolicy (podSelector: {}, policyTypes including Ingress, no ingress rules)`,
		"path": "metadata.name",
		"value": "shop",
	}}
}

test_policy_in_another_namespace_does_not_count if {
	objects := [namespace("shop"), deny_ingress("other")]
	count(findings(namespace("shop"), objects)) == 1
}

test_implicit_ingress_type_counts if {
	objects := [namespace("shop"), policy("shop", {"podSelector": {}})]
	count(findings(namespace("shop"), objects)) == 0
}

test_empty_selector_forms_count if {
	objects := [namespace("shop"), policy("shop", {"podSelector": {"matchLabels": {}, "matchExpressions": []}, "policyTypes": ["Ingress", "Egress"], "ingress": []})]
	count(findings(namespace("shop"), objects)) == 0
}

test_partial_selector_does_not_count if {
	objects := [namespace("shop"), policy("shop", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]})]
	count(findings(namespace("shop"), objects)) == 1
}

test_allow_rules_do_not_count if {
	# ingress: [{}] allows everything; any rule means it is not a deny-all.
	objects := [namespace("shop"), policy("shop", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]})]
	count(findings(namespace("shop"), objects)) == 1
}

test_egress_only_policy_does_not_count if {
	objects := [namespace("shop"), policy("shop", {"podSelector": {}, "policyTypes": ["Egress"]})]
	count(findings(namespace("shop"), objects)) == 1
}

test_exempt_namespaces_are_skipped if {
	count(findings(namespace("kube-system"), [namespace("kube-system")])) == 0
}

test_namespace_without_object_is_reported_on_its_first_object if {
	first := f.good.object
	svc := {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}}
	objects := [first, svc]
	findings(first, objects) == {{
		"msg": `namespace "shop" (no Namespace object in the input; reported on its first object, Deployment "shop/web") has no default-deny ingress NetworkPolicy (podSelector: {}, policyTypes including Ingress, no ingress rules)`,
		"path": "metadata.namespace",
		"value": "shop",
	}}
	count(findings(svc, objects)) == 0
}

test_first_object_stays_quiet_when_namespace_object_exists if {
	first := f.good.object
	objects := [first, namespace("shop")]
	count(findings(first, objects)) == 0
	count(findings(namespace("shop"), objects)) == 1
}

test_first_object_passes_when_policy_exists if {
	first := f.good.object
	objects := [first, deny_ingress("shop")]
	count(findings(first, objects)) == 0
}

test_cluster_scoped_objects_are_ignored if {
	role := {"kind": "ClusterRole", "metadata": {"name": "r"}}
	count(findings(role, [role])) == 0
}

test_without_inventory_only_namespaces_report if {
	inp3 := f.plain(namespace("shop"))
	count(default_deny_ingress.deny) == 1 with input as inp3
	inp4 := f.good
	count(default_deny_ingress.deny) == 0 with input as inp4
}
