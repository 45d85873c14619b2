//! The high-availability backend: PostgreSQL, shared by several
//! `keycard server` replicas at once.
//!
//! What makes concurrent replicas safe:
//! - log appends take a transaction-scoped advisory lock, so the
//!   "append at the end" check and the insert are one step across replicas
//!   (the loser gets [`StoreError::Conflict`] and retries at the new end);
//! - the revocation feed is written under another advisory lock, so versions
//!   become visible in order and an agent reading "since v" never skips one
//!   that commits late;
//! - a join token is spent by one conditional `UPDATE`, which PostgreSQL
//!   re-checks under the row lock: of two replicas, exactly one wins;
//! - migrations run under an advisory lock, so replicas that start together
//!   migrate once;
//! - shared named values (the CA's trust state) are read-modify-written
//!   with [`IdentityStore::compare_and_put_value`]: one conditional
//!   statement, re-checked by PostgreSQL under the row lock, so of two
//!   replicas writing from the same version exactly one wins and the other
//!   re-reads.
//!
//! When the database goes away (a restart, a failover, a terminated
//! backend) the call in flight fails with [`StoreError::Unavailable`], as
//! does every call while it cannot be reached (each tries to reconnect,
//! with a bounded connect timeout); the first call after it is back
//! reconnects and succeeds.
//!
//! Threads: the `postgres` client drives its connection with a tokio
//! runtime of its own and blocks on it, which panics on a thread that is
//! already inside a runtime (every handler of `keycard server`). So each
//! [`PostgresStore`] gives its connection an OS thread of its own that
//! creates, uses and drops the client; every operation is a closure sent
//! to that thread, and the caller blocks on the answer (as it would on a
//! SQLite write). A transaction is one closure, so its statements run on
//! one connection. Callers may be plain threads or inside any kind of
//! tokio runtime.
//!
//! Durability is PostgreSQL's: a commit that returns is on disk (with the
//! server's default `synchronous_commit=on`).

use postgres::error::SqlState;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::{Client, NoTls, Row, Transaction};
use tracing::info;

use keycard_core::{AgentRecord, JoinToken, RegistrationEntry, Revocation, SpiffeId, TokenUse};

use crate::util::{from_json, now_ms, to_i64, to_json, to_u64};
use crate::{
    AuditEntry, AuditStore, CasOutcome, EntryFilter, Hash, IdentityStore, PruneState, StoreError,
    StoredCheckpoint, StoredEntry, Tile, VersionedValue,
};

/// How long a (re)connection may take when the connection string sets no
/// `connect_timeout`: a database that does not answer fails the call
/// instead of holding it.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL schema, one migration per version. Never edit a released
/// migration: add the next one.
pub const PG_MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "decision log",
        "CREATE TABLE audit_records (
            idx BIGINT PRIMARY KEY,
            leaf BYTEA NOT NULL,
            data BYTEA NOT NULL,
            id TEXT NOT NULL,
            time_ms BIGINT NOT NULL,
            point TEXT NOT NULL,
            subject TEXT NOT NULL,
            resource TEXT NOT NULL,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            policy TEXT NOT NULL
        );
        CREATE INDEX audit_records_id ON audit_records(id);
        CREATE TABLE audit_tiles (
            level INTEGER NOT NULL,
            idx BIGINT NOT NULL,
            hash BYTEA NOT NULL,
            PRIMARY KEY (level, idx)
        );
        CREATE TABLE audit_checkpoints (
            size BIGINT PRIMARY KEY,
            note TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE TABLE audit_prune (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            boundary BIGINT NOT NULL,
            frontier BYTEA NOT NULL
        );",
    ),
    (
        2,
        "identity store",
        "CREATE TABLE id_entries (
            id TEXT PRIMARY KEY,
            spiffe_id TEXT NOT NULL,
            body TEXT NOT NULL
        );
        CREATE INDEX id_entries_spiffe_id ON id_entries(spiffe_id);
        CREATE TABLE id_join_tokens (
            hash TEXT PRIMARY KEY,
            expires_at BIGINT NOT NULL,
            used_at BIGINT,
            body TEXT NOT NULL
        );
        CREATE TABLE id_agents (
            spiffe_id TEXT PRIMARY KEY,
            body TEXT NOT NULL
        );
        CREATE TABLE id_revocations (
            version BIGINT PRIMARY KEY,
            body TEXT NOT NULL
        );
        CREATE TABLE kv (
            key TEXT PRIMARY KEY,
            value BYTEA NOT NULL
        );",
    ),
    (
        3,
        "versioned named values",
        "ALTER TABLE kv ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
        ALTER TABLE kv ALTER COLUMN version DROP DEFAULT;
        CREATE SEQUENCE kv_version START WITH 2;",
    ),
    (
        4,
        "versioned documents",
        "CREATE TABLE documents (
            collection TEXT NOT NULL,
            name TEXT NOT NULL,
            revision BIGINT NOT NULL UNIQUE,
            body BYTEA,
            PRIMARY KEY (collection, name)
        );",
    ),
];

#[path = "postgres_documents.rs"]
mod documents;

// Advisory lock keys (arbitrary constants, one per serialised concern).
const LOCK_MIGRATE: i64 = 0x6b63_0001;
const LOCK_APPEND: i64 = 0x6b63_0002;
const LOCK_REVOKE: i64 = 0x6b63_0003;

/// One connection, owned by its thread (see the module docs). `poisoned`
/// is set when an operation panicked half-way: the client may be in any
/// state, so the next operation starts on a fresh connection.
struct Conn {
    client: Client,
    conninfo: String,
    schema: Option<String>,
    poisoned: bool,
}

/// One operation, run on the connection's thread.
type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// The connection's thread: opens and migrates, reports how that went on
/// `ready`, then runs each job in turn until the store is dropped. The
/// client is created, used and dropped here only.
fn serve(
    conninfo: String,
    schema: Option<String>,
    jobs: mpsc::Receiver<Job>,
    ready: mpsc::SyncSender<Result<(), StoreError>>,
) {
    let opened = open_client(&conninfo, schema.as_deref()).and_then(|client| {
        let mut conn = Conn {
            client,
            conninfo,
            schema,
            poisoned: false,
        };
        conn.migrate()?;
        Ok(conn)
    });
    let mut conn = match opened {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    while let Ok(job) = jobs.recv() {
        // A panic in one operation (a bug) fails that call, not the store:
        // its caller sees the answer channel close.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::error!("a PostgreSQL operation panicked; reconnecting for the next one");
            conn.poisoned = true;
        }
    }
}

fn open_client(conninfo: &str, schema: Option<&str>) -> Result<Client, StoreError> {
    let mut config: postgres::Config = conninfo
        .parse()
        .map_err(|e| StoreError::Malformed(format!("PostgreSQL connection string: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    let mut client = config.connect(NoTls).map_err(classify)?;
    if let Some(s) = schema {
        if !is_valid_schema(s) {
            return Err(StoreError::Malformed(format!(
                "schema name {s:?} must be lower-case letters, digits and '_'"
            )));
        }
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s}; SET search_path TO {s}"
            ))
            .map_err(classify)?;
    }
    Ok(client)
}

/// A [`crate::Store`] in a PostgreSQL database (or one schema of it): a
/// handle on its connection's thread (see the module docs).
pub struct PostgresStore {
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: never print it.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    /// Stops the thread once its current operation is done; the
    /// connection is closed when this returns.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the PostgreSQL connection thread panicked");
            }
        }
    }
}

/// The connection's thread is gone (it can only stop on a bug).
fn stopped() -> StoreError {
    StoreError::Backend("the PostgreSQL connection thread has stopped".into())
}

/// Is `code` the database saying it is going away or not accepting us
/// (class 08 connection exceptions, shutdowns, "not accepting
/// connections" is reported by the connect, which `Conn::ready`
/// reports as unavailable whatever the code), too many connections)?
fn unreachable_code(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
}

fn classify(e: postgres::Error) -> StoreError {
    if e.is_closed() {
        return StoreError::Unavailable(format!("the connection to PostgreSQL was lost: {e}"));
    }
    if e.as_db_error().is_none() {
        // No answer from the server: refused, reset, timed out.
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            if s.is::<std::io::Error>() {
                return StoreError::Unavailable(format!("PostgreSQL: {e}"));
            }
            src = s.source();
        }
        if e.to_string().contains("timed out") {
            return StoreError::Unavailable(format!("PostgreSQL: {e}"));
        }
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if unreachable_code(code) {
            return StoreError::Unavailable(format!("PostgreSQL: {}", db.message()));
        }
        if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
            return StoreError::Full(db.message().to_string());
        }
        if *code == SqlState::READ_ONLY_SQL_TRANSACTION || *code == SqlState::INSUFFICIENT_PRIVILEGE
        {
            return StoreError::ReadOnly(db.message().to_string());
        }
        if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
            return StoreError::Corrupt(db.message().to_string());
        }
    }
    StoreError::Backend(Box::new(e))
}

fn unique(e: postgres::Error, what: String) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Duplicate(what)
    } else {
        classify(e)
    }
}

fn hash_of(blob: &[u8], what: &str) -> Result<Hash, StoreError> {
    <Hash>::try_from(blob)
        .map_err(|_| StoreError::Malformed(format!("{what} has {} bytes, not 32", blob.len())))
}

fn is_valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

fn stored_entry(r: &Row) -> Result<StoredEntry, StoreError> {
    let index = to_u64(r.get::<_, i64>(0), "record index")?;
    let leaf: &[u8] = r.get(1);
    Ok(StoredEntry {
        index,
        leaf: hash_of(leaf, &format!("leaf hash of record {index}"))?,
        data: r.get(2),
    })
}

impl PostgresStore {
    /// Connects with a libpq-style connection string (`host=... user=...
    /// dbname=...` or a `postgresql://` URL) and migrates. `schema` puts
    /// keycard's tables in that schema (created if missing) instead of the
    /// default `search_path`; it must be a plain lower-case identifier.
    ///
    /// Starts the connection's thread; safe to call from any thread,
    /// inside a tokio runtime or not.
    pub fn connect(conninfo: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = mpsc::sync_channel(1);
        let (conninfo, schema) = (conninfo.to_string(), schema.map(str::to_string));
        let thread = std::thread::Builder::new()
            .name("keycard-postgres".into())
            .spawn(move || serve(conninfo, schema, queue, ready))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let store = PostgresStore {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        // On failure the thread has ended; dropping the store joins it.
        opened.recv().map_err(|_| stopped())??;
        Ok(store)
    }

    /// Runs `op` on the connection's thread, reconnected first if the
    /// server closed it (a restart, a failover, a terminated backend): the
    /// call that found it closed failed; this one tries again. Nothing
    /// acknowledged is lost, since every write is one transaction that
    /// either committed or not.
    ///
    /// While the database cannot be reached, this fails with
    /// [`StoreError::Unavailable`] (each call tries again).
    fn run<R, F>(&self, op: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<R, StoreError> + Send + 'static,
    {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn: &mut Conn| {
            let r = conn.ready().and_then(|()| op(conn));
            let _ = reply.send(r);
        });
        jobs.send(job).map_err(|_| stopped())?;
        match answer.recv() {
            Ok(r) => r,
            // The operation panicked (and was rolled back, if it wrote).
            Err(_) => Err(StoreError::Backend(
                "a PostgreSQL operation failed unexpectedly; nothing was acknowledged".into(),
            )),
        }
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        self.run(|c| {
            let row = c
                .client
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )
                .map_err(classify)?;
            Ok(row.get(0))
        })
    }
}

impl Conn {
    /// Reconnects if the server closed the connection (or an operation
    /// panicked on it); fails with [`StoreError::Unavailable`] while the
    /// database cannot be reached.
    fn ready(&mut self) -> Result<(), StoreError> {
        if !self.poisoned && !self.client.is_closed() {
            return Ok(());
        }
        match open_client(&self.conninfo, self.schema.as_deref()) {
            Ok(c) => {
                info!("reconnected to PostgreSQL");
                self.client = c;
                self.poisoned = false;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL is unreachable");
                Err(match e {
                    StoreError::Unavailable(m) => StoreError::Unavailable(m),
                    other => StoreError::Unavailable(format!("reconnecting: {other}")),
                })
            }
        }
    }
    fn migrate(&mut self) -> Result<(), StoreError> {
        let mut tx = self.client.transaction().map_err(classify)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
            .map_err(classify)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_ms BIGINT NOT NULL
            )",
        )
        .map_err(classify)?;
        let current: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(classify)?
            .get(0);
        let known = PG_MIGRATIONS.last().map_or(0, |m| m.0);
        if current > known {
            return Err(StoreError::TooNew {
                found: u32::try_from(current).unwrap_or(u32::MAX),
                known: u32::try_from(known).unwrap_or(0),
            });
        }
        for (version, name, sql) in PG_MIGRATIONS.iter().filter(|m| m.0 > current) {
            info!(version, name, "migrating the PostgreSQL store");
            tx.batch_execute(sql).map_err(classify)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
                &[version, name, &now_ms()],
            )
            .map_err(classify)?;
        }
        tx.commit().map_err(classify)
    }

    fn log_end(tx: &mut Transaction<'_>) -> Result<u64, StoreError> {
        let max: Option<i64> = tx
            .query_one("SELECT MAX(idx) FROM audit_records", &[])
            .map_err(classify)?
            .get(0);
        match max {
            Some(m) => Ok(to_u64(m, "record index")? + 1),
            None => {
                let b = tx
                    .query_opt("SELECT boundary FROM audit_prune", &[])
                    .map_err(classify)?;
                b.map_or(Ok(0), |r| to_u64(r.get(0), "prune boundary"))
            }
        }
    }

    fn json_rows<T: serde::de::DeserializeOwned>(
        &mut self,
        sql: &str,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.client.query(sql, &[]).map_err(classify)?;
        rows.iter()
            .map(|r| from_json(r.get::<_, &str>(0), what))
            .collect()
    }
}

impl AuditStore for PostgresStore {
    fn append_entries(
        &mut self,
        first: u64,
        entries: &[AuditEntry],
        tiles: &[Tile],
    ) -> Result<(), StoreError> {
        let (entries, tiles) = (entries.to_vec(), tiles.to_vec());
        self.run(move |c| {
            let mut tx = c.client.transaction().map_err(classify)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_APPEND])
                .map_err(classify)?;
            let actual = Conn::log_end(&mut tx)?;
            if actual != first {
                return Err(StoreError::Conflict {
                    expected: first,
                    actual,
                });
            }
            let ins = tx
                .prepare(
                    "INSERT INTO audit_records
                     (idx, leaf, data, id, time_ms, point, subject, resource, action, outcome, policy)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .map_err(classify)?;
            for (i, e) in (first..).zip(&entries) {
                let m = &e.meta;
                tx.execute(
                    &ins,
                    &[
                        &to_i64(i),
                        &&e.leaf[..],
                        &e.data,
                        &m.id,
                        &m.time_ms,
                        &m.point,
                        &m.subject,
                        &m.resource,
                        &m.action,
                        &m.outcome,
                        &m.policy,
                    ],
                )
                .map_err(classify)?;
            }
            let ins = tx
                .prepare("INSERT INTO audit_tiles (level, idx, hash) VALUES ($1, $2, $3)")
                .map_err(classify)?;
            for t in &tiles {
                let level = i32::try_from(t.level).unwrap_or(i32::MAX);
                tx.execute(&ins, &[&level, &to_i64(t.index), &&t.hash[..]])
                    .map_err(classify)?;
            }
            tx.commit().map_err(classify)
        })
    }

    fn size(&self) -> Result<u64, StoreError> {
        self.run(|c| {
            let mut tx = c.client.transaction().map_err(classify)?;
            let n = Conn::log_end(&mut tx)?;
            tx.commit().map_err(classify)?;
            Ok(n)
        })
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError> {
        self.run(move |c| {
            let rows = c
                .client
                .query(
                    "SELECT idx, leaf, data FROM audit_records WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                    &[&to_i64(start), &to_i64(end)],
                )
                .map_err(classify)?;
            rows.iter().map(stored_entry).collect()
        })
    }

    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<(u64, Hash)>, StoreError> {
        self.run(move |c| {
            let rows = c
                .client
                .query(
                    "SELECT idx, leaf FROM audit_records WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                    &[&to_i64(start), &to_i64(end)],
                )
                .map_err(classify)?;
            rows.iter()
                .map(|r| {
                    let index = to_u64(r.get::<_, i64>(0), "record index")?;
                    let leaf: &[u8] = r.get(1);
                    Ok((
                        index,
                        hash_of(leaf, &format!("leaf hash of record {index}"))?,
                    ))
                })
                .collect()
        })
    }

    fn tiles(&self, level: u32, start: u64, end: u64) -> Result<Vec<Tile>, StoreError> {
        let lv = i32::try_from(level).unwrap_or(i32::MAX);
        self.run(move |c| {
            let rows = c
                .client
                .query(
                    "SELECT idx, hash FROM audit_tiles WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
                    &[&lv, &to_i64(start), &to_i64(end)],
                )
                .map_err(classify)?;
            rows.iter()
                .map(|r| {
                    let index = to_u64(r.get::<_, i64>(0), "tile index")?;
                    let hash: &[u8] = r.get(1);
                    Ok(Tile {
                        level,
                        index,
                        hash: hash_of(hash, &format!("tile {level}/{index}"))?,
                    })
                })
                .collect()
        })
    }

    fn find_by_id(&self, id: &str) -> Result<Vec<StoredEntry>, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            let rows = c
                .client
                .query(
                    "SELECT idx, leaf, data FROM audit_records WHERE id = $1 ORDER BY idx",
                    &[&id],
                )
                .map_err(classify)?;
            rows.iter().map(stored_entry).collect()
        })
    }

    fn query(&self, f: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError> {
        let f = f.clone();
        self.run(move |c| {
            let text = [
                ("subject", &f.subject),
                ("resource", &f.resource),
                ("outcome", &f.outcome),
                ("policy", &f.policy),
                ("point", &f.point),
            ];
            let nums = [
                ("time_ms >=", f.since_ms),
                ("time_ms <", f.until_ms),
                ("idx >=", f.from_index.map(to_i64)),
            ];
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
            let mut sql_clauses: Vec<String> = Vec::new();
            for (col, v) in &text {
                if let Some(v) = v {
                    params.push(v);
                    sql_clauses.push(format!("{col} = ${}", params.len()));
                }
            }
            for (op, v) in &nums {
                if let Some(v) = v {
                    params.push(v);
                    sql_clauses.push(format!("{op} ${}", params.len()));
                }
            }
            let mut sql = String::from("SELECT idx, leaf, data FROM audit_records");
            if !sql_clauses.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&sql_clauses.join(" AND "));
            }
            sql.push_str(" ORDER BY idx");
            if let Some(l) = f.limit {
                sql.push_str(&format!(" LIMIT {}", to_i64(l)));
            }
            let rows = c.client.query(&sql, &params).map_err(classify)?;
            rows.iter().map(stored_entry).collect()
        })
    }

    fn put_checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        let cp = cp.clone();
        self.run(move |c| {
            c.client
                .execute(
                    "INSERT INTO audit_checkpoints (size, note, created_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (size) DO UPDATE SET note = excluded.note, created_ms = excluded.created_ms",
                    &[&to_i64(cp.size), &cp.note, &cp.created_ms],
                )
                .map_err(classify)?;
            Ok(())
        })
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.run(|c| {
            let rows = c
                .client
                .query(
                    "SELECT size, note, created_ms FROM audit_checkpoints ORDER BY size",
                    &[],
                )
                .map_err(classify)?;
            rows.iter()
                .map(|r| {
                    Ok(StoredCheckpoint {
                        size: to_u64(r.get(0), "checkpoint size")?,
                        note: r.get(1),
                        created_ms: r.get(2),
                    })
                })
                .collect()
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoints()?.pop())
    }

    fn prune_state(&self) -> Result<Option<PruneState>, StoreError> {
        self.run(|c| {
            let row = c
                .client
                .query_opt("SELECT boundary, frontier FROM audit_prune", &[])
                .map_err(classify)?;
            let Some(row) = row else { return Ok(None) };
            let blob: &[u8] = row.get(1);
            if blob.len() % 32 != 0 {
                return Err(StoreError::Malformed(format!(
                    "prune frontier has {} bytes, not a multiple of 32",
                    blob.len()
                )));
            }
            let frontier = blob
                .chunks_exact(32)
                .map(|c| hash_of(c, "prune frontier hash"))
                .collect::<Result<_, _>>()?;
            Ok(Some(PruneState {
                boundary: to_u64(row.get(0), "prune boundary")?,
                frontier,
            }))
        })
    }

    fn prune(&mut self, state: &PruneState) -> Result<(), StoreError> {
        let b = to_i64(state.boundary);
        let blob: Vec<u8> = state.frontier.concat();
        self.run(move |c| {
            let mut tx = c.client.transaction().map_err(classify)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_APPEND])
                .map_err(classify)?;
            tx.execute("DELETE FROM audit_records WHERE idx < $1", &[&b])
                .map_err(classify)?;
            tx.execute("DELETE FROM audit_checkpoints WHERE size < $1", &[&b])
                .map_err(classify)?;
            tx.execute(
                "INSERT INTO audit_prune (one, boundary, frontier) VALUES (1, $1, $2)
                 ON CONFLICT (one) DO UPDATE SET boundary = excluded.boundary, frontier = excluded.frontier",
                &[&b, &blob],
            )
            .map_err(classify)?;
            tx.commit().map_err(classify)
        })?;
        info!(boundary = state.boundary, "pruned the decision log");
        Ok(())
    }
}

/// The JSON body in column 0 of `row`, if there is a row.
fn json_opt<T: serde::de::DeserializeOwned>(
    row: Option<Row>,
    what: &str,
) -> Result<Option<T>, StoreError> {
    row.map(|r| from_json(r.get::<_, &str>(0), what))
        .transpose()
}

impl IdentityStore for PostgresStore {
    fn create_entry(&mut self, entry: &RegistrationEntry) -> Result<(), StoreError> {
        let (id, spiffe_id, body) = (
            entry.id.clone(),
            entry.spiffe_id.to_string(),
            to_json(entry)?,
        );
        self.run(move |c| {
            c.client
                .execute(
                    "INSERT INTO id_entries (id, spiffe_id, body) VALUES ($1, $2, $3)",
                    &[&id, &spiffe_id, &body],
                )
                .map_err(|e| unique(e, format!("entry {id}")))?;
            Ok(())
        })
    }

    fn entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            let row = c
                .client
                .query_opt("SELECT body FROM id_entries WHERE id = $1", &[&id])
                .map_err(classify)?;
            json_opt(row, "entry")
        })
    }

    fn list_entries(&self) -> Result<Vec<RegistrationEntry>, StoreError> {
        self.run(|c| c.json_rows("SELECT body FROM id_entries ORDER BY id", "entry"))
    }

    fn delete_entry(&mut self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            let row = c
                .client
                .query_opt(
                    "DELETE FROM id_entries WHERE id = $1 RETURNING body",
                    &[&id],
                )
                .map_err(classify)?;
            json_opt(row, "entry")
        })
    }

    fn put_join_token(&mut self, token: &JoinToken) -> Result<(), StoreError> {
        let (hash, expires_at, body) = (
            token.hash.clone(),
            to_i64(token.expires_at),
            to_json(token)?,
        );
        self.run(move |c| {
            c.client
                .execute(
                    "INSERT INTO id_join_tokens (hash, expires_at, used_at, body) VALUES ($1, $2, NULL, $3)",
                    &[&hash, &expires_at, &body],
                )
                .map_err(|e| unique(e, "join token".into()))?;
            Ok(())
        })
    }

    fn use_join_token(&mut self, hash: &str, now: u64) -> Result<TokenUse, StoreError> {
        let hash = hash.to_string();
        let now = to_i64(now);
        self.run(move |c| {
            let changed = c
                .client
                .execute(
                    "UPDATE id_join_tokens SET used_at = $2
                     WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
                    &[&hash, &now],
                )
                .map_err(classify)?;
            if changed == 1 {
                return Ok(TokenUse::Consumed);
            }
            let row = c
                .client
                .query_opt(
                    "SELECT used_at FROM id_join_tokens WHERE hash = $1",
                    &[&hash],
                )
                .map_err(classify)?;
            Ok(match row {
                None => TokenUse::Unknown,
                Some(r) if r.get::<_, Option<i64>>(0).is_some() => TokenUse::Replayed,
                Some(_) => TokenUse::Expired,
            })
        })
    }

    fn put_agent(&mut self, agent: &AgentRecord) -> Result<(), StoreError> {
        let (id, body) = (agent.spiffe_id.to_string(), to_json(agent)?);
        self.run(move |c| {
            c.client
                .execute(
                    "INSERT INTO id_agents (spiffe_id, body) VALUES ($1, $2)
                     ON CONFLICT (spiffe_id) DO UPDATE SET body = excluded.body",
                    &[&id, &body],
                )
                .map_err(classify)?;
            Ok(())
        })
    }

    fn agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |c| {
            let row = c
                .client
                .query_opt("SELECT body FROM id_agents WHERE spiffe_id = $1", &[&id])
                .map_err(classify)?;
            json_opt(row, "agent")
        })
    }

    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.run(|c| c.json_rows("SELECT body FROM id_agents ORDER BY spiffe_id", "agent"))
    }

    fn add_revocation(&mut self, revocation: &Revocation) -> Result<u64, StoreError> {
        let revocation = revocation.clone();
        self.run(move |c| {
            let mut tx = c.client.transaction().map_err(classify)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_REVOKE])
                .map_err(classify)?;
            let next: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM id_revocations",
                    &[],
                )
                .map_err(classify)?
                .get(0);
            let version = to_u64(next, "revocation version")?;
            let body = to_json(&Revocation {
                version,
                ..revocation
            })?;
            tx.execute(
                "INSERT INTO id_revocations (version, body) VALUES ($1, $2)",
                &[&next, &body],
            )
            .map_err(classify)?;
            tx.commit().map_err(classify)?;
            Ok(version)
        })
    }

    fn revocations_since(&self, version: u64) -> Result<Vec<Revocation>, StoreError> {
        let version = to_i64(version);
        self.run(move |c| {
            let rows = c
                .client
                .query(
                    "SELECT body FROM id_revocations WHERE version > $1 ORDER BY version",
                    &[&version],
                )
                .map_err(classify)?;
            rows.iter()
                .map(|r| from_json(r.get::<_, &str>(0), "revocation"))
                .collect()
        })
    }

    fn put_value(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.run(move |c| {
            c.client
                .execute(
                    "INSERT INTO kv (key, value, version) VALUES ($1, $2, nextval('kv_version'))
                     ON CONFLICT (key) DO UPDATE
                     SET value = excluded.value, version = nextval('kv_version')",
                    &[&key, &value],
                )
                .map_err(classify)?;
            Ok(())
        })
    }

    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.run(move |c| {
            let row = c
                .client
                .query_opt("SELECT value FROM kv WHERE key = $1", &[&key])
                .map_err(classify)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn values_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.to_string();
        self.run(move |c| {
            let rows = c
                .client
                .query(
                    "SELECT key, value FROM kv WHERE left(key, length($1)) = $1 ORDER BY key",
                    &[&prefix],
                )
                .map_err(classify)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn delete_value(&mut self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.run(move |c| {
            let n = c
                .client
                .execute("DELETE FROM kv WHERE key = $1", &[&key])
                .map_err(classify)?;
            Ok(n > 0)
        })
    }

    fn versioned_value(&self, key: &str) -> Result<Option<VersionedValue>, StoreError> {
        let key = key.to_string();
        self.run(move |c| {
            let row = c
                .client
                .query_opt("SELECT version, value FROM kv WHERE key = $1", &[&key])
                .map_err(classify)?;
            row.map(|r| {
                Ok(VersionedValue {
                    version: to_u64(r.get(0), "value version")?,
                    value: r.get(1),
                })
            })
            .transpose()
        })
    }

    fn compare_and_put_value(
        &mut self,
        key: &str,
        expected: u64,
        value: &[u8],
    ) -> Result<CasOutcome, StoreError> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.run(move |c| {
            // One statement each way: PostgreSQL re-checks the WHERE (or the
            // conflict) under the row lock, so two replicas writing from the
            // same version cannot both succeed.
            let row = if expected == 0 {
                c.client.query_opt(
                    "INSERT INTO kv (key, value, version) VALUES ($1, $2, nextval('kv_version'))
                     ON CONFLICT (key) DO NOTHING RETURNING version",
                    &[&key, &value],
                )
            } else {
                c.client.query_opt(
                    "UPDATE kv SET value = $2, version = nextval('kv_version')
                     WHERE key = $1 AND version = $3 RETURNING version",
                    &[&key, &value, &to_i64(expected)],
                )
            }
            .map_err(classify)?;
            if let Some(r) = row {
                return Ok(CasOutcome::Written {
                    version: to_u64(r.get(0), "value version")?,
                });
            }
            let actual = c
                .client
                .query_opt("SELECT version FROM kv WHERE key = $1", &[&key])
                .map_err(classify)?
                .map_or(Ok(0), |r| to_u64(r.get(0), "value version"))?;
            Ok(CasOutcome::Conflict { actual })
        })
    }
}
