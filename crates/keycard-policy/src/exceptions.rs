//! Exceptions: owned, expiring waivers of a rule for matching objects.
//!
//! ```yaml
//! exceptions:
//!   - rule: zt-image-digest          # a rule id, or "*" for every rule
//!     match:
//!       kind: Deployment             # optional; each given field must match
//!       namespace: payments
//!       name: legacy-api
//!       labels: {app: legacy-api}
//!     owner: team-payments@example.com
//!     reason: vendor image has no digest until release 4.2
//!     expires: 2026-12-31            # valid through that day (UTC)
//! ```
//!
//! A live exception marks a finding excepted (still shown, never blocking);
//! an expired one no longer applies and is itself reported; an exception
//! without owner or expiry is an input error.
//!
//! A time-boxed exception ([`Exception::timed`], what a just-in-time grant
//! becomes) may also name the policy and a resource pattern, and ends at a
//! second rather than at the end of a day.

use std::collections::BTreeMap;

use keycard_k8s::Object;
use serde::Deserialize;

use crate::finding::{ExceptionState, Finding};

/// An exceptions file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ExceptionError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawException {
    rule: Option<String>,
    #[serde(rename = "match", default)]
    matches: Option<Match>,
    owner: Option<String>,
    reason: Option<String>,
    expires: Option<yaml_serde::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    exceptions: Vec<RawException>,
}

/// One validated exception.
#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
    pub rule: String,
    pub matches: Match,
    pub owner: String,
    pub reason: String,
    /// `YYYY-MM-DD`; the exception holds through that day (UTC).
    pub expires: String,
    pub expires_days: i64,
    pub line: usize,
    /// Only findings of this policy; any policy when `None` or `*`.
    pub policy: Option<String>,
    /// Only objects whose `Kind/namespace/name` (`Kind/name` when
    /// cluster-scoped) is this, or starts with it when it ends in `*`.
    pub resource: Option<String>,
    /// Unix seconds at which it ends, when finer than a day.
    pub expires_at: Option<u64>,
}

/// `Kind/namespace/name`, or `Kind/name` for a cluster-scoped object: what
/// [`Exception::resource`] patterns match.
pub fn resource_key(r: &keycard_core::ResourceRef) -> String {
    match r.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => format!("{}/{ns}/{}", r.kind, r.name),
        None => format!("{}/{}", r.kind, r.name),
    }
}

fn pattern_matches(pattern: &str, candidate: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => candidate.starts_with(prefix),
        None => pattern == candidate,
    }
}

impl Exception {
    /// A time-boxed exception of `rule` (or `*`), for `policy` and objects
    /// matching `resource` when given, in force until `expires_at` (Unix
    /// seconds, exclusive).
    pub fn timed(
        rule: &str,
        policy: Option<&str>,
        resource: Option<&str>,
        owner: &str,
        reason: &str,
        expires_at: u64,
    ) -> Exception {
        // The last day it holds, for reports that count in days.
        let expires_days = (expires_at.saturating_sub(1) / 86_400) as i64;
        Exception {
            rule: rule.to_string(),
            matches: Match::default(),
            owner: owner.to_string(),
            reason: reason.to_string(),
            expires: civil_from_days(expires_days),
            expires_days,
            line: 0,
            policy: policy.map(str::to_string),
            resource: resource.map(str::to_string),
            expires_at: Some(expires_at),
        }
    }

    pub fn is_expired(&self, today_days: i64) -> bool {
        today_days > self.expires_days
    }

    /// Whether it has ended at `now` (Unix seconds).
    pub fn is_expired_at(&self, now: u64) -> bool {
        match self.expires_at {
            Some(end) => now >= end,
            None => self.is_expired((now / 86_400) as i64),
        }
    }

    fn applies(&self, f: &Finding, obj_labels: Option<&serde_json::Value>) -> bool {
        if self.rule != "*" && self.rule != f.rule {
            return false;
        }
        if let Some(p) = self.policy.as_deref().filter(|p| *p != "*") {
            if p != f.policy {
                return false;
            }
        }
        if let Some(r) = &self.resource {
            if !pattern_matches(r, &resource_key(&f.resource)) {
                return false;
            }
        }
        let m = &self.matches;
        if m.kind.as_ref().is_some_and(|k| k != &f.resource.kind) {
            return false;
        }
        if m.name.as_ref().is_some_and(|n| n != &f.resource.name) {
            return false;
        }
        if let Some(ns) = &m.namespace {
            if f.resource.namespace.as_deref() != Some(ns.as_str()) {
                return false;
            }
        }
        m.labels.iter().all(|(k, v)| {
            obj_labels
                .and_then(|l| l.get(k))
                .and_then(|x| x.as_str())
                .is_some_and(|x| x == v)
        })
    }
}

/// A loaded exceptions file.
#[derive(Debug, Clone, Default)]
pub struct Exceptions {
    pub file: String,
    pub items: Vec<Exception>,
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of days since 1970-01-01.
fn civil_from_days(z: i64) -> String {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Today, as days since 1970-01-01 (UTC).
pub fn today_days() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400) as i64
}

fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.get(..2)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject dates such as 2026-02-30 that roll over into the next month.
    let (m2, _) = (days_from_civil(y, m, 1), 0);
    let next = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    if days >= next || days < m2 {
        return None;
    }
    Some(days)
}

/// Lines where the items of the top-level `exceptions:` sequence start.
fn item_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut inside = false;
    let mut indent = None;
    for (i, l) in text.lines().enumerate() {
        if !inside {
            if l.trim_end() == "exceptions:" {
                inside = true;
            }
            continue;
        }
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = l.len() - t.len();
        if ind == 0 && !t.starts_with('-') {
            break;
        }
        if t.starts_with("- ") || t == "-" {
            match indent {
                None => {
                    indent = Some(ind);
                    lines.push(i + 1);
                }
                Some(x) if x == ind => lines.push(i + 1),
                _ => {}
            }
        }
    }
    lines
}

impl Exceptions {
    /// Parse and validate an exceptions file.
    pub fn parse(file: &str, text: &str) -> Result<Exceptions, ExceptionError> {
        let err = |line: Option<usize>, message: String| ExceptionError {
            file: file.to_string(),
            line,
            message,
        };
        if text.len() > 4 * 1024 * 1024 {
            return Err(err(None, "file is larger than 4 MiB".into()));
        }
        let raw: RawFile = yaml_serde::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            err(line, msg)
        })?;
        let lines = item_lines(text);
        let mut items = Vec::new();
        for (i, r) in raw.exceptions.into_iter().enumerate() {
            let line = lines.get(i).copied();
            let at = |m: &str| err(line, format!("exception #{}: {m}", i + 1));
            let rule = r
                .rule
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| at("has no rule"))?;
            let owner = r
                .owner
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| at("has no owner"))?;
            let expires = match r.expires {
                Some(yaml_serde::Value::String(s)) => s,
                Some(other) => yaml_serde::to_string(&other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                None => return Err(at("has no expiry (expires: YYYY-MM-DD)")),
            };
            let expires_days = parse_date(&expires)
                .ok_or_else(|| at(&format!("expires {expires:?} is not a date (YYYY-MM-DD)")))?;
            items.push(Exception {
                rule,
                matches: r.matches.unwrap_or_default(),
                owner,
                reason: r.reason.unwrap_or_default(),
                expires: expires.chars().take(10).collect(),
                expires_days,
                line: line.unwrap_or(0),
                policy: None,
                resource: None,
                expires_at: None,
            });
        }
        Ok(Exceptions {
            file: file.to_string(),
            items,
        })
    }

    /// Mark the findings that a live exception covers. Returns the expired
    /// exceptions (which no longer apply) and the live ones that matched nothing.
    pub fn apply(
        &self,
        findings: &mut [Finding],
        objects: &[Object],
        today: i64,
    ) -> (Vec<Exception>, Vec<Exception>) {
        self.apply_with(findings, objects, |e| e.is_expired(today))
    }

    /// [`Exceptions::apply`] at a moment (Unix seconds), so that time-boxed
    /// exceptions end at their second.
    pub fn apply_at(
        &self,
        findings: &mut [Finding],
        objects: &[Object],
        now: u64,
    ) -> (Vec<Exception>, Vec<Exception>) {
        self.apply_with(findings, objects, |e| e.is_expired_at(now))
    }

    /// The exceptions of both, in order (`self`'s first).
    pub fn merged(mut self, other: Exceptions) -> Exceptions {
        self.items.extend(other.items);
        self
    }

    fn apply_with(
        &self,
        findings: &mut [Finding],
        objects: &[Object],
        expired: impl Fn(&Exception) -> bool,
    ) -> (Vec<Exception>, Vec<Exception>) {
        let labels: BTreeMap<(&str, usize), Option<&serde_json::Value>> = objects
            .iter()
            .map(|o| ((&*o.source.file, o.source.line), o.metadata().get("labels")))
            .collect();
        let mut used = vec![false; self.items.len()];
        for f in findings.iter_mut() {
            let l = labels.get(&(f.file.as_str(), f.line)).copied().flatten();
            for (i, e) in self.items.iter().enumerate() {
                if expired(e) || !e.applies(f, l) {
                    continue;
                }
                used[i] = true;
                f.exception = Some(ExceptionState {
                    owner: e.owner.clone(),
                    reason: e.reason.clone(),
                    expires: e.expires.clone(),
                    line: e.line,
                });
                break;
            }
        }
        let expired_items = self.items.iter().filter(|e| expired(e)).cloned().collect();
        let unused = self
            .items
            .iter()
            .zip(used)
            .filter(|(e, u)| !u && !expired(e))
            .map(|(e, _)| e.clone())
            .collect();
        (expired_items, unused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_date("2000-03-01"), Some(days_from_civil(2000, 3, 1)));
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("soon"), None);
    }

    #[test]
    fn civil_dates_round_trip() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2026, 12, 31), (2100, 3, 1)] {
            let days = days_from_civil(y, m, d);
            assert_eq!(civil_from_days(days), format!("{y:04}-{m:02}-{d:02}"));
        }
    }

    fn finding(rule: &str, policy: &str, kind: &str, ns: Option<&str>, name: &str) -> Finding {
        Finding {
            rule: rule.into(),
            policy: policy.into(),
            severity: keycard_core::Severity::High,
            title: "".into(),
            message: "m".into(),
            remediation: "".into(),
            resource: keycard_core::ResourceRef {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                namespace: ns.map(str::to_string),
                name: name.into(),
            },
            file: "f".into(),
            line: 1,
            path: None,
            value: None,
            description: "".into(),
            controls: Default::default(),
            enforcement: crate::finding::Enforcement::Deny,
            exception: None,
        }
    }

    #[test]
    fn timed_exceptions_match_policy_and_resource_and_end_at_their_second() {
        let end = days_from_civil(2030, 1, 1) as u64 * 86_400 + 3600;
        let ex = Exceptions {
            file: "grants".into(),
            items: vec![Exception::timed(
                "no-latest",
                Some("team"),
                Some("Deployment/payments/*"),
                "alice",
                "hotfix",
                end,
            )],
        };
        assert_eq!(ex.items[0].expires, "2030-01-01");
        let mut fs = vec![
            finding("no-latest", "team", "Deployment", Some("payments"), "api"),
            finding("no-latest", "other", "Deployment", Some("payments"), "api"),
            finding("no-latest", "team", "Deployment", Some("shop"), "api"),
            finding("other-rule", "team", "Deployment", Some("payments"), "api"),
        ];
        ex.apply_at(&mut fs, &[], end - 1);
        let excepted: Vec<bool> = fs.iter().map(|f| f.exception.is_some()).collect();
        assert_eq!(excepted, [true, false, false, false]);
        let mut fs = vec![finding(
            "no-latest",
            "team",
            "Deployment",
            Some("payments"),
            "api",
        )];
        let (expired, _) = ex.apply_at(&mut fs, &[], end);
        assert!(fs[0].exception.is_none(), "ended at its second");
        assert_eq!(expired.len(), 1);
        // An exact pattern, and a cluster-scoped object's key.
        let exact = Exception::timed("*", None, Some("Namespace/prod"), "a", "r", end);
        assert!(exact.applies(&finding("x", "p", "Namespace", None, "prod"), None));
        assert!(!exact.applies(&finding("x", "p", "Namespace", None, "prod2"), None));
    }

    #[test]
    fn validation_names_the_line() {
        let text = "exceptions:\n  - rule: a\n    owner: me\n    expires: 2030-01-01\n  - rule: b\n    reason: x\n    expires: 2030-01-01\n";
        let e = Exceptions::parse("ex.yaml", text).unwrap_err().to_string();
        assert_eq!(e, "ex.yaml:5: exception #2: has no owner");
        let text = "exceptions:\n- rule: a\n  owner: me\n";
        let e = Exceptions::parse("ex.yaml", text).unwrap_err().to_string();
        assert!(e.contains("ex.yaml:2") && e.contains("expiry"), "{e}");
        let e = Exceptions::parse(
            "ex.yaml",
            "exceptions:\n- rule: a\n  owner: me\n  expires: 2030-01-01\n  whoops: 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("whoops"), "{e}");
        let ok = Exceptions::parse(
            "ex.yaml",
            "exceptions:\n- rule: a\n  owner: me\n  expires: 2030-01-01\n",
        )
        .unwrap();
        assert_eq!(ok.items[0].expires, "2030-01-01");
        assert!(!ok.items[0].is_expired(days_from_civil(2030, 1, 1)));
        assert!(ok.items[0].is_expired(days_from_civil(2030, 1, 2)));
    }
}
