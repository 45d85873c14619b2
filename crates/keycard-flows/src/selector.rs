//! Kubernetes label selectors (`matchLabels` plus `matchExpressions`).

use std::collections::BTreeMap;

use serde_json::Value;

/// Labels of a pod or namespace. Sorted, so explanations are stable.
pub type Labels = BTreeMap<String, String>;

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// A label selector. All of `match_labels` and all requirements must hold
/// (they are ANDed), so the empty selector `{}` selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: Vec<(String, String)>,
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector `{}`, which matches every object.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Whether this selector is `{}`.
    pub fn is_everything(&self) -> bool {
        self.match_labels.is_empty() && self.requirements.is_empty()
    }

    /// Parses a `LabelSelector` value, rejecting what the API server would
    /// reject (unknown operators, `In` without values, `Exists` with values)
    /// because a half-understood selector would silently widen or narrow a
    /// policy.
    pub fn parse(v: &Value) -> Result<Selector, String> {
        let mut sel = Selector::default();
        if v.is_null() {
            return Ok(sel);
        }
        let obj = v
            .as_object()
            .ok_or_else(|| "a label selector must be a mapping".to_string())?;
        if let Some(ml) = obj.get("matchLabels") {
            if !ml.is_null() {
                let m = ml
                    .as_object()
                    .ok_or_else(|| "matchLabels must be a mapping".to_string())?;
                for (k, val) in m {
                    let s = scalar(val)
                        .ok_or_else(|| format!("matchLabels value of {k:?} must be a string"))?;
                    sel.match_labels.push((k.clone(), s));
                }
            }
        }
        if let Some(me) = obj.get("matchExpressions") {
            if !me.is_null() {
                let arr = me
                    .as_array()
                    .ok_or_else(|| "matchExpressions must be a list".to_string())?;
                for e in arr {
                    sel.requirements.push(parse_requirement(e)?);
                }
            }
        }
        Ok(sel)
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| {
                let got = labels.get(&r.key);
                match r.operator {
                    Operator::In => got.is_some_and(|g| r.values.contains(g)),
                    Operator::NotIn => got.is_none_or(|g| !r.values.contains(g)),
                    Operator::Exists => got.is_some(),
                    Operator::DoesNotExist => got.is_none(),
                }
            })
    }
}

/// YAML may give `"true"` as a bool or a number; labels are strings.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_requirement(e: &Value) -> Result<Requirement, String> {
    let key = e
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| "a matchExpressions entry needs a key".to_string())?
        .to_string();
    let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
    let operator = match op {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => return Err(format!("unknown matchExpressions operator {other:?}")),
    };
    let mut values = Vec::new();
    if let Some(vs) = e.get("values") {
        if !vs.is_null() {
            let arr = vs
                .as_array()
                .ok_or_else(|| "matchExpressions values must be a list".to_string())?;
            for v in arr {
                values.push(
                    scalar(v)
                        .ok_or_else(|| "a matchExpressions value must be a string".to_string())?,
                );
            }
        }
    }
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => Err(format!(
            "matchExpressions operator {op} on {key:?} needs at least one value"
        )),
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => Err(format!(
            "matchExpressions operator {op} on {key:?} must not have values"
        )),
        _ => Ok(Requirement {
            key,
            operator,
            values,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators() {
        let s = Selector::parse(&json!({
            "matchLabels": {"app": "a"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["x", "y"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "a"), ("tier", "x"), ("team", "t")])));
        assert!(!s.matches(&labels(&[("app", "a"), ("tier", "z"), ("team", "t")])));
        assert!(!s.matches(&labels(&[
            ("app", "a"),
            ("tier", "x"),
            ("team", "t"),
            ("env", "prod")
        ])));
        assert!(!s.matches(&labels(&[("app", "a"), ("tier", "x")])));
        assert!(!s.matches(&labels(&[
            ("app", "a"),
            ("tier", "x"),
            ("team", "t"),
            ("legacy", "1")
        ])));
        assert!(Selector::everything().matches(&labels(&[])));
    }

    #[test]
    fn bad_selectors_are_rejected() {
        assert!(Selector::parse(
            &json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]})
        )
        .is_err());
        assert!(
            Selector::parse(&json!({"matchExpressions": [{"key": "a", "operator": "In"}]}))
                .is_err()
        );
        assert!(Selector::parse(
            &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]})
        )
        .is_err());
    }
}
