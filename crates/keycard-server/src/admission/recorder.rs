//! Where admission decisions go: a [`DecisionSink`] (the decision log, or
//! anything else the server plugs in), fed by a [`Recorder`] that batches
//! concurrent decisions into one durable append (group commit) and tells
//! each request when its record is stored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keycard_audit::{DecisionLog, Record};
use keycard_store::AuditStore;
use tokio::sync::{mpsc, oneshot};

/// Durable storage for decision records.
pub trait DecisionSink: Send + Sync + 'static {
    /// Stores `records`, all or none; returns once they are durable.
    fn append(&self, records: Vec<Record>) -> Result<(), String>;
}

/// The decision log is a sink: `Arc::new(Mutex::new(log))`.
impl<S> DecisionSink for Mutex<DecisionLog<S>>
where
    S: AuditStore + Send + 'static,
{
    fn append(&self, records: Vec<Record>) -> Result<(), String> {
        let mut log = self
            .lock()
            .map_err(|_| "the decision log's lock is poisoned".to_string())?;
        log.append(records).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// A sink that keeps records in memory (tests, and `--audit-log` unset
/// when a caller still wants to see decisions).
#[derive(Debug, Default)]
pub struct MemorySink {
    records: Mutex<Vec<Record>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record stored so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl DecisionSink for MemorySink {
    fn append(&self, records: Vec<Record>) -> Result<(), String> {
        self.records
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .extend(records);
        Ok(())
    }
}

type Job = (Record, oneshot::Sender<Result<(), String>>);

/// Batches records from many requests into few appends on one thread.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
}

/// Why a record was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the decision log is not accepting records (queue full or stopped)")]
    Unavailable,
    #[error("the decision log did not store the record within {0:?}")]
    Timeout(Duration),
    #[error("the decision log failed: {0}")]
    Sink(String),
}

impl Recorder {
    /// Starts the writer thread. At most `queue` records wait; one append
    /// takes at most `max_batch` of them. The thread ends when every
    /// [`Recorder`] clone is dropped.
    pub fn spawn(sink: Arc<dyn DecisionSink>, queue: usize, max_batch: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(queue.max(1));
        let max_batch = max_batch.max(1);
        let spawned = std::thread::Builder::new()
            .name("keycard-admission-log".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < max_batch {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    let (records, waiters): (Vec<Record>, Vec<_>) = batch.into_iter().unzip();
                    let n = records.len();
                    let res = sink.append(records);
                    if let Err(e) = &res {
                        tracing::error!(error = %e, records = n, "could not store admission decisions");
                    }
                    for w in waiters {
                        let _ = w.send(res.clone());
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread every record fails with Unavailable, and
            // the failure mode decides: the channel's receiver is dropped.
            tracing::error!(error = %e, "could not start the decision log writer");
        }
        Recorder { tx }
    }

    /// Queues `record` and waits (at most `timeout`) until it is stored.
    pub async fn record(&self, record: Record, timeout: Duration) -> Result<(), RecordError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .try_send((record, done))
            .map_err(|_| RecordError::Unavailable)?;
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(RecordError::Timeout(timeout)),
            Ok(Err(_)) => Err(RecordError::Unavailable),
            Ok(Ok(r)) => r.map_err(RecordError::Sink),
        }
    }
}

/// The server's shared decision log is a sink too.
impl DecisionSink for crate::decisions::Decisions {
    fn append(&self, records: Vec<Record>) -> Result<(), String> {
        crate::decisions::Decisions::append(self, records)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
