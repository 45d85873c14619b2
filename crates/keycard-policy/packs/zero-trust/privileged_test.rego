package keycard.zt.privileged_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.privileged

test_unprivileged_passes if {
	inp1 := f.good
	count(privileged.deny) == 0 with input as inp1
	inp2 := f.with_container({"securityContext": {"privileged": false, "capabilities": {"add": ["NET_BIND_SERVICE"]}}})
	count(privileged.deny) == 0 with input as inp2
}

test_privileged_fires if {
	inp3 := f.with_container({"securityContext": {"privileged": true}})
	deny := privileged.deny with input as inp3
	deny == {{
		"msg": `container "app" runs privileged`,
		"path": "spec.containers[0].securityContext.privileged",
		"value": true,
	}}
}

test_sys_admin_and_all_fire if {
	inp := f.with_container({"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN", "all", "CAP_SYS_ADMIN"]}}})
	deny := privileged.deny with input as inp
	{v.path | some v in deny} == {
		"spec.containers[0].securityContext.capabilities.add[1]",
		"spec.containers[0].securityContext.capabilities.add[2]",
		"spec.containers[0].securityContext.capabilities.add[3]",
	}
}

test_every_container_kind_counts if {
	spec := object.union(f.spec, {
		"initContainers": [{"name": "init", "securityContext": {"privileged": true}}],
		"ephemeralContainers": [{"name": "debug", "securityContext": {"privileged": true}}],
	})
	inp4 := f.with_spec(spec)
	deny := privileged.deny with input as inp4
	{v.msg | some v in deny} == {`init container "init" runs privileged`, `ephemeral container "debug" runs privileged`}
}

test_string_true_is_not_privileged if {
	# The API rejects it; the rule must not crash on it either.
	inp5 := f.with_container({"securityContext": {"privileged": "true"}})
	count(privileged.deny) == 0 with input as inp5
}
