# METADATA
# title: Windows HostProcess
# description: >-
#   Windows HostProcess containers run directly on the host with
#   administrator-level access; the baseline level forbids them.
# custom:
#   id: pss-baseline-windows-host-process
#   severity: critical
#   scope: pod
#   remediation: >-
#     Remove securityContext.windowsOptions.hostProcess or set it to false on
#     the pod and on every container.
#   controls:
#     cis: ["5.2.11"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.windows_host_process


deny contains v if {
	data.keycard.pss.lib.pod_sc.windowsOptions.hostProcess == true
	v := {
		"msg": "pod must not set securityContext.windowsOptions.hostProcess=true",
		"path": "spec.securityContext.windowsOptions.hostProcess",
		"value": true,
	}
}

deny contains v if {
	some c in data.keycard.pss.lib.containers
	c.sc.windowsOptions.hostProcess == true
	v := {
		"msg": sprintf("%s must not set securityContext.windowsOptions.hostProcess=true", [data.keycard.pss.lib.container_label(c)]),
		"path": data.keycard.pss.lib.container_path(c, "securityContext.windowsOptions.hostProcess"),
		"value": true,
	}
}
