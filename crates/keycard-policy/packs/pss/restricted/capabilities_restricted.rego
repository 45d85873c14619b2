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

import data.keycard.pss.lib

# Linux-only: from v1.25 pods with spec.os.name=windows are exempt.
applies if {
	input.pss_version >= 22
	input.pss_version < 25
}

applies if {
	input.pss_version >= 25
	not windows
}

windows if input.pod.spec.os.name == "windows"

deny contains finding if {
	some i
	applies
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	drop := object.get(ctr, ["securityContext", "capabilities", "drop"], null)
	not drops_all(drop)
	finding := lib.finding(
		sprintf("%s must set securityContext.capabilities.drop=[\"ALL\"]", [lib.container_label(kind, ctr)]),
		lib.container_path(kind, i, "securityContext.capabilities.drop"),
		drop,
	)
}

drops_all(drop) if {
	is_array(drop)
	"ALL" in drop
}

deny contains finding if {
	some i, j
	applies
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	capability := ctr.securityContext.capabilities.add[j]
	capability != "NET_BIND_SERVICE"
	finding := lib.finding(
		sprintf("%s must not add capability %v", [lib.container_label(kind, ctr), capability]),
		lib.container_path(kind, i, sprintf("securityContext.capabilities.add[%d]", [j])),
		capability,
	)
}
