//! The per-service fault registry: what is set, whether it fires now, and
//! the generic effects.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use http::StatusCode;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracelab_service::ApiError;

use crate::spec::{DEFAULT_HANG_MS, FaultError, FaultKind, FaultSpec};

/// Where the registry reads the time. [`SystemClock`] in services; a
/// [`ManualClock`] in tests that need expiry and schedules without waiting.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    /// Puts the clock at `to`.
    pub fn set(&self, to: SystemTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fault as the registry holds it: the spec plus when it was set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub set_at: DateTime<Utc>,
    /// When `for` runs out; absent when the fault stays until cleared.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the fault is in effect right now: `false` while its schedule
    /// is in the off phase.
    pub active: bool,
}

/// A generic effect that failed the operation: answer `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({status})")]
pub struct Injected {
    pub status: u16,
    pub message: String,
    /// The injection point that fired. Kept out of `Display` so logs do not
    /// hand a learner the answer.
    pub point: String,
}

impl Injected {
    /// The status as an HTTP status code (500 when `status` is not one).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<Injected> for ApiError {
    fn from(injected: Injected) -> Self {
        ApiError::new(injected.status_code(), "fault_injected", injected.message)
    }
}

impl axum::response::IntoResponse for Injected {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}

#[derive(Debug)]
struct Entry {
    spec: FaultSpec,
    set_at: SystemTime,
    /// Tells a replaced fault from its successor at the same point.
    generation: u64,
}

impl Entry {
    fn expires_at(&self) -> Option<SystemTime> {
        self.spec.duration.map(|d| self.set_at + d)
    }

    fn expired(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|end| now >= end)
    }

    /// In effect at `now`: not expired and, with a schedule, in an on phase.
    fn in_effect(&self, now: SystemTime) -> bool {
        if self.expired(now) {
            return false;
        }
        match &self.spec.schedule {
            // A clock stepping back before `set_at` counts as the start.
            Some(schedule) => schedule.is_on(now.duration_since(self.set_at).unwrap_or_default()),
            None => true,
        }
    }

    /// Time until this entry next changes state (expires or switches phase).
    fn next_change(&self, now: SystemTime) -> Option<Duration> {
        let expiry = self.expires_at().map(|end| end.duration_since(now).unwrap_or_default());
        let switch = self
            .spec
            .schedule
            .map(|s| s.next_switch(now.duration_since(self.set_at).unwrap_or_default()));
        match (expiry, switch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn to_active(&self, now: SystemTime) -> ActiveFault {
        ActiveFault {
            spec: self.spec.clone(),
            set_at: self.set_at.into(),
            expires_at: self.expires_at().map(Into::into),
            active: self.in_effect(now),
        }
    }
}

#[derive(Debug)]
struct Inner {
    service: &'static str,
    points: &'static [&'static str],
    faults: RwLock<HashMap<String, Entry>>,
    /// Number of entries in `faults`, read without the lock so that
    /// `check` on a service with no fault costs one atomic load.
    armed: AtomicUsize,
    visible: AtomicBool,
    generation: AtomicU64,
    changes: watch::Sender<u64>,
    clock: Arc<dyn Clock>,
}

impl Inner {
    fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every write is a single insert/remove), so poisoning is ignored.
        self.faults.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.faults.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes expired entries; true when any was removed.
    fn prune(&self) -> bool {
        let now = self.clock.now();
        if !self.read().values().any(|e| e.expired(now)) {
            return false;
        }
        let removed = {
            let mut faults = self.write();
            let before = faults.len();
            faults.retain(|_, e| !e.expired(now));
            self.armed.store(faults.len(), Ordering::Release);
            before - faults.len()
        };
        if removed > 0 {
            self.bump();
        }
        removed > 0
    }

    /// The kind and probability at `point` when in effect now.
    fn lookup(&self, point: &str) -> Option<(FaultKind, f64)> {
        if self.armed.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = self.clock.now();
        let expired = {
            let faults = self.read();
            let entry = faults.get(point)?;
            if entry.in_effect(now) {
                return Some((entry.spec.kind.clone(), entry.spec.probability));
            }
            entry.expired(now)
        };
        if expired {
            self.prune();
        }
        None
    }
}

/// The faults set on one service, keyed by injection point.
///
/// Cheap to clone (one `Arc`); every clone sees the same faults. `check`
/// with no fault set is one atomic load.
#[derive(Debug, Clone)]
pub struct FaultRegistry {
    inner: Arc<Inner>,
}

impl FaultRegistry {
    /// A registry for `service` accepting faults at `points`, on the wall
    /// clock.
    pub fn new(service: &'static str, points: &'static [&'static str]) -> Self {
        Self::with_clock(service, points, SystemClock)
    }

    /// A registry reading the time from `clock` (for tests: [`ManualClock`]).
    pub fn with_clock(service: &'static str, points: &'static [&'static str], clock: impl Clock) -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                service,
                points,
                faults: RwLock::new(HashMap::new()),
                armed: AtomicUsize::new(0),
                visible: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                changes,
                clock: Arc::new(clock),
            }),
        }
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        self.inner.service
    }

    /// The injection points faults may be set at.
    pub fn points(&self) -> &[&'static str] {
        self.inner.points
    }

    /// Sets `spec`, replacing any fault at its point, and returns it as held.
    ///
    /// Fails when the spec is invalid ([`FaultSpec::validate`]) or its point
    /// is not one of [`Self::points`].
    pub fn set(&self, spec: FaultSpec) -> Result<ActiveFault, FaultError> {
        spec.validate()?;
        if !self.inner.points.contains(&spec.point.as_str()) {
            return Err(FaultError::UnknownPoint {
                point: spec.point,
                known: self.inner.points.iter().map(|p| p.to_string()).collect(),
            });
        }
        let now = self.inner.clock.now();
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        let point = spec.point.clone();
        let timed = spec.duration.is_some() || spec.schedule.is_some();
        let entry = Entry {
            spec,
            set_at: now,
            generation,
        };
        let active = entry.to_active(now);
        {
            let mut faults = self.inner.write();
            faults.insert(point.clone(), entry);
            self.inner.armed.store(faults.len(), Ordering::Release);
        }
        self.inner.bump();
        if timed {
            self.watch_transitions(point, generation);
        }
        Ok(active)
    }

    /// Clears the fault at `point`; true when one was in place.
    pub fn clear(&self, point: &str) -> bool {
        self.inner.prune();
        let removed = {
            let mut faults = self.inner.write();
            let removed = faults.remove(point).is_some();
            self.inner.armed.store(faults.len(), Ordering::Release);
            removed
        };
        if removed {
            self.inner.bump();
        }
        removed
    }

    /// Clears every fault; returns how many were in place.
    pub fn clear_all(&self) -> usize {
        self.inner.prune();
        let removed = {
            let mut faults = self.inner.write();
            let n = faults.len();
            faults.clear();
            self.inner.armed.store(0, Ordering::Release);
            n
        };
        if removed > 0 {
            self.inner.bump();
        }
        removed
    }

    /// The faults in place (expired ones removed first), sorted by point.
    pub fn list(&self) -> Vec<ActiveFault> {
        self.inner.prune();
        let now = self.inner.clock.now();
        let mut all: Vec<ActiveFault> = self.inner.read().values().map(|e| e.to_active(now)).collect();
        all.sort_by(|a, b| a.spec.point.cmp(&b.spec.point));
        all
    }

    /// The fault at `point` if it is in effect now (not expired, in its
    /// schedule's on phase) and its probability roll passes. When the
    /// registry is visible, a hit adds a `fault.injected` event to the
    /// current span.
    pub fn check(&self, point: &str) -> Option<FaultKind> {
        let (kind, probability) = self.inner.lookup(point)?;
        // `random()` is in [0, 1): probability 0 never fires, 1 always does.
        if probability < 1.0 && rand::random::<f64>() >= probability {
            return None;
        }
        if self.inner.visible.load(Ordering::Relaxed) {
            Context::current().span().add_event(
                "fault.injected",
                vec![
                    KeyValue::new("fault.point", point.to_string()),
                    KeyValue::new("fault.kind", kind.name()),
                ],
            );
        }
        Some(kind)
    }

    /// The fault at `point` if it is in effect now, without the probability
    /// roll and without a span event: for settings read on every decision
    /// (sampling rate, export delay, clock skew).
    pub fn is_active(&self, point: &str) -> Option<FaultKind> {
        self.inner.lookup(point).map(|(kind, _)| kind)
    }

    /// Applies the generic effect of the fault at `point`, if it fires:
    ///
    /// - `latency`: sleeps, then `Ok(None)`;
    /// - `cpu_burn`: spins this thread, then `Ok(None)`;
    /// - `hang`: waits until the caller drops this future, the fault is
    ///   cleared, or `max_ms` (default 120 s) passes, then `Err` with 504;
    /// - `error`, `outage`: `Err` with their status, code `fault_injected`;
    /// - any other kind: `Ok(Some(kind))` for the caller to apply;
    /// - no fault, or the roll fails: `Ok(None)`.
    pub async fn inject(&self, point: &str) -> Result<Option<FaultKind>, Injected> {
        let Some(kind) = self.check(point) else {
            return Ok(None);
        };
        match kind {
            FaultKind::Latency { ms, jitter_ms } => {
                tokio::time::sleep(Duration::from_millis(jittered(ms, jitter_ms))).await;
                Ok(None)
            }
            FaultKind::CpuBurn { ms } => {
                burn_cpu(Duration::from_millis(ms));
                Ok(None)
            }
            FaultKind::Hang { max_ms } => {
                let max = max_ms.unwrap_or(DEFAULT_HANG_MS);
                if self.hang(point, Duration::from_millis(max)).await {
                    Err(Injected {
                        status: 504,
                        message: format!("no answer within {max} ms"),
                        point: point.to_string(),
                    })
                } else {
                    Ok(None)
                }
            }
            FaultKind::Error { status, message } => Err(Injected {
                status,
                message: message.unwrap_or_else(|| reason(status)),
                point: point.to_string(),
            }),
            FaultKind::Outage { status } => Err(Injected {
                status,
                message: reason(status),
                point: point.to_string(),
            }),
            other => Ok(Some(other)),
        }
    }

    /// Waits `max`, or less if the hang at `point` stops being in effect
    /// (cleared, expired, schedule off). True when the full time passed.
    async fn hang(&self, point: &str, max: Duration) -> bool {
        let mut changes = self.subscribe();
        let released = async {
            while changes.changed().await.is_ok() {
                if !matches!(self.is_active(point), Some(FaultKind::Hang { .. })) {
                    return;
                }
            }
            // The sender lives in `self`: this cannot end while we hold it.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = tokio::time::sleep(max) => true,
            () = released => false,
        }
    }

    /// Whether span events name the faults that fire.
    pub fn visible(&self) -> bool {
        self.inner.visible.load(Ordering::Relaxed)
    }

    /// Turns the `fault.injected` span event on or off. Off by default, so
    /// an exercise does not give its answer away; the CLI's reveal turns it
    /// on.
    pub fn set_visible(&self, visible: bool) {
        if self.inner.visible.swap(visible, Ordering::Relaxed) != visible {
            self.inner.bump();
        }
    }

    /// A receiver whose value changes whenever faults change: set, clear,
    /// visibility, and (when a Tokio runtime was running at `set`) expiry
    /// and schedule switches. Telemetry re-applies its settings on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Bumps the change counter when the fault set at `point` with
    /// `generation` expires or switches phase, so subscribers do not have to
    /// poll. Needs a Tokio runtime; without one, changes are still seen by
    /// `check`/`is_active`/`list`, just not announced.
    fn watch_transitions(&self, point: String, generation: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            loop {
                let (wait, was_in_effect) = {
                    let Some(inner) = weak.upgrade() else { return };
                    let now = inner.clock.now();
                    let faults = inner.read();
                    match faults.get(&point) {
                        Some(e) if e.generation == generation => match e.next_change(now) {
                            Some(wait) => (wait, e.in_effect(now)),
                            None => return,
                        },
                        _ => return,
                    }
                };
                // A millisecond past the boundary, so the state has changed
                // when we look again.
                tokio::time::sleep(wait + Duration::from_millis(1)).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.prune() {
                    continue;
                }
                let now = inner.clock.now();
                let changed = inner
                    .read()
                    .get(&point)
                    .is_some_and(|e| e.generation == generation && e.in_effect(now) != was_in_effect);
                if changed {
                    inner.bump();
                }
            }
        });
    }
}

/// `ms` ± up to `jitter_ms`, uniform. Validation keeps `jitter_ms <= ms`.
fn jittered(ms: u64, jitter_ms: u64) -> u64 {
    if jitter_ms == 0 {
        return ms;
    }
    let offset = rand::rng().random_range(0..=2 * jitter_ms);
    (ms + offset).saturating_sub(jitter_ms)
}

/// Keeps this thread busy for `d` of wall time. It blocks the runtime
/// worker on purpose: the time shows as the span's own (self) time.
fn burn_cpu(d: Duration) {
    let end = Instant::now() + d;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while Instant::now() < end {
        for _ in 0..1_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407));
        }
    }
    std::hint::black_box(x);
}

fn reason(status: u16) -> String {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| r.to_lowercase())
        .unwrap_or_else(|| format!("status {status}"))
}
