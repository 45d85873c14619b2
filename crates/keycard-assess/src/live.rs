//! Reading a cluster through its API, read-only.
//!
//! [`load_live`] lists the resources an assessment needs ([`RESOURCES`], the
//! same list as the documented dump command) with the `kube` client and a
//! kubeconfig, and returns an [`Input`] like a dump's. It only ever sends
//! `GET` list requests, page by page (`limit` and `continue`), each under a
//! request timeout and all under an overall deadline, so an assessment of a
//! slow or huge cluster ends. Secrets are listed as metadata only
//! (`PartialObjectMetadataList`): their data never leaves the API server,
//! and their type comes from `type=` field selectors. ConfigMaps are read
//! whole, because credentials written into them are a finding, but within a
//! byte budget.
//!
//! What cannot be read becomes a [`Gap`], never a failure: a 403 on a
//! resource is `forbidden:<resource>` and the rest is still listed; an API
//! server that cannot be reached is `unreachable-api`, with an input problem
//! naming it; a 404 on an optional API group (AdminNetworkPolicy is not
//! installed on most clusters) is no gap at all.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body_util::BodyExt;
use keycard_k8s::Object;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::params::ListParams;
use serde_json::{Map, Value};

use crate::input::{need_for, Input};
use crate::model::{Gap, InputProblem, Pillar, SourceKind};

/// How to reach the cluster, and the bounds on reading it.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// A kubeconfig file; `None` resolves like kubectl: `KUBECONFIG` (a
    /// list of files, merged), then `~/.kube/config`, then the in-cluster
    /// service account.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; `None` for its current context.
    pub context: Option<String>,
    /// Longest wait for one request (connect, send, whole response).
    pub request_timeout: Duration,
    /// Longest the whole read may take; resources not listed by then are
    /// gaps.
    pub deadline: Duration,
    /// Objects per page (`limit`).
    pub page_size: u32,
    /// Objects per page of ConfigMaps, which carry their data (up to 1 MiB
    /// each).
    pub configmap_page_size: u32,
    /// Most bytes of ConfigMap data kept over the whole cluster; beyond it
    /// ConfigMaps keep their metadata only.
    pub configmap_budget_bytes: usize,
    /// Largest response body accepted for one page.
    pub max_page_bytes: usize,
    /// Resources listed at the same time.
    pub concurrency: usize,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            kubeconfig: None,
            context: None,
            request_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
            page_size: 500,
            configmap_page_size: 100,
            configmap_budget_bytes: 256 << 20,
            max_page_bytes: 256 << 20,
            concurrency: 4,
        }
    }
}

/// Where the read is, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The resource a page was just read from (`pods`), or `""` at the
    /// start.
    pub resource: &'static str,
    pub resources_done: usize,
    pub resources_total: usize,
    /// Objects read so far.
    pub objects: usize,
}

/// One resource the assessment lists.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    /// API group, `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural name, as in the URL and in `kubectl get`.
    pub resource: &'static str,
    pub kind: &'static str,
    /// Not installed on most clusters: a 404 means absent, not a gap.
    pub optional: bool,
}

impl Resource {
    const fn new(
        group: &'static str,
        version: &'static str,
        resource: &'static str,
        kind: &'static str,
    ) -> Self {
        Resource {
            group,
            version,
            resource,
            kind,
            optional: false,
        }
    }
    const fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// The path that lists it across all namespaces.
    pub fn path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.resource)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.resource)
        }
    }
}

const RBAC: &str = "rbac.authorization.k8s.io";

/// What the live read lists: [`crate::input::DUMP_RESOURCES`] plus the
/// optional cluster-wide network policies.
pub const RESOURCES: &[Resource] = &[
    Resource::new("", "v1", "namespaces", "Namespace"),
    Resource::new("", "v1", "pods", "Pod"),
    Resource::new("", "v1", "replicationcontrollers", "ReplicationController"),
    Resource::new("apps", "v1", "deployments", "Deployment"),
    Resource::new("apps", "v1", "replicasets", "ReplicaSet"),
    Resource::new("apps", "v1", "statefulsets", "StatefulSet"),
    Resource::new("apps", "v1", "daemonsets", "DaemonSet"),
    Resource::new("batch", "v1", "jobs", "Job"),
    Resource::new("batch", "v1", "cronjobs", "CronJob"),
    Resource::new("", "v1", "services", "Service"),
    Resource::new("networking.k8s.io", "v1", "ingresses", "Ingress"),
    Resource::new(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
    ),
    Resource::new("", "v1", "serviceaccounts", "ServiceAccount"),
    Resource::new(RBAC, "v1", "roles", "Role"),
    Resource::new(RBAC, "v1", "rolebindings", "RoleBinding"),
    Resource::new(RBAC, "v1", "clusterroles", "ClusterRole"),
    Resource::new(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding"),
    Resource::new("", "v1", "secrets", "Secret"),
    Resource::new("", "v1", "configmaps", "ConfigMap"),
    Resource::new("", "v1", "nodes", "Node"),
    Resource::new(
        "policy.networking.k8s.io",
        "v1alpha1",
        "adminnetworkpolicies",
        "AdminNetworkPolicy",
    )
    .optional(),
    Resource::new(
        "policy.networking.k8s.io",
        "v1alpha1",
        "baselineadminnetworkpolicies",
        "BaselineAdminNetworkPolicy",
    )
    .optional(),
];

/// Secret types listed one by one (metadata only, with a `type=` field
/// selector), so each Secret gets its type without its data. The rest come
/// from one list that excludes them all and keep no type.
pub const SECRET_TYPES: &[&str] = &[
    "kubernetes.io/service-account-token",
    "Opaque",
    "kubernetes.io/tls",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "bootstrap.kubernetes.io/token",
];

/// Read the cluster. Never fails: what could not be read is in the
/// returned input's gaps and problems. Builds its own single-threaded
/// tokio runtime; call [`load_live_async`] from async code.
pub fn load_live(opts: &LiveOptions, progress: &dyn Fn(Progress)) -> Input {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(load_live_async(opts, progress)),
        Err(e) => failed(
            "live API",
            format!("cannot start the async runtime: {e}"),
            Vec::new(),
        ),
    }
}

/// An input with nothing read: the API was never reached.
fn failed(location: &str, message: String, locations: Vec<String>) -> Input {
    let mut input = Input::from_objects(Vec::new(), SourceKind::Live, locations);
    input.problems.push(InputProblem {
        file: location.to_string(),
        line: None,
        message: message.clone(),
    });
    input.gaps.push(unreachable_gap(location, &message));
    input
}

fn unreachable_gap(server: &str, why: &str) -> Gap {
    Gap {
        id: "unreachable-api".into(),
        what: format!("the Kubernetes API at {server} could not be read: {why}"),
        impact: "nothing, or only part, of the cluster was seen; no conclusion about an unseen resource holds".into(),
        pillars: vec![
            Pillar::Identity,
            Pillar::Networks,
            Pillar::ApplicationsAndWorkloads,
            Pillar::Data,
        ],
    }
}

/// What a resource is used for and the pillars it serves, from the same
/// table the coverage of dumps uses.
fn impact_of(resource: &str) -> (String, Vec<Pillar>) {
    let need = need_for(resource).or_else(|| match resource {
        "replicationcontrollers"
        | "deployments"
        | "replicasets"
        | "statefulsets"
        | "daemonsets"
        | "jobs"
        | "cronjobs" => need_for("pods"),
        _ => None,
    });
    match (need, resource) {
        (Some(n), _) => (n.used_for.to_string(), n.pillars.to_vec()),
        (None, "nodes") => (
            "the nodes (kubelet versions, OS images)".into(),
            vec![Pillar::Devices],
        ),
        (None, _) => (
            "cluster-wide network policies".into(),
            vec![Pillar::Networks],
        ),
    }
}

async fn load_config(opts: &LiveOptions) -> Result<(kube::Config, Option<String>), String> {
    let kco = KubeConfigOptions {
        context: opts.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kubeconfig = match &opts.kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?,
        None => match Kubeconfig::read() {
            Ok(k) => k,
            // No kubeconfig at all: inside a pod, its service account.
            Err(e) if opts.context.is_none() => {
                return kube::Config::incluster()
                    .map(|c| (c, Some("in-cluster".to_string())))
                    .map_err(|ie| format!("no kubeconfig ({e}) and not in a cluster ({ie})"));
            }
            Err(e) => return Err(format!("cannot read kubeconfig: {e}")),
        },
    };
    let context = opts
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone());
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kco)
        .await
        .map_err(|e| format!("kubeconfig: {e}"))?;
    Ok((config, context))
}

/// What one resource gave.
#[derive(Default)]
struct Listed {
    objects: Vec<Object>,
    gaps: Vec<Gap>,
    problems: Vec<InputProblem>,
}

/// Shared by the resources listed at once (one task, one thread).
struct Run<'a> {
    client: kube::Client,
    server: String,
    opts: &'a LiveOptions,
    deadline: Instant,
    progress: &'a dyn Fn(Progress),
    done: Cell<usize>,
    objects: Cell<usize>,
    /// Set at the first transport failure: the rest is not attempted.
    unreachable: RefCell<Option<String>>,
    configmap_bytes: Cell<usize>,
    configmaps_trimmed: Cell<usize>,
}

/// How one page request ended.
enum Page {
    Items(Vec<Value>, Option<String>),
    Status(u16, String),
    Failed(String),
    Unreachable(String),
    Deadline,
}

/// Read the cluster (async form of [`load_live`]).
pub async fn load_live_async(opts: &LiveOptions, progress: &dyn Fn(Progress)) -> Input {
    // kube builds its rustls config from the process default provider;
    // with more than one compiled in, rustls cannot choose and panics.
    // Installing fails harmlessly when a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let deadline = started + opts.deadline;
    let (mut config, context) = match load_config(opts).await {
        Ok(c) => c,
        Err(msg) => {
            let where_ = opts
                .kubeconfig
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "kubeconfig".to_string());
            return failed(&where_, msg, Vec::new());
        }
    };
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    config.connect_timeout = Some(opts.request_timeout);
    config.read_timeout = Some(opts.request_timeout);
    config.write_timeout = Some(opts.request_timeout);
    let mut locations = Vec::new();
    if let Some(c) = &context {
        locations.push(format!("context {c}"));
    }
    locations.push(server.clone());
    let client = match kube::Client::try_from(config) {
        Ok(c) => c,
        Err(e) => return failed(&server, format!("cannot build a client: {e}"), locations),
    };

    // One cheap request first: an unreachable server is reported after one
    // timeout, not one per resource.
    let run = Run {
        client,
        server: server.clone(),
        opts,
        deadline,
        progress,
        done: Cell::new(0),
        objects: Cell::new(0),
        unreachable: RefCell::new(None),
        configmap_bytes: Cell::new(0),
        configmaps_trimmed: Cell::new(0),
    };
    match run.get("/version", None).await {
        Page::Unreachable(why) | Page::Failed(why) => return failed(&server, why, locations),
        Page::Deadline => return failed(&server, "the deadline passed".into(), locations),
        Page::Status(..) => {}
        Page::Items(_, version) => {
            if let Some(v) = version {
                locations.push(format!("Kubernetes {v}"));
            }
        }
    }
    progress(Progress {
        resource: "",
        resources_done: 0,
        resources_total: RESOURCES.len(),
        objects: 0,
    });

    let results: Vec<Listed> = futures::stream::iter(RESOURCES)
        .map(|r| run.list_resource(r))
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;

    let mut objects = Vec::new();
    let mut gaps = Vec::new();
    let mut problems = Vec::new();
    for l in results {
        objects.extend(l.objects);
        gaps.extend(l.gaps);
        problems.extend(l.problems);
    }
    if let Some(why) = run.unreachable.borrow().as_ref() {
        gaps.insert(0, unreachable_gap(&server, why));
        problems.insert(
            0,
            InputProblem {
                file: server.clone(),
                line: None,
                message: format!("the API server stopped answering: {why}"),
            },
        );
    }
    let trimmed = run.configmaps_trimmed.get();
    if trimmed > 0 {
        gaps.push(Gap {
            id: "truncated:configmaps".into(),
            what: format!(
                "{trimmed} ConfigMaps were read without their data: the ConfigMaps' data passed the budget of {} MiB",
                opts.configmap_budget_bytes >> 20
            ),
            impact: "credentials written into those ConfigMaps are not seen".into(),
            pillars: vec![Pillar::Data],
        });
    }
    tracing::info!(
        server = %server,
        objects = objects.len(),
        gaps = gaps.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "read the live API"
    );
    let mut input = Input::from_objects(objects, SourceKind::Live, locations);
    input.gaps = gaps;
    input.problems = problems;
    input
}

impl Run<'_> {
    /// One GET. `Items` carries a list's items and its continue token, or
    /// for `/version`, no items and the git version.
    async fn get(&self, path_and_query: &str, accept: Option<&str>) -> Page {
        let mut req = http::Request::get(path_and_query);
        if let Some(a) = accept {
            req = req
                .header(http::header::ACCEPT, a)
                .header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = match req.body(kube::client::Body::from(Vec::<u8>::new())) {
            Ok(r) => r,
            Err(e) => return Page::Failed(format!("bad request {path_and_query}: {e}")),
        };
        self.send(req).await
    }

    async fn send(&self, req: http::Request<kube::client::Body>) -> Page {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Page::Deadline;
        }
        let limit = left.min(self.opts.request_timeout);
        let what = req.uri().path().to_string();
        let fut = async {
            let res = match self.client.send(req).await {
                Ok(r) => r,
                Err(e) => return Page::Unreachable(error_chain(&e)),
            };
            let status = res.status().as_u16();
            let body = http_body_util::Limited::new(res.into_body(), self.opts.max_page_bytes);
            let bytes = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Page::Failed(format!(
                        "reading the response to {what}: {e} (limit {} bytes)",
                        self.opts.max_page_bytes
                    ))
                }
            };
            if !(200..300).contains(&status) {
                let msg = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| {
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
                    });
                return Page::Status(status, msg);
            }
            let mut v: Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => return Page::Failed(format!("the response to {what} is not JSON: {e}")),
            };
            if let Some(git) = v.get("gitVersion").and_then(Value::as_str) {
                return Page::Items(Vec::new(), Some(git.to_string()));
            }
            let cont = v
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            let items = match v.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => items,
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Page::Failed(format!("the response to {what} has no items list"))
                }
            };
            Page::Items(items, cont)
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(p) => p,
            Err(_) if limit < self.opts.request_timeout => Page::Deadline,
            Err(_) => Page::Unreachable(format!(
                "no answer to {what} within {} s",
                self.opts.request_timeout.as_secs_f64()
            )),
        }
    }

    async fn list_resource(&self, r: &'static Resource) -> Listed {
        let mut out = Listed::default();
        let file: Arc<str> = Arc::from(format!("{}/{}", self.server, r.resource));
        if r.resource == "secrets" {
            // Partitioned by type, metadata only.
            let rest = SECRET_TYPES
                .iter()
                .map(|t| format!("type!={t}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut selectors: Vec<(Option<&str>, String)> = SECRET_TYPES
                .iter()
                .map(|t| (Some(*t), format!("type={t}")))
                .collect();
            selectors.push((None, rest));
            for (ty, sel) in selectors {
                if !self.list_pages(r, &file, Some(&sel), ty, &mut out).await {
                    break;
                }
            }
        } else {
            self.list_pages(r, &file, None, None, &mut out).await;
        }
        self.done.set(self.done.get() + 1);
        (self.progress)(Progress {
            resource: r.resource,
            resources_done: self.done.get(),
            resources_total: RESOURCES.len(),
            objects: self.objects.get(),
        });
        out
    }

    /// List every page of one resource (with a field selector). Returns
    /// whether listing may go on with this resource.
    async fn list_pages(
        &self,
        r: &'static Resource,
        file: &Arc<str>,
        selector: Option<&str>,
        secret_type: Option<&str>,
        out: &mut Listed,
    ) -> bool {
        let metadata_only = r.resource == "secrets";
        let page_size = if r.resource == "configmaps" {
            self.opts.configmap_page_size
        } else {
            self.opts.page_size
        };
        let mut cont: Option<String> = None;
        let mut pages = 0usize;
        loop {
            if self.unreachable.borrow().is_some() {
                return false;
            }
            let mut lp = ListParams::default().limit(page_size.max(1));
            if let Some(c) = &cont {
                lp = lp.continue_token(c);
            }
            if let Some(s) = selector {
                lp = lp.fields(s);
            }
            let request = kube::core::Request::new(r.path());
            let built = if metadata_only {
                request.list_metadata(&lp)
            } else {
                request.list(&lp)
            };
            let req = match built {
                Ok(req) => req.map(kube::client::Body::from),
                Err(e) => {
                    out.problems
                        .push(problem(file, format!("cannot build the request: {e}")));
                    return false;
                }
            };
            let page = self.send(req).await;
            pages += 1;
            match page {
                Page::Items(items, next) => {
                    let n = items.len();
                    for item in items {
                        if let Some(o) = self.to_object(item, r, secret_type, file) {
                            out.objects.push(o);
                        }
                    }
                    self.objects.set(self.objects.get() + n);
                    (self.progress)(Progress {
                        resource: r.resource,
                        resources_done: self.done.get(),
                        resources_total: RESOURCES.len(),
                        objects: self.objects.get(),
                    });
                    match next {
                        Some(c) => cont = Some(c),
                        None => return true,
                    }
                }
                Page::Status(404, _) if r.optional => return false,
                Page::Status(403, msg) => {
                    let (used_for, pillars) = impact_of(r.resource);
                    out.gaps.push(Gap {
                        id: format!("forbidden:{}", r.resource),
                        what: format!(
                            "the API server refused to list {} (403 Forbidden: {msg})",
                            r.resource
                        ),
                        impact: format!(
                            "{used_for} cannot be judged; grant keycard's read-only ClusterRole (docs/assess-input.md) and assess again"
                        ),
                        pillars,
                    });
                    return false;
                }
                Page::Status(401, msg) => {
                    self.unreachable
                        .borrow_mut()
                        .get_or_insert_with(|| format!("401 Unauthorized: {msg}"));
                    return false;
                }
                Page::Status(code, msg) => {
                    let (used_for, pillars) = impact_of(r.resource);
                    let partial = if pages > 1 { ", after some pages" } else { "" };
                    let id = if code == 404 {
                        "not-served"
                    } else {
                        "list-failed"
                    };
                    out.gaps.push(Gap {
                        id: format!("{id}:{}", r.resource),
                        what: format!(
                            "listing {} failed with HTTP {code}{partial}: {msg}",
                            r.resource
                        ),
                        impact: format!("{used_for}: conclusions are incomplete"),
                        pillars,
                    });
                    out.problems
                        .push(problem(file, format!("HTTP {code}: {msg}")));
                    return false;
                }
                Page::Failed(why) => {
                    let (used_for, pillars) = impact_of(r.resource);
                    out.gaps.push(Gap {
                        id: format!("list-failed:{}", r.resource),
                        what: format!("listing {} failed: {why}", r.resource),
                        impact: format!("{used_for}: conclusions are incomplete"),
                        pillars,
                    });
                    out.problems.push(problem(file, why));
                    return false;
                }
                Page::Unreachable(why) => {
                    self.unreachable.borrow_mut().get_or_insert(why);
                    return false;
                }
                Page::Deadline => {
                    let (used_for, pillars) = impact_of(r.resource);
                    out.gaps.push(Gap {
                        id: format!("deadline:{}", r.resource),
                        what: format!(
                            "{} were not (fully) listed within the deadline of {} s",
                            r.resource,
                            self.opts.deadline.as_secs()
                        ),
                        impact: format!("{used_for}: conclusions are incomplete"),
                        pillars,
                    });
                    return false;
                }
            }
        }
    }

    /// An item of a list as the object a dump would hold: apiVersion and
    /// kind set (list items omit them), server bookkeeping dropped, data
    /// the assessment must not or need not hold removed.
    fn to_object(
        &self,
        item: Value,
        r: &Resource,
        secret_type: Option<&str>,
        file: &Arc<str>,
    ) -> Option<Object> {
        let Value::Object(mut m) = item else {
            return None;
        };
        let mut out = Map::with_capacity(m.len() + 2);
        out.insert("apiVersion".into(), Value::String(r.api_version()));
        out.insert("kind".into(), Value::String(r.kind.to_string()));
        if let Some(Value::Object(md)) = m.get_mut("metadata") {
            md.remove("managedFields");
            if let Some(Value::Object(ann)) = md.get_mut("annotations") {
                // Holds the whole object as last applied: for a Secret, its
                // data.
                ann.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        }
        match r.resource {
            "secrets" => {
                // Metadata lists carry no data; never keep any that came.
                m.remove("data");
                m.remove("stringData");
                if let Some(t) = secret_type {
                    m.insert("type".into(), Value::String(t.to_string()));
                }
            }
            "configmaps" => {
                m.remove("binaryData");
                let size: usize = m
                    .get("data")
                    .and_then(Value::as_object)
                    .map(|d| {
                        d.iter()
                            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                            .sum()
                    })
                    .unwrap_or(0);
                let used = self.configmap_bytes.get();
                if used + size > self.opts.configmap_budget_bytes {
                    m.remove("data");
                    self.configmaps_trimmed
                        .set(self.configmaps_trimmed.get() + 1);
                } else {
                    self.configmap_bytes.set(used + size);
                }
            }
            "nodes" => {
                if let Some(Value::Object(st)) = m.get_mut("status") {
                    st.remove("images");
                }
            }
            _ => {}
        }
        m.remove("apiVersion");
        m.remove("kind");
        out.extend(m);
        Some(Object::new(Value::Object(out), file.clone(), 0))
    }
}

fn problem(file: &Arc<str>, message: String) -> InputProblem {
    InputProblem {
        file: file.to_string(),
        line: None,
        message,
    }
}

/// An error and its causes, one line ("connection refused" is the cause's
/// cause of kube's error).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
