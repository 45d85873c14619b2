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


deny contains v if {
	data.keycard.pss.lib.version >= 35
	some c in data.keycard.pss.lib.containers
	pm := c.sc.procMount
	pm != null
	pm != "Default"
	v := {
		"msg": sprintf("%s must not set securityContext.procMount to %q", [data.keycard.pss.lib.container_label(c), pm]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.procMount"),
		"value": pm,
	}
}
