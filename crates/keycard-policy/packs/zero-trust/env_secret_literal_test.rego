package keycard.zt.env_secret_literal_test

import data.keycard.zt.env_secret_literal
import data.keycard.zt.fixtures_test as f

# Credential-shaped values are assembled from pieces so that secret scanners
# do not flag this file; none of them is a real credential.
aws_key_id := concat("", ["AKIA", "IOSFODNN7", "EXAMPLE"])

private_key := concat("", ["-----BEGIN RSA ", "PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"])

github_token := concat("", ["ghp_", "0123456789abcdefghij0123456789abcdef"])

jwt := concat(".", ["eyJhbGciOiJIUzI1NiJ9", "eyJzdWIiOiJrZXljYXJkIn0", "c2lnbmF0dXJl"])

with_env(env) := f.with_container({"env": env})

finding(env) := v if {
	inp1 := with_env(env)
	deny := env_secret_literal.deny with input as inp1
	count(deny) == 1
	some v in deny
}

test_clean_env_passes if {
	inp2 := f.good
	count(env_secret_literal.deny) == 0 with input as inp2
}

test_secret_name_with_literal_fires if {
	finding([{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_PASSWORD", "value": "hunter2"}]) == {
		"msg": `container "app" sets env var "DB_PASSWORD" to a literal value (its name suggests a secret); the value is not shown`,
		"path": "spec.containers[0].env[1].value",
		"value": "[redacted]",
	}
}

test_every_secret_name_fires if {
	names := ["api_key", "ApiKey", "GITHUB_TOKEN", "client-secret", "PASSWD", "STRIPE_API_KEY", "SSH_PRIVATE_KEY", "AWS_SECRET_ACCESS_KEY", "DB_CREDENTIALS"]
	env := [{"name": n, "value": "x1"} | some n in names]
	inp3 := with_env(env)
	count(env_secret_literal.deny) == count(names) with input as inp3
}

test_reference_names_pass if {
	env := [
		{"name": "DB_PASSWORD_FILE", "value": "/run/secrets/db"},
		{"name": "TOKEN_URL", "value": "https://auth.example.com/token"},
		{"name": "SECRET_NAME", "value": "db-credentials"},
		{"name": "TOKEN_TTL", "value": "3600"},
		{"name": "API_KEY_HEADER", "value": "X-Api-Key"},
	]
	inp4 := with_env(env)
	count(env_secret_literal.deny) == 0 with input as inp4
}

test_value_from_and_empty_values_pass if {
	env := [
		{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
		{"name": "API_TOKEN", "value": ""},
		{"name": "API_TOKEN2", "value": "$(API_TOKEN)"},
		{"name": "API_TOKEN3"},
	]
	inp5 := with_env(env)
	count(env_secret_literal.deny) == 0 with input as inp5
}

test_aws_key_shape_fires_whatever_the_name if {
	v := finding([{"name": "CONFIG", "value": aws_key_id}])
	contains(v.msg, "it looks like an AWS access key id")
	v.value == "[redacted]"
	not contains(v.msg, aws_key_id)
}

test_private_key_shape_fires if {
	contains(finding([{"name": "TLS", "value": private_key}]).msg, "a private key")
}

test_github_token_shape_fires if {
	contains(finding([{"name": "GH", "value": github_token}]).msg, "a GitHub token")
}

test_jwt_shape_fires if {
	contains(finding([{"name": "BEARER", "value": jwt}]).msg, "a JSON Web Token")
}

test_url_with_password_fires if {
	contains(finding([{"name": "DATABASE_URL", "value": "postgres://app:s3cret@db:5432/app"}]).msg, "a URL with a password")
}

test_url_without_password_passes if {
	inp6 := with_env([{"name": "DATABASE_URL", "value": "postgres://db:5432/app"}])
	count(env_secret_literal.deny) == 0 with input as inp6
}

test_name_and_shape_report_once if {
	v := finding([{"name": "AWS_ACCESS_KEY", "value": aws_key_id}])
	contains(v.msg, "its name suggests a secret")
}

test_secret_never_echoed if {
	inp := with_env([{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "K", "value": aws_key_id}])
	deny := env_secret_literal.deny with input as inp
	count(deny) == 2
	every v in deny {
		not contains(v.msg, "hunter2")
		not contains(v.msg, aws_key_id)
		v.value == "[redacted]"
	}
}

test_init_and_ephemeral_containers_count if {
	spec := object.union(f.spec, {
		"initContainers": [{"name": "init", "env": [{"name": "PASSWORD", "value": "p"}]}],
		"ephemeralContainers": [{"name": "debug", "env": [{"name": "TOKEN", "value": "t"}]}],
	})
	inp7 := f.with_spec(spec)
	deny := env_secret_literal.deny with input as inp7
	{v.path | some v in deny} == {"spec.initContainers[0].env[0].value", "spec.ephemeralContainers[0].env[0].value"}
}
