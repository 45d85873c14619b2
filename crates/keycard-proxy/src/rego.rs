//! An optional Rego rule per policy, for what the declarative model cannot
//! say. The module's `match` rule (in its own package) must be true for the
//! policy to match; `input` is the request (see [`crate::Attrs::rego_input_json`]).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;

use crate::request::Attrs;

/// Largest Rego module accepted in a policy.
const MAX_REGO_BYTES: usize = 256 * 1024;
/// Longest one evaluation may run.
const EVAL_LIMIT: Duration = Duration::from_millis(50);
/// Engines kept per policy for reuse across threads.
const POOL_MAX: usize = 16;

/// A compiled Rego module and a pool of engines ready to evaluate it.
pub struct RegoMatcher {
    proto: regorus::Engine,
    rule: String,
    pool: Arc<Mutex<Vec<regorus::Engine>>>,
}

impl Clone for RegoMatcher {
    fn clone(&self) -> Self {
        RegoMatcher {
            proto: self.proto.clone(),
            rule: self.rule.clone(),
            pool: self.pool.clone(),
        }
    }
}

impl std::fmt::Debug for RegoMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoMatcher")
            .field("rule", &self.rule)
            .finish()
    }
}

impl RegoMatcher {
    /// Compile a Rego v1 module that defines `match`.
    pub fn compile(name: &str, text: &str) -> Result<Self, String> {
        if text.len() > MAX_REGO_BYTES {
            return Err(format!("the module is over {MAX_REGO_BYTES} bytes"));
        }
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(false);
        engine.set_strict_builtin_errors(false);
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: EVAL_LIMIT,
            check_interval: NonZeroU32::new(32).unwrap_or(NonZeroU32::MIN),
        });
        let package = engine
            .add_policy(name.to_string(), text.to_string())
            .map_err(|e| format!("does not compile: {e}"))?;
        let rule = format!("{package}.match");
        let has = engine
            .has_declared_rule_rooted_at(name, "match")
            .unwrap_or(true);
        if !has {
            return Err(format!(
                "the module must define a rule named match ({rule})"
            ));
        }
        Ok(RegoMatcher {
            proto: engine,
            rule,
            pool: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Evaluate: `Ok(true)` when `match` is true; undefined is false.
    pub fn evaluate(&self, a: &Attrs<'_>) -> Result<bool, String> {
        let input = a
            .rego_input
            .get_or_init(|| Arc::new(regorus::Value::from(a.rego_input_json())))
            .clone();
        let mut engine = self
            .pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_else(|| self.proto.clone());
        engine.set_input((*input).clone());
        let res = engine.eval_rule(self.rule.clone());
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < POOL_MAX {
                p.push(engine);
            }
        }
        match res {
            Ok(regorus::Value::Bool(b)) => Ok(b),
            Ok(regorus::Value::Undefined) => Ok(false),
            Ok(other) => Err(format!("match is not a boolean: {other}")),
            Err(e) => Err(e.to_string()),
        }
    }
}
