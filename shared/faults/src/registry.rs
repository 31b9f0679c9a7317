//! The per-service fault registry: what is set, whether it fires now, and
//! the generic effects.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use rand::Rng;
use tokio::sync::watch;
use tracelab_contract::fault::limits::DEFAULT_HANG_MS;
use tracelab_contract::fault::{ActiveFault, FaultError, FaultKind, FaultPoint, FaultSpec};
use tracelab_contract::service::ServiceName;
use tracelab_service::ApiError;

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

/// A generic effect that failed the operation: answer `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({status})")]
pub struct Injected {
    pub status: u16,
    pub message: String,
    /// The injection point that fired. Kept out of `Display` so logs do not
    /// hand a learner the answer.
    pub point: FaultPoint,
}

impl Injected {
    /// The status as an HTTP status code (500 when `status` is not one).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl Injected {
    /// The error code a real failure with this status would carry: the
    /// client must not learn that the failure was injected (an exercise
    /// would give its answer away).
    pub fn code(&self) -> &'static str {
        match self.status {
            429 => "rate_limited",
            502 => "bad_gateway",
            503 => "unavailable",
            504 => "timeout",
            400..=499 => "request_failed",
            _ => "internal_error",
        }
    }
}

impl From<Injected> for ApiError {
    fn from(injected: Injected) -> Self {
        let code = injected.code();
        ApiError::new(injected.status_code(), code, injected.message)
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
        let expiry = self
            .expires_at()
            .map(|end| end.duration_since(now).unwrap_or_default());
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
    service: ServiceName,
    /// The catalogue's points of `service`: the only ones `set` accepts.
    points: Vec<FaultPoint>,
    faults: RwLock<HashMap<FaultPoint, Entry>>,
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<FaultPoint, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every write is a single insert/remove), so poisoning is ignored.
        self.faults.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<FaultPoint, Entry>> {
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
    fn lookup(&self, point: FaultPoint) -> Option<(FaultKind, f64)> {
        if self.armed.load(Ordering::Acquire) == 0 {
            return None;
        }
        let expired = {
            let faults = self.read();
            let entry = faults.get(&point)?;
            let now = self.clock.now();
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
    /// A registry for `service`, accepting faults at its points of the
    /// catalogue ([`FaultPoint::of`]), on the wall clock.
    pub fn new(service: ServiceName) -> Self {
        Self::with_clock(service, SystemClock)
    }

    /// A registry reading the time from `clock` (for tests: [`ManualClock`]).
    pub fn with_clock(service: ServiceName, clock: impl Clock) -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                service,
                points: FaultPoint::of(service).collect(),
                faults: RwLock::new(HashMap::new()),
                armed: AtomicUsize::new(0),
                visible: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                changes,
                clock: Arc::new(clock),
            }),
        }
    }

    /// The service.
    pub fn service(&self) -> ServiceName {
        self.inner.service
    }

    /// The injection points faults may be set at.
    pub fn points(&self) -> &[FaultPoint] {
        &self.inner.points
    }

    /// Sets `spec`, replacing any fault at its point, and returns it as held.
    ///
    /// Fails when the spec is invalid ([`FaultSpec::validate`]) or its point
    /// is not one of [`Self::points`] (the error lists them).
    pub fn set(&self, spec: FaultSpec) -> Result<ActiveFault, FaultError> {
        spec.validate()?;
        let point = match spec.fault_point() {
            Ok(point) if self.inner.points.contains(&point) => point,
            // Another service's point is as unknown here as a typo: it
            // would never fire in this process.
            _ => {
                return Err(FaultError::UnknownPoint {
                    point: spec.point,
                    known: self.inner.points.iter().map(|p| p.to_string()).collect(),
                });
            }
        };
        let now = self.inner.clock.now();
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        let timed = spec.duration.is_some() || spec.schedule.is_some();
        let entry = Entry {
            spec,
            set_at: now,
            generation,
        };
        let active = entry.to_active(now);
        {
            let mut faults = self.inner.write();
            faults.insert(point, entry);
            self.inner.armed.store(faults.len(), Ordering::Release);
        }
        self.inner.bump();
        if timed {
            self.watch_transitions(point, generation);
        }
        Ok(active)
    }

    /// Clears the fault at `point`; true when one was in place.
    pub fn clear(&self, point: FaultPoint) -> bool {
        self.inner.prune();
        let removed = {
            let mut faults = self.inner.write();
            let removed = faults.remove(&point).is_some();
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
        let mut all: Vec<ActiveFault> = self
            .inner
            .read()
            .values()
            .map(|e| e.to_active(now))
            .collect();
        all.sort_by(|a, b| a.spec.point.cmp(&b.spec.point));
        all
    }

    /// The fault at `point` if it is in effect now (not expired, in its
    /// schedule's on phase) and its probability roll passes. When the
    /// registry is visible, a hit adds a `fault.injected` event to the
    /// current span.
    pub fn check(&self, point: FaultPoint) -> Option<FaultKind> {
        let (kind, probability) = self.inner.lookup(point)?;
        // `random()` is in [0, 1): probability 0 never fires, 1 always does.
        if probability < 1.0 && rand::random::<f64>() >= probability {
            return None;
        }
        if self.inner.visible.load(Ordering::Relaxed) {
            Context::current().span().add_event(
                "fault.injected",
                vec![
                    KeyValue::new("fault.point", point.name()),
                    KeyValue::new("fault.kind", kind.name()),
                ],
            );
        }
        Some(kind)
    }

    /// The fault at `point` if it is in effect now, without the probability
    /// roll and without a span event: for settings read on every decision
    /// (sampling rate, export delay, clock skew).
    pub fn is_active(&self, point: FaultPoint) -> Option<FaultKind> {
        self.inner.lookup(point).map(|(kind, _)| kind)
    }

    /// Applies the generic effect of the fault at `point`, if it fires:
    ///
    /// - `latency`: sleeps, then `Ok(None)`;
    /// - `cpu_burn`: spins this thread, then `Ok(None)`;
    /// - `hang`: waits until the caller drops this future, the fault is
    ///   cleared, or `max_ms` (default 120 s) passes, then `Err` with 504;
    /// - `error`, `outage`: `Err` with their status (and the code a real
    ///   failure of that status would have);
    /// - any other kind: `Ok(Some(kind))` for the caller to apply;
    /// - no fault, or the roll fails: `Ok(None)`.
    pub async fn inject(&self, point: FaultPoint) -> Result<Option<FaultKind>, Injected> {
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
                        point,
                    })
                } else {
                    Ok(None)
                }
            }
            FaultKind::Error { status, message } => Err(Injected {
                status,
                message: message.unwrap_or_else(|| reason(status)),
                point,
            }),
            FaultKind::Outage { status } => Err(Injected {
                status,
                message: reason(status),
                point,
            }),
            other => Ok(Some(other)),
        }
    }

    /// Waits `max`, or less if the hang at `point` stops being in effect
    /// (cleared, expired, schedule off). True when the full time passed.
    async fn hang(&self, point: FaultPoint, max: Duration) -> bool {
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
    fn watch_transitions(&self, point: FaultPoint, generation: u64) {
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
                let changed = inner.read().get(&point).is_some_and(|e| {
                    e.generation == generation && e.in_effect(now) != was_in_effect
                });
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
            x = std::hint::black_box(
                x.wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407),
            );
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::UNIX_EPOCH;

    use axum::response::IntoResponse;
    use opentelemetry::trace::{Span, SpanContext, Status};
    use serde_json::json;

    use super::*;

    // Payment's points stand for "a point with a database", "one with an
    // HTTP call" and "the telemetry point" of any service.
    const DB: FaultPoint = FaultPoint::PaymentSave;
    const HTTP: FaultPoint = FaultPoint::PaymentProviderCall;
    const TELEMETRY: FaultPoint = FaultPoint::PaymentTelemetry;

    fn spec(point: FaultPoint, kind: serde_json::Value) -> FaultSpec {
        let mut value = kind;
        value["point"] = point.name().into();
        FaultSpec::from_value(value).unwrap()
    }

    fn latency(ms: u64) -> FaultKind {
        FaultKind::Latency { ms, jitter_ms: 0 }
    }

    fn manual() -> (FaultRegistry, ManualClock) {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        (
            FaultRegistry::with_clock(ServiceName::Payment, clock.clone()),
            clock,
        )
    }

    #[test]
    fn nothing_fires_until_a_fault_is_set() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        assert_eq!(registry.service(), ServiceName::Payment);
        assert_eq!(
            registry.points(),
            FaultPoint::of(ServiceName::Payment).collect::<Vec<_>>()
        );
        assert_eq!(registry.check(DB), None);
        assert_eq!(registry.is_active(DB), None);
        registry.set(FaultSpec::new(DB, latency(5))).unwrap();
        assert_eq!(registry.check(DB), Some(latency(5)));
        assert_eq!(registry.check(HTTP), None, "other points stay clean");
        assert_eq!(
            registry.check(FaultPoint::SearchQuery),
            None,
            "another service's point never fires here"
        );
    }

    #[test]
    fn set_list_clear_round_trip() {
        let (registry, _) = manual();
        let active = registry
            .set(
                FaultSpec::new(HTTP, FaultKind::DeadLetter).with_duration(Duration::from_secs(300)),
            )
            .unwrap();
        assert_eq!(active.spec.point, HTTP.name());
        assert!(active.active);
        assert_eq!(
            active.expires_at.unwrap() - active.set_at,
            chrono::Duration::seconds(300)
        );
        registry.set(FaultSpec::new(DB, latency(5))).unwrap();

        let listed = registry.list();
        assert_eq!(
            listed
                .iter()
                .map(|f| f.spec.point.as_str())
                .collect::<Vec<_>>(),
            ["payment.provider_call", "payment.save"],
            "sorted by name"
        );
        assert_eq!(listed[0], active);

        // Setting again replaces the fault at that point.
        registry.set(FaultSpec::new(DB, latency(7))).unwrap();
        assert_eq!(registry.list().len(), 2);
        assert_eq!(registry.check(DB), Some(latency(7)));

        assert!(registry.clear(DB));
        assert!(!registry.clear(DB), "already cleared");
        assert_eq!(registry.check(DB), None);
        assert_eq!(registry.list().len(), 1);

        registry.set(FaultSpec::new(DB, latency(5))).unwrap();
        assert_eq!(registry.clear_all(), 2);
        assert_eq!(registry.clear_all(), 0);
        assert!(registry.list().is_empty());
        assert_eq!(registry.check(HTTP), None);
    }

    #[test]
    fn active_fault_json_reads_back() {
        let (registry, _) = manual();
        let active = registry
            .set(spec(
                DB,
                json!({"kind":"slow_query","ms":900,"probability":0.5,"for":"5m","schedule":{"on":"10s","off":"20s"}}),
            ))
            .unwrap();
        let value = serde_json::to_value(&active).unwrap();
        assert_eq!(value["kind"], "slow_query");
        assert_eq!(value["ms"], 900);
        assert_eq!(value["for"], "5m");
        assert_eq!(value["active"], true);
        assert_eq!(value["set_at"], "2023-11-14T22:13:20Z");
        assert_eq!(value["expires_at"], "2023-11-14T22:18:20Z");
        let back: ActiveFault = serde_json::from_value(value).unwrap();
        assert_eq!(back, active);
    }

    #[test]
    fn unknown_points_and_bad_specs_are_refused() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        let known = "(known: payment.validate_order, payment.provider_call, payment.save, \
                     payment.relay_publish, payment.telemetry)";
        for (name, why) in [
            ("payment.sav", "a typo"),
            ("search.query", "another service's point"),
        ] {
            let err = registry.set(FaultSpec::new(name, latency(5))).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("unknown point {name:?} {known}"),
                "{why}"
            );
            assert_eq!(err.field(), Some("point"));
        }
        let err = registry
            .set(FaultSpec::new(DB, latency(5)).with_probability(1.01))
            .unwrap_err();
        assert_eq!(err.to_string(), "probability must be within 0..=1");
        let err = registry
            .set(FaultSpec::new(DB, latency(60_001)))
            .unwrap_err();
        assert_eq!(err.to_string(), "latency.ms must be <= 60000");
        assert!(registry.list().is_empty());
        assert_eq!(registry.check(DB), None);
    }

    #[test]
    fn probability_zero_never_one_always_half_about_half() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        let fires = |p: f64| {
            registry
                .set(FaultSpec::new(DB, FaultKind::DropSpans).with_probability(p))
                .unwrap();
            (0..2_000).filter(|_| registry.check(DB).is_some()).count()
        };
        assert_eq!(fires(0.0), 0);
        assert_eq!(fires(1.0), 2_000);
        let half = fires(0.5);
        // Binomial(2000, 0.5): sd ~ 22, so this band is ~7 sd wide.
        assert!((850..=1_150).contains(&half), "{half} of 2000");
        let tenth = fires(0.1);
        assert!((100..=300).contains(&tenth), "{tenth} of 2000");
    }

    #[test]
    fn is_active_skips_the_roll() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        registry
            .set(
                FaultSpec::new(TELEMETRY, FaultKind::SamplingMiss { rate: 0.1 })
                    .with_probability(0.0),
            )
            .unwrap();
        assert_eq!(registry.check(TELEMETRY), None);
        assert_eq!(
            registry.is_active(TELEMETRY),
            Some(FaultKind::SamplingMiss { rate: 0.1 })
        );
    }

    #[test]
    fn faults_expire_after_their_time() {
        let (registry, clock) = manual();
        registry
            .set(FaultSpec::new(DB, latency(5)).with_duration(Duration::from_secs(300)))
            .unwrap();
        clock.advance(Duration::from_millis(299_999));
        assert_eq!(registry.check(DB), Some(latency(5)));
        assert_eq!(registry.list().len(), 1);
        clock.advance(Duration::from_millis(1));
        assert_eq!(registry.check(DB), None);
        assert_eq!(registry.is_active(DB), None);
        assert!(registry.list().is_empty(), "expired faults are pruned");
        assert!(!registry.clear(DB), "nothing left to clear");
    }

    /// A spec without `for` (the admin API's PUT, the CLI without
    /// `--for`) still goes away by itself: a forgotten fault must not
    /// break the lab for good.
    #[test]
    fn a_fault_without_for_expires_after_the_default_lifetime() {
        let (registry, clock) = manual();
        let active = registry
            .set(spec(DB, json!({"kind":"latency","ms":5})))
            .unwrap();
        let lifetime = tracelab_contract::fault::limits::DEFAULT_FAULT_LIFETIME;
        assert_eq!(lifetime, Duration::from_secs(15 * 60));
        assert_eq!(
            active.expires_at.unwrap() - active.set_at,
            chrono::Duration::from_std(lifetime).unwrap()
        );
        clock.advance(lifetime - Duration::from_millis(1));
        assert_eq!(registry.check(DB), Some(latency(5)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(registry.check(DB), None);
        assert!(registry.list().is_empty());
    }

    #[test]
    fn a_fault_for_never_stays_until_cleared() {
        let (registry, clock) = manual();
        let active = registry
            .set(spec(DB, json!({"kind":"latency","ms":5,"for":"never"})))
            .unwrap();
        assert_eq!(active.expires_at, None);
        clock.advance(Duration::from_secs(30 * 24 * 3600));
        assert_eq!(registry.check(DB), Some(latency(5)));
        assert_eq!(registry.list()[0].expires_at, None);
        assert!(registry.clear(DB));
        assert_eq!(registry.check(DB), None);
    }

    #[test]
    fn schedules_switch_on_and_off() {
        let (registry, clock) = manual();
        registry
            .set(
                FaultSpec::new(DB, FaultKind::DropSpans)
                    .with_schedule(Duration::from_secs(10), Duration::from_secs(20))
                    .with_duration(Duration::from_secs(65)),
            )
            .unwrap();
        let mut timeline = Vec::new();
        for _ in 0..70 {
            timeline.push(registry.check(DB).is_some());
            assert_eq!(registry.is_active(DB).is_some(), *timeline.last().unwrap());
            if let Some(listed) = registry.list().first() {
                assert_eq!(listed.active, *timeline.last().unwrap());
            }
            clock.advance(Duration::from_secs(1));
        }
        let on_at: Vec<usize> = timeline
            .iter()
            .enumerate()
            .filter(|(_, on)| **on)
            .map(|(s, _)| s)
            .collect();
        let expected: Vec<usize> = (0..10).chain(30..40).chain(60..65).collect();
        assert_eq!(on_at, expected);
        assert!(registry.list().is_empty());
    }

    #[tokio::test]
    async fn changes_are_announced() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        let mut changes = registry.subscribe();
        let mut seen = |what: &str| {
            let changed = changes.has_changed().unwrap();
            changes.mark_unchanged();
            assert!(changed, "{what} should announce a change");
        };
        registry.set(FaultSpec::new(DB, latency(5))).unwrap();
        seen("set");
        registry.clear(DB);
        seen("clear");
        registry.set(FaultSpec::new(DB, latency(5))).unwrap();
        seen("set");
        registry.clear_all();
        seen("clear_all");
        registry.set_visible(true);
        seen("set_visible");

        let mut changes = registry.subscribe();
        changes.mark_unchanged();
        registry.clear(DB);
        registry.clear_all();
        registry.set_visible(true);
        let _ = registry.set(FaultSpec::new("payment.nope", latency(5)));
        assert!(
            !changes.has_changed().unwrap(),
            "no-ops and refusals change nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_and_schedule_switches_are_announced() {
        let (registry, clock) = manual();
        let mut changes = registry.subscribe();
        registry
            .set(
                FaultSpec::new(TELEMETRY, FaultKind::DropSpans)
                    .with_schedule(Duration::from_secs(10), Duration::from_secs(10))
                    .with_duration(Duration::from_secs(15)),
            )
            .unwrap();
        changes.mark_unchanged();
        tokio::task::yield_now().await;

        // Off phase at 10 s: announced without anyone calling check.
        clock.advance(Duration::from_secs(10));
        tokio::time::advance(Duration::from_millis(10_002)).await;
        tokio::time::timeout(Duration::from_millis(1), changes.changed())
            .await
            .expect("switch announced")
            .unwrap();
        assert_eq!(registry.is_active(TELEMETRY), None);

        // Expiry at 15 s removes it and announces that too.
        clock.advance(Duration::from_secs(5));
        tokio::time::advance(Duration::from_millis(5_002)).await;
        tokio::time::timeout(Duration::from_millis(1), changes.changed())
            .await
            .expect("expiry announced")
            .unwrap();
        assert_eq!(
            registry.inner.armed.load(Ordering::Acquire),
            0,
            "pruned by the watcher"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn latency_really_sleeps() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        registry.set(FaultSpec::new(DB, latency(250))).unwrap();
        let start = tokio::time::Instant::now();
        assert_eq!(registry.inject(DB).await, Ok(None));
        let slept = start.elapsed();
        assert!(
            slept >= Duration::from_millis(250) && slept < Duration::from_millis(260),
            "{slept:?}"
        );

        registry.clear(DB);
        let start = tokio::time::Instant::now();
        assert_eq!(registry.inject(DB).await, Ok(None));
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "no fault, no sleep"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn latency_jitter_spreads_around_ms() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        registry
            .set(FaultSpec::new(
                DB,
                FaultKind::Latency {
                    ms: 100,
                    jitter_ms: 50,
                },
            ))
            .unwrap();
        let mut slept = Vec::new();
        for _ in 0..200 {
            let start = tokio::time::Instant::now();
            registry.inject(DB).await.unwrap();
            slept.push(start.elapsed().as_millis());
        }
        let (min, max) = (*slept.iter().min().unwrap(), *slept.iter().max().unwrap());
        assert!(min >= 50 && max <= 151, "{min}..{max}");
        assert!(min < 80 && max > 120, "jitter should spread: {min}..{max}");
    }

    /// This thread's CPU time, from the kernel's scheduler statistics.
    fn thread_cpu_time() -> Option<Duration> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(ns))
    }

    #[tokio::test]
    async fn cpu_burn_really_burns() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        registry
            .set(FaultSpec::new(DB, FaultKind::CpuBurn { ms: 300 }))
            .unwrap();
        let cpu_before = thread_cpu_time();
        let start = Instant::now();
        assert_eq!(registry.inject(DB).await, Ok(None));
        let wall = start.elapsed();
        assert!(wall >= Duration::from_millis(300), "{wall:?}");
        if let (Some(before), Some(after)) = (cpu_before, thread_cpu_time()) {
            // A sleep would use ~0 CPU; a burn uses most of its wall time,
            // less whatever other processes on a busy machine took from it.
            let used = after - before;
            assert!(
                used >= Duration::from_millis(100),
                "only {used:?} of CPU in {wall:?}"
            );
        }
    }

    #[tokio::test]
    async fn errors_and_outages_fail_with_their_status() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        registry
            .set(spec(DB, json!({"kind":"error","status":502})))
            .unwrap();
        registry
            .set(spec(
                HTTP,
                json!({"kind":"error","message":"card processor down"}),
            ))
            .unwrap();
        registry
            .set(spec(TELEMETRY, json!({"kind":"outage"})))
            .unwrap();

        let err = registry.inject(DB).await.unwrap_err();
        assert_eq!(
            err,
            Injected {
                status: 502,
                message: "bad gateway".into(),
                point: DB
            }
        );
        let err = registry.inject(HTTP).await.unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (500, "card processor down")
        );
        assert_eq!(err.to_string(), "card processor down (500)");
        let err = registry.inject(TELEMETRY).await.unwrap_err();
        assert_eq!(err.status, 503);

        let api: ApiError = err.into();
        assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.code, "unavailable");
        let response = Injected {
            status: 429,
            message: "slow down".into(),
            point: DB,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["error"],
            json!({"code":"rate_limited","message":"slow down"})
        );
    }

    #[tokio::test]
    async fn caller_and_telemetry_kinds_are_handed_back() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        for kind in [
            FaultKind::RetryStorm { retries: 3 },
            FaultKind::SlowQuery { ms: 10 },
            FaultKind::LockContention { hold_ms: 10 },
            FaultKind::PoolExhaustion {
                connections: 2,
                hold_ms: 10,
            },
            FaultKind::ConsumerStall { ms: 10 },
            FaultKind::DeadLetter,
            FaultKind::RateLimit { retry_after_s: 2 },
            FaultKind::PropagationBreak,
            FaultKind::HighCardinality {
                attribute: "user.id".into(),
            },
            FaultKind::SamplingMiss { rate: 0.5 },
            FaultKind::SlowExport { ms: 10 },
            FaultKind::DropSpans,
            FaultKind::ClockSkew { ms: -10 },
        ] {
            registry.set(FaultSpec::new(DB, kind.clone())).unwrap();
            let start = Instant::now();
            assert_eq!(registry.inject(DB).await, Ok(Some(kind.clone())));
            assert!(
                start.elapsed() < Duration::from_millis(100),
                "{kind:?} must not be applied by inject"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hang_waits_out_its_maximum_then_fails() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        registry
            .set(spec(DB, json!({"kind":"hang","max_ms":5000})))
            .unwrap();
        let start = tokio::time::Instant::now();
        let err = registry.inject(DB).await.unwrap_err();
        assert!(
            start.elapsed() >= Duration::from_millis(5000),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(err.status, 504);

        registry.set(spec(DB, json!({"kind":"hang"}))).unwrap();
        let start = tokio::time::Instant::now();
        let caller_gives_up =
            tokio::time::timeout(Duration::from_secs(3), registry.inject(DB)).await;
        assert!(
            caller_gives_up.is_err(),
            "still hanging when the caller gives up"
        );
        let err = registry.inject(DB).await.unwrap_err();
        assert!(
            start.elapsed() >= Duration::from_secs(123),
            "default 120 s: {:?}",
            start.elapsed()
        );
        assert_eq!(err.status, 504);
    }

    #[tokio::test(start_paused = true)]
    async fn clearing_a_hang_releases_its_waiters() {
        let registry = FaultRegistry::new(ServiceName::Payment);
        registry.set(spec(DB, json!({"kind":"hang"}))).unwrap();
        let waiting = tokio::spawn({
            let registry = registry.clone();
            async move { registry.inject(DB).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiting.is_finished());
        let start = tokio::time::Instant::now();
        registry.clear(DB);
        assert_eq!(waiting.await.unwrap(), Ok(None));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    /// Events as a [`RecordingSpan`] saw them: name and attributes.
    type Recorded = Arc<Mutex<Vec<(String, Vec<KeyValue>)>>>;

    /// A span that records the events added to it.
    #[derive(Debug)]
    struct RecordingSpan {
        events: Recorded,
        context: SpanContext,
    }

    impl Span for RecordingSpan {
        fn add_event_with_timestamp<T>(&mut self, name: T, _: SystemTime, attributes: Vec<KeyValue>)
        where
            T: Into<Cow<'static, str>>,
        {
            self.events
                .lock()
                .unwrap()
                .push((name.into().into_owned(), attributes));
        }
        fn span_context(&self) -> &SpanContext {
            &self.context
        }
        fn is_recording(&self) -> bool {
            true
        }
        fn set_attribute(&mut self, _: KeyValue) {}
        fn set_status(&mut self, _: Status) {}
        fn update_name<T>(&mut self, _: T)
        where
            T: Into<Cow<'static, str>>,
        {
        }
        fn add_link(&mut self, _: SpanContext, _: Vec<KeyValue>) {}
        fn end_with_timestamp(&mut self, _: SystemTime) {}
    }

    #[test]
    fn span_event_only_when_visible() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let _attached = Context::current_with_span(RecordingSpan {
            events: events.clone(),
            context: SpanContext::empty_context(),
        })
        .attach();
        let registry = FaultRegistry::new(ServiceName::Payment);
        registry
            .set(FaultSpec::new(DB, FaultKind::DeadLetter))
            .unwrap();

        assert!(!registry.visible(), "hidden by default");
        assert!(registry.check(DB).is_some());
        assert!(registry.is_active(DB).is_some());
        assert!(
            events.lock().unwrap().is_empty(),
            "exercises must not give the answer away"
        );

        registry.set_visible(true);
        assert!(registry.visible());
        assert!(registry.check(DB).is_some());
        assert!(registry.check(HTTP).is_none());
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, "fault.injected");
        assert_eq!(
            events[0].1,
            vec![
                KeyValue::new("fault.point", DB.name()),
                KeyValue::new("fault.kind", "dead_letter")
            ]
        );
    }
}
