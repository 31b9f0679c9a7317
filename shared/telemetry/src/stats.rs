//! Counters that make lost spans visible. The SDK reports a full batch
//! queue only at shutdown; these show, on every service's `/health`, how
//! many spans ended, reached the collector, failed to export, or were
//! dropped on purpose by a telemetry fault.

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde::Serialize;

pub(crate) static ENDED: AtomicU64 = AtomicU64::new(0);
pub(crate) static DROPPED_BY_FAULT: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the span counters of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExportStats {
    /// Sampled spans that ended.
    pub spans_ended: u64,
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Spans in batches the exporter gave up on (collector down or refusing).
    pub spans_failed: u64,
    /// Spans discarded by the `drop_spans` fault.
    pub spans_dropped_by_fault: u64,
}

/// The current counters.
pub fn export_stats() -> ExportStats {
    ExportStats {
        spans_ended: ENDED.load(Ordering::Relaxed),
        spans_exported: EXPORTED.load(Ordering::Relaxed),
        spans_failed: FAILED.load(Ordering::Relaxed),
        spans_dropped_by_fault: DROPPED_BY_FAULT.load(Ordering::Relaxed),
    }
}

/// Wraps the OTLP exporter to count what it delivers and what it loses.
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
}

impl<E> CountingExporter<E> {
    pub fn new(inner: E) -> Self {
        Self { inner }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => EXPORTED.fetch_add(n, Ordering::Relaxed),
            Err(_) => FAILED.fetch_add(n, Ordering::Relaxed),
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
