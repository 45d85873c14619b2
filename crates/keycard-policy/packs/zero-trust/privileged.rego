# METADATA
# title: No privileged containers
# description: >-
#   A privileged container, or one granted CAP_SYS_ADMIN or every capability,
#   is root on the node in all but name: it sees the host's devices and can
#   leave its namespaces, so a single compromised process owns the node and
#   every workload on it. Every container counts, ephemeral ones included.
# custom:
#   id: zt-privileged
#   severity: critical
#   scope: pod
#   remediation: >-
#     Remove securityContext.privileged (or set it to false) and drop SYS_ADMIN
#     and ALL from capabilities.add; grant only the narrow capability the
#     process needs (NET_BIND_SERVICE, for example), or move the privileged
#     task into a node-level component managed outside the application.
#   controls:
#     cis: ["5.2.2", "5.2.9"]
#     nsa: ["Pod security: non-root containers"]
#     iso27001: ["A.8.2", "A.8.9"]
#     soc2: ["CC6.1", "CC6.3"]
package keycard.zt.privileged

import data.keycard.zt.lib
import data.keycard.zt.lib.containers

deny contains v if {
	some c in containers
	c.sc.privileged == true
	v := {
		"msg": sprintf("%s runs privileged", [lib.container_label(c)]),
		"path": lib.container_path(c, "securityContext.privileged"),
		"value": true,
	}
}

deny contains v if {
	some c in containers
	some j, cap in lib.arr(lib.obj(c.sc, "capabilities"), "add")
	is_string(cap)
	trim_prefix(upper(cap), "CAP_") in {"SYS_ADMIN", "ALL"}
	v := {
		"msg": sprintf("%s adds capability %s, which is as good as privileged", [lib.container_label(c), cap]),
		"path": lib.container_path(c, sprintf("securityContext.capabilities.add[%d]", [j])),
		"value": cap,
	}
}
