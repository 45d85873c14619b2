package keycard.zt.image_digest_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.image_digest

finding(image) := v if {
	inp1 := f.with_container({"image": image})
	deny := image_digest.deny with input as inp1
	some v in deny
}

test_digest_passes if {
	inp2 := f.good
	count(image_digest.deny) == 0 with input as inp2
	inp3 := f.with_container({"image": concat("", ["registry.example.com/web@", f.digest])})
	count(image_digest.deny) == 0 with input as inp3
	sha512 := concat("", ["registry.example.com/web@sha512:", f.hex64, f.hex64])
	inp4 := f.with_container({"image": sha512})
	count(image_digest.deny) == 0 with input as inp4
}

test_latest_fires if {
	finding("registry.example.com/web:latest") == {
		"msg": `container "app": image "registry.example.com/web:latest" uses the mutable tag :latest`,
		"path": "spec.containers[0].image",
		"value": "registry.example.com/web:latest",
	}
}

test_untagged_fires if {
	contains(finding("registry.example.com/web").msg, "has no tag")
}

test_registry_port_is_not_a_tag if {
	contains(finding("registry.example.com:5000/web").msg, "has no tag")
}

test_tag_without_digest_fires if {
	contains(finding("registry.example.com/web:1.4.2").msg, "not pinned by digest")
}

test_non_hex_digest_fires if {
	bad := concat("", ["registry.example.com/web@sha256:", replace(f.hex64, "a", "z")])
	contains(finding(bad).msg, "malformed digest")
	short := concat("", ["registry.example.com/web@sha512:", f.hex64])
	contains(finding(short).msg, "malformed digest")
}

test_malformed_digest_fires if {
	contains(finding("registry.example.com/web@sha256:1234").msg, "malformed digest")
}

test_tag_allowed_when_digest_not_required if {
	inp := f.with_params(f.with_container({"image": "registry.example.com/web:1.4.2"}), {"require_image_digest": false})
	count(image_digest.deny) == 0 with input as inp
}

test_latest_fires_when_digest_not_required if {
	inp := f.with_params(f.with_container({"image": "registry.example.com/web:latest"}), {"require_image_digest": false})
	count(image_digest.deny) == 1 with input as inp
	inp2 := f.with_params(f.with_container({"image": "registry.example.com/web"}), {"require_image_digest": false})
	count(image_digest.deny) == 1 with input as inp2
}

test_one_finding_per_container if {
	spec := object.union(f.spec, {
		"initContainers": [{"name": "init", "image": "busybox"}],
		"containers": [f.container, object.union(f.container, {"name": "side", "image": "registry.example.com/side:latest"})],
	})
	inp5 := f.with_spec(spec)
	deny := image_digest.deny with input as inp5
	{v.path | some v in deny} == {"spec.initContainers[0].image", "spec.containers[1].image"}
	count(deny) == 2
}
