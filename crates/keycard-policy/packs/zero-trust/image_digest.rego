# METADATA
# title: Images pinned by digest
# description: >-
#   A tag is a mutable pointer: whoever can push to the repository can change
#   what ":v1.2" (let alone ":latest" or no tag at all) runs, without any
#   change to the manifest, so the reviewed image is not necessarily the one
#   that runs. A digest names exactly one image. With the
#   require_image_digest parameter set to false only ":latest" and untagged
#   images are reported.
# custom:
#   id: zt-image-digest
#   severity: high
#   scope: pod
#   remediation: >-
#     Reference the image by digest, e.g. registry.example.com/app:1.4.2@sha256:<64 hex>,
#     resolved at build time (crane digest, docker buildx imagetools inspect)
#     and updated by your dependency bot; never deploy ":latest" or an untagged image.
#   controls:
#     cis: ["5.5.1"]
#     nsa: ["Pod security: building secure container images"]
#     iso27001: ["A.8.19", "A.8.32"]
#     soc2: ["CC7.1", "CC8.1"]
package keycard.zt.image_digest

import data.keycard.zt.lib
import data.keycard.zt.lib.containers

deny contains v if {
	some c in containers
	image := lib.str(c.container, "image")
	image != ""
	not pinned(image)
	problem := issue(image)
	v := {
		"msg": sprintf("%s: image %q %s", [lib.container_label(c), image, problem]),
		"path": lib.container_path(c, "image"),
		"value": image,
	}
}

# Pinned: ends in a well-formed sha256 or sha512 digest. Plain string
# operations, not regex.match: they cost nothing next to compiling a pattern.
pinned(image) if {
	parts := split(image, "@")
	count(parts) == 2
	some algorithm, length in {"sha256:": 64, "sha512:": 128}
	startswith(parts[1], algorithm)
	hex := substring(parts[1], count(algorithm), -1)
	count(hex) == length
	trim(hex, "0123456789abcdef") == ""
}

issue(image) := "has a malformed digest" if {
	contains(image, "@")
} else := "uses the mutable tag :latest" if {
	tag(image) == "latest"
} else := "has no tag, which means :latest" if {
	not has_tag(image)
} else := "is not pinned by digest (tags are mutable)" if {
	lib.param_bool("require_image_digest", true)
}

# The tag: after the last ":" of the last path component (a ":" before the
# last "/" is a registry port).
tag(image) := t if {
	name := split(image, "@")[0]
	parts := split(name, "/")
	last := parts[count(parts) - 1]
	contains(last, ":")
	t := split(last, ":")[1]
}

has_tag(image) if tag(image) != ""
