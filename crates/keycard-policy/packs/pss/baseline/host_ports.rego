# METADATA
# title: Host ports
# description: >-
#   A hostPort binds a port on the node itself, bypassing network policy and
#   limiting scheduling; the baseline level forbids it.
# custom:
#   id: pss-baseline-host-ports
#   severity: medium
#   scope: pod
#   remediation: >-
#     Remove hostPort (or set it to 0) from every container port and expose
#     the workload through a Service.
#   controls:
#     cis: ["5.2.13"]
#     nsa: ["Pod security", "Network separation"]
#     iso27001: ["A.8.9", "A.8.22"]
#     soc2: ["CC6.1", "CC6.6"]
package keycard.pss.baseline.host_ports


deny contains v if {
	some c in data.keycard.pss.lib.containers
	some j, port in data.keycard.pss.lib.arr(c.container, "ports")
	hp := port.hostPort
	hp != null
	hp != 0
	v := {
		"msg": sprintf("%s must not use hostPort %v", [data.keycard.pss.lib.container_label(c), hp]),
		"path": data.keycard.pss.lib.container_path(c, sprintf("ports[%d].hostPort", [j])),
		"value": hp,
	}
}
