# METADATA
# title: Read-only root filesystem
# description: >-
#   Assume breach: an attacker who gets code execution in a container with a
#   writable root filesystem can drop tools, patch binaries and persist until
#   the pod restarts. A read-only root filesystem makes the image immutable
#   at run time and confines writes to volumes the workload declares. Init
#   and regular containers are checked; ephemeral debug containers and
#   Windows pods (which do not support the field) are not.
# custom:
#   id: zt-read-only-root-fs
#   severity: medium
#   scope: pod
#   remediation: >-
#     Set securityContext.readOnlyRootFilesystem: true on every container and
#     init container, and mount an emptyDir at each path the process must
#     write to (/tmp, caches).
#   controls:
#     cis: ["5.7.3"]
#     nsa: ["Pod security: immutable container file systems"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.8"]
package keycard.zt.read_only_root_fs

import data.keycard.zt.lib
import data.keycard.zt.lib.windows
import data.keycard.zt.lib.workload_containers

deny contains v if {
	not windows
	some c in workload_containers
	value := object.get(c.sc, "readOnlyRootFilesystem", null)
	value != true
	v := {
		"msg": sprintf("%s must set securityContext.readOnlyRootFilesystem=true", [lib.container_label(c)]),
		"path": lib.container_path(c, "securityContext.readOnlyRootFilesystem"),
		"value": value,
	}
}
