package keycard.zt.service_exposure_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.service_exposure

service(type) := {
	"apiVersion": "v1",
	"kind": "Service",
	"metadata": {"name": "web", "namespace": "shop"},
	"spec": {"type": type, "ports": [{"port": 80}]},
}

findings(obj) := d if {
	inp1 := f.plain(obj)
	d := service_exposure.deny with input as inp1
}

test_cluster_ip_passes if {
	count(findings(service("ClusterIP"))) == 0
	count(findings(object.remove(service("x"), ["spec"]))) == 0
}

test_load_balancer_fires if {
	findings(service("LoadBalancer")) == {{
		"msg": `Service "shop/web" is of type LoadBalancer, which puts it on an external load-balancer address`,
		"path": "spec.type",
		"value": "LoadBalancer",
	}}
}

test_node_port_fires if {
	findings(service("NodePort")) == {{
		"msg": `Service "shop/web" is of type NodePort, which opens its port on every node's address`,
		"path": "spec.type",
		"value": "NodePort",
	}}
}

test_other_kinds_are_ignored if {
	count(findings(object.union(service("LoadBalancer"), {"kind": "Endpoints"}))) == 0
}
