//! `keycard admission serve --enforce-dir` on a node: the webhook follows
//! the `enforce/` directory as an agent writes it (admission policies,
//! exceptions, grants), keeps the last good policies when a file breaks,
//! and picks up the next good change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admission_fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use admission_fixtures::*;
use keycard_server::admission::{PolicyOptions, WatchedFiles, Webhook, WebhookConfig};
use keycard_server::control::{Grant, GrantKind, GrantStatus};
use keycard_server::enforce::{EnforcerFiles, EnforcerSync, ADMISSION_DIR};
use keycard_server::policies::{PolicyDoc, PolicyKind, SyncDocument, EXCEPTION, POLICY};

fn rego(name: &str) -> String {
    format!(
        "# METADATA\n# custom:\n#   id: team-no-{name}\n#   severity: high\npackage team.names\n\nimport rego.v1\n\ndeny contains {{\"msg\": \"{name} is not allowed here\"}} if input.metadata.name == \"{name}\"\n"
    )
}

fn doc(collection: &str, name: &str, kind: PolicyKind, text: &str, revision: u64) -> SyncDocument {
    SyncDocument {
        collection: collection.into(),
        name: name.into(),
        revision,
        doc: Some(PolicyDoc {
            name: name.into(),
            kind,
            text: text.into(),
            digest: String::new(),
            updated_by: "test".into(),
            updated_at: 0,
            revision,
        }),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn allowed(w: &Webhook, uid: &str, name: &str) -> bool {
    let body = serde_json::to_vec(&review(
        uid,
        "CREATE",
        "payments",
        &compliant_deployment(name),
    ))
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), w.review(&body))
        .await
        .expect("the webhook answers in bounded time");
    r.body["response"]["allowed"].as_bool().unwrap()
}

/// Waits (at most 10 s) until `name` is decided `want`.
async fn until(w: &Webhook, name: &str, want: bool) {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(10) {
        n += 1;
        if allowed(w, &format!("{name}-{n}"), name).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} not allowed={want} within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_follows_an_enforce_directory_and_keeps_the_last_good_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let enforce = tmp.path().join("enforce");
    let files = EnforcerFiles::open(&enforce).unwrap();
    let sync = |revision, documents| EnforcerSync {
        revision,
        documents,
        control_digest: "d0".into(),
        ..EnforcerSync::default()
    };
    files
        .apply(
            &[],
            Some(sync(
                1,
                vec![doc(POLICY, "names", PolicyKind::Rego, &rego("api"), 1)],
            )),
            now(),
        )
        .unwrap();

    let watched = WatchedFiles::new(
        PolicyOptions {
            packs: vec!["none".into()],
            ..PolicyOptions::default()
        },
        Some(enforce.clone()),
    );
    let initial = watched.load().unwrap();
    let webhook = Arc::new(Webhook::new(
        initial.clone(),
        WebhookConfig::default(),
        None,
    ));
    let _watch = watched
        .watch(initial, Arc::clone(&webhook), Duration::from_millis(50))
        .unwrap();
    assert!(!allowed(&webhook, "u-1", "api").await);
    assert!(allowed(&webhook, "u-2", "web").await);

    // The server replaces the policy: the decisions follow.
    files
        .apply(
            &[],
            Some(sync(
                2,
                vec![doc(POLICY, "names", PolicyKind::Rego, &rego("web"), 2)],
            )),
            now(),
        )
        .unwrap();
    until(&webhook, "api", true).await;
    assert!(!allowed(&webhook, "u-3", "web").await);

    // A file broken in place: the last good policy stays.
    std::fs::write(
        enforce.join(ADMISSION_DIR).join("names.rego"),
        "package team.names\ndeny contains x if {\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!allowed(&webhook, "u-4", "web").await);
    assert!(allowed(&webhook, "u-5", "api").await);

    // Exceptions still apply over the last good policy.
    let ex = "exceptions:\n- rule: team-no-web\n  match: {name: web}\n  owner: team@example.com\n  reason: moving\n  expires: 2099-12-31\n";
    files
        .apply(
            &[],
            Some(sync(
                3,
                vec![doc(EXCEPTION, "moving", PolicyKind::Exceptions, ex, 3)],
            )),
            now(),
        )
        .unwrap();
    until(&webhook, "web", true).await;

    // The next good change is taken: exception gone, policy back on api.
    files
        .apply(
            &[],
            Some(EnforcerSync {
                revision: 4,
                documents: vec![
                    SyncDocument {
                        collection: EXCEPTION.into(),
                        name: "moving".into(),
                        revision: 4,
                        doc: None,
                    },
                    doc(POLICY, "names", PolicyKind::Rego, &rego("api"), 4),
                ],
                control_digest: "d0".into(),
                ..EnforcerSync::default()
            }),
            now(),
        )
        .unwrap();
    until(&webhook, "api", false).await;
    assert!(allowed(&webhook, "u-6", "web").await);

    // An approved exception grant in grants.json lets api in until it ends.
    let grant = Grant {
        id: "g1".into(),
        kind: GrantKind::Exception {
            policy: "names".into(),
            rule: "team-no-api".into(),
            resource: "Deployment/payments/api".into(),
        },
        subject: "alice".into(),
        requester: "alice".into(),
        reason: "incident".into(),
        duration_secs: 600,
        status: GrantStatus::Active,
        approver: Some("bob".into()),
        requested_at: now(),
        expires_at: Some(now() + 600),
    };
    files
        .apply(
            &[],
            Some(EnforcerSync {
                revision: 4,
                control_digest: "d1".into(),
                grants: Some(vec![grant]),
                posture: Some(vec![]),
                ..EnforcerSync::default()
            }),
            now(),
        )
        .unwrap();
    until(&webhook, "api", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_changed_with_a_broken_policy_still_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let enforce = tmp.path().join("enforce");
    let admission = enforce.join(ADMISSION_DIR);
    std::fs::create_dir_all(&admission).unwrap();
    std::fs::write(admission.join("names.rego"), rego("api")).unwrap();
    let watched = WatchedFiles::new(
        PolicyOptions {
            packs: vec!["none".into()],
            ..PolicyOptions::default()
        },
        Some(enforce.clone()),
    );
    let initial = watched.load().unwrap();
    let webhook = Arc::new(Webhook::new(
        initial.clone(),
        WebhookConfig::default(),
        None,
    ));
    let _watch = watched
        .watch(initial, Arc::clone(&webhook), Duration::from_millis(50))
        .unwrap();
    assert!(!allowed(&webhook, "u-1", "api").await);
    // Both change at once: the policy breaks, an exception for api arrives.
    std::fs::write(
        admission.join("names.rego"),
        "package team.names\ndeny contains x if {\n",
    )
    .unwrap();
    std::fs::write(
        enforce.join("exceptions.yaml"),
        "exceptions:\n- rule: team-no-api\n  owner: team@example.com\n  reason: r\n  expires: 2099-12-31\n",
    )
    .unwrap();
    until(&webhook, "api", true).await;
    // The last good policy is still the one in force.
    std::fs::remove_file(enforce.join("exceptions.yaml")).unwrap();
    until(&webhook, "api", false).await;
}

/// A change made after the load but before the watch thread first looks
/// (under load the thread can start late) is still picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_between_the_load_and_the_watch_is_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let enforce = tmp.path().join("enforce");
    let admission = enforce.join(ADMISSION_DIR);
    std::fs::create_dir_all(&admission).unwrap();
    std::fs::write(admission.join("names.rego"), rego("api")).unwrap();
    let watched = WatchedFiles::new(
        PolicyOptions {
            packs: vec!["none".into()],
            ..PolicyOptions::default()
        },
        Some(enforce.clone()),
    );
    let initial = watched.load().unwrap();
    let webhook = Arc::new(Webhook::new(
        initial.clone(),
        WebhookConfig::default(),
        None,
    ));
    assert!(!allowed(&webhook, "u-1", "api").await);
    std::fs::write(
        enforce.join("exceptions.yaml"),
        "exceptions:\n- rule: team-no-api\n  owner: team@example.com\n  reason: r\n  expires: 2099-12-31\n",
    )
    .unwrap();
    let _watch = watched
        .watch(initial, Arc::clone(&webhook), Duration::from_millis(50))
        .unwrap();
    until(&webhook, "api", true).await;
}
