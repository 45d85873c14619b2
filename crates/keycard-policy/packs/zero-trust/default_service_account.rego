# METADATA
# title: No workloads on the default service account
# description: >-
#   Every pod that names no service account runs as its namespace's
#   "default" account, so unrelated workloads share one identity: a
#   permission granted for one is granted to all, audit logs cannot tell them
#   apart, and keycard's workload identities (derived from the service
#   account) collapse into one. Each workload needs its own account.
# custom:
#   id: zt-default-service-account
#   severity: medium
#   scope: pod
#   remediation: >-
#     Create a dedicated ServiceAccount for the workload (with
#     automountServiceAccountToken: false unless it calls the API) and set
#     spec.serviceAccountName to it in the pod template.
#   controls:
#     cis: ["5.1.5"]
#     nsa: ["Authentication and authorization"]
#     iso27001: ["A.5.16", "A.8.2"]
#     soc2: ["CC6.1", "CC6.2"]
package keycard.zt.default_service_account

import data.keycard.zt.lib
import data.keycard.zt.lib.has_pod
import data.keycard.zt.lib.spec

deny contains v if {
	has_pod
	name := lib.str(spec, "serviceAccountName")
	name == ""
	legacy := lib.str(spec, "serviceAccount")
	legacy in {"", "default"}
	v := {
		"msg": "pod names no service account, so it runs as the namespace's default account",
		"path": "spec.serviceAccountName",
		"value": object.get(spec, "serviceAccountName", null),
	}
}

deny contains v if {
	has_pod
	spec.serviceAccountName == "default"
	v := {
		"msg": "pod runs as the namespace's default service account",
		"path": "spec.serviceAccountName",
		"value": "default",
	}
}
