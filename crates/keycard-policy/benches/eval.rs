#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Per-object evaluation of the built-in packs on a typical Deployment (two
//! containers, probes, resources, securityContexts, labels), and the pieces
//! of one evaluation timed apart (building the input document, converting it
//! to regorus values, the aggregate query alone, converting the result), so
//! that a regression says where the time went.
//!
//!     cargo bench -p keycard-policy --bench eval
//!
//! Target: one object against pss-restricted + zero-trust in at most 20 us.
//! `.../deployment` runs the built-in rules' native fast path (as `keycard
//! check` does), `.../deployment/regorus_only` the same rules on regorus
//! alone; `KEYCARD_NO_FAST_PATH=1` turns the fast path off everywhere.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keycard_k8s::{parse_str, LoadOptions, Object};
use keycard_policy::packs;
use keycard_policy::{PolicySet, PolicySetBuilder};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
  namespace: shop
  labels:
    app.kubernetes.io/name: checkout
    app.kubernetes.io/part-of: shop
    owner: team-payments
    data-classification: confidential
spec:
  replicas: 3
  selector:
    matchLabels:
      app.kubernetes.io/name: checkout
  template:
    metadata:
      labels:
        app.kubernetes.io/name: checkout
    spec:
      serviceAccountName: checkout
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: checkout
          image: registry.example.com/shop/checkout:1.14.2@sha256:3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f
          ports:
            - name: http
              containerPort: 8080
          env:
            - name: LOG_LEVEL
              value: info
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef: {name: checkout-db, key: password}
          resources:
            requests: {cpu: 200m, memory: 256Mi}
            limits: {cpu: "1", memory: 512Mi}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 10
          readinessProbe:
            httpGet: {path: /ready, port: http}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
        - name: envoy
          image: registry.example.com/mesh/envoy:1.31.0
          ports:
            - name: admin
              containerPort: 9901
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: 500m, memory: 128Mi}
          readinessProbe:
            httpGet: {path: /ready, port: admin}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities:
              drop: [ALL]
      volumes:
        - name: tmp
          emptyDir: {}
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: shop
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"#;

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: checkout-config\n  namespace: shop\n  labels: {app.kubernetes.io/name: checkout}\ndata:\n  LOG_LEVEL: info\n  FEATURES: a,b,c\n";

fn objects() -> Vec<Object> {
    let (objs, errs) = parse_str("deployment.yaml", DEPLOYMENT, &LoadOptions::default());
    assert!(errs.is_empty(), "{errs:?}");
    objs
}

fn set(packs: &[&str], objs: &[Object]) -> PolicySet {
    let mut b = PolicySetBuilder::new();
    for p in packs {
        b = b.pack(p);
    }
    b.inventory(objs).build().unwrap()
}

/// A bare regorus engine with the same Rego and an aggregate rule like the
/// one keycard generates, to time the query alone.
fn bare_engine(pack_names: &[&str], objs: &[Object]) -> regorus::Engine {
    bare_engine_with(pack_names, objs, |t| t.to_string())
}

/// `import data.a.b.lib` dropped and every `lib.x` spelled `data.a.b.lib.x`.
fn expand_lib_imports(text: &str) -> String {
    let Some(import) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("import data."))
        .filter(|p| p.ends_with(".lib"))
        .map(str::to_string)
    else {
        return text.to_string();
    };
    let mut out = String::new();
    for line in text.lines() {
        if line.trim() == format!("import data.{import}") {
            continue;
        }
        let mut rest = line;
        let mut prev: Option<char> = None;
        while let Some(i) = rest.find("lib.") {
            let before = rest[..i].chars().last().or(prev);
            out.push_str(&rest[..i]);
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                out.push_str("lib.");
            } else {
                out.push_str(&format!("data.{import}."));
            }
            prev = Some('.');
            rest = &rest[i + 4..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

fn bare_engine_with(
    pack_names: &[&str],
    objs: &[Object],
    rewrite: impl Fn(&str) -> String,
) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    let mut deny_refs = Vec::new();
    let mut dirs = Vec::new();
    for name in pack_names {
        let pack = packs::find(name).unwrap();
        for (path, text) in packs::rego_sources(pack) {
            let pkg = text
                .lines()
                .find_map(|l| l.strip_prefix("package "))
                .unwrap()
                .trim()
                .to_string();
            let reported = pack
                .prefixes
                .iter()
                .any(|pre| format!("{pkg}.").starts_with(pre));
            if reported && text.contains("\ndeny contains") && !deny_refs.contains(&pkg) {
                deny_refs.push(pkg);
            }
            if !dirs.contains(&path) {
                dirs.push(path);
                engine.add_policy(path.to_string(), rewrite(text)).unwrap();
            }
        }
    }
    let mut agg = String::from("package bench_aggregate\n\n");
    for (i, pkg) in deny_refs.iter().enumerate() {
        agg.push_str(&format!(
            "out contains [{i}, v] if {{\n\tx := data.{pkg}.deny\n\tis_set(x)\n\tsome v in x\n}}\n\n"
        ));
    }
    engine.add_policy("agg.rego".into(), agg).unwrap();
    let inv = PolicySet::inventory_document(objs);
    engine.add_data(regorus::Value::from(inv)).unwrap();
    engine
}

/// With KEYCARD_BENCH_PACKAGES set: each package's deny set evaluated on its
/// own (a fresh engine each time, so no rule value is shared), to find the
/// expensive rules. Plain timing loops; printed, not asserted.
fn per_package(objs: &[Object]) {
    let packs = ["pss-restricted", "zero-trust"];
    let set = set(&packs, objs);
    let input = regorus::Value::from(set.builtin_input(&objs[0]));
    let engine = if std::env::var_os("KEYCARD_BENCH_EXPAND").is_some() {
        bare_engine_with(&packs, objs, expand_lib_imports)
    } else {
        bare_engine(&packs, objs)
    };
    let mut rows = Vec::new();
    for name in packs {
        let pack = packs::find(name).unwrap();
        for (_, text) in packs::rego_sources(pack) {
            if !text.contains("\ndeny contains") {
                continue;
            }
            let pkg = text
                .lines()
                .find_map(|l| l.strip_prefix("package "))
                .unwrap()
                .trim()
                .to_string();
            let rule = format!("data.{pkg}.deny");
            let mut e = engine.clone();
            // On the bytecode VM, as keycard runs it.
            let cp = e
                .compile_with_entrypoint(&regorus::Rc::from(rule.as_str()))
                .unwrap();
            let prog = regorus::languages::rego::compiler::Compiler::compile_from_policy(
                &cp,
                &[rule.as_str()],
            )
            .unwrap();
            let mut vm = regorus::rvm::vm::RegoVM::new();
            vm.load_program(prog);
            vm.set_data(e.get_data()).unwrap();
            vm.set_max_instructions(usize::MAX);
            vm.set_input(input.clone());
            vm.execute().unwrap();
            let n = 2000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                vm.set_input(input.clone());
                vm.execute().unwrap();
            }
            rows.push((t.elapsed() / n, pkg));
        }
    }
    rows.sort();
    rows.reverse();
    for (d, pkg) in rows {
        println!("package {pkg}: {d:?}");
    }
}

fn bench(c: &mut Criterion) {
    let objs = objects();
    // With KEYCARD_BENCH_ITERS=N: N evaluations of the Deployment and exit,
    // for instruction counts (`perf stat -e instructions:u`, run with N and
    // 2N and take the difference), which a shared machine does not disturb.
    if let Some(n) = std::env::var("KEYCARD_BENCH_ITERS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
    {
        let set = set(&["pss-restricted", "zero-trust"], &objs);
        let mut ev = set.evaluator();
        for _ in 0..n {
            black_box(ev.evaluate(black_box(&objs[0])).unwrap());
        }
        std::process::exit(0);
    }
    if std::env::var_os("KEYCARD_BENCH_PACKAGES").is_some() {
        per_package(&objs);
    }
    let deployment = &objs[0];
    let mut g = c.benchmark_group("evaluate");
    for packs in [
        &["pss-restricted", "zero-trust"][..],
        &["pss-restricted"][..],
    ] {
        let set = set(packs, &objs);
        let mut ev = set.evaluator();
        let findings = ev.evaluate(deployment).unwrap();
        // The typical Deployment is not clean: the sidecar's image has no
        // digest and a writable root filesystem. A change there changes the
        // work measured.
        if packs.len() == 2 {
            assert_eq!(findings.len(), 2, "{findings:#?}");
        } else {
            assert!(findings.is_empty(), "{findings:#?}");
        }
        let label = packs.join("+");
        let before = ev.fast_path_evaluations();
        g.bench_function(format!("{label}/deployment"), |b| {
            b.iter(|| ev.evaluate(black_box(deployment)).unwrap())
        });
        // The built-in rules' native fast path decided it (unless turned off
        // with KEYCARD_NO_FAST_PATH).
        if std::env::var_os("KEYCARD_NO_FAST_PATH").is_none() {
            assert!(ev.fast_path_evaluations() > before);
        }
        // The same evaluation on regorus alone, the reference the fast path
        // is held to: the ratio of the two is the fast path's gain, measured
        // under the same load.
        let reference = set.without_fast_path();
        let mut slow = reference.evaluator();
        assert_eq!(slow.evaluate(deployment).unwrap().len(), findings.len());
        g.bench_function(format!("{label}/deployment/regorus_only"), |b| {
            b.iter(|| slow.evaluate(black_box(deployment)).unwrap())
        });
        // The same object as `keycard check` evaluates it: an inventory
        // object, whose conversion to regorus values is made once.
        assert_eq!(
            ev.evaluate_nth(0, deployment).unwrap().len(),
            findings.len()
        );
        g.bench_function(format!("{label}/deployment/inventory_object"), |b| {
            b.iter(|| ev.evaluate_nth(0, black_box(deployment)).unwrap())
        });
        if packs.len() == 2 {
            // An object no pod rule applies to, in a namespace that has its
            // Namespace object: what most of a cluster's objects cost.
            let (cm, _) = parse_str("cm.yaml", CONFIGMAP, &LoadOptions::default());
            assert!(ev.evaluate(&cm[0]).unwrap().is_empty());
            g.bench_function(format!("{label}/configmap"), |b| {
                b.iter(|| ev.evaluate(black_box(&cm[0])).unwrap())
            });
        }
    }
    g.finish();

    // The pieces of one evaluation (pss-restricted + zero-trust).
    let packs = ["pss-restricted", "zero-trust"];
    let set = set(&packs, &objs);
    let mut g = c.benchmark_group("pieces");
    g.bench_function("builtin_input", |b| {
        b.iter(|| set.builtin_input(black_box(deployment)))
    });
    let input = set.builtin_input(deployment);
    g.bench_function("input_to_regorus_value", |b| {
        b.iter(|| regorus::Value::from(black_box(input.clone())))
    });
    let rinput = regorus::Value::from(input.clone());
    let mut engine = bare_engine(&packs, &objs);
    engine.set_input(rinput.clone());
    let res = engine.eval_rule("data.bench_aggregate.out".into()).unwrap();
    g.bench_function("set_input+aggregate_query", |b| {
        b.iter(|| {
            engine.set_input(black_box(rinput.clone()));
            engine.eval_rule("data.bench_aggregate.out".into()).unwrap()
        })
    });
    // The same query with `import data.keycard.*.lib` spelled out as full
    // references: what the pack Rego would cost without regorus' import
    // resolution overhead.
    let mut expanded = bare_engine_with(&packs, &objs, expand_lib_imports);
    expanded.set_input(rinput.clone());
    assert_eq!(
        expanded
            .eval_rule("data.bench_aggregate.out".into())
            .unwrap(),
        res
    );
    g.bench_function("set_input+aggregate_query/imports_spelled_out", |b| {
        b.iter(|| {
            expanded.set_input(black_box(rinput.clone()));
            expanded
                .eval_rule("data.bench_aggregate.out".into())
                .unwrap()
        })
    });
    g.bench_function("result_to_json", |b| {
        b.iter(|| serde_json::to_value(black_box(&res)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
