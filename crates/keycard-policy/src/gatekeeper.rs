//! Gatekeeper compatibility: a team's existing `ConstraintTemplate` and
//! constraint objects run unchanged under `keycard check`.
//!
//! Gatekeeper compiles every template on its own, with its package renamed
//! and its `libs` moved under a per-template prefix, so two templates may use
//! the same package name or ship the same helper library (the PSP templates of
//! the public library all ship `lib.exclude_update`). keycard compiles every
//! template into one regorus engine instead, so it does the same renaming
//! itself: each template's entry module becomes
//! `data.keycard_gatekeeper.t<N>.template` and its libraries move under
//! `data.keycard_gatekeeper.t<N>.lib`, with every `data.lib` reference
//! rewritten to match. As in Gatekeeper, a template may only read `data.lib`
//! and `data.inventory`.
//!
//! Matching follows Gatekeeper's `match` semantics exactly (kinds, scope,
//! namespaces and excludedNamespaces with `*` globs, labelSelector,
//! namespaceSelector, name), and each matching (object, constraint) pair is
//! evaluated with the `input` Gatekeeper's audit and gator give a template:
//! `input.review` shaped like an AdmissionReview request and
//! `input.parameters` from the constraint. Under `keycard check` the review
//! is built from the object (a CREATE without userInfo, as gator does); an
//! admission webhook hands over the real request with [`with_review`], so
//! templates that read `operation`, `userInfo` or `oldObject` see it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use keycard_core::Severity;
use keycard_k8s::Object;
use regorus::utils::limits::ExecutionTimerConfig;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{EvalError, PolicyError};
use crate::finding::{Enforcement, Finding};

/// The only target a template may define for Kubernetes admission.
pub const ADMISSION_TARGET: &str = "admission.k8s.gatekeeper.sh";
/// API group of `ConstraintTemplate`.
pub const TEMPLATES_GROUP: &str = "templates.gatekeeper.sh";
/// API group of every constraint kind.
pub const CONSTRAINTS_GROUP: &str = "constraints.gatekeeper.sh";
/// Annotation on a constraint (or its template) that sets the findings' severity.
pub const SEVERITY_ANNOTATION: &str = "keycard.dev/severity";
/// The enforcement point whose action a `scoped` constraint uses: keycard
/// checks manifests before they reach a cluster, as gator does.
pub const ENFORCEMENT_POINT: &str = "gator.gatekeeper.sh";

/// Root package under which templates are renamed.
const ROOT: &str = "keycard_gatekeeper";
/// Largest Rego module (entry point or library) accepted from a template.
const MAX_REGO_BYTES: usize = 1024 * 1024;
/// Most libraries one template may carry.
const MAX_LIBS: usize = 64;
/// Most templates and constraints in one library: beyond this, input is
/// more likely hostile than a real policy library.
const MAX_TEMPLATES: usize = 2_000;
const MAX_CONSTRAINTS: usize = 20_000;
/// Most violations kept from one constraint on one object.
const MAX_VIOLATIONS: usize = 1_000;
/// Default limit for one evaluation, as for the rest of the engine.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds `input.review` for the object being evaluated: the admission
/// request it came in, as the API server sent it.
pub type ReviewSource = Arc<dyn Fn() -> Value + Send + Sync>;

thread_local! {
    /// The request whose object this thread is evaluating, if any.
    static REVIEW: RefCell<Option<ReviewSource>> = const { RefCell::new(None) };
}

/// Restores the previous review when the scope ends, even on a panic.
struct ReviewScope(Option<ReviewSource>);

impl Drop for ReviewScope {
    fn drop(&mut self) {
        let prev = self.0.take();
        REVIEW.with(|r| *r.borrow_mut() = prev);
    }
}

/// Runs `f` with `review` as the source of `input.review` for every
/// Gatekeeper constraint evaluated on this thread inside it (instead of the
/// review built from the object). `review` is called only when a
/// constraint matches, at most once per object.
pub fn with_review<R>(review: ReviewSource, f: impl FnOnce() -> R) -> R {
    let prev = REVIEW.with(|r| r.borrow_mut().replace(review));
    let _scope = ReviewScope(prev);
    f()
}

fn review_for(obj: &Object) -> Value {
    let source = REVIEW.with(|r| r.borrow().clone());
    match source {
        Some(s) => s(),
        None => review_of(obj),
    }
}

/// One compiled template.
#[derive(Debug)]
struct Template {
    /// `metadata.name`, e.g. `k8srequiredlabels`.
    name: String,
    /// `spec.crd.spec.names.kind`, e.g. `K8sRequiredLabels`.
    kind: String,
    /// `data.keycard_gatekeeper.t<N>.template.violation`.
    rule: String,
    title: String,
    description: String,
    severity: Option<Severity>,
}

/// One constraint, its match criteria parsed once.
#[derive(Debug)]
struct Constraint {
    template: usize,
    kind: String,
    name: String,
    file: String,
    line: usize,
    matcher: Match,
    /// `None`: the constraint does not apply at keycard's enforcement point.
    enforcement: Option<Enforcement>,
    severity: Severity,
    parameters: regorus::Value,
}

/// Gatekeeper templates and constraints compiled into one engine. Clone it
/// per thread: clones share the compiled policy.
#[derive(Clone)]
pub struct GatekeeperLibrary {
    engine: regorus::Engine,
    templates: Arc<Vec<Template>>,
    constraints: Arc<Vec<Constraint>>,
    /// Labels of every Namespace given to [`GatekeeperLibrary::set_inventory`],
    /// for `namespaceSelector`.
    namespaces: Arc<HashMap<String, BTreeMap<String, String>>>,
}

impl std::fmt::Debug for GatekeeperLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatekeeperLibrary")
            .field("templates", &self.templates.len())
            .field("constraints", &self.constraints.len())
            .finish()
    }
}

fn load_err(obj: &Object, message: String) -> PolicyError {
    PolicyError::Load {
        file: obj.source.to_string(),
        message,
    }
}

fn is_template(obj: &Object) -> bool {
    obj.kind() == "ConstraintTemplate" && obj.group() == TEMPLATES_GROUP
}

impl GatekeeperLibrary {
    /// Picks the templates and constraints out of the objects read from the
    /// `--policy` directories and compiles them; returns the other objects
    /// untouched. Errors name the file and line of the offending object.
    pub fn from_objects(
        objects: &[Object],
    ) -> Result<(GatekeeperLibrary, Vec<Object>), PolicyError> {
        let timer = ExecutionTimerConfig {
            limit: DEFAULT_TIMEOUT,
            check_interval: NonZeroU32::MIN,
        };
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(timer);
        add_deprecated_builtins(&mut engine).map_err(PolicyError::Compile)?;
        let mut templates: Vec<Template> = Vec::new();
        let mut by_kind: HashMap<String, usize> = HashMap::new();
        let mut rest = Vec::new();
        let mut constraint_objs = Vec::new();
        for obj in objects {
            if is_template(obj) {
                if templates.len() >= MAX_TEMPLATES {
                    return Err(load_err(
                        obj,
                        format!("more than {MAX_TEMPLATES} ConstraintTemplates"),
                    ));
                }
                let idx = templates.len();
                let t = compile_template(obj, idx, &mut engine, timer)?;
                if let Some(prev) = by_kind.insert(t.kind.clone(), idx) {
                    let prev = templates.get(prev).map(|p| p.name.as_str()).unwrap_or("");
                    return Err(load_err(
                        obj,
                        format!(
                            "ConstraintTemplate {}: kind {} is already defined by template {prev}",
                            t.name, t.kind
                        ),
                    ));
                }
                templates.push(t);
            } else if obj.group() == CONSTRAINTS_GROUP {
                constraint_objs.push(obj);
            } else {
                rest.push(obj.clone());
            }
        }
        if constraint_objs.len() > MAX_CONSTRAINTS {
            return Err(PolicyError::Load {
                file: constraint_objs
                    .get(MAX_CONSTRAINTS)
                    .map(|o| o.source.to_string())
                    .unwrap_or_default(),
                message: format!("more than {MAX_CONSTRAINTS} Gatekeeper constraints"),
            });
        }
        let mut constraints = Vec::new();
        for obj in constraint_objs {
            let Some(&idx) = by_kind.get(obj.kind()) else {
                return Err(load_err(
                    obj,
                    format!(
                        "constraint {}/{}: no ConstraintTemplate defines kind {}",
                        obj.kind(),
                        obj.name(),
                        obj.kind()
                    ),
                ));
            };
            let template = templates
                .get(idx)
                .ok_or_else(|| load_err(obj, "internal error: template index".into()))?;
            constraints.push(parse_constraint(obj, idx, template)?);
        }
        if !templates.is_empty() {
            // Prepare the shared engine now, so that a conflict surfaces at load time.
            engine.set_input(regorus::Value::new_object());
            for t in &templates {
                engine.eval_rule(t.rule.clone()).map_err(|e| {
                    PolicyError::Compile(format!("ConstraintTemplate {}: {e}", t.name))
                })?;
            }
        }
        tracing::debug!(
            templates = templates.len(),
            constraints = constraints.len(),
            "compiled Gatekeeper library"
        );
        Ok((
            GatekeeperLibrary {
                engine,
                templates: Arc::new(templates),
                constraints: Arc::new(constraints),
                namespaces: Arc::new(HashMap::new()),
            },
            rest,
        ))
    }

    /// The most one evaluation (one constraint on one object) may take.
    pub fn set_timeout(&mut self, limit: Duration) {
        self.engine
            .set_execution_timer_config(ExecutionTimerConfig {
                limit,
                check_interval: NonZeroU32::MIN,
            });
    }

    /// How many templates were compiled.
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }

    /// How many constraints were read.
    pub fn constraint_count(&self) -> usize {
        self.constraints.len()
    }

    /// Whether there is nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty() && self.constraints.is_empty()
    }

    /// Every object of the run, as Gatekeeper's sync would cache them:
    /// `data.inventory.namespace[<ns>][<apiVersion>][<kind>][<name>]` and
    /// `data.inventory.cluster[<apiVersion>][<kind>][<name>]`, for referential
    /// templates. The Namespace objects among them also answer
    /// `namespaceSelector`. Replaces any earlier inventory.
    pub fn set_inventory(&mut self, objects: &[Object]) -> Result<(), PolicyError> {
        let mut namespaced: Map<String, Value> = Map::new();
        let mut cluster: Map<String, Value> = Map::new();
        let mut namespaces = HashMap::new();
        for o in objects {
            let Some(name) = o.metadata().get("name").and_then(Value::as_str) else {
                continue;
            };
            if o.kind().is_empty() || o.api_version().is_empty() {
                continue;
            }
            if is_namespace(o) {
                namespaces.insert(name.to_string(), labels_of(o));
            }
            let root = match o.namespace() {
                Some(ns) if !is_namespace(o) => namespaced
                    .entry(ns.to_string())
                    .or_insert_with(|| Value::Object(Map::new())),
                _ => {
                    let Some(by_kind) = entry(&mut cluster, o.api_version()) else {
                        continue;
                    };
                    if let Some(by_name) = entry_obj(by_kind, o.kind()) {
                        by_name.insert(name.to_string(), o.value.clone());
                    }
                    continue;
                }
            };
            let Some(root) = root.as_object_mut() else {
                continue;
            };
            let Some(by_kind) = entry(root, o.api_version()) else {
                continue;
            };
            if let Some(by_name) = entry_obj(by_kind, o.kind()) {
                by_name.insert(name.to_string(), o.value.clone());
            }
        }
        let data = json!({"inventory": {"namespace": namespaced, "cluster": cluster}});
        self.engine.clear_data();
        self.engine
            .add_data(regorus::Value::from(data))
            .map_err(|e| PolicyError::Compile(format!("Gatekeeper inventory: {e}")))?;
        self.namespaces = Arc::new(namespaces);
        Ok(())
    }

    /// Every violation of every constraint matching `obj`, in constraint
    /// order. An object that cannot be matched (a `namespaceSelector` on an
    /// object whose Namespace is unknown, as gator reports) or whose
    /// evaluation fails is an error, never a silent pass.
    pub fn evaluate(&mut self, obj: &Object) -> Result<Vec<Finding>, EvalError> {
        let mut findings = Vec::new();
        if self.constraints.is_empty() {
            return Ok(findings);
        }
        let constraints = Arc::clone(&self.constraints);
        let templates = Arc::clone(&self.templates);
        let mut review: Option<regorus::Value> = None;
        for c in constraints.iter() {
            let Some(enforcement) = c.enforcement else {
                continue;
            };
            let matched = c
                .matcher
                .matches(obj, &self.namespaces)
                .map_err(|message| EvalError {
                    policy: format!("{}/{}", c.kind, c.name),
                    message,
                })?;
            if !matched {
                continue;
            }
            let Some(t) = templates.get(c.template) else {
                continue;
            };
            let review = review
                .get_or_insert_with(|| regorus::Value::from(review_for(obj)))
                .clone();
            let mut input = regorus::Value::new_object();
            if let Ok(m) = input.as_object_mut() {
                m.insert(regorus::Value::from("review"), review);
                m.insert(regorus::Value::from("parameters"), c.parameters.clone());
            }
            self.engine.set_input(input);
            let res = self
                .engine
                .eval_rule(t.rule.clone())
                .map_err(|e| EvalError {
                    policy: t.name.clone(),
                    message: format!("constraint {}/{}: {e}", c.kind, c.name),
                })?;
            if res == regorus::Value::Undefined {
                continue;
            }
            let json = serde_json::to_value(&res).map_err(|e| EvalError {
                policy: t.name.clone(),
                message: e.to_string(),
            })?;
            let Value::Array(items) = json else {
                return Err(EvalError {
                    policy: t.name.clone(),
                    message: format!("constraint {}/{}: violation is not a set", c.kind, c.name),
                });
            };
            for v in items.into_iter().take(MAX_VIOLATIONS) {
                // Gatekeeper drops a violation without `msg`; so does keycard, loudly.
                let Some(msg) = v.get("msg") else {
                    tracing::warn!(template = %t.name, constraint = %c.name, "violation without msg ignored, as Gatekeeper does");
                    continue;
                };
                let message = match msg {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let value = match v.get("details") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(m)) if m.is_empty() => None,
                    Some(d) => Some(d.clone()),
                };
                findings.push(Finding {
                    rule: format!("{}/{}", c.kind, c.name),
                    policy: t.name.clone(),
                    severity: c.severity,
                    title: t.title.as_str().into(),
                    message,
                    remediation: "".into(),
                    resource: obj.resource_ref(),
                    file: obj.source.file.to_string(),
                    line: obj.source.line,
                    path: None,
                    value,
                    description: t.description.as_str().into(),
                    controls: Default::default(),
                    enforcement,
                    exception: None,
                });
            }
        }
        Ok(findings)
    }
}

fn entry<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    m.entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

fn entry_obj<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    entry(m, key)
}

/// `input.review` as Gatekeeper's audit and gator build it from an object:
/// an AdmissionReview request for a CREATE with no old object.
fn review_of(obj: &Object) -> Value {
    let mut r = Map::new();
    r.insert("uid".into(), json!(""));
    r.insert(
        "kind".into(),
        json!({"group": obj.group(), "version": obj.version(), "kind": obj.kind()}),
    );
    if let Some(name) = obj.metadata().get("name").and_then(Value::as_str) {
        r.insert("name".into(), json!(name));
    }
    if let Some(ns) = obj.namespace() {
        r.insert("namespace".into(), json!(ns));
    }
    r.insert("operation".into(), json!("CREATE"));
    r.insert("userInfo".into(), json!({}));
    r.insert("object".into(), obj.value.clone());
    r.insert("oldObject".into(), Value::Null);
    r.insert("dryRun".into(), json!(false));
    Value::Object(r)
}

/// `metadata.name` only: Gatekeeper matches names and Namespaces on it, and
/// an object with only `generateName` has the empty name there.
fn meta_name(o: &Object) -> &str {
    o.metadata()
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn is_namespace(o: &Object) -> bool {
    o.kind() == "Namespace" && o.group().is_empty()
}

fn labels_of(o: &Object) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(m)) = o.metadata().get("labels") {
        for (k, v) in m {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Templates

fn annotation<'a>(obj: &'a Object, key: &str) -> Option<&'a str> {
    obj.metadata()
        .get("annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn severity_of(obj: &Object, what: &str) -> Result<Option<Severity>, PolicyError> {
    match annotation(obj, SEVERITY_ANNOTATION) {
        None => Ok(None),
        Some(s) => s.parse::<Severity>().map(Some).map_err(|e| {
            load_err(
                obj,
                format!("{what}: annotation {SEVERITY_ANNOTATION}: {e}"),
            )
        }),
    }
}

/// The Rego of a template's admission target: the `code` entry with engine
/// `Rego` if there is one (it wins, as in Gatekeeper), else `rego`/`libs`.
struct RegoSource {
    rego: String,
    libs: Vec<String>,
    /// `Some(true)` when the template says `version: v1`.
    v1: bool,
}

fn rego_source(obj: &Object, name: &str) -> Result<RegoSource, PolicyError> {
    let err = |m: String| load_err(obj, format!("ConstraintTemplate {name}: {m}"));
    let targets = obj
        .value
        .pointer("/spec/targets")
        .and_then(Value::as_array)
        .ok_or_else(|| err("spec.targets is missing".into()))?;
    if targets.len() != 1 {
        return Err(err(format!(
            "spec.targets must hold exactly one target, found {}",
            targets.len()
        )));
    }
    let Some(target) = targets.first() else {
        return Err(err("spec.targets is empty".into()));
    };
    let tname = target.get("target").and_then(Value::as_str).unwrap_or("");
    if tname != ADMISSION_TARGET {
        return Err(err(format!(
            "target {tname:?} is not supported (only {ADMISSION_TARGET})"
        )));
    }
    let strings = |v: Option<&Value>, field: &str| -> Result<Vec<String>, PolicyError> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("{field} must be a list of strings")))
                })
                .collect(),
            Some(_) => Err(err(format!("{field} must be a list of strings"))),
        }
    };
    let code = target.get("code").and_then(Value::as_array);
    let rego_code = code.and_then(|c| {
        c.iter()
            .find(|e| e.get("engine").and_then(Value::as_str) == Some("Rego"))
    });
    if let Some(entry) = rego_code {
        let source = entry
            .get("source")
            .ok_or_else(|| err("code entry for engine Rego has no source".into()))?;
        let rego = source
            .get("rego")
            .and_then(Value::as_str)
            .ok_or_else(|| err("code entry for engine Rego has no source.rego".into()))?;
        let version = source
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("v0");
        let v1 = match version {
            "v1" => true,
            "v0" | "" => false,
            other => return Err(err(format!("unknown Rego version {other:?} (v0 or v1)"))),
        };
        return Ok(RegoSource {
            rego: rego.to_string(),
            libs: strings(source.get("libs"), "source.libs")?,
            v1,
        });
    }
    match target.get("rego").and_then(Value::as_str) {
        Some(rego) if !rego.trim().is_empty() => Ok(RegoSource {
            rego: rego.to_string(),
            libs: strings(target.get("libs"), "libs")?,
            v1: false,
        }),
        _ => {
            let engines: Vec<&str> = code
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("engine").and_then(Value::as_str))
                .collect();
            if engines.is_empty() {
                Err(err("the admission target has no Rego".into()))
            } else {
                Err(err(format!(
                    "the admission target has no Rego, only engines {engines:?}, which keycard does not run"
                )))
            }
        }
    }
}

fn compile_template(
    obj: &Object,
    idx: usize,
    engine: &mut regorus::Engine,
    timer: ExecutionTimerConfig,
) -> Result<Template, PolicyError> {
    let name = obj
        .metadata()
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        return Err(load_err(
            obj,
            "ConstraintTemplate without metadata.name".into(),
        ));
    }
    let err = |m: String| load_err(obj, format!("ConstraintTemplate {name}: {m}"));
    let kind = obj
        .value
        .pointer("/spec/crd/spec/names/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind.is_empty() {
        return Err(err("spec.crd.spec.names.kind is missing".into()));
    }
    if kind.to_lowercase() != name {
        return Err(err(format!(
            "metadata.name must be the lowercase of kind {kind} ({:?}), as Gatekeeper requires",
            kind.to_lowercase()
        )));
    }
    let src = rego_source(obj, name)?;
    if src.libs.len() > MAX_LIBS {
        return Err(err(format!(
            "{} libs, over the limit of {MAX_LIBS}",
            src.libs.len()
        )));
    }
    let prefix = format!("{ROOT}.t{idx}");
    let mut modules = Vec::new();
    let file = obj.source.file.to_string();
    let main_path = format!("{file}#{name}");
    let (main, _) =
        rewrite_module(&src.rego, &prefix, false).map_err(|m| err(format!("rego: {m}")))?;
    modules.push((main_path.clone(), main));
    for (i, lib) in src.libs.iter().enumerate() {
        let (text, _) =
            rewrite_module(lib, &prefix, true).map_err(|m| err(format!("libs[{i}]: {m}")))?;
        modules.push((format!("{file}#{name}/libs[{i}]"), text));
    }
    // Compile alone first, so that an error is pinned on this template.
    let mut probe = regorus::Engine::new();
    probe.set_execution_timer_config(timer);
    add_deprecated_builtins(&mut probe).map_err(|m| err(format!("internal: {m}")))?;
    let mut versions = Vec::new();
    for (path, text) in &modules {
        let v0 = add_module(&mut probe, path, text, src.v1)
            .map_err(|m| err(format!("invalid Rego: {m}")))?;
        versions.push(v0);
    }
    let has_violation = probe
        .has_declared_rule_rooted_at(&main_path, "violation")
        .map_err(|e| err(format!("invalid Rego: {e}")))?;
    if !has_violation {
        return Err(err("the Rego defines no `violation` rule".into()));
    }
    let rule = format!("data.{prefix}.template.violation");
    probe.set_input(regorus::Value::new_object());
    probe
        .eval_rule(rule.clone())
        .map_err(|e| err(format!("invalid Rego: {e}")))?;
    for ((path, text), v0) in modules.iter().zip(versions) {
        engine.set_rego_v0(v0);
        let res = engine.add_policy(path.clone(), text.clone());
        engine.set_rego_v0(false);
        res.map_err(|e| err(format!("invalid Rego: {e}")))?;
    }
    let annotations = |k: &str| annotation(obj, k).unwrap_or("").to_string();
    let title = match annotation(obj, "metadata.gatekeeper.sh/title") {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => kind.to_string(),
    };
    Ok(Template {
        name: name.to_string(),
        kind: kind.to_string(),
        rule,
        title,
        description: annotations("description"),
        severity: severity_of(obj, &format!("ConstraintTemplate {name}"))?,
    })
}

/// OPA's deprecated built-ins that Gatekeeper still offers v0 templates and
/// regorus lacks (`re_match` is renamed instead, see [`rewrite_module`]).
/// A wrong argument type leaves the call undefined, as a type error would
/// make the rule fail in OPA.
fn add_deprecated_builtins(engine: &mut regorus::Engine) -> Result<(), String> {
    use regorus::Value as V;
    fn elems(v: &V) -> Option<Vec<V>> {
        match v {
            V::Array(a) => Some(a.iter().cloned().collect()),
            V::Set(s) => Some(s.iter().cloned().collect()),
            _ => None,
        }
    }
    let first = |args: &[V]| args.first().cloned().unwrap_or(V::Undefined);
    engine
        .add_extension(
            "any".into(),
            1,
            Box::new(move |args: Vec<V>| {
                Ok(elems(&first(&args))
                    .map_or(V::Undefined, |e| V::from(e.contains(&V::from(true)))))
            }),
        )
        .map_err(|e| e.to_string())?;
    engine
        .add_extension(
            "all".into(),
            1,
            Box::new(move |args: Vec<V>| {
                Ok(elems(&first(&args)).map_or(V::Undefined, |e| {
                    V::from(e.iter().all(|x| *x == V::from(true)))
                }))
            }),
        )
        .map_err(|e| e.to_string())?;
    engine
        .add_extension(
            "set_diff".into(),
            2,
            Box::new(|args: Vec<V>| {
                Ok(match (args.first(), args.get(1)) {
                    (Some(V::Set(a)), Some(V::Set(b))) => V::from(
                        a.iter()
                            .filter(|x| !b.contains(x))
                            .cloned()
                            .collect::<std::collections::BTreeSet<V>>(),
                    ),
                    _ => V::Undefined,
                })
            }),
        )
        .map_err(|e| e.to_string())?;
    engine
        .add_extension(
            "cast_array".into(),
            1,
            Box::new(move |args: Vec<V>| Ok(elems(&first(&args)).map_or(V::Undefined, V::from))),
        )
        .map_err(|e| e.to_string())?;
    engine
        .add_extension(
            "cast_set".into(),
            1,
            Box::new(move |args: Vec<V>| {
                Ok(elems(&first(&args)).map_or(V::Undefined, |e| {
                    V::from(e.into_iter().collect::<std::collections::BTreeSet<V>>())
                }))
            }),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Adds one module; returns whether it was read as Rego v0. Like Gatekeeper,
/// tries v1 first and falls back to v0, unless the template says v1.
fn add_module(
    engine: &mut regorus::Engine,
    path: &str,
    text: &str,
    v1_only: bool,
) -> Result<bool, String> {
    engine.set_rego_v0(false);
    let v1_err = match engine.add_policy(path.to_string(), text.to_string()) {
        Ok(_) => return Ok(false),
        Err(e) => e,
    };
    if v1_only {
        return Err(v1_err.to_string());
    }
    engine.set_rego_v0(true);
    let res = engine.add_policy(path.to_string(), text.to_string());
    engine.set_rego_v0(false);
    match res {
        Ok(_) => Ok(true),
        // The v0 error is the useful one for a template that says nothing.
        Err(e) => Err(e.to_string()),
    }
}

/// Renames a module's package and its `data.lib` references under `prefix`
/// without changing its line numbers, so that regorus errors still point at
/// the template's own lines. Returns the new text and the original package.
///
/// Works on tokens (comments and strings are copied as they are), so text
/// that merely looks like `data.lib` inside a string is left alone. Reading
/// any part of `data` other than `data.lib` and `data.inventory` is refused,
/// as Gatekeeper refuses it.
fn rewrite_module(src: &str, prefix: &str, is_lib: bool) -> Result<(String, String), String> {
    if src.len() > MAX_REGO_BYTES {
        return Err(format!(
            "{} bytes, over the limit of {MAX_REGO_BYTES}",
            src.len()
        ));
    }
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 64);
    let mut package: Option<String> = None;
    let mut prev_sig: u8 = b'\n';
    let mut line = 1usize;
    let mut i = 0;
    let is_ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_';
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        match c {
            b'#' => {
                let end = src[i..].find('\n').map(|n| i + n).unwrap_or(b.len());
                out.push_str(&src[i..end]);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' && b[j] != b'\n' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let end = if b.get(j) == Some(&b'"') {
                    j + 1
                } else {
                    j.min(b.len())
                };
                out.push_str(&src[i..end]);
                i = end;
                prev_sig = b'"';
            }
            b'`' => {
                let end = src[i + 1..]
                    .find('`')
                    .map(|n| i + 1 + n + 1)
                    .unwrap_or(b.len());
                line += src[i..end].matches('\n').count();
                out.push_str(&src[i..end]);
                i = end;
                prev_sig = b'`';
            }
            _ if is_ident_start(c) => {
                let mut j = i;
                while j < b.len() && is_ident(b[j]) {
                    j += 1;
                }
                let word = &src[i..j];
                if word == "package" && package.is_none() && prev_sig == b'\n' {
                    let end = src[j..].find(['\n', '#']).map(|n| j + n).unwrap_or(b.len());
                    let orig = src[j..end].trim().to_string();
                    let new = if is_lib {
                        if orig != "lib" && !orig.starts_with("lib.") && !orig.starts_with("lib[") {
                            return Err(format!(
                                "line {line}: package {orig} of a library must be under lib (e.g. lib.helpers)"
                            ));
                        }
                        format!("{prefix}.{orig}")
                    } else {
                        format!("{prefix}.template")
                    };
                    out.push_str("package ");
                    out.push_str(&new);
                    out.push(' ');
                    package = Some(orig);
                    i = end;
                    prev_sig = b'p';
                    continue;
                }
                if word == "data" && prev_sig != b'.' {
                    let next = b.get(j).copied();
                    let mut k = j + 1;
                    if next == Some(b'.') {
                        while k < b.len() && is_ident(b[k]) {
                            k += 1;
                        }
                    }
                    let field = if next == Some(b'.') {
                        &src[j + 1..k]
                    } else {
                        ""
                    };
                    match field {
                        "lib" => {
                            out.push_str("data.");
                            out.push_str(prefix);
                            out.push_str(".lib");
                            i = k;
                        }
                        "inventory" => {
                            out.push_str(&src[i..k]);
                            i = k;
                        }
                        _ => {
                            let shown = if field.is_empty() {
                                "data".to_string()
                            } else {
                                format!("data.{field}")
                            };
                            return Err(format!(
                                "line {line}: reads {shown}; a Gatekeeper template may only read data.lib and data.inventory"
                            ));
                        }
                    }
                    prev_sig = b'a';
                    continue;
                }
                // OPA's deprecated `re_match` (still in Gatekeeper's v0 capabilities,
                // used by library templates) is `regex.match` under another name.
                if word == "re_match" && prev_sig != b'.' && src[j..].trim_start().starts_with('(')
                {
                    out.push_str("regex.match");
                } else {
                    out.push_str(word);
                }
                i = j;
                prev_sig = b'a';
            }
            _ if c.is_ascii_digit() => {
                let mut j = i;
                while j < b.len() && (is_ident(b[j]) || b[j] == b'.') {
                    j += 1;
                }
                out.push_str(&src[i..j]);
                i = j;
                prev_sig = b'0';
            }
            _ => {
                // Copy one whole character (multi-byte ones included).
                let ch_len = src[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                out.push_str(&src[i..i + ch_len]);
                if c == b'\n' {
                    line += 1;
                }
                if !c.is_ascii_whitespace() {
                    prev_sig = c;
                } else if c == b'\n' && package.is_none() {
                    prev_sig = b'\n';
                }
                i += ch_len;
            }
        }
    }
    let package = package.ok_or_else(|| "no package statement".to_string())?;
    Ok((out, package))
}

// ---------------------------------------------------------------------------
// Constraints

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMatch {
    #[serde(default)]
    kinds: Vec<RawKinds>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    excluded_namespaces: Vec<String>,
    #[serde(default)]
    label_selector: Option<RawSelector>,
    #[serde(default)]
    namespace_selector: Option<RawSelector>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKinds {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    kinds: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<RawExpr>,
}

#[derive(Debug, Deserialize)]
struct RawExpr {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawScoped {
    action: String,
    #[serde(default)]
    enforcement_points: Vec<RawPoint>,
}

#[derive(Debug, Deserialize)]
struct RawPoint {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchScope {
    All,
    Cluster,
    Namespaced,
}

#[derive(Debug, Clone)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A Kubernetes label selector: every term must hold (an empty one matches all).
#[derive(Debug, Clone, Default)]
struct Selector {
    terms: Vec<(String, Op)>,
}

impl Selector {
    fn parse(raw: RawSelector) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for (k, v) in raw.match_labels {
            terms.push((k, Op::In(vec![v])));
        }
        for e in raw.match_expressions {
            let op = match e.operator.as_str() {
                "In" | "NotIn" if e.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions {}: operator {} needs values",
                        e.key, e.operator
                    ))
                }
                "Exists" | "DoesNotExist" if !e.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions {}: operator {} takes no values",
                        e.key, e.operator
                    ))
                }
                "In" => Op::In(e.values),
                "NotIn" => Op::NotIn(e.values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(format!(
                        "matchExpressions {}: unknown operator {other:?}",
                        e.key
                    ))
                }
            };
            terms.push((e.key, op));
        }
        Ok(Selector { terms })
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|(k, op)| {
            let v = labels.get(k);
            match op {
                Op::In(vals) => v.is_some_and(|v| vals.contains(v)),
                Op::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
            }
        })
    }
}

/// Gatekeeper's `spec.match`.
#[derive(Debug, Clone)]
struct Match {
    kinds: Vec<(Vec<String>, Vec<String>)>,
    scope: MatchScope,
    namespaces: Vec<String>,
    excluded_namespaces: Vec<String>,
    label_selector: Option<Selector>,
    namespace_selector: Option<Selector>,
    name: Option<String>,
}

/// Gatekeeper's glob: a leading and/or trailing `*`, nothing in between.
fn wildcard(pattern: &str, candidate: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), Some(_)) => {
            let inner = rest.strip_suffix('*').unwrap_or(rest);
            candidate.contains(inner)
        }
        (Some(suffix), None) => candidate.ends_with(suffix),
        (None, Some(prefix)) => candidate.starts_with(prefix),
        (None, None) => pattern == candidate,
    }
}

fn has(list: &[String], s: &str) -> bool {
    list.iter().any(|x| x == s)
}

impl Match {
    fn parse(raw: RawMatch) -> Result<Match, String> {
        let scope = match raw.scope.as_deref() {
            Some("Cluster") => MatchScope::Cluster,
            Some("Namespaced") => MatchScope::Namespaced,
            // Gatekeeper treats anything else, typos included, as `*`.
            _ => MatchScope::All,
        };
        Ok(Match {
            kinds: raw
                .kinds
                .into_iter()
                .map(|k| (k.api_groups, k.kinds))
                .collect(),
            scope,
            namespaces: raw.namespaces,
            excluded_namespaces: raw.excluded_namespaces,
            label_selector: raw.label_selector.map(Selector::parse).transpose()?,
            namespace_selector: raw.namespace_selector.map(Selector::parse).transpose()?,
            name: raw.name.filter(|n| !n.is_empty()),
        })
    }

    /// Whether the constraint applies to `obj`, in Gatekeeper's order of checks.
    fn matches(
        &self,
        obj: &Object,
        namespaces: &HashMap<String, BTreeMap<String, String>>,
    ) -> Result<bool, String> {
        let is_ns = is_namespace(obj);
        let obj_ns = obj.namespace().filter(|n| !n.is_empty());
        // kinds
        if !self.kinds.is_empty() {
            let (group, kind) = (obj.group(), obj.kind());
            let any = self.kinds.iter().any(|(groups, kinds)| {
                (kinds.is_empty() || has(kinds, "*") || has(kinds, kind))
                    && (groups.is_empty() || has(groups, "*") || has(groups, group))
            });
            if !any {
                return Ok(false);
            }
        }
        // scope: a Namespace is cluster-scoped even if it names a namespace.
        let has_ns = obj_ns.is_some();
        match self.scope {
            MatchScope::Cluster if !is_ns && has_ns => return Ok(false),
            MatchScope::Namespaced if is_ns || !has_ns => return Ok(false),
            _ => {}
        }
        // The namespace the namespace matchers see: a Namespace's own name.
        let ns_name = if is_ns {
            Some(meta_name(obj).to_string())
        } else {
            obj_ns.map(str::to_string)
        };
        if !self.namespaces.is_empty() {
            if let Some(ns) = &ns_name {
                if !self.namespaces.iter().any(|p| wildcard(p, ns)) {
                    return Ok(false);
                }
            }
        }
        if let Some(ns) = &ns_name {
            if self.excluded_namespaces.iter().any(|p| wildcard(p, ns)) {
                return Ok(false);
            }
        }
        if let Some(sel) = &self.label_selector {
            if !sel.matches(&labels_of(obj)) {
                return Ok(false);
            }
        }
        if let Some(sel) = &self.namespace_selector {
            if is_ns {
                if !sel.matches(&labels_of(obj)) {
                    return Ok(false);
                }
            } else if let Some(ns) = obj_ns {
                let Some(labels) = namespaces.get(ns) else {
                    return Err(format!(
                        "namespaceSelector needs the labels of Namespace {ns}, which is not among the objects checked"
                    ));
                };
                if !sel.matches(labels) {
                    return Ok(false);
                }
            }
            // A cluster-scoped object other than a Namespace always matches.
        }
        if let Some(pattern) = &self.name {
            if !wildcard(pattern, meta_name(obj)) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn parse_constraint(
    obj: &Object,
    template: usize,
    t: &Template,
) -> Result<Constraint, PolicyError> {
    let name = obj.name();
    let what = format!("constraint {}/{name}", obj.kind());
    let err = |m: String| load_err(obj, format!("{what}: {m}"));
    if name.is_empty() {
        return Err(err("metadata.name is missing".into()));
    }
    let spec = obj.value.get("spec").cloned().unwrap_or(Value::Null);
    let raw_match: RawMatch = match spec.get("match") {
        None | Some(Value::Null) => RawMatch::default(),
        Some(m) => {
            serde_json::from_value(m.clone()).map_err(|e| err(format!("spec.match: {e}")))?
        }
    };
    let matcher = Match::parse(raw_match).map_err(|m| err(format!("spec.match: {m}")))?;
    let enforcement = match spec.get("enforcementAction") {
        None | Some(Value::Null) => Some(Enforcement::Deny),
        Some(Value::String(s)) => match s.as_str() {
            "" | "deny" => Some(Enforcement::Deny),
            "warn" => Some(Enforcement::Warn),
            "dryrun" => Some(Enforcement::Dryrun),
            "scoped" => scoped_action(spec.get("scopedEnforcementActions")).map_err(err)?,
            other => {
                return Err(err(format!(
                    "unknown enforcementAction {other:?} (deny, warn, dryrun or scoped)"
                )))
            }
        },
        Some(other) => {
            return Err(err(format!(
                "enforcementAction must be a string, not {other}"
            )))
        }
    };
    let severity = severity_of(obj, &what)?
        .or(t.severity)
        .unwrap_or(Severity::High);
    let parameters = match spec.get("parameters") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p) => p.clone(),
    };
    Ok(Constraint {
        template,
        kind: obj.kind().to_string(),
        name,
        file: obj.source.file.to_string(),
        line: obj.source.line,
        matcher,
        enforcement,
        severity,
        parameters: regorus::Value::from(parameters),
    })
}

/// The action of a `scoped` constraint at keycard's enforcement point (gator's,
/// or `*`); the strictest if several apply, `None` if none does.
fn scoped_action(v: Option<&Value>) -> Result<Option<Enforcement>, String> {
    let raw: Vec<RawScoped> = match v {
        None | Some(Value::Null) => {
            return Err("enforcementAction scoped needs scopedEnforcementActions".into())
        }
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("scopedEnforcementActions: {e}"))?,
    };
    let mut best: Option<Enforcement> = None;
    for s in raw {
        let action = match s.action.as_str() {
            "deny" => Enforcement::Deny,
            "warn" => Enforcement::Warn,
            "dryrun" => Enforcement::Dryrun,
            other => {
                return Err(format!(
                    "scopedEnforcementActions: unknown action {other:?}"
                ))
            }
        };
        if !s
            .enforcement_points
            .iter()
            .any(|p| p.name == "*" || p.name == ENFORCEMENT_POINT)
        {
            continue;
        }
        let rank = |e: Enforcement| match e {
            Enforcement::Deny => 2,
            Enforcement::Warn => 1,
            Enforcement::Dryrun => 0,
        };
        if best.is_none_or(|b| rank(action) > rank(b)) {
            best = Some(action);
        }
    }
    Ok(best)
}

impl GatekeeperLibrary {
    /// Where each constraint was read (`file:line`), by `Kind/name`, for reports.
    pub fn constraints(&self) -> Vec<(String, String, usize)> {
        self.constraints
            .iter()
            .map(|c| (format!("{}/{}", c.kind, c.name), c.file.clone(), c.line))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn globs_match_as_gatekeeper() {
        assert!(wildcard("kube-*", "kube-system"));
        assert!(!wildcard("kube-*", "my-kube"));
        assert!(wildcard("*-system", "gatekeeper-system"));
        assert!(!wildcard("*-system", "system-x"));
        assert!(wildcard("*stem*", "kube-system"));
        assert!(wildcard("prod", "prod"));
        assert!(!wildcard("prod", "production"));
    }

    #[test]
    fn selectors() {
        let raw: RawSelector = serde_json::from_value(json!({
            "matchLabels": {"tier": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "owner", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        let s = Selector::parse(raw).unwrap();
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.matches(&l(&[("tier", "web"), ("owner", "a")])));
        assert!(s.matches(&l(&[("tier", "web"), ("owner", "a"), ("env", "prod")])));
        assert!(!s.matches(&l(&[("tier", "web"), ("owner", "a"), ("env", "dev")])));
        assert!(!s.matches(&l(&[("tier", "web")])));
        assert!(!s.matches(&l(&[("tier", "web"), ("owner", "a"), ("legacy", "y")])));
        assert!(!s.matches(&l(&[("tier", "db"), ("owner", "a")])));
        let bad: RawSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "a", "operator": "In"}]}))
                .unwrap();
        assert!(Selector::parse(bad).is_err());
        let bad: RawSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}))
                .unwrap();
        assert!(Selector::parse(bad)
            .unwrap_err()
            .contains("unknown operator"));
    }

    #[test]
    fn rewrite_renames_package_and_lib_refs_only_in_code() {
        let src = "# a comment\npackage k8sfoo # trailing\n\nimport data.lib.helpers.is_update\n\nviolation[{\"msg\": m}] {\n  x := \"data.lib.not_code\"\n  data.lib.helpers.ok(input.data.lib)\n  data.inventory.cluster[_]\n  m := `data.other`\n}\n";
        let (out, pkg) = rewrite_module(src, "keycard_gatekeeper.t3", false).unwrap();
        assert_eq!(pkg, "k8sfoo");
        assert_eq!(out.lines().count(), src.lines().count());
        assert!(
            out.contains("package keycard_gatekeeper.t3.template "),
            "{out}"
        );
        assert!(
            out.contains("import data.keycard_gatekeeper.t3.lib.helpers.is_update"),
            "{out}"
        );
        assert!(out.contains("\"data.lib.not_code\""));
        assert!(
            out.contains("data.keycard_gatekeeper.t3.lib.helpers.ok(input.data.lib)"),
            "{out}"
        );
        assert!(out.contains("data.inventory.cluster[_]"));
        assert!(out.contains("`data.other`"));
        assert!(out.contains("# trailing"));
    }

    #[test]
    fn rewrite_refuses_other_data_and_bad_lib_packages() {
        let e = rewrite_module(
            "package a\nviolation[x] { x := data.secrets }\n",
            "p",
            false,
        )
        .unwrap_err();
        assert!(e.contains("line 2: reads data.secrets"), "{e}");
        let e = rewrite_module("package helpers\nf(x) = x\n", "p", true).unwrap_err();
        assert!(e.contains("must be under lib"), "{e}");
        let (out, pkg) = rewrite_module("package lib.helpers\nf(x) = x\n", "p.t0", true).unwrap();
        assert_eq!(pkg, "lib.helpers");
        assert!(out.starts_with("package p.t0.lib.helpers "), "{out}");
        assert!(rewrite_module("violation[x] { x := 1 }", "p", false).is_err());
    }

    fn obj(v: Value) -> Object {
        Object::new(v, Arc::from("t.yaml"), 1)
    }

    #[test]
    fn scope_and_name_follow_gatekeeper() {
        let m = |v: Value| Match::parse(serde_json::from_value(v).unwrap()).unwrap();
        let none = HashMap::new();
        let ns = obj(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web-ns", "namespace": "x"}}),
        );
        let pod = obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": "a"}}),
        );
        // A Namespace is cluster-scoped even with a stray metadata.namespace.
        assert!(m(json!({"scope": "Cluster"})).matches(&ns, &none).unwrap());
        assert!(!m(json!({"scope": "Namespaced"}))
            .matches(&ns, &none)
            .unwrap());
        assert!(m(json!({"scope": "Namespaced"}))
            .matches(&pod, &none)
            .unwrap());
        assert!(m(json!({"scope": "cluster"})).matches(&pod, &none).unwrap());
        // Names match metadata.name only, never generateName.
        assert!(!m(json!({"name": "web-*"})).matches(&pod, &none).unwrap());
        assert!(m(json!({"name": "web-*"})).matches(&ns, &none).unwrap());
        // A Namespace is matched by namespaces on its own name.
        assert!(m(json!({"namespaces": ["web-*"]}))
            .matches(&ns, &none)
            .unwrap());
        assert!(!m(json!({"excludedNamespaces": ["*-ns"]}))
            .matches(&ns, &none)
            .unwrap());
        // namespaceSelector on a namespaced object with an unknown Namespace is an error.
        assert!(m(json!({"namespaceSelector": {}}))
            .matches(&pod, &none)
            .is_err());
    }

    #[test]
    fn a_handed_over_review_replaces_the_one_built_from_the_object() {
        let template = obj(json!({
            "apiVersion": "templates.gatekeeper.sh/v1",
            "kind": "ConstraintTemplate",
            "metadata": {"name": "k8sopuser"},
            "spec": {
                "crd": {"spec": {"names": {"kind": "K8sOpUser"}}},
                "targets": [{
                    "target": "admission.k8s.gatekeeper.sh",
                    "rego": "package k8sopuser\nviolation[{\"msg\": msg}] {\n  input.review.operation == \"UPDATE\"\n  not input.review.userInfo.username == \"admin\"\n  msg := sprintf(\"%v may not update\", [input.review.userInfo.username])\n}\n"
                }]
            }
        }));
        let constraint = obj(json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": "K8sOpUser",
            "metadata": {"name": "only-admin-updates"},
            "spec": {}
        }));
        let (mut lib, rest) = GatekeeperLibrary::from_objects(&[template, constraint]).unwrap();
        assert!(rest.is_empty());
        let pod = obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}}),
        );
        // As `keycard check` sees it: a CREATE, nothing to find.
        assert!(lib.evaluate(&pod).unwrap().is_empty());
        let review = |user: &'static str| -> ReviewSource {
            Arc::new(move || json!({"operation": "UPDATE", "userInfo": {"username": user}}))
        };
        let found = with_review(review("bob"), || lib.evaluate(&pod)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].message, "bob may not update");
        assert!(with_review(review("admin"), || lib.evaluate(&pod))
            .unwrap()
            .is_empty());
        // The scope ended: back to the object's own review.
        assert!(lib.evaluate(&pod).unwrap().is_empty());
    }

    #[test]
    fn scoped_actions_take_gator_point() {
        let v = json!([
            {"action": "warn", "enforcementPoints": [{"name": "validation.gatekeeper.sh"}]},
            {"action": "dryrun", "enforcementPoints": [{"name": "gator.gatekeeper.sh"}]}
        ]);
        assert_eq!(scoped_action(Some(&v)).unwrap(), Some(Enforcement::Dryrun));
        let v = json!([{"action": "deny", "enforcementPoints": [{"name": "*"}]},
                       {"action": "warn", "enforcementPoints": [{"name": "gator.gatekeeper.sh"}]}]);
        assert_eq!(scoped_action(Some(&v)).unwrap(), Some(Enforcement::Deny));
        let v = json!([{"action": "deny", "enforcementPoints": [{"name": "audit.gatekeeper.sh"}]}]);
        assert_eq!(scoped_action(Some(&v)).unwrap(), None);
        let v = json!([{"action": "block", "enforcementPoints": [{"name": "*"}]}]);
        assert!(scoped_action(Some(&v)).is_err());
    }
}
