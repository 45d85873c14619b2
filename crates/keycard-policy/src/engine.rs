//! Compile once, evaluate many times: a [`PolicySet`] holds the compiled
//! Rego (one regorus engine for the built-in packs, one for the team's own
//! Rego) and hands out [`Evaluator`]s, cheap clones that run on any thread.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keycard_core::Severity;
use keycard_k8s::{parse_str, LoadOptions, Object};
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::{RegoVM, VmError};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::MemoryBudgetConfig;
use serde_json::{json, Map, Value};

use crate::error::{EvalError, PolicyError};
use crate::finding::{Controls, Enforcement, Finding};
use crate::gatekeeper::GatekeeperLibrary;
use crate::metadata::{parse_annotations, ModuleInfo, RuleMeta, Scope, OUTPUT_RULES};
use crate::native::{self, NativeInventory, RuleFn};
use crate::packs;

/// The newest Pod Security Standards version the packs know (v1.N).
pub const LATEST_PSS_VERSION: u32 = 37;

/// The most memory one evaluation of one object may take by default: 64 MiB
/// of live allocations on top of what the evaluator held when it started.
/// An ordinary evaluation takes well under 1 MiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 * 1024 * 1024;

/// Largest policy source file accepted, in bytes.
const MAX_POLICY_BYTES: u64 = 4 * 1024 * 1024;

const AGG_PACKAGE: &str = "keycard_internal_aggregate";

/// The Pod Security Standards level being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PssLevel {
    Baseline,
    Restricted,
}

/// One output rule (`deny`, `violation` or `warn` of one package).
#[derive(Debug, Clone)]
struct RuleInfo {
    policy: String,
    package: String,
    kind: &'static str,
    meta: RuleMeta,
    /// A built-in rule of scope pod: it fires only when `input.pod` exists.
    needs_pod: bool,
    /// A built-in rule: always a set (`deny contains ...`), never a boolean.
    builtin: bool,
    /// The texts every finding of the rule shares.
    shared: SharedTexts,
}

/// A rule's texts as its findings carry them, made once.
#[derive(Debug, Clone)]
struct SharedTexts {
    title: Arc<str>,
    remediation: Arc<str>,
    description: Arc<str>,
    controls: Arc<Controls>,
}

impl SharedTexts {
    fn new(meta: &RuleMeta) -> Self {
        SharedTexts {
            title: meta.title.as_str().into(),
            remediation: meta.remediation.as_str().into(),
            description: meta.description.as_str().into(),
            controls: Arc::new(meta.controls.clone()),
        }
    }
}

impl RuleInfo {
    /// Whether the rule can fire on an object of this kind, with or without a pod.
    fn applies(&self, kind: &str, has_pod: bool) -> bool {
        (has_pod || !self.needs_pod)
            && self
                .meta
                .kinds
                .as_ref()
                .is_none_or(|ks| ks.iter().any(|k| k == kind))
    }
}

/// Which rules run on which objects: one aggregate program per class of
/// objects (kind, pod or not) that run the same rules, so that an object
/// runs only the rules that can fire on it.
struct Dispatch {
    /// Per class: the program, or `None` when no rule applies.
    programs: Vec<Option<Arc<Program>>>,
    /// Per class: the indices (in `Compiled::rules`) of its rules.
    class_rules: Vec<Vec<usize>>,
    /// (has pod, kind) of every kind some rule names, to its class.
    by_kind: BTreeMap<(bool, String), usize>,
    /// The class of kinds no rule names, without and with a pod.
    other: [usize; 2],
}

impl Dispatch {
    fn class(&self, kind: &str, has_pod: bool) -> usize {
        self.by_kind
            .get(&(has_pod, kind.to_string()))
            .copied()
            .unwrap_or(self.other[usize::from(has_pod)])
    }
}

/// A compiled regorus engine plus the rules its aggregate query reports.
#[derive(Clone)]
struct Compiled {
    engine: regorus::Engine,
    rules: Arc<Vec<RuleInfo>>,
    /// The aggregate rule compiled to regorus' bytecode VM, when every
    /// construct it uses compiles; the tree-walking interpreter otherwise.
    /// Entry point 0 is the aggregate; entry point `1 + i` is `rules[i]`
    /// alone (to name the rule when an evaluation fails), when those compile.
    program: Option<Arc<Program>>,
    per_rule_entries: bool,
    /// Programs per class of objects; `None` runs the whole aggregate.
    dispatch: Option<Arc<Dispatch>>,
    timer: ExecutionTimerConfig,
    memory: Option<MemoryBudgetConfig>,
}

impl Compiled {
    /// A VM loaded with the program and the current data, for one evaluator.
    fn vm(&self) -> Option<RegoVM> {
        self.vm_for(self.program.as_ref()?)
    }

    fn vm_for(&self, program: &Arc<Program>) -> Option<RegoVM> {
        let mut vm = RegoVM::new();
        vm.load_program(program.clone());
        if let Err(e) = vm.set_data(self.engine.get_data()) {
            tracing::debug!(error = %e, "bytecode VM refused the data; using the interpreter");
            return None;
        }
        vm.set_execution_timer_config(Some(self.timer));
        vm.set_memory_budget_config(self.memory);
        // The VM's own default stops at 25,000 instructions, which a rule
        // looking across a large inventory passes legitimately; the time and
        // memory limits are the bounds.
        vm.set_max_instructions(usize::MAX);
        Some(vm)
    }
}

/// Builds a [`PolicySet`].
#[derive(Default)]
pub struct PolicySetBuilder<'a> {
    packs: Vec<String>,
    sources: Vec<(String, String)>,
    dirs: Vec<PathBuf>,
    params: Option<(String, Value)>,
    pss_version: Option<u32>,
    timeout: Option<Duration>,
    memory_limit: Option<u64>,
    inventory: Option<&'a [Object]>,
    no_dispatch: bool,
    no_fast_path: bool,
}

impl<'a> PolicySetBuilder<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a built-in pack by name.
    pub fn pack(mut self, name: &str) -> Self {
        self.packs.push(name.to_string());
        self
    }

    /// Add the team's own Rego from text (conftest-style: `input` is the object).
    pub fn source(mut self, name: &str, text: &str) -> Self {
        self.sources.push((name.to_string(), text.to_string()));
        self
    }

    /// Add every `.rego` file under a directory (tests excluded) and its data files.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dirs.push(dir.into());
        self
    }

    /// Parameters of the packs, keyed by parameter name, from the file named.
    pub fn params(mut self, file: &str, params: Value) -> Self {
        self.params = Some((file.to_string(), params));
        self
    }

    /// The Pod Security Standards version (the N of v1.N); latest by default.
    pub fn pss_version(mut self, minor: u32) -> Self {
        self.pss_version = Some(minor);
        self
    }

    /// The most one evaluation of one object may take (default 2 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// The most memory one evaluation of one object may allocate, in bytes
    /// ([`DEFAULT_MEMORY_LIMIT`] by default; 0 turns the limit off).
    /// Enforced per evaluation on regorus' bytecode VM, which runs the
    /// built-in packs and every policy that compiles to it; policies that run
    /// on the interpreter (Gatekeeper templates, Rego the VM does not
    /// compile) are bounded only by the process-wide ceiling of
    /// [`crate::limits::set_process_memory_ceiling`].
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Run every rule on every object, even those that cannot fire on it
    /// (for tests that check the dispatch changes no result).
    #[doc(hidden)]
    pub fn without_dispatch(mut self) -> Self {
        self.no_dispatch = true;
        self
    }

    /// Evaluate the built-in packs on regorus alone, without their native
    /// fast path (the reference the fast path is tested against). Also set
    /// by the environment variable `KEYCARD_NO_FAST_PATH`.
    pub fn without_fast_path(mut self) -> Self {
        self.no_fast_path = true;
        self
    }

    /// Every object of the run, for rules that look across objects.
    pub fn inventory(mut self, objects: &'a [Object]) -> Self {
        self.inventory = Some(objects);
        self
    }

    pub fn build(self) -> Result<PolicySet, PolicyError> {
        let timeout = self.timeout.unwrap_or(Duration::from_secs(2));
        let timer = ExecutionTimerConfig {
            limit: timeout,
            // Look at the clock every 64 steps, not every step.
            check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
        };
        let memory = std::num::NonZeroU64::new(self.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT))
            .map(|limit| MemoryBudgetConfig { limit });
        let mut builtin_rules = Vec::new();
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(timer);
        let mut pss_level = None;
        let mut params = Map::new();
        let mut loaded_dirs: Vec<&str> = Vec::new();
        let mut prefixes: Vec<(&'static str, &'static str)> = Vec::new();
        // Package (and file) to (file, fingerprint of its text), for the
        // fast path.
        let mut fingerprints: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for name in &self.packs {
            let pack = packs::find(name).ok_or_else(|| PolicyError::UnknownPack(name.clone()))?;
            if pack.name == "pss-restricted" {
                pss_level = Some(PssLevel::Restricted);
            } else if pack.name == "pss-baseline" && pss_level.is_none() {
                pss_level = Some(PssLevel::Baseline);
            }
            for p in pack.prefixes {
                // With both PSS packs, baseline rules are reported once, under restricted.
                prefixes.retain(|(pre, _)| pre != p);
                prefixes.push((p, pack.name));
            }
            if let Some(defaults) = packs::default_params(pack) {
                let v: Value = yaml_serde::from_str(defaults).map_err(|e| PolicyError::Params {
                    file: format!("packs/{}/params.yaml", pack.dir),
                    message: e.to_string(),
                })?;
                if let Value::Object(m) = v {
                    params.extend(m);
                }
            }
            if loaded_dirs.contains(&pack.dir) {
                continue;
            }
            loaded_dirs.push(pack.dir);
            for (path, text) in packs::rego_sources(pack) {
                let file = format!("packs/{path}");
                let info = parse_annotations(&file, text)?;
                engine
                    .add_policy(file.clone(), text.to_string())
                    .map_err(|e| PolicyError::Compile(e.to_string()))?;
                fingerprints.insert(
                    info.package.clone(),
                    (file.clone(), native::fingerprint(text)),
                );
                fingerprints.insert(file.clone(), (file.clone(), native::fingerprint(text)));
                builtin_rules.push((file, info));
            }
        }
        if let Some((file, user)) = &self.params {
            match user {
                Value::Object(m) => params.extend(m.clone()),
                Value::Null => {}
                _ => {
                    return Err(PolicyError::Params {
                        file: file.clone(),
                        message: "parameters must be a mapping of name to value".into(),
                    })
                }
            }
        }
        let mut rules = Vec::new();
        for (_file, info) in builtin_rules {
            let pkg = format!("{}.", info.package);
            let Some((_, policy)) = prefixes.iter().find(|(pre, _)| pkg.starts_with(pre)) else {
                continue;
            };
            push_rules(&mut rules, policy, &info, true);
        }
        let builtin = if rules.is_empty() {
            None
        } else {
            Some(finish(engine, rules, timer, memory, !self.no_dispatch)?)
        };
        let fast_path = !self.no_fast_path && std::env::var_os("KEYCARD_NO_FAST_PATH").is_none();
        let native_rules = match &builtin {
            Some(c) if fast_path => Some(native_rules(&c.rules, &fingerprints)),
            _ => None,
        };

        // The team's own Rego: conftest-style input (the object itself).
        let mut user_engine = regorus::Engine::new();
        user_engine.set_execution_timer_config(timer);
        let mut user_rules = Vec::new();
        let mut sources = self.sources.clone();
        let mut data = Vec::new();
        let mut k8s_objects = Vec::new();
        for dir in &self.dirs {
            collect_dir(dir, &mut sources, &mut data, &mut k8s_objects)?;
        }
        let gatekeeper = if k8s_objects.is_empty() {
            None
        } else {
            let (mut lib, rest) = GatekeeperLibrary::from_objects(&k8s_objects)?;
            for o in &rest {
                tracing::warn!(at = %o.source, kind = o.kind(), "ignoring a Kubernetes object in a policy directory: only Gatekeeper templates and constraints are read there");
            }
            lib.set_timeout(timeout);
            if let Some(objs) = self.inventory {
                lib.set_inventory(objs)?;
            }
            (!lib.is_empty()).then_some(lib)
        };
        for (file, text) in &sources {
            let info = parse_annotations(file, text)?;
            add_user_policy(&mut user_engine, file, text)?;
            let policy = policy_label(file);
            push_rules(&mut user_rules, &policy, &info, false);
        }
        for (file, value) in data {
            user_engine
                .add_data(regorus::Value::from(value))
                .map_err(|e| PolicyError::Load {
                    file,
                    message: format!("cannot merge data: {e}"),
                })?;
        }
        let user = if user_rules.is_empty() {
            None
        } else {
            Some(finish(
                user_engine,
                user_rules,
                timer,
                memory,
                !self.no_dispatch,
            )?)
        };
        let mut set = PolicySet {
            builtin,
            user,
            gatekeeper,
            params_rego: to_regorus(&Value::Object(params.clone())),
            params: Value::Object(params),
            pss_version: self.pss_version.unwrap_or(LATEST_PSS_VERSION),
            pss_level,
            converted: Arc::default(),
            native: None,
        };
        let mut inventory = NativeInventory::default();
        if let Some(objects) = self.inventory {
            let (inv, converted) = build_inventory_rego(objects);
            inventory = NativeInventory::from_document(&inv);
            set.set_inventory(inv)?;
            set.converted = Arc::new(converted);
        }
        set.native = native_rules.map(|fns| {
            Arc::new(Native {
                all: (0..fns.len()).collect(),
                fns,
                inventory,
            })
        });
        Ok(set)
    }
}

/// The native twin of each built-in rule, where its Rego and its pack's lib
/// are the text the twin was checked against.
fn native_rules(
    rules: &[RuleInfo],
    fingerprints: &BTreeMap<String, (String, u64)>,
) -> Vec<Option<RuleFn>> {
    let lib_ok = |lib: &str| {
        native::LIBS
            .iter()
            .any(|(f, h)| *f == lib && fingerprints.get(lib).is_some_and(|(_, got)| got == h))
    };
    rules
        .iter()
        .map(|r| {
            if r.kind != "deny" {
                return None;
            }
            let (_, lib, hash, f) = native::RULES.iter().find(|(p, ..)| *p == r.package)?;
            let (file, got) = fingerprints.get(&r.package)?;
            if got != hash || !lib_ok(lib) {
                tracing::debug!(
                    file,
                    "the Rego differs from the fast path's; regorus evaluates this rule"
                );
                return None;
            }
            Some(*f)
        })
        .collect()
}

/// The fast path of the built-in rules (see [`crate::native`]).
struct Native {
    /// Per rule of `Compiled::rules`, its native twin.
    fns: Vec<Option<RuleFn>>,
    /// Every rule index, for a set without dispatch.
    all: Vec<usize>,
    inventory: NativeInventory,
}

impl Native {
    /// The aggregate's result for the object, the same set of `[rule index,
    /// finding]` values regorus yields; `None` when regorus must decide.
    fn evaluate(&self, set: &PolicySet, c: &Compiled, obj: &Object) -> Option<regorus::Value> {
        let pod = obj.pod_template();
        let indices: &[usize] = match c.dispatch.as_deref() {
            Some(d) => d.class_rules.get(d.class(obj.kind(), pod.is_some()))?,
            None => &self.all,
        };
        let mut fns = Vec::with_capacity(indices.len());
        for &i in indices {
            fns.push((i, (*self.fns.get(i)?)?));
        }
        let pod = match pod {
            Some(p) => Some(native::Pod::new(p.metadata, p.spec).ok()?),
            None => None,
        };
        let cx = native::Ctx {
            object: &obj.value,
            pod,
            params: &set.params,
            version: set.pss_version,
            restricted: !matches!(set.pss_level, Some(PssLevel::Baseline)),
            inventory: &self.inventory,
        };
        let mut out = std::collections::BTreeSet::new();
        let mut buf = Vec::new();
        for (i, f) in fns {
            f(&cx, &mut buf).ok()?;
            for v in buf.drain(..) {
                out.insert(regorus::Value::from(vec![
                    regorus::Value::from(i as u64),
                    v,
                ]));
            }
        }
        Some(regorus::Value::from(out))
    }
}

fn policy_label(file: &str) -> String {
    file.trim_end_matches(".rego").to_string()
}

fn push_rules(rules: &mut Vec<RuleInfo>, policy: &str, info: &ModuleInfo, builtin: bool) {
    for kind in OUTPUT_RULES {
        if let Some((_, meta)) = info.outputs.get(*kind) {
            let meta = meta
                .clone()
                .or_else(|| info.package_meta.clone())
                .unwrap_or_default();
            rules.push(RuleInfo {
                policy: policy.to_string(),
                package: info.package.clone(),
                kind,
                needs_pod: builtin && meta.scope == Scope::Pod,
                builtin,
                shared: SharedTexts::new(&meta),
                meta,
            });
        }
    }
}

/// Parse a user file as Rego v1, falling back to v0 (most existing
/// libraries, Gatekeeper's among them, are v0).
fn add_user_policy(
    engine: &mut regorus::Engine,
    file: &str,
    text: &str,
) -> Result<(), PolicyError> {
    let mut probe = regorus::Engine::new();
    match probe.add_policy(file.to_string(), text.to_string()) {
        Ok(_) => {
            engine.set_rego_v0(false);
            engine
                .add_policy(file.to_string(), text.to_string())
                .map_err(|e| PolicyError::Compile(e.to_string()))?;
        }
        Err(v1_err) => {
            let mut probe0 = regorus::Engine::new();
            probe0.set_rego_v0(true);
            if probe0
                .add_policy(file.to_string(), text.to_string())
                .is_err()
            {
                return Err(PolicyError::Compile(v1_err.to_string()));
            }
            tracing::debug!(file, "parsed as Rego v0");
            engine.set_rego_v0(true);
            let res = engine.add_policy(file.to_string(), text.to_string());
            engine.set_rego_v0(false);
            res.map_err(|e| PolicyError::Compile(e.to_string()))?;
        }
    }
    Ok(())
}

fn collect_dir(
    dir: &Path,
    sources: &mut Vec<(String, String)>,
    data: &mut Vec<(String, Value)>,
    k8s: &mut Vec<Object>,
) -> Result<(), PolicyError> {
    let load_err = |p: &Path, m: String| PolicyError::Load {
        file: p.display().to_string(),
        message: m,
    };
    let meta = std::fs::metadata(dir).map_err(|e| load_err(dir, format!("cannot read: {e}")))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        walk(dir, &mut files).map_err(|e| load_err(dir, format!("cannot read directory: {e}")))?;
    } else {
        files.push(dir.to_path_buf());
    }
    for f in files {
        let name = f.display().to_string();
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "rego" | "json" | "yaml" | "yml") || name.ends_with("_test.rego") {
            continue;
        }
        let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        if size > MAX_POLICY_BYTES {
            return Err(load_err(
                &f,
                format!("file is {size} bytes, over the limit of {MAX_POLICY_BYTES}"),
            ));
        }
        let text =
            std::fs::read_to_string(&f).map_err(|e| load_err(&f, format!("cannot read: {e}")))?;
        if ext == "rego" {
            sources.push((name, text));
        } else if looks_like_k8s(&text) {
            // Gatekeeper ConstraintTemplates and constraints.
            let (objs, errs) = parse_str(&name, &text, &LoadOptions::default());
            if let Some(e) = errs.into_iter().next() {
                return Err(PolicyError::Load {
                    file: match e.line {
                        Some(l) => format!("{}:{l}", e.file),
                        None => e.file,
                    },
                    message: e.message,
                });
            }
            k8s.extend(objs);
        } else {
            let v: Value = if ext == "json" {
                serde_json::from_str(&text)
                    .map_err(|e| load_err(&f, format!("invalid JSON: {e}")))?
            } else {
                yaml_serde::from_str(&text)
                    .map_err(|e| load_err(&f, format!("invalid YAML: {e}")))?
            };
            if v.is_object() {
                data.push((name, v));
            }
        }
    }
    Ok(())
}

/// Whether a policy-directory file holds Kubernetes objects (Gatekeeper
/// templates and constraints) rather than a data document.
fn looks_like_k8s(text: &str) -> bool {
    let has = |k: &str| {
        text.lines().any(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{k}:")) || t.starts_with(&format!("\"{k}\""))
        })
    };
    has("apiVersion") && has("kind")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Add the aggregate module that gathers every output rule's results in one
/// query, so one object costs one evaluation whatever the number of rules.
fn finish(
    mut engine: regorus::Engine,
    rules: Vec<RuleInfo>,
    timer: ExecutionTimerConfig,
    memory: Option<MemoryBudgetConfig>,
    dispatch: bool,
) -> Result<Compiled, PolicyError> {
    let all: Vec<usize> = (0..rules.len()).collect();
    engine.set_rego_v0(false);
    engine
        .add_policy(
            format!("{AGG_PACKAGE}.rego"),
            aggregate_source(AGG_PACKAGE, &rules, &all),
        )
        .map_err(|e| PolicyError::Compile(e.to_string()))?;
    // The classes of objects that run the same rules, each with its own
    // aggregate package (compiled below, once the modules are checked).
    let named: std::collections::BTreeSet<&str> = rules
        .iter()
        .filter_map(|r| r.meta.kinds.as_ref())
        .flatten()
        .map(String::as_str)
        .collect();
    let mut class_rules: Vec<Vec<usize>> = Vec::new();
    let mut class_of = |set: Vec<usize>| match class_rules.iter().position(|c| *c == set) {
        Some(i) => i,
        None => {
            class_rules.push(set);
            class_rules.len() - 1
        }
    };
    let applying = |kind: &str, pod: bool| -> Vec<usize> {
        (0..rules.len())
            .filter(|&i| rules[i].applies(kind, pod))
            .collect()
    };
    let mut by_kind = BTreeMap::new();
    for pod in [false, true] {
        for k in &named {
            by_kind.insert((pod, k.to_string()), class_of(applying(k, pod)));
        }
    }
    let other = [class_of(applying("", false)), class_of(applying("", true))];
    let dispatching = dispatch && class_rules.iter().any(|c| *c != all);
    if dispatching {
        for (n, set) in class_rules.iter().enumerate() {
            if set.is_empty() {
                continue;
            }
            let pkg = format!("{AGG_PACKAGE}_c{n}");
            engine
                .add_policy(format!("{pkg}.rego"), aggregate_source(&pkg, &rules, set))
                .map_err(|e| PolicyError::Compile(e.to_string()))?;
        }
    }
    // Prepare (resolve and check every module) now, so that errors surface
    // at load time; a trivial query does that without running any rule,
    // which could be slow or depend on input.
    engine.set_input(regorus::Value::new_object());
    engine
        .eval_query("true".to_string(), false)
        .map_err(|e| PolicyError::Compile(e.to_string()))?;
    let entry = format!("data.{AGG_PACKAGE}.out");
    let mut per_rule_entries = false;
    let program = if std::env::var_os("KEYCARD_REGO_INTERPRETER").is_some() {
        None
    } else {
        match engine.compile_with_entrypoint(&regorus::Rc::from(entry.as_str())) {
            Err(e) => {
                tracing::debug!(error = %e, "policy does not compile to bytecode; using the interpreter");
                None
            }
            Ok(cp) => {
                let refs: Vec<String> =
                    rules.iter().map(|r| rule_ref(&r.package, r.kind)).collect();
                let mut entries = vec![entry.as_str()];
                entries.extend(refs.iter().map(String::as_str));
                match Compiler::compile_from_policy(&cp, &entries) {
                    Ok(p) => {
                        per_rule_entries = true;
                        Some(p)
                    }
                    Err(_) => match Compiler::compile_from_policy(&cp, &[entry.as_str()]) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            tracing::debug!(error = %e, "policy does not compile to bytecode; using the interpreter");
                            None
                        }
                    },
                }
            }
        }
    };
    let dispatch = if dispatching && program.is_some() {
        let mut programs = Vec::new();
        for (n, set) in class_rules.iter().enumerate() {
            if set.is_empty() {
                programs.push(None);
                continue;
            }
            let entry = format!("data.{AGG_PACKAGE}_c{n}.out");
            match engine
                .compile_with_entrypoint(&regorus::Rc::from(entry.as_str()))
                .map_err(|e| e.to_string())
                .and_then(|cp| {
                    Compiler::compile_from_policy(&cp, &[entry.as_str()]).map_err(|e| e.to_string())
                }) {
                Ok(p) => programs.push(Some(p)),
                Err(e) => {
                    tracing::debug!(error = %e, "a class program does not compile; every object runs every rule");
                    programs.clear();
                    break;
                }
            }
        }
        (!programs.is_empty()).then(|| {
            Arc::new(Dispatch {
                programs,
                class_rules,
                by_kind,
                other,
            })
        })
    } else {
        None
    };
    Ok(Compiled {
        engine,
        rules: Arc::new(rules),
        program,
        per_rule_entries,
        dispatch,
        timer,
        memory,
    })
}

/// An aggregate package whose `out` gathers the results of the rules named
/// by index, each result tagged with its index in `rules`.
fn aggregate_source(package: &str, rules: &[RuleInfo], indices: &[usize]) -> String {
    let mut agg = format!("package {package}\n\n");
    for &i in indices {
        let r = &rules[i];
        let path = rule_ref(&r.package, r.kind);
        agg.push_str(&format!(
            "out contains [{i}, v] if {{\n\tx := {path}\n\tis_set(x)\n\tsome v in x\n}}\n\n"
        ));
        if !r.builtin {
            // The team's rules may also be booleans (`deny if ...`).
            agg.push_str(&format!("out contains [{i}, true] if {path} == true\n\n"));
        }
    }
    agg
}

/// `data.a.b.deny`, quoting package components that are not identifiers.
fn rule_ref(package: &str, rule: &str) -> String {
    let mut s = String::from("data");
    for part in package.split('.') {
        let ident = !part.is_empty()
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !part.starts_with(|c: char| c.is_ascii_digit());
        if ident {
            s.push('.');
            s.push_str(part);
        } else {
            s.push_str(&format!("[{:?}]", part.trim_matches('"')));
        }
    }
    s.push('.');
    s.push_str(rule);
    s
}

/// serde_json to regorus without a serialisation round trip.
pub(crate) fn to_regorus(v: &Value) -> regorus::Value {
    match v {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => regorus::Value::from(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                regorus::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                regorus::Value::from(i)
            } else {
                regorus::Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => regorus::Value::from(s.as_str()),
        Value::Array(a) => regorus::Value::from(a.iter().map(to_regorus).collect::<Vec<_>>()),
        Value::Object(m) => regorus::Value::from(
            m.iter()
                .map(|(k, v)| (regorus::Value::from(k.as_str()), to_regorus(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

/// The inventory the built-in packs see (`data.keycard.inventory`): every
/// object by kind, every namespace declared or referenced, and the first
/// object of each namespace in input order (where a finding about a
/// namespace without a Namespace object is reported).
fn build_inventory(objects: &[Object]) -> Value {
    let mut by_kind: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    let mut namespaces = std::collections::BTreeSet::new();
    let mut first: BTreeMap<&str, &Value> = BTreeMap::new();
    for o in objects {
        by_kind.entry(o.kind()).or_default().push(&o.value);
        if o.kind() == "Namespace" {
            namespaces.insert(o.name());
        } else if let Some(ns) = o.namespace() {
            namespaces.insert(ns.to_string());
            first.entry(ns).or_insert(&o.value);
        }
    }
    json!({"keycard": {"inventory": {
        "by_kind": by_kind,
        "namespaces": namespaces,
        "first_by_namespace": first,
    }}})
}

/// [`build_inventory`] built straight into regorus values: one copy of the
/// objects instead of two, which matters at tens of thousands of objects.
fn build_inventory_rego(objects: &[Object]) -> (regorus::Value, Vec<Converted>) {
    use rayon::prelude::*;
    use regorus::Value as V;
    let mut by_kind: BTreeMap<&str, Vec<V>> = BTreeMap::new();
    let mut namespaces = std::collections::BTreeSet::new();
    let mut first: BTreeMap<V, V> = BTreeMap::new();
    let converted: Vec<Converted> = objects
        .par_iter()
        .map(|o| Converted {
            at: std::ptr::from_ref(o) as usize,
            file: o.source.file.clone(),
            line: o.source.line,
            value: to_regorus(&o.value),
        })
        .collect();
    for (o, c) in objects.iter().zip(&converted) {
        let v = c.value.clone();
        if o.kind() == "Namespace" {
            namespaces.insert(V::from(o.name().as_str()));
        } else if let Some(ns) = o.namespace() {
            namespaces.insert(V::from(ns));
            first.entry(V::from(ns)).or_insert_with(|| v.clone());
        }
        by_kind.entry(o.kind()).or_default().push(v);
    }
    let by_kind: BTreeMap<V, V> = by_kind
        .into_iter()
        .map(|(k, v)| (V::from(k), V::from(v)))
        .collect();
    let mut inv = BTreeMap::new();
    inv.insert(V::from("by_kind"), V::from(by_kind));
    inv.insert(
        V::from("namespaces"),
        V::from(namespaces.into_iter().collect::<Vec<_>>()),
    );
    inv.insert(V::from("first_by_namespace"), V::from(first));
    let mut kc = BTreeMap::new();
    kc.insert(V::from("inventory"), V::from(inv));
    let mut root = BTreeMap::new();
    root.insert(V::from("keycard"), V::from(kc));
    (V::from(root), converted)
}

/// An inventory object as converted for the inventory, reused as the input
/// of its own evaluation. `at`, `file` and `line` identify the [`Object`]
/// it came from: the file name is shared (`Arc`) and held here, so an
/// object at the same address with the same file and line is that object.
struct Converted {
    at: usize,
    file: Arc<str>,
    line: usize,
    value: regorus::Value,
}

/// Compiled policies. Cheap to share; get an [`Evaluator`] per thread.
#[derive(Clone)]
pub struct PolicySet {
    builtin: Option<Compiled>,
    user: Option<Compiled>,
    gatekeeper: Option<GatekeeperLibrary>,
    params: Value,
    /// The same parameters, converted once for every evaluation.
    params_rego: regorus::Value,
    pss_version: u32,
    pss_level: Option<PssLevel>,
    /// The inventory's objects, converted once.
    converted: Arc<Vec<Converted>>,
    /// The built-in rules' fast path, when enabled.
    native: Option<Arc<Native>>,
}

impl PolicySet {
    fn set_inventory(&mut self, inv: regorus::Value) -> Result<(), PolicyError> {
        for c in [&mut self.builtin, &mut self.user].into_iter().flatten() {
            c.engine
                .add_data(inv.clone())
                .map_err(|e| PolicyError::Compile(format!("inventory: {e}")))?;
        }
        Ok(())
    }

    /// How many output rules are compiled in.
    pub fn rule_count(&self) -> usize {
        [&self.builtin, &self.user]
            .into_iter()
            .flatten()
            .map(|c| c.rules.len())
            .sum::<usize>()
            + self
                .gatekeeper
                .as_ref()
                .map(|g| g.constraint_count())
                .unwrap_or(0)
    }

    /// The `input` document the built-in packs see for an object: the
    /// contract of every built-in rule, and what a differential run against
    /// OPA feeds to OPA.
    pub fn builtin_input(&self, obj: &Object) -> Value {
        let mut input = Map::new();
        input.insert("object".into(), obj.value.clone());
        if let Some(p) = obj.pod_template() {
            input.insert(
                "pod".into(),
                json!({"metadata": p.metadata, "spec": p.spec}),
            );
        }
        input.insert("params".into(), self.params.clone());
        input.insert("pss_version".into(), json!(self.pss_version));
        let level = match self.pss_level {
            Some(PssLevel::Baseline) => "baseline",
            _ => "restricted",
        };
        input.insert("pss_level".into(), json!(level));
        Value::Object(input)
    }

    /// [`PolicySet::builtin_input`] built directly as a regorus value from an
    /// already converted object: the hot path.
    fn builtin_input_rego(
        &self,
        object: &regorus::Value,
        pod_path: Option<&str>,
    ) -> regorus::Value {
        let mut m = BTreeMap::new();
        m.insert(regorus::Value::from("object"), object.clone());
        if let Some(path) = pod_path {
            let mut at = object;
            if !path.is_empty() {
                for seg in path.split('.') {
                    at = &at[seg];
                }
            }
            let field = |k: &str| match &at[k] {
                regorus::Value::Undefined => regorus::Value::Null,
                v => v.clone(),
            };
            let mut pod = BTreeMap::new();
            pod.insert(regorus::Value::from("metadata"), field("metadata"));
            pod.insert(regorus::Value::from("spec"), field("spec"));
            m.insert(regorus::Value::from("pod"), regorus::Value::from(pod));
        }
        m.insert(regorus::Value::from("params"), self.params_rego.clone());
        m.insert(
            regorus::Value::from("pss_version"),
            regorus::Value::from(u64::from(self.pss_version)),
        );
        let level = match self.pss_level {
            Some(PssLevel::Baseline) => "baseline",
            _ => "restricted",
        };
        m.insert(
            regorus::Value::from("pss_level"),
            regorus::Value::from(level),
        );
        regorus::Value::from(m)
    }

    /// The inventory data document (`{"keycard": {"inventory": ...}}`) for a
    /// set of objects, as the built-in packs see it.
    pub fn inventory_document(objects: &[Object]) -> Value {
        build_inventory(objects)
    }

    pub fn evaluator(&self) -> Evaluator {
        Evaluator {
            set: self.clone(),
            builtin_vm: Runner::new(self.builtin.as_ref()),
            user_vm: Runner::new(self.user.as_ref()),
            fast_path_evaluations: 0,
        }
    }

    /// The same set for another Pod Security Standards version (the
    /// version is only input; nothing is recompiled). For tests.
    #[doc(hidden)]
    pub fn with_pss_version(&self, minor: u32) -> PolicySet {
        let mut s = self.clone();
        s.pss_version = minor;
        s
    }

    /// The same set with the built-in rules evaluated by regorus alone (the
    /// reference the fast path is tested against). For tests.
    #[doc(hidden)]
    pub fn without_fast_path(&self) -> PolicySet {
        let mut s = self.clone();
        s.native = None;
        s
    }
}

/// The VMs of one evaluator for one compiled engine: the whole aggregate,
/// and one per class of objects, made on first use.
#[derive(Default)]
struct Runner {
    full: Option<RegoVM>,
    classes: Vec<Option<RegoVM>>,
}

impl Runner {
    fn new(c: Option<&Compiled>) -> Self {
        let Some(c) = c else {
            return Runner::default();
        };
        let classes = c
            .dispatch
            .as_ref()
            .map(|d| d.programs.iter().map(|_| None).collect())
            .unwrap_or_default();
        Runner {
            full: c.vm(),
            classes,
        }
    }
}

/// Evaluates objects against a [`PolicySet`]. One per thread.
pub struct Evaluator {
    set: PolicySet,
    builtin_vm: Runner,
    user_vm: Runner,
    fast_path_evaluations: u64,
}

impl Evaluator {
    /// How many objects the built-in rules' fast path decided (the others
    /// ran on regorus). For tests and benchmarks.
    #[doc(hidden)]
    pub fn fast_path_evaluations(&self) -> u64 {
        self.fast_path_evaluations
    }

    /// Every finding of every rule on one object.
    pub fn evaluate(&mut self, obj: &Object) -> Result<Vec<Finding>, EvalError> {
        self.evaluate_nth(usize::MAX, obj)
    }

    /// [`Evaluator::evaluate`] for the object at `index` of the inventory
    /// given to the builder: its conversion to regorus values, made for the
    /// inventory, is reused. Any other object is converted as usual.
    pub fn evaluate_nth(&mut self, index: usize, obj: &Object) -> Result<Vec<Finding>, EvalError> {
        let mut findings = Vec::new();
        let pod = obj.pod_template();
        let prefix = pod.map(|p| p.path).unwrap_or("");
        // One conversion of the object; the pod, the parameters and the rest
        // are shared references into it.
        // Made only when regorus evaluates the object.
        let converted = |set: &PolicySet| match set.converted.get(index) {
            Some(c)
                if c.at == std::ptr::from_ref(obj) as usize
                    && c.line == obj.source.line
                    && Arc::ptr_eq(&c.file, &obj.source.file) =>
            {
                c.value.clone()
            }
            _ => to_regorus(&obj.value),
        };
        let mut object = None;
        if let Some(c) = self.set.builtin.as_ref() {
            let fast = self
                .set
                .native
                .as_ref()
                .and_then(|n| n.evaluate(&self.set, c, obj));
            match fast {
                Some(res) => {
                    self.fast_path_evaluations += 1;
                    collect(c, &res, obj, prefix, &mut findings)?
                }
                None => {
                    let o = object.get_or_insert_with(|| converted(&self.set));
                    let input = self.set.builtin_input_rego(o, pod.map(|p| p.path));
                    if let Some(c) = self.set.builtin.as_mut() {
                        run(c, &mut self.builtin_vm, input, obj, prefix, &mut findings)?;
                    }
                }
            }
        }
        if self.set.user.is_some() {
            let o = object.unwrap_or_else(|| converted(&self.set));
            if let Some(c) = self.set.user.as_mut() {
                run(c, &mut self.user_vm, o, obj, prefix, &mut findings)?;
            }
        }
        if let Some(g) = self.set.gatekeeper.as_mut() {
            findings.extend(g.evaluate(obj)?);
        }
        Ok(findings)
    }
}

fn run(
    c: &mut Compiled,
    runner: &mut Runner,
    input: regorus::Value,
    obj: &Object,
    prefix: &str,
    out: &mut Vec<Finding>,
) -> Result<(), EvalError> {
    // The program of the object's class, when the rules are dispatched.
    let mut class_vm = None;
    if let Some(d) = c.dispatch.as_ref() {
        let class = d.class(obj.kind(), obj.pod_template().is_some());
        let Some(Some(program)) = d.programs.get(class) else {
            // No rule can fire on this object.
            return Ok(());
        };
        if let Some(slot) = runner.classes.get_mut(class) {
            if slot.is_none() {
                *slot = c.vm_for(program);
            }
            class_vm = slot.as_mut();
        }
    }
    let res = match class_vm.or(runner.full.as_mut()) {
        Some(vm) => {
            vm.set_input(input.clone());
            match vm.execute() {
                Ok(v) => v,
                Err(e) => {
                    let Some(full) = runner.full.as_mut() else {
                        return Err(EvalError {
                            policy: c
                                .rules
                                .first()
                                .map(|r| r.policy.clone())
                                .unwrap_or_default(),
                            message: vm_error_message(&e),
                        });
                    };
                    return Err(blame_vm(c, full, input, &e));
                }
            }
        }
        None => {
            c.engine.set_input(input.clone());
            match c.engine.eval_rule(format!("data.{AGG_PACKAGE}.out")) {
                Ok(v) => v,
                Err(e) => {
                    c.engine.set_input(input);
                    return Err(blame(c, e.to_string()));
                }
            }
        }
    };
    collect(c, &res, obj, prefix, out)
}

/// The findings of an aggregate result (a set of `[rule index, value]`).
///
/// A `[index, {"msg", "path", "value"}]` item of the set is read from the
/// regorus values, and only its `value` is converted to JSON; any other item
/// (and any other result) is converted whole. Either way the findings, and
/// the first conversion error, are those of converting the whole result.
fn collect(
    c: &Compiled,
    res: &regorus::Value,
    obj: &Object,
    prefix: &str,
    out: &mut Vec<Finding>,
) -> Result<(), EvalError> {
    let regorus::Value::Set(set) = res else {
        return collect_json(c, to_json(res)?, obj, prefix, out);
    };
    let mut found = Vec::new();
    for item in set.iter_sorted() {
        let parts = match plain_finding(item) {
            Some((idx, msg, path, value)) => {
                let value = value.map(to_json).transpose()?;
                c.rules.get(idx as usize).map(|rule| {
                    let path = path.map(|p| rule_path(rule, prefix, p));
                    (rule, msg.to_string(), path, value)
                })
            }
            None => json_finding(c, to_json(item)?, prefix),
        };
        found.extend(parts);
    }
    push_findings(found, obj, out);
    Ok(())
}

fn to_json(v: &regorus::Value) -> Result<Value, EvalError> {
    serde_json::to_value(v).map_err(|e| EvalError {
        policy: String::new(),
        message: e.to_string(),
    })
}

/// `[index, {"msg": string, "path": string, "value": any}]` (path and value
/// optional, no other key): the index, message, path and value.
#[allow(clippy::type_complexity)]
fn plain_finding(
    item: &regorus::Value,
) -> Option<(u64, &str, Option<&str>, Option<&regorus::Value>)> {
    use regorus::Value as RV;
    let RV::Array(pair) = item else { return None };
    let (Some(i @ RV::Number(_)), Some(RV::Object(m)), None) =
        (pair.get(0), pair.get(1), pair.get(2))
    else {
        return None;
    };
    // The index as its JSON form reads (a number converts without error).
    let idx = serde_json::to_value(i).ok()?.as_u64()?;
    let (mut msg, mut path, mut value) = (None, None, None);
    for (k, v) in m.iter() {
        match (k, v) {
            (RV::String(k), RV::String(s)) if k.as_ref() == "msg" => msg = Some(s.as_ref()),
            (RV::String(k), RV::String(s)) if k.as_ref() == "path" => path = Some(s.as_ref()),
            (RV::String(k), v) if k.as_ref() == "value" => value = Some(v),
            _ => return None,
        }
    }
    Some((idx, msg?, path, value))
}

/// The findings of a result converted to JSON whole.
fn collect_json(
    c: &Compiled,
    json: Value,
    obj: &Object,
    prefix: &str,
    out: &mut Vec<Finding>,
) -> Result<(), EvalError> {
    let Value::Array(items) = json else {
        return Ok(());
    };
    let found = items
        .into_iter()
        .filter_map(|item| json_finding(c, item, prefix))
        .collect();
    push_findings(found, obj, out);
    Ok(())
}

type Parts<'r> = (&'r RuleInfo, String, Option<String>, Option<Value>);

/// The rule, message, path and value of one `[rule index, value]` item.
fn json_finding<'r>(c: &'r Compiled, item: Value, prefix: &str) -> Option<Parts<'r>> {
    let Value::Array(pair) = item else {
        return None;
    };
    let mut pair = pair.into_iter();
    let idx = pair.next()?.as_u64()?;
    let v = pair.next()?;
    let rule = c.rules.get(idx as usize)?;
    let (message, path, value) = match v {
        Value::String(s) => (s, None, None),
        Value::Object(mut m) => {
            let msg = m
                .get("msg")
                .or_else(|| m.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| Value::Object(m.clone()).to_string());
            let path = m
                .get("path")
                .and_then(Value::as_str)
                .map(|p| rule_path(rule, prefix, p));
            (msg, path, m.remove("value"))
        }
        Value::Bool(true) => (rule.meta.title.clone(), None, None),
        other => (other.to_string(), None, None),
    };
    Some((rule, message, path, value))
}

/// A finding's path: pod-scoped paths get the pod template's prefix.
fn rule_path(rule: &RuleInfo, prefix: &str, p: &str) -> String {
    if rule.meta.scope == Scope::Pod && !prefix.is_empty() {
        format!("{prefix}.{p}")
    } else {
        p.to_string()
    }
}

/// The findings of one object; its resource is read once.
fn push_findings(found: Vec<Parts<'_>>, obj: &Object, out: &mut Vec<Finding>) {
    if found.is_empty() {
        return;
    }
    let resource = obj.resource_ref();
    let file = obj.source.file.to_string();
    out.extend(found.into_iter().map(|(rule, message, path, value)| {
        Finding {
            rule: rule
                .meta
                .id
                .clone()
                .unwrap_or_else(|| format!("{}.{}", rule.package, rule.kind)),
            policy: rule.policy.clone(),
            severity: rule.meta.severity.unwrap_or(if rule.kind == "warn" {
                Severity::Medium
            } else {
                Severity::High
            }),
            title: rule.shared.title.clone(),
            message,
            remediation: rule.shared.remediation.clone(),
            resource: resource.clone(),
            file: file.clone(),
            line: obj.source.line,
            path,
            value,
            description: rule.shared.description.clone(),
            controls: rule.shared.controls.clone(),
            enforcement: if rule.kind == "warn" {
                Enforcement::Warn
            } else {
                Enforcement::Deny
            },
            exception: None,
        }
    }));
}

/// What a VM error says, in the words of the limits the user set.
fn vm_error_message(e: &VmError) -> String {
    const MIB: u64 = 1024 * 1024;
    match e {
        VmError::MemoryBudgetExceeded { usage, budget, .. } => format!(
            "exceeded the memory limit of {} MiB (it had allocated {} MiB when stopped)",
            budget.div_ceil(MIB),
            usage / MIB
        ),
        VmError::MemoryLimitExceeded { usage, limit, .. } => format!(
            "stopped at the process memory ceiling of {} MiB ({} MiB in use)",
            limit.div_ceil(MIB),
            usage / MIB
        ),
        other => other.to_string(),
    }
}

/// The aggregate program failed on the VM: run each rule's own entry point
/// under the same time and memory limits to name the rule. Never falls back
/// to the interpreter, which has no per-evaluation memory budget.
fn blame_vm(c: &Compiled, vm: &mut RegoVM, input: regorus::Value, err: &VmError) -> EvalError {
    if c.per_rule_entries {
        for (i, r) in c.rules.iter().enumerate() {
            vm.set_input(input.clone());
            if let Err(e) = vm.execute_entry_point_by_index(i + 1) {
                return EvalError {
                    policy: r.policy.clone(),
                    message: format!("rule {}: {}", rule_id(r), vm_error_message(&e)),
                };
            }
        }
    }
    EvalError {
        policy: c
            .rules
            .first()
            .map(|r| r.policy.clone())
            .unwrap_or_default(),
        message: format!("the rules together: {}", vm_error_message(err)),
    }
}

fn rule_id(r: &RuleInfo) -> String {
    r.meta
        .id
        .clone()
        .unwrap_or_else(|| format!("{}.{}", r.package, r.kind))
}

/// The aggregate query failed (a time limit, a conflict, a builtin error):
/// find which rule failed by evaluating each on its own, so the error names
/// the policy and rule instead of the whole set.
fn blame(c: &mut Compiled, aggregate_error: String) -> EvalError {
    let rules = c.rules.clone();
    for r in rules.iter() {
        if let Err(e) = c.engine.eval_rule(rule_ref(&r.package, r.kind)) {
            return EvalError {
                policy: r.policy.clone(),
                message: format!("rule {}: {e}", rule_id(r)),
            };
        }
    }
    EvalError {
        policy: rules.first().map(|r| r.policy.clone()).unwrap_or_default(),
        message: aggregate_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycard_k8s::{parse_str, LoadOptions};

    fn objs(text: &str) -> Vec<Object> {
        parse_str("in.yaml", text, &LoadOptions::default()).0
    }

    #[test]
    fn user_v0_and_v1_policies_with_metadata() {
        let v0 = "package legacy\n\ndeny[msg] {\n  input.kind == \"Service\"\n  msg := \"no services\"\n}\n";
        let v1 = "# METADATA\n# title: Labels\n# custom:\n#   id: team-labels\n#   severity: low\npackage team\n\nwarn contains {\"msg\": \"missing owner\", \"path\": \"metadata.labels.owner\"} if not input.metadata.labels.owner\n";
        let set = PolicySetBuilder::new()
            .source("legacy.rego", v0)
            .source("team.rego", v1)
            .build()
            .unwrap();
        let o = objs("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n");
        let mut f = set.evaluator().evaluate(&o[0]).unwrap();
        f.sort_by(|a, b| a.rule.cmp(&b.rule));
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].rule, "legacy.deny");
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].message, "no services");
        assert_eq!(f[1].rule, "team-labels");
        assert_eq!(f[1].enforcement, Enforcement::Warn);
        assert_eq!(f[1].path.as_deref(), Some("metadata.labels.owner"));
        assert_eq!(&*f[1].title, "Labels");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = PolicySetBuilder::new()
            .source(
                "bad.rego",
                "package bad\n\ndeny contains x if {\n  x := \n}\n",
            )
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bad.rego:"), "{err}");
    }

    #[test]
    fn runaway_policy_times_out() {
        let src = "package slow\n\ndeny contains n if {\n  input.kind == \"Service\"\n  some i in numbers.range(1, 20000)\n  some j in numbers.range(1, 20000)\n  n := i * j\n  n < 0\n}\n";
        let set = PolicySetBuilder::new()
            .source("slow.rego", src)
            .timeout(Duration::from_millis(200))
            .build();
        // Compiling evaluates once; either compile or evaluation must stop within the limit.
        let start = std::time::Instant::now();
        match set {
            Err(e) => assert!(
                e.to_string().to_lowercase().contains("time") || e.to_string().contains("limit"),
                "{e}"
            ),
            Ok(set) => {
                let o = objs("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n");
                let e = set.evaluator().evaluate(&o[0]).unwrap_err();
                assert!(
                    e.message.to_lowercase().contains("time") || e.message.contains("limit"),
                    "{}",
                    e.message
                );
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    /// A rule that builds a value of about 3 GB (ten million strings of a
    /// few hundred bytes) is stopped at the memory limit and named, with no
    /// time limit to help it.
    #[test]
    fn huge_value_stops_at_the_memory_limit() {
        let src = "# METADATA\n# custom:\n#   id: team-hog\npackage hog\n\ndeny contains msg if {\n  input.kind == \"Service\"\n  pad := concat(\"\", [\"x\" | some _ in numbers.range(1, 300)])\n  big := [s | some i in numbers.range(1, 10000); some j in numbers.range(1, 1000); s := sprintf(\"%d-%d-%s\", [i, j, pad])]\n  count(big) > 0\n  msg := \"built it\"\n}\n";
        let set = PolicySetBuilder::new()
            .source("hog.rego", src)
            .timeout(Duration::from_secs(600))
            .memory_limit(16 * 1024 * 1024)
            .build()
            .unwrap();
        let o = objs("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n");
        let mut ev = set.evaluator();
        let e = ev.evaluate(&o[0]).unwrap_err();
        assert_eq!(e.policy, "hog");
        assert!(
            e.message
                .starts_with("rule team-hog: exceeded the memory limit of 16 MiB"),
            "{}",
            e.message
        );
        // The evaluator is usable afterwards: the same rule on another kind.
        let cm = objs("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n");
        assert!(ev.evaluate(&cm[0]).unwrap().is_empty());
    }

    /// Running only the rules that can fire on an object (by kind, pod or
    /// not) gives the same findings as running every rule on it, and does
    /// skip rules: every class of object is represented.
    #[test]
    fn dispatch_by_kind_changes_no_finding() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {type: NodePort}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules: [{apiGroups: ['*'], resources: ['*'], verbs: [escalate]}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: cluster-admin}\nsubjects: [{kind: User, name: u}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb, namespace: a}\nroleRef: {kind: ClusterRole, name: cluster-admin}\nsubjects: [{kind: ServiceAccount, name: x, namespace: a}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: b}\nspec: {replicas: 1}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: e, namespace: b}\nspec:\n  template:\n    spec:\n      hostNetwork: true\n      containers: [{name: c, image: 'nginx:latest', securityContext: {privileged: true}, env: [{name: DB_PASSWORD, value: hunter2}]}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec:\n  containers: [{name: c, image: nginx}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: c}\ndata: {k: v}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: a}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: nginx, securityContext: {privileged: true}}]\n";
        let o = objs(text);
        assert_eq!(o.len(), 10);
        let build = |dispatch: bool| {
            let mut b = PolicySetBuilder::new()
                .pack("pss-restricted")
                .pack("zero-trust")
                .inventory(&o);
            if !dispatch {
                b = b.without_dispatch();
            }
            b.build().unwrap()
        };
        let with = build(true);
        let without = build(false);
        let classes = with
            .builtin
            .as_ref()
            .and_then(|c| c.dispatch.as_ref())
            .map(|d| d.programs.len())
            .unwrap_or(0);
        assert!(classes >= 5, "{classes} classes");
        let key = |f: &Finding| {
            (
                f.rule.clone(),
                f.path.clone(),
                f.message.clone(),
                f.value.clone().map(|v| v.to_string()),
            )
        };
        let (mut ev1, mut ev2) = (with.evaluator(), without.evaluator());
        let mut total = 0;
        for obj in &o {
            let mut a: Vec<_> = ev1.evaluate(obj).unwrap().iter().map(key).collect();
            let mut b: Vec<_> = ev2.evaluate(obj).unwrap().iter().map(key).collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "{}", obj.source);
            total += a.len();
        }
        assert!(total > 20, "{total} findings");
    }

    #[test]
    fn rule_refs_quote_odd_packages() {
        assert_eq!(rule_ref("a.b", "deny"), "data.a.b.deny");
        assert_eq!(rule_ref("a.1x", "deny"), "data.a[\"1x\"].deny");
    }
}
