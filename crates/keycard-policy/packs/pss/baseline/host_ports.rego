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

import data.keycard.pss.lib

deny contains finding if {
	some i, j
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	port := ctr.ports[j]
	host_port := port.hostPort
	not host_port in {0, null}
	finding := lib.finding(
		sprintf("%s must not use hostPort %v", [lib.container_label(kind, ctr), host_port]),
		lib.container_path(kind, i, sprintf("ports[%d].hostPort", [j])),
		host_port,
	)
}
