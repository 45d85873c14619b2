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


deny contains v if {
	some c in data.keycard.pss.lib.containers
	c.sc.privileged == true
	v := {
		"msg": sprintf("%s must not set securityContext.privileged=true", [data.keycard.pss.lib.container_label(c)]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.privileged"),
		"value": true,
	}
}
