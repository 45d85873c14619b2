package keycard.zt.read_only_root_fs_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.read_only_root_fs

test_read_only_passes if {
	inp1 := f.good
	count(read_only_root_fs.deny) == 0 with input as inp1
}

test_unset_fires if {
	inp2 := f.with_container({"securityContext": {"allowPrivilegeEscalation": false}})
	deny := read_only_root_fs.deny with input as inp2
	deny == {{
		"msg": `container "app" must set securityContext.readOnlyRootFilesystem=true`,
		"path": "spec.containers[0].securityContext.readOnlyRootFilesystem",
		"value": null,
	}}
}

test_false_fires if {
	inp3 := f.with_container({"securityContext": {"readOnlyRootFilesystem": false}})
	deny := read_only_root_fs.deny with input as inp3
	some v in deny
	v.value == false
}

test_null_security_context_fires if {
	inp4 := f.with_container({"securityContext": null})
	count(read_only_root_fs.deny) == 1 with input as inp4
}

test_init_containers_count_ephemeral_do_not if {
	spec := object.union(f.spec, {
		"initContainers": [{"name": "init", "image": f.image}],
		"ephemeralContainers": [{"name": "debug", "image": f.image}],
	})
	inp5 := f.with_spec(spec)
	deny := read_only_root_fs.deny with input as inp5
	{v.path | some v in deny} == {"spec.initContainers[0].securityContext.readOnlyRootFilesystem"}
}

test_windows_pods_are_exempt if {
	spec := object.union(f.spec, {"os": {"name": "windows"}, "containers": [{"name": "app", "image": f.image}]})
	inp6 := f.with_spec(spec)
	count(read_only_root_fs.deny) == 0 with input as inp6
}
