# METADATA
# title: Run as non-root
# description: >-
#   The restricted level requires containers to run as a non-root user, set
#   with runAsNonRoot=true on the pod or on every container (not required from
#   v1.35 for pods in their own user namespace).
# custom:
#   id: pss-restricted-run-as-non-root
#   severity: medium
#   scope: pod
#   remediation: >-
#     Set spec.securityContext.runAsNonRoot to true (or set it on every
#     container) and make sure no container sets it to false.
#   controls:
#     cis: ["5.2.7"]
#     nsa: ["Non-root containers", "Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.restricted.run_as_non_root


exempt if {
	data.keycard.pss.lib.version >= 35
	data.keycard.pss.lib.user_namespace
}

pod_value := object.get(data.keycard.pss.lib.pod_sc, "runAsNonRoot", null)

deny contains v if {
	not exempt
	pod_value == false
	v := {
		"msg": "pod must not set securityContext.runAsNonRoot=false",
		"path": "spec.securityContext.runAsNonRoot",
		"value": false,
	}
}

deny contains v if {
	not exempt
	some c in data.keycard.pss.lib.containers
	value := object.get(c.sc, "runAsNonRoot", null)
	value == false
	v := {
		"msg": sprintf("%s must not set securityContext.runAsNonRoot=false", [data.keycard.pss.lib.container_label(c)]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.runAsNonRoot"),
		"value": false,
	}
}

# A container that leaves runAsNonRoot unset inherits the pod's value, which
# must then be true.
deny contains v if {
	not exempt
	pod_value != true
	some c in data.keycard.pss.lib.containers
	object.get(c.sc, "runAsNonRoot", null) == null
	v := {
		"msg": sprintf("pod or %s must set securityContext.runAsNonRoot=true", [data.keycard.pss.lib.container_label(c)]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.runAsNonRoot"),
		"value": null,
	}
}
