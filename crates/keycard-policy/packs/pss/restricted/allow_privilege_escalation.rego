# METADATA
# title: Privilege escalation
# description: >-
#   Without allowPrivilegeEscalation=false a process can gain more privileges
#   than its parent (set-user-ID binaries, file capabilities); the restricted
#   level requires every container to forbid it (Linux pods only from v1.25).
# custom:
#   id: pss-restricted-allow-privilege-escalation
#   severity: medium
#   scope: pod
#   remediation: >-
#     Set securityContext.allowPrivilegeEscalation to false on every container,
#     init container and ephemeral container.
#   controls:
#     cis: ["5.2.6"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.restricted.allow_privilege_escalation

import data.keycard.pss.lib

# Linux-only: from v1.25 pods with spec.os.name=windows are exempt.
applies if {
	input.pss_version >= 8
	input.pss_version < 25
}

applies if {
	input.pss_version >= 25
	not windows
}

windows if input.pod.spec.os.name == "windows"

# Unset (or null) counts as allowed: it must be explicitly false.
deny contains finding if {
	some i
	applies
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	value := object.get(ctr, ["securityContext", "allowPrivilegeEscalation"], null)
	value != false
	finding := lib.finding(
		sprintf("%s must set securityContext.allowPrivilegeEscalation=false", [lib.container_label(kind, ctr)]),
		lib.container_path(kind, i, "securityContext.allowPrivilegeEscalation"),
		value,
	)
}
