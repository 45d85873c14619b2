//! The writer an enforcement point on a hot path (ext_authz, the proxy)
//! puts its decisions through: requests only queue a record; a thread of its
//! own commits what is queued in batches (one durable transaction each) and
//! signs checkpoints on the log's schedule and on a timer.
//!
//! The writer also tells the point whether the log can take records, so it
//! can apply its [`FailureMode`]: the log is *unavailable* after a commit
//! failed (full disk, read-only or removed database) until a retry
//! succeeds, and after the queue stayed full for longer than
//! [`WriterConfig::full_wait`] until it drains. A failed batch is kept and
//! retried, so records the writer accepted are not lost to a transient
//! failure while the process lives.
//!
//! ```
//! use std::time::Duration;
//! use keycard_audit::writer::{AuditWriter, WriterConfig};
//! use keycard_audit::{DecisionLog, Ed25519Signer, Record};
//! use keycard_store::{AuditStore, MemoryStore};
//!
//! let key = Ed25519Signer::generate("keycard.example/decisions").unwrap();
//! let log = DecisionLog::open("keycard.example/decisions", MemoryStore::new(), Box::new(key)).unwrap();
//! let w = AuditWriter::start(log, WriterConfig::default()).unwrap();
//! let rec: Record = serde_json::from_str(
//!     r#"{"point":"ext_authz","outcome":"deny","id":"r-1","policy":"prod/api","rule":"-"}"#,
//! ).unwrap();
//! assert!(w.available());
//! w.submit(rec).unwrap();
//! let log = w.close(Duration::from_secs(5)).unwrap(); // commits, signs a checkpoint
//! assert_eq!(log.store().size().unwrap(), 1);
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keycard_store::AuditStore;
use thiserror::Error;
use tracing::{error, info, warn};

use crate::decision::{DecisionLog, FailureMode};
use crate::record::Record;

/// How the writer queues, commits and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Records waiting for a commit, at most.
    pub queue: usize,
    /// Records per commit, at most.
    pub batch: usize,
    /// How long a submitter waits for room in a full queue before the log
    /// counts as unavailable (fail-closed only; fail-open never waits).
    pub full_wait: Duration,
    /// Pause between retries of a failed commit.
    pub retry: Duration,
    /// How often a quiet log is offered a checkpoint (the log's own
    /// [`CheckpointPolicy`](crate::CheckpointPolicy) decides whether one is due).
    pub tick: Duration,
    /// What the enforcement point does when the log cannot take a record.
    pub mode: FailureMode,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue: 65_536,
            batch: 4_096,
            full_wait: Duration::from_millis(200),
            retry: Duration::from_millis(250),
            tick: Duration::from_millis(500),
            mode: FailureMode::FailClosed,
        }
    }
}

/// Why a record was not queued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejected {
    /// The last commit failed and no retry has succeeded since.
    #[error("the decision log cannot be written: {0}")]
    WriteFailed(String),
    /// The queue stayed full for longer than the configured wait.
    #[error("the decision log's queue is full: records arrive faster than they are stored")]
    QueueFull,
    /// The writer was closed.
    #[error("the decision log writer is closed")]
    Closed,
}

/// What the writer did so far (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records durably committed.
    pub committed: u64,
    /// Records not queued (and so never stored).
    pub dropped: u64,
    /// Commits that failed.
    pub write_errors: u64,
    /// Records waiting.
    pub queued: u64,
    /// Whether the log can take records now.
    pub available: bool,
}

struct Queue {
    items: VecDeque<Record>,
    closed: bool,
    writer_idle: bool,
}

struct Shared {
    cfg: WriterConfig,
    q: Mutex<Queue>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes submitters waiting for room.
    room: Condvar,
    failed: AtomicBool,
    stalled: AtomicBool,
    committed: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    last_error: Mutex<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reason(&self) -> Rejected {
        if self.failed.load(Ordering::Acquire) {
            let e = self
                .last_error
                .lock()
                .map(|g| g.clone())
                .unwrap_or_default();
            Rejected::WriteFailed(e)
        } else {
            Rejected::QueueFull
        }
    }
}

/// A decision log behind a queue and a writer thread. Cheap to share
/// behind an `Arc`; every method may be called from many threads.
pub struct AuditWriter<S: AuditStore + Send + 'static> {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<DecisionLog<S>>>>,
}

impl<S: AuditStore + Send + 'static> std::fmt::Debug for AuditWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: AuditStore + Send + 'static> AuditWriter<S> {
    /// Starts the writer thread over `log`.
    pub fn start(log: DecisionLog<S>, cfg: WriterConfig) -> std::io::Result<Self> {
        let cfg = WriterConfig {
            queue: cfg.queue.max(1),
            batch: cfg.batch.max(1),
            ..cfg
        };
        let shared = Arc::new(Shared {
            cfg,
            q: Mutex::new(Queue {
                items: VecDeque::with_capacity(cfg.queue.min(4_096)),
                closed: false,
                writer_idle: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
            failed: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            committed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("keycard-audit-writer".into())
            .spawn(move || run(log, &s))?;
        Ok(AuditWriter {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The configured failure mode.
    pub fn mode(&self) -> FailureMode {
        self.shared.cfg.mode
    }

    /// Whether the log can take records: no failed commit outstanding and
    /// the queue not stalled.
    pub fn available(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire) && !self.shared.stalled.load(Ordering::Acquire)
    }

    /// Queues `rec`. When the queue is full, a fail-closed writer waits up
    /// to [`WriterConfig::full_wait`] for room (backpressure), then marks
    /// the log unavailable; a fail-open one never waits. A record not
    /// queued is counted as dropped.
    pub fn submit(&self, rec: Record) -> Result<(), Rejected> {
        let wait = match self.shared.cfg.mode {
            FailureMode::FailClosed => self.shared.cfg.full_wait,
            FailureMode::FailOpen => Duration::ZERO,
        };
        self.push(rec, wait)
    }

    /// Queues `rec` if there is room now, without waiting (for records of
    /// requests already refused because the log is unavailable).
    pub fn try_submit(&self, rec: Record) -> Result<(), Rejected> {
        self.push(rec, Duration::ZERO)
    }

    fn push(&self, rec: Record, wait: Duration) -> Result<(), Rejected> {
        let sh = &*self.shared;
        let mut q = sh.lock();
        if q.closed {
            drop(q);
            sh.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Rejected::Closed);
        }
        if q.items.len() >= sh.cfg.queue {
            if wait.is_zero() || sh.stalled.load(Ordering::Acquire) {
                drop(q);
                sh.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(Rejected::QueueFull);
            }
            let deadline = Instant::now() + wait;
            while q.items.len() >= sh.cfg.queue && !q.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    if !sh.stalled.swap(true, Ordering::AcqRel) {
                        warn!(
                            queue = sh.cfg.queue,
                            "decision log queue full: records arrive faster than they are stored"
                        );
                    }
                    drop(q);
                    sh.dropped.fetch_add(1, Ordering::Relaxed);
                    return Err(Rejected::QueueFull);
                }
                q = sh
                    .room
                    .wait_timeout(q, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if q.closed {
                drop(q);
                sh.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(Rejected::Closed);
            }
        }
        q.items.push_back(rec);
        let wake = q.writer_idle;
        if wake {
            q.writer_idle = false;
        }
        drop(q);
        if wake {
            sh.work.notify_one();
        }
        Ok(())
    }

    /// Why the log is unavailable (or would reject), for messages.
    pub fn unavailable_reason(&self) -> Rejected {
        self.shared.reason()
    }

    /// Counters and state.
    pub fn stats(&self) -> WriterStats {
        let sh = &*self.shared;
        WriterStats {
            committed: sh.committed.load(Ordering::Relaxed),
            dropped: sh.dropped.load(Ordering::Relaxed),
            write_errors: sh.write_errors.load(Ordering::Relaxed),
            queued: sh.lock().items.len() as u64,
            available: self.available(),
        }
    }

    /// Stops taking records, commits what is queued (one more attempt if
    /// the store is failing), signs a final checkpoint and returns the log.
    /// Waits at most `timeout` for the writer; `None` if it did not end in
    /// time (it keeps going in the background) or was already closed.
    pub fn close(&self, timeout: Duration) -> Option<DecisionLog<S>> {
        {
            let mut q = self.shared.lock();
            q.closed = true;
        }
        self.shared.work.notify_all();
        self.shared.room.notify_all();
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let deadline = Instant::now() + timeout;
        while !handle.is_finished() {
            if Instant::now() >= deadline {
                warn!("the decision log writer did not finish in time; records still queued may be lost");
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        handle.join().ok()
    }
}

impl<S: AuditStore + Send + 'static> Drop for AuditWriter<S> {
    fn drop(&mut self) {
        let _ = self.close(Duration::from_secs(5));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The writer thread: take a batch, commit it (retrying a failure), repeat.
fn run<S: AuditStore>(mut log: DecisionLog<S>, sh: &Shared) -> DecisionLog<S> {
    let mut batch: Vec<Record> = Vec::new();
    loop {
        let closed = {
            let mut q = sh.lock();
            while q.items.is_empty() && !q.closed {
                q.writer_idle = true;
                let (g, timeout) = sh
                    .work
                    .wait_timeout(q, sh.cfg.tick)
                    .unwrap_or_else(|p| p.into_inner());
                q = g;
                if timeout.timed_out() && q.items.is_empty() {
                    q.writer_idle = false;
                    drop(q);
                    if let Err(e) = log.maybe_checkpoint(now_ms()) {
                        warn!(error = %e, "could not sign a checkpoint; will retry");
                    }
                    q = sh.lock();
                }
            }
            q.writer_idle = false;
            let n = q.items.len().min(sh.cfg.batch);
            batch.extend(q.items.drain(..n));
            q.closed
        };
        sh.room.notify_all();
        if batch.is_empty() && closed {
            break;
        }
        commit(&mut log, sh, &mut batch, closed);
        if closed && sh.lock().items.is_empty() {
            break;
        }
    }
    if let Err(e) = log.checkpoint() {
        warn!(error = %e, "could not sign the final checkpoint");
    }
    log
}

/// Commits `batch`, retrying while the store fails (once when closing).
fn commit<S: AuditStore>(
    log: &mut DecisionLog<S>,
    sh: &Shared,
    batch: &mut Vec<Record>,
    closing: bool,
) {
    let mut attempts = 0u32;
    loop {
        // The batch is kept until it is stored: a failed commit stored
        // nothing and is retried as it was.
        match log.append(batch.clone()) {
            Ok(done) => {
                sh.committed.fetch_add(done.len() as u64, Ordering::Relaxed);
                batch.clear();
                if sh.failed.swap(false, Ordering::AcqRel) {
                    info!("the decision log takes records again");
                }
                if sh.lock().items.len() < sh.cfg.queue / 2 + 1 {
                    sh.stalled.store(false, Ordering::Release);
                }
                return;
            }
            Err(e) => {
                sh.write_errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = sh.last_error.lock() {
                    *g = e.to_string();
                }
                if !sh.failed.swap(true, Ordering::AcqRel) {
                    error!(error = %e, records = batch.len(), "the decision log cannot be written; enforcement follows its failure mode until it can");
                }
                attempts += 1;
                let closed = closing || sh.lock().closed;
                if closed && attempts >= 2 {
                    sh.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    error!(
                        records = batch.len(),
                        "closing with records the decision log could not store"
                    );
                    batch.clear();
                    return;
                }
                // Sleep, but wake early when closing.
                let q = sh.lock();
                if !q.closed {
                    let _ = sh.work.wait_timeout(q, sh.cfg.retry);
                }
            }
        }
    }
}

/// An [`AuditWriter`] with its store type erased, so enforcement points can
/// hold one of any backend (and tests a failing one).
pub trait DecisionWriter: Send + Sync {
    /// See [`AuditWriter::available`].
    fn available(&self) -> bool;
    /// See [`AuditWriter::submit`].
    fn submit(&self, rec: Record) -> Result<(), Rejected>;
    /// See [`AuditWriter::try_submit`].
    fn try_submit(&self, rec: Record) -> Result<(), Rejected>;
    /// See [`AuditWriter::stats`].
    fn stats(&self) -> WriterStats;
    /// See [`AuditWriter::mode`].
    fn mode(&self) -> FailureMode;
    /// See [`AuditWriter::unavailable_reason`].
    fn unavailable_reason(&self) -> Rejected;
    /// Commits what is queued and signs a final checkpoint; whether the
    /// writer finished within `timeout`.
    fn shutdown(&self, timeout: Duration) -> bool;
}

impl<S: AuditStore + Send + 'static> DecisionWriter for AuditWriter<S> {
    fn available(&self) -> bool {
        AuditWriter::available(self)
    }
    fn submit(&self, rec: Record) -> Result<(), Rejected> {
        AuditWriter::submit(self, rec)
    }
    fn try_submit(&self, rec: Record) -> Result<(), Rejected> {
        AuditWriter::try_submit(self, rec)
    }
    fn stats(&self) -> WriterStats {
        AuditWriter::stats(self)
    }
    fn mode(&self) -> FailureMode {
        AuditWriter::mode(self)
    }
    fn unavailable_reason(&self) -> Rejected {
        AuditWriter::unavailable_reason(self)
    }
    fn shutdown(&self, timeout: Duration) -> bool {
        self.close(timeout).is_some()
    }
}
