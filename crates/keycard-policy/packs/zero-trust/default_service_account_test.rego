package keycard.zt.default_service_account_test

import data.keycard.zt.default_service_account
import data.keycard.zt.fixtures_test as f

test_dedicated_account_passes if {
	inp1 := f.good
	count(default_service_account.deny) == 0 with input as inp1
}

test_unset_fires if {
	inp2 := f.deployment(object.remove(f.spec, ["serviceAccountName"]))
	deny := default_service_account.deny with input as inp2
	deny == {{
		"msg": "pod names no service account, so it runs as the namespace's default account",
		"path": "spec.serviceAccountName",
		"value": null,
	}}
}

test_explicit_default_fires if {
	inp3 := f.with_spec({"serviceAccountName": "default"})
	deny := default_service_account.deny with input as inp3
	deny == {{
		"msg": "pod runs as the namespace's default service account",
		"path": "spec.serviceAccountName",
		"value": "default",
	}}
}

test_empty_name_fires if {
	inp4 := f.with_spec({"serviceAccountName": ""})
	count(default_service_account.deny) == 1 with input as inp4
}

test_legacy_field_is_honoured if {
	legacy := object.union(object.remove(f.spec, ["serviceAccountName"]), {"serviceAccount": "web"})
	inp5 := f.deployment(legacy)
	count(default_service_account.deny) == 0 with input as inp5
	legacy_default := object.union(object.remove(f.spec, ["serviceAccountName"]), {"serviceAccount": "default"})
	inp6 := f.deployment(legacy_default)
	count(default_service_account.deny) == 1 with input as inp6
}

test_non_pod_objects_are_ignored if {
	inp7 := f.plain({"kind": "ConfigMap", "metadata": {"name": "c"}})
	count(default_service_account.deny) == 0 with input as inp7
}
