# METADATA
# title: SELinux options
# description: >-
#   A custom SELinux user or role, or a type outside the container types, can
#   lift the confinement SELinux gives containers; the baseline level allows
#   only the standard container types.
# custom:
#   id: pss-baseline-selinux-options
#   severity: medium
#   scope: pod
#   remediation: >-
#     In every seLinuxOptions (pod and containers) remove user and role, and
#     leave type unset or use container_t, container_init_t, container_kvm_t
#     (or container_engine_t from v1.31).
#   controls:
#     cis: ["5.7.3"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.selinux_options

import data.keycard.pss.lib

# Allowed SELinux types, with the version from which each is allowed.
type_since := {
	"": 0,
	"container_t": 0,
	"container_init_t": 0,
	"container_kvm_t": 0,
	"container_engine_t": 31,
}

# A set seLinuxOptions breaks the rules when its type is outside the allowed
# ones for the version, or it sets a user or role (absent or null fields are
# Go's empty string, which is allowed). Yields [field, value] pairs.
violations(opts) := [[field, value] |
	some field in ["type", "user", "role"]
	value := object.get(opts, field, null)
	value != null
	not allowed(field, value)
] if is_object(opts)

allowed(field, value) if {
	field == "type"
	input.pss_version >= type_since[value]
}

allowed(field, value) if {
	field != "type"
	value == ""
}

deny contains finding if {
	opts := input.pod.spec.securityContext.seLinuxOptions
	some [field, value] in violations(opts)
	finding := lib.finding(
		sprintf("pod must not set securityContext.seLinuxOptions.%s to %v", [field, value]),
		sprintf("spec.securityContext.seLinuxOptions.%s", [field]),
		value,
	)
}

deny contains finding if {
	some i
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	opts := ctr.securityContext.seLinuxOptions
	some [field, value] in violations(opts)
	finding := lib.finding(
		sprintf("%s must not set securityContext.seLinuxOptions.%s to %v", [lib.container_label(kind, ctr), field, value]),
		lib.container_path(kind, i, sprintf("securityContext.seLinuxOptions.%s", [field])),
		value,
	)
}
