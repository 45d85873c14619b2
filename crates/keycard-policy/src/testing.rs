//! `keycard policy test`: runs `test_*` rules like `opa test`.
//!
//! Every `.rego` file under the given paths is loaded into one regorus engine
//! (Rego v1 first; a file that only parses as v0 is accepted with a note, as
//! old test suites are often v0), every `data.json` / `data.yaml` is merged at
//! the root of `data`, and every rule whose name starts with `test_` is
//! evaluated on its own. A test passes when it evaluates to `true`; `false`
//! or undefined is a failure and an evaluation error (a conflict, a time-out)
//! is an error, so a broken test can never pass by accident.
//!
//! ```
//! use keycard_policy::testing::{run_tests_sources, TestOptions};
//!
//! let src = r#"
//! package example
//!
//! allow if input.user == "alice"
//!
//! test_alice_allowed if allow with input as {"user": "alice"}
//! test_bob_denied if not allow with input as {"user": "bob"}
//! "#;
//! let report = run_tests_sources(
//!     &[("example_test.rego".to_string(), src.to_string())],
//!     &TestOptions::default(),
//! )
//! .unwrap();
//! assert_eq!((report.passed(), report.failed()), (2, 0));
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regorus::unstable::{Rule, RuleHead};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, LimitError, Value};

/// Largest file (policy or data) the runner reads. Test inputs are hand
/// written; anything bigger is a mistake or an attack on the runner.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Most files one run loads.
pub const MAX_FILES: usize = 10_000;

/// Deepest directory nesting walked (also stops symlink loops).
pub const MAX_DEPTH: usize = 32;

/// Longest `--run` pattern accepted.
const MAX_PATTERN_BYTES: usize = 1024;

/// How a test run behaves.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Collect line coverage of every loaded policy file.
    pub coverage: bool,
    /// Only run tests whose full name (`data.<package>.<test>`) matches this
    /// regular expression, like `opa test --run`.
    pub run: Option<String>,
    /// Time limit for each test; a test that runs longer is an error.
    pub timeout: Duration,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            coverage: false,
            run: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What one test came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// The rule evaluated to `true`.
    Pass,
    /// The rule evaluated to `false`, to another value, or was undefined.
    Fail,
    /// Evaluation failed (conflict, builtin error, time limit); the message says why.
    Error(String),
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// Package without the `data.` prefix, e.g. `keycard.zt.image_digest_test`.
    pub package: String,
    /// Rule name, e.g. `test_latest_fires`.
    pub name: String,
    /// File the rule is defined in, as loaded.
    pub file: String,
    /// Line of the rule's first definition.
    pub line: usize,
    pub outcome: TestOutcome,
    pub duration: Duration,
    /// What the test's `print` calls wrote, for explaining a failure.
    pub prints: Vec<String>,
}

impl TestResult {
    /// The name `--run` matches against: `data.<package>.<name>`.
    pub fn full_name(&self) -> String {
        format!("data.{}.{}", self.package, self.name)
    }
}

/// Line coverage of one policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCoverage {
    pub file: String,
    /// Lines with an expression that was evaluated, ascending.
    pub covered: Vec<u32>,
    /// Lines with an expression that was never evaluated, ascending.
    pub not_covered: Vec<u32>,
}

impl FileCoverage {
    /// Covered lines as a percentage of the lines coverage knows about (100
    /// for a file with no evaluable line).
    pub fn percent(&self) -> f64 {
        percent(self.covered.len(), self.not_covered.len())
    }
}

fn percent(covered: usize, not_covered: usize) -> f64 {
    let total = covered + not_covered;
    if total == 0 {
        100.0
    } else {
        covered as f64 * 100.0 / total as f64
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// One entry per test, in load order (file, then line).
    pub results: Vec<TestResult>,
    /// Per-file coverage, when asked for.
    pub coverage: Option<Vec<FileCoverage>>,
    /// Things worth telling the user that are not failures, e.g. a file
    /// that had to be parsed as Rego v0.
    pub notes: Vec<String>,
}

impl TestReport {
    /// Tests that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| *o == TestOutcome::Pass)
    }

    /// Tests that did not pass: failures and errors alike, so that a
    /// caller checking `failed() == 0` cannot miss an erroring test.
    pub fn failed(&self) -> usize {
        self.count(|o| *o != TestOutcome::Pass)
    }

    /// Tests that ended in an evaluation error (a subset of `failed`).
    pub fn errored(&self) -> usize {
        self.count(|o| matches!(o, TestOutcome::Error(_)))
    }

    fn count(&self, f: impl Fn(&TestOutcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }

    /// Lines covered over all files, as a percentage, when coverage was collected.
    pub fn coverage_percent(&self) -> Option<f64> {
        let files = self.coverage.as_ref()?;
        let covered = files.iter().map(|f| f.covered.len()).sum();
        let not_covered = files.iter().map(|f| f.not_covered.len()).sum();
        Some(percent(covered, not_covered))
    }
}

/// A readable report: every failure and error with where it is defined,
/// then a closing `N passed, N failed` line.
impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        for r in &self.results {
            let (label, detail) = match &r.outcome {
                TestOutcome::Pass => continue,
                TestOutcome::Fail => ("FAIL", String::new()),
                TestOutcome::Error(m) => ("ERROR", format!(": {m}")),
            };
            writeln!(
                f,
                "{}:{}: {label} {} ({:?}){detail}",
                r.file,
                r.line,
                r.full_name(),
                r.duration
            )?;
            for p in &r.prints {
                writeln!(f, "    {p}")?;
            }
        }
        if let Some(files) = &self.coverage {
            for c in files {
                writeln!(
                    f,
                    "coverage {}: {:.1}% ({} of {} lines)",
                    c.file,
                    c.percent(),
                    c.covered.len(),
                    c.covered.len() + c.not_covered.len()
                )?;
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A policy file is not valid Rego (v1, nor v0).
    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    /// A data file is not valid JSON/YAML or conflicts with other data.
    #[error("{file}: {message}")]
    Data { file: String, message: String },
    #[error("{file}: {size} bytes is over the limit of {MAX_FILE_BYTES} bytes")]
    TooLarge { file: String, size: u64 },
    #[error("more than {MAX_FILES} files to load")]
    TooManyFiles,
    #[error("{dir}: directories nested deeper than {MAX_DEPTH} levels")]
    TooDeep { dir: String },
    #[error("invalid --run pattern {pattern:?}: {message}")]
    Filter { pattern: String, message: String },
    /// The policies load but cannot be prepared for evaluation.
    #[error("{0}")]
    Compile(String),
    #[error("coverage: {0}")]
    Coverage(String),
}

/// Run the tests of every `.rego` file under `paths` (files or directories,
/// walked recursively in name order, skipping hidden entries), with every
/// `data.json` / `data.yaml` / `data.yml` found there merged into `data`.
pub fn run_tests(paths: &[PathBuf], opts: &TestOptions) -> Result<TestReport, TestError> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, 0, true, &mut files)?;
    }
    let mut sources = Vec::with_capacity(files.len());
    for p in files {
        sources.push((p.display().to_string(), read_limited(&p)?));
    }
    run_tests_sources(&sources, opts)
}

/// Run tests from in-memory sources `(file name, text)`: the built-in packs
/// embedded in the binary. `.rego` names are policies; `data.json`,
/// `data.yaml` and `data.yml` names are data; anything else is ignored.
pub fn run_tests_sources(
    sources: &[(String, String)],
    opts: &TestOptions,
) -> Result<TestReport, TestError> {
    if sources.len() > MAX_FILES {
        return Err(TestError::TooManyFiles);
    }
    let filter = opts.run.as_deref().map(Filter::new).transpose()?;

    let mut engine = Engine::new();
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: opts.timeout,
        check_interval: NonZeroU32::MIN,
    });
    engine.set_gather_prints(true);
    let mut report = TestReport::default();
    let mut tests: Vec<(String, String, String, usize)> = Vec::new();

    for (file, text) in sources {
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(TestError::TooLarge {
                file: file.clone(),
                size: text.len() as u64,
            });
        }
        match kind_of(file) {
            FileKind::Rego => {
                let package = add_policy(&mut engine, file, text, &mut report.notes)?;
                for (name, line) in test_rules(&mut engine) {
                    tests.push((package.clone(), name, file.clone(), line));
                }
            }
            FileKind::Data => {
                let value = parse_data(file, text)?;
                engine.add_data(value).map_err(|e| TestError::Data {
                    file: file.clone(),
                    message: format!("cannot merge into data: {e}"),
                })?;
            }
            FileKind::Other => {}
        }
    }

    // A rule defined by several bodies or files is one test, as in OPA.
    let mut seen = BTreeSet::new();
    tests.retain(|(pkg, name, _, _)| seen.insert((pkg.clone(), name.clone())));
    if let Some(filter) = &filter {
        let names: Vec<String> = tests
            .iter()
            .map(|(p, n, _, _)| format!("data.{p}.{n}"))
            .collect();
        let keep = filter.matching(&names)?;
        tests.retain(|(p, n, _, _)| keep.contains(&format!("data.{p}.{n}")));
    }

    if opts.coverage {
        engine.set_enable_coverage(true);
    }
    for (package, name, file, line) in tests {
        let started = Instant::now();
        let evaluated = engine.eval_rule(format!("data.{package}.{name}"));
        let duration = started.elapsed();
        let outcome = match evaluated {
            Ok(Value::Bool(true)) => TestOutcome::Pass,
            Ok(_) => TestOutcome::Fail,
            Err(e) => {
                let timed_out = matches!(
                    e.downcast_ref::<LimitError>(),
                    Some(LimitError::TimeLimitExceeded { .. })
                );
                TestOutcome::Error(describe_error(timed_out, &e.to_string(), opts.timeout))
            }
        };
        let prints = engine.take_prints().unwrap_or_default();
        tracing::debug!(%package, %name, ?outcome, ?duration, "test evaluated");
        report.results.push(TestResult {
            package,
            name,
            file,
            line,
            outcome,
            duration,
            prints,
        });
    }
    if opts.coverage {
        let raw = engine
            .get_coverage_report()
            .map_err(|e| TestError::Coverage(e.to_string()))?;
        report.coverage = Some(
            raw.files
                .into_iter()
                .map(|f| FileCoverage {
                    file: f.path,
                    covered: f.covered.into_iter().collect(),
                    not_covered: f.not_covered.into_iter().collect(),
                })
                .collect(),
        );
    }
    Ok(report)
}

enum FileKind {
    Rego,
    Data,
    Other,
}

fn kind_of(file: &str) -> FileKind {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    if base.ends_with(".rego") {
        FileKind::Rego
    } else if matches!(base, "data.json" | "data.yaml" | "data.yml") {
        FileKind::Data
    } else {
        FileKind::Other
    }
}

/// Add one policy: Rego v1, or v0 when v1 fails and v0 parses (with a note).
/// Returns the package without `data.`.
fn add_policy(
    engine: &mut Engine,
    file: &str,
    text: &str,
    notes: &mut Vec<String>,
) -> Result<String, TestError> {
    let package = match engine.add_policy(file.to_string(), text.to_string()) {
        Ok(p) => p,
        Err(v1_error) => {
            engine.set_rego_v0(true);
            let v0 = engine.add_policy(file.to_string(), text.to_string());
            engine.set_rego_v0(false);
            match v0 {
                Ok(p) => {
                    let why = last_line(&v1_error.to_string());
                    tracing::warn!(file, reason = %why, "parsed as Rego v0");
                    notes.push(format!(
                        "{file}: not valid Rego v1 ({why}); parsed as Rego v0"
                    ));
                    p
                }
                Err(_) => return Err(parse_error(file, &v1_error.to_string())),
            }
        }
    };
    Ok(package
        .strip_prefix("data.")
        .unwrap_or(&package)
        .to_string())
}

/// The `test_*` rules of the module added last, with the line of each.
fn test_rules(engine: &mut Engine) -> Vec<(String, usize)> {
    let Some(module) = engine.get_modules().last() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rule in &module.policy {
        let refr = match rule.as_ref() {
            // Functions are never tests, as in OPA.
            Rule::Spec {
                head: RuleHead::Func { .. },
                ..
            } => continue,
            Rule::Spec {
                head: RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. },
                ..
            } => refr,
            Rule::Default { refr, args, .. } if args.is_empty() => refr,
            Rule::Default { .. } => continue,
        };
        let name = refr.span().text();
        if name.starts_with("test_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            out.push((name.to_string(), rule.span().line as usize));
        }
    }
    out
}

/// A regorus parse error as file, line and the message's last line.
fn parse_error(file: &str, message: &str) -> TestError {
    // regorus formats errors as "\n--> FILE:LINE:COL\n<snippet>\nerror: MSG".
    let line = message
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .and_then(|loc| {
            let mut parts = loc.rsplitn(3, ':');
            let _col = parts.next();
            parts.next()?.parse::<usize>().ok()
        })
        .unwrap_or(0);
    TestError::Parse {
        file: file.to_string(),
        line,
        message: last_line(message),
    }
}

fn last_line(message: &str) -> String {
    let line = message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// An evaluation error's message, with time-outs said plainly.
fn describe_error(timed_out: bool, message: &str, timeout: Duration) -> String {
    if timed_out || message.contains("time limit") {
        return format!("exceeded the time limit of {timeout:?}");
    }
    // Keep where regorus says the problem is ("--> FILE:LINE:COL").
    match message
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
    {
        Some(location) => format!("{location}: {}", last_line(message)),
        None => last_line(message),
    }
}

fn parse_data(file: &str, text: &str) -> Result<Value, TestError> {
    let json: serde_json::Value = if file.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| TestError::Data {
            file: file.to_string(),
            message: e.to_string(),
        })?
    } else {
        yaml_serde::from_str(text).map_err(|e| TestError::Data {
            file: file.to_string(),
            message: e.to_string(),
        })?
    };
    if !json.is_object() {
        return Err(TestError::Data {
            file: file.to_string(),
            message: "data must be an object at the top level".into(),
        });
    }
    Ok(Value::from(json))
}

fn read_limited(path: &Path) -> Result<String, TestError> {
    let io = |source| TestError::Io {
        file: path.display().to_string(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(TestError::TooLarge {
            file: path.display().to_string(),
            size,
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

fn collect(
    path: &Path,
    depth: usize,
    explicit: bool,
    out: &mut Vec<PathBuf>,
) -> Result<(), TestError> {
    let io = |source| TestError::Io {
        file: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        if depth > MAX_DEPTH {
            return Err(TestError::TooDeep {
                dir: path.display().to_string(),
            });
        }
        let mut entries = std::fs::read_dir(path)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden {
                collect(&entry, depth + 1, false, out)?;
            }
        }
    } else {
        let name = path.display().to_string();
        // A file named on the command line is loaded whatever its name
        // (as policy when it ends in .rego); in directories only Rego and
        // data files are.
        let wanted = !matches!(kind_of(&name), FileKind::Other) || (explicit && is_data_ext(&name));
        if wanted {
            if out.len() >= MAX_FILES {
                return Err(TestError::TooManyFiles);
            }
            out.push(path.to_path_buf());
        }
    }
    Ok(())
}

fn is_data_ext(name: &str) -> bool {
    name.ends_with(".json") || name.ends_with(".yaml") || name.ends_with(".yml")
}

/// The `--run` filter: a regular expression, evaluated with Rego's own
/// `regex.match` so that the syntax is the one policy authors already use
/// (and no second regex engine is linked in).
struct Filter {
    pattern: String,
}

impl Filter {
    fn new(pattern: &str) -> Result<Self, TestError> {
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(TestError::Filter {
                pattern: pattern.chars().take(64).collect(),
                message: format!("longer than {MAX_PATTERN_BYTES} bytes"),
            });
        }
        Ok(Self {
            pattern: pattern.to_string(),
        })
    }

    fn matching(&self, names: &[String]) -> Result<BTreeSet<String>, TestError> {
        let err = |message: String| TestError::Filter {
            pattern: self.pattern.clone(),
            message,
        };
        let mut engine = Engine::new();
        engine
            .add_policy(
                "keycard-test-filter.rego".to_string(),
                FILTER_POLICY.to_string(),
            )
            .map_err(|e| err(last_line(&e.to_string())))?;
        let input = serde_json::json!({ "pattern": self.pattern, "names": names });
        engine.set_input(Value::from(input));
        let valid = engine
            .eval_rule(format!("data.{FILTER_PACKAGE}.valid"))
            .map_err(|e| err(last_line(&e.to_string())))?;
        if valid != Value::Bool(true) {
            return Err(err("not a valid regular expression".into()));
        }
        let matching = engine
            .eval_rule(format!("data.{FILTER_PACKAGE}.matching"))
            .map_err(|e| err(last_line(&e.to_string())))?;
        let json = serde_json::to_value(&matching).map_err(|e| err(e.to_string()))?;
        let names = json
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(names)
    }
}

const FILTER_PACKAGE: &str = "keycard_internal_test_filter";

const FILTER_POLICY: &str = r#"package keycard_internal_test_filter

valid := regex.is_valid(input.pattern)

matching := [n | some n in input.names; regex.match(input.pattern, n)]
"#;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn run(src: &str, opts: &TestOptions) -> TestReport {
        run_tests_sources(&[("t_test.rego".to_string(), src.to_string())], opts).unwrap()
    }

    fn outcome(report: &TestReport, name: &str) -> TestOutcome {
        report
            .results
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no test {name} in {report:?}"))
            .outcome
            .clone()
    }

    const BASIC: &str = r#"package demo.basic

allow if input.user == "alice"

test_pass if allow with input as {"user": "alice"}

test_false if {
	false == true
}

test_undefined if allow

test_not_boolean := 1

test_mocked_data if data.cfg.level == 3 with data.cfg as {"level": 3}

test_error if {
	x := conflict
	x == 1
}

conflict := 1

conflict := 2

test_helper(x) if x == 1

helper_test_not_a_test := true
"#;

    #[test]
    fn outcomes_follow_opa_semantics() {
        let report = run(BASIC, &TestOptions::default());
        assert_eq!(outcome(&report, "test_pass"), TestOutcome::Pass);
        assert_eq!(outcome(&report, "test_false"), TestOutcome::Fail);
        assert_eq!(outcome(&report, "test_undefined"), TestOutcome::Fail);
        assert_eq!(outcome(&report, "test_not_boolean"), TestOutcome::Fail);
        assert_eq!(outcome(&report, "test_mocked_data"), TestOutcome::Pass);
        match outcome(&report, "test_error") {
            TestOutcome::Error(m) => assert!(m.contains("conflict"), "{m}"),
            other => panic!("expected an error, got {other:?}"),
        }
        // Functions and rules not named test_* are not tests.
        let names: Vec<&str> = report.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "test_pass",
                "test_false",
                "test_undefined",
                "test_not_boolean",
                "test_mocked_data",
                "test_error"
            ]
        );
        assert_eq!(report.passed(), 2);
        assert_eq!(report.failed(), 4);
        assert_eq!(report.errored(), 1);
    }

    #[test]
    fn results_carry_package_file_and_line() {
        let report = run(BASIC, &TestOptions::default());
        let r = report
            .results
            .iter()
            .find(|r| r.name == "test_false")
            .unwrap();
        assert_eq!(r.package, "demo.basic");
        assert_eq!(r.file, "t_test.rego");
        assert_eq!(r.line, 7);
        assert_eq!(r.full_name(), "data.demo.basic.test_false");
        let text = report.to_string();
        assert!(
            text.contains("t_test.rego:7: FAIL data.demo.basic.test_false"),
            "{text}"
        );
        assert!(text.ends_with("2 passed, 4 failed"), "{text}");
    }

    #[test]
    fn with_mocks_input_data_and_functions() {
        let src = r#"package demo.mock

import data.demo.lib

deny contains msg if {
	some c in input.containers
	lib.bad(c.image)
	msg := sprintf("bad %s", [c.image])
}

test_input_mocked if {
	deny == {"bad x:latest"} with input as {"containers": [{"image": "x:latest"}, {"image": "y:1"}]}
}

test_function_mocked if {
	count(deny) == 2 with input as {"containers": [{"image": "a"}, {"image": "b"}]} with lib.bad as always
}

always(_) := true
"#;
        let lib = "package demo.lib\n\nbad(image) if endswith(image, \":latest\")\n";
        let report = run_tests_sources(
            &[
                ("lib.rego".to_string(), lib.to_string()),
                ("mock_test.rego".to_string(), src.to_string()),
            ],
            &TestOptions::default(),
        )
        .unwrap();
        assert_eq!((report.passed(), report.failed()), (2, 0), "{report}");
    }

    #[test]
    fn runaway_test_is_stopped_by_the_time_limit() {
        let src = r#"package demo.slow

test_slow if {
	count([1 | some i in numbers.range(1, 20000); some j in numbers.range(1, 20000); i * j < 0]) == 0
}

test_fast if true
"#;
        let opts = TestOptions {
            timeout: Duration::from_millis(200),
            ..TestOptions::default()
        };
        let started = Instant::now();
        let report = run(src, &opts);
        let elapsed = started.elapsed();
        match outcome(&report, "test_slow") {
            TestOutcome::Error(m) => assert!(m.contains("time limit"), "{m}"),
            other => panic!("expected a time-out, got {other:?}"),
        }
        // The next test gets a fresh budget.
        assert_eq!(outcome(&report, "test_fast"), TestOutcome::Pass);
        // 400 million iterations would take minutes; the limit cuts it short.
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    }

    #[test]
    fn coverage_reports_evaluated_and_skipped_lines() {
        let src = r#"package demo.cov

allow if {
	input.x == 1
}

deny if {
	input.x == 2
}

test_allow if allow with input as {"x": 1}
"#;
        let opts = TestOptions {
            coverage: true,
            ..TestOptions::default()
        };
        let report = run(src, &opts);
        assert_eq!(report.passed(), 1);
        let files = report.coverage.as_ref().unwrap();
        assert_eq!(files.len(), 1);
        let f = &files[0];
        assert_eq!(f.file, "t_test.rego");
        assert!(f.covered.contains(&4), "{f:?}");
        assert!(f.covered.contains(&11), "{f:?}");
        assert!(f.not_covered.contains(&8), "{f:?}");
        assert!(!f.covered.contains(&8), "{f:?}");
        let pct = f.percent();
        assert!(pct > 0.0 && pct < 100.0, "{pct}");
        assert_eq!(report.coverage_percent(), Some(pct));
        // Without --coverage nothing is collected.
        assert!(run(src, &TestOptions::default()).coverage.is_none());
    }

    #[test]
    fn run_filter_selects_by_full_name() {
        let opts = TestOptions {
            run: Some("basic\\.test_(pass|false)$".to_string()),
            ..TestOptions::default()
        };
        let report = run(BASIC, &opts);
        let names: Vec<&str> = report.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["test_pass", "test_false"]);

        let none = run(
            BASIC,
            &TestOptions {
                run: Some("^nothing$".to_string()),
                ..TestOptions::default()
            },
        );
        assert!(none.results.is_empty());

        let bad = run_tests_sources(
            &[("t_test.rego".to_string(), BASIC.to_string())],
            &TestOptions {
                run: Some("(unclosed".to_string()),
                ..TestOptions::default()
            },
        );
        assert!(matches!(bad, Err(TestError::Filter { .. })), "{bad:?}");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let src = "package demo.broken\n\ntest_ok if true\n\ntest_bad if {\n\tx := \n}\n";
        let err = run_tests_sources(
            &[("broken_test.rego".to_string(), src.to_string())],
            &TestOptions::default(),
        )
        .unwrap_err();
        match &err {
            TestError::Parse {
                file,
                line,
                message,
            } => {
                assert_eq!(file, "broken_test.rego");
                assert!((6..=7).contains(line), "line {line}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert!(err.to_string().starts_with("broken_test.rego:"), "{err}");
    }

    #[test]
    fn v0_files_are_accepted_with_a_note() {
        let src = "package demo.old\n\nallow { input.x == 1 }\n\ntest_allow { allow with input as {\"x\": 1} }\n";
        let report = run_tests_sources(
            &[("old_test.rego".to_string(), src.to_string())],
            &TestOptions::default(),
        )
        .unwrap();
        assert_eq!((report.passed(), report.failed()), (1, 0));
        assert_eq!(report.notes.len(), 1);
        assert!(
            report.notes[0].contains("old_test.rego") && report.notes[0].contains("v0"),
            "{:?}",
            report.notes
        );
    }

    #[test]
    fn multi_body_test_runs_once() {
        let src = "package demo.multi\n\ntest_either if input.a\n\ntest_either if true\n";
        let report = run(src, &TestOptions::default());
        assert_eq!(report.results.len(), 1);
        assert_eq!(report.results[0].line, 3);
        assert_eq!(report.passed(), 1);
    }

    #[test]
    fn prints_are_kept_for_the_report() {
        let src =
            "package demo.print\n\ntest_printing if {\n\tprint(\"looking at\", 42)\n\tfalse\n}\n";
        let report = run(src, &TestOptions::default());
        assert_eq!(report.failed(), 1);
        assert!(
            report.results[0]
                .prints
                .iter()
                .any(|p| p.contains("looking at 42")),
            "{:?}",
            report.results[0].prints
        );
    }

    #[test]
    fn directories_load_rego_and_data_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("pkg");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join("p_test.rego"),
            "package demo.dir\n\ntest_data if data.settings.limit == 10\n\ntest_yaml if data.more == [1, 2]\n",
        )
        .unwrap();
        std::fs::write(sub.join("data.json"), r#"{"settings": {"limit": 10}}"#).unwrap();
        std::fs::write(dir.path().join("data.yaml"), "more: [1, 2]\n").unwrap();
        // Not data: only data.json / data.yaml are merged from directories.
        std::fs::write(sub.join("params.yaml"), "settings: {limit: 99}\n").unwrap();
        std::fs::write(dir.path().join(".hidden.rego"), "this is not rego").unwrap();
        let report = run_tests(&[dir.path().to_path_buf()], &TestOptions::default()).unwrap();
        assert_eq!((report.passed(), report.failed()), (2, 0), "{report}");
        assert!(report.results[0].file.ends_with("p_test.rego"));
    }

    #[test]
    fn bad_data_and_missing_paths_are_errors() {
        let bad = run_tests_sources(
            &[("data.json".to_string(), "[1, 2]".to_string())],
            &TestOptions::default(),
        );
        assert!(matches!(bad, Err(TestError::Data { .. })), "{bad:?}");
        let missing = run_tests(
            &[PathBuf::from("/nonexistent/keycard/tests")],
            &TestOptions::default(),
        );
        assert!(matches!(missing, Err(TestError::Io { .. })), "{missing:?}");
    }

    #[test]
    fn oversized_sources_are_refused() {
        let big = format!(
            "package demo.big\n# {}\n",
            "x".repeat(MAX_FILE_BYTES as usize)
        );
        let err = run_tests_sources(
            &[("big_test.rego".to_string(), big)],
            &TestOptions::default(),
        );
        assert!(matches!(err, Err(TestError::TooLarge { .. })), "{err:?}");
    }
}
