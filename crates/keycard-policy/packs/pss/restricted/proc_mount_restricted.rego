# METADATA
# title: /proc mount type (restricted)
# description: >-
#   From v1.35 the baseline level lets pods in a user namespace unmask /proc;
#   the restricted level keeps requiring the default, masked /proc mount for
#   every pod.
# custom:
#   id: pss-restricted-proc-mount
#   severity: medium
#   scope: pod
#   remediation: >-
#     Remove securityContext.procMount or set it to Default on every container.
#   controls:
#     cis: ["5.7.3"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.restricted.proc_mount_restricted

import data.keycard.pss.lib

deny contains finding if {
	some i
	input.pss_version >= 35
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	proc_mount := ctr.securityContext.procMount
	not proc_mount in {"Default", null}
	finding := lib.finding(
		sprintf("%s must not set securityContext.procMount to %v", [lib.container_label(kind, ctr), proc_mount]),
		lib.container_path(kind, i, "securityContext.procMount"),
		proc_mount,
	)
}
