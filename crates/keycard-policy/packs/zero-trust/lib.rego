# METADATA
# title: Zero-trust pack helpers
# description: >-
#   Shared, side-effect-free helpers for the zero-trust pack. Pod-level checks
#   read the pod only through input.pod so that one rule covers Pods and every
#   workload kind with a pod template. Every helper stays defined for absent,
#   null or mistyped fields, so rules never depend on how an engine treats an
#   undefined function argument (regorus and OPA differ there).
package keycard.zt.lib

# True when the object carries a pod or a pod template.
has_pod if is_object(input.pod)

# The pod spec and metadata, or empty objects when absent.
spec := s if {
	s := input.pod.spec
	is_object(s)
} else := {}

pod_metadata := m if {
	m := input.pod.metadata
	is_object(m)
} else := {}

# The object under evaluation and its metadata, or empty objects.
input_object := o if {
	o := input.object
	is_object(o)
} else := {}

metadata := obj(input_object, "metadata")

# The object's kind, or "".
kind := str(input_object, "kind")

# Windows pods: some Linux-only securityContext fields do not apply to them.
windows if spec.os.name == "windows"

# The kinds that run pods. Their metadata is the workload's own metadata.
workload_kinds := {
	"Pod",
	"Deployment",
	"StatefulSet",
	"DaemonSet",
	"ReplicaSet",
	"ReplicationController",
	"Job",
	"CronJob",
}

# Every container the kubelet would run: init containers first, then regular
# and ephemeral ones. Each entry carries where it sits in the spec (kind and
# index, for paths), its name, the raw container and its securityContext.
containers := [entry |
	some field in ["initContainers", "containers", "ephemeralContainers"]
	some i, ctr in arr(spec, field)
	is_object(ctr)
	entry := {
		"kind": field,
		"index": i,
		"name": str(ctr, "name"),
		"container": ctr,
		"sc": obj(ctr, "securityContext"),
	}
]

# Containers that run for the pod's whole life or before it (ephemeral debug
# containers excluded), for checks about the workload's own hardening.
workload_containers := [c | some c in containers; c.kind != "ephemeralContainers"]

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

# A list parameter: a list stays a list, a lone string becomes a one-element
# list (a common slip in hand-written parameter files), anything else or an
# absent parameter is empty.
param_list(name) := v if {
	v := object.get(obj(input, "params"), name, [])
	is_array(v)
} else := [v] if {
	v := object.get(obj(input, "params"), name, [])
	is_string(v)
} else := []

# An object parameter, or an empty object.
param_obj(name) := obj(obj(input, "params"), name)

# A boolean parameter with its default when absent or not a boolean.
param_bool(name, default_value) := v if {
	v := object.get(obj(input, "params"), name, default_value)
	is_boolean(v)
} else := default_value

# A path into a container, relative to the pod.
container_path(c, suffix) := sprintf("spec.%s[%d].%s", [c.kind, c.index, suffix])

# How a finding names a container in its message.
container_label(c) := sprintf("%s %q", [kind_label[c.kind], c.name])

kind_label := {
	"initContainers": "init container",
	"containers": "container",
	"ephemeralContainers": "ephemeral container",
}

# How a finding names the object: Kind "name" (or Kind "namespace/name").
object_label := sprintf("%s %q", [kind, qualified_name])

qualified_name := sprintf("%s/%s", [namespace, str(metadata, "name")]) if {
	namespace != ""
} else := str(metadata, "name")

# The object's namespace, or "" when it names none.
namespace := str(metadata, "namespace")

# Paths to a label or an annotation: bracketed, because keys hold dots and
# slashes (app.kubernetes.io/name).
label_path(key) := sprintf("metadata.labels[%q]", [key])

annotation_path(key) := sprintf("metadata.annotations[%q]", [key])

# True when the object is managed by a controller (a Pod of a ReplicaSet, a
# ReplicaSet of a Deployment, a Job of a CronJob): the controller is the
# workload that carries ownership, so findings about workload metadata go there.
controlled if {
	some ref in arr(metadata, "ownerReferences")
	is_object(ref)
	ref.controller == true
}

# name_matches(name, patterns): name equals a pattern, or starts with the
# part before a trailing "*" of one.
name_matches(name, patterns) if {
	some p in patterns
	is_string(p)
	not endswith(p, "*")
	name == p
}

name_matches(name, patterns) if {
	some p in patterns
	is_string(p)
	endswith(p, "*")
	startswith(name, trim_suffix(p, "*"))
}

# ---- Namespaces and NetworkPolicies ------------------------------------

# The namespace whose segmentation findings this object carries, if any. A
# Namespace object carries its own. A namespace with no Namespace object in
# the input is reported on its first object in input order
# (data.keycard.inventory.first_by_namespace). Only that first object pays
# for the scan of the Namespace objects; every other object costs one lookup.
reported_namespace := ns if {
	kind == "Namespace"
	ns := str(metadata, "name")
	ns != ""
}

reported_namespace := ns if {
	kind != "Namespace"
	ns := namespace
	ns != ""
	data.keycard.inventory.first_by_namespace[ns] == input_object
	not namespace_declared(ns)
}

namespace_declared(ns) if {
	some n in data.keycard.inventory.by_kind.Namespace
	n.metadata.name == ns
}

# Where a namespace finding points, and how its message names the namespace.
namespace_finding_path := "metadata.name" if {
	kind == "Namespace"
} else := "metadata.namespace"

namespace_label(ns) := sprintf("namespace %q", [ns]) if {
	kind == "Namespace"
} else := sprintf("namespace %q (no Namespace object in the input; reported on its first object, %s)", [ns, object_label])

# The NetworkPolicies of one namespace, from the inventory.
namespace_policies(ns) := [np |
	some np in data.keycard.inventory.by_kind.NetworkPolicy
	is_object(np)
	np.metadata.namespace == ns
]

# An empty podSelector selects every pod of the namespace.
selects_all_pods(np) if {
	sel := obj(obj(np, "spec"), "podSelector")
	count(obj(sel, "matchLabels")) == 0
	count(arr(sel, "matchExpressions")) == 0
}

# policyTypes, or the API's default when it is absent: Ingress, plus Egress
# when the policy has egress rules.
policy_types(np) := types if {
	types := np.spec.policyTypes
	is_array(types)
} else := ["Ingress", "Egress"] if {
	count(arr(obj(np, "spec"), "egress")) > 0
} else := ["Ingress"]

# Isolates every pod's ingress and allows none.
denies_all_ingress(np) if {
	selects_all_pods(np)
	"Ingress" in policy_types(np)
	count(arr(obj(np, "spec"), "ingress")) == 0
}

# Isolates every pod's egress and allows at most DNS (port 53), the common
# exception to a default-deny egress baseline.
denies_egress_but_dns(np) if {
	selects_all_pods(np)
	"Egress" in policy_types(np)
	every rule in arr(obj(np, "spec"), "egress") {
		dns_only(rule)
	}
}

dns_only(rule) if {
	ports := arr(rule, "ports")
	count(ports) > 0
	every p in ports {
		p.port == 53
	}
}

# ---- RBAC ---------------------------------------------------------------

# A ClusterRole that Kubernetes itself bootstraps (cluster-admin, admin,
# edit, system:*): named in the rbac_exempt_cluster_roles parameter AND
# carrying the bootstrapping label, so that a look-alike role created by
# someone else is still reported.
builtin_cluster_role if {
	kind == "ClusterRole"
	name_matches(str(metadata, "name"), param_list("rbac_exempt_cluster_roles"))
	obj(metadata, "labels")["kubernetes.io/bootstrapping"] == "rbac-defaults"
}

# The rules of a Role or ClusterRole.
role_rules := arr(input_object, "rules")

# How a finding names an RBAC subject.
subject_label(s) := sprintf("%s %q", [str(s, "kind"), sprintf("%s/%s", [s.namespace, str(s, "name")])]) if {
	is_string(s.namespace)
	s.namespace != ""
} else := sprintf("%s %q", [str(s, "kind"), str(s, "name")])
