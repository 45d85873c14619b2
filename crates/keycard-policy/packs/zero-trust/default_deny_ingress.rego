# METADATA
# title: Every namespace has a default-deny ingress NetworkPolicy
# description: >-
#   Without a NetworkPolicy that selects every pod, pods accept traffic from
#   anywhere in the cluster: east-west traffic is flat and one compromised
#   pod can reach every service. A default-deny ingress policy per namespace
#   (empty podSelector, policyTypes including Ingress, no ingress rules)
#   makes every allowed flow an explicit, reviewable policy. The finding is
#   reported on the Namespace object, or on the namespace's first object in
#   the input when the input has no Namespace object for it; namespaces in
#   the network_policy_exempt_namespaces parameter are skipped.
# custom:
#   id: zt-default-deny-ingress
#   severity: high
#   scope: object
#   remediation: >-
#     Add to the namespace a NetworkPolicy with spec.podSelector: {},
#     policyTypes: [Ingress] and no ingress rules, then allow each needed flow
#     with its own narrow policy (keycard can propose them from observed
#     traffic).
#   controls:
#     cis: ["5.3.2"]
#     nsa: ["Network separation and hardening: network policies"]
#     iso27001: ["A.8.20", "A.8.22"]
#     soc2: ["CC6.6"]
package keycard.zt.default_deny_ingress

import data.keycard.zt.lib
import data.keycard.zt.lib.namespace_finding_path
import data.keycard.zt.lib.reported_namespace

deny contains v if {
	ns := reported_namespace
	not ns in lib.param_list("network_policy_exempt_namespaces")
	not denied(ns)
	v := {
		"msg": sprintf("%s has no default-deny ingress NetworkPolicy (podSelector: {}, policyTypes including Ingress, no ingress rules)", [lib.namespace_label(ns)]),
		"path": namespace_finding_path,
		"value": ns,
	}
}

denied(ns) if {
	some np in lib.namespace_policies(ns)
	lib.denies_all_ingress(np)
}
