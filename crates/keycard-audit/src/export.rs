//! Decision records in the formats SIEMs and collectors read.
//!
//! - JSON lines: the stored bytes themselves, so a consumer can recompute
//!   every leaf hash and check proofs.
//! - OpenTelemetry logs, OTLP/JSON: one `ExportLogsServiceRequest` per line
//!   (the encoding of the collector's file exporter and `otlpjsonfile`
//!   receiver): 64-bit integers as decimal strings, enums as numbers,
//!   attribute values as `AnyValue` objects.
//! - OCSF 1.3: request decisions at runtime (proxy, ext_authz) as Authorize
//!   Session (class 3003, IAM category), decisions on API calls (admission,
//!   check, control-plane changes) as API Activity (class 6003, Application
//!   Activity category). keycard's own fields that OCSF has no place for go
//!   in `unmapped`.

use serde_json::{json, Map, Value};

use crate::record::{EnforcementPoint, Outcome, Record};

/// OCSF schema version the mapping follows.
pub const OCSF_VERSION: &str = "1.3.0";

fn product() -> Value {
    json!({"name": "keycard", "vendor_name": "keycard", "version": env!("CARGO_PKG_VERSION")})
}

fn time_ms(r: &Record) -> i64 {
    r.time_ms().unwrap_or(0)
}

/// OTLP severity: allow is INFO (9), audit WARN (13), deny WARN2 (14),
/// error ERROR (17).
fn otlp_severity(o: Outcome) -> (u8, &'static str) {
    match o {
        Outcome::Allow => (9, "INFO"),
        Outcome::Audit => (13, "WARN"),
        Outcome::Deny => (14, "WARN"),
        Outcome::Error => (17, "ERROR"),
    }
}

fn kv(key: &str, value: Value) -> Value {
    json!({"key": key, "value": value})
}

fn s(v: &str) -> Value {
    json!({ "stringValue": v })
}

/// One OTLP `LogRecord` for a decision.
pub fn otlp_log_record(index: u64, r: &Record) -> Value {
    let nanos = (time_ms(r).max(0) as u128 * 1_000_000).to_string();
    let (num, text) = otlp_severity(r.outcome);
    let mut attrs = vec![
        kv("keycard.decision.id", s(&r.id)),
        kv(
            "keycard.log.index",
            json!({ "intValue": index.to_string() }),
        ),
        kv("keycard.enforcement_point", s(r.point.as_str())),
        kv("keycard.outcome", s(r.outcome.as_str())),
        kv("keycard.subject", s(&r.subject)),
        kv("keycard.resource", s(&r.resource)),
        kv("keycard.action", s(&r.action)),
        kv("keycard.policy", s(&r.policy)),
        kv("keycard.rule", s(&r.rule)),
        kv("keycard.input_digest", s(&r.input_digest)),
        kv("keycard.bundle_revision", s(&r.bundle_revision)),
    ];
    if let Some(a) = &r.actor {
        attrs.push(kv("keycard.actor", s(a)));
    }
    if let Some(c) = &r.change {
        attrs.push(kv("keycard.change", s(&c.to_string())));
    }
    json!({
        "timeUnixNano": nanos,
        "observedTimeUnixNano": nanos,
        "severityNumber": num,
        "severityText": text,
        "eventName": "keycard.decision",
        "body": s(&r.reason),
        "attributes": attrs,
    })
}

/// An OTLP/JSON `ExportLogsServiceRequest` carrying `records` of log
/// `origin`.
pub fn otlp_request(origin: &str, records: &[(u64, Record)]) -> Value {
    json!({
        "resourceLogs": [{
            "resource": {"attributes": [
                kv("service.name", s("keycard")),
                kv("keycard.log.origin", s(origin)),
            ]},
            "scopeLogs": [{
                "scope": {"name": "keycard.audit", "version": env!("CARGO_PKG_VERSION")},
                "logRecords": records.iter().map(|(i, r)| otlp_log_record(*i, r)).collect::<Vec<_>>(),
            }],
        }],
    })
}

/// The OCSF class of a decision: 3003 for runtime request authorization,
/// 6003 for API calls.
pub fn ocsf_class(point: EnforcementPoint) -> u32 {
    match point {
        EnforcementPoint::Proxy | EnforcementPoint::ExtAuthz => 3003,
        EnforcementPoint::Admission | EnforcementPoint::Check | EnforcementPoint::ControlPlane => {
            6003
        }
    }
}

/// API Activity's `activity_id` from the action's verb.
fn api_activity(action: &str) -> (u32, &'static str) {
    match action.to_ascii_lowercase().as_str() {
        "create" | "post" | "add" | "issue" | "grant" => (1, "Create"),
        "read" | "get" | "list" | "watch" | "head" => (2, "Read"),
        "update" | "put" | "patch" | "rotate" | "connect" => (3, "Update"),
        "delete" | "remove" | "revoke" => (4, "Delete"),
        _ => (99, "Other"),
    }
}

/// One OCSF event for a decision of log `origin`.
pub fn ocsf_event(origin: &str, index: u64, r: &Record) -> Value {
    let class = ocsf_class(r.point);
    let allowed = matches!(r.outcome, Outcome::Allow | Outcome::Audit);
    let (status_id, status) = if allowed {
        (1, "Success")
    } else {
        (2, "Failure")
    };
    let (severity_id, severity) = match r.outcome {
        Outcome::Allow => (1, "Informational"),
        Outcome::Audit => (2, "Low"),
        Outcome::Deny => (3, "Medium"),
        Outcome::Error => (4, "High"),
    };
    let mut e = Map::new();
    e.insert("class_uid".into(), json!(class));
    let (activity_id, activity_name, category_uid, class_name, category_name) = if class == 3003 {
        (
            1,
            "Assign Privileges",
            3,
            "Authorize Session",
            "Identity & Access Management",
        )
    } else {
        let (id, name) = api_activity(&r.action);
        (id, name, 6, "API Activity", "Application Activity")
    };
    e.insert("class_name".into(), json!(class_name));
    e.insert("category_uid".into(), json!(category_uid));
    e.insert("category_name".into(), json!(category_name));
    e.insert("activity_id".into(), json!(activity_id));
    e.insert("activity_name".into(), json!(activity_name));
    e.insert("type_uid".into(), json!(class * 100 + activity_id));
    e.insert("time".into(), json!(time_ms(r)));
    e.insert("severity_id".into(), json!(severity_id));
    e.insert("severity".into(), json!(severity));
    e.insert("status_id".into(), json!(status_id));
    e.insert("status".into(), json!(status));
    e.insert("status_detail".into(), json!(r.outcome.as_str()));
    e.insert("message".into(), json!(r.reason));
    e.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": product(),
            "uid": r.id,
            "log_name": origin,
            "sequence": index,
            "original_time": r.time,
        }),
    );
    let policy = json!({"name": r.policy, "uid": format!("{}/{}", r.policy, r.rule), "version": r.bundle_revision});
    if class == 3003 {
        e.insert("user".into(), json!({"name": r.subject, "uid": r.subject}));
        e.insert(
            "privileges".into(),
            json!([format!("{} {}", r.action, r.resource)]),
        );
        e.insert("dst_endpoint".into(), json!({"name": r.resource}));
    } else {
        let user = r.actor.as_deref().unwrap_or(&r.subject);
        e.insert(
            "actor".into(),
            json!({"user": {"name": user, "uid": user}, "authorizations": [{"decision": r.outcome.as_str(), "policy": policy}]}),
        );
        e.insert(
            "api".into(),
            json!({"operation": r.action, "service": {"name": format!("keycard {}", r.point.as_str())}}),
        );
        e.insert(
            "resources".into(),
            json!([{ "name": r.resource, "uid": r.resource }]),
        );
        e.insert("src_endpoint".into(), json!({"name": r.subject}));
    }
    let mut unmapped = json!({
        "decision_id": r.id,
        "log_index": index,
        "enforcement_point": r.point.as_str(),
        "policy": r.policy,
        "rule": r.rule,
        "input_digest": r.input_digest,
        "bundle_revision": r.bundle_revision,
    });
    if let (Some(c), Some(m)) = (&r.change, unmapped.as_object_mut()) {
        m.insert("change".into(), c.clone());
    }
    e.insert("unmapped".into(), unmapped);
    Value::Object(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(point: &str, outcome: &str) -> Record {
        Record::from_json(
            format!(
                r#"{{"point":"{point}","outcome":"{outcome}","id":"d1","action":"create",
                   "resource":"pods/web","subject":"alice","time":"2025-01-01T00:00:00.000Z",
                   "policy":"pss","rule":"privileged","reason":"privileged container"}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn ocsf_classes_and_type_uids() {
        let e = ocsf_event("o", 3, &rec("admission", "deny"));
        assert_eq!(e["class_uid"], 6003);
        assert_eq!(e["type_uid"], 600301);
        assert_eq!(e["status_id"], 2);
        assert_eq!(e["time"], 1_735_689_600_000i64);
        assert_eq!(e["metadata"]["sequence"], 3);
        let e = ocsf_event("o", 3, &rec("ext_authz", "allow"));
        assert_eq!(e["class_uid"], 3003);
        assert_eq!(e["type_uid"], 300301);
        assert_eq!(e["user"]["name"], "alice");
    }

    #[test]
    fn otlp_uses_string_int64_and_anyvalues() {
        let req = otlp_request("o", &[(7, rec("proxy", "deny"))]);
        let lr = &req["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(lr["timeUnixNano"], "1735689600000000000");
        assert_eq!(lr["severityNumber"], 14);
        assert_eq!(lr["body"]["stringValue"], "privileged container");
        assert!(lr["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == "keycard.log.index" && a["value"]["intValue"] == "7"));
    }
}
