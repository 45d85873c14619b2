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


annotation_prefix := "container.apparmor.security.beta.kubernetes.io/"

allowed_types := {"RuntimeDefault", "Localhost"}

allowed_annotation(value) if value == ""

allowed_annotation(value) if value == "runtime/default"

allowed_annotation(value) if {
	is_string(value)
	startswith(value, "localhost/")
}

deny contains v if {
	profile := data.keycard.pss.lib.pod_sc.appArmorProfile
	is_object(profile)
	t := data.keycard.pss.lib.str(profile, "type")
	not t in allowed_types
	v := {
		"msg": sprintf("pod must not set securityContext.appArmorProfile.type to %q", [t]),
		"path": "spec.securityContext.appArmorProfile.type",
		"value": t,
	}
}

deny contains v if {
	some c in data.keycard.pss.lib.containers
	profile := c.sc.appArmorProfile
	is_object(profile)
	t := data.keycard.pss.lib.str(profile, "type")
	not t in allowed_types
	v := {
		"msg": sprintf("%s must not set securityContext.appArmorProfile.type to %q", [data.keycard.pss.lib.container_label(c), t]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.appArmorProfile.type"),
		"value": t,
	}
}

deny contains v if {
	some key, value in data.keycard.pss.lib.obj(data.keycard.pss.lib.metadata, "annotations")
	startswith(key, annotation_prefix)
	not allowed_annotation(value)
	v := {
		"msg": sprintf("annotation %s must be runtime/default or localhost/<profile>, not %q", [key, value]),
		"path": data.keycard.pss.lib.annotation_path(key),
		"value": value,
	}
}
