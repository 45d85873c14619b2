package keycard.zt.sa_token_automount_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.sa_token_automount

unset := object.remove(f.spec, ["automountServiceAccountToken"])

annotated(value) := f.replace(f.deployment(unset), {"pod": {"metadata": {"annotations": {"keycard.dev/needs-api-token": value}}, "spec": unset}})

test_automount_off_passes if {
	inp1 := f.good
	count(sa_token_automount.deny) == 0 with input as inp1
}

test_unset_fires if {
	inp2 := f.deployment(unset)
	deny := sa_token_automount.deny with input as inp2
	deny == {{
		"msg": `pod mounts a service-account token (spec.automountServiceAccountToken is not false) without declaring that it needs one (annotation keycard.dev/needs-api-token: "true")`,
		"path": "spec.automountServiceAccountToken",
		"value": null,
	}}
}

test_true_fires if {
	inp3 := f.with_spec({"automountServiceAccountToken": true})
	deny := sa_token_automount.deny with input as inp3
	some v in deny
	v.value == true
}

test_annotation_declares_the_need if {
	inp4 := annotated("true")
	count(sa_token_automount.deny) == 0 with input as inp4
}

test_annotation_must_say_true if {
	inp5 := annotated("false")
	count(sa_token_automount.deny) == 1 with input as inp5
	inp6 := annotated("yes")
	count(sa_token_automount.deny) == 1 with input as inp6
}

test_listed_service_account_may_mount if {
	inp := f.with_params(f.deployment(unset), {"token_service_accounts": ["web"]})
	count(sa_token_automount.deny) == 0 with input as inp
	other := f.with_params(f.deployment(unset), {"token_service_accounts": ["operator"]})
	count(sa_token_automount.deny) == 1 with input as other
}

test_workload_annotation_alone_does_not_declare if {
	# The declaration belongs on the pod template, next to the spec it changes.
	inp := f.replace(f.deployment(unset), {"object": {
		"kind": "Deployment",
		"metadata": {"name": "web", "namespace": "shop", "annotations": {"keycard.dev/needs-api-token": "true"}},
	}})
	count(sa_token_automount.deny) == 1 with input as inp
}

test_non_pod_objects_are_ignored if {
	inp7 := f.plain({"kind": "ServiceAccount", "metadata": {"name": "web"}})
	count(sa_token_automount.deny) == 0 with input as inp7
}
