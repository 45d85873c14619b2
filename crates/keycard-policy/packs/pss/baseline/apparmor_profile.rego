# METADATA
# title: AppArmor profile
# description: >-
#   AppArmor confines what a container may do on hosts that support it; the
#   baseline level forbids disabling it or replacing the runtime's default
#   with anything but a profile loaded on the node.
# custom:
#   id: pss-baseline-apparmor-profile
#   severity: medium
#   scope: pod
#   remediation: >-
#     Set securityContext.appArmorProfile.type to RuntimeDefault or Localhost
#     (or leave it unset), and remove container.apparmor.security.beta.kubernetes.io
#     annotations whose value is not runtime/default or localhost/<profile>.
#   controls:
#     cis: ["5.7.3"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.apparmor_profile

import data.keycard.pss.lib

annotation_prefix := "container.apparmor.security.beta.kubernetes.io/"

allowed_types := {"RuntimeDefault", "Localhost"}

allowed_annotation(value) if value in {"", "runtime/default"}

allowed_annotation(value) if {
	is_string(value)
	startswith(value, "localhost/")
}

# A profile without a type (or a null one) has Go's empty string as type,
# which is not allowed.
deny contains finding if {
	profile := input.pod.spec.securityContext.appArmorProfile
	is_object(profile)
	t := object.get(profile, "type", "")
	not t in allowed_types
	finding := lib.finding(
		sprintf("pod must not set securityContext.appArmorProfile.type to %v", [t]),
		"spec.securityContext.appArmorProfile.type",
		t,
	)
}

deny contains finding if {
	some i
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	profile := ctr.securityContext.appArmorProfile
	is_object(profile)
	t := object.get(profile, "type", "")
	not t in allowed_types
	finding := lib.finding(
		sprintf("%s must not set securityContext.appArmorProfile.type to %v", [lib.container_label(kind, ctr), t]),
		lib.container_path(kind, i, "securityContext.appArmorProfile.type"),
		t,
	)
}

deny contains finding if {
	some key
	value := input.pod.metadata.annotations[key]
	startswith(key, annotation_prefix)
	not allowed_annotation(value)
	finding := lib.finding(
		sprintf("annotation %s must be runtime/default or localhost/<profile>, not %v", [key, value]),
		lib.annotation_path(key),
		value,
	)
}
