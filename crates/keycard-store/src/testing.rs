//! Test support for suites that need a real PostgreSQL (this crate's, the
//! server's, the binary's): a fresh database per test, dropped when the
//! test ends, and the administrative steps outage tests take (terminate
//! every connection, refuse new ones). Not for production use.
//!
//! The server comes from `KEYCARD_TEST_POSTGRES`, a libpq connection
//! string (`host=... user=... dbname=...` or a `postgresql://` URL) for a
//! role that may create databases.

use postgres::{Client, NoTls};

use crate::StoreError;

/// The environment variable naming the test server.
pub const TEST_POSTGRES_ENV: &str = "KEYCARD_TEST_POSTGRES";

fn backend(e: postgres::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// `conninfo` (key=value or a URL) with its database replaced by `db`.
pub fn with_dbname(conninfo: &str, db: &str) -> String {
    match conninfo.split_once("://") {
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
        // The last `dbname` wins.
        None => format!("{conninfo} dbname={db}"),
    }
}

/// A database of its own for one test, dropped (connections and all) when
/// this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin: String,
    name: String,
    conninfo: String,
}

impl TestDatabase {
    /// Creates `kc_<tag>_<pid>` (replacing a leftover of that name) on the
    /// server [`TEST_POSTGRES_ENV`] names; `Ok(None)` when it is unset (the
    /// caller skips). `tag` is lower-case letters, digits and `_`.
    pub fn create(tag: &str) -> Result<Option<Self>, StoreError> {
        let Ok(admin) = std::env::var(TEST_POSTGRES_ENV) else {
            return Ok(None);
        };
        if tag.is_empty()
            || !tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Malformed(format!(
                "test database tag {tag:?}: lower-case letters, digits and '_'"
            )));
        }
        let name = format!("kc_{tag}_{}", std::process::id());
        let mut c = Client::connect(&admin, NoTls).map_err(backend)?;
        // One statement per call: neither may run in a transaction block.
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .map_err(backend)?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(backend)?;
        let conninfo = with_dbname(&admin, &name);
        Ok(Some(TestDatabase {
            admin,
            name,
            conninfo,
        }))
    }

    /// The connection string of the test database.
    pub fn conninfo(&self) -> &str {
        &self.conninfo
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn admin(&self) -> Result<Client, StoreError> {
        Client::connect(&self.admin, NoTls).map_err(backend)
    }

    /// Terminates every connection to the test database, as a restart or
    /// a failover does to its clients; returns how many were terminated.
    pub fn terminate_connections(&self) -> Result<u64, StoreError> {
        let rows = self
            .admin()?
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .map_err(backend)?;
        Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64)
    }

    /// Refuses new connections to the test database (`true`), as a
    /// database that is down does, or accepts them again (`false`).
    pub fn refuse_connections(&self, refuse: bool) -> Result<(), StoreError> {
        self.admin()?
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS {}",
                self.name, !refuse
            ))
            .map_err(backend)
    }

    /// How many connections the test database has now.
    pub fn connections(&self) -> Result<u64, StoreError> {
        let row = self
            .admin()?
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&self.name],
            )
            .map_err(backend)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = &self.name;
        let dropped = self.admin().and_then(|mut c| {
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .map_err(backend)
        });
        if let Err(e) = dropped {
            tracing::warn!(database = %name, error = %e, "could not drop the test database");
        }
    }
}
