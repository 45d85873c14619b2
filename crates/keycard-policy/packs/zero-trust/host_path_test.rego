package keycard.zt.host_path_test

import data.keycard.zt.fixtures_test as f
import data.keycard.zt.host_path

mounting(path, allowed) := f.with_params(
	f.with_spec({"volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "host", "hostPath": {"path": path}}]}),
	{"allowed_host_paths": allowed},
)

test_no_host_path_passes if {
	inp1 := f.good
	count(host_path.deny) == 0 with input as inp1
}

test_host_path_fires_without_allow_list if {
	inp2 := mounting("/var/run/docker.sock", [])
	deny := host_path.deny with input as inp2
	deny == {{
		"msg": `volume "host" mounts host path "/var/run/docker.sock", which is not under an allowed prefix (allowed: none)`,
		"path": "spec.volumes[1].hostPath.path",
		"value": "/var/run/docker.sock",
	}}
}

test_allowed_prefix_passes if {
	inp3 := mounting("/var/log/pods", ["/var/log"])
	count(host_path.deny) == 0 with input as inp3
	inp4 := mounting("/var/log", ["/var/log/"])
	count(host_path.deny) == 0 with input as inp4
	inp5 := mounting("/var/log/", ["/var/log"])
	count(host_path.deny) == 0 with input as inp5
}

test_prefix_matches_whole_components if {
	inp6 := mounting("/var/logs", ["/var/log"])
	count(host_path.deny) == 1 with input as inp6
	inp7 := mounting("/var", ["/var/log"])
	count(host_path.deny) == 1 with input as inp7
}

test_traversal_is_never_allowed if {
	inp8 := mounting("/var/log/../../etc", ["/var/log"])
	count(host_path.deny) == 1 with input as inp8
	inp9 := mounting("/var/log/..", ["/var/log"])
	count(host_path.deny) == 1 with input as inp9
}

test_root_prefix_allows_everything if {
	inp10 := mounting("/etc", ["/"])
	count(host_path.deny) == 0 with input as inp10
}

test_relative_prefixes_are_ignored if {
	inp11 := mounting("/etc/app", ["etc"])
	count(host_path.deny) == 1 with input as inp11
}

test_missing_path_fires if {
	inp := f.with_spec({"volumes": [{"name": "host", "hostPath": {}}]})
	deny := host_path.deny with input as inp
	some v in deny
	v.value == ""
}
