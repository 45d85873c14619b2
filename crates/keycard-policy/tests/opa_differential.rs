#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Differential test of keycard's policy engine (regorus) against real OPA.
//!
//! Both engines get the same Rego sources (the embedded built-in packs), the
//! same `input` document (`PolicySet::builtin_input`) and the same `data`
//! document (`PolicySet::inventory_document`). keycard's decisions are its
//! findings; OPA's are the `deny` sets of every package the selected packs
//! report, mapped to rule ids through the packages' METADATA (`custom.id`)
//! and to object paths through the pack contract (pod-scoped paths get the
//! pod template prefix). A decision is (rule id, path, message, value); the
//! two sets must be identical for every object.
//!
//! Inputs: every Kubernetes pod-security fixture at its own level and
//! version, and a generated corpus (`scripts/gen-corpus`) of varied objects,
//! good and bad shapes, under `pss-restricted` + `zero-trust` with default
//! parameters and under `pss-baseline` + `zero-trust` with unusual ones.
//!
//! OPA runs in one Python process (`tests/opa_eval.py`, JSON lines in and
//! out) from `KEYCARD_TEST_PYTHON`, which `scripts/test` sets. Without it the
//! test is skipped with a message, except under CI (`CI` set), where it fails.
//!
//! `opa_speed` (ignored; run by `scripts/bench`) times both engines on the
//! same inputs in the same run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use keycard_k8s::{load_paths, parse_str, LoadOptions, Object};
use keycard_policy::packs::{self, Pack};
use keycard_policy::{parse_annotations, PolicySet, PolicySetBuilder, Scope};
use serde_json::{json, Value};

const FIXTURE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/pod-security"
);
const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/opa_eval.py");
const GEN_CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/gen-corpus");
const EXPECTED_FIXTURES: usize = 4537;
const CORPUS_OBJECTS: usize = 400;
const CORPUS_SEED: u32 = 7;

/// The Python with `opa_bindings`, or `None` to skip (never under CI).
fn python() -> Option<String> {
    match std::env::var("KEYCARD_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => {
            panic!("KEYCARD_TEST_PYTHON is not set under CI: run the tests through scripts/test")
        }
        _ => {
            eprintln!(
                "\n!!!!! SKIPPED: the OPA differential test needs KEYCARD_TEST_PYTHON \
                 (a Python with opa-golib-python-bindings); run scripts/test !!!!!\n"
            );
            None
        }
    }
}

/// Runs the OPA helper on a batch of requests; one reply per request.
fn run_opa(python: &str, requests: &[Value]) -> Vec<Value> {
    let mut child = Command::new(python)
        .arg(HELPER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let lines: Vec<String> = requests.iter().map(Value::to_string).collect();
    let writer = std::thread::spawn(move || {
        for l in lines {
            stdin.write_all(l.as_bytes()).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
    });
    let stdout = child.stdout.take().unwrap();
    let replies: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    writer.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "OPA helper exited with {status}");
    assert_eq!(replies.len(), requests.len(), "one reply per request");
    replies
}

/// What one deny package means to keycard: its rule id and path scope.
struct RuleInfo {
    id: String,
    scope: Scope,
}

/// A set of packs evaluated together: its Rego, its reported packages.
struct PackSel {
    /// Module path -> source, for OPA.
    modules: BTreeMap<String, &'static str>,
    /// Reported deny packages -> rule info.
    rules: BTreeMap<String, RuleInfo>,
}

fn pack_sel(names: &[&str]) -> PackSel {
    let packs: Vec<&'static Pack> = names.iter().map(|n| packs::find(n).unwrap()).collect();
    let mut modules = BTreeMap::new();
    let mut rules = BTreeMap::new();
    for pack in &packs {
        for (path, text) in packs::rego_sources(pack) {
            let file = format!("packs/{path}");
            let info = parse_annotations(&file, text).unwrap();
            modules.insert(file, text);
            let pkg = format!("{}.", info.package);
            let reported = packs
                .iter()
                .any(|p| p.prefixes.iter().any(|pre| pkg.starts_with(pre)));
            let Some((_, deny_meta)) = info.outputs.get("deny") else {
                continue;
            };
            if !reported {
                continue;
            }
            let meta = deny_meta
                .clone()
                .or_else(|| info.package_meta.clone())
                .unwrap_or_default();
            let id = meta
                .id
                .clone()
                .unwrap_or_else(|| format!("{}.deny", info.package));
            rules.insert(
                info.package.clone(),
                RuleInfo {
                    id,
                    scope: meta.scope,
                },
            );
        }
    }
    assert!(!rules.is_empty(), "no deny rules in {names:?}");
    PackSel { modules, rules }
}

/// Objects with sorted keys, so equal values print equally.
fn canon(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, canon(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canon).collect()),
        other => other.clone(),
    }
}

/// One decision: rule id, path, message, value (canonical JSON).
type Decision = (String, Option<String>, String, String);

fn decision_of_value(rule: &RuleInfo, item: &Value, prefix: &str) -> Decision {
    let (msg, path, value) = match item {
        Value::Object(m) => {
            let msg = m
                .get("msg")
                .or_else(|| m.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| item.to_string());
            let path = m.get("path").and_then(Value::as_str).map(|p| {
                if rule.scope == Scope::Pod && !prefix.is_empty() {
                    format!("{prefix}.{p}")
                } else {
                    p.to_string()
                }
            });
            (msg, path, m.get("value").cloned())
        }
        Value::String(s) => (s.clone(), None, None),
        other => (other.to_string(), None, None),
    };
    let value = value.map(|v| canon(&v).to_string()).unwrap_or_default();
    (rule.id.clone(), path, msg, value)
}

/// A group of objects evaluated under one policy set.
struct Group {
    name: String,
    sel: PackSel,
    set: PolicySet,
    data: Value,
    objects: Vec<(String, Object)>,
}

fn keycard_decisions(set: &PolicySet, objects: &[(String, Object)]) -> Vec<BTreeSet<Decision>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let chunk = objects.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = objects
            .chunks(chunk)
            .map(|part| {
                let mut ev = set.evaluator();
                s.spawn(move || {
                    part.iter()
                        .map(|(label, obj)| {
                            let findings = ev
                                .evaluate(obj)
                                .unwrap_or_else(|e| panic!("{label}: keycard: {e}"));
                            findings
                                .into_iter()
                                .map(|f| {
                                    let value = f
                                        .value
                                        .as_ref()
                                        .map(|v| canon(v).to_string())
                                        .unwrap_or_default();
                                    (f.rule, f.path, f.message, value)
                                })
                                .collect::<BTreeSet<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn opa_decisions(
    sel: &PackSel,
    obj: &Object,
    reply: &Value,
    label: &str,
    fired: &mut BTreeSet<String>,
) -> BTreeSet<Decision> {
    let deny = reply
        .get("deny")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{label}: OPA: {reply}"));
    let prefix = obj.pod_template().map(|p| p.path).unwrap_or("");
    let mut out = BTreeSet::new();
    for (pkg, items) in deny {
        let rule = &sel.rules[pkg];
        let items = items
            .as_array()
            .unwrap_or_else(|| panic!("{label}: {pkg}.deny is not a set: {items}"));
        if !items.is_empty() {
            fired.insert(pkg.clone());
        }
        for item in items {
            out.insert(decision_of_value(rule, item, prefix));
        }
    }
    out
}

fn pss_groups() -> Vec<Group> {
    let mut groups = Vec::new();
    let mut total = 0;
    for level in ["baseline", "restricted"] {
        let pack = format!("pss-{level}");
        for version in 0..=37u32 {
            let mut objects = Vec::new();
            for outcome in ["pass", "fail"] {
                let dir = Path::new(FIXTURE_DIR)
                    .join(level)
                    .join(format!("v1.{version}"))
                    .join(outcome);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut paths: Vec<PathBuf> = entries
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
                    .collect();
                paths.sort();
                for path in paths {
                    let label = path
                        .strip_prefix(FIXTURE_DIR)
                        .unwrap_or(&path)
                        .display()
                        .to_string();
                    let text = std::fs::read_to_string(&path).unwrap();
                    let (objs, errs) = parse_str(&label, &text, &LoadOptions::default());
                    assert!(errs.is_empty(), "{label}: {errs:?}");
                    assert_eq!(objs.len(), 1, "{label}");
                    objects.extend(objs.into_iter().map(|o| (label.clone(), o)));
                }
            }
            if objects.is_empty() {
                continue;
            }
            total += objects.len();
            let set = PolicySetBuilder::new()
                .pack(&pack)
                .pss_version(version)
                .build()
                .unwrap();
            groups.push(Group {
                name: format!("{level} v1.{version}"),
                sel: pack_sel(&[&pack]),
                set,
                data: json!({}),
                objects,
            });
        }
    }
    assert_eq!(total, EXPECTED_FIXTURES, "pod-security fixture count");
    groups
}

fn corpus(python: &str, count: usize, seed: u32) -> Vec<Object> {
    let out = Command::new(python)
        .arg(GEN_CORPUS)
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "gen-corpus failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (objs, errs) = parse_str("corpus.yaml", &text, &LoadOptions::default());
    assert!(errs.is_empty(), "{errs:?}");
    objs
}

fn corpus_groups(python: &str) -> Vec<Group> {
    let objects = corpus(python, CORPUS_OBJECTS, CORPUS_SEED);
    assert_eq!(objects.len(), CORPUS_OBJECTS);
    let labelled: Vec<(String, Object)> = objects
        .iter()
        .map(|o| {
            (
                format!("{}:{} {}", o.source.file, o.source.line, o.kind()),
                o.clone(),
            )
        })
        .collect();
    let data = PolicySet::inventory_document(&objects);
    let defaults = PolicySetBuilder::new()
        .pack("pss-restricted")
        .pack("zero-trust")
        .inventory(&objects)
        .build()
        .unwrap();
    // Parameters off the beaten path: registries on, digests optional, a
    // lone string where a list is expected, allowed host paths, token and
    // cluster-admin allow lists, an empty allowed-values map.
    let params = json!({
        "allowed_registries": ["registry.example.com", "ghcr.io/acme/", 7],
        "require_image_digest": false,
        "required_labels": "owner",
        "allowed_label_values": {},
        "allowed_host_paths": ["/var/log", "relative/ignored"],
        "token_service_accounts": ["api-0", "worker-1"],
        "cluster_admin_subjects": [
            {"kind": "Group", "name": "system:masters"},
            {"kind": "ServiceAccount", "name": "sa-1", "namespace": "kube-system"},
        ],
        "network_policy_exempt_namespaces": ["kube-system", "prod-3"],
        "rbac_exempt_cluster_roles": ["cluster-admin", "system:*"],
    });
    let custom = PolicySetBuilder::new()
        .pack("pss-baseline")
        .pack("zero-trust")
        .pss_version(25)
        .params("params.yaml", params)
        .inventory(&objects)
        .build()
        .unwrap();
    vec![
        Group {
            name: "corpus, pss-restricted + zero-trust, defaults".into(),
            sel: pack_sel(&["pss-restricted", "zero-trust"]),
            set: defaults,
            data: data.clone(),
            objects: labelled.clone(),
        },
        Group {
            name: "corpus, pss-baseline v1.25 + zero-trust, custom params".into(),
            sel: pack_sel(&["pss-baseline", "zero-trust"]),
            set: custom,
            data,
            objects: labelled,
        },
    ]
}

fn load_request(g: &Group) -> Value {
    json!({
        "op": "load",
        "modules": g.sel.modules,
        "data": g.data,
        "packages": g.sel.rules.keys().collect::<Vec<_>>(),
    })
}

#[test]
fn keycard_and_opa_make_identical_decisions() {
    let Some(python) = python() else { return };
    let started = Instant::now();
    let mut groups = pss_groups();
    groups.extend(corpus_groups(&python));
    let setup_time = started.elapsed();

    // One request stream for the whole run: load, then every input.
    let mut requests = Vec::new();
    for g in &groups {
        requests.push(load_request(g));
        for (_, obj) in &g.objects {
            requests.push(json!({"op": "eval", "input": g.set.builtin_input(obj)}));
        }
    }
    let opa_started = Instant::now();
    let replies = run_opa(&python, &requests);
    let opa_time = opa_started.elapsed();

    let mut replies = replies.into_iter();
    let mut objects = 0;
    let mut decisions = 0;
    let mut disagreements = Vec::new();
    let mut fired = BTreeSet::new();
    let mut all_packages = BTreeSet::new();
    let keycard_started = Instant::now();
    for g in &groups {
        let load = replies.next().unwrap();
        assert_eq!(load["ok"], true, "{}: OPA load: {load}", g.name);
        all_packages.extend(g.sel.rules.keys().cloned());
        let ours = keycard_decisions(&g.set, &g.objects);
        for ((label, obj), kc) in g.objects.iter().zip(ours) {
            let reply = replies.next().unwrap();
            let opa = opa_decisions(&g.sel, obj, &reply, label, &mut fired);
            objects += 1;
            decisions += kc.union(&opa).count();
            if kc != opa {
                disagreements.push(format!(
                    "{} / {label}:\n  keycard only: {:#?}\n  OPA only: {:#?}",
                    g.name,
                    kc.difference(&opa).collect::<Vec<_>>(),
                    opa.difference(&kc).collect::<Vec<_>>(),
                ));
            }
        }
    }
    let keycard_time = keycard_started.elapsed();
    for d in disagreements.iter().take(20) {
        println!("{d}");
    }
    println!(
        "opa differential: {objects} objects, {decisions} decisions, {} disagreements \
         ({} groups; {:.1} s in all: {:.1} s loading and compiling, {:.1} s in OPA, \
         {:.1} s in keycard and comparing)",
        disagreements.len(),
        groups.len(),
        started.elapsed().as_secs_f64(),
        setup_time.as_secs_f64(),
        opa_time.as_secs_f64(),
        keycard_time.as_secs_f64(),
    );
    assert!(
        disagreements.is_empty(),
        "{} objects where keycard and OPA disagree",
        disagreements.len()
    );
    // The inputs must exercise every rule, or agreement proves little.
    let silent: Vec<_> = all_packages.difference(&fired).collect();
    assert!(silent.is_empty(), "rules that never fired: {silent:?}");
    assert!(decisions > 1000, "too few decisions: {decisions}");
}

/// Speed of keycard and OPA on the same inputs, for BENCHMARKS.md: run by
/// `scripts/bench` with KEYCARD_BENCH_CORPUS set to a generated corpus.
#[test]
#[ignore = "a measurement, run by scripts/bench in release mode"]
fn opa_speed() {
    let Some(python) = python() else { return };
    let dir = std::env::var("KEYCARD_BENCH_CORPUS").expect("KEYCARD_BENCH_CORPUS");
    let rounds: usize = std::env::var("KEYCARD_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let loaded = load_paths(&[dir.as_str()], &LoadOptions::default());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let objects = loaded.objects;
    let set = PolicySetBuilder::new()
        .pack("pss-restricted")
        .pack("zero-trust")
        .inventory(&objects)
        .build()
        .unwrap();
    let sel = pack_sel(&["pss-restricted", "zero-trust"]);
    // Every k-th object (and every k-th Deployment), at most
    // KEYCARD_BENCH_SAMPLE of each (default 1000), so a run stays short.
    let sample: usize = std::env::var("KEYCARD_BENCH_SAMPLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let every = |objs: Vec<&Object>| -> Vec<Object> {
        let step = objs.len().div_ceil(sample).max(1);
        objs.into_iter().step_by(step).cloned().collect()
    };
    let deployments = every(
        objects
            .iter()
            .filter(|o| o.kind() == "Deployment")
            .collect(),
    );
    let sampled = every(objects.iter().collect());

    let mut requests = vec![json!({
        "op": "load",
        "modules": sel.modules,
        "data": PolicySet::inventory_document(&objects),
        "packages": sel.rules.keys().collect::<Vec<_>>(),
    })];
    let mut medians = HashMap::new();
    for (name, objs) in [("all objects", &sampled), ("Deployments", &deployments)] {
        let mut ev = set.evaluator();
        let mut per_round = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            for o in objs.iter() {
                ev.evaluate(o).unwrap();
            }
            per_round.push(t.elapsed().as_secs_f64() * 1e6 / objs.len() as f64);
        }
        per_round.sort_by(f64::total_cmp);
        medians.insert(name, per_round[per_round.len() / 2]);
        let inputs: Vec<Value> = objs.iter().map(|o| set.builtin_input(o)).collect();
        requests.push(json!({"op": "time", "inputs": inputs, "rounds": rounds}));
    }
    let replies = run_opa(&python, &requests);
    assert_eq!(replies[0]["ok"], true, "{}", replies[0]);
    println!(
        "objects: {} in the corpus (inventory), timed: {} sampled objects and {} Deployments, \
         rounds: {rounds}, one thread",
        objects.len(),
        sampled.len(),
        deployments.len()
    );
    for (i, name) in ["all objects", "Deployments"].iter().enumerate() {
        let r = &replies[i + 1];
        let q = r["query_median_us"]
            .as_f64()
            .unwrap_or_else(|| panic!("{r}"));
        let t = r["trivial_median_us"].as_f64().unwrap();
        let k = medians[name];
        println!(
            "speed[{name}]: keycard {k:.1} us/decision; OPA via Python {q:.1} us, \
             trivial policy through the same path {t:.1} us, OPA net {:.1} us; \
             ratio OPA net / keycard {:.2}x (gross {:.2}x)",
            q - t,
            (q - t) / k,
            q / k
        );
    }
}
