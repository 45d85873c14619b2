# METADATA
# title: No LoadBalancer or NodePort Services
# description: >-
#   A LoadBalancer Service puts the workload on an external address and a
#   NodePort Service opens its port on every node's address, bypassing the
#   identity-aware gateway or ingress where authentication, rate limits and
#   audit live. Exposure should be a deliberate, reviewed exception recorded
#   with an owner and an expiry.
# custom:
#   id: zt-service-exposure
#   severity: medium
#   scope: object
#   kinds: [Service]
#   remediation: >-
#     Use type ClusterIP and publish the service through the ingress or
#     gateway that authenticates callers; if direct exposure is required, limit
#     spec.loadBalancerSourceRanges and record an exception with an owner and
#     an expiry.
#   controls:
#     nsa: ["Network separation and hardening"]
#     iso27001: ["A.8.20", "A.8.22"]
#     soc2: ["CC6.6"]
package keycard.zt.service_exposure

import data.keycard.zt.lib
import data.keycard.zt.lib.input_object
import data.keycard.zt.lib.kind
import data.keycard.zt.lib.object_label

deny contains v if {
	kind == "Service"
	svc_type := lib.str(lib.obj(input_object, "spec"), "type")
	effect := exposure[svc_type]
	v := {
		"msg": sprintf("%s is of type %s, which %s", [object_label, svc_type, effect]),
		"path": "spec.type",
		"value": svc_type,
	}
}

exposure := {
	"LoadBalancer": "puts it on an external load-balancer address",
	"NodePort": "opens its port on every node's address",
}
