# METADATA
# title: Service-account token automount off unless declared
# description: >-
#   Kubernetes mounts a service-account token into every pod by default, so
#   any code execution in any pod can call the API server as that account.
#   Most workloads never talk to the API server; the token is a standing
#   credential that only helps an attacker. The pod spec must set
#   automountServiceAccountToken to false itself (a ServiceAccount-level
#   setting can change without the workload's review), unless the pod
#   declares that it needs the token with the annotation
#   keycard.dev/needs-api-token "true" on the pod or pod template, or runs
#   as a service account listed in the token_service_accounts parameter.
# custom:
#   id: zt-sa-token-automount
#   severity: medium
#   scope: pod
#   remediation: >-
#     Set spec.automountServiceAccountToken: false in the pod (template). If
#     the workload calls the Kubernetes API, annotate the pod template with
#     keycard.dev/needs-api-token: "true" and give it its own narrowly bound
#     service account.
#   controls:
#     cis: ["5.1.6"]
#     nsa: ["Pod security: protecting pod service account tokens"]
#     iso27001: ["A.5.17", "A.8.2"]
#     soc2: ["CC6.1", "CC6.3"]
package keycard.zt.sa_token_automount

import data.keycard.zt.lib
import data.keycard.zt.lib.has_pod
import data.keycard.zt.lib.pod_metadata
import data.keycard.zt.lib.spec

# The annotation a pod (template) carries to declare that it needs the token.
need_annotation := "keycard.dev/needs-api-token"

deny contains v if {
	has_pod
	value := object.get(spec, "automountServiceAccountToken", null)
	value != false
	not declared
	v := {
		"msg": sprintf("pod mounts a service-account token (spec.automountServiceAccountToken is not false) without declaring that it needs one (annotation %s: \"true\")", [need_annotation]),
		"path": "spec.automountServiceAccountToken",
		"value": value,
	}
}

declared if lib.obj(pod_metadata, "annotations")[need_annotation] == "true"

declared if service_account in lib.param_list("token_service_accounts")

service_account := sa if {
	sa := lib.str(spec, "serviceAccountName")
	sa != ""
} else := sa if {
	sa := lib.str(spec, "serviceAccount")
	sa != ""
} else := "default"
