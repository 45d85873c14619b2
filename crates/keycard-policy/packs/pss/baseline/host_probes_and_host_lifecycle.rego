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


# The probes and lifecycle hooks of a container, as [path, handler] pairs;
# absent ones are empty objects.
handlers(ctr) := array.concat(
	[[probe, data.keycard.pss.lib.obj(ctr, probe)] | some probe in ["livenessProbe", "readinessProbe", "startupProbe"]],
	[[concat(".", ["lifecycle", hook]), data.keycard.pss.lib.obj(data.keycard.pss.lib.obj(ctr, "lifecycle"), hook)] | some hook in ["postStart", "preStop"]],
)

deny contains v if {
	data.keycard.pss.lib.version >= 34
	some c in data.keycard.pss.lib.containers
	some [name, handler] in handlers(c.container)
	some action in ["httpGet", "tcpSocket"]
	host := data.keycard.pss.lib.str(data.keycard.pss.lib.obj(handler, action), "host")
	host != ""
	path := concat(".", [name, action, "host"])
	v := {
		"msg": sprintf("%s must not set %s", [data.keycard.pss.lib.container_label(c), path]),
		"path": data.keycard.pss.lib.container_path(c, path),
		"value": host,
	}
}
