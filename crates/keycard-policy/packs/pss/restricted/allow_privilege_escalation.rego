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


applies if {
	data.keycard.pss.lib.version >= 8
	data.keycard.pss.lib.version < 25
}

applies if {
	data.keycard.pss.lib.version >= 25
	not data.keycard.pss.lib.windows
}

deny contains v if {
	applies
	some c in data.keycard.pss.lib.containers
	value := object.get(c.sc, "allowPrivilegeEscalation", null)
	value != false
	v := {
		"msg": sprintf("%s must set securityContext.allowPrivilegeEscalation=false", [data.keycard.pss.lib.container_label(c)]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.allowPrivilegeEscalation"),
		"value": value,
	}
}
