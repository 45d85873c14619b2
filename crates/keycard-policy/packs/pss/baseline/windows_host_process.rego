# METADATA
# title: Windows HostProcess
# description: >-
#   Windows HostProcess containers run directly on the host with
#   administrator-level access; the baseline level forbids them.
# custom:
#   id: pss-baseline-windows-host-process
#   severity: critical
#   scope: pod
#   remediation: >-
#     Remove securityContext.windowsOptions.hostProcess or set it to false on
#     the pod and on every container.
#   controls:
#     cis: ["5.2.11"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.windows_host_process

import data.keycard.pss.lib

deny contains finding if {
	input.pod.spec.securityContext.windowsOptions.hostProcess == true
	finding := lib.finding(
		"pod must not set securityContext.windowsOptions.hostProcess=true",
		"spec.securityContext.windowsOptions.hostProcess",
		true,
	)
}

deny contains finding if {
	some i
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	ctr.securityContext.windowsOptions.hostProcess == true
	finding := lib.finding(
		sprintf("%s must not set securityContext.windowsOptions.hostProcess=true", [lib.container_label(kind, ctr)]),
		lib.container_path(kind, i, "securityContext.windowsOptions.hostProcess"),
		true,
	)
}
