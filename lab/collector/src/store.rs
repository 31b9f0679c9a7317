//! Bounded in-memory trace store.
//!
//! Traces are keyed by trace id; spans that arrive later (an async consumer,
//! a slow exporter) merge into the trace they belong to. When either bound
//! (`max_traces`, `max_spans`) is exceeded the oldest traces by first-seen
//! time are evicted, so memory never grows without limit. Inserts take effect
//! immediately: there is no batching between "received" and "queryable".

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use crate::model::{TraceData, TraceId};

/// Counters shared by receivers, the tail sampler and the store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub spans_received: AtomicU64,
    pub spans_rejected: AtomicU64,
    pub traces_evicted: AtomicU64,
    pub tail_sampled_traces: AtomicU64,
    pub tail_early_kept_traces: AtomicU64,
    pub tail_dropped_traces: AtomicU64,
    pub tail_dropped_spans: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

pub(crate) struct StoredTrace {
    pub data: TraceData,
}

#[derive(Default)]
pub(crate) struct StoreInner {
    pub traces: HashMap<TraceId, StoredTrace>,
    /// Trace ids in first-seen order: the eviction queue.
    order: VecDeque<TraceId>,
    total_spans: usize,
}

pub(crate) struct Store {
    inner: RwLock<StoreInner>,
    max_traces: usize,
    max_spans: usize,
}

/// What one insert did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct InsertOutcome {
    /// Spans refused because their trace alone already holds `max_spans`.
    pub rejected: u64,
    pub evicted: u64,
}

impl Store {
    pub(crate) fn new(max_traces: usize, max_spans: usize) -> Self {
        Store {
            inner: RwLock::new(StoreInner::default()),
            max_traces: max_traces.max(1),
            max_spans: max_spans.max(1),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, StoreInner> {
        // A panic while holding the lock cannot leave the maps inconsistent in
        // a way that matters for a lab store, so keep serving.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn len(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.traces.len(), inner.total_spans)
    }

    /// Inserts (or merges) fragments of traces under one lock.
    pub(crate) fn insert(&self, fragments: Vec<(TraceId, TraceData)>) -> InsertOutcome {
        let mut out = InsertOutcome::default();
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for (id, fragment) in fragments {
            let entry = match inner.traces.get_mut(&id) {
                Some(existing) => {
                    // One trace may never hold more than max_spans: refuse the
                    // excess instead of evicting the whole store for it.
                    let room = self.max_spans.saturating_sub(existing.data.span_count);
                    let fragment = truncate(fragment, room, &mut out.rejected);
                    let added = existing.data.merge(fragment);
                    inner.total_spans += added;
                    continue;
                }
                None => {
                    let fragment = truncate(fragment, self.max_spans, &mut out.rejected);
                    if fragment.span_count == 0 {
                        continue;
                    }
                    StoredTrace { data: fragment }
                }
            };
            inner.total_spans += entry.data.span_count;
            inner.traces.insert(id, entry);
            inner.order.push_back(id);
        }
        while inner.traces.len() > self.max_traces || inner.total_spans > self.max_spans {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(t) = inner.traces.remove(&oldest) {
                inner.total_spans -= t.data.span_count;
                out.evicted += 1;
            }
        }
        out
    }
}

/// Keeps at most `room` spans of `fragment`, counting the rest as rejected.
fn truncate(fragment: TraceData, room: usize, rejected: &mut u64) -> TraceData {
    if fragment.span_count <= room {
        return fragment;
    }
    *rejected += (fragment.span_count - room) as u64;
    let mut kept = TraceData::new();
    let mut left = room;
    'outer: for group in fragment.groups {
        for scope in group.scopes {
            for span in scope.spans {
                if left == 0 {
                    break 'outer;
                }
                if kept.push(&group.resource, &scope.scope, span) {
                    left -= 1;
                }
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResourceInfo, ScopeInfo};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use std::sync::Arc;

    fn fragment(trace: u8, spans: u8) -> (TraceId, TraceData) {
        let res = Arc::new(ResourceInfo::new(Resource::default(), String::new()));
        let scope = Arc::new(ScopeInfo {
            scope: Default::default(),
            schema_url: String::new(),
        });
        let mut data = TraceData::new();
        for s in 0..spans {
            data.push(
                &res,
                &scope,
                Span {
                    trace_id: vec![trace; 16],
                    span_id: vec![s + 1; 8],
                    start_time_unix_nano: 10,
                    end_time_unix_nano: 20,
                    ..Default::default()
                },
            );
        }
        ([trace; 16], data)
    }

    #[test]
    fn evicts_oldest_when_trace_bound_exceeded() {
        let store = Store::new(3, 1000);
        for t in 1..=5 {
            store.insert(vec![fragment(t, 2)]);
        }
        let inner = store.read();
        assert_eq!(inner.traces.len(), 3);
        assert!(!inner.traces.contains_key(&[1; 16]));
        assert!(!inner.traces.contains_key(&[2; 16]));
        assert!(inner.traces.contains_key(&[5; 16]));
        assert_eq!(inner.total_spans, 6);
    }

    #[test]
    fn evicts_oldest_when_span_bound_exceeded() {
        let store = Store::new(100, 10);
        for t in 1..=4 {
            store.insert(vec![fragment(t, 4)]);
        }
        let (traces, spans) = store.len();
        assert_eq!((traces, spans), (2, 8));
    }

    #[test]
    fn merges_later_spans_and_drops_duplicates() {
        let store = Store::new(10, 100);
        store.insert(vec![fragment(7, 2)]);
        // Same span ids again (an exporter retry) plus one new span.
        store.insert(vec![fragment(7, 3)]);
        let inner = store.read();
        assert_eq!(inner.traces.len(), 1);
        assert_eq!(inner.traces[&[7; 16]].data.span_count, 3);
        assert_eq!(inner.total_spans, 3);
    }

    #[test]
    fn one_trace_never_exceeds_span_bound() {
        let store = Store::new(10, 5);
        let out = store.insert(vec![fragment(9, 8)]);
        assert_eq!(out.rejected, 3);
        assert_eq!(store.len(), (1, 5));
    }
}
