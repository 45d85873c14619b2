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


allowed_types := {"RuntimeDefault", "Localhost"}

applies if {
	data.keycard.pss.lib.version >= 19
	data.keycard.pss.lib.version < 25
}

applies if {
	data.keycard.pss.lib.version >= 25
	not data.keycard.pss.lib.windows
}

pod_profile := object.get(data.keycard.pss.lib.pod_sc, "seccompProfile", null)

# The pod sets an allowed profile, which containers inherit.
pod_allowed if {
	is_object(pod_profile)
	data.keycard.pss.lib.str(pod_profile, "type") in allowed_types
}

deny contains v if {
	applies
	is_object(pod_profile)
	t := data.keycard.pss.lib.str(pod_profile, "type")
	not t in allowed_types
	v := {
		"msg": sprintf("pod must not set securityContext.seccompProfile.type to %q", [t]),
		"path": "spec.securityContext.seccompProfile.type",
		"value": t,
	}
}

deny contains v if {
	applies
	some c in data.keycard.pss.lib.containers
	profile := object.get(c.sc, "seccompProfile", null)
	is_object(profile)
	t := data.keycard.pss.lib.str(profile, "type")
	not t in allowed_types
	v := {
		"msg": sprintf("%s must not set securityContext.seccompProfile.type to %q", [data.keycard.pss.lib.container_label(c), t]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.seccompProfile.type"),
		"value": t,
	}
}

deny contains v if {
	applies
	not pod_allowed
	some c in data.keycard.pss.lib.containers
	object.get(c.sc, "seccompProfile", null) == null
	v := {
		"msg": sprintf("pod or %s must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"", [data.keycard.pss.lib.container_label(c)]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.seccompProfile.type"),
		"value": null,
	}
}
