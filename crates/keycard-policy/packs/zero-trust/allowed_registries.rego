# METADATA
# title: Images only from approved registries
# description: >-
#   Every image a pod runs is code the cluster trusts. Pulling only from
#   registries the organisation controls (and scans, signs and mirrors) keeps
#   an attacker's or a typosquatted image out. Unqualified names such as
#   "nginx" are rejected too: container runtimes resolve short names through
#   their own search lists, so the registry they come from is not explicit.
#   An empty allowed_registries parameter turns the rule off.
# custom:
#   id: zt-allowed-registries
#   severity: high
#   scope: pod
#   remediation: >-
#     Pull the image from an approved registry, written out in full
#     (registry host, repository, then tag or digest), or add the registry or
#     repository prefix to the allowed_registries parameter if it is trusted.
#   controls:
#     cis: ["5.5.1"]
#     nsa: ["Pod security: building secure container images"]
#     iso27001: ["A.8.19", "A.5.21"]
#     soc2: ["CC6.8", "CC7.1"]
package keycard.zt.allowed_registries

import data.keycard.zt.lib
import data.keycard.zt.lib.containers

deny contains v if {
	allowed := lib.param_list("allowed_registries")
	count(allowed) > 0
	some c in containers
	image := lib.str(c.container, "image")
	image != ""
	not approved(image, allowed)
	v := {
		"msg": sprintf("%s: image %q %s (allowed: %s)", [
			lib.container_label(c), image, why(image),
			concat(", ", [a | some a in allowed; is_string(a)]),
		]),
		"path": lib.container_path(c, "image"),
		"value": image,
	}
}

approved(image, allowed) if {
	some entry in allowed
	is_string(entry)
	matches(image, trim_right(entry, "/"))
}

# An entry matches the image when the image starts with it and continues at a
# path boundary: "r.example.com" matches "r.example.com/app:1" but neither
# "r.example.com.evil/app" nor "r.example.com:5000/app" (another registry); a
# repository entry "r.example.com/team/app" also matches its tags and digests.
matches(image, entry) if {
	entry != ""
	startswith(image, entry)
	boundary(entry, substring(image, count(entry), 1))
}

boundary(_, next) if next == "/"

boundary(entry, next) if {
	contains(entry, "/")
	next in {":", "@"}
}

why(image) := "names no registry host, so the runtime's search list decides where it comes from" if {
	not qualified(image)
} else := "is not from an approved registry"

# A reference names its registry when its first component looks like a host:
# it has a dot or a port, or is localhost.
qualified(image) if {
	parts := split(image, "/")
	count(parts) > 1
	host := parts[0]
	host_like(host)
}

host_like(host) if contains(host, ".")

host_like(host) if contains(host, ":")

host_like(host) if host == "localhost"
