# METADATA
# title: Pod Security Standards helpers
# description: >-
#   Shared, side-effect-free helpers for the pss-baseline and pss-restricted
#   packs. Every check reads the pod only through input.pod so that the same
#   rule runs on Pods, Deployments, CronJobs and any other pod template.
package keycard.pss.lib

# The pod spec and metadata, or empty objects when absent or null, so that
# every lookup below stays defined and cheap.
spec := obj(input.pod, "spec")

metadata := obj(input.pod, "metadata")

# The Pod Security Standards version being enforced, as the minor N of v1.N.
version := input.pss_version

# True when the restricted level is being evaluated. Some baseline checks are
# superseded by a stricter restricted check at that level (as upstream
# pod-security-admission does), and step aside to avoid duplicate findings.
restricted if input.pss_level == "restricted"

# The pod-level securityContext.
pod_sc := obj(spec, "securityContext")

# Windows pods are exempt from the Linux-only restricted checks from v1.25.
windows if spec.os.name == "windows"

# The pod runs in its own user namespace (hostUsers explicitly false); from
# v1.35 some checks are relaxed for such pods.
user_namespace if spec.hostUsers == false

# Every container the kubelet would run, init containers first, then regular
# and ephemeral ones. Each entry carries where it sits in the spec (kind and
# index, for paths), its name, the raw container and its securityContext.
containers := [entry |
	some kind in ["initContainers", "containers", "ephemeralContainers"]
	some i, ctr in arr(spec, kind)
	is_object(ctr)
	entry := {
		"kind": kind,
		"index": i,
		"name": str(ctr, "name"),
		"container": ctr,
		"sc": obj(ctr, "securityContext"),
	}
]

# The pod's volumes.
volumes := arr(spec, "volumes")

# obj(x, key) is x[key] when it is an object, otherwise an empty object:
# Kubernetes treats an absent field and an explicit null alike.
obj(x, key) := v if {
	v := object.get(x, key, {})
	is_object(v)
} else := {}

# arr(x, key) is x[key] when it is an array, otherwise an empty array.
arr(x, key) := v if {
	v := object.get(x, key, [])
	is_array(v)
} else := []

# str(x, key) is x[key] when it is a string, otherwise "" (Go's zero value).
str(x, key) := v if {
	v := object.get(x, key, "")
	is_string(v)
} else := ""

# A path into a container, relative to the pod.
container_path(c, suffix) := sprintf("spec.%s[%d].%s", [c.kind, c.index, suffix])

# How a finding names a container in its message.
container_label(c) := sprintf("%s %q", [kind_label[c.kind], c.name])

kind_label := {
	"initContainers": "init container",
	"containers": "container",
	"ephemeralContainers": "ephemeral container",
}

# A path to an annotation, relative to the pod.
annotation_path(key) := sprintf("metadata.annotations[%q]", [key])
