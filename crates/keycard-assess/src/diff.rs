//! Progress between two assessments (`keycard assess diff OLD NEW`): which
//! findings are new and which were resolved (matched by [`Finding::id`],
//! which is stable across runs), which changed severity, how each pillar's
//! stage and score moved, which identities appeared, disappeared or became
//! or stopped being cluster-admin, which coverage gaps opened or closed,
//! and which compliance controls changed status. [`Diff::regressed`] gives
//! CI an exit code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use keycard_core::Severity;
use serde::Serialize;

use crate::model::{Assessment, ControlStatus, Finding, Framework, Gap, Pillar, Stage, SCHEMA};

/// Reading an assessment back from its JSON report.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    // The parser's message is part of this one, not a separate cause, so
    // an error chain (`{:#}`) does not print it twice.
    #[error("{name}: not an assessment JSON report: {error}")]
    Parse {
        name: String,
        error: serde_json::Error,
    },
    #[error(
        "{name}: schema {found:?} is not {expected:?} (re-run keycard assess with this version)"
    )]
    Schema {
        name: String,
        found: String,
        expected: &'static str,
    },
}

/// Parse a JSON report written by `keycard assess --output json`; `name`
/// (a file name) is used in errors.
pub fn parse_assessment(text: &str, name: &str) -> Result<Assessment, DiffError> {
    // The schema first: a report of another version most likely misses
    // fields, and "schema v0 is not v1" says more than "missing field".
    #[derive(serde::Deserialize)]
    struct Head {
        schema: Option<String>,
    }
    if let Ok(Head {
        schema: Some(found),
    }) = serde_json::from_str::<Head>(text)
    {
        if found != SCHEMA {
            return Err(DiffError::Schema {
                name: name.to_string(),
                found,
                expected: SCHEMA,
            });
        }
    }
    serde_json::from_str(text).map_err(|error| DiffError::Parse {
        name: name.to_string(),
        error,
    })
}

/// A finding as the diff reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingRef {
    pub id: String,
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub pillar: Pillar,
    pub resource: String,
}

impl From<&Finding> for FindingRef {
    fn from(f: &Finding) -> Self {
        FindingRef {
            id: f.id.clone(),
            rule: f.rule.clone(),
            title: f.title.clone(),
            severity: f.severity,
            pillar: f.pillar,
            resource: f.resource.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeverityChange {
    pub id: String,
    pub title: String,
    pub from: Severity,
    pub to: Severity,
}

/// One pillar in both assessments (`None`: not scored there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PillarChange {
    pub pillar: Pillar,
    pub old_stage: Option<Stage>,
    pub new_stage: Option<Stage>,
    pub old_score: Option<u8>,
    pub new_score: Option<u8>,
}

impl PillarChange {
    pub fn changed(&self) -> bool {
        self.old_stage != self.new_stage || self.old_score != self.new_score
    }
    /// The stage fell, or the score fell within the same stage.
    pub fn regressed(&self) -> bool {
        match (self.old_stage, self.new_stage) {
            (Some(o), Some(n)) if n < o => true,
            (Some(_), None) => true,
            (Some(o), Some(n)) if n == o => matches!(
                (self.old_score, self.new_score),
                (Some(a), Some(b)) if b < a
            ),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlChange {
    pub framework: Framework,
    pub control: String,
    pub title: String,
    pub from: Option<ControlStatus>,
    pub to: Option<ControlStatus>,
}

impl ControlChange {
    /// Supported > partial > contradicted; not assessed is no evidence
    /// either way and never counts as a regression.
    pub fn worsened(&self) -> bool {
        fn rank(s: Option<ControlStatus>) -> Option<u8> {
            match s? {
                ControlStatus::Supported => Some(2),
                ControlStatus::Partial => Some(1),
                ControlStatus::Contradicted => Some(0),
                ControlStatus::NotAssessed => None,
            }
        }
        matches!((rank(self.from), rank(self.to)), (Some(a), Some(b)) if b < a)
    }
}

/// Where each assessment came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub generated_at: String,
    pub locations: Vec<String>,
    pub findings: usize,
    pub overall: Option<Stage>,
}

impl Side {
    fn of(a: &Assessment) -> Side {
        Side {
            generated_at: a.generated_at.clone(),
            locations: a.source.locations.clone(),
            findings: a.findings.len(),
            overall: a.maturity.overall,
        }
    }
}

/// What changed from `old` to `new`. Every list is sorted, so the same
/// two inputs always give the same output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub old: Side,
    pub new: Side,
    pub new_findings: Vec<FindingRef>,
    pub resolved_findings: Vec<FindingRef>,
    pub severity_changes: Vec<SeverityChange>,
    /// Every pillar scored in either assessment, changed or not.
    pub pillars: Vec<PillarChange>,
    pub identities_added: Vec<String>,
    pub identities_removed: Vec<String>,
    pub cluster_admins_added: Vec<String>,
    pub cluster_admins_removed: Vec<String>,
    pub gaps_opened: Vec<Gap>,
    pub gaps_closed: Vec<Gap>,
    pub compliance_changes: Vec<ControlChange>,
}

fn by_id(a: &Assessment) -> BTreeMap<&str, &Finding> {
    let mut m = BTreeMap::new();
    for f in &a.findings {
        // The first wins should a stage ever emit an id twice.
        m.entry(f.id.as_str()).or_insert(f);
    }
    m
}

fn sorted_findings(mut v: Vec<FindingRef>) -> Vec<FindingRef> {
    v.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    v
}

/// Compare two assessments.
pub fn diff(old: &Assessment, new: &Assessment) -> Diff {
    let (fo, fn_) = (by_id(old), by_id(new));
    let new_findings = sorted_findings(
        fn_.iter()
            .filter(|(id, _)| !fo.contains_key(*id))
            .map(|(_, f)| FindingRef::from(*f))
            .collect(),
    );
    let resolved_findings = sorted_findings(
        fo.iter()
            .filter(|(id, _)| !fn_.contains_key(*id))
            .map(|(_, f)| FindingRef::from(*f))
            .collect(),
    );
    let severity_changes = fo
        .iter()
        .filter_map(|(id, o)| {
            let n = fn_.get(id)?;
            (o.severity != n.severity).then(|| SeverityChange {
                id: id.to_string(),
                title: n.title.clone(),
                from: o.severity,
                to: n.severity,
            })
        })
        .collect();

    let score = |a: &Assessment, p: Pillar| {
        a.maturity
            .pillars
            .iter()
            .find(|s| s.pillar == p && s.assessed)
            .map(|s| (s.stage, s.score))
    };
    let pillars = Pillar::ALL
        .iter()
        .filter_map(|p| {
            let (o, n) = (score(old, *p), score(new, *p));
            (o.is_some() || n.is_some()).then(|| PillarChange {
                pillar: *p,
                old_stage: o.map(|x| x.0),
                new_stage: n.map(|x| x.0),
                old_score: o.map(|x| x.1),
                new_score: n.map(|x| x.1),
            })
        })
        .collect();

    let ids = |a: &Assessment| -> BTreeSet<String> {
        a.inventory
            .identities
            .iter()
            .map(|i| i.id.clone())
            .collect()
    };
    let admins = |a: &Assessment| -> BTreeSet<String> {
        a.inventory
            .identities
            .iter()
            .filter(|i| i.cluster_admin)
            .map(|i| i.id.clone())
            .chain(a.summary.cluster_admins.iter().cloned())
            .collect()
    };
    let (io, in_) = (ids(old), ids(new));
    let (ao, an) = (admins(old), admins(new));

    let gaps = |a: &Assessment| -> BTreeMap<String, Gap> {
        a.coverage
            .gaps
            .iter()
            .map(|g| (g.id.clone(), g.clone()))
            .collect()
    };
    let (go, gn) = (gaps(old), gaps(new));

    let controls = |a: &Assessment| -> BTreeMap<(Framework, String), (String, ControlStatus)> {
        a.compliance
            .iter()
            .map(|c| {
                (
                    (c.framework, c.control.clone()),
                    (c.title.clone(), c.status),
                )
            })
            .collect()
    };
    let (co, cn) = (controls(old), controls(new));
    let keys: BTreeSet<&(Framework, String)> = co.keys().chain(cn.keys()).collect();
    let compliance_changes = keys
        .into_iter()
        .filter_map(|k| {
            let (o, n) = (co.get(k), cn.get(k));
            let (from, to) = (o.map(|x| x.1), n.map(|x| x.1));
            (from != to).then(|| ControlChange {
                framework: k.0,
                control: k.1.clone(),
                title: n.or(o).map(|x| x.0.clone()).unwrap_or_default(),
                from,
                to,
            })
        })
        .collect();

    Diff {
        old: Side::of(old),
        new: Side::of(new),
        new_findings,
        resolved_findings,
        severity_changes,
        pillars,
        identities_added: in_.difference(&io).cloned().collect(),
        identities_removed: io.difference(&in_).cloned().collect(),
        cluster_admins_added: an.difference(&ao).cloned().collect(),
        cluster_admins_removed: ao.difference(&an).cloned().collect(),
        gaps_opened: gn
            .iter()
            .filter(|(k, _)| !go.contains_key(*k))
            .map(|(_, g)| g.clone())
            .collect(),
        gaps_closed: go
            .iter()
            .filter(|(k, _)| !gn.contains_key(*k))
            .map(|(_, g)| g.clone())
            .collect(),
        compliance_changes,
    }
}

/// Output forms of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffFormat {
    Text,
    Markdown,
    Json,
}

impl std::str::FromStr for DiffFormat {
    type Err = crate::report::ParseFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "human" => Ok(DiffFormat::Text),
            "md" | "markdown" => Ok(DiffFormat::Markdown),
            "json" => Ok(DiffFormat::Json),
            _ => Err(crate::report::ParseFormatError(s.to_string())),
        }
    }
}

fn stage_str(s: Option<Stage>) -> &'static str {
    s.map(|s| s.title()).unwrap_or("not assessed")
}

fn score_str(s: Option<u8>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "-".to_string())
}

fn status_str(s: Option<ControlStatus>) -> &'static str {
    match s {
        Some(ControlStatus::Supported) => "supported",
        Some(ControlStatus::Partial) => "partial",
        Some(ControlStatus::Contradicted) => "contradicted",
        Some(ControlStatus::NotAssessed) => "not assessed",
        None => "absent",
    }
}

impl Diff {
    /// Why this diff is a step backwards, one reason per line; empty when
    /// it is not. New findings and severity increases count from
    /// `min_severity` up; lost stages, new cluster-admins, new coverage
    /// gaps (less was seen) and worsened controls always count.
    pub fn regressions(&self, min_severity: Severity) -> Vec<String> {
        let mut r = Vec::new();
        let n = self
            .new_findings
            .iter()
            .filter(|f| f.severity >= min_severity)
            .count();
        if n > 0 {
            r.push(format!("{n} new findings at {min_severity} or above"));
        }
        for c in &self.severity_changes {
            if c.to > c.from && c.to >= min_severity {
                r.push(format!("{} rose from {} to {}", c.id, c.from, c.to));
            }
        }
        if let (Some(o), n) = (self.old.overall, self.new.overall) {
            if n.is_none_or(|n| n < o) {
                r.push(format!(
                    "overall stage fell from {} to {}",
                    o.title(),
                    stage_str(n)
                ));
            }
        }
        for p in self.pillars.iter().filter(|p| p.regressed()) {
            r.push(format!(
                "{}: {} {} -> {} {}",
                p.pillar.title(),
                stage_str(p.old_stage),
                score_str(p.old_score),
                stage_str(p.new_stage),
                score_str(p.new_score)
            ));
        }
        for a in &self.cluster_admins_added {
            r.push(format!("new cluster-admin {a}"));
        }
        for g in &self.gaps_opened {
            r.push(format!("new coverage gap {}", g.id));
        }
        for c in self.compliance_changes.iter().filter(|c| c.worsened()) {
            r.push(format!(
                "{} {}: {} -> {}",
                c.framework.key(),
                c.control,
                status_str(c.from),
                status_str(c.to)
            ));
        }
        r
    }

    /// Whether anything got worse (any severity).
    pub fn regressed(&self) -> bool {
        !self.regressions(Severity::Low).is_empty()
    }

    /// The exit code for CI: 1 when something at or above `min_severity`
    /// got worse, 0 otherwise.
    pub fn exit_code(&self, min_severity: Severity) -> i32 {
        i32::from(!self.regressions(min_severity).is_empty())
    }

    /// Whether the two assessments differ at all.
    pub fn is_empty(&self) -> bool {
        self.new_findings.is_empty()
            && self.resolved_findings.is_empty()
            && self.severity_changes.is_empty()
            && !self.pillars.iter().any(PillarChange::changed)
            && self.old.overall == self.new.overall
            && self.identities_added.is_empty()
            && self.identities_removed.is_empty()
            && self.cluster_admins_added.is_empty()
            && self.cluster_admins_removed.is_empty()
            && self.gaps_opened.is_empty()
            && self.gaps_closed.is_empty()
            && self.compliance_changes.is_empty()
    }

    pub fn render(&self, format: DiffFormat) -> String {
        match format {
            DiffFormat::Text => self.to_text(),
            DiffFormat::Markdown => self.to_markdown(),
            DiffFormat::Json => self.to_json(),
        }
    }

    pub fn to_json(&self) -> String {
        let mut v = match serde_json::to_value(self) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "the diff could not be serialised");
                return String::new();
            }
        };
        v["regressions"] = serde_json::json!(self.regressions(Severity::Low));
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    }

    /// For a terminal: one line per change, `+` worse or new, `-` gone,
    /// `~` changed, and a verdict at the end.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "assessment {} -> {}: {} -> {} findings, overall {} -> {}",
            self.old.generated_at,
            self.new.generated_at,
            self.old.findings,
            self.new.findings,
            stage_str(self.old.overall),
            stage_str(self.new.overall)
        );
        let section = |o: &mut String, title: &str, lines: Vec<String>| {
            if !lines.is_empty() {
                let _ = writeln!(o, "\n{title} ({}):", lines.len());
                for l in lines {
                    let _ = writeln!(o, "  {l}");
                }
            }
        };
        section(
            &mut o,
            "maturity",
            self.pillars
                .iter()
                .filter(|p| p.changed())
                .map(|p| {
                    format!(
                        "~ {}: {} {} -> {} {}",
                        p.pillar.title(),
                        stage_str(p.old_stage),
                        score_str(p.old_score),
                        stage_str(p.new_stage),
                        score_str(p.new_score)
                    )
                })
                .collect(),
        );
        let f = |sign: char, v: &[FindingRef]| -> Vec<String> {
            v.iter()
                .map(|f| format!("{sign} [{}] {} ({})", f.severity, f.title, f.id))
                .collect()
        };
        section(&mut o, "new findings", f('+', &self.new_findings));
        section(&mut o, "resolved findings", f('-', &self.resolved_findings));
        section(
            &mut o,
            "severity changes",
            self.severity_changes
                .iter()
                .map(|c| format!("~ {}: {} -> {}", c.id, c.from, c.to))
                .collect(),
        );
        let ids = |sign: char, v: &[String]| -> Vec<String> {
            v.iter().map(|i| format!("{sign} {i}")).collect()
        };
        section(
            &mut o,
            "cluster admins",
            ids('+', &self.cluster_admins_added)
                .into_iter()
                .chain(ids('-', &self.cluster_admins_removed))
                .collect(),
        );
        section(
            &mut o,
            "identities",
            ids('+', &self.identities_added)
                .into_iter()
                .chain(ids('-', &self.identities_removed))
                .collect(),
        );
        section(
            &mut o,
            "coverage",
            self.gaps_opened
                .iter()
                .map(|g| format!("+ not seen: {} ({})", g.what, g.id))
                .chain(
                    self.gaps_closed
                        .iter()
                        .map(|g| format!("- now seen: {} ({})", g.what, g.id)),
                )
                .collect(),
        );
        section(
            &mut o,
            "compliance",
            self.compliance_changes
                .iter()
                .map(|c| {
                    format!(
                        "~ {} {}: {} -> {}",
                        c.framework.key(),
                        c.control,
                        status_str(c.from),
                        status_str(c.to)
                    )
                })
                .collect(),
        );
        let reg = self.regressions(Severity::Low);
        if self.is_empty() {
            let _ = writeln!(o, "\nno changes");
        } else if reg.is_empty() {
            let _ = writeln!(o, "\nno regressions");
        } else {
            let _ = writeln!(o, "\nREGRESSED ({}):", reg.len());
            for r in reg {
                let _ = writeln!(o, "  {r}");
            }
        }
        o
    }

    pub fn to_markdown(&self) -> String {
        use crate::report::md_cell as c;
        let mut o = String::new();
        let _ = writeln!(o, "# Assessment diff\n");
        let _ = writeln!(o, "| | Old | New |\n|---|---|---|");
        let _ = writeln!(
            o,
            "| Generated | {} | {} |",
            c(&self.old.generated_at),
            c(&self.new.generated_at)
        );
        let _ = writeln!(
            o,
            "| Overall stage | {} | {} |",
            stage_str(self.old.overall),
            stage_str(self.new.overall)
        );
        let _ = writeln!(
            o,
            "| Findings | {} | {} |\n",
            self.old.findings, self.new.findings
        );
        let reg = self.regressions(Severity::Low);
        if reg.is_empty() {
            let _ = writeln!(o, "**No regressions.**\n");
        } else {
            let _ = writeln!(o, "**Regressed:**\n");
            for r in &reg {
                let _ = writeln!(o, "- {}", c(r));
            }
            o.push('\n');
        }
        if !self.pillars.is_empty() {
            let _ = writeln!(o, "## Maturity\n\n| Pillar | Old | New |\n|---|---|---|");
            for p in &self.pillars {
                let _ = writeln!(
                    o,
                    "| {} | {} {} | {} {} |",
                    p.pillar.title(),
                    stage_str(p.old_stage),
                    score_str(p.old_score),
                    stage_str(p.new_stage),
                    score_str(p.new_score)
                );
            }
            o.push('\n');
        }
        let table = |o: &mut String, title: &str, v: &[FindingRef]| {
            if v.is_empty() {
                return;
            }
            let _ = writeln!(
                o,
                "## {title} ({})\n\n| Severity | Pillar | Finding | Resource |\n|---|---|---|---|",
                v.len()
            );
            for f in v {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    f.severity,
                    f.pillar.title(),
                    c(&f.title),
                    c(&f.resource)
                );
            }
            o.push('\n');
        };
        table(&mut o, "New findings", &self.new_findings);
        table(&mut o, "Resolved findings", &self.resolved_findings);
        if !self.severity_changes.is_empty() {
            let _ = writeln!(
                o,
                "## Severity changes\n\n| Finding | Old | New |\n|---|---|---|"
            );
            for s in &self.severity_changes {
                let _ = writeln!(o, "| {} | {} | {} |", c(&s.id), s.from, s.to);
            }
            o.push('\n');
        }
        let list = |o: &mut String, title: &str, v: &[String]| {
            if v.is_empty() {
                return;
            }
            let _ = writeln!(o, "## {title}\n");
            for i in v {
                let _ = writeln!(o, "- {}", c(i));
            }
            o.push('\n');
        };
        list(&mut o, "New cluster admins", &self.cluster_admins_added);
        list(
            &mut o,
            "No longer cluster admin",
            &self.cluster_admins_removed,
        );
        list(&mut o, "Identities added", &self.identities_added);
        list(&mut o, "Identities removed", &self.identities_removed);
        if !self.gaps_opened.is_empty() || !self.gaps_closed.is_empty() {
            let _ = writeln!(o, "## Coverage\n\n| Change | Gap | What |\n|---|---|---|");
            for g in &self.gaps_opened {
                let _ = writeln!(o, "| no longer seen | {} | {} |", c(&g.id), c(&g.what));
            }
            for g in &self.gaps_closed {
                let _ = writeln!(o, "| now seen | {} | {} |", c(&g.id), c(&g.what));
            }
            o.push('\n');
        }
        if !self.compliance_changes.is_empty() {
            let _ = writeln!(
                o,
                "## Compliance\n\n| Framework | Control | Title | Old | New |\n|---|---|---|---|---|"
            );
            for ch in &self.compliance_changes {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} |",
                    ch.framework.title(),
                    c(&ch.control),
                    c(&ch.title),
                    status_str(ch.from),
                    status_str(ch.to)
                );
            }
            o.push('\n');
        }
        o
    }
}
