//! The document half of the in-memory fake.

use std::collections::BTreeMap;

use crate::{DocumentStore, MemoryStore, PutMode, StoreError, StoredDocument};

/// (collection, name) -> (revision, body or tombstone).
type Docs = BTreeMap<(String, String), (u64, Option<Vec<u8>>)>;

/// Documents of a [`MemoryStore`], by (collection, name).
#[derive(Debug, Clone, Default)]
pub(crate) struct DocumentTables {
    docs: Docs,
    last: u64,
}

fn stored(k: &(String, String), v: &(u64, Option<Vec<u8>>)) -> StoredDocument {
    StoredDocument {
        collection: k.0.clone(),
        name: k.1.clone(),
        revision: v.0,
        body: v.1.clone(),
    }
}

impl DocumentStore for MemoryStore {
    fn put_document(
        &mut self,
        collection: &str,
        name: &str,
        body: &[u8],
        mode: PutMode,
    ) -> Result<u64, StoreError> {
        let t = &mut self.documents;
        let key = (collection.to_string(), name.to_string());
        if mode == PutMode::Create && t.docs.get(&key).is_some_and(|(_, b)| b.is_some()) {
            return Err(StoreError::Duplicate(format!("{collection} {name}")));
        }
        t.last += 1;
        t.docs.insert(key, (t.last, Some(body.to_vec())));
        Ok(t.last)
    }

    fn delete_document(&mut self, collection: &str, name: &str) -> Result<Option<u64>, StoreError> {
        let t = &mut self.documents;
        let key = (collection.to_string(), name.to_string());
        if !t.docs.get(&key).is_some_and(|(_, b)| b.is_some()) {
            return Ok(None);
        }
        t.last += 1;
        t.docs.insert(key, (t.last, None));
        Ok(Some(t.last))
    }

    fn document(&self, collection: &str, name: &str) -> Result<Option<StoredDocument>, StoreError> {
        let key = (collection.to_string(), name.to_string());
        Ok(self
            .documents
            .docs
            .get(&key)
            .filter(|(_, b)| b.is_some())
            .map(|v| stored(&key, v)))
    }

    fn documents(&self, collection: &str) -> Result<Vec<StoredDocument>, StoreError> {
        Ok(self
            .documents
            .docs
            .iter()
            .filter(|(k, v)| k.0 == collection && v.1.is_some())
            .map(|(k, v)| stored(k, v))
            .collect())
    }

    fn documents_since(&self, revision: u64) -> Result<Vec<StoredDocument>, StoreError> {
        let mut out: Vec<StoredDocument> = self
            .documents
            .docs
            .iter()
            .filter(|(_, v)| v.0 > revision)
            .map(|(k, v)| stored(k, v))
            .collect();
        out.sort_by_key(|d| d.revision);
        Ok(out)
    }

    fn document_revision(&self) -> Result<u64, StoreError> {
        Ok(self.documents.last)
    }
}
