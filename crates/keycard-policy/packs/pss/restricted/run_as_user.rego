# METADATA
# title: Run as non-root user ID
# description: >-
#   The restricted level forbids running as user ID 0 (root) from v1.23,
#   except from v1.35 for pods in their own user namespace.
# custom:
#   id: pss-restricted-run-as-user
#   severity: medium
#   scope: pod
#   remediation: >-
#     Remove runAsUser: 0 from the pod and container securityContexts, or set
#     a non-zero user ID.
#   controls:
#     cis: ["5.2.7"]
#     nsa: ["Non-root containers", "Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.restricted.run_as_user


applies if {
	data.keycard.pss.lib.version >= 23
	data.keycard.pss.lib.version < 35
}

applies if {
	data.keycard.pss.lib.version >= 35
	not data.keycard.pss.lib.user_namespace
}

deny contains v if {
	applies
	data.keycard.pss.lib.pod_sc.runAsUser == 0
	v := {
		"msg": "pod must not set securityContext.runAsUser=0",
		"path": "spec.securityContext.runAsUser",
		"value": 0,
	}
}

deny contains v if {
	applies
	some c in data.keycard.pss.lib.containers
	c.sc.runAsUser == 0
	v := {
		"msg": sprintf("%s must not set securityContext.runAsUser=0", [data.keycard.pss.lib.container_label(c)]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.runAsUser"),
		"value": 0,
	}
}
