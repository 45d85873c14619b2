//! The reports and the diff over a realistic assessment built from the
//! model directly (five pillars, ~20 findings over every severity, pillar
//! and several namespaces, identities with permissions, data stores,
//! coverage gaps, compliance controls), including a resource whose name is
//! an attempt to break out of the page. The HTML report is loaded in a
//! real headless browser (Debian's chromium driven by playwright-core):
//! see `tests/browser/check-report.mjs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use keycard_assess::diff::{diff, parse_assessment, DiffFormat};
use keycard_assess::report::{render, Format, GRAPH_IDENTITIES};
use keycard_assess::*;
use keycard_core::Severity;
use serde_json::Value;

const HOSTILE: &str = "</script><img src=x onerror=\"window.__pwned=1\">";

fn perm(scope: Scope, verbs: &[&str], resources: &[&str], binding: &str, role: &str) -> Permission {
    Permission {
        scope,
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        api_groups: vec![String::new()],
        resources: resources.iter().map(|s| s.to_string()).collect(),
        resource_names: vec![],
        non_resource_urls: vec![],
        binding: binding.to_string(),
        role: role.to_string(),
        via_group: None,
    }
}

fn identity(
    subject: Subject,
    category: IdentityCategory,
    permissions: Vec<Permission>,
) -> Identity {
    let cluster_admin = permissions
        .iter()
        .any(|p| p.scope == Scope::Cluster && p.verbs == ["*"] && p.resources == ["*"]);
    Identity {
        id: subject.to_string(),
        subject,
        category,
        category_reason: None,
        exists: true,
        permissions,
        workloads: vec![],
        secrets_readable: vec![],
        cluster_admin,
        escalation_paths: vec![],
    }
}

#[allow(clippy::too_many_arguments)]
fn finding(
    rule: &str,
    title: &str,
    severity: Severity,
    pillar: Pillar,
    category: &str,
    resource: &str,
    namespace: Option<&str>,
    file: Option<(&str, usize)>,
) -> Finding {
    let mut controls = BTreeMap::new();
    controls.insert("iso27001".to_string(), vec!["A.8.20".to_string()]);
    Finding {
        id: Finding::make_id(rule, resource),
        rule: rule.to_string(),
        title: title.to_string(),
        severity,
        pillar,
        category: category.to_string(),
        resource: resource.to_string(),
        namespace: namespace.map(str::to_string),
        evidence: vec![
            format!("{resource}: {title}"),
            "second line of evidence".to_string(),
        ],
        remediation: format!("Fix {title}."),
        controls,
        file: file.map(|f| f.0.to_string()),
        line: file.map(|f| f.1),
    }
}

fn pillar(p: Pillar, stage: Stage, score: u8) -> PillarScore {
    PillarScore {
        pillar: p,
        stage,
        score,
        evidence: vec![
            Evidence {
                stage: Stage::Initial,
                criterion: format!("{} basics", p.title()),
                met: true,
                detail: "3 of 7 namespaces have a default-deny policy".to_string(),
            },
            Evidence {
                stage: Stage::Advanced,
                criterion: format!("{} least privilege", p.title()),
                met: false,
                detail: "4 workloads hold cluster-wide permissions".to_string(),
            },
        ],
        next_steps: vec![
            format!("Raise {} by doing the first thing", p.title()),
            "Then the second".to_string(),
        ],
        limited_by: if p == Pillar::Devices {
            vec!["no-node-data".to_string()]
        } else {
            vec![]
        },
        assessed: true,
    }
}

fn sample() -> Assessment {
    use Pillar::*;
    use Severity::*;
    let c = Scope::Cluster;
    let ns = |n: &str| Scope::Namespace(n.to_string());
    let mut admin = identity(
        Subject::group("system:masters"),
        IdentityCategory::Group,
        vec![perm(
            c.clone(),
            &["*"],
            &["*"],
            "ClusterRoleBinding/cluster-admin",
            "ClusterRole/cluster-admin",
        )],
    );
    admin.secrets_readable = vec!["*/*".to_string()];
    let mut ci = identity(
        Subject::service_account("ci", "github-runner"),
        IdentityCategory::Ci,
        vec![
            perm(
                c.clone(),
                &["*"],
                &["*"],
                "ClusterRoleBinding/ci-admin",
                "ClusterRole/cluster-admin",
            ),
            perm(
                ns("prod"),
                &["create", "update", "patch"],
                &["deployments"],
                "prod/RoleBinding/ci-deploy",
                "ClusterRole/edit",
            ),
        ],
    );
    ci.escalation_paths = vec!["can bind any ClusterRole".to_string()];
    let mut argo = identity(
        Subject::service_account("argocd", "argocd-application-controller"),
        IdentityCategory::Gitops,
        vec![
            perm(
                ns("prod"),
                &["get", "list", "watch"],
                &["secrets"],
                "prod/RoleBinding/argo",
                "ClusterRole/edit",
            ),
            perm(
                ns("prod"),
                &["create"],
                &["pods/exec"],
                "prod/RoleBinding/argo",
                "ClusterRole/edit",
            ),
        ],
    );
    argo.secrets_readable = vec!["prod/*".to_string()];
    argo.escalation_paths = vec!["can create pods in prod with any service account".to_string()];
    let mut web = identity(
        Subject::service_account("shop", "web"),
        IdentityCategory::Workload,
        vec![perm(
            ns("shop"),
            &["get"],
            &["configmaps"],
            "shop/RoleBinding/web",
            "shop/Role/web-config",
        )],
    );
    web.workloads = vec!["shop/Deployment/web".to_string()];
    let alice = identity(
        Subject::user("alice@example.com"),
        IdentityCategory::Human,
        vec![perm(
            ns("dev"),
            &["get", "list"],
            &["pods", "pods/log"],
            "dev/RoleBinding/devs",
            "ClusterRole/view",
        )],
    );
    let hostile = identity(
        Subject::service_account("shop", HOSTILE),
        IdentityCategory::Workload,
        vec![perm(
            ns("shop"),
            &["list"],
            &["secrets"],
            &format!("shop/RoleBinding/{HOSTILE}"),
            "shop/Role/reader",
        )],
    );
    let kcm = identity(
        Subject::user("system:kube-controller-manager"),
        IdentityCategory::System,
        vec![perm(
            c.clone(),
            &["get", "list", "watch"],
            &["*"],
            "ClusterRoleBinding/system:kcm",
            "ClusterRole/system:kcm",
        )],
    );
    let identities = vec![admin, ci, argo, web, alice, hostile, kcm];

    let findings = vec![
        finding(
            "zt-assess-cluster-admin",
            "Cluster-admin granted to a CI identity",
            Critical,
            Identity,
            "rbac",
            "ServiceAccount:ci/github-runner",
            Some("ci"),
            None,
        ),
        finding(
            "zt-assess-cluster-admin",
            "Cluster-admin granted to a group",
            Critical,
            Identity,
            "rbac",
            "Group:system:masters",
            None,
            None,
        ),
        finding(
            "zt-privileged",
            "Privileged container",
            Critical,
            ApplicationsAndWorkloads,
            "workload-privilege",
            "prod/Deployment/payments",
            Some("prod"),
            Some(("manifests/prod/payments.yaml", 12)),
        ),
        finding(
            "zt-assess-escalation",
            "Escalation path",
            High,
            Identity,
            "rbac",
            "ServiceAccount:argocd/argocd-application-controller",
            Some("argocd"),
            None,
        ),
        finding(
            "zt-assess-no-default-deny",
            "Namespace has no default-deny",
            High,
            Networks,
            "network",
            "Namespace/prod",
            Some("prod"),
            None,
        ),
        finding(
            "zt-assess-no-default-deny",
            "Namespace has no default-deny",
            High,
            Networks,
            "network",
            "Namespace/shop",
            Some("shop"),
            None,
        ),
        finding(
            "zt-assess-data-store-open",
            "Data store reachable from every pod",
            High,
            Data,
            "network",
            "prod/StatefulSet/postgres",
            Some("prod"),
            None,
        ),
        finding(
            "zt-assess-static-token",
            "Long-lived service-account token secret",
            High,
            Identity,
            "static-credentials",
            "prod/Secret/legacy-token",
            Some("prod"),
            None,
        ),
        finding(
            "zt-host-network",
            "Host network",
            High,
            Devices,
            "workload-privilege",
            "kube-system/DaemonSet/agent",
            Some("kube-system"),
            Some(("manifests/ks/agent.yaml", 3)),
        ),
        finding(
            "zt-assess-secret-in-env",
            "Credential in environment",
            Medium,
            Data,
            "static-credentials",
            "shop/Deployment/web",
            Some("shop"),
            None,
        ),
        finding(
            "zt-assess-public-exposure",
            "LoadBalancer service",
            Medium,
            Networks,
            "exposure",
            "shop/Service/web",
            Some("shop"),
            None,
        ),
        finding(
            "zt-assess-unused-token",
            "Automounted token nothing uses",
            Medium,
            ApplicationsAndWorkloads,
            "token",
            "shop/Deployment/web",
            Some("shop"),
            None,
        ),
        finding(
            "zt-assess-unused-token",
            "Automounted token nothing uses",
            Medium,
            ApplicationsAndWorkloads,
            "token",
            "dev/Deployment/api",
            Some("dev"),
            None,
        ),
        finding(
            "zt-assess-flat-network",
            "Flat east-west reach",
            Medium,
            Networks,
            "network",
            "dev/Deployment/api",
            Some("dev"),
            None,
        ),
        finding(
            "zt-assess-secret-reader",
            "Workload identity can read secrets",
            Medium,
            Identity,
            "rbac",
            &format!("shop/Deployment/{HOSTILE}"),
            Some("shop"),
            None,
        ),
        finding(
            "zt-assess-no-owner",
            "Workload without owner label",
            Low,
            ApplicationsAndWorkloads,
            "ownership",
            "shop/Deployment/web",
            Some("shop"),
            None,
        ),
        finding(
            "zt-assess-no-owner",
            "Workload without owner label",
            Low,
            ApplicationsAndWorkloads,
            "ownership",
            "dev/Deployment/api",
            Some("dev"),
            None,
        ),
        finding(
            "zt-assess-no-classification",
            "Data store without classification",
            Low,
            Data,
            "ownership",
            "prod/StatefulSet/postgres",
            Some("prod"),
            None,
        ),
        finding(
            "zt-assess-no-pss",
            "Namespace without pod-security label",
            Low,
            Devices,
            "workload-privilege",
            "Namespace/dev",
            Some("dev"),
            None,
        ),
        finding(
            "zt-assess-no-owner",
            "Workload without owner label",
            Low,
            ApplicationsAndWorkloads,
            "ownership",
            "prod/Deployment/payments",
            Some("prod"),
            None,
        ),
    ];

    let inventory = Inventory {
        identities,
        workloads: vec![],
        data_stores: vec![
            DataStore {
                workload: "prod/StatefulSet/postgres".to_string(),
                engine: "postgresql".to_string(),
                recognised_by: "image postgres:16".to_string(),
                ports: vec![5432],
                reachable_from: vec![
                    Reach {
                        workload: "prod/Deployment/payments".to_string(),
                        ports: "TCP 5432".to_string(),
                    },
                    Reach {
                        workload: "dev/Deployment/api".to_string(),
                        ports: "All Connections".to_string(),
                    },
                ],
                reachable_from_outside: false,
                isolated: false,
            },
            DataStore {
                workload: "shop/StatefulSet/redis".to_string(),
                engine: "redis".to_string(),
                recognised_by: "port 6379".to_string(),
                ports: vec![6379],
                reachable_from: vec![Reach {
                    workload: "shop/Deployment/web".to_string(),
                    ports: "TCP 6379".to_string(),
                }],
                reachable_from_outside: false,
                isolated: true,
            },
        ],
        namespaces: ["prod", "shop", "dev", "ci", "argocd", "kube-system"]
            .iter()
            .map(|n| NamespaceInfo {
                name: n.to_string(),
                exists: true,
                default_deny_ingress: *n == "ci",
                default_deny_egress: false,
                workloads: 2,
                pod_security: None,
            })
            .collect(),
    };
    let coverage = Coverage {
        seen: vec![
            "Deployment".into(),
            "RoleBinding".into(),
            "NetworkPolicy".into(),
        ],
        gaps: vec![
            Gap {
                id: "missing-kind:Node".to_string(),
                what: "No Node objects".to_string(),
                impact: "Device posture cannot be judged".to_string(),
                pillars: vec![Pillar::Devices],
            },
            Gap {
                id: "forbidden:secrets".to_string(),
                what: "Secrets could not be listed".to_string(),
                impact: "Static credentials may be missed".to_string(),
                pillars: vec![Pillar::Identity, Pillar::Data],
            },
        ],
        input_errors: vec![InputProblem {
            file: "dump/broken.yaml".to_string(),
            line: Some(7),
            message: "mapping values are not allowed here".to_string(),
        }],
        unknown_kinds: vec!["example.com/v1 Widget".to_string()],
    };
    let maturity = Maturity {
        pillars: vec![
            pillar(Pillar::Identity, Stage::Initial, 38),
            pillar(Pillar::Devices, Stage::Traditional, 12),
            pillar(Pillar::Networks, Stage::Initial, 45),
            pillar(Pillar::ApplicationsAndWorkloads, Stage::Advanced, 61),
            pillar(Pillar::Data, Stage::Traditional, 20),
        ],
        overall: Some(Stage::Traditional),
    };
    let compliance = vec![
        ControlEvidence {
            framework: Framework::Iso27001,
            control: "A.5.15".to_string(),
            title: "Access control".to_string(),
            status: ControlStatus::Partial,
            supporting: vec!["RBAC is enabled".to_string()],
            contradicting: vec![findings[0].id.clone()],
        },
        ControlEvidence {
            framework: Framework::Iso27001,
            control: "A.8.22".to_string(),
            title: "Segregation of networks".to_string(),
            status: ControlStatus::Contradicted,
            supporting: vec![],
            contradicting: vec![findings[4].id.clone(), findings[5].id.clone()],
        },
        ControlEvidence {
            framework: Framework::Soc2,
            control: "CC6.1".to_string(),
            title: "Logical access security".to_string(),
            status: ControlStatus::Supported,
            supporting: vec!["Every workload runs as its own identity".to_string()],
            contradicting: vec![],
        },
        ControlEvidence {
            framework: Framework::Gdpr,
            control: "Art. 32(1)(b)".to_string(),
            title: "Confidentiality of processing systems".to_string(),
            status: ControlStatus::NotAssessed,
            supporting: vec![],
            contradicting: vec![],
        },
    ];
    let summary = Summary::compute(&inventory, &findings);
    Assessment {
        schema: SCHEMA.to_string(),
        generated_at: "2026-11-22T10:00:00Z".to_string(),
        keycard_version: "0.1.0".to_string(),
        source: SourceInfo {
            kind: SourceKind::Dump,
            locations: vec!["cluster-dump.yaml".to_string()],
            objects: 1234,
            by_kind: BTreeMap::new(),
        },
        coverage,
        inventory,
        findings,
        maturity,
        compliance,
        summary,
    }
}

fn count(a: &Assessment, s: Severity) -> usize {
    a.findings.iter().filter(|f| f.severity == s).count()
}

// ---------------------------------------------------------------- HTML

#[test]
fn html_is_self_contained_and_escapes_hostile_names() {
    let a = sample();
    let html = render(&a, Format::Html);
    // The hostile name never appears raw, in markup or in the data.
    assert!(!html.contains(HOSTILE), "hostile name rendered unescaped");
    assert!(
        !html.contains("<img"),
        "an <img> element made it into the page"
    );
    // Exactly our two script elements are opened and closed.
    assert_eq!(html.matches("<script").count(), 2);
    assert_eq!(html.matches("</script>").count(), 2);
    // No request leaves the page: no external URL in any src/href.
    for attr in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(attr), "external reference {attr}");
    }
    let csp = html
        .split("http-equiv=\"Content-Security-Policy\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // The summary is there without JavaScript.
    assert!(html.contains("id=\"overall-stage\" class=\"stage-name\">Traditional<"));
    for p in &a.maturity.pillars {
        assert!(html.contains(&format!("data-score=\"{}\">{}<", p.score, p.score)));
    }
    assert!(html.contains("What this report could not see"));
    assert!(html.contains("Secrets could not be listed"));
    // The embedded data parses back to the findings, hostile name included.
    let json = html
        .split("<script type=\"application/json\" id=\"keycard-data\">")
        .nth(1)
        .and_then(|s| s.split("</script>").next())
        .unwrap();
    let v: Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), a.findings.len());
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["resource"].as_str().unwrap().contains(HOSTILE)));
}

#[test]
fn graph_is_bounded_and_says_what_it_left_out() {
    let mut a = sample();
    let template = a.inventory.identities[3].clone();
    for i in 0..2000 {
        let mut id = template.clone();
        id.subject = Subject::service_account("bulk", &format!("sa-{i}"));
        id.id = id.subject.to_string();
        id.permissions[0].role = format!("bulk/Role/r{i}");
        a.inventory.identities.push(id);
    }
    let html = render(&a, Format::Html);
    let drawn = html.matches("class=\"node ident").count();
    assert_eq!(drawn, GRAPH_IDENTITIES);
    let total = a.inventory.identities.len();
    assert!(html.contains(&format!(
        "Showing the {GRAPH_IDENTITIES} riskiest of {total} identities that hold permissions"
    )));
    assert!(html.contains(&format!(
        "{} identities are not drawn",
        total - GRAPH_IDENTITIES
    )));
    // The cluster-admins are among those drawn, marked.
    assert!(html.contains("class=\"node ident admin\""));
    assert!(html.len() < 200_000, "page grew to {} bytes", html.len());
}

// ---------------------------------------------------------------- SARIF

#[test]
fn sarif_is_structurally_valid() {
    let a = sample();
    let v: Value = serde_json::from_str(&render(&a, Format::Sarif)).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    let driver = &run["tool"]["driver"];
    assert!(driver["name"].is_string());
    let rules = driver["rules"].as_array().unwrap();
    let rule_ids: BTreeSet<&str> = a.findings.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules.len(), rule_ids.len());
    for r in rules {
        for k in ["id", "name"] {
            assert!(r[k].is_string(), "rule without {k}: {r}");
        }
        assert!(r["shortDescription"]["text"].is_string());
        assert!(r["help"]["text"].is_string());
        assert!(r["properties"]["pillar"].is_string());
        let sev: f64 = r["properties"]["security-severity"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.0..=10.0).contains(&sev));
        assert!(r["properties"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "zero-trust"));
    }
    // The rule's level is its worst finding's.
    let ca = rules
        .iter()
        .find(|r| r["id"] == "zt-assess-cluster-admin")
        .unwrap();
    assert_eq!(ca["defaultConfiguration"]["level"], "error");
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), a.findings.len());
    for (r, f) in results.iter().zip(&a.findings) {
        assert_eq!(r["ruleId"], f.rule.as_str());
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(
            rules[idx]["id"],
            f.rule.as_str(),
            "ruleIndex points at another rule"
        );
        let level = r["level"].as_str().unwrap();
        assert!(["error", "warning", "note"].contains(&level));
        assert_eq!(
            level,
            match f.severity {
                Severity::Critical | Severity::High => "error",
                Severity::Medium => "warning",
                Severity::Low => "note",
            }
        );
        assert!(r["message"]["text"].as_str().unwrap().contains(&f.resource));
        assert_eq!(
            r["partialFingerprints"]["keycardFindingId/v1"],
            f.id.as_str()
        );
        let loc = &r["locations"][0];
        match (&f.file, f.line) {
            (Some(file), Some(line)) => {
                assert_eq!(
                    loc["physicalLocation"]["artifactLocation"]["uri"],
                    file.as_str()
                );
                assert_eq!(loc["physicalLocation"]["region"]["startLine"], line);
            }
            _ => {
                assert!(loc.get("physicalLocation").is_none());
                assert_eq!(loc["logicalLocations"][0]["name"], f.resource.as_str());
            }
        }
    }
    // Coverage gaps are reported where the results are read.
    let notes = run["invocations"][0]["toolExecutionNotifications"]
        .as_array()
        .unwrap();
    assert_eq!(
        notes.len(),
        a.coverage.gaps.len() + a.coverage.input_errors.len()
    );
}

// -------------------------------------------------------- JSON, Markdown

#[test]
fn json_round_trips_through_the_diff_reader() {
    let a = sample();
    let text = render(&a, Format::Json);
    let back = parse_assessment(&text, "a.json").unwrap();
    assert_eq!(back.findings.len(), a.findings.len());
    assert!(diff(&a, &back).is_empty());
    let wrong = text.replace(SCHEMA, "keycard.dev/assessment/v0");
    let err = parse_assessment(&wrong, "old.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("old.json") && err.contains("v0"), "{err}");
    assert!(parse_assessment("{", "x.json")
        .unwrap_err()
        .to_string()
        .contains("x.json"));
}

#[test]
fn markdown_has_every_section_and_escapes_names() {
    let a = sample();
    let md = render(&a, Format::Markdown);
    for h in [
        "## What this report could not see",
        "## Maturity",
        "### Applications and Workloads",
        "## Findings",
        "## Identities",
        "## Data stores",
        "## Compliance evidence",
        "### ISO/IEC 27001:2022 Annex A",
    ] {
        assert!(md.contains(h), "missing {h}");
    }
    assert!(
        !md.contains("<img"),
        "markup from a name reached the Markdown"
    );
    assert!(md.contains("&lt;/script&gt;&lt;img"));
    // One table row per finding.
    let rows = md.lines().filter(|l| l.contains("| Fix ")).count();
    assert_eq!(rows, a.findings.len());
}

// ----------------------------------------------------------------- diff

#[test]
fn diff_reports_exact_changes() {
    let old = sample();
    let mut new = sample();
    // Resolve two findings, add one, raise one's severity.
    let resolved: BTreeSet<String> =
        [old.findings[4].id.clone(), old.findings[10].id.clone()].into();
    new.findings.retain(|f| !resolved.contains(&f.id));
    let added = finding(
        "zt-assess-new",
        "Something new",
        Severity::High,
        Pillar::Networks,
        "network",
        "prod/Service/new",
        Some("prod"),
        None,
    );
    new.findings.push(added.clone());
    let raised = new
        .findings
        .iter_mut()
        .find(|f| f.severity == Severity::Low)
        .unwrap();
    raised.severity = Severity::Medium;
    let raised_id = raised.id.clone();
    // A pillar falls, a cluster-admin appears, an identity leaves, a gap
    // closes and opens, a control worsens.
    new.maturity.pillars[2].stage = Stage::Traditional;
    new.maturity.pillars[2].score = 20;
    new.inventory.identities[3].cluster_admin = true;
    let gone = new.inventory.identities.remove(4).id;
    new.coverage.gaps.remove(0);
    new.coverage.gaps.push(Gap {
        id: "unreachable-api".into(),
        what: "API".into(),
        impact: "x".into(),
        pillars: vec![],
    });
    new.compliance[2].status = ControlStatus::Partial;

    let d = diff(&old, &new);
    let ids = |v: &[keycard_assess::diff::FindingRef]| -> BTreeSet<String> {
        v.iter().map(|f| f.id.clone()).collect()
    };
    assert_eq!(ids(&d.new_findings), [added.id.clone()].into());
    assert_eq!(ids(&d.resolved_findings), resolved);
    assert_eq!(d.severity_changes.len(), 1);
    assert_eq!(d.severity_changes[0].id, raised_id);
    let net = d
        .pillars
        .iter()
        .find(|p| p.pillar == Pillar::Networks)
        .unwrap();
    assert!(net.regressed());
    assert_eq!(d.pillars.iter().filter(|p| p.changed()).count(), 1);
    assert_eq!(
        d.cluster_admins_added,
        vec!["ServiceAccount:shop/web".to_string()]
    );
    assert_eq!(d.identities_removed, vec![gone]);
    assert!(d.identities_added.is_empty());
    assert_eq!(d.gaps_closed.len(), 1);
    assert_eq!(d.gaps_opened[0].id, "unreachable-api");
    assert_eq!(d.compliance_changes.len(), 1);
    assert!(d.compliance_changes[0].worsened());
    assert!(d.regressed());
    assert_eq!(d.exit_code(Severity::Low), 1);

    let text = d.render(DiffFormat::Text);
    assert!(text.contains("+ [high] Something new"), "{text}");
    assert!(text.contains("REGRESSED"), "{text}");
    let md = d.render(DiffFormat::Markdown);
    assert!(
        md.contains("## New findings (1)") && md.contains("## Resolved findings (2)"),
        "{md}"
    );
    let j: Value = serde_json::from_str(&d.render(DiffFormat::Json)).unwrap();
    assert_eq!(j["resolved_findings"].as_array().unwrap().len(), 2);
    assert!(!j["regressions"].as_array().unwrap().is_empty());

    // The reverse direction: only improvements, findings swap sides.
    let back = diff(&new, &old);
    assert_eq!(ids(&back.new_findings), resolved);
    assert_eq!(ids(&back.resolved_findings), [added.id].into());
    assert_eq!(
        back.cluster_admins_removed,
        vec!["ServiceAccount:shop/web".to_string()]
    );
    // A severity drop is not a regression, but the reopened gap (less
    // seen) and the reappearing findings are.
    assert!(back.regressed());
    // Improvement only: resolve a finding and raise a stage.
    let mut better = old.clone();
    better.findings.remove(0);
    better.maturity.pillars[0].score = 60;
    better.maturity.pillars[0].stage = Stage::Advanced;
    let up = diff(&old, &better);
    assert!(!up.regressed(), "{:?}", up.regressions(Severity::Low));
    assert_eq!(up.exit_code(Severity::Low), 0);
    assert!(diff(&old, &old).is_empty());
    assert!(diff(&old, &old).to_text().contains("no changes"));
}

#[test]
fn diff_threshold_ignores_low_findings() {
    let old = sample();
    let mut new = sample();
    new.findings.push(finding(
        "zt-low",
        "Low thing",
        Severity::Low,
        Pillar::Data,
        "ownership",
        "dev/Deployment/x",
        Some("dev"),
        None,
    ));
    let d = diff(&old, &new);
    assert_eq!(d.exit_code(Severity::Low), 1);
    assert_eq!(d.exit_code(Severity::Medium), 0);
}

// -------------------------------------------------------------- browser

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Node's module directory and chromium, from scripts/test's environment
/// (`KEYCARD_TEST_NODE_PATH`, `KEYCARD_TEST_CHROMIUM`) or the places it
/// installs them to.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let node_path = std::env::var_os("KEYCARD_TEST_NODE_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/node/node_modules"));
    let chromium = std::env::var_os("KEYCARD_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let have_node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (have_node && node_path.join("playwright-core").is_dir() && chromium.exists())
        .then_some((node_path, chromium))
}

/// Load `html` in headless chromium through `tests/browser/check-report.mjs`
/// and return what it saw; `None` (with a loud message) when the tools are
/// missing outside CI.
fn check_in_browser(html: &str, name: &str) -> Option<Value> {
    let Some((node_path, chromium)) = browser_tools() else {
        let msg = "node, playwright-core (KEYCARD_TEST_NODE_PATH) or chromium (KEYCARD_TEST_CHROMIUM) missing: run scripts/test to install them";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n\n!!! SKIPPED the browser check of {name}: {msg} !!!\n");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.html"));
    std::fs::write(&file, html).unwrap();
    // KEYCARD_KEEP_REPORT=dir keeps the pages for a look.
    if let Some(keep) = std::env::var_os("KEYCARD_KEEP_REPORT") {
        std::fs::copy(&file, Path::new(&keep).join(format!("{name}.html"))).unwrap();
    }
    let script = repo_root().join("crates/keycard-assess/tests/browser/check-report.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(&file)
        .env("KEYCARD_TEST_NODE_PATH", &node_path)
        .env("KEYCARD_TEST_CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser check failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let r: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    eprintln!("browser saw ({name}): {r}");
    Some(r)
}

#[test]
fn html_report_works_in_a_real_browser() {
    let a = sample();
    let Some(r) = check_in_browser(&render(&a, Format::Html), "sample") else {
        return;
    };
    assert_eq!(r["consoleErrors"], serde_json::json!([]), "{r}");
    assert_eq!(r["pageErrors"], serde_json::json!([]), "{r}");
    assert_eq!(r["overall"], "Traditional");
    for p in &a.maturity.pillars {
        let key = serde_json::to_value(p.pillar).unwrap();
        let seen = &r["pillars"][key.as_str().unwrap()];
        assert_eq!(seen["score"], p.score.to_string(), "{r}");
        assert_eq!(
            seen["stage"].as_str().unwrap().to_lowercase(),
            p.stage.title().to_lowercase()
        );
        assert_eq!(seen["visible"], true);
    }
    assert_eq!(r["rows"], a.findings.len(), "{r}");
    for s in Severity::ALL {
        assert_eq!(
            r["bySeverity"][s.as_str()],
            count(&a, s),
            "severity filter {s}: {r}"
        );
    }
    assert_eq!(r["afterReset"], a.findings.len());
    // Free text finds the hostile name, shown as text, never run.
    assert_eq!(r["hostileRows"], 1, "{r}");
    assert_eq!(r["hostileTextShown"], true, "{r}");
    assert_eq!(r["pwned"], false);
    assert_eq!(r["imgElements"], 0);
    assert_eq!(r["detailsOpened"], true, "{r}");
    assert_eq!(
        r["graphNodes"],
        a.inventory.identities.len().min(GRAPH_IDENTITIES)
    );
    assert_eq!(r["graphFocus"], true, "{r}");
    assert_eq!(r["storeRows"], a.inventory.data_stores.len());
    assert_eq!(r["chartFilterRows"], count(&a, Severity::Critical));
    assert_eq!(
        r["requests"],
        serde_json::json!([]),
        "the page made requests: {r}"
    );
    // With JavaScript off, the summary still reads.
    assert_eq!(r["noJs"]["overall"], "Traditional");
    assert_eq!(r["noJs"]["pillarScores"], a.maturity.pillars.len());
    assert_eq!(r["noJs"]["noscriptNote"], true, "{r}");
}

/// The real pipeline over one of the conformance applications: every
/// format renders, and the page loads clean in the browser, whatever the
/// stages find.
#[test]
fn real_assessment_renders_in_every_format_and_loads_clean() {
    let dir = repo_root().join("../shared/conformance/netpol-analyzer/tests/acs-security-demos");
    let input = Input::load(&[&dir], &keycard_k8s::LoadOptions::default());
    let options = Options {
        now: 1_790_000_000,
        ..Options::default()
    };
    let a = assess(&input, &options);
    let back = parse_assessment(&render(&a, Format::Json), "real.json").unwrap();
    assert!(diff(&a, &back).is_empty());
    let sarif: Value = serde_json::from_str(&render(&a, Format::Sarif)).unwrap();
    assert_eq!(
        sarif["runs"][0]["results"].as_array().unwrap().len(),
        a.findings.len()
    );
    assert!(render(&a, Format::Markdown).contains("## Findings"));
    let Some(r) = check_in_browser(&render(&a, Format::Html), "acs-security-demos") else {
        return;
    };
    assert_eq!(r["consoleErrors"], serde_json::json!([]), "{r}");
    assert_eq!(r["pageErrors"], serde_json::json!([]), "{r}");
    assert_eq!(r["requests"], serde_json::json!([]), "{r}");
    assert_eq!(r["rows"], a.findings.len().min(250), "{r}");
    assert_eq!(r["storeRows"], a.inventory.data_stores.len(), "{r}");
    assert_eq!(
        r["overall"],
        a.maturity
            .overall
            .map(|s| s.title())
            .unwrap_or("Not assessed")
    );
}

/// Ten thousand identities do not make a large page: the graph is bounded
/// and the inventory is not embedded.
#[test]
fn html_size_does_not_grow_with_identities() {
    let mut a = sample();
    let small = render(&a, Format::Html).len();
    let template = a.inventory.identities[2].clone();
    for i in 0..10_000 {
        let mut id = template.clone();
        id.subject = Subject::service_account(&format!("ns{}", i % 300), &format!("sa-{i}"));
        id.id = id.subject.to_string();
        a.inventory.identities.push(id);
    }
    let t = std::time::Instant::now();
    let big = render(&a, Format::Html).len();
    let took = t.elapsed();
    assert!(big < small + 20_000, "{small} -> {big} bytes");
    assert!(took.as_secs() < 5, "rendering took {took:?}");
}
