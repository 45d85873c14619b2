# METADATA
# title: No secret-looking literals in environment variables
# description: >-
#   A credential written as a literal env value lives in Git, in every copy
#   of the manifest, in the object the API server stores and shows to anyone
#   who can read the workload, and it is static: it never rotates. Env vars
#   whose name says password, passphrase, token, secret, API key, private or
#   access key or credential and that carry a literal value are reported,
#   and so is any literal shaped like a well-known credential (cloud access
#   key ids, private keys, GitHub, Slack and Stripe tokens, JWTs, URLs with a
#   password). Names ending in _FILE, _PATH, _URL, _NAME, _ID and similar hold
#   references, not secrets, and are judged by their value only. The
#   finding's value is always masked.
# custom:
#   id: zt-env-secret-literal
#   severity: high
#   scope: pod
#   remediation: >-
#     Rotate the exposed credential, then remove the literal: reference a
#     Secret with valueFrom.secretKeyRef (better, mount it as a file), or let
#     the workload fetch short-lived credentials with its keycard identity.
#   controls:
#     cis: ["5.4.1"]
#     nsa: ["Network separation and hardening: secrets"]
#     iso27001: ["A.5.17", "A.8.24"]
#     soc2: ["CC6.1", "CC6.7"]
package keycard.zt.env_secret_literal

import data.keycard.zt.lib
import data.keycard.zt.lib.containers

# What a finding shows instead of the value.
mask := "[redacted]"

deny contains v if {
	some c in containers
	some i, env in lib.arr(c.container, "env")
	is_object(env)
	value := lib.str(env, "value")
	value != ""
	not reference(value)
	name := lib.str(env, "name")
	why := reason(name, value)
	v := {
		"msg": sprintf("%s sets env var %q to a literal value (%s); the value is not shown", [
			lib.container_label(c), name, why,
		]),
		"path": lib.container_path(c, sprintf("env[%d].value", [i])),
		"value": mask,
	}
}

# One reason per env var, so each field is reported once.
reason(name, value) := "its name suggests a secret" if {
	secret_name(name)
} else := sprintf("it looks like %s", [kinds[0]]) if {
	kinds := [shape.kind |
		some shape in shapes
		some hint in shape.hints
		contains(value, hint)
		regex.match(shape.pattern, value)
	]
	count(kinds) > 0
}

# Names are compared in lower case with "-" as "_", by substring rather than
# regex: this runs for every literal env var of every container.
secret_name(name) if {
	n := replace(lower(name), "-", "_")
	some word in secret_words
	contains(n, word)
	not reference_name(n)
}

secret_words := [
	"password", "passwd", "passphrase", "secret", "token",
	"api_key", "apikey", "private_key", "privatekey", "access_key", "accesskey",
	"credential", "auth_key", "authkey",
]

reference_name(n) if {
	some suffix in reference_suffixes
	endswith(n, suffix)
}

reference_suffixes := [
	"_file", "_path", "_dir", "_url", "_uri", "_endpoint", "_host", "_name", "_id",
	"_user", "_username", "_ttl", "_timeout", "_expiry", "_expires", "_lifetime",
	"_length", "_size", "_type", "_header", "_enabled", "_mode", "_version",
]

# A value that is only a $(VAR) reference to another env var is expanded by
# the kubelet and is not a literal secret.
reference(value) if {
	startswith(value, "$(")
	endswith(value, ")")
	not contains(substring(value, 2, count(value) - 3), ")")
}

# Credential shapes, first match wins (an ordered list keeps the reason
# deterministic). A pattern is only tried when the value contains one of its
# hints, so the common case costs a few substring searches, no regex.
# (No (?i) or \s: regorus builds its regex engine without Unicode classes.)
shapes := [
	{"kind": "an AWS access key id", "hints": ["AKIA", "ASIA"], "pattern": `(^|[^A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}([^A-Z0-9]|$)`},
	{"kind": "a private key", "hints": ["PRIVATE KEY"], "pattern": `-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----`},
	{"kind": "a GitHub token", "hints": ["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"], "pattern": `(^|[^A-Za-z0-9])(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})`},
	{"kind": "a Slack token", "hints": ["xox"], "pattern": `xox[abposr]-[A-Za-z0-9-]{10,}`},
	{"kind": "a Stripe secret key", "hints": ["_live_"], "pattern": `(sk|rk)_live_[A-Za-z0-9]{20,}`},
	{"kind": "a Google API key", "hints": ["AIza"], "pattern": `AIza[A-Za-z0-9_-]{35}`},
	{"kind": "a JSON Web Token", "hints": ["eyJ"], "pattern": `^eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*$`},
	{"kind": "a URL with a password", "hints": ["://"], "pattern": `^[A-Za-z][A-Za-z0-9+.-]*://[^/ \t\r\n:@]+:[^/ \t\r\n@]+@`},
]
