//! The HTML report: one self-contained file, no requests (a strict
//! Content-Security-Policy allows only its own inline script and
//! stylesheet, by hash). The summary, the maturity chart and evidence, the
//! severity chart, the coverage gaps, the identity graph and the
//! compliance tables are rendered here, so they read with JavaScript off;
//! the findings table (filters, expandable evidence) and the data stores
//! are drawn by the page's script from the data embedded as JSON, with
//! `textContent` only, so a name from the cluster is never parsed as
//! markup.
//!
//! Size is bounded where a cluster can be large: the graph draws the
//! [`GRAPH_IDENTITIES`] riskiest identities and says what it left out; the
//! embedded data carries the findings and data stores, not the inventory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use keycard_core::Severity;
use serde_json::json;

use super::{pillar_key, riskiest};
use crate::model::{
    Assessment, ControlStatus, Framework, Identity, Permission, Pillar, PillarScore, Scope, Stage,
};

/// Identities drawn in the identity-to-permission graph.
pub const GRAPH_IDENTITIES: usize = 15;
/// Roles drawn at most (the rest are counted in the note).
const GRAPH_ROLES: usize = 24;
/// Resources drawn per role, and in all.
const GRAPH_RESOURCES_PER_ROLE: usize = 6;
const GRAPH_RESOURCES: usize = 32;
/// Findings embedded in the page; beyond this the JSON report has them.
const HTML_FINDINGS_MAX: usize = 20_000;

const CSS: &str = include_str!("assets/report.css");
const JS: &str = include_str!("assets/report.js");

/// Escape text for an HTML text node or a quoted attribute value.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// JSON that can sit inside `<script type="application/json">`: `<`, `>`
/// and `&` become `\u003c` etc., so no string (`</script>`, `<!--`) can end
/// the element early; `JSON.parse` reads them back unchanged.
pub(crate) fn script_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(c),
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn stage_class(s: Stage) -> &'static str {
    match s {
        Stage::Traditional => "st-traditional",
        Stage::Initial => "st-initial",
        Stage::Advanced => "st-advanced",
        Stage::Optimal => "st-optimal",
    }
}

fn stage_color(s: Stage) -> &'static str {
    match s {
        Stage::Traditional => "#d64545",
        Stage::Initial => "#e0912b",
        Stage::Advanced => "#2f86c9",
        Stage::Optimal => "#2f9e5b",
    }
}

fn severity_color(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "#8e1b3a",
        Severity::High => "#d64545",
        Severity::Medium => "#e0912b",
        Severity::Low => "#5b8def",
    }
}

fn status_label(s: ControlStatus) -> (&'static str, &'static str) {
    match s {
        ControlStatus::Supported => ("supported", "cs-supported"),
        ControlStatus::Partial => ("partial", "cs-partial"),
        ControlStatus::Contradicted => ("contradicted", "cs-contradicted"),
        ControlStatus::NotAssessed => ("not assessed", "cs-na"),
    }
}

pub(super) fn render(a: &Assessment) -> String {
    // Only fixed text: written as is, so the quotes stay readable.
    let csp = format!(
        "default-src 'none'; script-src {}; style-src {}; img-src data:; base-uri 'none'; form-action 'none'",
        csp_hash(JS),
        csp_hash(CSS)
    );
    let overall = a.maturity.overall;
    let overall_text = overall.map(|s| s.title()).unwrap_or("Not assessed");
    let mut o = String::with_capacity(64 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"keycard {}\">\n\
         <title>Zero-trust assessment: {} ({})</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n<style>{CSS}</style>\n</head>\n<body>\n",
        csp,
        esc(&a.keycard_version),
        overall_text,
        esc(&a.generated_at)
    );
    header(&mut o, a, overall, overall_text);
    o.push_str("<main>\n");
    coverage(&mut o, a);
    maturity(&mut o, a);
    findings_charts(&mut o, a);
    graph(&mut o, a);
    findings_table(&mut o, a);
    data_stores(&mut o, a);
    compliance(&mut o, a);
    o.push_str("</main>\n");
    let _ = writeln!(
        o,
        "<footer>keycard {} · schema {} · generated {}</footer>",
        esc(&a.keycard_version),
        esc(&a.schema),
        esc(&a.generated_at)
    );
    let findings: Vec<_> = a.findings.iter().take(HTML_FINDINGS_MAX).collect();
    let pillars: BTreeMap<&str, &str> = Pillar::ALL
        .iter()
        .map(|p| (pillar_key(*p), p.title()))
        .collect();
    let data = json!({
        "findings": findings,
        "findingsTotal": a.findings.len(),
        "dataStores": a.inventory.data_stores,
        "pillars": pillars,
    });
    let _ = write!(
        o,
        "<script type=\"application/json\" id=\"keycard-data\">{}</script>\n<script>{JS}</script>\n</body>\n</html>\n",
        script_json(&data)
    );
    o
}

fn header(o: &mut String, a: &Assessment, overall: Option<Stage>, overall_text: &str) {
    let cls = overall.map(stage_class).unwrap_or("st-none");
    let mut locs: Vec<String> = a
        .source
        .locations
        .iter()
        .take(3)
        .map(|l| truncate(l, 80))
        .collect();
    if a.source.locations.len() > 3 {
        locs.push(format!("and {} more", a.source.locations.len() - 3));
    }
    let kind = match a.source.kind {
        crate::model::SourceKind::Dump => "cluster dump",
        crate::model::SourceKind::Manifests => "manifests",
        crate::model::SourceKind::Live => "live cluster",
    };
    let _ = write!(
        o,
        "<header>\n<div class=\"head-text\"><h1>Zero-trust assessment</h1>\n\
         <p class=\"meta\"><span id=\"source\">{} · {}</span> · {} objects · <time id=\"generated\">{}</time> · keycard {}</p></div>\n\
         <div class=\"overall {cls}\"><span class=\"label\">Overall stage</span><span id=\"overall-stage\" class=\"stage-name\">{}</span>\
         <span class=\"label\">CISA ZTMM v2, lowest assessed pillar</span></div>\n</header>\n",
        kind,
        esc(&locs.join(", ")),
        a.source.objects,
        esc(&a.generated_at),
        esc(&a.keycard_version),
        esc(overall_text)
    );
    let s = &a.summary;
    let crit = a
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Critical)
        .count();
    let high = a
        .findings
        .iter()
        .filter(|f| f.severity == Severity::High)
        .count();
    let admins = a
        .inventory
        .identities
        .iter()
        .filter(|i| i.cluster_admin)
        .count();
    let _ = writeln!(
        o,
        "<nav class=\"kpis\" aria-label=\"Key numbers\">\
         <a href=\"#graph\"><b>{}</b> identities</a>\
         <a href=\"#graph\" class=\"{}\"><b>{}</b> cluster admins</a>\
         <a href=\"#findings\"><b>{}</b> workloads</a>\
         <a href=\"#findings\"><b>{}</b> namespaces</a>\
         <a href=\"#data-stores\"><b>{}</b> data stores</a>\
         <a href=\"#findings\" class=\"{}\"><b>{}</b> critical · <b>{}</b> high findings</a>\
         <a href=\"#coverage\" class=\"{}\"><b>{}</b> coverage gaps</a></nav>",
        s.identities.max(a.inventory.identities.len()),
        if admins > 0 { "bad" } else { "" },
        admins,
        s.workloads.max(a.inventory.workloads.len()),
        s.namespaces.max(a.inventory.namespaces.len()),
        s.data_stores.max(a.inventory.data_stores.len()),
        if crit + high > 0 { "bad" } else { "" },
        crit,
        high,
        if a.coverage.gaps.is_empty() {
            ""
        } else {
            "warn"
        },
        a.coverage.gaps.len()
    );
}

fn coverage(o: &mut String, a: &Assessment) {
    let c = &a.coverage;
    if c.gaps.is_empty() && c.input_errors.is_empty() && c.unknown_kinds.is_empty() {
        o.push_str("<section id=\"coverage\" class=\"coverage ok\"><h2>What this report could not see</h2>\
                    <p>Nothing the assessment needs was missing from the input.</p></section>\n");
        return;
    }
    o.push_str("<section id=\"coverage\" class=\"coverage gaps\"><h2>What this report could not see</h2>\n\
                <p>These gaps limit the conclusions below: a pillar whose evidence is missing is capped, not scored high.</p>\n");
    if !c.gaps.is_empty() {
        o.push_str("<ul class=\"gap-list\">\n");
        for g in &c.gaps {
            let pillars: Vec<&str> = g.pillars.iter().map(|p| p.title()).collect();
            let _ = writeln!(
                o,
                "<li><b>{}</b><span class=\"impact\">{}</span><span class=\"tags\">{}</span><code>{}</code></li>",
                esc(&g.what),
                esc(&g.impact),
                esc(&pillars.join(" · ")),
                esc(&g.id)
            );
        }
        o.push_str("</ul>\n");
    }
    if !c.input_errors.is_empty() {
        let _ = writeln!(
            o,
            "<details class=\"input-errors\"><summary>{} input problems (files or objects that could not be used)</summary><ul>",
            c.input_errors.len()
        );
        for e in c.input_errors.iter().take(200) {
            let at = match e.line {
                Some(l) => format!("{}:{l}", e.file),
                None => e.file.clone(),
            };
            let _ = writeln!(o, "<li><code>{}</code> {}</li>", esc(&at), esc(&e.message));
        }
        if c.input_errors.len() > 200 {
            let _ = writeln!(
                o,
                "<li>and {} more (see the JSON report)</li>",
                c.input_errors.len() - 200
            );
        }
        o.push_str("</ul></details>\n");
    }
    if !c.unknown_kinds.is_empty() {
        let _ = writeln!(
            o,
            "<p class=\"unknown\">Skipped kinds the assessment does not know: {}</p>",
            esc(&c.unknown_kinds.join(", "))
        );
    }
    o.push_str("</section>\n");
}

/// The radar: one axis per pillar, rings at 25/50/75/100.
fn radar(o: &mut String, pillars: &[PillarScore]) {
    let (cx, cy, r) = (190.0_f64, 165.0_f64, 115.0_f64);
    let n = Pillar::ALL.len() as f64;
    let point = |i: usize, v: f64| {
        let ang = -std::f64::consts::FRAC_PI_2 + (i as f64) * 2.0 * std::f64::consts::PI / n;
        (cx + r * v * ang.cos(), cy + r * v * ang.sin())
    };
    let _ = write!(
        o,
        "<svg id=\"radar\" class=\"radar\" viewBox=\"-45 0 470 340\" role=\"img\" aria-labelledby=\"radar-title\"><title id=\"radar-title\">Score per pillar, 0 to 100</title>"
    );
    for ring in [0.25, 0.5, 0.75, 1.0] {
        let pts: Vec<String> = (0..Pillar::ALL.len())
            .map(|i| {
                let (x, y) = point(i, ring);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            o,
            "<polygon class=\"ring\" points=\"{}\" fill=\"none\"/>",
            pts.join(" ")
        );
        let _ = write!(
            o,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            cx + 3.0,
            cy - r * ring + 10.0,
            (ring * 100.0) as u32
        );
    }
    let mut pts = Vec::new();
    for (i, p) in Pillar::ALL.iter().enumerate() {
        let (x, y) = point(i, 1.0);
        let _ = write!(
            o,
            "<line class=\"axis\" x1=\"{cx}\" y1=\"{cy}\" x2=\"{x:.1}\" y2=\"{y:.1}\"/>"
        );
        let score = pillars.iter().find(|s| s.pillar == *p);
        let v = score
            .map(|s| f64::from(s.score.min(100)) / 100.0)
            .unwrap_or(0.0);
        pts.push(point(i, v));
        let (lx, ly) = point(i, 1.17);
        let anchor = if (lx - cx).abs() < 10.0 {
            "middle"
        } else if lx > cx {
            "start"
        } else {
            "end"
        };
        let label = match p {
            Pillar::ApplicationsAndWorkloads => "Apps & Workloads",
            _ => p.title(),
        };
        let val = match score {
            Some(s) if s.assessed => format!("{} · {}", s.score, s.stage.title()),
            Some(_) => "not assessed".to_string(),
            None => "no score".to_string(),
        };
        let _ = write!(
            o,
            "<text class=\"axis-label\" x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"{anchor}\">{}<tspan x=\"{lx:.1}\" dy=\"14\" class=\"axis-value\">{}</tspan></text>",
            esc(label),
            esc(&val)
        );
    }
    let poly: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(
        o,
        "<polygon class=\"score-area\" points=\"{}\"/>",
        poly.join(" ")
    );
    for (i, (x, y)) in pts.iter().enumerate() {
        let color = pillars
            .iter()
            .find(|s| s.pillar == Pillar::ALL[i])
            .map(|s| stage_color(s.stage))
            .unwrap_or("#999");
        let _ = write!(
            o,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"{color}\"/>"
        );
    }
    o.push_str("</svg>\n");
}

fn maturity(o: &mut String, a: &Assessment) {
    o.push_str("<section id=\"maturity\"><h2>Maturity per pillar</h2>\n<div class=\"maturity\">\n");
    radar(o, &a.maturity.pillars);
    o.push_str("<div class=\"pillars\">\n");
    if a.maturity.pillars.is_empty() {
        o.push_str("<p>No pillar could be scored.</p>\n");
    }
    for p in &a.maturity.pillars {
        let key = pillar_key(p.pillar);
        let stage = if p.assessed {
            p.stage.title()
        } else {
            "Not assessed"
        };
        let cls = if p.assessed {
            stage_class(p.stage)
        } else {
            "st-none"
        };
        let met = p.evidence.iter().filter(|e| e.met).count();
        let _ = writeln!(
            o,
            "<article class=\"pillar {cls}\" data-pillar=\"{key}\" id=\"pillar-{key}\">\
             <div class=\"pillar-head\"><h3>{}</h3><span class=\"stage-badge\">{}</span>\
             <span class=\"score\" data-score=\"{}\">{}<small>/100</small></span></div>\
             <svg class=\"bar\" viewBox=\"0 0 100 6\" preserveAspectRatio=\"none\" aria-hidden=\"true\">\
             <rect class=\"bar-bg\" x=\"0\" y=\"0\" width=\"100\" height=\"6\" rx=\"3\"/>\
             <rect x=\"0\" y=\"0\" width=\"{}\" height=\"6\" rx=\"3\" fill=\"{}\"/></svg>",
            esc(p.pillar.title()),
            esc(stage),
            p.score,
            p.score,
            p.score.min(100),
            stage_color(p.stage)
        );
        if !p.limited_by.is_empty() {
            let _ = write!(
                o,
                "<p class=\"limited\">Limited by coverage gaps: {}</p>",
                esc(&p.limited_by.join(", "))
            );
        }
        if !p.next_steps.is_empty() {
            // The most effective three in view, the rest one click away.
            o.push_str("<h4>Next steps</h4><ol class=\"next\">");
            for n in p.next_steps.iter().take(3) {
                let _ = write!(o, "<li>{}</li>", esc(n));
            }
            o.push_str("</ol>");
            if p.next_steps.len() > 3 {
                let _ = write!(
                    o,
                    "<details class=\"more-steps\"><summary>{} more steps</summary><ol class=\"next\" start=\"4\">",
                    p.next_steps.len() - 3
                );
                for n in p.next_steps.iter().skip(3) {
                    let _ = write!(o, "<li>{}</li>", esc(n));
                }
                o.push_str("</ol></details>");
            }
        }
        if !p.evidence.is_empty() {
            let _ = write!(
                o,
                "<details class=\"evidence\"><summary>Evidence: {met} of {} criteria met</summary><table><thead><tr><th>Stage</th><th>Criterion</th><th>Seen</th></tr></thead><tbody>",
                p.evidence.len()
            );
            for e in &p.evidence {
                let _ = write!(
                    o,
                    "<tr class=\"{}\"><td>{}</td><td><span class=\"mark\">{}</span> {}</td><td>{}</td></tr>",
                    if e.met { "met" } else { "unmet" },
                    e.stage.title(),
                    if e.met { "✓" } else { "✗" },
                    esc(&e.criterion),
                    esc(&e.detail)
                );
            }
            o.push_str("</tbody></table></details>");
        }
        o.push_str("</article>\n");
    }
    o.push_str("</div></div></section>\n");
}

/// Horizontal bars, one per label; `data-filter` lets the script turn a
/// click on a bar into a filter of the findings table.
fn bar_chart(o: &mut String, id: &str, title: &str, rows: &[(String, String, usize, &str)]) {
    let max = rows.iter().map(|r| r.2).max().unwrap_or(0).max(1);
    let h = rows.len() * 30 + 10;
    let _ = write!(
        o,
        "<svg id=\"{id}\" class=\"bars\" viewBox=\"0 0 420 {h}\" role=\"img\" aria-labelledby=\"{id}-t\"><title id=\"{id}-t\">{}</title>",
        esc(title)
    );
    for (i, (label, filter, n, color)) in rows.iter().enumerate() {
        let y = 5 + i * 30;
        let w = (*n as f64 / max as f64 * 230.0).max(if *n > 0 { 2.0 } else { 0.0 });
        let _ = write!(
            o,
            "<g class=\"bar-row\" data-filter=\"{}\" tabindex=\"0\"><text class=\"bar-label\" x=\"140\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect class=\"bar-bg\" x=\"150\" y=\"{y}\" width=\"230\" height=\"20\" rx=\"3\"/>\
             <rect x=\"150\" y=\"{y}\" width=\"{w:.1}\" height=\"20\" rx=\"3\" fill=\"{color}\"/>\
             <text class=\"bar-value\" x=\"{:.1}\" y=\"{}\">{n}</text></g>",
            esc(filter),
            y + 15,
            esc(label),
            150.0 + w + 6.0,
            y + 15
        );
    }
    o.push_str("</svg>\n");
}

fn findings_charts(o: &mut String, a: &Assessment) {
    let _ = writeln!(
        o,
        "<section id=\"overview\"><h2>Findings at a glance</h2><p class=\"hint\">{} legacy trust assumptions. Click a bar to filter the table.</p><div class=\"charts\">",
        a.findings.len()
    );
    let sev: Vec<(String, String, usize, &str)> = Severity::ALL
        .iter()
        .map(|s| {
            (
                s.as_str().to_string(),
                format!("severity:{}", s.as_str()),
                a.findings.iter().filter(|f| f.severity == *s).count(),
                severity_color(*s),
            )
        })
        .collect();
    o.push_str("<figure><figcaption>By severity</figcaption>");
    bar_chart(o, "chart-severity", "Findings by severity", &sev);
    o.push_str("</figure><figure><figcaption>By pillar</figcaption>");
    let pil: Vec<(String, String, usize, &str)> = Pillar::ALL
        .iter()
        .map(|p| {
            (
                match p {
                    Pillar::ApplicationsAndWorkloads => "Apps & Workloads".to_string(),
                    _ => p.title().to_string(),
                },
                format!("pillar:{}", pillar_key(*p)),
                a.findings.iter().filter(|f| f.pillar == *p).count(),
                "#6c63c7",
            )
        })
        .collect();
    bar_chart(o, "chart-pillar", "Findings by pillar", &pil);
    o.push_str("</figure></div></section>\n");
}

/// What the graph draws for one role: resources it grants, with the verbs.
fn resource_key(p: &Permission) -> Vec<String> {
    let mut keys: Vec<String> = p
        .resources
        .iter()
        .map(|r| {
            let group = p
                .api_groups
                .iter()
                .find(|g| !g.is_empty() && g.as_str() != "*");
            match group {
                Some(g) if r != "*" && p.api_groups.len() == 1 => format!("{r}.{g}"),
                _ => r.clone(),
            }
        })
        .collect();
    keys.extend(p.non_resource_urls.iter().cloned());
    keys
}

/// Whether a grant is one an attacker would want: everything, secrets,
/// exec, RBAC writes, impersonation, tokens.
fn dangerous(resource: &str, verbs: &BTreeSet<String>) -> bool {
    let any = |vs: &[&str]| verbs.iter().any(|v| v == "*" || vs.contains(&v.as_str()));
    let base = resource.split('.').next().unwrap_or(resource);
    base == "*"
        || (base == "secrets" && any(&["get", "list", "watch"]))
        || ((base == "pods/exec" || base == "pods/attach" || base == "nodes/proxy")
            && any(&["create", "get"]))
        || (matches!(
            base,
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
        ) && any(&["create", "update", "patch", "escalate", "bind"]))
        || (matches!(base, "users" | "groups" | "serviceaccounts") && any(&["impersonate"]))
        || (base == "serviceaccounts/token" && any(&["create"]))
}

struct GraphData<'a> {
    identities: Vec<&'a Identity>,
    roles: Vec<String>,
    resources: Vec<String>,
    /// (identity, role, bindings and scopes)
    id_role: BTreeMap<(usize, usize), BTreeSet<String>>,
    /// (role, resource) -> verbs
    role_res: BTreeMap<(usize, usize), BTreeSet<String>>,
    roles_left_out: usize,
    resources_left_out: usize,
}

fn graph_data(a: &Assessment) -> GraphData<'_> {
    let ranked = riskiest(a);
    // An identity without permissions has no edge to draw.
    let identities: Vec<&Identity> = ranked
        .into_iter()
        .filter(|i| !i.permissions.is_empty())
        .take(GRAPH_IDENTITIES)
        .collect();
    // Roles in order of the riskiest identity that holds them, so edges
    // mostly run straight across.
    let mut roles: Vec<String> = Vec::new();
    let mut role_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut all_roles: BTreeSet<&str> = BTreeSet::new();
    let mut id_role: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
    for (ii, ident) in identities.iter().enumerate() {
        for p in &ident.permissions {
            all_roles.insert(p.role.as_str());
            let ri = match role_index.get(&p.role) {
                Some(ri) => *ri,
                None => {
                    if roles.len() >= GRAPH_ROLES {
                        continue;
                    }
                    roles.push(p.role.clone());
                    role_index.insert(p.role.clone(), roles.len() - 1);
                    roles.len() - 1
                }
            };
            let scope = match &p.scope {
                Scope::Cluster => "cluster-wide".to_string(),
                Scope::Namespace(ns) => format!("in {ns}"),
            };
            let via = p
                .via_group
                .as_deref()
                .map(|g| format!(" via group {g}"))
                .unwrap_or_default();
            id_role
                .entry((ii, ri))
                .or_default()
                .insert(format!("{} ({scope}){via}", p.binding));
        }
    }
    let mut resources: Vec<String> = Vec::new();
    let mut res_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut all_res: BTreeSet<String> = BTreeSet::new();
    let mut role_res: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
    for (ri, role) in roles.iter().enumerate() {
        // Union of this role's rules as seen through the drawn identities.
        let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ident in &identities {
            for p in ident.permissions.iter().filter(|p| &p.role == role) {
                for k in resource_key(p) {
                    grants.entry(k).or_default().extend(p.verbs.iter().cloned());
                }
            }
        }
        // The dangerous grants first, then the rest by name.
        let mut ordered: Vec<(String, BTreeSet<String>)> = grants.into_iter().collect();
        ordered.sort_by_key(|(k, v)| (!dangerous(k, v), k.clone()));
        for (k, verbs) in ordered.into_iter() {
            all_res.insert(k.clone());
            let drawn_for_role = role_res.keys().filter(|(r, _)| *r == ri).count();
            if drawn_for_role >= GRAPH_RESOURCES_PER_ROLE {
                continue;
            }
            let xi = match res_index.get(&k) {
                Some(x) => *x,
                None => {
                    if resources.len() >= GRAPH_RESOURCES {
                        continue;
                    }
                    resources.push(k.clone());
                    res_index.insert(k.clone(), resources.len() - 1);
                    resources.len() - 1
                }
            };
            role_res.entry((ri, xi)).or_default().extend(verbs);
        }
    }
    GraphData {
        roles_left_out: all_roles.len().saturating_sub(roles.len()),
        resources_left_out: all_res.len().saturating_sub(resources.len()),
        identities,
        roles,
        resources,
        id_role,
        role_res,
    }
}

fn graph(o: &mut String, a: &Assessment) {
    let total = a.inventory.identities.len();
    o.push_str("<section id=\"graph\"><h2>Who can do what</h2>\n");
    if total == 0 {
        o.push_str("<p>No identities were found in the input.</p></section>\n");
        return;
    }
    let g = graph_data(a);
    let holding = a
        .inventory
        .identities
        .iter()
        .filter(|i| !i.permissions.is_empty())
        .count();
    if holding == 0 {
        let _ = writeln!(
            o,
            "<p>None of the {total} identities holds an RBAC permission.</p></section>"
        );
        return;
    }
    let row = 30usize;
    let top = 34usize;
    let rows = g.identities.len().max(g.roles.len()).max(g.resources.len());
    let height = top + rows * row + 10;
    let (x_id, w_id, x_role, w_role, x_res, w_res) =
        (10usize, 290usize, 390usize, 250usize, 720usize, 230usize);
    // Centre shorter columns against the tallest one.
    let off = |n: usize| (rows - n) * row / 2;
    let (o_id, o_role, o_res) = (
        off(g.identities.len()),
        off(g.roles.len()),
        off(g.resources.len()),
    );
    let cy = |offset: usize, i: usize| top + offset + i * row + 11;
    let _ = write!(
        o,
        "<p class=\"hint\">Identities, the roles bound to them and what those roles reach. Red: cluster-admin or a dangerous grant; orange: a path to more privilege. Click an identity to follow its edges.</p>\n\
         <div class=\"graph-wrap\"><svg id=\"identity-graph\" class=\"graph\" viewBox=\"0 0 960 {height}\" role=\"img\" aria-labelledby=\"graph-t\">\
         <title id=\"graph-t\">Identity to permission graph</title>\
         <text class=\"col-head\" x=\"{x_id}\" y=\"18\">Identity</text>\
         <text class=\"col-head\" x=\"{x_role}\" y=\"18\">Role (via binding)</text>\
         <text class=\"col-head\" x=\"{x_res}\" y=\"18\">Resource</text>"
    );
    for ((ii, ri), bindings) in &g.id_role {
        let (y1, y2) = (cy(o_id, *ii), cy(o_role, *ri));
        let (x1, x2) = (x_id + w_id, x_role);
        let admin = g.identities[*ii].cluster_admin;
        let mid = (x1 + x2) / 2;
        let title: Vec<String> = bindings.iter().cloned().collect();
        let _ = write!(
            o,
            "<path class=\"edge{}\" data-i=\"{ii}\" data-r=\"{ri}\" d=\"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}\"><title>{}</title></path>",
            if admin { " admin" } else { "" },
            esc(&title.join("\n"))
        );
    }
    for ((ri, xi), verbs) in &g.role_res {
        let (y1, y2) = (cy(o_role, *ri), cy(o_res, *xi));
        let (x1, x2) = (x_role + w_role, x_res);
        let mid = (x1 + x2) / 2;
        let bad = dangerous(&g.resources[*xi], verbs);
        let v: Vec<&str> = verbs.iter().map(String::as_str).collect();
        let _ = write!(
            o,
            "<path class=\"edge{}\" data-r2=\"{ri}\" data-x=\"{xi}\" d=\"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}\"><title>{}</title></path>",
            if bad { " danger" } else { "" },
            esc(&format!("{}: {}", g.resources[*xi], v.join(", ")))
        );
    }
    for (ii, ident) in g.identities.iter().enumerate() {
        let y = top + o_id + ii * row;
        let cls = if ident.cluster_admin {
            " admin"
        } else if !ident.escalation_paths.is_empty() {
            " esc"
        } else {
            ""
        };
        let mut tip = format!(
            "{}\ncategory: {}\n{} permissions",
            ident.id,
            serde_json::to_value(ident.category)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            ident.permissions.len()
        );
        if ident.cluster_admin {
            tip.push_str("\ncluster-admin");
        }
        for e in &ident.escalation_paths {
            tip.push_str("\nescalation: ");
            tip.push_str(e);
        }
        if !ident.secrets_readable.is_empty() {
            tip.push_str("\nreads secrets: ");
            tip.push_str(&ident.secrets_readable.join(", "));
        }
        let badge = if ident.cluster_admin {
            "★ "
        } else if !ident.escalation_paths.is_empty() {
            "⚠ "
        } else {
            ""
        };
        let _ = write!(
            o,
            "<g class=\"node ident{cls}\" data-i=\"{ii}\" tabindex=\"0\"><title>{}</title>\
             <rect x=\"{x_id}\" y=\"{y}\" width=\"{w_id}\" height=\"22\" rx=\"5\"/>\
             <text x=\"{}\" y=\"{}\">{}{}</text></g>",
            esc(&tip),
            x_id + 8,
            y + 15,
            badge,
            esc(&truncate(&ident.id, 40))
        );
    }
    for (ri, role) in g.roles.iter().enumerate() {
        let y = top + o_role + ri * row;
        let admin = role.ends_with("ClusterRole/cluster-admin");
        let _ = write!(
            o,
            "<g class=\"node role{}\" data-r=\"{ri}\"><title>{}</title><rect x=\"{x_role}\" y=\"{y}\" width=\"{w_role}\" height=\"22\" rx=\"5\"/>\
             <text x=\"{}\" y=\"{}\">{}</text></g>",
            if admin { " admin" } else { "" },
            esc(role),
            x_role + 8,
            y + 15,
            esc(&truncate(role, 34))
        );
    }
    for (xi, res) in g.resources.iter().enumerate() {
        let y = top + o_res + xi * row;
        let bad = g
            .role_res
            .iter()
            .any(|((_, x), v)| *x == xi && dangerous(res, v));
        let _ = write!(
            o,
            "<g class=\"node res{}\" data-x=\"{xi}\"><title>{}</title><rect x=\"{x_res}\" y=\"{y}\" width=\"{w_res}\" height=\"22\" rx=\"5\"/>\
             <text x=\"{}\" y=\"{}\">{}</text></g>",
            if bad { " danger" } else { "" },
            esc(res),
            x_res + 8,
            y + 15,
            esc(&truncate(res, 30))
        );
    }
    o.push_str("</svg></div>\n");
    let shown = g.identities.len();
    let mut note = format!(
        "Showing the {shown} riskiest of {holding} identities that hold permissions (ranked by cluster-admin, escalation paths, readable secrets and breadth of permissions; cluster components count for half)."
    );
    if holding > shown {
        let _ = write!(
            note,
            " {} identities are not drawn; the JSON and Markdown reports list them.",
            holding - shown
        );
    }
    if total > holding {
        let _ = write!(
            note,
            " {} more identities hold no RBAC permission.",
            total - holding
        );
    }
    if g.roles_left_out > 0 {
        let _ = write!(
            note,
            " {} roles of the drawn identities are not drawn.",
            g.roles_left_out
        );
    }
    if g.resources_left_out > 0 {
        let _ = write!(
            note,
            " {} resources are not drawn (at most {GRAPH_RESOURCES_PER_ROLE} per role, dangerous grants first).",
            g.resources_left_out
        );
    }
    let _ = writeln!(o, "<p class=\"note\" id=\"graph-note\">{}</p>", esc(&note));
    let admins: Vec<&Identity> = a
        .inventory
        .identities
        .iter()
        .filter(|i| i.cluster_admin)
        .collect();
    let escal: Vec<&Identity> = riskiest(a)
        .into_iter()
        .filter(|i| !i.escalation_paths.is_empty())
        .take(30)
        .collect();
    o.push_str("<div class=\"two-col\">");
    let _ = write!(
        o,
        "<div><h3>Cluster admins ({})</h3><ul class=\"admins\">",
        admins.len()
    );
    for i in admins.iter().take(50) {
        let _ = write!(o, "<li><code>{}</code></li>", esc(&i.id));
    }
    if admins.is_empty() {
        o.push_str("<li>None.</li>");
    } else if admins.len() > 50 {
        let _ = write!(o, "<li>and {} more</li>", admins.len() - 50);
    }
    o.push_str("</ul></div><div><h3>Escalation paths</h3><ul class=\"escalations\">");
    if escal.is_empty() {
        o.push_str("<li>None found.</li>");
    }
    for i in &escal {
        for p in &i.escalation_paths {
            let _ = write!(o, "<li><code>{}</code> {}</li>", esc(&i.id), esc(p));
        }
    }
    o.push_str("</ul></div></div></section>\n");
}

fn findings_table(o: &mut String, a: &Assessment) {
    let mut namespaces: BTreeSet<&str> = BTreeSet::new();
    for f in &a.findings {
        if let Some(ns) = &f.namespace {
            namespaces.insert(ns);
        }
    }
    let _ = write!(
        o,
        "<section id=\"findings\"><h2>Findings</h2>\n\
         <form class=\"filters\" id=\"filters\" autocomplete=\"off\">\
         <label>Severity <select id=\"f-severity\"><option value=\"\">all</option>"
    );
    for s in Severity::ALL {
        let _ = write!(o, "<option value=\"{0}\">{0}</option>", s.as_str());
    }
    o.push_str(
        "</select></label><label>Pillar <select id=\"f-pillar\"><option value=\"\">all</option>",
    );
    for p in Pillar::ALL {
        let _ = write!(
            o,
            "<option value=\"{}\">{}</option>",
            pillar_key(p),
            esc(p.title())
        );
    }
    o.push_str("</select></label><label>Namespace <select id=\"f-namespace\"><option value=\"\">all</option><option value=\"-\">(cluster-wide)</option>");
    for ns in &namespaces {
        let _ = write!(o, "<option value=\"{0}\">{0}</option>", esc(ns));
    }
    let _ = write!(
        o,
        "</select></label><label class=\"grow\">Search <input id=\"f-text\" type=\"search\" placeholder=\"rule, resource, evidence…\"></label>\
         <button type=\"reset\" id=\"f-reset\">Clear</button></form>\n\
         <p class=\"count\" id=\"finding-count\">{} findings</p>\n\
         <noscript><p class=\"note\" id=\"noscript-note\">The findings table and its filters need JavaScript. The summary, charts, graph, coverage and compliance on this page do not; the Markdown and JSON reports list every finding.</p></noscript>\n\
         <table class=\"findings\" id=\"findings-table\"><thead><tr><th>Severity</th><th>Pillar</th><th>Finding</th><th>Resource</th><th>Namespace</th><th></th></tr></thead><tbody></tbody></table>\n\
         <button id=\"more\" class=\"more\" hidden>Show more</button>",
        a.findings.len()
    );
    if a.findings.len() > HTML_FINDINGS_MAX {
        let _ = write!(
            o,
            "<p class=\"note\">This page holds the first {HTML_FINDINGS_MAX} of {} findings; the JSON report has all of them.</p>",
            a.findings.len()
        );
    }
    o.push_str("</section>\n");
}

fn data_stores(o: &mut String, a: &Assessment) {
    o.push_str("<section id=\"data-stores\"><h2>Data stores and who reaches them</h2>\n");
    if a.inventory.data_stores.is_empty() {
        o.push_str("<p>No data stores were recognised.</p></section>\n");
        return;
    }
    let open = a
        .inventory
        .data_stores
        .iter()
        .filter(|d| !d.isolated || d.reachable_from_outside)
        .count();
    let _ = writeln!(
        o,
        "<p class=\"hint\">{} data stores, {open} open to every pod or to the outside.</p>\
         <table class=\"stores\" id=\"stores-table\"><thead><tr><th>Data store</th><th>Engine</th><th>Ports</th><th>Isolated</th><th>From outside</th><th>Reachable from</th></tr></thead><tbody></tbody></table></section>",
        a.inventory.data_stores.len()
    );
}

fn compliance(o: &mut String, a: &Assessment) {
    o.push_str("<section id=\"compliance\"><h2>Compliance evidence</h2>\n");
    if a.compliance.is_empty() {
        o.push_str("<p>No controls were mapped.</p></section>\n");
        return;
    }
    for fw in [Framework::Iso27001, Framework::Soc2, Framework::Gdpr] {
        let controls: Vec<_> = a.compliance.iter().filter(|c| c.framework == fw).collect();
        if controls.is_empty() {
            continue;
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &controls {
            *counts.entry(status_label(c.status).0).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let _ = write!(
            o,
            "<h3>{} <small>{}</small></h3><table class=\"controls\" data-framework=\"{}\"><thead><tr><th>Control</th><th>Title</th><th>Status</th><th>Supporting</th><th>Contradicting findings</th></tr></thead><tbody>",
            esc(fw.title()),
            esc(&summary.join(" · ")),
            fw.key()
        );
        for c in controls {
            let (label, cls) = status_label(c.status);
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td><td><span class=\"status {cls}\">{label}</span></td><td><ul>",
                esc(&c.control),
                esc(&c.title)
            );
            for s in &c.supporting {
                let _ = write!(o, "<li>{}</li>", esc(s));
            }
            o.push_str("</ul></td><td><ul>");
            for id in c.contradicting.iter().take(10) {
                let _ = write!(o, "<li><code>{}</code></li>", esc(id));
            }
            if c.contradicting.len() > 10 {
                let _ = write!(o, "<li>and {} more</li>", c.contradicting.len() - 10);
            }
            o.push_str("</ul></td></tr>");
        }
        o.push_str("</tbody></table>\n");
    }
    o.push_str("</section>\n");
}

/// `'sha256-…'` source expression for a CSP directive: the page allows
/// exactly its own inline script and stylesheet by hash.
fn csp_hash(text: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_hash_is_the_base64_sha256_of_the_text() {
        // FIPS 180 vector for "abc", in base64.
        assert_eq!(
            csp_hash("abc"),
            "'sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0='"
        );
    }

    #[test]
    fn escapes_text_and_attributes() {
        assert_eq!(
            esc("</script><img src=x onerror='a'>&\""),
            "&lt;/script&gt;&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn script_json_cannot_close_its_element() {
        let v = json!({"name": "</script><!--<script>&"});
        let s = script_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(back, v);
    }

    #[test]
    fn assets_cannot_end_their_elements() {
        assert!(!JS.to_ascii_lowercase().contains("</script"));
        assert!(!CSS.to_ascii_lowercase().contains("</style"));
    }
}
