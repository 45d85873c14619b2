# METADATA
# title: Capabilities
# description: >-
#   The restricted level requires every container to drop all Linux
#   capabilities and add back at most NET_BIND_SERVICE (from v1.22; Linux pods
#   only from v1.25).
# custom:
#   id: pss-restricted-capabilities
#   severity: medium
#   scope: pod
#   remediation: >-
#     Set securityContext.capabilities.drop to ["ALL"] on every container and
#     add back nothing but NET_BIND_SERVICE.
#   controls:
#     cis: ["5.2.8", "5.2.9", "5.2.10"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.restricted.capabilities_restricted


applies if {
	data.keycard.pss.lib.version >= 22
	data.keycard.pss.lib.version < 25
}

applies if {
	data.keycard.pss.lib.version >= 25
	not data.keycard.pss.lib.windows
}

deny contains v if {
	applies
	some c in data.keycard.pss.lib.containers
	drop := data.keycard.pss.lib.arr(data.keycard.pss.lib.obj(c.sc, "capabilities"), "drop")
	not "ALL" in drop
	v := {
		"msg": sprintf("%s must set securityContext.capabilities.drop=[\"ALL\"]", [data.keycard.pss.lib.container_label(c)]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.capabilities.drop"),
		"value": object.get(data.keycard.pss.lib.obj(c.sc, "capabilities"), "drop", null),
	}
}

deny contains v if {
	applies
	some c in data.keycard.pss.lib.containers
	some j, cap in data.keycard.pss.lib.arr(data.keycard.pss.lib.obj(c.sc, "capabilities"), "add")
	cap != "NET_BIND_SERVICE"
	v := {
		"msg": sprintf("%s must not add capability %v", [data.keycard.pss.lib.container_label(c), cap]),
		"path": data.keycard.pss.lib.container_path(c, sprintf("securityContext.capabilities.add[%d]", [j])),
		"value": cap,
	}
}
