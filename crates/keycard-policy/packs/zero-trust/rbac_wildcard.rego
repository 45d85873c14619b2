# METADATA
# title: No wildcards in Roles and ClusterRoles
# description: >-
#   A "*" in verbs, resources, apiGroups or nonResourceURLs grants everything
#   that exists today and everything added later (new CRDs, new subresources
#   such as pods/exec), so nobody can say what the role allows: the opposite
#   of least privilege. Kubernetes' own bootstrapped ClusterRoles (named in the
#   rbac_exempt_cluster_roles parameter and labelled
#   kubernetes.io/bootstrapping=rbac-defaults) are skipped.
# custom:
#   id: zt-rbac-wildcard
#   severity: high
#   scope: object
#   kinds: [Role, ClusterRole]
#   remediation: >-
#     List the exact apiGroups, resources and verbs the subject needs (keycard
#     assess shows what each identity actually does); split broad roles into
#     narrow ones.
#   controls:
#     cis: ["5.1.3"]
#     nsa: ["Authentication and authorization"]
#     iso27001: ["A.5.15", "A.5.18", "A.8.2"]
#     soc2: ["CC6.1", "CC6.3"]
package keycard.zt.rbac_wildcard

import data.keycard.zt.lib
import data.keycard.zt.lib.builtin_cluster_role
import data.keycard.zt.lib.kind
import data.keycard.zt.lib.object_label
import data.keycard.zt.lib.role_rules

deny contains v if {
	kind in {"Role", "ClusterRole"}
	not builtin_cluster_role
	some i, rule in role_rules
	is_object(rule)
	some field in ["apiGroups", "resources", "verbs", "nonResourceURLs"]
	some j, item in lib.arr(rule, field)
	wildcard(field, item)
	v := {
		"msg": sprintf("%s grants %s %q in rules[%d]", [object_label, field, item, i]),
		"path": sprintf("rules[%d].%s[%d]", [i, field, j]),
		"value": item,
	}
}

wildcard(_, item) if item == "*"

# Subresource wildcards (pods/*, */scale) are wildcards too.
wildcard(field, item) if {
	field == "resources"
	is_string(item)
	item != "*"
	contains(item, "*")
}
