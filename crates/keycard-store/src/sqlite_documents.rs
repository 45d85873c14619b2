//! The document half of the SQLite backend (migration 5): one row per
//! (collection, name), its revision unique, a NULL body for a tombstone.
//! Writers take SQLite's write lock first (`BEGIN IMMEDIATE`), so the next
//! revision is read and written in one step across connections.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::sqlite::classify;
use crate::util::{to_i64, to_u64};
use crate::{DocumentStore, PutMode, SqliteStore, StoreError, StoredDocument};

type Row = (String, String, i64, Option<Vec<u8>>);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn doc((collection, name, revision, body): Row) -> Result<StoredDocument, StoreError> {
    Ok(StoredDocument {
        collection,
        name,
        revision: to_u64(revision, "document revision")?,
        body,
    })
}

const COLUMNS: &str = "SELECT collection, name, revision, body FROM documents";

impl SqliteStore {
    fn document_rows(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{COLUMNS} {filter}"))
            .map_err(classify)?;
        let rows = st.query_map(args, row).map_err(classify)?;
        rows.map(|r| doc(r.map_err(classify)?)).collect()
    }

    /// Writes `body` (or a tombstone) at the next revision; `None` when a
    /// delete found nothing to delete.
    fn write_document(
        &mut self,
        collection: &str,
        name: &str,
        body: Option<&[u8]>,
        mode: PutMode,
    ) -> Result<Option<u64>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        let live: Option<bool> = tx
            .query_row(
                "SELECT body IS NOT NULL FROM documents WHERE collection = ?1 AND name = ?2",
                params![collection, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(classify)?;
        let live = live.unwrap_or(false);
        if body.is_some() && mode == PutMode::Create && live {
            return Err(StoreError::Duplicate(format!("{collection} {name}")));
        }
        if body.is_none() && !live {
            return Ok(None);
        }
        let next: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(revision), 0) + 1 FROM documents",
                [],
                |r| r.get(0),
            )
            .map_err(classify)?;
        tx.execute(
            "INSERT INTO documents (collection, name, revision, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (collection, name) DO UPDATE SET revision = excluded.revision, body = excluded.body",
            params![collection, name, next, body],
        )
        .map_err(classify)?;
        tx.commit().map_err(classify)?;
        Ok(Some(to_u64(next, "document revision")?))
    }
}

impl DocumentStore for SqliteStore {
    fn put_document(
        &mut self,
        collection: &str,
        name: &str,
        body: &[u8],
        mode: PutMode,
    ) -> Result<u64, StoreError> {
        self.write_document(collection, name, Some(body), mode)?
            .ok_or_else(|| StoreError::Malformed("a write without a revision".into()))
    }

    fn delete_document(&mut self, collection: &str, name: &str) -> Result<Option<u64>, StoreError> {
        self.write_document(collection, name, None, PutMode::Upsert)
    }

    fn document(&self, collection: &str, name: &str) -> Result<Option<StoredDocument>, StoreError> {
        Ok(self
            .document_rows(
                "WHERE collection = ?1 AND name = ?2 AND body IS NOT NULL",
                params![collection, name],
            )?
            .pop())
    }

    fn documents(&self, collection: &str) -> Result<Vec<StoredDocument>, StoreError> {
        self.document_rows(
            "WHERE collection = ?1 AND body IS NOT NULL ORDER BY name",
            params![collection],
        )
    }

    fn documents_since(&self, revision: u64) -> Result<Vec<StoredDocument>, StoreError> {
        self.document_rows(
            "WHERE revision > ?1 ORDER BY revision",
            params![to_i64(revision)],
        )
    }

    fn document_revision(&self) -> Result<u64, StoreError> {
        let v: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(revision), 0) FROM documents",
                [],
                |r| r.get(0),
            )
            .map_err(classify)?;
        to_u64(v, "document revision")
    }
}
