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


# Allowed SELinux types, with the version from which each is allowed.
type_since := {
	"": 0,
	"container_t": 0,
	"container_init_t": 0,
	"container_kvm_t": 0,
	"container_engine_t": 31,
}

allowed_type(t) if data.keycard.pss.lib.version >= type_since[t]

# Every seLinuxOptions object in the pod, with its path and an owner label.
options contains [data.keycard.pss.lib.pod_sc.seLinuxOptions, "spec.securityContext.seLinuxOptions", "pod"] if {
	is_object(data.keycard.pss.lib.pod_sc.seLinuxOptions)
}

options contains [opts, data.keycard.pss.lib.container_path(c, "securityContext.seLinuxOptions"), data.keycard.pss.lib.container_label(c)] if {
	some c in data.keycard.pss.lib.containers
	opts := c.sc.seLinuxOptions
	is_object(opts)
}

deny contains v if {
	some [opts, path, who] in options
	t := data.keycard.pss.lib.str(opts, "type")
	not allowed_type(t)
	v := {
		"msg": sprintf("%s must not set seLinuxOptions.type to %q", [who, t]),
		"path": concat(".", [path, "type"]),
		"value": t,
	}
}

deny contains v if {
	some [opts, path, who] in options
	some field in ["user", "role"]
	value := data.keycard.pss.lib.str(opts, field)
	value != ""
	v := {
		"msg": sprintf("%s must not set seLinuxOptions.%s", [who, field]),
		"path": concat(".", [path, field]),
		"value": value,
	}
}
