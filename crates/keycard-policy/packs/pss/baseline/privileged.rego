# METADATA
# title: Privileged containers
# description: >-
#   Privileged containers disable almost every isolation mechanism and get
#   full access to the host's devices; the baseline level forbids them.
# custom:
#   id: pss-baseline-privileged
#   severity: critical
#   scope: pod
#   remediation: >-
#     Remove securityContext.privileged or set it to false on every container,
#     init container and ephemeral container; grant only the specific
#     capabilities the workload needs instead.
#   controls:
#     cis: ["5.2.2"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.privileged

import data.keycard.pss.lib

deny contains finding if {
	some i
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	ctr.securityContext.privileged == true
	finding := lib.finding(
		sprintf("%s must not set securityContext.privileged=true", [lib.container_label(kind, ctr)]),
		lib.container_path(kind, i, "securityContext.privileged"),
		true,
	)
}
