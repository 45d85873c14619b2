//! keycard's assessment: reads a cluster (a dump, a directory of manifests
//! or the live API) and answers the questions every zero-trust roadmap
//! starts with. Who are the identities and what can each do? Which
//! workloads run as which, and which can reach the data stores? Where does
//! implicit trust live (no default-deny, static credentials, privileged
//! pods, cluster-admin)? How mature is each pillar of the CISA Zero Trust
//! Maturity Model, and what evidence does that give an auditor?
//!
//! The pipeline is pure over parsed objects:
//!
//! 1. [`input`]: what the input covers, and the gaps that limit conclusions;
//! 2. [`rbac`]: roles, aggregated ClusterRoles and bindings resolved into
//!    effective permissions per subject, and `who-can` queries over them;
//! 3. [`identities`] and [`workloads`]: the inventory;
//! 4. [`findings`]: legacy trust assumptions, reusing `keycard check`'s
//!    zero-trust pack where a rule exists there;
//! 5. [`maturity`] and [`compliance`]: the score per pillar and the evidence
//!    per control;
//! 6. [`report`] renders it (JSON, Markdown, HTML, SARIF) and [`diff`]
//!    compares two assessments.

pub mod compliance;
pub mod diff;
pub mod findings;
pub mod identities;
pub mod input;
pub mod live;
pub mod maturity;
pub mod model;
pub mod objects;
pub mod rbac;
pub mod report;
pub mod workloads;

use keycard_k8s::Object;

pub use input::Input;
pub use model::*;
pub use rbac::{AccessQuery, Rbac, WhoCan};

/// Settings of one assessment.
#[derive(Debug, Clone)]
pub struct Options {
    /// "Now", in seconds since the Unix epoch: the age of token secrets is
    /// measured against it. Tests fix it.
    pub now: i64,
    /// Label keys that name a workload's owner (any one is enough).
    pub owner_labels: Vec<String>,
    /// Label keys that carry a data classification (any one is enough).
    pub classification_labels: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Options {
            now,
            owner_labels: [
                "owner",
                "team",
                "app.kubernetes.io/owner",
                "keycard.dev/owner",
            ]
            .map(String::from)
            .to_vec(),
            classification_labels: [
                "data-classification",
                "data.classification",
                "keycard.dev/data-classification",
                "classification",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Everything the stages share: the objects, the resolved RBAC, the
/// connectivity model and the coverage of the input.
pub struct Context<'a> {
    pub objects: &'a [Object],
    /// The workloads of `objects` ([`objects::workloads`]), found once for
    /// every stage.
    pub workloads: &'a [objects::Workload<'a>],
    pub rbac: &'a Rbac,
    pub cluster: &'a keycard_flows::Cluster,
    pub coverage: &'a Coverage,
    pub options: &'a Options,
}

/// Run the whole assessment.
pub fn assess(input: &Input, options: &Options) -> Assessment {
    let mut clock = StageClock::new();
    let mut coverage = input::coverage(input);
    let rbac = Rbac::from_objects(&input.objects);
    coverage.gaps.extend(rbac.gaps());
    clock.lap("rbac");
    let (cluster, _diagnostics) =
        keycard_flows::Cluster::from_objects(&objects::network_view(&input.objects));
    clock.lap("network model");
    let workloads = objects::workloads(&input.objects);
    let ctx = Context {
        objects: &input.objects,
        workloads: &workloads,
        rbac: &rbac,
        cluster: &cluster,
        coverage: &coverage,
        options,
    };
    let mut inventory = Inventory {
        identities: identities::build(&ctx),
        ..Inventory::default()
    };
    clock.lap("identities");
    workloads::build(&ctx, &mut inventory);
    clock.lap("workloads and data stores");
    let findings = findings::find(&ctx, &inventory);
    clock.lap("findings");
    let maturity = maturity::score(&ctx, &inventory, &findings);
    let compliance = compliance::map(&ctx, &inventory, &findings, &maturity);
    clock.lap("maturity and compliance");
    let summary = Summary::compute(&inventory, &findings);
    Assessment {
        schema: SCHEMA.to_string(),
        generated_at: rfc3339(options.now),
        keycard_version: env!("CARGO_PKG_VERSION").to_string(),
        source: input.source.clone(),
        coverage,
        inventory,
        findings,
        maturity,
        compliance,
        summary,
    }
}

/// Time per stage, logged at debug level (`keycard assess -v`).
struct StageClock(std::time::Instant);

impl StageClock {
    fn new() -> Self {
        tracing::debug!(rss_mib = rss_mib(), "assessment starts");
        StageClock(std::time::Instant::now())
    }
    fn lap(&mut self, stage: &str) {
        let now = std::time::Instant::now();
        tracing::debug!(
            stage,
            ms = now.duration_since(self.0).as_millis() as u64,
            rss_mib = rss_mib(),
            "assessment stage done"
        );
        self.0 = now;
    }
}

/// Resident memory of this process in MiB (Linux; 0 elsewhere), for the
/// stage log.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// Seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// An RFC 3339 time (as Kubernetes writes `creationTimestamp`) in seconds
/// since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}
