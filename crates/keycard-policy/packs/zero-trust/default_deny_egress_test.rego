package keycard.zt.default_deny_egress_test

import data.keycard.zt.default_deny_egress
import data.keycard.zt.default_deny_ingress_test as t
import data.keycard.zt.fixtures_test as f

findings(obj, objects) := d if {
	inp1 := f.plain(obj)
	inv2 := t.inventory(objects)
	d := default_deny_egress.deny with input as inp1 with data.keycard.inventory as inv2
}

dns := {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}], "to": [{"namespaceSelector": {}}]}

test_deny_all_egress_passes if {
	objects := [t.namespace("shop"), t.policy("shop", {"podSelector": {}, "policyTypes": ["Egress"]})]
	count(findings(t.namespace("shop"), objects)) == 0
}

test_dns_only_exception_passes if {
	objects := [t.namespace("shop"), t.policy("shop", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [dns]})]
	count(findings(t.namespace("shop"), objects)) == 0
}

test_implied_egress_type_with_dns_rule_passes if {
	objects := [t.namespace("shop"), t.policy("shop", {"podSelector": {}, "egress": [dns]})]
	count(findings(t.namespace("shop"), objects)) == 0
}

test_missing_fires if {
	findings(t.namespace("shop"), [t.namespace("shop"), t.deny_ingress("shop")]) == {{
		"msg": `namespace "shop" has no default-deny egress NetworkPolicy (podSelector: {}, policyTypes including Egress, no egress rules but DNS)`,
		"path": "metadata.name",
		"value": "shop",
	}}
}

test_allow_all_egress_fires if {
	objects := [t.namespace("shop"), t.policy("shop", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})]
	count(findings(t.namespace("shop"), objects)) == 1
}

test_rule_beyond_dns_fires if {
	https := {"ports": [{"port": 443}]}
	objects := [t.namespace("shop"), t.policy("shop", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [dns, https]})]
	count(findings(t.namespace("shop"), objects)) == 1
}

test_rule_without_ports_fires if {
	objects := [t.namespace("shop"), t.policy("shop", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {}}]}]})]
	count(findings(t.namespace("shop"), objects)) == 1
}

test_first_object_fallback if {
	first := f.good.object
	some v in findings(first, [first])
	v.path == "metadata.namespace"
	v.value == "shop"
}

test_exemption_parameter if {
	inp := f.with_params(f.plain(t.namespace("shop")), {"network_policy_exempt_namespaces": ["shop"]})
	inv3 := t.inventory([])
	count(default_deny_egress.deny) == 0 with input as inp with data.keycard.inventory as inv3
}
