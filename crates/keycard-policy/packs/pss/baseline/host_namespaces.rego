# METADATA
# title: Host namespaces
# description: >-
#   Sharing the host's network, PID or IPC namespace lets a pod see and talk to
#   host processes and interfaces; the baseline level forbids it.
# custom:
#   id: pss-baseline-host-namespaces
#   severity: high
#   scope: pod
#   remediation: >-
#     Remove spec.hostNetwork, spec.hostPID and spec.hostIPC or set them to
#     false; expose services through a Service instead of the host network.
#   controls:
#     cis: ["5.2.3", "5.2.4", "5.2.5"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9", "A.8.22"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.host_namespaces

deny contains finding if {
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	input.pod.spec[field] == true
	finding := {
		"msg": sprintf("pod must not set spec.%s=true", [field]),
		"path": sprintf("spec.%s", [field]),
		"value": true,
	}
}
