package keycard.zt.allowed_registries_test

import data.keycard.zt.allowed_registries
import data.keycard.zt.fixtures_test as f

restricted(image, allowed) := f.with_params(f.with_container({"image": image}), {"allowed_registries": allowed})

test_no_allow_list_passes_anything if {
	inp1 := f.with_container({"image": "nginx:1.27"})
	count(allowed_registries.deny) == 0 with input as inp1
}

test_approved_host_passes if {
	inp2 := restricted(f.image, ["registry.example.com"])
	count(allowed_registries.deny) == 0 with input as inp2
}

test_trailing_slash_entry_passes if {
	inp3 := restricted(f.image, ["registry.example.com/"])
	count(allowed_registries.deny) == 0 with input as inp3
}

test_repository_entry_passes_tags_and_digests if {
	inp4 := restricted("registry.example.com/shop/web:1.0", ["registry.example.com/shop/web"])
	count(allowed_registries.deny) == 0 with input as inp4
	inp5 := restricted(concat("", ["registry.example.com/shop/web@", f.digest]), ["registry.example.com/shop/web"])
	count(allowed_registries.deny) == 0 with input as inp5
}

test_other_registry_fires if {
	inp6 := restricted("evil.example.net/shop/web:1.0", ["registry.example.com", "mirror.example.com"])
	deny := allowed_registries.deny with input as inp6
	deny == {{
		"msg": `container "app": image "evil.example.net/shop/web:1.0" is not from an approved registry (allowed: registry.example.com, mirror.example.com)`,
		"path": "spec.containers[0].image",
		"value": "evil.example.net/shop/web:1.0",
	}}
}

test_lookalike_host_fires if {
	inp7 := restricted("registry.example.com.evil.net/web:1", ["registry.example.com"])
	count(allowed_registries.deny) == 1 with input as inp7
}

test_other_port_is_another_registry if {
	inp8 := restricted("registry.example.com:5000/web:1", ["registry.example.com"])
	count(allowed_registries.deny) == 1 with input as inp8
}

test_repository_entry_does_not_allow_siblings if {
	inp9 := restricted("registry.example.com/shop/webhook:1", ["registry.example.com/shop/web"])
	count(allowed_registries.deny) == 1 with input as inp9
	inp10 := restricted("registry.example.com/other/web:1", ["registry.example.com/shop"])
	count(allowed_registries.deny) == 1 with input as inp10
}

test_unqualified_image_fires_with_explanation if {
	inp11 := restricted("nginx:1.27", ["registry.example.com"])
	deny := allowed_registries.deny with input as inp11
	some v in deny
	contains(v.msg, "names no registry host")
	v.value == "nginx:1.27"
}

test_localhost_registry_passes if {
	inp12 := restricted("localhost:5000/web:1", ["localhost:5000"])
	count(allowed_registries.deny) == 0 with input as inp12
}

test_init_and_ephemeral_containers_count if {
	spec := object.union(f.spec, {
		"initContainers": [{"name": "init", "image": "evil.example.net/init:1"}],
		"ephemeralContainers": [{"name": "debug", "image": "evil.example.net/debug:1"}],
	})
	inp := f.with_params(f.with_spec(spec), {"allowed_registries": ["registry.example.com"]})
	deny := allowed_registries.deny with input as inp
	{v.path | some v in deny} == {"spec.initContainers[0].image", "spec.ephemeralContainers[0].image"}
}

test_single_string_parameter_is_a_list if {
	inp13 := restricted("evil.example.net/web:1", "registry.example.com")
	count(allowed_registries.deny) == 1 with input as inp13
	inp14 := restricted(f.image, "registry.example.com")
	count(allowed_registries.deny) == 0 with input as inp14
}
