//! Kubernetes attestation: the caller's pod UID and container ID from
//! `/proc/<pid>/cgroup`, then the pod itself from a [`PodLookup`] (the
//! kubelet's `/pods`, see [`super::kubelet`], or the API server), matched
//! on both the pod UID and the container ID.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keycard_core::Selector;

use super::{AttestError, Attestor, PeerCred};

/// `/proc/<pid>/cgroup` larger than this is refused.
const MAX_CGROUP_BYTES: u64 = 64 * 1024;

/// What the cgroup path says about the caller's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupContainer {
    /// The pod UID (dashed form), when the path names a pod.
    pub pod_uid: Option<String>,
    /// The container ID (64 hex digits).
    pub container_id: String,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    /// Container name in the pod spec.
    pub name: String,
    /// Image as the pod status reports it.
    pub image: String,
    /// Container ID without the `runtime://` prefix.
    pub container_id: String,
}

/// What attestation needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Service account name.
    pub service_account: String,
    /// Node the pod runs on.
    pub node_name: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Containers (regular, init and ephemeral) with their runtime IDs.
    pub containers: Vec<ContainerInfo>,
}

/// Finds a pod by UID or by one of its container IDs.
pub trait PodLookup: Send + Sync + 'static {
    /// The pod holding `container_id` (and with UID `pod_uid` when given);
    /// `None` when no such pod is known.
    fn find_pod(
        &self,
        pod_uid: Option<&str>,
        container_id: &str,
    ) -> Result<Option<PodInfo>, AttestError>;
}

/// The pod that holds `container_id` (and, when the cgroup named one, has
/// UID `pod_uid`). Both must match: a pod UID alone is not enough, so a
/// container that its pod's status does not list yet is not attested with
/// the pod's identity.
pub fn match_pod<'a>(
    pods: &'a [PodInfo],
    pod_uid: Option<&str>,
    container_id: &str,
) -> Option<&'a PodInfo> {
    pods.iter().find(|p| {
        pod_uid.is_none_or(|uid| p.uid == uid)
            && p.containers.iter().any(|c| c.container_id == container_id)
    })
}

/// A fixed list of pods, as read from the kubelet's `/pods` (see
/// [`pods_from_pod_list_json`]).
#[derive(Debug, Clone, Default)]
pub struct StaticPodLookup {
    /// The pods.
    pub pods: Vec<PodInfo>,
}

impl PodLookup for StaticPodLookup {
    fn find_pod(
        &self,
        pod_uid: Option<&str>,
        container_id: &str,
    ) -> Result<Option<PodInfo>, AttestError> {
        Ok(match_pod(&self.pods, pod_uid, container_id).cloned())
    }
}

/// How a [`RefreshingPodLookup`] caches and refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOptions {
    /// A fetched pod list answers lookups for this long; past it, the next
    /// lookup fetches again (labels change, pods go).
    pub max_age: Duration,
    /// Fetches are at least this far apart, however many lookups miss.
    pub min_refresh: Duration,
    /// When the cgroup names a pod that the list does not hold (yet), keep
    /// fetching, `min_refresh` apart, for this long: the kubelet lists a
    /// container's ID shortly after the container starts.
    pub new_pod_wait: Duration,
}

impl Default for RefreshOptions {
    fn default() -> Self {
        RefreshOptions {
            max_age: Duration::from_secs(10),
            min_refresh: Duration::from_millis(250),
            new_pod_wait: Duration::from_secs(2),
        }
    }
}

/// Polls no faster than this while waiting for a new pod.
const MIN_POLL: Duration = Duration::from_millis(20);

struct PodCache {
    fetched_at: Option<Instant>,
    pods: Vec<PodInfo>,
}

/// A pod list fetched on demand (from the kubelet's `/pods` or the API by
/// `fetch`) and cached for [`RefreshOptions::max_age`]. A lookup that misses
/// fetches again at once (so a new pod is found on the first call after it
/// starts), fetches stay [`RefreshOptions::min_refresh`] apart, and a pod
/// named by the cgroup but not listed yet is waited for up to
/// [`RefreshOptions::new_pod_wait`]. A failed fetch fails the lookup: a
/// stale list never answers.
pub struct RefreshingPodLookup<F> {
    fetch: F,
    options: RefreshOptions,
    cache: Mutex<PodCache>,
}

impl<F> std::fmt::Debug for RefreshingPodLookup<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshingPodLookup")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<F> RefreshingPodLookup<F>
where
    F: Fn() -> Result<Vec<PodInfo>, AttestError> + Send + Sync + 'static,
{
    /// Fetches with `fetch` on a miss, at most once per `min_refresh`,
    /// without waiting for new pods; a fetched list never goes stale.
    pub fn new(fetch: F, min_refresh: Duration) -> Self {
        Self::with_options(
            fetch,
            RefreshOptions {
                max_age: Duration::MAX,
                min_refresh,
                new_pod_wait: Duration::ZERO,
            },
        )
    }

    /// Fetches with `fetch` as `options` say.
    pub fn with_options(fetch: F, options: RefreshOptions) -> Self {
        RefreshingPodLookup {
            fetch,
            options,
            cache: Mutex::new(PodCache {
                fetched_at: None,
                pods: Vec::new(),
            }),
        }
    }
}

impl<F> PodLookup for RefreshingPodLookup<F>
where
    F: Fn() -> Result<Vec<PodInfo>, AttestError> + Send + Sync + 'static,
{
    fn find_pod(
        &self,
        pod_uid: Option<&str>,
        container_id: &str,
    ) -> Result<Option<PodInfo>, AttestError> {
        let o = self.options;
        let wait_for = if pod_uid.is_some() {
            o.new_pod_wait
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + wait_for;
        let mut fetched_here = false;
        let poisoned = |_| AttestError::PodLookup("pod cache poisoned".into());
        let mut cache = self.cache.lock().map_err(poisoned)?;
        loop {
            let age = cache.fetched_at.map(|at| at.elapsed());
            let fresh = age.is_some_and(|a| a < o.max_age);
            if fresh || fetched_here {
                if let Some(p) = match_pod(&cache.pods, pod_uid, container_id) {
                    return Ok(Some(p.clone()));
                }
            }
            // A miss or a stale list: fetch, no sooner than `min_refresh`
            // after the last fetch (and than MIN_POLL after our own).
            let gap = if fetched_here {
                o.min_refresh.max(MIN_POLL)
            } else {
                o.min_refresh
            };
            let wait = age.map_or(Duration::ZERO, |a| gap.saturating_sub(a));
            if !wait.is_zero() {
                // A miss in a list that is current: give up at the deadline.
                if (fresh || fetched_here) && Instant::now() + wait > deadline {
                    return Ok(None);
                }
                drop(cache);
                std::thread::sleep(wait);
                cache = self.cache.lock().map_err(poisoned)?;
                // Another lookup may have fetched meanwhile: look again.
                if cache.fetched_at.is_some_and(|at| at.elapsed() < gap) {
                    fetched_here = true;
                    continue;
                }
            }
            let pods = (self.fetch)()?;
            cache.fetched_at = Some(Instant::now());
            cache.pods = pods;
            fetched_here = true;
        }
    }
}

/// Parses a Kubernetes `PodList` (the kubelet's `/pods`, or the API's
/// `/api/v1/pods?fieldSelector=spec.nodeName=<node>`).
pub fn pods_from_pod_list_json(json: &[u8]) -> Result<Vec<PodInfo>, AttestError> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| AttestError::PodLookup(format!("pod list: {e}")))?;
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or_else(|| AttestError::PodLookup("pod list: no `items` array".into()))?;
    let s = |v: &serde_json::Value, path: &[&str]| -> String {
        let mut cur = v;
        for p in path {
            match cur.get(p) {
                Some(n) => cur = n,
                None => return String::new(),
            }
        }
        cur.as_str().unwrap_or_default().to_string()
    };
    let mut pods = Vec::with_capacity(items.len());
    for item in items {
        let labels = item
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(|l| l.as_object())
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let mut containers = Vec::new();
        for key in [
            "containerStatuses",
            "initContainerStatuses",
            "ephemeralContainerStatuses",
        ] {
            let Some(list) = item
                .get("status")
                .and_then(|st| st.get(key))
                .and_then(|l| l.as_array())
            else {
                continue;
            };
            for c in list {
                let id = s(c, &["containerID"]);
                let id = id.split_once("://").map_or(id.as_str(), |(_, i)| i);
                // A container that has not started has no ID yet; it can
                // match nothing.
                if id.is_empty() {
                    continue;
                }
                containers.push(ContainerInfo {
                    name: s(c, &["name"]),
                    image: s(c, &["image"]),
                    container_id: id.to_ascii_lowercase(),
                });
            }
        }
        let mut sa = s(item, &["spec", "serviceAccountName"]);
        if sa.is_empty() {
            sa = s(item, &["spec", "serviceAccount"]);
        }
        pods.push(PodInfo {
            namespace: s(item, &["metadata", "namespace"]),
            name: s(item, &["metadata", "name"]),
            uid: s(item, &["metadata", "uid"]),
            service_account: sa,
            node_name: s(item, &["spec", "nodeName"]),
            labels,
            containers,
        });
    }
    Ok(pods)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn pod_uid_of(segment: &str) -> Option<String> {
    let seg = segment.strip_suffix(".slice").unwrap_or(segment);
    let idx = seg.rfind("pod")?;
    if idx != 0 && !seg[..idx].ends_with('-') {
        return None;
    }
    let uid = &seg[idx + 3..];
    let ok_len = uid.len() == 36 || uid.len() == 32;
    let ok_chars = uid
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    (ok_len && ok_chars).then(|| uid.replace('_', "-").to_ascii_lowercase())
}

fn container_id_of(segment: &str) -> Option<String> {
    if segment.contains("conmon") {
        return None;
    }
    let seg = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = seg.rsplit('-').next().unwrap_or(seg);
    is_container_id(id).then(|| id.to_ascii_lowercase())
}

/// Finds the container (and pod) in the text of `/proc/<pid>/cgroup`:
/// cgroup v1 (`N:controllers:/path`) and v2 (`0::/path`, also relative to a
/// private cgroup namespace: `0::/../../kubepods-…`), with the cgroupfs
/// (`/kubepods/burstable/pod<uid>/<id>`) and systemd
/// (`kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`) drivers
/// of containerd, CRI-O (`crio-<id>`) and Docker (`docker-<id>`). `None`
/// when the caller is in no container.
///
/// Under a pod, the container is the first container-shaped segment after
/// the pod's: a sub-cgroup that a container makes inside its own (named
/// like another container) does not change who it is.
pub fn parse_cgroup_container(cgroup: &str) -> Option<CgroupContainer> {
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mut pod_uid = None;
        let mut container_id = None;
        for seg in path.split('/') {
            if let Some(uid) = pod_uid_of(seg) {
                pod_uid = Some(uid);
                container_id = None;
            } else if let Some(id) = container_id_of(seg) {
                if pod_uid.is_none() || container_id.is_none() {
                    container_id = Some(id);
                }
            }
        }
        if let Some(container_id) = container_id {
            return Some(CgroupContainer {
                pod_uid,
                container_id,
            });
        }
    }
    None
}

/// The Kubernetes workload attestor.
pub struct K8sAttestor {
    proc_root: PathBuf,
    lookup: Arc<dyn PodLookup>,
}

impl std::fmt::Debug for K8sAttestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sAttestor")
            .field("proc_root", &self.proc_root)
            .finish_non_exhaustive()
    }
}

impl K8sAttestor {
    /// Reads `/proc`, asks `lookup` for pods.
    pub fn new(lookup: Arc<dyn PodLookup>) -> Self {
        Self::with_proc_root("/proc", lookup)
    }
    /// Reads `proc_root/<pid>/cgroup` (for tests).
    pub fn with_proc_root(proc_root: impl Into<PathBuf>, lookup: Arc<dyn PodLookup>) -> Self {
        K8sAttestor {
            proc_root: proc_root.into(),
            lookup,
        }
    }

    /// The selectors of a pod and (when found in it) its container.
    pub fn selectors_of(pod: &PodInfo, container_id: &str) -> Vec<Selector> {
        let mut values = vec![
            format!("ns:{}", pod.namespace),
            format!("sa:{}", pod.service_account),
            format!("pod-name:{}", pod.name),
            format!("pod-uid:{}", pod.uid),
            format!("node-name:{}", pod.node_name),
        ];
        for (k, v) in &pod.labels {
            values.push(format!("pod-label:{k}:{v}"));
        }
        if let Some(c) = pod
            .containers
            .iter()
            .find(|c| c.container_id == container_id)
        {
            values.push(format!("container-name:{}", c.name));
            values.push(format!("container-image:{}", c.image));
        }
        values
            .into_iter()
            .filter_map(|v| Selector::new("k8s", &v).ok())
            .collect()
    }
}

impl Attestor for K8sAttestor {
    fn attest(&self, peer: &PeerCred) -> Result<Vec<Selector>, AttestError> {
        let pid = peer.pid;
        if pid <= 0 {
            return Err(AttestError::NoPid);
        }
        let path = self.proc_root.join(pid.to_string()).join("cgroup");
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_CGROUP_BYTES).read_to_string(&mut text))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
                _ => AttestError::Proc {
                    pid,
                    what: "cgroup",
                    reason: e.to_string(),
                },
            })?;
        let Some(found) = parse_cgroup_container(&text) else {
            return Ok(Vec::new());
        };
        match self
            .lookup
            .find_pod(found.pod_uid.as_deref(), &found.container_id)?
        {
            Some(pod) => Ok(Self::selectors_of(&pod, &found.container_id)),
            // In a pod the kubelet does not know (yet): refuse rather than
            // hand out a container's identity without its pod's selectors.
            None if found.pod_uid.is_some() => {
                let uid = found.pod_uid.as_deref().unwrap_or_default();
                tracing::warn!(pid, pod_uid = uid, container_id = %found.container_id, "caller's pod or container is not known to the kubelet");
                Err(AttestError::PodLookup(format!(
                    "pod {uid} with container {} is not known to the kubelet",
                    found.container_id
                )))
            }
            // A container outside Kubernetes (plain Docker): no k8s selectors.
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const CID: &str = "3f0a8d3c2b1e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
    const UID: &str = "4a6e8c2e-1b2c-4d5e-8f90-0123456789ab";

    #[test]
    fn cgroup_layouts() {
        let uid_ = UID.replace('-', "_");
        let cases = [
            // cgroup v1, cgroupfs driver (containerd / docker)
            format!("12:memory:/kubepods/burstable/pod{UID}/{CID}\n11:cpu:/kubepods/burstable/pod{UID}/{CID}"),
            // cgroup v1, besteffort, systemd lines mixed in
            format!("1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}\n0::/"),
            // cgroup v2, systemd driver, containerd
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{CID}.scope"),
            // cgroup v2, systemd driver, CRI-O
            format!("0::/kubepods.slice/kubepods-pod{uid_}.slice/crio-{CID}.scope"),
            // cgroup v2, systemd driver, docker (cri-dockerd), guaranteed QoS
            format!("0::/kubepods.slice/kubepods-pod{uid_}.slice/docker-{CID}.scope"),
            // cgroup v2, cgroupfs driver
            format!("0::/kubepods/pod{UID}/{CID}"),
            // kind: nested under the node container's cgroup
            format!("0::/system.slice/docker-{}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{uid_}.slice/cri-containerd-{CID}.scope", "a".repeat(64)),
        ];
        for c in &cases {
            assert_eq!(
                parse_cgroup_container(c),
                Some(CgroupContainer {
                    pod_uid: Some(UID.to_string()),
                    container_id: CID.to_string()
                }),
                "{c}"
            );
        }
    }

    /// Whole `/proc/<pid>/cgroup` files, as the kernel writes them, per
    /// cgroup version, driver and runtime: (case, text).
    fn realistic_cgroup_files() -> Vec<(&'static str, String)> {
        let uid_ = UID.replace('-', "_");
        let v1 = |path: &str| {
            [
                "12:hugetlb",
                "11:memory",
                "10:cpu,cpuacct",
                "9:pids",
                "8:devices",
                "7:net_cls,net_prio",
                "6:freezer",
                "5:blkio",
                "4:perf_event",
                "3:cpuset",
                "2:rdma",
                "1:name=systemd",
            ]
            .iter()
            .map(|c| format!("{c}:{path}\n"))
            .collect::<String>()
                + "0::/\n"
        };
        vec![
            (
                "v1 cgroupfs containerd burstable",
                v1(&format!("/kubepods/burstable/pod{UID}/{CID}")),
            ),
            (
                "v1 cgroupfs docker besteffort",
                v1(&format!("/kubepods/besteffort/pod{UID}/{CID}")),
            ),
            (
                "v1 cgroupfs cri-o",
                v1(&format!("/kubepods/burstable/pod{UID}/crio-{CID}")),
            ),
            (
                "v1 systemd containerd",
                v1(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{CID}.scope")),
            ),
            (
                "v1 systemd cri-o guaranteed",
                v1(&format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{CID}.scope")),
            ),
            (
                "v1 systemd docker",
                v1(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/docker-{CID}.scope")),
            ),
            (
                "v2 systemd containerd",
                format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{CID}.scope\n"),
            ),
            (
                "v2 systemd cri-o",
                format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-{CID}.scope\n"),
            ),
            (
                "v2 cgroupfs containerd",
                format!("0::/kubepods/besteffort/pod{UID}/{CID}\n"),
            ),
            (
                "v2 cgroupfs cri-o",
                format!("0::/kubepods/pod{UID}/crio-{CID}\n"),
            ),
            (
                "v2 read from a pod with a private cgroup namespace",
                format!("0::/../../kubepods-besteffort-pod{uid_}.slice/cri-containerd-{CID}.scope\n"),
            ),
            (
                "v2 a process in a sub-cgroup of its container",
                format!("0::/kubepods/burstable/pod{UID}/{CID}/init.scope\n"),
            ),
            (
                "v2 uppercase hex in the path",
                format!("0::/kubepods/burstable/pod{}/{}\n", UID.to_uppercase(), CID.to_uppercase()),
            ),
        ]
    }

    #[test]
    fn cgroup_files_of_every_runtime_and_driver() {
        for (case, text) in realistic_cgroup_files() {
            assert_eq!(
                parse_cgroup_container(&text),
                Some(CgroupContainer {
                    pod_uid: Some(UID.to_string()),
                    container_id: CID.to_string()
                }),
                "{case}: {text}"
            );
        }
    }

    #[test]
    fn a_sub_cgroup_named_like_another_container_does_not_change_the_container() {
        let other = "c".repeat(64);
        let text = format!("0::/kubepods/burstable/pod{UID}/{CID}/cri-containerd-{other}.scope\n");
        assert_eq!(
            parse_cgroup_container(&text).map(|c| c.container_id),
            Some(CID.to_string())
        );
    }

    #[test]
    fn a_pod_uid_alone_matches_no_container() {
        let pods = pod_list();
        // The right pod, a container its status does not list (yet).
        assert!(match_pod(&pods, Some(UID), &"d".repeat(64)).is_none());
        // A listed container, claimed under another pod's UID.
        assert!(match_pod(&pods, Some("5a6e8c2e-1b2c-4d5e-8f90-0123456789ab"), CID).is_none());
        assert_eq!(
            match_pod(&pods, Some(UID), CID).map(|p| p.name.as_str()),
            Some("web-1")
        );
        assert_eq!(
            match_pod(&pods, None, CID).map(|p| p.name.as_str()),
            Some("web-1")
        );
    }

    #[test]
    fn cgroup_without_pod_or_container() {
        assert_eq!(
            parse_cgroup_container(&format!("0::/system.slice/docker-{CID}.scope")),
            Some(CgroupContainer {
                pod_uid: None,
                container_id: CID.to_string()
            })
        );
        assert_eq!(
            parse_cgroup_container(&format!("5:cpu:/docker/{CID}")),
            Some(CgroupContainer {
                pod_uid: None,
                container_id: CID.to_string()
            })
        );
        for none in [
            "0::/user.slice/user-1000.slice/session-2.scope",
            "0::/",
            "",
            "garbage",
            "0::/kubepods/podnot-a-uid/xyz",
            // CRI-O's monitor process is not the container
            &format!(
                "0::/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{CID}.scope",
                UID.replace('-', "_")
            ),
        ] {
            assert_eq!(parse_cgroup_container(none), None, "{none}");
        }
    }

    fn pod_list() -> Vec<PodInfo> {
        let json = format!(
            r#"{{"kind":"PodList","items":[{{
              "metadata":{{"name":"web-1","namespace":"prod","uid":"{UID}","labels":{{"app":"web","tier":"fe"}}}},
              "spec":{{"serviceAccountName":"web-sa","nodeName":"node-a"}},
              "status":{{"containerStatuses":[{{"name":"web","image":"nginx:1.27","containerID":"containerd://{CID}"}}],
                         "initContainerStatuses":[{{"name":"init","image":"busybox","containerID":"containerd://{}"}}]}}
            }}]}}"#,
            "b".repeat(64)
        );
        pods_from_pod_list_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn pod_list_and_selectors() {
        let pods = pod_list();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].containers.len(), 2);
        assert_eq!(pods[0].containers[0].container_id, CID);
        let sel: Vec<String> = K8sAttestor::selectors_of(&pods[0], CID)
            .iter()
            .map(|s| s.to_string())
            .collect();
        for want in [
            "k8s:ns:prod",
            "k8s:sa:web-sa",
            "k8s:pod-name:web-1",
            &format!("k8s:pod-uid:{UID}"),
            "k8s:node-name:node-a",
            "k8s:pod-label:app:web",
            "k8s:pod-label:tier:fe",
            "k8s:container-name:web",
            "k8s:container-image:nginx:1.27",
        ] {
            assert!(sel.iter().any(|s| s == want), "{want} in {sel:?}");
        }
        assert!(pods_from_pod_list_json(b"{}").is_err());
        assert!(pods_from_pod_list_json(b"not json").is_err());
    }

    #[test]
    fn refreshing_lookup_waits_for_a_new_pod_within_bounds() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Never cached, never found: gives up at the deadline, having
        // fetched `min_refresh` apart.
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup = RefreshingPodLookup::with_options(
            move || {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(Vec::new())
            },
            RefreshOptions {
                max_age: Duration::ZERO,
                min_refresh: Duration::from_millis(50),
                new_pod_wait: Duration::from_millis(300),
            },
        );
        let started = Instant::now();
        assert_eq!(lookup.find_pod(Some(UID), CID).unwrap(), None);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}"
        );
        let n = calls.load(Ordering::SeqCst);
        assert!((2..=8).contains(&n), "{n} fetches");
        // Without a pod UID (a plain container) there is no waiting.
        calls.store(0, Ordering::SeqCst);
        assert_eq!(lookup.find_pod(None, CID).unwrap(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Found on the third fetch: waited for, not refused.
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup = RefreshingPodLookup::with_options(
            move || {
                let n = c.fetch_add(1, Ordering::SeqCst);
                Ok(if n < 2 { Vec::new() } else { pod_list() })
            },
            RefreshOptions {
                min_refresh: Duration::from_millis(20),
                ..RefreshOptions::default()
            },
        );
        assert!(lookup.find_pod(Some(UID), CID).unwrap().is_some());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn refreshing_lookup_refetches_on_miss_at_most_once_per_interval() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup = RefreshingPodLookup::new(
            move || {
                // The pod appears from the second fetch on.
                let n = c.fetch_add(1, Ordering::SeqCst);
                Ok(if n == 0 { Vec::new() } else { pod_list() })
            },
            std::time::Duration::ZERO,
        );
        assert_eq!(lookup.find_pod(Some(UID), CID).unwrap(), None);
        assert!(lookup.find_pod(Some(UID), CID).unwrap().is_some());
        // Cached now: no further fetch.
        assert!(lookup.find_pod(None, CID).unwrap().is_some());
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let slow =
            RefreshingPodLookup::new(|| Ok(Vec::new()), std::time::Duration::from_secs(3600));
        assert_eq!(slow.find_pod(Some(UID), CID).unwrap(), None);
        assert_eq!(slow.find_pod(Some(UID), CID).unwrap(), None);
        let failing = RefreshingPodLookup::new(
            || Err(AttestError::PodLookup("kubelet down".into())),
            std::time::Duration::ZERO,
        );
        assert!(failing.find_pod(Some(UID), CID).is_err());
    }

    #[test]
    fn attests_from_a_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        let lookup = Arc::new(StaticPodLookup { pods: pod_list() });
        let write = |pid: i32, text: &str| {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cgroup"), text).unwrap();
        };
        let a = K8sAttestor::with_proc_root(dir.path(), lookup);
        let peer = |pid| PeerCred {
            pid,
            uid: 0,
            gid: 0,
        };

        write(10, &format!("0::/kubepods/burstable/pod{UID}/{CID}\n"));
        let sel = a.attest(&peer(10)).unwrap();
        assert!(sel.contains(&"k8s:container-name:web".parse().unwrap()));

        // A host process: no k8s selectors, no error.
        write(11, "0::/user.slice/user-1000.slice/session-2.scope\n");
        assert!(a.attest(&peer(11)).unwrap().is_empty());

        // A pod the kubelet does not know: refused.
        write(
            12,
            &format!(
                "0::/kubepods/pod{}/{CID}\n",
                "5a6e8c2e-1b2c-4d5e-8f90-0123456789ab"
            ),
        );
        assert!(matches!(
            a.attest(&peer(12)),
            Err(AttestError::PodLookup(_))
        ));

        // Gone.
        assert_eq!(
            a.attest(&peer(13)).unwrap_err(),
            AttestError::ProcessGone { pid: 13 }
        );
    }
}
