# METADATA
# title: No privilege escalation
# description: >-
#   Unless allowPrivilegeEscalation is explicitly false, a process can gain
#   more privileges than its parent through setuid binaries or file
#   capabilities, which turns an application bug into root in the container.
#   Leaving the field unset counts: the runtime's default allows escalation.
#   Every container counts, ephemeral ones included; Windows pods are exempt.
# custom:
#   id: zt-privilege-escalation
#   severity: high
#   scope: pod
#   remediation: >-
#     Set securityContext.allowPrivilegeEscalation: false on every container,
#     init container and ephemeral container (and do not run it privileged or
#     with CAP_SYS_ADMIN, which force escalation on).
#   controls:
#     cis: ["5.2.6"]
#     nsa: ["Pod security: non-root containers"]
#     iso27001: ["A.8.2"]
#     soc2: ["CC6.1", "CC6.3"]
package keycard.zt.privilege_escalation

import data.keycard.zt.lib
import data.keycard.zt.lib.containers
import data.keycard.zt.lib.windows

deny contains v if {
	not windows
	some c in containers
	value := object.get(c.sc, "allowPrivilegeEscalation", null)
	value != false
	v := {
		"msg": sprintf("%s must set securityContext.allowPrivilegeEscalation=false", [lib.container_label(c)]),
		"path": lib.container_path(c, "securityContext.allowPrivilegeEscalation"),
		"value": value,
	}
}
