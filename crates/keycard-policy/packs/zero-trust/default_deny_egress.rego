# METADATA
# title: Every namespace has a default-deny egress NetworkPolicy
# description: >-
#   Assume breach: a compromised pod that may open connections anywhere can
#   move laterally, reach cloud metadata endpoints and exfiltrate data.
#   Egress is isolated only by a policy that lists Egress in policyTypes; a
#   default-deny egress policy (empty podSelector, policyTypes including
#   Egress, no egress rules or only rules limited to port 53 for DNS) makes
#   every outbound flow explicit. Reported separately from ingress, at a lower
#   severity, because egress baselines usually follow ingress ones; reported
#   on the same object and with the same exemptions as
#   zt-default-deny-ingress.
# custom:
#   id: zt-default-deny-egress
#   severity: medium
#   scope: object
#   remediation: >-
#     Add to the namespace a NetworkPolicy with spec.podSelector: {},
#     policyTypes: [Egress] and either no egress rules or only one that
#     allows port 53 to the cluster DNS, then allow each needed outbound flow
#     with its own narrow policy.
#   controls:
#     cis: ["5.3.2"]
#     nsa: ["Network separation and hardening: network policies"]
#     iso27001: ["A.8.20", "A.8.22"]
#     soc2: ["CC6.6", "CC6.7"]
package keycard.zt.default_deny_egress

import data.keycard.zt.lib
import data.keycard.zt.lib.namespace_finding_path
import data.keycard.zt.lib.reported_namespace

deny contains v if {
	ns := reported_namespace
	not ns in lib.param_list("network_policy_exempt_namespaces")
	not denied(ns)
	v := {
		"msg": sprintf("%s has no default-deny egress NetworkPolicy (podSelector: {}, policyTypes including Egress, no egress rules but DNS)", [lib.namespace_label(ns)]),
		"path": namespace_finding_path,
		"value": ns,
	}
}

denied(ns) if {
	some np in lib.namespace_policies(ns)
	lib.denies_egress_but_dns(np)
}
