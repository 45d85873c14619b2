# Shared fixtures for the zero-trust pack's tests: a hardened workload that
# every rule accepts, and builders for inputs shaped exactly like the ones
# keycard's engine passes (input.object, input.pod, input.params).
#
# Conventions of the pack's tests (pack_tests.rs checks the first two):
# - every rule has a <rule>_test.rego with at least one test named *pass*
#   (a good object passes) and one named *fire* (a bad shape fires);
# - tests assert whole findings (msg, path, value) where wording matters;
# - every `with` value is a variable bound by an earlier expression, never a
#   rule reference or a call written in place: regorus 0.14 evaluates such a
#   value as undefined (OPA does not), which would make tests vacuous there.
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
deployment(pod_spec) := labelled_deployment(pod_spec, labels)

labelled_deployment(pod_spec, workload_labels) := {
	"object": {
		"apiVersion": "apps/v1",
		"kind": "Deployment",
		"metadata": {"name": "web", "namespace": "shop", "labels": workload_labels},
		"spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}},
	},
	"pod": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec},
	"params": defaults,
}

# The hardened workload.
good := deployment(spec)

# base with the top-level keys of patch replaced (object.union would merge
# nested objects, keeping fields a test means to drop).
replace(base, patch) := object.union(object.remove(base, [k | some k, _ in patch]), patch)

# The hardened workload with fields of the first container replaced.
with_container(patch) := deployment(replace(spec, {"containers": [replace(container, patch)]}))

# The hardened workload with fields of its pod spec replaced.
with_spec(patch) := deployment(replace(spec, patch))

# The hardened workload with its own metadata.labels replaced.
with_labels(workload_labels) := labelled_deployment(spec, workload_labels)

# An input with some parameters replaced.
with_params(input_value, patch) := replace(input_value, {"params": replace(defaults, patch)})

# A non-pod object input.
plain(obj) := {"object": obj, "params": defaults}

# The outputs of every rule of the pack for the current input and data,
# by rule package. (Spelled out: a computed data.keycard.zt[name] would take
# in this package too.) pack_tests.rs checks that every rule package is here.
outputs := {
	"allowed_registries": data.keycard.zt.allowed_registries.deny,
	"image_digest": data.keycard.zt.image_digest.deny,
	"required_labels": data.keycard.zt.required_labels.deny,
	"host_path": data.keycard.zt.host_path.deny,
	"read_only_root_fs": data.keycard.zt.read_only_root_fs.deny,
	"privileged": data.keycard.zt.privileged.deny,
	"privilege_escalation": data.keycard.zt.privilege_escalation.deny,
	"sa_token_automount": data.keycard.zt.sa_token_automount.deny,
	"default_service_account": data.keycard.zt.default_service_account.deny,
	"env_secret_literal": data.keycard.zt.env_secret_literal.deny,
	"default_deny_ingress": data.keycard.zt.default_deny_ingress.deny,
	"default_deny_egress": data.keycard.zt.default_deny_egress.deny,
	"rbac_wildcard": data.keycard.zt.rbac_wildcard.deny,
	"rbac_cluster_admin": data.keycard.zt.rbac_cluster_admin.deny,
	"rbac_escalation_verbs": data.keycard.zt.rbac_escalation_verbs.deny,
	"service_exposure": data.keycard.zt.service_exposure.deny,
}

all_findings := {[rule, v] |
	some rule, found in outputs
	some v in found
}

test_hardened_workload_passes_every_rule if {
	count(all_findings) == 0 with input as good
}

test_hardened_workload_passes_with_registry_allow_list if {
	inp1 := with_params(good, {"allowed_registries": ["registry.example.com/shop"]})
	count(all_findings) == 0 with input as inp1
}

test_non_pod_object_is_ignored_by_pod_rules if {
	inp2 := plain({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}, "data": {"PASSWORD": "hunter2"}})
	findings := all_findings with input as inp2
	count(findings) == 0
}

test_empty_input_yields_nothing if {
	inp3 := {}
	count(all_findings) == 0 with input as inp3
}
