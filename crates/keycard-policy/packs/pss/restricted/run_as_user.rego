# METADATA
# title: Run as non-root user ID
# description: >-
#   The restricted level forbids running as user ID 0 (root) from v1.23,
#   except from v1.35 for pods in their own user namespace.
# custom:
#   id: pss-restricted-run-as-user
#   severity: medium
#   scope: pod
#   remediation: >-
#     Remove runAsUser: 0 from the pod and container securityContexts, or set
#     a non-zero user ID.
#   controls:
#     cis: ["5.2.7"]
#     nsa: ["Non-root containers", "Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.restricted.run_as_user

import data.keycard.pss.lib

applies if {
	input.pss_version >= 23
	input.pss_version < 35
}

# From v1.35 pods in their own user namespace (hostUsers=false) are exempt.
applies if {
	input.pss_version >= 35
	not user_namespace
}

user_namespace if input.pod.spec.hostUsers == false

deny contains finding if {
	input.pod.spec.securityContext.runAsUser == 0
	applies
	finding := lib.finding(
		"pod must not set securityContext.runAsUser=0",
		"spec.securityContext.runAsUser",
		0,
	)
}

deny contains finding if {
	some i
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	ctr.securityContext.runAsUser == 0
	applies
	finding := lib.finding(
		sprintf("%s must not set securityContext.runAsUser=0", [lib.container_label(kind, ctr)]),
		lib.container_path(kind, i, "securityContext.runAsUser"),
		0,
	)
}
