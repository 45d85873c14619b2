# METADATA
# title: Workloads carry ownership and data-classification labels
# description: >-
#   Zero trust needs an owner to answer for every workload and a data
#   classification to decide what it may reach and how it is monitored;
#   without them findings have nobody to go to and segmentation has nothing to
#   key on. The labels come from the required_labels parameter (owner and
#   data-classification by default) and must be non-empty; the
#   allowed_label_values parameter restricts the values of some labels (the
#   four data classes by default). Objects managed by a controller are
#   skipped: their controller is the workload that carries the labels.
# custom:
#   id: zt-required-labels
#   severity: medium
#   scope: object
#   kinds: [Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob]
#   remediation: >-
#     Add the labels to the workload's own metadata.labels, e.g.
#     owner: team-payments and data-classification: confidential, using one of
#     the allowed values where the parameters list them.
#   controls:
#     nsa: ["Network separation and hardening: namespaces"]
#     iso27001: ["A.5.9", "A.5.12", "A.5.13"]
#     soc2: ["CC2.1", "C1.1"]
package keycard.zt.required_labels

import data.keycard.zt.lib
import data.keycard.zt.lib.controlled
import data.keycard.zt.lib.kind
import data.keycard.zt.lib.metadata
import data.keycard.zt.lib.object_label
import data.keycard.zt.lib.workload_kinds

deny contains v if {
	kind in workload_kinds
	not controlled
	some key in lib.param_list("required_labels")
	is_string(key)
	not has_label(key)
	v := {
		"msg": sprintf("%s has no %q label (required: %s)", [
			object_label, key,
			concat(", ", [k | some k in lib.param_list("required_labels"); is_string(k)]),
		]),
		"path": lib.label_path(key),
		"value": object.get(lib.obj(metadata, "labels"), key, null),
	}
}

deny contains v if {
	kind in workload_kinds
	not controlled
	some key, allowed in lib.param_obj("allowed_label_values")
	is_array(allowed)
	count(allowed) > 0
	has_label(key)
	value := metadata.labels[key]
	not value in allowed
	v := {
		"msg": sprintf("%s has %s=%q, which is not one of: %s", [
			object_label, key, value,
			concat(", ", [a | some a in allowed; is_string(a)]),
		]),
		"path": lib.label_path(key),
		"value": value,
	}
}

has_label(key) if {
	value := metadata.labels[key]
	is_string(value)
	trim_space(value) != ""
}
