//! Counters that make lost spans visible, and the export pipeline that
//! keeps them exact.
//!
//! The pipeline built by [`export_pipeline`] bounds its queue itself: a
//! span is admitted only while fewer than `max_queue` spans are waiting or
//! being exported ([`crate::export`]), a span that finds no place is
//! dropped and counted, and every span lands in exactly one counter:
//!
//! `ended = exported + failed + dropped_by_fault + dropped_queue_full + queued`
//!
//! Every service's `/health` shows them under `"telemetry"`; while spans are
//! dropped, one WARN line at most every [`DROP_LOG_INTERVAL`] says how many.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use serde::Serialize;

use crate::chaos::ChaosProcessor;
use crate::export::{OtlpBatchProcessor, Transport};

/// At most one "spans dropped" log line per this interval.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A snapshot of the span counters of one export pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExportStats {
    /// Sampled spans that ended.
    pub spans_ended: u64,
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Spans in batches the exporter gave up on (collector down, refusing
    /// or not answering within the export timeout), and spans the
    /// collector answered as rejected (`partial_success`).
    pub spans_failed: u64,
    /// Spans discarded by the `drop_spans` fault.
    pub spans_dropped_by_fault: u64,
    /// Spans dropped because the export queue was full (or, after
    /// shutdown, closed): the collector is slower than the service.
    pub spans_dropped_queue_full: u64,
    /// Spans waiting in a batch or in the batch being exported.
    pub spans_queued: u64,
    /// How many spans the export queue holds.
    pub queue_capacity: u64,
}

/// The counters of one export pipeline (see the module docs). Services
/// use the process-wide one, [`global_counters`].
#[derive(Debug)]
pub struct SpanCounters {
    ended: AtomicU64,
    dropped_by_fault: AtomicU64,
    dropped_queue_full: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
    /// Admitted into the export queue and not yet exported or failed.
    in_flight: AtomicU64,
    capacity: AtomicU64,
    drop_log: Mutex<DropLog>,
}

/// What the last "spans dropped" line reported, and when.
#[derive(Debug, Default)]
struct DropLog {
    at: Option<Instant>,
    reported: u64,
}

/// One "spans dropped" log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropReport {
    /// Dropped since the previous line.
    pub since_last: u64,
    /// Dropped since the start.
    pub total: u64,
}

impl Default for SpanCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanCounters {
    /// All zero, no capacity yet ([`export_pipeline`] sets it).
    pub fn new() -> Self {
        Self {
            ended: AtomicU64::new(0),
            dropped_by_fault: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            exported: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
            drop_log: Mutex::new(DropLog::default()),
        }
    }

    /// The counters now. `spans_queued` is what ended and has no outcome
    /// yet, so the identity in the module docs holds in every snapshot.
    pub fn snapshot(&self) -> ExportStats {
        // Outcomes first, `ended` last: every span with an outcome ended
        // before it got one (Release on the outcome, Acquire here), so
        // `ended` read afterwards covers them all.
        let exported = self.exported.load(Ordering::Acquire);
        let failed = self.failed.load(Ordering::Acquire);
        let dropped_by_fault = self.dropped_by_fault.load(Ordering::Acquire);
        let dropped_queue_full = self.dropped_queue_full.load(Ordering::Acquire);
        let ended = self.ended.load(Ordering::Acquire);
        ExportStats {
            spans_ended: ended,
            spans_exported: exported,
            spans_failed: failed,
            spans_dropped_by_fault: dropped_by_fault,
            spans_dropped_queue_full: dropped_queue_full,
            spans_queued: ended
                .saturating_sub(exported + failed + dropped_by_fault + dropped_queue_full),
            queue_capacity: self.capacity.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn record_ended(&self) {
        self.ended.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn record_dropped_by_fault(&self) {
        self.dropped_by_fault.fetch_add(1, Ordering::Release);
    }

    /// Sets how many spans the queue holds.
    pub(crate) fn set_capacity(&self, capacity: u64) {
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Takes a place in the queue, or `false` when all are taken.
    pub(crate) fn admit(&self) -> bool {
        let capacity = self.capacity.load(Ordering::Relaxed);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn record_dropped_queue_full(&self) {
        self.dropped_queue_full.fetch_add(1, Ordering::Release);
        self.log_drops(Instant::now(), false);
    }

    /// A batch of `n` spans left the queue, `exported` or not.
    pub(crate) fn record_batch(&self, n: u64, exported: bool) {
        let outcome = if exported {
            &self.exported
        } else {
            &self.failed
        };
        outcome.fetch_add(n, Ordering::Release);
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
    }

    /// The line to log at `now` about spans dropped from a full queue: one
    /// per [`DROP_LOG_INTERVAL`] at most (`final_line` ignores it), and
    /// only when there is something new to say.
    pub fn drop_report(&self, now: Instant, final_line: bool) -> Option<DropReport> {
        // Whoever holds the lock is writing the line; the others need not wait.
        let mut log = self.drop_log.try_lock().ok()?;
        let due = final_line
            || log
                .at
                .is_none_or(|at| now.saturating_duration_since(at) >= DROP_LOG_INTERVAL);
        if !due {
            return None;
        }
        let total = self.dropped_queue_full.load(Ordering::Acquire);
        let since_last = total - log.reported;
        if since_last == 0 {
            return None;
        }
        *log = DropLog {
            at: Some(now),
            reported: total,
        };
        Some(DropReport { since_last, total })
    }

    pub(crate) fn log_drops(&self, now: Instant, final_line: bool) {
        let Some(report) = self.drop_report(now, final_line) else {
            return;
        };
        // Not the trace of whichever request ended the span: the line is
        // about the service.
        let _detached = Context::new().attach();
        tracing::warn!(
            dropped = report.since_last,
            dropped_total = report.total,
            queue_capacity = self.capacity.load(Ordering::Relaxed),
            interval_secs = DROP_LOG_INTERVAL.as_secs(),
            "spans dropped: the export queue is full (the collector is slow or unreachable)"
        );
    }
}

static GLOBAL: LazyLock<Arc<SpanCounters>> = LazyLock::new(Arc::default);

/// The counters of this process's export pipeline (the one [`crate::init`]
/// builds), shown by `/health`.
pub fn global_counters() -> Arc<SpanCounters> {
    GLOBAL.clone()
}

/// The current counters of this process.
pub fn export_stats() -> ExportStats {
    GLOBAL.snapshot()
}

/// The export queue's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Spans waiting or being exported, at most.
    pub max_queue: usize,
    /// Spans per export call, at most (no more than `max_queue`).
    pub max_batch: usize,
    /// How long a span may wait for a batch to fill.
    pub scheduled_delay: Duration,
    /// How long after one export call the next (of a batch that is not
    /// full) may start, at the soonest.
    pub min_interval: Duration,
}

impl Default for QueueSettings {
    /// The services' settings, chosen with `tracelab bench`: a lone
    /// checkout's whole trace is in the collector about the delay plus
    /// 5-10 ms after the answer (p99 57 ms with 50 ms, 32 ms with 20 ms,
    /// 20 ms with 10 ms on a quiet machine), so a 10 ms delay. The
    /// interval bounds a busy service's export calls (50 a second at
    /// 20 ms); it must stay short too, because a checkout's spans reach a
    /// service's queue in two waves (the answer's, then the outbox relay's
    /// and the consumer's), and the second waits for it: the whole trace's
    /// p99 was 58-75 ms with a 50 ms interval, 22-26 ms with 20 ms and 10 ms,
    /// with no CPU difference the bench could separate from its noise.
    fn default() -> Self {
        Self {
            max_queue: 8192,
            max_batch: 512,
            scheduled_delay: Duration::from_millis(10),
            min_interval: Duration::from_millis(20),
        }
    }
}

/// The export pipeline of a service, which its tracer
/// ([`crate::tracer::LeanTracerProvider`]) ends spans into (an SDK
/// provider can take it as its span processor too): telemetry faults, then
/// the bounded export queue counted in `counters`, encoded and sent over
/// `transport` by [`OtlpBatchProcessor`]; `timeout` bounds every export
/// call.
///
/// # Errors
/// When the export thread cannot start.
pub fn export_pipeline(
    transport: Transport,
    timeout: Duration,
    settings: QueueSettings,
    counters: Arc<SpanCounters>,
) -> std::io::Result<ChaosProcessor<OtlpBatchProcessor>> {
    let export = OtlpBatchProcessor::new(transport, timeout, settings, counters.clone())?;
    Ok(ChaosProcessor::new(export, counters))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters_with_capacity(n: u64) -> SpanCounters {
        let c = SpanCounters::new();
        c.capacity.store(n, Ordering::Relaxed);
        c
    }

    #[test]
    fn the_queue_admits_up_to_its_capacity_and_frees_places_per_batch() {
        let c = counters_with_capacity(3);
        for _ in 0..5 {
            c.record_ended();
        }
        assert!(c.admit() && c.admit() && c.admit());
        assert!(!c.admit(), "the fourth span finds the queue full");
        c.record_dropped_queue_full();
        c.record_dropped_queue_full();
        assert_eq!(c.snapshot().spans_queued, 3);
        c.record_batch(2, false);
        assert!(c.admit(), "a finished batch frees its places");
        let s = c.snapshot();
        assert_eq!(
            (
                s.spans_ended,
                s.spans_failed,
                s.spans_dropped_queue_full,
                s.spans_queued
            ),
            (5, 2, 2, 1),
            "{s:?}"
        );
    }

    #[test]
    fn drops_are_reported_at_most_once_per_interval_with_the_count_since_the_last_line() {
        let c = counters_with_capacity(1);
        let t0 = Instant::now();
        assert_eq!(c.drop_report(t0, false), None, "nothing dropped yet");
        c.dropped_queue_full.fetch_add(1, Ordering::Release);
        assert_eq!(
            c.drop_report(t0, false),
            Some(DropReport {
                since_last: 1,
                total: 1
            }),
            "the first drop is reported at once"
        );
        c.dropped_queue_full.fetch_add(500, Ordering::Release);
        assert_eq!(c.drop_report(t0 + Duration::from_secs(9), false), None);
        assert_eq!(
            c.drop_report(t0 + DROP_LOG_INTERVAL, false),
            Some(DropReport {
                since_last: 500,
                total: 501
            })
        );
        assert_eq!(
            c.drop_report(t0 + Duration::from_secs(60), false),
            None,
            "no new drop, no line"
        );
        c.dropped_queue_full.fetch_add(7, Ordering::Release);
        assert_eq!(
            c.drop_report(t0 + Duration::from_secs(61), true),
            Some(DropReport {
                since_last: 7,
                total: 508
            }),
            "the shutdown line does not wait"
        );
    }
}
