# METADATA
# title: No escalate, bind or impersonate grants
# description: >-
#   The escalate and bind verbs let a subject create or bind roles with
#   permissions it does not hold itself, and impersonate lets it act as any
#   user, group or service account: each is a path to cluster-admin that
#   RBAC's own escalation checks do not stop. Kubernetes' own bootstrapped
#   ClusterRoles (see zt-rbac-wildcard) are skipped; a "*" verb is reported
#   by zt-rbac-wildcard.
# custom:
#   id: zt-rbac-escalation-verbs
#   severity: high
#   scope: object
#   kinds: [Role, ClusterRole]
#   remediation: >-
#     Remove the escalate, bind and impersonate verbs; let a small, audited
#     automation (or a just-in-time grant) manage RBAC and impersonation
#     instead of a standing permission.
#   controls:
#     cis: ["5.1.8"]
#     nsa: ["Authentication and authorization"]
#     iso27001: ["A.5.18", "A.8.2"]
#     soc2: ["CC6.1", "CC6.3"]
package keycard.zt.rbac_escalation_verbs

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
	some j, verb in lib.arr(rule, "verbs")
	is_string(verb)
	lower(verb) in {"escalate", "bind", "impersonate"}
	v := {
		"msg": sprintf("%s grants the %s verb on %s in rules[%d]", [object_label, verb, resources(rule), i]),
		"path": sprintf("rules[%d].verbs[%d]", [i, j]),
		"value": verb,
	}
}

resources(rule) := concat(", ", names) if {
	names := [r | some r in lib.arr(rule, "resources"); is_string(r)]
	count(names) > 0
} else := "no named resource"
