# METADATA
# title: Seccomp profile (restricted)
# description: >-
#   From v1.19 the restricted level requires a seccomp profile (RuntimeDefault
#   or Localhost) on the pod or on every container, so that system calls are
#   always filtered (Linux pods only from v1.25).
# custom:
#   id: pss-restricted-seccomp-profile
#   severity: medium
#   scope: pod
#   remediation: >-
#     Set spec.securityContext.seccompProfile.type to RuntimeDefault (or
#     Localhost with a profile), and do not override it with Unconfined on any
#     container.
#   controls:
#     cis: ["5.7.2"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.restricted.seccomp_profile_restricted

import data.keycard.pss.lib

allowed_types := {"RuntimeDefault", "Localhost"}

# Linux-only: from v1.25 pods with spec.os.name=windows are exempt.
applies if {
	input.pss_version >= 19
	input.pss_version < 25
}

applies if {
	input.pss_version >= 25
	not windows
}

windows if input.pod.spec.os.name == "windows"

# The pod sets an allowed profile, which containers without one inherit.
pod_allowed if input.pod.spec.securityContext.seccompProfile.type in allowed_types

# A profile without a type (or a null one) has Go's empty string as type,
# which is not allowed.
deny contains finding if {
	applies
	profile := input.pod.spec.securityContext.seccompProfile
	is_object(profile)
	t := object.get(profile, "type", "")
	not t in allowed_types
	finding := lib.finding(
		sprintf("pod must not set securityContext.seccompProfile.type to %v", [t]),
		"spec.securityContext.seccompProfile.type",
		t,
	)
}

deny contains finding if {
	some i
	applies
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	profile := ctr.securityContext.seccompProfile
	is_object(profile)
	t := object.get(profile, "type", "")
	not t in allowed_types
	finding := lib.finding(
		sprintf("%s must not set securityContext.seccompProfile.type to %v", [lib.container_label(kind, ctr), t]),
		lib.container_path(kind, i, "securityContext.seccompProfile.type"),
		t,
	)
}

deny contains finding if {
	some i
	applies
	not pod_allowed
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	object.get(ctr, ["securityContext", "seccompProfile"], null) == null
	finding := lib.finding(
		sprintf("pod or %s must set securityContext.seccompProfile.type to RuntimeDefault or Localhost", [lib.container_label(kind, ctr)]),
		lib.container_path(kind, i, "securityContext.seccompProfile"),
		null,
	)
}
