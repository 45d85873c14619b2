package keycard.zt.required_labels_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.required_labels

test_labelled_workload_passes if {
	inp1 := f.good
	count(required_labels.deny) == 0 with input as inp1
}

test_missing_owner_fires if {
	inp2 := f.with_labels({"data-classification": "internal"})
	deny := required_labels.deny with input as inp2
	deny == {{
		"msg": `Deployment "shop/web" has no "owner" label (required: owner, data-classification)`,
		"path": `metadata.labels["owner"]`,
		"value": null,
	}}
}

test_each_missing_label_fires_once if {
	inp3 := f.with_labels({"app": "web"})
	deny := required_labels.deny with input as inp3
	{v.path | some v in deny} == {`metadata.labels["owner"]`, `metadata.labels["data-classification"]`}
	count(deny) == 2
}

test_blank_label_counts_as_missing if {
	inp4 := f.with_labels({"owner": "  ", "data-classification": "internal"})
	deny := required_labels.deny with input as inp4
	some v in deny
	v.path == `metadata.labels["owner"]`
	v.value == "  "
}

test_unknown_classification_fires if {
	inp5 := f.with_labels({"owner": "team", "data-classification": "secret-ish"})
	deny := required_labels.deny with input as inp5
	deny == {{
		"msg": `Deployment "shop/web" has data-classification="secret-ish", which is not one of: public, internal, confidential, restricted`,
		"path": `metadata.labels["data-classification"]`,
		"value": "secret-ish",
	}}
}

test_free_values_when_no_allowed_values if {
	inp := f.with_params(f.with_labels({"owner": "team", "data-classification": "pii"}), {"allowed_label_values": {}})
	count(required_labels.deny) == 0 with input as inp
}

test_parameter_decides_the_labels if {
	inp := f.with_params(f.with_labels({"owner": "team", "data-classification": "internal"}), {"required_labels": ["owner", "cost-center"]})
	deny := required_labels.deny with input as inp
	{v.path | some v in deny} == {`metadata.labels["cost-center"]`}
}

test_pod_template_labels_do_not_count if {
	# Labels on the pod template are the pods' labels, not the workload's.
	inp := f.replace(f.with_labels({}), {"pod": {"metadata": {"labels": f.labels}, "spec": f.spec}})
	count(required_labels.deny) == 2 with input as inp
}

test_controlled_objects_are_skipped if {
	pod := {
		"object": {
			"apiVersion": "v1",
			"kind": "Pod",
			"metadata": {"name": "web-1", "namespace": "shop", "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "controller": true}]},
			"spec": f.spec,
		},
		"pod": {"metadata": {}, "spec": f.spec},
		"params": f.defaults,
	}
	count(required_labels.deny) == 0 with input as pod
}

test_bare_pod_is_checked if {
	pod := {
		"object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": "shop"}, "spec": f.spec},
		"pod": {"metadata": {}, "spec": f.spec},
		"params": f.defaults,
	}
	count(required_labels.deny) == 2 with input as pod
}

test_non_workloads_are_skipped if {
	inp6 := f.plain({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}})
	count(required_labels.deny) == 0 with input as inp6
}
