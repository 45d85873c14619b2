# METADATA
# title: HostPath volumes
# description: >-
#   A hostPath volume mounts part of the node's filesystem into the pod, which
#   can expose credentials or let the pod tamper with the node; the baseline
#   level forbids them.
# custom:
#   id: pss-baseline-host-path-volumes
#   severity: high
#   scope: pod
#   remediation: >-
#     Replace hostPath volumes with persistentVolumeClaim, configMap, secret,
#     emptyDir or a CSI volume.
#   controls:
#     cis: ["5.2.12"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.host_path_volumes

# At the restricted level the restricted_volumes check covers hostPath (and
# every other volume type outside its allow-list) and supersedes this one.
deny contains finding if {
	some i
	input.pss_level != "restricted"
	vol := input.pod.spec.volumes[i]
	source := vol.hostPath
	source != null
	finding := {
		"msg": sprintf("volume %q must not use hostPath", [object.get(vol, "name", "")]),
		"path": sprintf("spec.volumes[%d].hostPath", [i]),
		"value": source,
	}
}
