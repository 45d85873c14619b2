# METADATA
# title: Host field in probes and lifecycle hooks
# description: >-
#   A probe or lifecycle hook with a host field makes the kubelet connect to an
#   arbitrary address, which can be abused to reach services on the node's
#   network; the baseline level forbids it from v1.34.
# custom:
#   id: pss-baseline-host-probes-and-host-lifecycle
#   severity: medium
#   scope: pod
#   remediation: >-
#     Remove the host field from httpGet and tcpSocket in liveness, readiness
#     and startup probes and in postStart and preStop hooks, so that they
#     target the pod's own IP.
#   controls:
#     cis: []
#     nsa: ["Pod security", "Network separation"]
#     iso27001: ["A.8.9", "A.8.22"]
#     soc2: ["CC6.1", "CC6.6"]
package keycard.pss.baseline.host_probes_and_host_lifecycle

import data.keycard.pss.lib

deny contains finding if {
	some i
	input.pss_version >= 34
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	some handler in ["livenessProbe", "readinessProbe", "startupProbe"]
	probe := ctr[handler]
	some action in ["httpGet", "tcpSocket"]
	host := probe[action].host
	not host in {"", null}
	finding := host_finding(kind, i, ctr, concat(".", [handler, action, "host"]), host)
}

# TCPSocket is no longer a supported lifecycle handler, but old objects may
# still carry one, and its host is as dangerous.
deny contains finding if {
	some i
	input.pss_version >= 34
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	some handler in ["postStart", "preStop"]
	hook := ctr.lifecycle[handler]
	some action in ["httpGet", "tcpSocket"]
	host := hook[action].host
	not host in {"", null}
	finding := host_finding(kind, i, ctr, concat(".", ["lifecycle", handler, action, "host"]), host)
}

host_finding(kind, i, ctr, path, host) := lib.finding(
	sprintf("%s must not set %s", [lib.container_label(kind, ctr), path]),
	lib.container_path(kind, i, path),
	host,
)
