//! The PostgreSQL backend against a real server: the same identity contract
//! as the embedded store, the decision-log operations, and two replicas on
//! one database writing at once with nothing lost or duplicated.
//!
//! Needs `KEYCARD_TEST_POSTGRES` (a libpq connection string; `scripts/test`
//! starts or reuses a local PostgreSQL and sets it). Each test works in a
//! schema of its own, dropped at the end.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::thread;

use keycard_core::{JoinToken, Revocation, RevocationKind, TokenUse};
use keycard_store::{
    AuditEntry, AuditStore, CasOutcome, EntryFilter, EntryMeta, IdentityStore, PostgresStore,
    PruneState, StoreError, StoredCheckpoint,
};

mod common;

/// A fresh schema on the test server, or `None` (with a note) when the
/// suite runs without PostgreSQL.
fn schema(tag: &str) -> Option<(String, String)> {
    let Ok(url) = std::env::var("KEYCARD_TEST_POSTGRES") else {
        eprintln!("skipped: KEYCARD_TEST_POSTGRES not set");
        return None;
    };
    let name = format!("kc_{tag}_{}", std::process::id());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect to PostgreSQL");
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .unwrap();
    Some((url, name))
}

/// `url` (key=value or a URL) with its database replaced by `db`.
fn with_dbname(url: &str, db: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (rest, query) = rest
                .split_once('?')
                .map_or((rest, None), |(r, q)| (r, Some(q)));
            let host = rest.split_once('/').map_or(rest, |(h, _)| h);
            match query {
                Some(q) => format!("{scheme}://{host}/{db}?{q}"),
                None => format!("{scheme}://{host}/{db}"),
            }
        }
        None => format!("{url} dbname={db}"),
    }
}

fn drop_schema(url: &str, name: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .unwrap();
}

fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        leaf: [(i % 251) as u8; 32],
        data: format!("record {i}").into_bytes(),
        meta: EntryMeta {
            id: format!("d-{i}"),
            time_ms: i as i64 * 1000,
            outcome: if i % 2 == 0 { "allow" } else { "deny" }.into(),
            ..EntryMeta::default()
        },
    }
}

#[test]
fn postgres_keeps_the_document_contract() {
    let Some((url, name)) = schema("docs") else {
        return;
    };
    let mut s = PostgresStore::connect(&url, Some(&name)).unwrap();
    common::document_contract(&mut s);
    let again = PostgresStore::connect(&url, Some(&name)).unwrap();
    use keycard_store::DocumentStore;
    assert_eq!(again.document_revision().unwrap(), 6);
    drop_schema(&url, &name);
}

#[test]
fn postgres_keeps_the_identity_contract() {
    let Some((url, name)) = schema("ident") else {
        return;
    };
    let mut s = PostgresStore::connect(&url, Some(&name)).unwrap();
    assert_eq!(
        s.schema_version().unwrap(),
        keycard_store::PG_MIGRATIONS.last().unwrap().0
    );
    common::identity_contract(&mut s);
    common::cas_contract(&mut s);
    // A second connection (a restarted server) sees the same state and
    // does not migrate twice.
    let again = PostgresStore::connect(&url, Some(&name)).unwrap();
    assert_eq!(again.list_entries().unwrap().len(), 1);
    assert_eq!(again.value("k").unwrap().unwrap(), b"v2");
    drop_schema(&url, &name);
}

#[test]
fn postgres_decision_log_appends_reads_queries_and_prunes() {
    let Some((url, name)) = schema("audit") else {
        return;
    };
    let mut s = PostgresStore::connect(&url, Some(&name)).unwrap();
    assert_eq!(s.size().unwrap(), 0);
    let batch: Vec<_> = (0..10).map(entry).collect();
    s.append_entries(0, &batch, &[]).unwrap();
    assert!(matches!(
        s.append_entries(3, &batch, &[]),
        Err(StoreError::Conflict {
            expected: 3,
            actual: 10
        })
    ));
    assert_eq!(s.size().unwrap(), 10);
    assert_eq!(s.entries(2, 4).unwrap()[1].data, b"record 3");
    assert_eq!(s.leaf_hashes(0, 10).unwrap().len(), 10);
    assert_eq!(s.find_by_id("d-7").unwrap()[0].index, 7);
    let denies = s
        .query(&EntryFilter {
            outcome: Some("deny".into()),
            since_ms: Some(3000),
            limit: Some(2),
            ..EntryFilter::default()
        })
        .unwrap();
    assert_eq!(
        denies.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![3, 5]
    );
    s.put_checkpoint(&StoredCheckpoint {
        size: 10,
        note: "cp".into(),
        created_ms: 1,
    })
    .unwrap();
    assert_eq!(s.latest_checkpoint().unwrap().unwrap().size, 10);
    s.prune(&PruneState {
        boundary: 5,
        frontier: vec![[1; 32]],
    })
    .unwrap();
    assert_eq!(s.size().unwrap(), 10);
    assert!(s.entries(0, 5).unwrap().is_empty());
    assert_eq!(s.prune_state().unwrap().unwrap().boundary, 5);
    drop_schema(&url, &name);
}

/// Two server replicas on one database, each with its own connection,
/// append to the log, spend join tokens and publish revocations at the
/// same time: every acknowledged write is there exactly once, each token is
/// spent by exactly one replica, and revocation versions are dense.
#[test]
fn two_replicas_on_one_database_lose_and_duplicate_nothing() {
    let Some((url, name)) = schema("ha") else {
        return;
    };
    {
        let mut setup = PostgresStore::connect(&url, Some(&name)).unwrap();
        for t in 0..200 {
            setup
                .put_join_token(&JoinToken {
                    hash: format!("tok-{t}"),
                    expires_at: u64::MAX / 2,
                    agent_id: None,
                })
                .unwrap();
        }
    }
    let replicas: Vec<_> = (0..2)
        .map(|r| {
            let (url, name) = (url.clone(), name.clone());
            thread::spawn(move || {
                let mut s = PostgresStore::connect(&url, Some(&name)).unwrap();
                let mut appended = Vec::new();
                let mut spent = Vec::new();
                for round in 0..50u64 {
                    // Append 5 records at the end, retrying on conflict as
                    // the decision log does.
                    loop {
                        let end = s.size().unwrap();
                        let batch: Vec<_> = (0..5)
                            .map(|k| {
                                let mut e = entry(end + k);
                                e.meta.id = format!("r{r}-{round}-{k}");
                                e
                            })
                            .collect();
                        match s.append_entries(end, &batch, &[]) {
                            Ok(()) => {
                                appended.extend(batch.into_iter().map(|e| e.meta.id));
                                break;
                            }
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(e) => panic!("append: {e}"),
                        }
                    }
                    for t in (round * 4)..(round * 4 + 4) {
                        if s.use_join_token(&format!("tok-{t}"), 1).unwrap() == TokenUse::Consumed {
                            spent.push(t);
                        }
                    }
                    s.add_revocation(&Revocation {
                        version: 0,
                        kind: RevocationKind::Identity,
                        subject: format!("spiffe://td/r{r}/{round}"),
                        reason: "test".into(),
                        at: 1,
                        until: None,
                    })
                    .unwrap();
                }
                (appended, spent)
            })
        })
        .collect();
    let results: Vec<_> = replicas.into_iter().map(|h| h.join().unwrap()).collect();
    let s = PostgresStore::connect(&url, Some(&name)).unwrap();

    // The log: 2 x 50 x 5 records, dense, each acknowledged id exactly once.
    assert_eq!(s.size().unwrap(), 500);
    let stored = s.entries(0, 500).unwrap();
    assert_eq!(stored.len(), 500);
    assert!(stored.iter().enumerate().all(|(i, e)| e.index == i as u64));
    let acked: BTreeSet<String> = results.iter().flat_map(|r| r.0.clone()).collect();
    assert_eq!(acked.len(), 500);
    for id in &acked {
        assert_eq!(s.find_by_id(id).unwrap().len(), 1, "{id}");
    }

    // Tokens: the 200 were each spent by exactly one replica.
    let mut spent: Vec<u64> = results.iter().flat_map(|r| r.1.clone()).collect();
    spent.sort_unstable();
    assert_eq!(spent, (0..200).collect::<Vec<_>>());

    // Revocations: 100 with versions 1..=100.
    let revs = s.revocations_since(0).unwrap();
    assert_eq!(
        revs.iter().map(|r| r.version).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    drop_schema(&url, &name);
}

/// The database drops the connection (a restart, a failover): the call in
/// flight fails, the next one reconnects, and everything committed before
/// is still there.
#[test]
fn a_dropped_connection_is_reopened_and_committed_data_kept() {
    let Some((url, name)) = schema("reconnect") else {
        return;
    };
    // Tag this store's connection so only it is terminated.
    let tag = format!("kc_reconnect_{}", std::process::id());
    let tagged = if url.starts_with("postgres") {
        format!(
            "{url}{}application_name={tag}",
            if url.contains('?') { '&' } else { '?' }
        )
    } else {
        format!("{url} application_name={tag}")
    };
    let mut s = PostgresStore::connect(&tagged, Some(&name)).unwrap();
    s.put_value("before", b"1").unwrap();
    // Terminate its backend, as a server restart would.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{tag}'"),
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (mut ok, mut failed, mut first_error) = (false, 0, None);
    for _ in 0..3 {
        match s.value("before") {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some(&b"1"[..]));
                ok = true;
                break;
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    assert_eq!(failed, 1, "the call in flight sees the dropped connection");
    assert!(
        matches!(first_error, Some(StoreError::Unavailable(_))),
        "a dropped connection is reported as unavailable: {first_error:?}"
    );
    assert!(ok, "the next call reconnects");
    s.put_value("after", b"2").unwrap();
    assert_eq!(s.value("after").unwrap().unwrap(), b"2");
    drop_schema(&url, &name);
}

/// Two replicas, each its own connection, add to one shared list with
/// read-modify-CAS at the same time: nothing is lost or duplicated, and
/// the race really happened (someone had to retry).
#[test]
fn two_replicas_cas_one_value_without_losing_a_write() {
    let Some((url, name)) = schema("cas") else {
        return;
    };
    drop(PostgresStore::connect(&url, Some(&name)).unwrap());
    let replicas: Vec<_> = (0..2)
        .map(|r| {
            let (url, name) = (url.clone(), name.clone());
            thread::spawn(move || {
                let mut s = PostgresStore::connect(&url, Some(&name)).unwrap();
                let items: Vec<String> = (0..150).map(|i| format!("r{r}-{i}")).collect();
                common::add_with_cas(&mut s, "shared", &items)
            })
        })
        .collect();
    let conflicts: usize = replicas.into_iter().map(|h| h.join().unwrap()).sum();
    let s = PostgresStore::connect(&url, Some(&name)).unwrap();
    let list: Vec<String> = serde_json::from_slice(&s.value("shared").unwrap().unwrap()).unwrap();
    let unique: BTreeSet<_> = list.iter().collect();
    assert_eq!(list.len(), 300);
    assert_eq!(unique.len(), 300);
    eprintln!("{conflicts} conflicts retried");
    drop_schema(&url, &name);
}

/// A store migrated before values had versions (schema 2) keeps its
/// values at version 1 after migration 3, and CAS works on them.
#[test]
fn postgres_values_written_before_versions_migrate_to_version_one() {
    let Some((url, name)) = schema("kvmig") else {
        return;
    };
    {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE SCHEMA {name}; SET search_path TO {name};"))
            .unwrap();
        c.batch_execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
        )
        .unwrap();
        for (version, n, sql) in &keycard_store::PG_MIGRATIONS[..2] {
            c.batch_execute(sql).unwrap();
            c.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, 0)",
                &[version, n],
            )
            .unwrap();
        }
        c.execute("INSERT INTO kv (key, value) VALUES ('old', '\\x01')", &[])
            .unwrap();
    }
    let mut s = PostgresStore::connect(&url, Some(&name)).unwrap();
    let old = s.versioned_value("old").unwrap().unwrap();
    assert_eq!((old.version, old.value), (1, vec![1]));
    assert!(matches!(
        s.compare_and_put_value("old", 1, b"new").unwrap(),
        CasOutcome::Written { version } if version > 1
    ));
    drop_schema(&url, &name);
}

/// The database refuses connections for a while (as during a restart):
/// every call fails as unavailable with a message that says so, and the
/// first call after it is back reconnects, with committed data intact.
#[test]
fn an_unreachable_database_is_unavailable_until_it_returns() {
    let Ok(url) = std::env::var("KEYCARD_TEST_POSTGRES") else {
        eprintln!("skipped: KEYCARD_TEST_POSTGRES not set");
        return;
    };
    let db = format!("kc_down_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let db_url = with_dbname(&url, &db);
    let mut s = PostgresStore::connect(&db_url, None).unwrap();
    s.put_value("before", b"1").unwrap();

    admin
        .batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
        .unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        ))
        .unwrap();
    for _ in 0..3 {
        match s.put_value("while-down", b"x") {
            Err(StoreError::Unavailable(m)) => {
                assert!(!m.is_empty());
                eprintln!("while down: {}", StoreError::Unavailable(m));
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
    assert!(matches!(s.value("before"), Err(StoreError::Unavailable(_))));

    admin
        .batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .unwrap();
    assert_eq!(s.value("before").unwrap().unwrap(), b"1");
    s.put_value("after", b"2").unwrap();
    assert_eq!(s.value("after").unwrap().unwrap(), b"2");
    assert_eq!(s.value("while-down").unwrap(), None);
    drop(s);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .unwrap();
}
