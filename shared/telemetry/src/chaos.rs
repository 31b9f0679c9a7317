//! Faults in the tracing itself, for the lesson's pitfalls: a sampling miss
//! (head sampling keeps too few roots), the cost of a slow synchronous
//! export path, a service whose spans never arrive, a service whose clock is
//! off, and high-cardinality span names and attributes.
//!
//! The settings are process-wide and set by the fault registry (see
//! `tracelab-faults`); [`ChaosProcessor`] and the sampler and server layer
//! read them. With nothing set every check is one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use crate::stats::SpanCounters;

/// What is currently broken in this service's tracing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryFaults {
    /// Root spans are kept with this probability instead of sampling.yaml's.
    pub sampling_rate: Option<f64>,
    /// Every span end blocks the ending thread this long.
    pub slow_export: Option<Duration>,
    /// No span of this service is exported.
    pub drop_spans: bool,
    /// Span timestamps are shifted by this many milliseconds.
    pub clock_skew_ms: i64,
    /// SERVER spans are named after the raw path and carry this attribute
    /// with a unique value per request.
    pub high_cardinality: Option<String>,
}

static ANY: AtomicBool = AtomicBool::new(false);
static FAULTS: RwLock<Option<TelemetryFaults>> = RwLock::new(None);

/// Replaces the telemetry faults (an all-default value clears them).
pub fn set(faults: TelemetryFaults) {
    let any = faults != TelemetryFaults::default();
    *FAULTS.write().unwrap_or_else(|e| e.into_inner()) = any.then_some(faults);
    ANY.store(any, Ordering::Release);
}

/// The current telemetry faults, if any is set.
pub fn current() -> Option<TelemetryFaults> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    FAULTS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Wraps the real span processor and applies [`TelemetryFaults`] at span
/// end; counts every span that ends, and those the `drop_spans` fault
/// discards, in `counters`. The crate's own spans ([`crate::tracer`]) go
/// through the same steps ([`ChaosProcessor::at_end`]).
#[derive(Debug)]
pub struct ChaosProcessor<P> {
    inner: P,
    counters: Arc<SpanCounters>,
}

impl<P> ChaosProcessor<P> {
    pub fn new(inner: P, counters: Arc<SpanCounters>) -> Self {
        Self { inner, counters }
    }

    /// The processor the faults are applied in front of.
    pub(crate) fn inner(&self) -> &P {
        &self.inner
    }

    /// What the faults do to a span that ends, counted: `None` when it is
    /// dropped (`drop_spans`), else the milliseconds its timestamps are
    /// to be shifted by. With `slow_export`, the ending thread sleeps
    /// here first.
    pub(crate) fn at_end(&self) -> Option<i64> {
        self.counters.record_ended();
        let Some(faults) = current() else {
            return Some(0);
        };
        if faults.drop_spans {
            self.counters.record_dropped_by_fault();
            return None;
        }
        if let Some(delay) = faults.slow_export {
            // The cost of exporting inline: the request that ended the
            // span waits, exactly what a batch processor avoids.
            std::thread::sleep(delay);
        }
        Some(faults.clock_skew_ms)
    }
}

/// `t` moved by `ms` milliseconds (later when positive).
pub(crate) fn shift(t: std::time::SystemTime, ms: i64) -> std::time::SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        t + d
    } else {
        t.checked_sub(d).unwrap_or(t)
    }
}

impl<P: SpanProcessor> SpanProcessor for ChaosProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        let Some(skew_ms) = self.at_end() else {
            return;
        };
        if skew_ms != 0 {
            span.start_time = shift(span.start_time, skew_ms);
            span.end_time = shift(span.end_time, skew_ms);
            for event in span.events.events.iter_mut() {
                event.timestamp = shift(event.timestamp, skew_ms);
            }
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_clear() {
        set(TelemetryFaults {
            drop_spans: true,
            ..Default::default()
        });
        assert!(current().is_some_and(|f| f.drop_spans));
        set(TelemetryFaults::default());
        assert_eq!(current(), None);
    }

    #[test]
    fn skew_moves_both_ways() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(shift(t, 1500), t + Duration::from_millis(1500));
        assert_eq!(shift(t, -1500), t - Duration::from_millis(1500));
    }
}
