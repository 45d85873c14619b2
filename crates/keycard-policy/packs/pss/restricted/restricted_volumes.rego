# METADATA
# title: Volume types
# description: >-
#   The restricted level only allows volume types that do not reach outside
#   the pod's own, managed storage: configMap, csi, downwardAPI, emptyDir,
#   ephemeral, image, persistentVolumeClaim, projected and secret.
# custom:
#   id: pss-restricted-volume-types
#   severity: medium
#   scope: pod
#   remediation: >-
#     Replace hostPath and inline network or cloud volumes (nfs, iscsi,
#     awsElasticBlockStore, ...) with a persistentVolumeClaim, or with
#     configMap, secret, projected, downwardAPI, emptyDir, ephemeral, csi or
#     image volumes.
#   controls:
#     cis: ["5.2.12"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.restricted.restricted_volumes

allowed_sources := {
	"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
	"persistentVolumeClaim", "projected", "secret",
}

# A volume is denied for every source it sets outside the allow-list. A
# volume that sets no source at all is allowed: the API server defaults it to
# emptyDir.
deny contains finding if {
	some i, source
	vol := input.pod.spec.volumes[i]
	is_object(vol)
	value := vol[source]
	value != null
	not source in allowed_sources
	source != "name"
	finding := {
		"msg": sprintf("volume %q must not use volume type %s", [object.get(vol, "name", ""), source]),
		"path": sprintf("spec.volumes[%d].%s", [i, source]),
		"value": value,
	}
}
