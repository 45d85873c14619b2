//! `AdmissionReview` v1 (`admission.k8s.io/v1`): parsing the request the
//! API server sends and writing the response it expects.
//!
//! Parsing is strict about what keycard needs and lenient about the rest:
//! a missing `uid`, `kind`, `resource` or `operation`, or a CREATE or UPDATE
//! without an `object`, is an error naming the field; unknown fields are
//! ignored, as the API server may add some.

use serde_json::{json, Map, Value};

/// The only `apiVersion` keycard speaks (the webhook configuration asks the
/// API server for it with `admissionReviewVersions: [v1]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// `kind` of the envelope.
pub const KIND: &str = "AdmissionReview";

/// `request.kind` / `request.requestKind`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl GroupVersionKind {
    /// `apps/v1` or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// `request.resource`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupVersionResource {
    pub group: String,
    pub version: String,
    pub resource: String,
}

/// `request.operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// The wire spelling (`CREATE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "CREATE" => Some(Self::Create),
            "UPDATE" => Some(Self::Update),
            "DELETE" => Some(Self::Delete),
            "CONNECT" => Some(Self::Connect),
            _ => None,
        }
    }
}

/// `request.userInfo`: who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// One admission request, parsed.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    /// Echoed in the response; unique per request.
    pub uid: String,
    /// Kind of the object (after conversion to the version the webhook
    /// registered for, under `matchPolicy: Equivalent`).
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    /// `status`, `scale`, `ephemeralcontainers`, ... when the request is on
    /// a subresource.
    pub sub_resource: Option<String>,
    /// May be empty on CREATE (`generateName`).
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    /// The new object (CREATE, UPDATE; the options object of CONNECT).
    pub object: Option<Value>,
    /// The existing object (UPDATE, DELETE).
    pub old_object: Option<Value>,
    /// The request will not be persisted (`kubectl --dry-run=server`).
    pub dry_run: bool,
    /// `request` exactly as received: what Gatekeeper templates see as
    /// `input.review`.
    pub raw: Value,
}

impl AdmissionRequest {
    /// `deployments.apps/payments/api`: resource (with group and
    /// subresource), namespace and name, for logs and decision records.
    pub fn resource_label(&self) -> String {
        let mut s = self.resource.resource.clone();
        if !self.resource.group.is_empty() {
            s.push('.');
            s.push_str(&self.resource.group);
        }
        if let Some(sub) = &self.sub_resource {
            s.push('/');
            s.push_str(sub);
        }
        if let Some(ns) = self.namespace.as_deref().filter(|n| !n.is_empty()) {
            s.push('/');
            s.push_str(ns);
        }
        s.push('/');
        s.push_str(self.display_name());
        s
    }

    /// `input.review` for Gatekeeper templates, as Gatekeeper's webhook
    /// gives it: the request as received (uid, kind, resource, subResource,
    /// name, namespace, operation, userInfo, object, oldObject, dryRun,
    /// options, and whatever else the API server sent), with the object as
    /// the policies see it and `userInfo`, `oldObject` and `dryRun` always
    /// present.
    pub fn review_input(&self) -> Value {
        let mut r = match &self.raw {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        if let Some(o) = &self.object {
            r.insert("object".into(), o.clone());
        }
        if !r.get("userInfo").is_some_and(Value::is_object) {
            r.insert(
                "userInfo".into(),
                json!({
                    "username": self.user_info.username,
                    "uid": self.user_info.uid,
                    "groups": self.user_info.groups,
                }),
            );
        }
        r.entry("oldObject").or_insert(Value::Null);
        r.insert("dryRun".into(), json!(self.dry_run));
        Value::Object(r)
    }

    /// `metadata.name`, or `generateName` followed by `*`, or `-`.
    pub fn display_name(&self) -> &str {
        match self.name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => n,
            None => self
                .object
                .as_ref()
                .and_then(|o| o.get("metadata"))
                .and_then(|m| m.get("generateName"))
                .and_then(Value::as_str)
                .unwrap_or("-"),
        }
    }
}

/// Why a request body is not a usable AdmissionReview.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the body nests JSON deeper than {0} levels")]
    TooDeep(usize),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

impl ReviewError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Field {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// A parse failure, with the request's uid when it could be read (so that
/// the API server can be answered with a proper AdmissionReview).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFailure {
    pub uid: Option<String>,
    pub error: ReviewError,
}

/// Fails when JSON text nests objects and arrays deeper than `max`, without
/// parsing it: cheap, and it keeps every later recursive walk (the JSON
/// parser, the conversion to Rego values, the policies) shallow.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), ReviewError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(ReviewError::TooDeep(max));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn opt_str(m: &Map<String, Value>, key: &str, field: &str) -> Result<Option<String>, ReviewError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ReviewError::field(
            field,
            format!("must be a string, not {}", type_name(other)),
        )),
    }
}

fn req_str(m: &Map<String, Value>, key: &str, field: &str) -> Result<String, ReviewError> {
    match opt_str(m, key, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(ReviewError::field(field, "is empty")),
        None => Err(ReviewError::field(field, "is missing")),
    }
}

fn req_obj<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a Map<String, Value>, ReviewError> {
    match m.get(key) {
        Some(Value::Object(o)) => Ok(o),
        None | Some(Value::Null) => Err(ReviewError::field(field, "is missing")),
        Some(other) => Err(ReviewError::field(
            field,
            format!("must be an object, not {}", type_name(other)),
        )),
    }
}

fn opt_obj(m: &Map<String, Value>, key: &str, field: &str) -> Result<Option<Value>, ReviewError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(other) => Err(ReviewError::field(
            field,
            format!("must be an object, not {}", type_name(other)),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses an AdmissionReview request body. `max_depth` bounds JSON nesting
/// (see [`check_depth`]); the caller bounds the size.
pub fn parse_review(body: &[u8], max_depth: usize) -> Result<AdmissionRequest, ParseFailure> {
    let fail = |error| ParseFailure { uid: None, error };
    check_depth(body, max_depth).map_err(fail)?;
    let root: Value =
        serde_json::from_slice(body).map_err(|e| fail(ReviewError::Json(e.to_string())))?;
    let Value::Object(root) = root else {
        return Err(fail(ReviewError::field(
            "(body)",
            format!(
                "must be a JSON object (an AdmissionReview), not {}",
                type_name(&root)
            ),
        )));
    };
    // The uid first, so that every later error can still be answered
    // with an AdmissionReview the API server accepts.
    let uid = root
        .get("request")
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    parse_root(root).map_err(|error| ParseFailure { uid, error })
}

fn parse_root(mut root: Map<String, Value>) -> Result<AdmissionRequest, ReviewError> {
    let api_version = req_str(&root, "apiVersion", "apiVersion")?;
    if api_version != API_VERSION {
        return Err(ReviewError::field(
            "apiVersion",
            format!("{api_version:?} is not supported: keycard speaks {API_VERSION} (set admissionReviewVersions: [v1])"),
        ));
    }
    let kind = req_str(&root, "kind", "kind")?;
    if kind != KIND {
        return Err(ReviewError::field(
            "kind",
            format!("{kind:?}: expected {KIND}"),
        ));
    }
    req_obj(&root, "request", "request")?;
    let Some(Value::Object(r)) = root.remove("request") else {
        return Err(ReviewError::field("request", "is missing"));
    };
    let uid = req_str(&r, "uid", "request.uid")?;
    let k = req_obj(&r, "kind", "request.kind")?;
    let kind = GroupVersionKind {
        group: opt_str(k, "group", "request.kind.group")?.unwrap_or_default(),
        version: req_str(k, "version", "request.kind.version")?,
        kind: req_str(k, "kind", "request.kind.kind")?,
    };
    let res = req_obj(&r, "resource", "request.resource")?;
    let resource = GroupVersionResource {
        group: opt_str(res, "group", "request.resource.group")?.unwrap_or_default(),
        version: req_str(res, "version", "request.resource.version")?,
        resource: req_str(res, "resource", "request.resource.resource")?,
    };
    let sub_resource = opt_str(&r, "subResource", "request.subResource")?.filter(|s| !s.is_empty());
    let name = opt_str(&r, "name", "request.name")?;
    let namespace = opt_str(&r, "namespace", "request.namespace")?.filter(|s| !s.is_empty());
    let op = req_str(&r, "operation", "request.operation")?;
    let operation = Operation::parse(&op).ok_or_else(|| {
        ReviewError::field(
            "request.operation",
            format!("{op:?}: expected CREATE, UPDATE, DELETE or CONNECT"),
        )
    })?;
    let user_info = match opt_obj(&r, "userInfo", "request.userInfo")? {
        None => UserInfo::default(),
        Some(Value::Object(u)) => UserInfo {
            username: opt_str(&u, "username", "request.userInfo.username")?.unwrap_or_default(),
            uid: opt_str(&u, "uid", "request.userInfo.uid")?.unwrap_or_default(),
            groups: match u.get("groups") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|g| {
                        g.as_str().map(str::to_string).ok_or_else(|| {
                            ReviewError::field(
                                "request.userInfo.groups",
                                "must be a list of strings",
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(ReviewError::field(
                        "request.userInfo.groups",
                        format!("must be a list of strings, not {}", type_name(other)),
                    ))
                }
            },
        },
        Some(_) => UserInfo::default(),
    };
    let mut object = opt_obj(&r, "object", "request.object")?;
    let old_object = opt_obj(&r, "oldObject", "request.oldObject")?;
    match operation {
        Operation::Create | Operation::Update if object.is_none() => {
            return Err(ReviewError::field(
                "request.object",
                format!(
                    "is missing: a {} request carries the object",
                    operation.as_str()
                ),
            ));
        }
        Operation::Update if old_object.is_none() => {
            return Err(ReviewError::field(
                "request.oldObject",
                "is missing: an UPDATE request carries the existing object",
            ));
        }
        _ => {}
    }
    let dry_run = match r.get("dryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ReviewError::field(
                "request.dryRun",
                format!("must be a boolean, not {}", type_name(other)),
            ))
        }
    };
    // What the policies see: the object with its kind and namespace filled
    // in from the request when the object leaves them out (a namespaced
    // CREATE may carry no metadata.namespace).
    if let (Some(Value::Object(o)), Operation::Create | Operation::Update) =
        (object.as_mut(), operation)
    {
        if !o.get("kind").is_some_and(Value::is_string) {
            o.insert("kind".into(), json!(kind.kind));
        }
        if !o.get("apiVersion").is_some_and(Value::is_string) {
            o.insert("apiVersion".into(), json!(kind.api_version()));
        }
        if let Some(ns) = &namespace {
            let meta = o
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            match meta {
                Value::Object(m) => {
                    if m.get("namespace")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        m.insert("namespace".into(), json!(ns));
                    }
                }
                other => {
                    return Err(ReviewError::field(
                        "request.object.metadata",
                        format!("must be an object, not {}", type_name(other)),
                    ))
                }
            }
        }
    }
    Ok(AdmissionRequest {
        uid,
        kind,
        resource,
        sub_resource,
        name,
        namespace,
        operation,
        user_info,
        object,
        old_object,
        dry_run,
        raw: Value::Object(r),
    })
}

/// `response.status` (a `metav1.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

/// `response`: the answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    pub status: Option<Status>,
    pub warnings: Vec<String>,
}

impl AdmissionResponse {
    /// The whole AdmissionReview to send back.
    pub fn to_review(&self) -> Value {
        let mut resp = Map::new();
        resp.insert("uid".into(), json!(self.uid));
        resp.insert("allowed".into(), json!(self.allowed));
        if let Some(s) = &self.status {
            resp.insert(
                "status".into(),
                json!({
                    "metadata": {},
                    "status": "Failure",
                    "code": s.code,
                    "reason": s.reason,
                    "message": s.message,
                }),
            );
        }
        if !self.warnings.is_empty() {
            resp.insert("warnings".into(), json!(self.warnings));
        }
        json!({"apiVersion": API_VERSION, "kind": KIND, "response": resp})
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn review(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": KIND, "request": request}))
            .unwrap()
    }

    fn deployment_request() -> Value {
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "name": "api",
            "namespace": "payments",
            "operation": "CREATE",
            "userInfo": {"username": "alice", "uid": "u-1", "groups": ["system:authenticated"]},
            "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}},
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        })
    }

    fn err_of(body: &[u8]) -> ParseFailure {
        parse_review(body, 64).unwrap_err()
    }

    #[test]
    fn parses_a_create_and_fills_the_namespace_in() {
        let r = parse_review(&review(deployment_request()), 64).unwrap();
        assert_eq!(r.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r.kind.kind, "Deployment");
        assert_eq!(r.kind.api_version(), "apps/v1");
        assert_eq!(r.operation, Operation::Create);
        assert_eq!(r.user_info.username, "alice");
        assert_eq!(r.user_info.groups, vec!["system:authenticated"]);
        assert!(!r.dry_run);
        assert!(r.old_object.is_none());
        let obj = r.object.as_ref().unwrap();
        assert_eq!(obj["metadata"]["namespace"], "payments");
        assert_eq!(r.resource_label(), "deployments.apps/payments/api");
        // The raw request is kept for Gatekeeper's input.review.
        assert_eq!(r.raw["options"]["kind"], "CreateOptions");
    }

    #[test]
    fn the_review_carries_the_request_fields_and_the_filled_in_object() {
        let r = parse_review(&review(deployment_request()), 64).unwrap();
        let v = r.review_input();
        assert_eq!(v["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(v["kind"]["group"], "apps");
        assert_eq!(v["resource"]["resource"], "deployments");
        assert_eq!(v["operation"], "CREATE");
        assert_eq!(v["userInfo"]["username"], "alice");
        assert_eq!(v["userInfo"]["groups"][0], "system:authenticated");
        assert_eq!(v["options"]["kind"], "CreateOptions");
        assert_eq!(v["dryRun"], false);
        assert_eq!(v["object"]["metadata"]["namespace"], "payments");
        // Left out by the API server: still there for templates to read.
        let mut req = deployment_request();
        let m = req.as_object_mut().unwrap();
        m.remove("oldObject");
        m.remove("userInfo");
        m.remove("dryRun");
        let v = parse_review(&review(req), 64).unwrap().review_input();
        assert!(v["oldObject"].is_null() && v.get("oldObject").is_some());
        assert_eq!(v["userInfo"]["username"], "");
        assert_eq!(v["dryRun"], false);
    }

    #[test]
    fn delete_carries_only_the_old_object() {
        let mut req = deployment_request();
        req["operation"] = json!("DELETE");
        req["object"] = Value::Null;
        req["oldObject"] =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}});
        let r = parse_review(&review(req), 64).unwrap();
        assert_eq!(r.operation, Operation::Delete);
        assert!(r.object.is_none());
        assert!(r.old_object.is_some());
    }

    #[test]
    fn dry_run_and_subresource() {
        let mut req = deployment_request();
        req["dryRun"] = json!(true);
        req["subResource"] = json!("scale");
        let r = parse_review(&review(req), 64).unwrap();
        assert!(r.dry_run);
        assert_eq!(r.sub_resource.as_deref(), Some("scale"));
        assert_eq!(r.resource_label(), "deployments.apps/scale/payments/api");
    }

    #[test]
    fn missing_fields_are_named() {
        for (field, edit) in [
            ("request.uid", "uid"),
            ("request.kind", "kind"),
            ("request.resource", "resource"),
            ("request.operation", "operation"),
            ("request.object", "object"),
        ] {
            let mut req = deployment_request();
            req.as_object_mut().unwrap().remove(edit);
            let f = err_of(&review(req));
            let msg = f.error.to_string();
            assert!(msg.starts_with(&format!("{field}: is missing")), "{msg}");
            if field != "request.uid" {
                assert_eq!(
                    f.uid.as_deref(),
                    Some("705ab4f5-6393-11e8-b7cc-42010a800002")
                );
            } else {
                assert_eq!(f.uid, None);
            }
        }
        let mut req = deployment_request();
        req["kind"] = json!({"group": "apps", "version": "v1"});
        assert_eq!(
            err_of(&review(req)).error.to_string(),
            "request.kind.kind: is missing"
        );
        let mut req = deployment_request();
        req["operation"] = json!("UPDATE");
        assert!(err_of(&review(req))
            .error
            .to_string()
            .starts_with("request.oldObject: is missing"));
    }

    #[test]
    fn wrong_types_and_envelopes_are_named() {
        let mut req = deployment_request();
        req["dryRun"] = json!("yes");
        assert_eq!(
            err_of(&review(req)).error.to_string(),
            "request.dryRun: must be a boolean, not a string"
        );
        let mut req = deployment_request();
        req["object"] = json!([1, 2]);
        assert_eq!(
            err_of(&review(req)).error.to_string(),
            "request.object: must be an object, not an array"
        );
        let mut req = deployment_request();
        req["operation"] = json!("PATCH");
        assert!(err_of(&review(req))
            .error
            .to_string()
            .contains("expected CREATE"));
        let v1beta1 = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": KIND, "request": deployment_request()})).unwrap();
        let f = err_of(&v1beta1);
        assert!(f
            .error
            .to_string()
            .starts_with("apiVersion: \"admission.k8s.io/v1beta1\" is not supported"));
        assert!(f.uid.is_some());
        let no_request =
            serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": KIND})).unwrap();
        assert_eq!(err_of(&no_request).error.to_string(), "request: is missing");
        assert!(matches!(err_of(b"[1]").error, ReviewError::Field { .. }));
        assert!(matches!(err_of(b"{\"a\":").error, ReviewError::Json(_)));
        assert!(matches!(err_of(b"\xff\xfe").error, ReviewError::Json(_)));
    }

    #[test]
    fn depth_is_bounded_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            check_depth(deep.as_bytes(), 64),
            Err(ReviewError::TooDeep(64))
        );
        assert_eq!(err_of(deep.as_bytes()).error, ReviewError::TooDeep(64));
        // Brackets inside strings do not count, escaped quotes do not end them.
        let s = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(check_depth(s.as_bytes(), 3).is_ok());
        // An unclosed document is still bounded (and then rejected by the parser).
        let open = "{\"a\":".repeat(100_000);
        assert_eq!(err_of(open.as_bytes()).error, ReviewError::TooDeep(64));
    }

    #[test]
    fn response_shape() {
        let r = AdmissionResponse {
            uid: "u".into(),
            allowed: false,
            status: Some(Status {
                code: 403,
                reason: "Forbidden",
                message: "no".into(),
            }),
            warnings: vec!["w".into()],
        };
        let v = r.to_review();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["kind"], KIND);
        assert_eq!(v["response"]["uid"], "u");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 403);
        assert_eq!(v["response"]["status"]["message"], "no");
        assert_eq!(v["response"]["warnings"][0], "w");
        let ok = AdmissionResponse {
            uid: "u".into(),
            allowed: true,
            status: None,
            warnings: vec![],
        }
        .to_review();
        assert!(ok["response"].get("status").is_none());
        assert!(ok["response"].get("warnings").is_none());
    }
}
