//! SVID rotation: each cached SVID is renewed on its own timer at about half
//! its lifetime (uniformly within +-10% of the lifetime around the
//! half-life, so SVIDs issued together do not renew together), never on
//! traffic, with exponential backoff on error; a revoked SVID is dropped at
//! once.
//!
//! Time comes from a [`Clock`]; [`TokioClock`] follows tokio's clock, so the
//! scheduler is tested with paused time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, Notify, Semaphore};
use tokio::time::Instant;

use crate::attest::BoxFuture;
use crate::ca::{Expiry, JwtSvid, X509Svid};

/// Wall-clock time.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Wall-clock time that advances with tokio's clock (and so stands still,
/// or jumps, with `tokio::time::pause`/`advance`).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: SystemTime,
    start: Instant,
}

impl TokioClock {
    /// A clock reading `base` now.
    pub fn new(base: SystemTime) -> Self {
        TokioClock {
            base,
            start: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

/// Anything with a validity period.
pub trait Expiring {
    fn not_before(&self) -> SystemTime;
    fn not_after(&self) -> SystemTime;
}

impl Expiring for X509Svid {
    fn not_before(&self) -> SystemTime {
        self.not_before
    }
    fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

impl Expiring for JwtSvid {
    fn not_before(&self) -> SystemTime {
        self.issued_at
    }
    fn not_after(&self) -> SystemTime {
        self.expiry
    }
}

/// When to renew something valid from `not_before` to `not_after`: at
/// half-life plus `jitter * lifetime * u`, `u` uniform in [-1, 1)
/// (`jitter` 0.1 gives the 40%-60% window).
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    let jitter = jitter.clamp(0.0, 0.45);
    let u: f64 = rand::random::<f64>() * 2.0 - 1.0;
    not_before + Duration::from_secs_f64(life * (0.5 + jitter * u))
}

/// Why a renewal failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewError {
    /// The SVID was revoked (entry deleted, agent banned): stop renewing it
    /// and drop it.
    #[error("revoked: {0}")]
    Revoked(String),
    /// A transient failure (server unreachable...): retry with backoff.
    #[error("renewal failed: {0}")]
    Failed(String),
}

/// Gets a fresh SVID for `key` (the agent calls the server; the server
/// calls its CA).
pub trait Renewer<T>: Send + Sync + 'static {
    fn renew<'a>(&'a self, key: &'a str, current: &'a T) -> BoxFuture<'a, Result<T, RenewError>>;
}

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    /// Fraction of the lifetime by which renewal is spread around the
    /// half-life. Default 0.1.
    pub jitter: f64,
    /// First retry delay after an error. Default 1 s.
    pub min_backoff: Duration,
    /// Longest retry delay. Default 60 s.
    pub max_backoff: Duration,
    /// Renewals in flight at once. Default 32.
    pub max_concurrent: usize,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            jitter: 0.1,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_concurrent: 32,
        }
    }
}

/// What the cache did, for streams to push (new SVIDs on rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// `key` has a new SVID.
    Updated(String),
    /// `key` was revoked or removed.
    Removed(String),
    /// A renewal of `key` failed; retrying after the given delay.
    RenewFailed {
        key: String,
        error: String,
        retry_in: Duration,
    },
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationStats {
    pub renewed: u64,
    pub failed: u64,
    pub revoked: u64,
}

struct Slot<T> {
    svid: Arc<T>,
    generation: u64,
    due: Instant,
    failures: u32,
    in_flight: bool,
}

struct State<T> {
    slots: HashMap<String, Slot<T>>,
    queue: BTreeSet<(Instant, String)>,
    next_generation: u64,
    stats: RotationStats,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    notify: Notify,
    events: broadcast::Sender<CacheEvent>,
    clock: Arc<dyn Clock>,
    renewer: Arc<dyn Renewer<T>>,
    config: RotationConfig,
    permits: Arc<Semaphore>,
}

/// A cache of SVIDs, each renewed on its own timer by a background task.
pub struct Rotator<T> {
    inner: Arc<Inner<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Drop for Rotator<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Expiring + Send + Sync + 'static> Inner<T> {
    fn instant_of(&self, t: SystemTime) -> Instant {
        let now = self.clock.now();
        match t.duration_since(now) {
            Ok(d) => Instant::now() + d,
            Err(_) => Instant::now(),
        }
    }

    fn schedule(&self, st: &mut State<T>, key: &str, svid: Arc<T>) {
        let due = self.instant_of(renewal_time(
            svid.not_before(),
            svid.not_after(),
            self.config.jitter,
        ));
        if let Some(old) = st.slots.get(key) {
            st.queue.remove(&(old.due, key.to_string()));
        }
        st.next_generation += 1;
        let generation = st.next_generation;
        st.slots.insert(
            key.to_string(),
            Slot {
                svid,
                generation,
                due,
                failures: 0,
                in_flight: false,
            },
        );
        st.queue.insert((due, key.to_string()));
    }

    async fn renew_one(self: Arc<Self>, key: String, current: Arc<T>, generation: u64) {
        let _permit = self.permits.clone().acquire_owned().await;
        let result = self.renewer.renew(&key, &current).await;
        let mut st = lock(&self.state);
        if st.slots.get(&key).map(|s| s.generation) != Some(generation) {
            // Replaced or removed while renewing: the newer state wins.
            return;
        }
        let event = match result {
            Ok(new) => {
                st.stats.renewed += 1;
                self.schedule(&mut st, &key, Arc::new(new));
                tracing::debug!(key = %key, "SVID renewed");
                CacheEvent::Updated(key)
            }
            Err(RenewError::Revoked(reason)) => {
                st.stats.revoked += 1;
                st.slots.remove(&key);
                tracing::info!(key = %key, reason = %reason, "SVID revoked; renewals stopped");
                CacheEvent::Removed(key)
            }
            Err(RenewError::Failed(error)) => {
                st.stats.failed += 1;
                let Some(slot) = st.slots.get_mut(&key) else {
                    return;
                };
                slot.failures += 1;
                let exp = self
                    .config
                    .min_backoff
                    .saturating_mul(1u32 << slot.failures.min(16).saturating_sub(1));
                let base = exp.min(self.config.max_backoff);
                // Full jitter in [base/2, base].
                let retry_in = base.mul_f64(0.5 + rand::random::<f64>() * 0.5);
                slot.due = Instant::now() + retry_in;
                slot.in_flight = false;
                let due = slot.due;
                st.queue.insert((due, key.clone()));
                tracing::warn!(key = %key, error = %error, retry_in_ms = retry_in.as_millis() as u64, "SVID renewal failed");
                CacheEvent::RenewFailed {
                    key,
                    error,
                    retry_in,
                }
            }
        };
        drop(st);
        self.notify.notify_one();
        let _ = self.events.send(event);
    }

    async fn run(self: Arc<Self>) {
        loop {
            let next = lock(&self.state).queue.first().map(|(due, _)| *due);
            match next {
                None => self.notify.notified().await,
                Some(due) if due > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = self.notify.notified() => {}
                    }
                }
                Some(_) => {}
            }
            let now = Instant::now();
            let mut due_now = Vec::new();
            {
                let mut st = lock(&self.state);
                while let Some((due, key)) = st.queue.first().cloned() {
                    if due > now {
                        break;
                    }
                    st.queue.pop_first();
                    if let Some(slot) = st.slots.get_mut(&key) {
                        if slot.due == due && !slot.in_flight {
                            slot.in_flight = true;
                            due_now.push((key, slot.svid.clone(), slot.generation));
                        }
                    }
                }
            }
            for (key, svid, generation) in due_now {
                tokio::spawn(self.clone().renew_one(key, svid, generation));
            }
        }
    }
}

impl<T: Expiring + Send + Sync + 'static> Rotator<T> {
    /// Starts the scheduler (spawns its task on the current runtime).
    pub fn new(
        config: RotationConfig,
        clock: Arc<dyn Clock>,
        renewer: Arc<dyn Renewer<T>>,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        let permits = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                slots: HashMap::new(),
                queue: BTreeSet::new(),
                next_generation: 0,
                stats: RotationStats::default(),
            }),
            notify: Notify::new(),
            events,
            clock,
            renewer,
            config,
            permits,
        });
        let task = tokio::spawn(inner.clone().run());
        Rotator { inner, task }
    }

    /// Caches `svid` under `key` and schedules its renewal.
    pub fn insert(&self, key: &str, svid: T) {
        {
            let mut st = lock(&self.inner.state);
            self.inner.schedule(&mut st, key, Arc::new(svid));
        }
        self.inner.notify.notify_one();
        let _ = self.inner.events.send(CacheEvent::Updated(key.to_string()));
    }

    /// Drops `key` (its entry was deleted or revoked): no more renewals.
    pub fn remove(&self, key: &str) -> bool {
        let removed = {
            let mut st = lock(&self.inner.state);
            match st.slots.remove(key) {
                Some(slot) => {
                    st.queue.remove(&(slot.due, key.to_string()));
                    true
                }
                None => false,
            }
        };
        if removed {
            let _ = self.inner.events.send(CacheEvent::Removed(key.to_string()));
        }
        removed
    }

    /// The cached SVID of `key`.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        lock(&self.inner.state)
            .slots
            .get(key)
            .map(|s| s.svid.clone())
    }

    /// Every cached SVID.
    pub fn snapshot(&self) -> BTreeMap<String, Arc<T>> {
        lock(&self.inner.state)
            .slots
            .iter()
            .map(|(k, s)| (k.clone(), s.svid.clone()))
            .collect()
    }

    /// How many SVIDs are cached.
    pub fn len(&self) -> usize {
        lock(&self.inner.state).slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters.
    pub fn stats(&self) -> RotationStats {
        lock(&self.inner.state).stats
    }

    /// Events (updates, removals, failures) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.inner.events.subscribe()
    }

    /// Seconds to expiry of every cached SVID, for the metric.
    pub fn expiries(&self, kind: &'static str) -> Vec<Expiry> {
        let now = self.inner.clock.now();
        lock(&self.inner.state)
            .slots
            .iter()
            .map(|(k, s)| Expiry {
                kind,
                name: k.clone(),
                seconds: match s.svid.not_after().duration_since(now) {
                    Ok(d) => d.as_secs() as i64,
                    Err(e) => -(e.duration().as_secs() as i64),
                },
            })
            .collect()
    }
}
