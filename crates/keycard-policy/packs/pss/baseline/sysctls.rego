# METADATA
# title: Sysctls
# description: >-
#   Most sysctls are not namespaced, or are namespaced but not isolated from
#   other pods, and can weaken the node; the baseline level allows only a
#   known-safe set, which grows with the Kubernetes version.
# custom:
#   id: pss-baseline-sysctls
#   severity: medium
#   scope: pod
#   remediation: >-
#     Remove from spec.securityContext.sysctls every sysctl outside the safe
#     set of the enforced version (kernel.shm_rmid_forced,
#     net.ipv4.ip_local_port_range, net.ipv4.tcp_syncookies,
#     net.ipv4.ping_group_range, net.ipv4.ip_unprivileged_port_start, and the
#     later additions).
#   controls:
#     cis: ["5.7.3"]
#     nsa: ["Pod security"]
#     iso27001: ["A.8.9"]
#     soc2: ["CC6.1"]
package keycard.pss.baseline.sysctls

# The safe sysctls, with the version from which each is allowed.
allowed_since := {
	"kernel.shm_rmid_forced": 0,
	"net.ipv4.ip_local_port_range": 0,
	"net.ipv4.tcp_syncookies": 0,
	"net.ipv4.ping_group_range": 0,
	"net.ipv4.ip_unprivileged_port_start": 0,
	"net.ipv4.ip_local_reserved_ports": 27,
	"net.ipv4.tcp_keepalive_time": 29,
	"net.ipv4.tcp_fin_timeout": 29,
	"net.ipv4.tcp_keepalive_intvl": 29,
	"net.ipv4.tcp_keepalive_probes": 29,
	"net.ipv4.tcp_rmem": 32,
	"net.ipv4.tcp_wmem": 32,
	"net.ipv4.tcp_slow_start_after_idle": 37,
	"net.ipv4.tcp_notsent_lowat": 37,
}

allowed(name) if input.pss_version >= allowed_since[name]

deny contains finding if {
	some i
	sysctl := input.pod.spec.securityContext.sysctls[i]
	name := sysctl.name
	not allowed(name)
	finding := {
		"msg": sprintf("pod must not set sysctl %v", [name]),
		"path": sprintf("spec.securityContext.sysctls[%d].name", [i]),
		"value": name,
	}
}
