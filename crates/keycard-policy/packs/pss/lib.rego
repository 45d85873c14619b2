# METADATA
# title: Pod Security Standards helpers
# description: >-
#   Helpers shared by the pss-baseline and pss-restricted packs to build
#   findings. They are only called once a violation is found, so the checks
#   themselves read input.pod directly and stay cheap on compliant pods.
package keycard.pss.lib

# The container lists of a pod spec, in the order the kubelet starts them.
# Checks iterate them inline, as `some kind in [...]` then
# `ctr := input.pod.spec[kind][i]`: iterating a reference (rather than
# `some i, ctr in <list>`) yields nothing for an absent, null or non-list
# field, in OPA and regorus alike, where `some .. in null` is an evaluation
# error in regorus. Every list read from the input is iterated that way.
container_kinds := ["initContainers", "containers", "ephemeralContainers"]

# The path of a field of a container, relative to the pod.
container_path(kind, i, suffix) := sprintf("spec.%s[%d].%s", [kind, i, suffix])

# How a finding names a container in its message.
container_label(kind, ctr) := sprintf("%s %q", [kind_label[kind], object.get(ctr, "name", "")])

kind_label := {
	"initContainers": "init container",
	"containers": "container",
	"ephemeralContainers": "ephemeral container",
}

# The path of an annotation, relative to the pod.
annotation_path(key) := sprintf("metadata.annotations[%q]", [key])

# A finding as the engine expects it.
finding(msg, path, value) := {"msg": msg, "path": path, "value": value}
