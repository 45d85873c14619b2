# METADATA
# title: Run as non-root
# description: >-
#   The restricted level requires containers to run as a non-root user, set
#   with runAsNonRoot=true on the pod or on every container (not required from
#   v1.35 for pods in their own user namespace).
# custom:
#   id: pss-restricted-run-as-non-root
#   severity: medium
#   scope: pod
#   remediation: >-
#     Set spec.securityContext.runAsNonRoot to true (or set it on every
#     container) and make sure no container sets it to false.
#   controls:
#     cis: ["5.2.7"]
#     nsa: ["Non-root containers", "Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.restricted.run_as_non_root

import data.keycard.pss.lib

# From v1.35 pods in their own user namespace (hostUsers=false) are exempt.
exempt if {
	input.pss_version >= 35
	input.pod.spec.hostUsers == false
}

# The pod-level value, which containers that leave it unset inherit.
pod_non_root if input.pod.spec.securityContext.runAsNonRoot == true

deny contains finding if {
	input.pod.spec.securityContext.runAsNonRoot == false
	not exempt
	finding := lib.finding(
		"pod must not set securityContext.runAsNonRoot=false",
		"spec.securityContext.runAsNonRoot",
		false,
	)
}

deny contains finding if {
	some i
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	ctr.securityContext.runAsNonRoot == false
	not exempt
	finding := lib.finding(
		sprintf("%s must not set securityContext.runAsNonRoot=false", [lib.container_label(kind, ctr)]),
		lib.container_path(kind, i, "securityContext.runAsNonRoot"),
		false,
	)
}

deny contains finding if {
	some i
	not pod_non_root
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	object.get(ctr, ["securityContext", "runAsNonRoot"], null) == null
	not exempt
	finding := lib.finding(
		sprintf("pod or %s must set securityContext.runAsNonRoot=true", [lib.container_label(kind, ctr)]),
		lib.container_path(kind, i, "securityContext.runAsNonRoot"),
		null,
	)
}
