# METADATA
# title: No hostPath volumes outside the allow-list
# description: >-
#   A hostPath volume hands the pod a piece of the node's filesystem: the
#   container runtime socket, kubelet credentials or other pods' data are one
#   mount away, which turns one compromised pod into a compromised node. Only
#   paths under a prefix of the allowed_host_paths parameter (matched per path
#   component, so /var/log does not allow /var/logs) are accepted, and paths
#   with ".." components never are.
# custom:
#   id: zt-host-path
#   severity: high
#   scope: pod
#   remediation: >-
#     Replace the hostPath volume with an emptyDir, a ConfigMap, a Secret, a
#     projected volume or a PersistentVolumeClaim; if the node path is truly
#     needed (a log or metrics agent), mount it readOnly and add its prefix to
#     allowed_host_paths.
#   controls:
#     cis: ["5.2.12"]
#     nsa: ["Pod security: hardening container environments"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1"]
package keycard.zt.host_path

import data.keycard.zt.lib
import data.keycard.zt.lib.volumes

deny contains v if {
	some i, vol in volumes
	is_object(vol)
	hp := vol.hostPath
	is_object(hp)
	path := lib.str(hp, "path")
	not allowed(path)
	v := {
		"msg": sprintf("volume %q mounts host path %q, which is not under an allowed prefix (allowed: %s)", [
			lib.str(vol, "name"), path, allowed_text,
		]),
		"path": sprintf("spec.volumes[%d].hostPath.path", [i]),
		"value": path,
	}
}

allowed(path) if {
	not traversal(path)
	some prefix in lib.param_list("allowed_host_paths")
	is_string(prefix)
	startswith(prefix, "/")
	under(trim_right(path, "/"), trim_right(prefix, "/"))
}

# under(p, q): p is q or lies below it. q is "" for the prefix "/".
under(p, q) if p == q

under(p, q) if startswith(p, concat("", [q, "/"]))

traversal(path) if ".." in split(path, "/")

allowed_text := "none" if {
	count(lib.param_list("allowed_host_paths")) == 0
} else := concat(", ", [p | some p in lib.param_list("allowed_host_paths"); is_string(p)])
