package keycard.zt.privilege_escalation_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.privilege_escalation

test_false_passes if {
	inp1 := f.good
	count(privilege_escalation.deny) == 0 with input as inp1
}

test_unset_fires if {
	inp2 := f.with_container({"securityContext": {"readOnlyRootFilesystem": true}})
	deny := privilege_escalation.deny with input as inp2
	deny == {{
		"msg": `container "app" must set securityContext.allowPrivilegeEscalation=false`,
		"path": "spec.containers[0].securityContext.allowPrivilegeEscalation",
		"value": null,
	}}
}

test_true_fires if {
	inp3 := f.with_container({"securityContext": {"allowPrivilegeEscalation": true}})
	deny := privilege_escalation.deny with input as inp3
	some v in deny
	v.value == true
}

test_no_security_context_fires if {
	inp4 := f.with_spec({"containers": [{"name": "app", "image": f.image}]})
	count(privilege_escalation.deny) == 1 with input as inp4
}

test_every_container_kind_counts if {
	spec := object.union(f.spec, {
		"initContainers": [{"name": "init"}],
		"ephemeralContainers": [{"name": "debug", "securityContext": {"allowPrivilegeEscalation": false}}, {"name": "debug2"}],
	})
	inp5 := f.with_spec(spec)
	deny := privilege_escalation.deny with input as inp5
	{v.path | some v in deny} == {
		"spec.initContainers[0].securityContext.allowPrivilegeEscalation",
		"spec.ephemeralContainers[1].securityContext.allowPrivilegeEscalation",
	}
}

test_windows_pods_are_exempt if {
	spec := {"os": {"name": "windows"}, "containers": [{"name": "app"}]}
	inp6 := f.with_spec(spec)
	count(privilege_escalation.deny) == 0 with input as inp6
}
