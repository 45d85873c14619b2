# METADATA
# title: Added capabilities
# description: >-
#   Linux capabilities beyond the container runtime's default set (for example
#   NET_RAW, SYS_ADMIN) widen the kernel attack surface; the baseline level
#   only allows adding capabilities from that default set.
# custom:
#   id: pss-baseline-capabilities
#   severity: high
#   scope: pod
#   remediation: >-
#     Remove from securityContext.capabilities.add every capability other than
#     AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD,
#     NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID and SYS_CHROOT.
#   controls:
#     cis: ["5.2.8", "5.2.9"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.capabilities_baseline

import data.keycard.pss.lib

# The container runtime's default capability set.
allowed := {
	"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}

# From v1.22 the restricted level's capabilities check supersedes this one.
superseded if {
	input.pss_level == "restricted"
	input.pss_version >= 22
}

deny contains finding if {
	some i, j
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	capability := ctr.securityContext.capabilities.add[j]
	not capability in allowed
	not superseded
	finding := lib.finding(
		sprintf("%s must not add capability %v", [lib.container_label(kind, ctr), capability]),
		lib.container_path(kind, i, sprintf("securityContext.capabilities.add[%d]", [j])),
		capability,
	)
}
