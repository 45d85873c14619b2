# Shared fixtures for the zero-trust pack's tests: a hardened workload that
# every rule accepts, and builders for inputs shaped exactly like the ones
# keycard's engine passes (input.object, input.pod, input.params).
package keycard.zt.fixtures_test

# The pack's parameter defaults, as in params.yaml (pack_tests.rs checks that
# the two stay equal).
defaults := {
	"allowed_registries": [],
	"require_image_digest": true,
	"required_labels": ["owner", "data-classification"],
	"allowed_label_values": {"data-classification": ["public", "internal", "confidential", "restricted"]},
	"allowed_host_paths": [],
	"token_service_accounts": [],
	"network_policy_exempt_namespaces": ["kube-system", "kube-public", "kube-node-lease"],
	"rbac_exempt_cluster_roles": ["cluster-admin", "admin", "edit", "view", "system:*"],
	"cluster_admin_subjects": [{"kind": "Group", "name": "system:masters"}],
}

hex64 := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

digest := concat("", ["sha256:", hex64])

image := concat("", ["registry.example.com/shop/web:1.4.2@", digest])

container := {
	"name": "app",
	"image": image,
	"securityContext": {
		"readOnlyRootFilesystem": true,
		"allowPrivilegeEscalation": false,
		"capabilities": {"drop": ["ALL"]},
	},
	"env": [
		{"name": "LOG_LEVEL", "value": "info"},
		{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
		{"name": "DB_PASSWORD_FILE", "value": "/run/secrets/db/password"},
	],
}

spec := {
	"serviceAccountName": "web",
	"automountServiceAccountToken": false,
	"containers": [container],
	"volumes": [{"name": "tmp", "emptyDir": {}}],
}

labels := {"app": "web", "owner": "team-shop", "data-classification": "internal"}

# A Deployment input around a pod spec.
deployment(pod_spec) := {
	"object": {
		"apiVersion": "apps/v1",
		"kind": "Deployment",
		"metadata": {"name": "web", "namespace": "shop", "labels": labels},
		"spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}},
	},
	"pod": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec},
	"params": defaults,
}

# The hardened workload.
good := deployment(spec)

# The hardened workload with the first container patched.
with_container(patch) := deployment(object.union(spec, {"containers": [object.union(container, patch)]}))

# The hardened workload with its pod spec patched.
with_spec(patch) := deployment(object.union(spec, patch))

# The hardened workload with parameters patched.
with_params(input_value, patch) := object.union(input_value, {"params": object.union(defaults, patch)})

# A non-pod object input.
plain(obj) := {"object": obj, "params": defaults}

# Every output of every rule of the pack for the current input and data.
# pack_tests.rs checks that `rules` lists every rule package of the pack.
all_findings := {[rule, v] |
	some rule in rules
	some v in data.keycard.zt[rule].deny
}

rules := [
	"allowed_registries",
	"image_digest",
	"required_labels",
	"host_path",
	"read_only_root_fs",
	"privileged",
	"privilege_escalation",
	"sa_token_automount",
	"default_service_account",
	"env_secret_literal",
	"default_deny_ingress",
	"default_deny_egress",
	"rbac_wildcard",
	"rbac_cluster_admin",
	"rbac_escalation_verbs",
	"service_exposure",
]

test_hardened_workload_passes_every_rule if {
	count(all_findings) == 0 with input as good
}

test_hardened_workload_passes_with_registry_allow_list if {
	count(all_findings) == 0 with input as with_params(good, {"allowed_registries": ["registry.example.com/shop"]})
}

test_non_pod_object_is_ignored_by_pod_rules if {
	findings := all_findings with input as plain({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}, "data": {"PASSWORD": "hunter2"}})
	count(findings) == 0
}

test_empty_input_yields_nothing if {
	count(all_findings) == 0 with input as {}
}
