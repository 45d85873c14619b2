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

# The volume sources a volume sets outside the allowed ones. A volume that
# sets no source at all is allowed: the API server defaults it to emptyDir.
forbidden_sources(vol) := [source |
	some source, value in vol
	source != "name"
	value != null
	not source in allowed_sources
]

deny contains v if {
	some i, vol in data.keycard.pss.lib.volumes
	is_object(vol)
	some source in forbidden_sources(vol)
	v := {
		"msg": sprintf("volume %q must not use volume type %s", [object.get(vol, "name", ""), source]),
		"path": sprintf("spec.volumes[%d].%s", [i, source]),
		"value": vol[source],
	}
}
