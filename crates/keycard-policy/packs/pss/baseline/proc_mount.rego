# METADATA
# title: /proc mount type
# description: >-
#   The default /proc mount masks kernel paths that leak host information or
#   allow tampering; the baseline level requires it unless the pod runs in its
#   own user namespace (from v1.35).
# custom:
#   id: pss-baseline-proc-mount
#   severity: medium
#   scope: pod
#   remediation: >-
#     Remove securityContext.procMount or set it to Default, or (v1.35 and
#     later) run the pod in a user namespace with spec.hostUsers=false.
#   controls:
#     cis: ["5.7.3"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.proc_mount


# From v1.35 pods with their own user namespace may unmask /proc at the
# baseline level; the restricted level has its own, unrelaxed, check.
exempt if {
	data.keycard.pss.lib.version >= 35
	data.keycard.pss.lib.restricted
}

exempt if {
	data.keycard.pss.lib.version >= 35
	data.keycard.pss.lib.user_namespace
}

deny contains v if {
	not exempt
	some c in data.keycard.pss.lib.containers
	pm := c.sc.procMount
	pm != null
	pm != "Default"
	v := {
		"msg": sprintf("%s must not set securityContext.procMount to %q", [data.keycard.pss.lib.container_label(c), pm]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.procMount"),
		"value": pm,
	}
}
