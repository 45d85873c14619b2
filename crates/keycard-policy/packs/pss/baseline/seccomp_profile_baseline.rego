# METADATA
# title: Seccomp profile
# description: >-
#   Seccomp filters the system calls a container may make; the baseline level
#   forbids explicitly disabling it (Unconfined), through the securityContext
#   fields from v1.19 and through the legacy annotations before.
# custom:
#   id: pss-baseline-seccomp-profile
#   severity: medium
#   scope: pod
#   remediation: >-
#     Set securityContext.seccompProfile.type to RuntimeDefault or Localhost
#     (or leave it unset); before v1.19 use runtime/default or localhost/<profile>
#     in the seccomp annotations.
#   controls:
#     cis: ["5.7.2"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.seccomp_profile_baseline


pod_annotation := "seccomp.security.alpha.kubernetes.io/pod"

container_annotation_prefix := "container.seccomp.security.alpha.kubernetes.io/"

allowed_types := {"RuntimeDefault", "Localhost"}

allowed_annotation(value) if value == "runtime/default"

allowed_annotation(value) if value == "docker/default"

allowed_annotation(value) if {
	is_string(value)
	startswith(value, "localhost/")
}

# From v1.19 the restricted level's seccomp check supersedes this one.
superseded if {
	data.keycard.pss.lib.restricted
	data.keycard.pss.lib.version >= 19
}

# v1.0 to v1.18: the annotations.
annotations := data.keycard.pss.lib.obj(data.keycard.pss.lib.metadata, "annotations")

deny contains v if {
	data.keycard.pss.lib.version < 19
	value := annotations[pod_annotation]
	not allowed_annotation(value)
	v := {
		"msg": sprintf("annotation %s must not be %q", [pod_annotation, value]),
		"path": data.keycard.pss.lib.annotation_path(pod_annotation),
		"value": value,
	}
}

deny contains v if {
	data.keycard.pss.lib.version < 19
	some c in data.keycard.pss.lib.containers
	key := concat("", [container_annotation_prefix, c.name])
	value := annotations[key]
	not allowed_annotation(value)
	v := {
		"msg": sprintf("annotation %s must not be %q", [key, value]),
		"path": data.keycard.pss.lib.annotation_path(key),
		"value": value,
	}
}

# v1.19 and later: the securityContext fields.
deny contains v if {
	data.keycard.pss.lib.version >= 19
	not superseded
	profile := data.keycard.pss.lib.pod_sc.seccompProfile
	is_object(profile)
	t := data.keycard.pss.lib.str(profile, "type")
	not t in allowed_types
	v := {
		"msg": sprintf("pod must not set securityContext.seccompProfile.type to %q", [t]),
		"path": "spec.securityContext.seccompProfile.type",
		"value": t,
	}
}

deny contains v if {
	data.keycard.pss.lib.version >= 19
	not superseded
	some c in data.keycard.pss.lib.containers
	profile := c.sc.seccompProfile
	is_object(profile)
	t := data.keycard.pss.lib.str(profile, "type")
	not t in allowed_types
	v := {
		"msg": sprintf("%s must not set securityContext.seccompProfile.type to %q", [data.keycard.pss.lib.container_label(c), t]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.seccompProfile.type"),
		"value": t,
	}
}
