//! The embedded backend: one SQLite file in the data directory.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a committed append
//! survives a crash or power loss (the WAL is synced on every commit), and
//! each append is one transaction, which is what makes batches cheap.
//! The file is created with mode 0600 (SQLite gives its WAL and shared-memory
//! files the same mode): decisions name people and workloads.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use tracing::{debug, info};

use crate::{
    AuditEntry, AuditStore, EntryFilter, Hash, PruneState, StoreError, StoredCheckpoint,
    StoredEntry, Tile,
};

/// The schema, one migration per version, applied in order and recorded in
/// `schema_migrations`. Never edit a released migration: add the next one.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "decision log",
        "CREATE TABLE audit_records (
        idx INTEGER PRIMARY KEY,
        leaf BLOB NOT NULL,
        data BLOB NOT NULL,
        id TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
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
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID;
    CREATE TABLE audit_checkpoints (
        size INTEGER PRIMARY KEY,
        note TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE audit_prune (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        boundary INTEGER NOT NULL,
        frontier BLOB NOT NULL
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
            expires_at INTEGER NOT NULL,
            used_at INTEGER,
            body TEXT NOT NULL
        );
        CREATE TABLE id_agents (
            spiffe_id TEXT PRIMARY KEY,
            body TEXT NOT NULL
        );
        CREATE TABLE id_revocations (
            version INTEGER PRIMARY KEY AUTOINCREMENT,
            body TEXT NOT NULL
        );
        CREATE TABLE kv (
            key TEXT PRIMARY KEY,
            value BLOB NOT NULL
        );",
    ),
    (
        3,
        "decision log settings",
        "CREATE TABLE audit_settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );",
    ),
    (
        4,
        "versioned named values",
        "ALTER TABLE kv ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
        CREATE TABLE kv_version (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            last INTEGER NOT NULL
        );
        INSERT INTO kv_version (one, last) VALUES (1, 1);",
    ),
    (
        5,
        "versioned documents",
        "CREATE TABLE documents (
            collection TEXT NOT NULL,
            name TEXT NOT NULL,
            revision INTEGER NOT NULL UNIQUE,
            body BLOB,
            PRIMARY KEY (collection, name)
        );",
    ),
];

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone, Default)]
pub struct SqliteOptions {
    /// Refuse to grow the database past this many bytes: appends then fail
    /// with [`StoreError::Full`], exactly as on a full disk. `None`: no limit.
    pub max_size_bytes: Option<u64>,
    /// Open for reading only (verification, queries, exports): never
    /// creates, migrates or writes.
    pub read_only: bool,
}

/// An [`AuditStore`] in a SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    pub(crate) conn: Connection,
    path: PathBuf,
    /// Copies the WAL into the database file off the appending thread.
    checkpointer: Option<Checkpointer>,
    /// Bytes appended to the decision log since the checkpointer was last
    /// woken (an estimate of the WAL's growth).
    wal_bytes: u64,
}

/// How much the decision log appends (about 500 pages) before the
/// background checkpointer is woken.
const CHECKPOINT_EVERY_BYTES: u64 = 8 << 20;

/// Page size of a new database.
const PAGE_SIZE: u32 = 16_384;

/// SQLite's own checkpoint, run by the committing thread, as a safety net
/// (pages): the background checkpointer normally keeps the WAL far shorter.
const AUTOCHECKPOINT_PAGES: u32 = 4_000;

/// Copies committed WAL frames into the database file on a thread of its
/// own (`PRAGMA wal_checkpoint(PASSIVE)` on a second connection), so that a
/// durable append pays for its own WAL write and fsync only, not for the
/// periodic copy of earlier pages (a fifth of an append's time when SQLite
/// runs it inline). Durability is unchanged: a commit is on disk when its
/// WAL frames are synced; the checkpoint only moves them.
#[derive(Debug)]
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(classify)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(classify)?;
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(classify)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("keycard-sqlite-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    // (busy, WAL frames, frames copied)
                    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    });
                    match r {
                        Ok((busy, frames, copied)) => {
                            debug!(busy, frames, copied, "background checkpoint")
                        }
                        Err(e) => debug!(error = %e, "background checkpoint failed"),
                    }
                }
            })
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    fn wake(&self) {
        if let Some(w) = &self.wake {
            // Full: a checkpoint is already due, which covers this one.
            let _ = w.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn classify(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        let text = msg.clone().unwrap_or_else(|| f.to_string());
        match f.code {
            ErrorCode::DiskFull => return StoreError::Full(text),
            ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
                return StoreError::ReadOnly(text)
            }
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                return StoreError::Corrupt(text)
            }
            _ => {}
        }
    }
    StoreError::Backend(Box::new(e))
}

fn hash_of(blob: Vec<u8>, what: &str) -> Result<Hash, StoreError> {
    <Hash>::try_from(blob.as_slice())
        .map_err(|_| StoreError::Malformed(format!("{what} has {} bytes, not 32", blob.len())))
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Malformed(format!("negative {what} {v}")))
}

/// Creates `path` with mode 0600 if it does not exist, before SQLite opens
/// it, so the database is never readable by others even for an instant.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map(drop).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            StoreError::ReadOnly(format!("{}: {e}", path.display()))
        }
        _ => StoreError::Backend(Box::new(e)),
    })
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, &SqliteOptions::default())
    }

    /// Opens the database at `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: &SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = if options.read_only {
            Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(classify)?
        } else {
            create_private(&path)?;
            Connection::open(&path).map_err(classify)?
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(classify)?;
        if !options.read_only {
            // Larger pages mean fewer WAL frames (each its own header,
            // checksum and write) per durable batch of records. Only takes
            // effect on a new database, so it precedes the switch to WAL.
            conn.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE};"))
                .map_err(classify)?;
            // journal_mode returns the mode; query_row reads it.
            let mode: String = conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .map_err(classify)?;
            debug!(path = %path.display(), %mode, "opened decision log database");
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(classify)?;
        if !options.read_only {
            // A batch of appends stays in the page cache until its commit
            // (the default 2 MiB spills mid-transaction), and SQLite's own
            // checkpoint is only the safety net behind the background one.
            conn.execute_batch(&format!(
                "PRAGMA cache_size=-32768; PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES};"
            ))
            .map_err(classify)?;
        }
        if let Some(max) = options.max_size_bytes {
            let page: i64 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(classify)?;
            let pages = (max / page.max(512) as u64).max(1);
            let _: i64 = conn
                .query_row(&format!("PRAGMA max_page_count={pages}"), [], |r| r.get(0))
                .map_err(classify)?;
        }
        let mut store = Self {
            conn,
            path,
            checkpointer: None,
            wal_bytes: 0,
        };
        if options.read_only {
            store.check_version()?;
        } else {
            store.migrate()?;
            store.checkpointer = Some(Checkpointer::start(&store.path)?);
        }
        Ok(store)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version the database is at (0: empty).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let exists: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_migrations'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(classify)?;
        if exists.is_none() {
            return Ok(0);
        }
        let v: Option<u32> = self
            .conn
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .map_err(classify)?;
        Ok(v.unwrap_or(0))
    }

    fn check_version(&self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        if found < known {
            return Err(StoreError::Malformed(format!(
                "{} has schema version {found}; open it for writing once to migrate it to {known}",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_ms INTEGER NOT NULL
            )",
        )
        .map_err(classify)?;
        let current: u32 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(classify)?;
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            info!(version, name, "migrating the store");
            tx.execute_batch(sql).map_err(classify)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
                params![version, name, now_ms()],
            )
            .map_err(classify)?;
        }
        tx.commit().map_err(classify)
    }

    /// A setting of the decision log that every writer must apply (its
    /// redaction), `None` when unset.
    pub fn audit_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM audit_settings WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(classify)
    }

    /// Sets a decision log setting (one durable commit).
    pub fn set_audit_setting(&mut self, name: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO audit_settings (name, value) VALUES (?1, ?2)",
                params![name, value],
            )
            .map(drop)
            .map_err(classify)
    }

    /// Runs SQLite's own structural check (`PRAGMA quick_check`), which
    /// finds a truncated or overwritten file that queries might not touch.
    pub fn quick_check(&self) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA quick_check").map_err(classify)?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(classify)?
            .collect::<Result<_, _>>()
            .map_err(classify)?;
        if rows.len() == 1 && rows.first().is_some_and(|r| r == "ok") {
            Ok(())
        } else {
            Err(StoreError::Corrupt(rows.join("; ")))
        }
    }

    fn entries_where(
        &self,
        sql_where: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let sql = format!("SELECT idx, leaf, data FROM audit_records WHERE {sql_where}");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(classify)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(classify)?;
        let mut out = Vec::new();
        for row in rows {
            let (idx, leaf, data) = row.map_err(classify)?;
            let index = to_u64(idx, "record index")?;
            out.push(StoredEntry {
                index,
                leaf: hash_of(leaf, &format!("leaf hash of record {index}"))?,
                data,
            });
        }
        Ok(out)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl AuditStore for SqliteStore {
    fn append_entries(
        &mut self,
        first: u64,
        entries: &[AuditEntry],
        tiles: &[Tile],
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        let max: Option<i64> = tx
            .query_row("SELECT MAX(idx) FROM audit_records", [], |r| r.get(0))
            .map_err(classify)?;
        let actual = match max {
            Some(m) => to_u64(m, "record index")? + 1,
            None => tx
                .query_row("SELECT boundary FROM audit_prune", [], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
                .map_err(classify)?
                .map_or(Ok(0), |b| to_u64(b, "prune boundary"))?,
        };
        if actual != first {
            return Err(StoreError::Conflict {
                expected: first,
                actual,
            });
        }
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO audit_records
                     (idx, leaf, data, id, time_ms, point, subject, resource, action, outcome, policy)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(classify)?;
            for (i, e) in (first..).zip(entries) {
                let m = &e.meta;
                ins.execute(params![
                    to_i64(i),
                    &e.leaf[..],
                    &e.data,
                    m.id,
                    m.time_ms,
                    m.point,
                    m.subject,
                    m.resource,
                    m.action,
                    m.outcome,
                    m.policy
                ])
                .map_err(classify)?;
            }
            let mut ins = tx
                .prepare_cached("INSERT INTO audit_tiles (level, idx, hash) VALUES (?1, ?2, ?3)")
                .map_err(classify)?;
            for t in tiles {
                ins.execute(params![t.level, to_i64(t.index), &t.hash[..]])
                    .map_err(classify)?;
            }
        }
        tx.commit().map_err(classify)?;
        let added: u64 = entries
            .iter()
            .map(|e| {
                let m = &e.meta;
                (e.data.len()
                    + m.id.len()
                    + m.subject.len()
                    + m.resource.len()
                    + m.action.len()
                    + m.policy.len()
                    + 96) as u64
            })
            .sum();
        self.wal_bytes += added;
        if self.wal_bytes >= CHECKPOINT_EVERY_BYTES {
            self.wal_bytes = 0;
            if let Some(c) = &self.checkpointer {
                c.wake();
            }
        }
        Ok(())
    }

    fn size(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(idx) FROM audit_records", [], |r| r.get(0))
            .map_err(classify)?;
        match max {
            Some(m) => Ok(to_u64(m, "record index")? + 1),
            None => Ok(self.prune_state()?.map_or(0, |p| p.boundary)),
        }
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError> {
        self.entries_where(
            "idx >= ?1 AND idx < ?2 ORDER BY idx",
            &[&to_i64(start), &to_i64(end)],
        )
    }

    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<(u64, Hash)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, leaf FROM audit_records WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )
            .map_err(classify)?;
        let rows = stmt
            .query_map(params![to_i64(start), to_i64(end)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(classify)?;
        let mut out = Vec::new();
        for row in rows {
            let (idx, leaf) = row.map_err(classify)?;
            let index = to_u64(idx, "record index")?;
            out.push((
                index,
                hash_of(leaf, &format!("leaf hash of record {index}"))?,
            ));
        }
        Ok(out)
    }

    fn tiles(&self, level: u32, start: u64, end: u64) -> Result<Vec<Tile>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, hash FROM audit_tiles WHERE level = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
            )
            .map_err(classify)?;
        let rows = stmt
            .query_map(params![level, to_i64(start), to_i64(end)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(classify)?;
        let mut out = Vec::new();
        for row in rows {
            let (idx, hash) = row.map_err(classify)?;
            let index = to_u64(idx, "tile index")?;
            out.push(Tile {
                level,
                index,
                hash: hash_of(hash, &format!("tile {level}/{index}"))?,
            });
        }
        Ok(out)
    }

    fn find_by_id(&self, id: &str) -> Result<Vec<StoredEntry>, StoreError> {
        self.entries_where("id = ?1 ORDER BY idx", &[&id])
    }

    fn query(&self, f: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError> {
        let mut clauses = Vec::new();
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        let text = [
            ("subject", &f.subject),
            ("resource", &f.resource),
            ("outcome", &f.outcome),
            ("policy", &f.policy),
            ("point", &f.point),
        ];
        for (col, v) in text {
            if let Some(v) = v {
                args.push(Box::new(v.clone()));
                clauses.push(format!("{col} = ?{}", args.len()));
            }
        }
        if let Some(t) = f.since_ms {
            args.push(Box::new(t));
            clauses.push(format!("time_ms >= ?{}", args.len()));
        }
        if let Some(t) = f.until_ms {
            args.push(Box::new(t));
            clauses.push(format!("time_ms < ?{}", args.len()));
        }
        if let Some(i) = f.from_index {
            args.push(Box::new(to_i64(i)));
            clauses.push(format!("idx >= ?{}", args.len()));
        }
        let mut sql = if clauses.is_empty() {
            "1".to_string()
        } else {
            clauses.join(" AND ")
        };
        sql.push_str(" ORDER BY idx");
        if let Some(l) = f.limit {
            sql.push_str(&format!(" LIMIT {}", to_i64(l)));
        }
        let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|b| b.as_ref()).collect();
        self.entries_where(&sql, &refs)
    }

    fn put_checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO audit_checkpoints (size, note, created_ms) VALUES (?1, ?2, ?3)",
                params![to_i64(cp.size), cp.note, cp.created_ms],
            )
            .map_err(classify)?;
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT size, note, created_ms FROM audit_checkpoints ORDER BY size")
            .map_err(classify)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(classify)?;
        let mut out = Vec::new();
        for row in rows {
            let (size, note, created_ms) = row.map_err(classify)?;
            out.push(StoredCheckpoint {
                size: to_u64(size, "checkpoint size")?,
                note,
                created_ms,
            });
        }
        Ok(out)
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT size, note, created_ms FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(classify)?;
        row.map(|(size, note, created_ms)| {
            Ok(StoredCheckpoint {
                size: to_u64(size, "checkpoint size")?,
                note,
                created_ms,
            })
        })
        .transpose()
    }

    fn prune_state(&self) -> Result<Option<PruneState>, StoreError> {
        let row = self
            .conn
            .query_row("SELECT boundary, frontier FROM audit_prune", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()
            .map_err(classify)?;
        let Some((boundary, blob)) = row else {
            return Ok(None);
        };
        if blob.len() % 32 != 0 {
            return Err(StoreError::Malformed(format!(
                "prune frontier has {} bytes, not a multiple of 32",
                blob.len()
            )));
        }
        let frontier = blob
            .chunks_exact(32)
            .map(|c| hash_of(c.to_vec(), "prune frontier hash"))
            .collect::<Result<_, _>>()?;
        Ok(Some(PruneState {
            boundary: to_u64(boundary, "prune boundary")?,
            frontier,
        }))
    }

    fn prune(&mut self, state: &PruneState) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        let b = to_i64(state.boundary);
        tx.execute("DELETE FROM audit_records WHERE idx < ?1", [b])
            .map_err(classify)?;
        tx.execute("DELETE FROM audit_checkpoints WHERE size < ?1", [b])
            .map_err(classify)?;
        let blob: Vec<u8> = state.frontier.concat();
        tx.execute(
            "INSERT OR REPLACE INTO audit_prune (one, boundary, frontier) VALUES (1, ?1, ?2)",
            params![b, blob],
        )
        .map_err(classify)?;
        tx.commit().map_err(classify)?;
        info!(boundary = state.boundary, "pruned the decision log");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntryMeta;

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            leaf: [i as u8; 32],
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
    fn appends_reads_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        {
            let mut s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.last().unwrap().0);
            let batch: Vec<_> = (0..10).map(entry).collect();
            s.append_entries(0, &batch, &[]).unwrap();
            assert!(matches!(
                s.append_entries(3, &batch, &[]),
                Err(StoreError::Conflict {
                    expected: 3,
                    actual: 10
                })
            ));
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.size().unwrap(), 10);
        assert_eq!(s.entries(2, 4).unwrap().len(), 2);
        assert_eq!(s.find_by_id("d-7").unwrap()[0].index, 7);
        let denies = s
            .query(&EntryFilter {
                outcome: Some("deny".into()),
                since_ms: Some(4000),
                ..EntryFilter::default()
            })
            .unwrap();
        assert_eq!(
            denies.iter().map(|e| e.index).collect::<Vec<_>>(),
            [5, 7, 9]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn audit_settings_persist_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        {
            let mut s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.audit_setting("redaction").unwrap(), None);
            s.set_audit_setting("redaction", r#"{"rules":[]}"#).unwrap();
        }
        let s = SqliteStore::open_with(
            &path,
            &SqliteOptions {
                read_only: true,
                max_size_bytes: None,
            },
        )
        .unwrap();
        assert_eq!(
            s.audit_setting("redaction").unwrap().as_deref(),
            Some(r#"{"rules":[]}"#)
        );
    }

    #[test]
    fn prune_keeps_indices() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path().join("a.db")).unwrap();
        let batch: Vec<_> = (0..10).map(entry).collect();
        s.append_entries(0, &batch, &[]).unwrap();
        s.prune(&PruneState {
            boundary: 10,
            frontier: vec![[1; 32], [2; 32]],
        })
        .unwrap();
        assert_eq!(s.size().unwrap(), 10);
        assert!(s.entries(0, 10).unwrap().is_empty());
        assert_eq!(s.prune_state().unwrap().unwrap().frontier.len(), 2);
        s.append_entries(10, &[entry(10)], &[]).unwrap();
        assert_eq!(s.size().unwrap(), 11);
    }

    #[test]
    fn size_limit_is_full_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteOptions {
            // Room for the schema (a page per table and index) and some records.
            max_size_bytes: Some(2 << 20),
            read_only: false,
        };
        let mut s = SqliteStore::open_with(dir.path().join("a.db"), &opts).unwrap();
        let mut next = 0;
        let err = loop {
            let batch: Vec<_> = (next..next + 100).map(entry).collect();
            match s.append_entries(next, &batch, &[]) {
                Ok(()) => next += 100,
                Err(e) => break e,
            }
            assert!(next < 100_000, "never filled up");
        };
        assert!(matches!(err, StoreError::Full(_)), "{err}");
        // The failed batch left nothing behind.
        assert_eq!(s.size().unwrap(), next);
    }
}
