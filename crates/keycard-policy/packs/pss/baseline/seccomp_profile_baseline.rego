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

import data.keycard.pss.lib

pod_annotation := "seccomp.security.alpha.kubernetes.io/pod"

container_annotation_prefix := "container.seccomp.security.alpha.kubernetes.io/"

allowed_types := {"RuntimeDefault", "Localhost"}

allowed_annotation(value) if value in {"runtime/default", "docker/default"}

allowed_annotation(value) if {
	is_string(value)
	startswith(value, "localhost/")
}

# The fields apply from v1.19 (the annotations before), except at the
# restricted level, where seccomp_profile_restricted supersedes this check.
fields_apply if {
	input.pss_version >= 19
	input.pss_level != "restricted"
}

# v1.0 to v1.18: the annotations.
deny contains finding if {
	input.pss_version < 19
	value := input.pod.metadata.annotations[pod_annotation]
	not allowed_annotation(value)
	finding := lib.finding(
		sprintf("annotation %s must not be %v", [pod_annotation, value]),
		lib.annotation_path(pod_annotation),
		value,
	)
}

deny contains finding if {
	input.pss_version < 19
	annotations := input.pod.metadata.annotations
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][_]
	key := concat("", [container_annotation_prefix, ctr.name])
	value := annotations[key]
	not allowed_annotation(value)
	finding := lib.finding(
		sprintf("annotation %s must not be %v", [key, value]),
		lib.annotation_path(key),
		value,
	)
}

# v1.19 and later: the securityContext fields. A profile without a type (or a
# null one) has Go's empty string as type, which is not allowed.
deny contains finding if {
	fields_apply
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
	fields_apply
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
