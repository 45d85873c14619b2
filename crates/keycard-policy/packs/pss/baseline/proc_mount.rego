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

import data.keycard.pss.lib

# From v1.35 pods with their own user namespace may unmask /proc at the
# baseline level; the restricted level has its own, unrelaxed, check which
# supersedes this one.
exempt if {
	input.pss_version >= 35
	input.pss_level == "restricted"
}

exempt if {
	input.pss_version >= 35
	input.pod.spec.hostUsers == false
}

deny contains finding if {
	some i
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	ctr := input.pod.spec[kind][i]
	proc_mount := ctr.securityContext.procMount
	not proc_mount in {"Default", null}
	not exempt
	finding := lib.finding(
		sprintf("%s must not set securityContext.procMount to %v", [lib.container_label(kind, ctr), proc_mount]),
		lib.container_path(kind, i, "securityContext.procMount"),
		proc_mount,
	)
}
