//! The Markdown report: the HTML report's sections as tables, for a pull
//! request, an issue or a wiki page. Every name from the cluster goes
//! through [`cell`], so a resource called `a|b` or `<img onerror>` cannot
//! break a table or inject markup where the Markdown is rendered.

use std::fmt::Write as _;

use keycard_core::Severity;

use super::riskiest;
use crate::model::{Assessment, ControlStatus, Framework, Pillar};

/// Identities listed in the Markdown report (riskiest first).
const MD_IDENTITIES: usize = 50;

/// Escape text for a table cell or a list item: Markdown and HTML
/// metacharacters are escaped and line breaks become spaces.
pub(crate) fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("\\|"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

fn status_title(s: ControlStatus) -> &'static str {
    match s {
        ControlStatus::Supported => "supported",
        ControlStatus::Partial => "partial",
        ControlStatus::Contradicted => "contradicted",
        ControlStatus::NotAssessed => "not assessed",
    }
}

pub(super) fn render(a: &Assessment) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Zero-trust assessment\n");
    let overall = a
        .maturity
        .overall
        .map(|s| s.title())
        .unwrap_or("not assessed");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Overall stage | **{overall}** |");
    let _ = writeln!(o, "| Generated | {} |", cell(&a.generated_at));
    let _ = writeln!(
        o,
        "| Source | {} {} ({} objects) |",
        cell(&format!("{:?}", a.source.kind).to_lowercase()),
        cell(&a.source.locations.join(", ")),
        a.source.objects
    );
    let _ = writeln!(o, "| keycard | {} |", cell(&a.keycard_version));
    let s = &a.summary;
    let _ = writeln!(
        o,
        "| Inventory | {} identities, {} workloads, {} namespaces, {} data stores |",
        s.identities, s.workloads, s.namespaces, s.data_stores
    );
    let _ = writeln!(
        o,
        "| Cluster admins | {} |",
        if s.cluster_admins.is_empty() {
            "none".to_string()
        } else {
            cell(&s.cluster_admins.join(", "))
        }
    );
    o.push('\n');

    // Coverage first: a reader must know what the conclusions rest on.
    let _ = writeln!(o, "## What this report could not see\n");
    if a.coverage.gaps.is_empty() && a.coverage.input_errors.is_empty() {
        let _ = writeln!(o, "Nothing the assessment needs was missing.\n");
    } else {
        if !a.coverage.gaps.is_empty() {
            let _ = writeln!(
                o,
                "| Gap | Not seen | Impact | Pillars |\n|---|---|---|---|"
            );
            for g in &a.coverage.gaps {
                let pillars: Vec<&str> = g.pillars.iter().map(|p| p.title()).collect();
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    cell(&g.id),
                    cell(&g.what),
                    cell(&g.impact),
                    pillars.join(", ")
                );
            }
            o.push('\n');
        }
        if !a.coverage.input_errors.is_empty() {
            let _ = writeln!(o, "| Input error | Line | Message |\n|---|---|---|");
            for e in &a.coverage.input_errors {
                let line = e.line.map(|l| l.to_string()).unwrap_or_default();
                let _ = writeln!(o, "| {} | {line} | {} |", cell(&e.file), cell(&e.message));
            }
            o.push('\n');
        }
    }
    if !a.coverage.unknown_kinds.is_empty() {
        let _ = writeln!(
            o,
            "Skipped unknown kinds: {}\n",
            cell(&a.coverage.unknown_kinds.join(", "))
        );
    }

    let _ = writeln!(o, "## Maturity (CISA Zero Trust Maturity Model v2)\n");
    let _ = writeln!(
        o,
        "| Pillar | Stage | Score | Limited by |\n|---|---|---:|---|"
    );
    for p in &a.maturity.pillars {
        let stage = if p.assessed {
            p.stage.title()
        } else {
            "not assessed"
        };
        let _ = writeln!(
            o,
            "| {} | {stage} | {}/100 | {} |",
            p.pillar.title(),
            p.score,
            cell(&p.limited_by.join(", "))
        );
    }
    o.push('\n');
    for p in &a.maturity.pillars {
        let _ = writeln!(o, "### {}\n", p.pillar.title());
        if !p.evidence.is_empty() {
            let _ = writeln!(o, "| Stage | Criterion | Met | Seen |\n|---|---|---|---|");
            for e in &p.evidence {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    e.stage.title(),
                    cell(&e.criterion),
                    if e.met { "yes" } else { "no" },
                    cell(&e.detail)
                );
            }
            o.push('\n');
        }
        if !p.next_steps.is_empty() {
            let _ = writeln!(o, "Next steps:\n");
            for (i, n) in p.next_steps.iter().enumerate() {
                let _ = writeln!(o, "{}. {}", i + 1, cell(n));
            }
            o.push('\n');
        }
    }

    let _ = writeln!(o, "## Findings\n");
    let _ = writeln!(o, "| Severity | Count |\n|---|---:|");
    for sev in Severity::ALL {
        let n = a.findings.iter().filter(|f| f.severity == sev).count();
        let _ = writeln!(o, "| {sev} | {n} |");
    }
    o.push('\n');
    let _ = writeln!(o, "| Pillar | Count |\n|---|---:|");
    for p in Pillar::ALL {
        let n = a.findings.iter().filter(|f| f.pillar == p).count();
        let _ = writeln!(o, "| {} | {n} |", p.title());
    }
    o.push('\n');
    if !a.findings.is_empty() {
        let mut fs: Vec<_> = a.findings.iter().collect();
        fs.sort_by(|x, y| y.severity.cmp(&x.severity).then_with(|| x.id.cmp(&y.id)));
        let _ = writeln!(
            o,
            "| Severity | Pillar | Finding | Resource | Evidence | Remediation |\n|---|---|---|---|---|---|"
        );
        for f in fs {
            let _ = writeln!(
                o,
                "| {} | {} | {} (`{}`) | {} | {} | {} |",
                f.severity,
                f.pillar.title(),
                cell(&f.title),
                f.rule.replace('`', "'").replace('|', "\\|"),
                cell(&f.resource),
                f.evidence
                    .iter()
                    .map(|e| cell(e))
                    .collect::<Vec<_>>()
                    .join("<br>"),
                cell(&f.remediation)
            );
        }
        o.push('\n');
    }

    let _ = writeln!(o, "## Identities\n");
    let ids = riskiest(a);
    if ids.is_empty() {
        let _ = writeln!(o, "No identities were found.\n");
    } else {
        let _ = writeln!(
            o,
            "| Identity | Category | Cluster admin | Permissions | Secrets readable | Escalation paths | Workloads |\n|---|---|---|---:|---|---|---|"
        );
        for i in ids.iter().take(MD_IDENTITIES) {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell(&i.id),
                cell(
                    &serde_json::to_value(i.category)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
                if i.cluster_admin { "**yes**" } else { "no" },
                i.permissions.len(),
                cell(&i.secrets_readable.join(", ")),
                cell(&i.escalation_paths.join("; ")),
                cell(&i.workloads.join(", "))
            );
        }
        if ids.len() > MD_IDENTITIES {
            let _ = writeln!(
                o,
                "\n{} more identities, ranked lower by cluster-admin, escalation paths, secrets and breadth of permissions, are in the JSON report.",
                ids.len() - MD_IDENTITIES
            );
        }
        o.push('\n');
    }

    let _ = writeln!(o, "## Data stores\n");
    if a.inventory.data_stores.is_empty() {
        let _ = writeln!(o, "No data stores were recognised.\n");
    } else {
        let _ = writeln!(
            o,
            "| Data store | Engine | Ports | Isolated | From outside | Reachable from |\n|---|---|---|---|---|---|"
        );
        for d in &a.inventory.data_stores {
            let ports: Vec<String> = d.ports.iter().map(|p| p.to_string()).collect();
            let reach: Vec<String> = d
                .reachable_from
                .iter()
                .map(|r| format!("{} ({})", cell(&r.workload), cell(&r.ports)))
                .collect();
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&d.workload),
                cell(&d.engine),
                ports.join(", "),
                if d.isolated { "yes" } else { "**no**" },
                if d.reachable_from_outside {
                    "**yes**"
                } else {
                    "no"
                },
                reach.join("<br>")
            );
        }
        o.push('\n');
    }

    let _ = writeln!(o, "## Compliance evidence\n");
    if a.compliance.is_empty() {
        let _ = writeln!(o, "No controls were mapped.\n");
    }
    for fw in [Framework::Iso27001, Framework::Soc2, Framework::Gdpr] {
        let controls: Vec<_> = a.compliance.iter().filter(|c| c.framework == fw).collect();
        if controls.is_empty() {
            continue;
        }
        let _ = writeln!(o, "### {}\n", fw.title());
        let _ = writeln!(
            o,
            "| Control | Title | Status | Supporting | Contradicting findings |\n|---|---|---|---|---|"
        );
        for c in controls {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                cell(&c.control),
                cell(&c.title),
                status_title(c.status),
                c.supporting
                    .iter()
                    .map(|s| cell(s))
                    .collect::<Vec<_>>()
                    .join("<br>"),
                c.contradicting
                    .iter()
                    .map(|s| cell(s))
                    .collect::<Vec<_>>()
                    .join("<br>")
            );
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_tables_or_inject_markup() {
        assert_eq!(cell("a|b"), "a\\|b");
        assert_eq!(cell("<img onerror=x>"), "&lt;img onerror=x&gt;");
        assert_eq!(cell("ns/*\nnext"), "ns/\\* next");
    }
}
