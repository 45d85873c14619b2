//! Controls of ISO 27001:2022 Annex A, SOC 2 (CC6, CC7) and GDPR (Art. 25,
//! Art. 32) with the evidence for and against each.
//!
//! An auditor wants two things per control: what in the system shows the
//! control operating, and what shows it failing. Here the first comes from
//! the maturity criteria that were met (each criterion supports the
//! controls listed in [`SUPPORTS`], and its statement is what was seen), the
//! second from the findings: by rule id and category ([`RULE_CONTROLS`],
//! [`CATEGORY_CONTROLS`]) and by the controls each finding's rule declares
//! itself (`controls:` in a policy pack's metadata).
//!
//! A criterion of a pillar that a coverage gap limits supports nothing: the
//! input did not show enough to rest a control on it. A control that keeps
//! neither support nor contradiction is `NotAssessed`; findings remain
//! evidence whatever the coverage, since what was seen was seen.
//!
//! Titles are keycard's own short summaries, not the standards' text.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::maturity::{rule_has, Criterion};
use crate::model::{
    ControlEvidence, ControlStatus, Finding, Framework, Inventory, Maturity, Pillar,
};
use crate::Context;

use Framework::{Gdpr, Iso27001 as Iso, Soc2};

/// The catalogue: framework, control id, keycard's short title.
pub const CATALOGUE: &[(Framework, &str, &str)] = &[
    (Iso, "A.5.9", "Assets and their owners are known and listed"),
    (
        Iso,
        "A.5.12",
        "Information is sorted by how much protection it needs",
    ),
    (
        Iso,
        "A.5.13",
        "That classification is marked on what carries the data",
    ),
    (
        Iso,
        "A.5.15",
        "Access follows rules set by business and security need",
    ),
    (
        Iso,
        "A.5.16",
        "Every identity is distinct and managed over its life",
    ),
    (
        Iso,
        "A.5.17",
        "Secrets and credentials are issued and kept safely",
    ),
    (
        Iso,
        "A.5.18",
        "Access rights are granted, reviewed and withdrawn on purpose",
    ),
    (
        Iso,
        "A.5.21",
        "Software from suppliers comes from trusted sources",
    ),
    (
        Iso,
        "A.8.2",
        "Privileged access is kept narrow and under control",
    ),
    (
        Iso,
        "A.8.3",
        "Only those who need information can get to it",
    ),
    (
        Iso,
        "A.8.5",
        "Callers prove who they are with strong mechanisms",
    ),
    (
        Iso,
        "A.8.9",
        "Secure configurations are set, enforced and kept",
    ),
    (
        Iso,
        "A.8.12",
        "Routes by which sensitive data could leak are closed",
    ),
    (Iso, "A.8.15", "Security-relevant decisions are recorded"),
    (
        Iso,
        "A.8.16",
        "Systems and traffic are watched for abnormal behaviour",
    ),
    (
        Iso,
        "A.8.19",
        "Only approved software runs on production systems",
    ),
    (
        Iso,
        "A.8.20",
        "Networks and their devices are secured and managed",
    ),
    (
        Iso,
        "A.8.21",
        "Network services are secured and their use is controlled",
    ),
    (
        Iso,
        "A.8.22",
        "Services are separated into network segments",
    ),
    (
        Iso,
        "A.8.24",
        "Cryptography protects data, with managed keys",
    ),
    (
        Iso,
        "A.8.26",
        "Security requirements are set for applications and enforced",
    ),
    (
        Iso,
        "A.8.32",
        "Changes to systems go through a controlled process",
    ),
    (
        Soc2,
        "CC6.1",
        "Logical access to assets is restricted by software and design",
    ),
    (
        Soc2,
        "CC6.2",
        "Identities are registered and authorised before they get access",
    ),
    (
        Soc2,
        "CC6.3",
        "Access is role-based and least-privilege, and is changed deliberately",
    ),
    (
        Soc2,
        "CC6.6",
        "Access from outside the system boundary is restricted",
    ),
    (
        Soc2,
        "CC6.7",
        "Data moving between systems is limited and protected",
    ),
    (
        Soc2,
        "CC6.8",
        "Unauthorised or malicious software is kept out",
    ),
    (
        Soc2,
        "CC7.1",
        "Configurations are checked for weaknesses continuously",
    ),
    (
        Soc2,
        "CC7.2",
        "Components are monitored for signs of attack or failure",
    ),
    (
        Gdpr,
        "Art. 25(1)",
        "Data protection is built into how processing is designed",
    ),
    (
        Gdpr,
        "Art. 25(2)",
        "By default, only the personal data needed is reachable",
    ),
    (
        Gdpr,
        "Art. 32(1)(a)",
        "Personal data is encrypted where appropriate",
    ),
    (
        Gdpr,
        "Art. 32(1)(b)",
        "Processing systems stay confidential and intact",
    ),
    (
        Gdpr,
        "Art. 32(1)(d)",
        "Security measures are tested and evaluated regularly",
    ),
    (
        Gdpr,
        "Art. 32(2)",
        "Security is sized to the risk of unauthorised access to data",
    ),
];

/// A list of controls, each as framework and id.
pub type Controls = &'static [(Framework, &'static str)];

/// Which controls a met maturity criterion supports.
pub const SUPPORTS: &[(Criterion, Controls)] = {
    use Criterion::*;
    &[
        (IdRbacVisible, &[(Iso, "A.5.15"), (Soc2, "CC6.1")]),
        (
            IdNoClusterAdmin,
            &[
                (Iso, "A.8.2"),
                (Iso, "A.5.15"),
                (Soc2, "CC6.3"),
                (Gdpr, "Art. 25(2)"),
            ],
        ),
        (
            IdNoEscalation,
            &[(Iso, "A.8.2"), (Iso, "A.5.18"), (Soc2, "CC6.3")],
        ),
        (
            IdNoTokenSecrets,
            &[(Iso, "A.5.17"), (Iso, "A.8.5"), (Soc2, "CC6.1")],
        ),
        (IdDedicatedAccounts, &[(Iso, "A.5.16"), (Soc2, "CC6.2")]),
        (
            IdTokensOnlyWhereUsed,
            &[(Iso, "A.5.17"), (Soc2, "CC6.1"), (Gdpr, "Art. 25(2)")],
        ),
        (
            IdShortLived,
            &[
                (Iso, "A.5.16"),
                (Iso, "A.5.17"),
                (Iso, "A.8.5"),
                (Soc2, "CC6.1"),
            ],
        ),
        (
            IdNoWildcards,
            &[
                (Iso, "A.5.15"),
                (Iso, "A.5.18"),
                (Iso, "A.8.2"),
                (Soc2, "CC6.3"),
            ],
        ),
        (
            DevNoPrivileged,
            &[(Iso, "A.8.2"), (Iso, "A.8.9"), (Soc2, "CC6.8")],
        ),
        (DevNoHostNamespaces, &[(Iso, "A.8.9"), (Soc2, "CC6.8")]),
        (DevNodesInventoried, &[(Iso, "A.5.9")]),
        (DevNoHostPath, &[(Iso, "A.8.9")]),
        (DevVersionsConsistent, &[(Iso, "A.8.9"), (Soc2, "CC7.1")]),
        (DevNodeAttestation, &[(Iso, "A.8.5"), (Soc2, "CC6.8")]),
        (DevHostBoundaryAgentsOnly, &[(Iso, "A.8.2"), (Iso, "A.8.9")]),
        (
            NetAllDefaultDenyIngress,
            &[
                (Iso, "A.8.20"),
                (Iso, "A.8.22"),
                (Soc2, "CC6.6"),
                (Gdpr, "Art. 25(2)"),
                (Gdpr, "Art. 32(1)(b)"),
            ],
        ),
        (
            NetAllDefaultDenyEgress,
            &[(Iso, "A.8.20"), (Iso, "A.8.12"), (Soc2, "CC6.7")],
        ),
        (
            NetDataStoresNamedOnly,
            &[
                (Iso, "A.8.3"),
                (Iso, "A.8.22"),
                (Soc2, "CC6.1"),
                (Gdpr, "Art. 25(2)"),
                (Gdpr, "Art. 32(2)"),
            ],
        ),
        (
            NetNoDirectExposure,
            &[(Iso, "A.8.20"), (Iso, "A.8.21"), (Soc2, "CC6.6")],
        ),
        (
            NetIdentityAware,
            &[
                (Iso, "A.8.5"),
                (Iso, "A.8.20"),
                (Iso, "A.8.21"),
                (Iso, "A.8.24"),
                (Soc2, "CC6.1"),
                (Soc2, "CC6.7"),
                (Gdpr, "Art. 32(1)(a)"),
                (Gdpr, "Art. 32(1)(b)"),
            ],
        ),
        (NetLeastPrivilege, &[(Iso, "A.8.22"), (Soc2, "CC6.6")]),
        (
            AppNoHostBreakout,
            &[
                (Iso, "A.8.2"),
                (Iso, "A.8.9"),
                (Soc2, "CC6.8"),
                (Gdpr, "Art. 32(1)(b)"),
            ],
        ),
        (
            AppPodSecurityEverywhere,
            &[
                (Iso, "A.8.9"),
                (Iso, "A.8.26"),
                (Soc2, "CC7.1"),
                (Gdpr, "Art. 25(1)"),
            ],
        ),
        (
            AppImagesPinned,
            &[(Iso, "A.8.19"), (Iso, "A.8.32"), (Soc2, "CC6.8")],
        ),
        (
            AppAdmissionController,
            &[
                (Iso, "A.8.19"),
                (Iso, "A.8.26"),
                (Iso, "A.8.32"),
                (Soc2, "CC6.8"),
                (Soc2, "CC7.1"),
                (Gdpr, "Art. 25(1)"),
                (Gdpr, "Art. 32(1)(d)"),
            ],
        ),
        (AppOwners, &[(Iso, "A.5.9")]),
        (
            AppPodSecurityRestricted,
            &[(Iso, "A.8.9"), (Iso, "A.8.26"), (Gdpr, "Art. 25(1)")],
        ),
        (AppHardenedContainers, &[(Iso, "A.8.9"), (Soc2, "CC6.8")]),
        (
            DataNoCredentialLiterals,
            &[
                (Iso, "A.5.17"),
                (Iso, "A.8.12"),
                (Soc2, "CC6.1"),
                (Gdpr, "Art. 32(1)(b)"),
            ],
        ),
        (
            DataNoSecretWildcard,
            &[
                (Iso, "A.8.3"),
                (Soc2, "CC6.3"),
                (Gdpr, "Art. 25(2)"),
                (Gdpr, "Art. 32(2)"),
            ],
        ),
        (
            DataClassified,
            &[(Iso, "A.5.12"), (Iso, "A.5.13"), (Gdpr, "Art. 25(1)")],
        ),
        (
            DataStoresNotPublic,
            &[
                (Iso, "A.8.3"),
                (Iso, "A.8.12"),
                (Soc2, "CC6.6"),
                (Gdpr, "Art. 32(1)(b)"),
            ],
        ),
        (
            DataSecretsScoped,
            &[
                (Iso, "A.8.3"),
                (Iso, "A.5.15"),
                (Soc2, "CC6.3"),
                (Gdpr, "Art. 25(2)"),
            ],
        ),
        (DataSecretsAsFiles, &[(Iso, "A.5.17"), (Iso, "A.8.12")]),
        (
            DataEncryptionAtRest,
            &[(Iso, "A.8.24"), (Gdpr, "Art. 32(1)(a)")],
        ),
        (
            DataStoresIdentityAware,
            &[
                (Iso, "A.8.3"),
                (Iso, "A.8.24"),
                (Soc2, "CC6.7"),
                (Gdpr, "Art. 32(2)"),
            ],
        ),
    ]
};

/// Finding rule ids (matched as substrings, lower case) and the controls a
/// finding of that rule contradicts. Rule ids come from the zero-trust pack
/// (`zt-privileged`) and from the assessment's own rules; substrings keep
/// the mapping working through renames and prefixes.
pub const RULE_CONTROLS: &[(&[&str], Controls)] = &[
    (
        &["cluster-admin", "cluster_admin"],
        &[
            (Iso, "A.5.15"),
            (Iso, "A.5.18"),
            (Iso, "A.8.2"),
            (Soc2, "CC6.1"),
            (Soc2, "CC6.3"),
            (Gdpr, "Art. 25(2)"),
        ],
    ),
    (
        &["rbac-escalat", "escalation-path", "impersonat"],
        &[(Iso, "A.5.18"), (Iso, "A.8.2"), (Soc2, "CC6.3")],
    ),
    (
        &["wildcard"],
        &[(Iso, "A.5.15"), (Iso, "A.8.2"), (Soc2, "CC6.3")],
    ),
    (
        &[
            "secret-read",
            "read-secret",
            "secrets-read",
            "can-read-secret",
        ],
        &[
            (Iso, "A.8.3"),
            (Soc2, "CC6.3"),
            (Gdpr, "Art. 25(2)"),
            (Gdpr, "Art. 32(2)"),
        ],
    ),
    (
        &["default-deny", "no-network-polic"],
        &[
            (Iso, "A.8.20"),
            (Iso, "A.8.22"),
            (Soc2, "CC6.6"),
            (Gdpr, "Art. 32(1)(b)"),
        ],
    ),
    (&["egress"], &[(Iso, "A.8.12"), (Soc2, "CC6.7")]),
    (
        &["flat", "east-west", "allow-all"],
        &[(Iso, "A.8.22"), (Soc2, "CC6.6")],
    ),
    (
        &["data-store", "datastore", "database"],
        &[
            (Iso, "A.8.3"),
            (Iso, "A.8.22"),
            (Gdpr, "Art. 25(2)"),
            (Gdpr, "Art. 32(2)"),
        ],
    ),
    (
        &[
            "privileged",
            "host-namespace",
            "host-network",
            "host-pid",
            "host-ipc",
            "host-path",
        ],
        &[
            (Iso, "A.8.2"),
            (Iso, "A.8.9"),
            (Soc2, "CC6.8"),
            (Gdpr, "Art. 32(1)(b)"),
        ],
    ),
    (
        &["privilege-escalation", "read-only-root"],
        &[(Iso, "A.8.9"), (Soc2, "CC6.8")],
    ),
    (
        &["image-digest", "latest-tag", "registr"],
        &[(Iso, "A.8.19"), (Iso, "A.8.32"), (Soc2, "CC6.8")],
    ),
    (
        &["token-secret", "long-lived-token", "legacy-token"],
        &[(Iso, "A.5.17"), (Iso, "A.8.5"), (Soc2, "CC6.1")],
    ),
    (
        &["automount", "unused-token"],
        &[(Iso, "A.5.17"), (Soc2, "CC6.1"), (Gdpr, "Art. 25(2)")],
    ),
    (
        &["default-service-account", "default-sa"],
        &[(Iso, "A.5.16"), (Soc2, "CC6.2")],
    ),
    (
        &[
            "env-secret",
            "secret-literal",
            "configmap",
            "config-map",
            "credential",
            "plaintext",
        ],
        &[
            (Iso, "A.5.17"),
            (Iso, "A.8.12"),
            (Soc2, "CC6.1"),
            (Gdpr, "Art. 32(1)(b)"),
        ],
    ),
    (
        &["exposure", "public", "nodeport", "loadbalancer"],
        &[(Iso, "A.8.20"), (Soc2, "CC6.6")],
    ),
    (&["owner", "required-labels"], &[(Iso, "A.5.9")]),
    (
        &["classification", "required-labels"],
        &[(Iso, "A.5.12"), (Iso, "A.5.13"), (Gdpr, "Art. 25(1)")],
    ),
    (
        &["pod-security", "psa"],
        &[(Iso, "A.8.9"), (Iso, "A.8.26"), (Soc2, "CC7.1")],
    ),
];

/// Finding categories and the controls every finding of the category
/// contradicts, whatever its rule.
pub const CATEGORY_CONTROLS: &[(&str, Controls)] = &[
    ("network", &[(Iso, "A.8.22"), (Soc2, "CC6.6")]),
    ("static-credentials", &[(Iso, "A.5.17"), (Soc2, "CC6.1")]),
    ("workload-privilege", &[(Iso, "A.8.9"), (Soc2, "CC6.8")]),
    ("rbac", &[(Iso, "A.8.2"), (Soc2, "CC6.3")]),
    ("exposure", &[(Iso, "A.8.20"), (Soc2, "CC6.6")]),
    ("ownership", &[(Iso, "A.5.9")]),
    ("token", &[(Iso, "A.5.17"), (Soc2, "CC6.1")]),
];

/// A control id in one spelling: `A.8.2`, `CC6.3`, `Art. 32(1)(b)`.
fn normalise(framework: Framework, id: &str) -> String {
    let compact: String = id.chars().filter(|c| !c.is_whitespace()).collect();
    match framework {
        Framework::Gdpr => {
            let lower = compact.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("article")
                .or_else(|| lower.strip_prefix("art."))
                .or_else(|| lower.strip_prefix("art"))
                .unwrap_or(&lower);
            format!("Art. {rest}")
        }
        Framework::Iso27001 => {
            let upper = compact.to_ascii_uppercase();
            if upper.starts_with("A.") {
                upper
            } else {
                format!("A.{upper}")
            }
        }
        Framework::Soc2 => compact.to_ascii_uppercase(),
    }
}

/// Sort key that orders `A.5.9` before `A.5.15`.
fn natural_key(s: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u64::from(d)),
            );
        } else {
            if let Some(n) = num.take() {
                out.push((n, std::mem::take(&mut text)));
            }
            text.push(c);
        }
    }
    out.push((num.unwrap_or(0), text));
    out
}

#[derive(Default)]
struct Entry {
    title: String,
    supporting: Vec<String>,
    contradicting: BTreeSet<String>,
}

/// Objects whose pods run a keycard enforcement point that writes the
/// decision log (`--audit-log`). One pass over the objects with no
/// ownership resolution: objects owned by another object in the chain
/// (a Deployment's ReplicaSets and Pods) are skipped when their top is
/// named too, which is the common case, and listed otherwise.
fn decision_log_writers(ctx: &Context<'_>) -> BTreeSet<String> {
    let mut top = BTreeSet::new();
    let mut owned = BTreeSet::new();
    for o in ctx.objects {
        let Some(t) = o.pod_template() else {
            continue;
        };
        let logs = ["containers", "initContainers"]
            .iter()
            .filter_map(|k| t.spec.get(k).and_then(Value::as_array))
            .flatten()
            .any(|c| {
                let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                (image.contains("keycard") || name.contains("keycard"))
                    && ["args", "command"]
                        .iter()
                        .filter_map(|k| c.get(k).and_then(Value::as_array))
                        .flatten()
                        .filter_map(Value::as_str)
                        .any(|a| a == "--audit-log" || a.starts_with("--audit-log="))
            });
        if !logs {
            continue;
        }
        let id = format!(
            "{}/{}/{}",
            o.namespace().unwrap_or("default"),
            o.kind(),
            o.name()
        );
        if o.metadata().get("ownerReferences").is_some() {
            owned.insert(id);
        } else {
            top.insert(id);
        }
    }
    if top.is_empty() {
        owned
    } else {
        top
    }
}

/// Map the findings and the maturity evidence onto the catalogue.
pub fn map(
    ctx: &Context<'_>,
    _inventory: &Inventory,
    findings: &[Finding],
    maturity: &Maturity,
) -> Vec<ControlEvidence> {
    let mut entries: BTreeMap<(Framework, String), Entry> = CATALOGUE
        .iter()
        .map(|(fw, id, title)| {
            (
                (*fw, id.to_string()),
                Entry {
                    title: title.to_string(),
                    ..Entry::default()
                },
            )
        })
        .collect();

    // Support: met criteria of pillars no gap limits.
    let supports: BTreeMap<Criterion, Controls> = SUPPORTS.iter().copied().collect();
    for p in &maturity.pillars {
        if !p.assessed || !p.limited_by.is_empty() || ctx.coverage.limits(p.pillar) {
            continue;
        }
        for e in p.evidence.iter().filter(|e| e.met) {
            let Some(c) = Criterion::of_text(&e.criterion) else {
                continue;
            };
            for (fw, id) in supports.get(&c).copied().unwrap_or(&[]) {
                if let Some(entry) = entries.get_mut(&(*fw, id.to_string())) {
                    let statement = format!("{}: {} ({})", p.pillar, e.criterion, e.detail);
                    if !entry.supporting.contains(&statement) {
                        entry.supporting.push(statement);
                    }
                }
            }
        }
    }
    let writers = decision_log_writers(ctx);
    if !writers.is_empty() && !ctx.coverage.limits(Pillar::Networks) {
        for id in ["A.8.15", "A.8.16"] {
            if let Some(entry) = entries.get_mut(&(Iso, id.to_string())) {
                entry.supporting.push(format!(
                    "keycard enforcement points write a tamper-evident decision log: {}",
                    writers
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if let Some(entry) = entries.get_mut(&(Soc2, "CC7.2".to_string())) {
            entry.supporting.push(format!(
                "{} workloads record every access decision in keycard's decision log",
                writers.len()
            ));
        }
    }

    // Contradiction: findings, by rule, category and their own controls.
    // The catalogue's mapping depends on rule and category only: worked out
    // once per pair (a few dozen), not per finding (thousands).
    let mut by_rule: HashMap<(&str, &str), BTreeSet<(Framework, &'static str)>> = HashMap::new();
    for f in findings {
        let mapped = by_rule
            .entry((f.rule.as_str(), f.category.as_str()))
            .or_insert_with(|| {
                let mut hit = BTreeSet::new();
                for (needles, controls) in RULE_CONTROLS {
                    if rule_has(f, needles) {
                        hit.extend(controls.iter().copied());
                    }
                }
                for (category, controls) in CATEGORY_CONTROLS {
                    if f.category == *category {
                        hit.extend(controls.iter().copied());
                    }
                }
                hit
            });
        let mut hit: BTreeSet<(Framework, String)> = mapped
            .iter()
            .map(|(fw, id)| (*fw, id.to_string()))
            .collect();
        for fw in [Iso, Soc2, Gdpr] {
            for id in f.controls.get(fw.key()).into_iter().flatten() {
                hit.insert((fw, normalise(fw, id)));
            }
        }
        for key in hit {
            let entry = entries.entry(key).or_insert_with(|| Entry {
                title: format!("Named by the metadata of rule {}", f.rule),
                ..Entry::default()
            });
            entry.contradicting.insert(f.id.clone());
        }
    }

    let mut out: Vec<ControlEvidence> = entries
        .into_iter()
        .map(|((framework, control), e)| {
            let status = match (e.supporting.is_empty(), e.contradicting.is_empty()) {
                (false, true) => ControlStatus::Supported,
                (false, false) => ControlStatus::Partial,
                (true, false) => ControlStatus::Contradicted,
                (true, true) => ControlStatus::NotAssessed,
            };
            ControlEvidence {
                framework,
                control,
                title: e.title,
                status,
                supporting: e.supporting,
                contradicting: e.contradicting.into_iter().collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.framework
            .cmp(&b.framework)
            .then_with(|| natural_key(&a.control).cmp(&natural_key(&b.control)))
    });
    tracing::debug!(controls = out.len(), "compliance mapped");
    out
}
