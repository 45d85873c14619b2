//! The document half of the PostgreSQL backend (migration 5). Writers take
//! an advisory lock, so revisions become visible in order across replicas
//! and a reader holding revision `r` never skips one that commits late.

use super::{classify, PostgresStore};
use crate::util::{to_i64, to_u64};
use crate::{DocumentStore, PutMode, StoreError, StoredDocument};

const LOCK_DOCUMENTS: i64 = 0x6b63_0005;

const COLUMNS: &str = "SELECT collection, name, revision, body FROM documents";

fn doc(r: &postgres::Row) -> Result<StoredDocument, StoreError> {
    Ok(StoredDocument {
        collection: r.get(0),
        name: r.get(1),
        revision: to_u64(r.get(2), "document revision")?,
        body: r.get(3),
    })
}

/// An owned statement parameter (operations run on the connection's
/// thread, so they own their arguments).
type Param = Box<dyn postgres::types::ToSql + Sync + Send>;

impl PostgresStore {
    fn write_document(
        &mut self,
        collection: &str,
        name: &str,
        body: Option<&[u8]>,
        mode: PutMode,
    ) -> Result<Option<u64>, StoreError> {
        let (collection, name, body) = (
            collection.to_string(),
            name.to_string(),
            body.map(<[u8]>::to_vec),
        );
        self.run(move |c| {
            let mut tx = c.client.transaction().map_err(classify)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_DOCUMENTS])
                .map_err(classify)?;
            let live = tx
                .query_opt(
                    "SELECT body IS NOT NULL FROM documents WHERE collection = $1 AND name = $2",
                    &[&collection, &name],
                )
                .map_err(classify)?
                .is_some_and(|r| r.get::<_, bool>(0));
            if body.is_some() && mode == PutMode::Create && live {
                return Err(StoreError::Duplicate(format!("{collection} {name}")));
            }
            if body.is_none() && !live {
                return Ok(None);
            }
            let next: i64 = tx
                .query_one("SELECT COALESCE(MAX(revision), 0) + 1 FROM documents", &[])
                .map_err(classify)?
                .get(0);
            tx.execute(
                "INSERT INTO documents (collection, name, revision, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (collection, name) DO UPDATE SET revision = excluded.revision, body = excluded.body",
                &[&collection, &name, &next, &body],
            )
            .map_err(classify)?;
            tx.commit().map_err(classify)?;
            Ok(Some(to_u64(next, "document revision")?))
        })
    }

    fn document_rows(
        &self,
        filter: &'static str,
        args: Vec<Param>,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        self.run(move |c| {
            let args: Vec<&(dyn postgres::types::ToSql + Sync)> = args
                .iter()
                .map(|a| a.as_ref() as &(dyn postgres::types::ToSql + Sync))
                .collect();
            let rows = c
                .client
                .query(&format!("{COLUMNS} {filter}"), &args)
                .map_err(classify)?;
            rows.iter().map(doc).collect()
        })
    }
}

impl DocumentStore for PostgresStore {
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
                "WHERE collection = $1 AND name = $2 AND body IS NOT NULL",
                vec![Box::new(collection.to_string()), Box::new(name.to_string())],
            )?
            .pop())
    }

    fn documents(&self, collection: &str) -> Result<Vec<StoredDocument>, StoreError> {
        self.document_rows(
            "WHERE collection = $1 AND body IS NOT NULL ORDER BY name",
            vec![Box::new(collection.to_string())],
        )
    }

    fn documents_since(&self, revision: u64) -> Result<Vec<StoredDocument>, StoreError> {
        self.document_rows(
            "WHERE revision > $1 ORDER BY revision",
            vec![Box::new(to_i64(revision))],
        )
    }

    fn document_revision(&self) -> Result<u64, StoreError> {
        self.run(|c| {
            let v: i64 = c
                .client
                .query_one("SELECT COALESCE(MAX(revision), 0) FROM documents", &[])
                .map_err(classify)?
                .get(0);
            to_u64(v, "document revision")
        })
    }
}
