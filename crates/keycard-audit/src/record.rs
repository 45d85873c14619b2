//! The one schema of every decision in the log, and how sensitive fields are
//! kept out of it.
//!
//! A record's leaf data is its canonical JSON: the fields in alphabetical
//! order (the struct declares them so), object keys of free-form values
//! sorted, no insignificant whitespace, absent optional fields omitted. The
//! log stores exactly these bytes, so anyone holding them can recompute the
//! leaf hash without keycard; re-serialising a parsed record gives the same
//! bytes back.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Version of the record schema written in `v`.
pub const SCHEMA_VERSION: u32 = 1;

/// Where the decision was made (the NIST SP 800-207 enforcement point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementPoint {
    /// `keycard check`, in CI.
    Check,
    /// The Kubernetes admission webhook.
    Admission,
    /// The identity-aware proxy.
    Proxy,
    /// The Envoy ext_authz server.
    ExtAuthz,
    /// An administrative change in the control plane.
    ControlPlane,
}

impl EnforcementPoint {
    /// The name used in records and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Check => "check",
            Self::Admission => "admission",
            Self::Proxy => "proxy",
            Self::ExtAuthz => "ext_authz",
            Self::ControlPlane => "control_plane",
        }
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Would have been denied, but the deciding policy is in audit mode.
    Audit,
    /// Evaluation failed; the point applied its failure mode.
    Error,
}

impl Outcome {
    /// The name used in records and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Audit => "audit",
            Self::Error => "error",
        }
    }
}

/// One decision, as stored. Fields are declared in alphabetical order: that
/// order is the canonical JSON (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The action on the resource (`create`, `GET`, `connect`, ...).
    #[serde(default)]
    pub action: String,
    /// For administrative changes: who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Further context the point wants kept (subject to redaction).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "sorted_option"
    )]
    pub attributes: Option<Value>,
    /// Revision of the policy bundle that decided.
    #[serde(default)]
    pub bundle_revision: String,
    /// For administrative changes: what changed (subject to redaction).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "sorted_option"
    )]
    pub change: Option<Value>,
    /// Decision id, unique per decision; the log assigns one if empty.
    #[serde(default)]
    pub id: String,
    /// Position in the log; the log sets it, so a record moved elsewhere
    /// is detected by its own bytes.
    #[serde(default)]
    pub index: u64,
    /// `sha256:<hex>` of the decision's input (see [`input_digest`]).
    #[serde(default)]
    pub input_digest: String,
    /// What was decided.
    pub outcome: Outcome,
    /// Where.
    pub point: EnforcementPoint,
    /// The policy that decided.
    #[serde(default)]
    pub policy: String,
    /// Why, in words a person can act on.
    #[serde(default)]
    pub reason: String,
    /// What was acted on.
    #[serde(default)]
    pub resource: String,
    /// The rule inside the policy.
    #[serde(default)]
    pub rule: String,
    /// Who asked: a SPIFFE ID, a user, a service account.
    #[serde(default)]
    pub subject: String,
    /// Decision time, RFC 3339 UTC with milliseconds; the log fills it in
    /// if empty.
    #[serde(default)]
    pub time: String,
    /// Schema version ([`SCHEMA_VERSION`]).
    #[serde(default)]
    pub v: u32,
}

/// Why a record could not be read or written.
#[derive(Debug, Error)]
pub enum RecordError {
    /// Not a record of this schema.
    #[error("not a decision record: {0}")]
    Json(#[from] serde_json::Error),
    /// The time is not RFC 3339.
    #[error("time {0:?} is not an RFC 3339 timestamp (like 2025-01-31T12:00:00Z)")]
    Time(String),
    /// A persisted redaction configuration cannot be applied as given.
    #[error("{0}")]
    Config(String),
    /// A redaction rule names a field that cannot be redacted.
    #[error("cannot redact {0:?}: only subject, resource, action, reason, actor, attributes.* and change.* can be")]
    Field(String),
}

impl Record {
    /// The canonical bytes (the Merkle leaf data). Free-form values are
    /// written with their keys sorted as they are serialised, so nothing
    /// is copied first.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(512);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }

    /// Parses stored bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Decision time in Unix milliseconds.
    pub fn time_ms(&self) -> Result<i64, RecordError> {
        parse_rfc3339_ms(&self.time).ok_or_else(|| RecordError::Time(self.time.clone()))
    }
}

/// `sha256:<hex>` of a decision's input, so the log proves what was decided
/// on without keeping the (often sensitive) input itself.
pub fn input_digest(input: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(input)))
}

/// Writes a JSON value with every object's keys in sorted order (the
/// workspace's serde_json keeps insertion order).
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let mut fields: Vec<(&String, &Value)> = m.iter().collect();
                fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &Sorted(v))?;
                }
                map.end()
            }
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Sorted(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

fn sorted_option<S: Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => Sorted(v).serialize(s),
        None => s.serialize_none(),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What to do with a sensitive field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedactAction {
    /// Replace by a keyed hash: equal values stay equal (queries and
    /// correlation still work) but the value cannot be read back.
    Hash,
    /// Replace by `"****"`.
    Mask,
}

/// Which fields never reach the log in clear. Applied by the log before a
/// record is serialised, so a value is never stored or hashed into the tree.
#[derive(Clone, Default)]
pub struct Redaction {
    rules: Vec<(String, RedactAction)>,
    key: Vec<u8>,
}

impl std::fmt::Debug for Redaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never print it.
        f.debug_struct("Redaction")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

const REDACTABLE: &[&str] = &["subject", "resource", "action", "reason", "actor"];

impl Redaction {
    /// No redaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes with HMAC-SHA-256 under `key` (without a key, plain SHA-256,
    /// which a dictionary of likely values can reverse).
    pub fn with_key(mut self, key: &[u8]) -> Self {
        self.key = key.to_vec();
        self
    }

    /// Adds a rule for `field`: a top-level text field or a dotted path into
    /// `attributes` or `change` (`attributes.user.email`).
    pub fn rule(mut self, field: &str, action: RedactAction) -> Result<Self, RecordError> {
        let ok = REDACTABLE.contains(&field)
            || field
                .strip_prefix("attributes.")
                .is_some_and(|p| !p.is_empty())
            || field.strip_prefix("change.").is_some_and(|p| !p.is_empty());
        if !ok {
            return Err(RecordError::Field(field.to_string()));
        }
        self.rules.push((field.to_string(), action));
        Ok(self)
    }

    /// Whether any rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The hashed form of `value` (what `subject` becomes under a hash rule),
    /// so a query can look a clear value up.
    pub fn hash_value(&self, value: &str) -> String {
        if self.key.is_empty() {
            format!("sha256:{}", hex(&Sha256::digest(value.as_bytes())))
        } else {
            format!(
                "hmac-sha256:{}",
                hex(&hmac_sha256(&self.key, value.as_bytes()))
            )
        }
    }

    fn apply_value(&self, v: &mut Value, action: RedactAction) {
        let replacement = match action {
            RedactAction::Mask => "****".to_string(),
            RedactAction::Hash => match &*v {
                Value::String(s) => self.hash_value(s),
                other => self.hash_value(&other.to_string()),
            },
        };
        *v = Value::String(replacement);
    }

    /// Applies every rule to `record`.
    pub fn apply(&self, record: &mut Record) {
        for (field, action) in &self.rules {
            let text = match field.as_str() {
                "subject" => Some(&mut record.subject),
                "resource" => Some(&mut record.resource),
                "action" => Some(&mut record.action),
                "reason" => Some(&mut record.reason),
                "actor" => record.actor.as_mut(),
                _ => None,
            };
            if let Some(t) = text {
                if !t.is_empty() {
                    let mut v = Value::String(std::mem::take(t));
                    self.apply_value(&mut v, *action);
                    *t = v.as_str().unwrap_or_default().to_string();
                }
                continue;
            }
            let (root, path) = if let Some(p) = field.strip_prefix("attributes.") {
                (record.attributes.as_mut(), p)
            } else if let Some(p) = field.strip_prefix("change.") {
                (record.change.as_mut(), p)
            } else {
                (None, "")
            };
            let mut cur = root;
            for key in path.split('.') {
                cur = match cur {
                    Some(v) => v.get_mut(key),
                    None => None,
                };
            }
            if let Some(v) = cur {
                self.apply_value(v, *action);
            }
        }
    }
}

/// A log's redaction, as persisted with the log so that every writer
/// applies the same rules: the rules in order, and the SHA-256 of the hash
/// key (never the key itself), so a writer holding another key, or none,
/// is refused instead of hashing values that would no longer match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// `(field, action)` in the order they apply.
    pub rules: Vec<RedactionRule>,
    /// `sha256:<hex>` of the HMAC key; absent: plain SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
}

/// One persisted rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionRule {
    /// A redactable field (see [`Redaction::rule`]).
    pub field: String,
    /// Hash or mask.
    pub action: RedactAction,
}

impl Redaction {
    /// The configuration to persist with the log.
    pub fn config(&self) -> RedactionConfig {
        RedactionConfig {
            rules: self
                .rules
                .iter()
                .map(|(field, action)| RedactionRule {
                    field: field.clone(),
                    action: *action,
                })
                .collect(),
            key_sha256: (!self.key.is_empty()).then(|| input_digest(&self.key)),
        }
    }

    /// The redaction a persisted configuration describes, with its hash
    /// key. Refused when the key does not match the configuration's (a
    /// missing key, another key, or a key the configuration does not use).
    pub fn from_config(config: &RedactionConfig, key: Option<&[u8]>) -> Result<Self, RecordError> {
        let mut r = Redaction::new();
        match (&config.key_sha256, key) {
            (None, None) => {}
            (Some(want), Some(k)) if *want == input_digest(k) => r = r.with_key(k),
            (Some(want), Some(_)) => {
                return Err(RecordError::Config(format!(
                    "the log hashes with the key {want}; this key is another one"
                )))
            }
            (Some(want), None) => {
                return Err(RecordError::Config(format!(
                    "the log hashes with the key {want}; it is needed to write"
                )))
            }
            (None, Some(_)) => {
                return Err(RecordError::Config(
                    "the log hashes without a key; a key would change every hash".into(),
                ))
            }
        }
        for rule in &config.rules {
            r = r.rule(&rule.field, rule.action)?;
        }
        Ok(r)
    }
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Formats Unix milliseconds as RFC 3339 UTC (`2025-01-31T12:00:00.000Z`).
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Parses an RFC 3339 timestamp (any offset, any fraction) to Unix
/// milliseconds; a bare date means its midnight UTC.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let day_ms = days_from_civil(y, mo, d) * 86_400_000;
    if b.len() == 10 {
        return Some(day_ms);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b.get(16) != Some(&b':') || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = s.get(start..i.min(start + 3))?;
        frac_ms = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_ms = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b.get(i + 3) == Some(&b':') => {
            let off = (num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?) * 60_000;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    Some(day_ms + ((h * 60 + mi) * 60 + sec) * 1000 + frac_ms - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record::from_json(
            br#"{"point":"proxy","outcome":"deny","subject":"alice@example.com",
                 "attributes":{"z":1,"a":{"token":"s3cret","y":2}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn canonical_json_sorts_and_round_trips() {
        let bytes = record().to_canonical_json().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"action":"","attributes":{"a":{"token":"s3cret","y":2},"z":1}"#)
        );
        let again = Record::from_json(&bytes)
            .unwrap()
            .to_canonical_json()
            .unwrap();
        assert_eq!(bytes, again);
    }

    #[test]
    fn redaction_hashes_and_masks() {
        let red = Redaction::new()
            .with_key(b"k")
            .rule("subject", RedactAction::Hash)
            .unwrap()
            .rule("attributes.a.token", RedactAction::Mask)
            .unwrap();
        let mut r = record();
        red.apply(&mut r);
        assert!(r.subject.starts_with("hmac-sha256:"));
        assert_eq!(r.subject, red.hash_value("alice@example.com"));
        let text = String::from_utf8(r.to_canonical_json().unwrap()).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("alice"));
        assert!(Redaction::new()
            .rule("outcome", RedactAction::Mask)
            .is_err());
    }

    #[test]
    fn persisted_redaction_applies_the_same_and_refuses_another_key() {
        let red = Redaction::new()
            .with_key(b"k1")
            .rule("subject", RedactAction::Hash)
            .unwrap()
            .rule("attributes.a.token", RedactAction::Mask)
            .unwrap();
        let text = serde_json::to_string(&red.config()).unwrap();
        assert!(!text.contains("k1"), "the key itself is never persisted");
        let cfg: RedactionConfig = serde_json::from_str(&text).unwrap();
        let again = Redaction::from_config(&cfg, Some(b"k1")).unwrap();
        let (mut a, mut b) = (record(), record());
        red.apply(&mut a);
        again.apply(&mut b);
        assert_eq!(a, b);
        assert!(a.subject.starts_with("hmac-sha256:"));
        for key in [Some(&b"k2"[..]), None] {
            let err = Redaction::from_config(&cfg, key).unwrap_err();
            assert!(err.to_string().contains(&input_digest(b"k1")), "{err}");
        }
        let keyless = Redaction::new()
            .rule("subject", RedactAction::Mask)
            .unwrap();
        assert!(Redaction::from_config(&keyless.config(), Some(b"k1")).is_err());
        let bad: RedactionConfig =
            serde_json::from_str(r#"{"rules":[{"field":"outcome","action":"mask"}]}"#).unwrap();
        assert!(Redaction::from_config(&bad, None).is_err());
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn time_round_trips() {
        for s in [
            "1970-01-01T00:00:00.000Z",
            "2025-02-28T23:59:59.999Z",
            "2000-02-29T12:00:00.000Z",
        ] {
            assert_eq!(format_rfc3339_ms(parse_rfc3339_ms(s).unwrap()), s);
        }
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.5Z"), Some(500));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
