# Unit tests for the Pod Security Standards packs (run by
# tests/pss_conformance.rs, and by `opa test` as-is). They pin down what the
# upstream fixtures do not: the shape of findings, the level overrides and
# the version boundaries.
package keycard_test.pss

import data.keycard.pss

pod(spec) := {"metadata": {"name": "p"}, "spec": spec}

at(spec, level, version) := {
	"object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec},
	"pod": pod(spec),
	"pss_level": level,
	"pss_version": version,
}

# A pod that meets the restricted level at every version.
restricted_spec := {
	"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
	"containers": [{
		"name": "app",
		"image": "app",
		"securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
	}],
}

test_finding_names_the_container_and_field if {
	spec := {"containers": [{"name": "a"}, {"name": "b", "securityContext": {"privileged": true}}]}
	findings := pss.baseline.privileged.deny with input as at(spec, "baseline", 37)
	findings == {{
		"msg": "container \"b\" must not set securityContext.privileged=true",
		"path": "spec.containers[1].securityContext.privileged",
		"value": true,
	}}
}

test_ephemeral_and_init_containers_are_checked if {
	spec := {
		"initContainers": [{"name": "i", "securityContext": {"privileged": true}}],
		"containers": [{"name": "c"}],
		"ephemeralContainers": [{"name": "e", "securityContext": {"privileged": true}}],
	}
	paths := {f.path | some f in pss.baseline.privileged.deny} with input as at(spec, "baseline", 37)
	paths == {
		"spec.initContainers[0].securityContext.privileged",
		"spec.ephemeralContainers[0].securityContext.privileged",
	}
}

test_restricted_pod_is_clean_at_every_version if {
	every version in numbers.range(0, 37) {
		count(all_findings) == 0 with input as at(restricted_spec, "restricted", version)
	}
}

# Every finding at the level being checked (restricted includes baseline).
all_findings := [f |
	some level in levels[input.pss_level]
	some rules in pss[level]
	some f in rules.deny
]

levels := {"baseline": ["baseline"], "restricted": ["baseline", "restricted"]}

test_windows_pods_skip_linux_only_checks_from_v1_25 if {
	spec := {
		"os": {"name": "windows"},
		"securityContext": {"runAsNonRoot": true},
		"containers": [{"name": "app", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
	}
	count(pss.restricted.capabilities_restricted.deny) > 0 with input as at(spec, "restricted", 24)
	count(pss.restricted.capabilities_restricted.deny) == 0 with input as at(spec, "restricted", 25)
	count(pss.restricted.allow_privilege_escalation.deny) == 0 with input as at(spec, "restricted", 25)
	count(pss.restricted.seccomp_profile_restricted.deny) == 0 with input as at(spec, "restricted", 25)

	# The baseline check still applies at the baseline level, and is
	# superseded (as upstream) at the restricted level.
	count(pss.baseline.capabilities_baseline.deny) > 0 with input as at(spec, "baseline", 25)
	count(pss.baseline.capabilities_baseline.deny) == 0 with input as at(spec, "restricted", 25)
}

test_host_path_is_reported_once_at_restricted if {
	spec := object.union(restricted_spec, {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]})
	count(pss.baseline.host_path_volumes.deny) == 1 with input as at(spec, "baseline", 37)
	count(all_findings) == 1 with input as at(spec, "restricted", 37)
}

test_volume_types if {
	ok := object.union(restricted_spec, {"volumes": [{"name": "defaulted"}, {"name": "e", "emptyDir": {}}]})
	count(pss.restricted.restricted_volumes.deny) == 0 with input as at(ok, "restricted", 37)
	bad := object.union(restricted_spec, {"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]})
	findings := pss.restricted.restricted_volumes.deny with input as at(bad, "restricted", 37)
	{f.path | some f in findings} == {"spec.volumes[0].nfs"}
}

test_sysctl_allow_list_grows_with_the_version if {
	spec := {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}]}, "containers": []}
	count(pss.baseline.sysctls.deny) == 1 with input as at(spec, "baseline", 31)
	count(pss.baseline.sysctls.deny) == 0 with input as at(spec, "baseline", 32)
}

test_user_namespaces_relax_root_checks_from_v1_35 if {
	spec := object.union(restricted_spec, {
		"hostUsers": false,
		"securityContext": {"runAsNonRoot": false, "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
	})
	count(pss.restricted.run_as_non_root.deny) > 0 with input as at(spec, "restricted", 34)
	count(pss.restricted.run_as_user.deny) > 0 with input as at(spec, "restricted", 34)
	count(pss.restricted.run_as_non_root.deny) == 0 with input as at(spec, "restricted", 35)
	count(pss.restricted.run_as_user.deny) == 0 with input as at(spec, "restricted", 35)
}

test_seccomp_annotations_before_v1_19_fields_after if {
	annotated := {
		"metadata": {"name": "p", "annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
		"spec": {"containers": [{"name": "app"}]},
	}
	count(pss.baseline.seccomp_profile_baseline.deny) == 1 with input as {"pod": annotated, "pss_level": "baseline", "pss_version": 18}
	count(pss.baseline.seccomp_profile_baseline.deny) == 0 with input as {"pod": annotated, "pss_level": "baseline", "pss_version": 19}

	spec := {"containers": [{"name": "app", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]}
	count(pss.baseline.seccomp_profile_baseline.deny) == 0 with input as at(spec, "baseline", 18)
	count(pss.baseline.seccomp_profile_baseline.deny) == 1 with input as at(spec, "baseline", 19)
}

test_null_fields_count_as_unset if {
	spec := {
		"securityContext": null,
		"volumes": null,
		"containers": [{"name": "app", "securityContext": {"privileged": null, "procMount": null, "seLinuxOptions": {"type": null}}, "ports": [{"hostPort": null}]}],
	}
	count(all_findings) == 0 with input as at(spec, "baseline", 37)
}
