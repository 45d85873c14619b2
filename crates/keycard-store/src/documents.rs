//! Versioned documents: named texts in collections (policies, exceptions)
//! with one change feed across every collection.
//!
//! Every write or delete gives the document the next revision of the feed
//! (1, 2, ...; never reused), and a delete leaves a tombstone, so a reader
//! holding revision `r` learns everything that changed after it, deletions
//! included, from [`DocumentStore::documents_since`]. A reader that saw
//! revision `r` has seen every change at or below `r`: backends that many
//! servers share serialise writers so revisions become visible in order.

use crate::StoreError;

/// One document as stored, or its tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// The collection (`policy`, `exception`, ...).
    pub collection: String,
    /// The name, unique within the collection.
    pub name: String,
    /// The revision of its last change.
    pub revision: u64,
    /// The document, or `None` once deleted.
    pub body: Option<Vec<u8>>,
}

/// How [`DocumentStore::put_document`] treats an existing document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Only if no live document has the name ([`StoreError::Duplicate`]
    /// otherwise).
    Create,
    /// Create, or replace the live document.
    Upsert,
}

/// Storage of versioned documents.
pub trait DocumentStore {
    /// Writes `body` as `collection/name`, returning its new revision.
    fn put_document(
        &mut self,
        collection: &str,
        name: &str,
        body: &[u8],
        mode: PutMode,
    ) -> Result<u64, StoreError>;
    /// Deletes `collection/name`, leaving a tombstone; returns its revision,
    /// or `None` when there was no live document.
    fn delete_document(&mut self, collection: &str, name: &str) -> Result<Option<u64>, StoreError>;
    /// The live document `collection/name`.
    fn document(&self, collection: &str, name: &str) -> Result<Option<StoredDocument>, StoreError>;
    /// Every live document of `collection`, by name.
    fn documents(&self, collection: &str) -> Result<Vec<StoredDocument>, StoreError>;
    /// Documents and tombstones (of every collection) changed after
    /// `revision`, each in its latest state, in revision order.
    fn documents_since(&self, revision: u64) -> Result<Vec<StoredDocument>, StoreError>;
    /// The highest revision handed out (0 before the first write).
    fn document_revision(&self) -> Result<u64, StoreError>;
}
