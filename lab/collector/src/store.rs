//! Bounded in-memory trace store.
//!
//! Traces are keyed by trace id; spans that arrive later (an async consumer,
//! a slow exporter) merge into the trace they belong to. When any bound
//! (`max_traces`, `max_spans`, `max_bytes`) is exceeded the oldest traces by
//! first-seen time are evicted, so memory never grows without limit. Spans
//! are counted but vary enormously in size (one attribute may hold
//! megabytes), so the bound that really caps memory is `max_bytes`, on the
//! estimate of [`crate::model::span_bytes`]. Inserts take effect
//! immediately: there is no batching between "received" and "queryable".
//!
//! The span-level indexes of [`crate::index`] are kept up to date under the
//! same lock, on insert and on eviction; [`StoreInner::newest_first`] uses
//! them to hand a query only the traces that can match it.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use crate::index::{Index, Seq};
use crate::model::{TraceData, TraceId, span_bytes};
use crate::pipeline::DecodedGroup;
use crate::traceql::Need;

/// Counters shared by receivers, the tail sampler and the store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub spans_received: AtomicU64,
    pub spans_rejected: AtomicU64,
    pub traces_evicted: AtomicU64,
    pub traces_evicted_for_bytes: AtomicU64,
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
    /// The trace's number in the indexes.
    seq: Seq,
}

#[derive(Default)]
pub(crate) struct StoreInner {
    pub traces: HashMap<TraceId, StoredTrace>,
    /// Span-level and time indexes; also the eviction queue.
    index: Index,
    total_spans: usize,
    /// Sum of the stored traces' `TraceData::bytes`.
    total_bytes: usize,
    /// Bytes of the byte bound reserved by requests being decoded.
    inflight: usize,
}

/// The bounds of a store (and of the tail sampler's buffer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub max_traces: usize,
    pub max_spans: usize,
    pub max_bytes: usize,
}

impl Bounds {
    /// The bounds with each at least 1, so a zero in the config cannot make
    /// every insert evict everything in a loop.
    pub(crate) fn at_least_one(self) -> Self {
        Bounds {
            max_traces: self.max_traces.max(1),
            max_spans: self.max_spans.max(1),
            max_bytes: self.max_bytes.max(1),
        }
    }
}

pub(crate) struct Store {
    inner: RwLock<StoreInner>,
    bounds: Bounds,
}

/// What one insert did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct InsertOutcome {
    /// Spans refused because their trace alone would hold more than
    /// `max_spans` spans or `max_bytes` bytes.
    pub rejected: u64,
    pub evicted: u64,
    /// Of `evicted`, the traces evicted only because of `max_bytes`.
    pub evicted_for_bytes: u64,
}

impl Store {
    pub(crate) fn new(bounds: Bounds) -> Self {
        Store {
            inner: RwLock::new(StoreInner::default()),
            bounds: bounds.at_least_one(),
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

    /// Estimated bytes held by the stored traces.
    pub(crate) fn bytes(&self) -> usize {
        self.read().total_bytes
    }

    /// Bytes reserved by requests being decoded.
    pub(crate) fn inflight_bytes(&self) -> usize {
        self.read().inflight
    }

    /// The byte bound.
    pub(crate) fn max_bytes(&self) -> usize {
        self.bounds.max_bytes
    }

    /// Sets `bytes` of the byte bound aside for a request being decoded,
    /// evicting the oldest traces to make room, so that what is stored and
    /// what requests hold stay under `max_bytes` together. The bytes are
    /// given back when the reservation is dropped. Also returns the traces
    /// evicted (all of them, and those for bytes).
    ///
    /// # Errors
    /// [`Refused::TooLarge`] when `bytes` exceeds the whole bound,
    /// [`Refused::Busy`] when other reservations leave too little of it.
    pub(crate) fn reserve(&self, bytes: usize) -> Result<(Reservation<'_>, (u64, u64)), Refused> {
        let mut r = Reservation {
            store: self,
            bytes: 0,
        };
        let evicted = r.grow(bytes)?;
        Ok((r, evicted))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, StoreInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts (or merges) fragments of traces under one lock.
    pub(crate) fn insert(&self, fragments: Vec<(TraceId, TraceData)>) -> InsertOutcome {
        let Bounds {
            max_spans,
            max_bytes,
            ..
        } = self.bounds;
        let mut out = InsertOutcome::default();
        let mut inner = self.write();
        let inner = &mut *inner;
        for (id, fragment) in fragments {
            if let Some(existing) = inner.traces.get_mut(&id) {
                // One trace may never hold more than max_spans or
                // max_bytes: refuse the excess instead of evicting the
                // whole store for it.
                let span_room = max_spans.saturating_sub(existing.data.span_count);
                let byte_room = max_bytes.saturating_sub(existing.data.bytes);
                let fragment = truncate(fragment, span_room, byte_room, &mut out.rejected);
                let bytes_before = existing.data.bytes;
                let start_before = existing.data.start_ns;
                let seq = existing.seq;
                let index = &mut inner.index;
                let added = existing
                    .data
                    .merge_each(fragment, |res, span| index.add_span(seq, res, span));
                index.moved_start(id, start_before, existing.data.start_ns);
                let grown = existing.data.bytes - bytes_before;
                inner.total_spans += added;
                inner.total_bytes += grown;
                continue;
            }
            let fragment = truncate(fragment, max_spans, max_bytes, &mut out.rejected);
            if fragment.span_count == 0 {
                continue;
            }
            let seq = inner.index.add_trace(id, fragment.start_ns);
            for (res, span) in fragment.spans() {
                inner.index.add_span(seq, res, span);
            }
            inner.total_spans += fragment.span_count;
            inner.total_bytes += fragment.bytes;
            inner.traces.insert(
                id,
                StoredTrace {
                    data: fragment,
                    seq,
                },
            );
        }
        let (evicted, evicted_for_bytes) = inner.evict(self.bounds);
        out.evicted = evicted;
        out.evicted_for_bytes = evicted_for_bytes;
        out
    }
}

impl Store {
    /// Stores a decoded request's spans as they come, under one lock, with
    /// the same outcome as grouping them by trace and calling
    /// [`Store::insert`] (the pipeline does that when a tail sampler sits in
    /// between): a span is merged into its trace, or starts one, unless
    /// its trace would then hold more than `max_spans` spans or `max_bytes`
    /// bytes. Spans with invalid ids were left out by the decoder.
    pub(crate) fn insert_groups(&self, groups: Vec<DecodedGroup>) -> InsertOutcome {
        let Bounds {
            max_spans,
            max_bytes,
            ..
        } = self.bounds;
        let mut out = InsertOutcome::default();
        let mut inner = self.write();
        let inner = &mut *inner;
        for group in groups {
            let (resource, scope) = (&group.resource, &group.scope);
            for (id, span) in group.spans {
                let fits = |data: &TraceData| {
                    data.span_count < max_spans && data.bytes + span_bytes(&span) <= max_bytes
                };
                if let Some(existing) = inner.traces.get_mut(&id) {
                    let data = &mut existing.data;
                    if !fits(data) {
                        // A span it holds already is a retry, not excess.
                        if !data.has_span(span.span_id) {
                            out.rejected += 1;
                        }
                        continue;
                    }
                    let (bytes_before, start_before) = (data.bytes, data.start_ns);
                    if let Some(stored) = data.push_get(resource, scope, span) {
                        inner.index.add_span(existing.seq, resource, stored);
                        inner.index.moved_start(id, start_before, data.start_ns);
                        inner.total_spans += 1;
                        inner.total_bytes += data.bytes - bytes_before;
                    }
                    continue;
                }
                let mut data = TraceData::new();
                if !fits(&data) {
                    out.rejected += 1;
                    continue;
                }
                data.push(resource, scope, span);
                let seq = inner.index.add_trace(id, data.start_ns);
                for (res, span) in data.spans() {
                    inner.index.add_span(seq, res, span);
                }
                inner.total_spans += data.span_count;
                inner.total_bytes += data.bytes;
                inner.traces.insert(id, StoredTrace { data, seq });
            }
        }
        let (evicted, evicted_for_bytes) = inner.evict(self.bounds);
        out.evicted = evicted;
        out.evicted_for_bytes = evicted_for_bytes;
        out
    }
}

/// Why a reservation of the byte bound was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Other requests in flight hold too much of it now: try again later.
    Busy,
    /// More than the whole bound: never possible.
    TooLarge,
}

/// Bytes of the byte bound held by one request being decoded.
pub(crate) struct Reservation<'s> {
    store: &'s Store,
    bytes: usize,
}

impl Reservation<'_> {
    /// Reserves `more` bytes for the same request, evicting to make room;
    /// returns the traces evicted (all, and for bytes).
    ///
    /// # Errors
    /// As [`Store::reserve`], counting what the request holds already.
    pub(crate) fn grow(&mut self, more: usize) -> Result<(u64, u64), Refused> {
        let bounds = self.store.bounds;
        if self.bytes.saturating_add(more) > bounds.max_bytes {
            return Err(Refused::TooLarge);
        }
        let mut inner = self.store.write();
        if inner.inflight.saturating_add(more) > bounds.max_bytes {
            return Err(Refused::Busy);
        }
        inner.inflight += more;
        self.bytes += more;
        Ok(inner.evict(bounds))
    }

    /// Bytes this request holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut inner = self.store.write();
        inner.inflight = inner.inflight.saturating_sub(self.bytes);
    }
}

impl StoreInner {
    /// Evicts the oldest traces until the bounds hold (the byte bound
    /// counting the bytes requests in flight hold); returns how many were
    /// evicted, and how many of them for bytes only.
    fn evict(&mut self, bounds: Bounds) -> (u64, u64) {
        let (mut evicted, mut for_bytes) = (0, 0);
        loop {
            let over_count =
                self.traces.len() > bounds.max_traces || self.total_spans > bounds.max_spans;
            let over_bytes = self.total_bytes.saturating_add(self.inflight) > bounds.max_bytes;
            if !(over_count || over_bytes) {
                break;
            }
            let Some((_, oldest)) = self.index.oldest() else {
                break;
            };
            let Some(t) = self.traces.remove(&oldest) else {
                // Cannot happen (the index holds exactly the stored traces);
                // stop rather than loop.
                break;
            };
            self.index.evict_oldest(&t.data);
            self.total_spans -= t.data.span_count;
            self.total_bytes -= t.data.bytes;
            evicted += 1;
            if !over_count {
                for_bytes += 1;
            }
        }
        (evicted, for_bytes)
    }

    /// Whether the indexes equal indexes rebuilt from the stored traces.
    #[cfg(test)]
    pub(crate) fn index_matches_a_rebuild(&self) -> bool {
        self.index.matches_rebuild(self.traces.len(), |id| {
            self.traces.get(id).map(|t| (&t.data, t.seq))
        })
    }

    /// The traces that may satisfy `need`, most recent first (by first
    /// span start, then by trace id, largest first): the order search
    /// results are listed in, so a search can stop at its limit. Traces
    /// left out cannot satisfy `need`; those listed still have to be
    /// evaluated.
    pub(crate) fn newest_first<'s>(
        &'s self,
        need: &Need,
    ) -> Box<dyn Iterator<Item = (&'s TraceId, &'s TraceData)> + 's> {
        let get = move |id: &'s TraceId| self.traces.get(id).map(|t| (id, &t.data));
        match self.index.candidates(need) {
            None => Box::new(self.index.newest_first().filter_map(move |(_, id)| get(id))),
            // Few candidates: sort them by themselves.
            Some(seqs) if seqs.len() <= self.traces.len() / 16 => {
                let mut hits: Vec<(u64, &TraceId)> = seqs
                    .iter()
                    .filter_map(|&seq| self.index.id_of(seq))
                    .filter_map(|id| self.traces.get(id).map(|t| (t.data.start_ns, id)))
                    .collect();
                hits.sort_unstable_by(|a, b| b.cmp(a));
                Box::new(hits.into_iter().filter_map(move |(_, id)| get(id)))
            }
            // Many: walk the time index, skipping the others.
            Some(seqs) => {
                let mut member = vec![false; self.traces.len()];
                let head = self.index.oldest().map_or(0, |(seq, _)| seq);
                let slot = move |seq: Seq| usize::try_from(seq.checked_sub(head)?).ok();
                for seq in seqs {
                    if let Some(m) = slot(seq).and_then(|i| member.get_mut(i)) {
                        *m = true;
                    }
                }
                Box::new(self.index.newest_first().filter_map(move |(_, id)| {
                    let t = self.traces.get(id)?;
                    let hit = slot(t.seq).and_then(|i| member.get(i).copied());
                    hit.unwrap_or(false).then_some((id, &t.data))
                }))
            }
        }
    }
}

/// Keeps at most `span_room` spans of `fragment` and about `byte_room`
/// estimated bytes (a span that would cross it is left out, but the
/// resource and scope records a kept span brings may add a little), counting
/// the rest as rejected.
fn truncate(
    fragment: TraceData,
    span_room: usize,
    byte_room: usize,
    rejected: &mut u64,
) -> TraceData {
    if fragment.span_count <= span_room && fragment.bytes <= byte_room {
        return fragment;
    }
    let total = fragment.span_count;
    let mut kept = TraceData::new();
    'outer: for group in fragment.groups {
        for scope in group.scopes {
            for span in scope.spans {
                if kept.span_count == span_room {
                    break 'outer;
                }
                // Skipped, not a stop: a smaller span later may still fit.
                if kept.bytes + span_bytes(&span) > byte_room {
                    continue;
                }
                kept.push(&group.resource, &scope.scope, span);
            }
        }
    }
    *rejected += (total - kept.span_count) as u64;
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResourceInfo, ScopeInfo};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use std::sync::Arc;

    fn spans_only(max_traces: usize, max_spans: usize) -> Bounds {
        Bounds {
            max_traces,
            max_spans,
            max_bytes: usize::MAX,
        }
    }

    fn fragment(trace: u8, spans: u8) -> (TraceId, TraceData) {
        let res = Arc::new(ResourceInfo::new(Resource::default(), String::new()));
        let scope = Arc::new(ScopeInfo {
            scope: Default::default(),
            schema_url: String::new(),
            shared: false,
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
        let store = Store::new(spans_only(3, 1000));
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
        let store = Store::new(spans_only(100, 10));
        for t in 1..=4 {
            store.insert(vec![fragment(t, 4)]);
        }
        let (traces, spans) = store.len();
        assert_eq!((traces, spans), (2, 8));
    }

    #[test]
    fn merges_later_spans_and_drops_duplicates() {
        let store = Store::new(spans_only(10, 100));
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
        let store = Store::new(spans_only(10, 5));
        let out = store.insert(vec![fragment(9, 8)]);
        assert_eq!(out.rejected, 3);
        assert_eq!(store.len(), (1, 5));
    }

    /// A trace of `spans` spans, each with a `kib` KiB attribute.
    fn heavy(trace: u8, spans: u8, kib: usize) -> (TraceId, TraceData) {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
        let (id, light) = fragment(trace, spans);
        let mut data = TraceData::new();
        for g in light.groups {
            for s in g.scopes {
                for span in s.spans {
                    let mut span = span.to_proto();
                    span.attributes.push(KeyValue {
                        key: "payload".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue("x".repeat(kib * 1024))),
                        }),
                        ..Default::default()
                    });
                    data.push(&g.resource, &s.scope, span);
                }
            }
        }
        (id, data)
    }

    fn sum_of_traces(store: &Store) -> usize {
        store.read().traces.values().map(|t| t.data.bytes).sum()
    }

    #[test]
    fn byte_bound_evicts_oldest_and_the_estimate_stays_consistent() {
        let max_bytes = 100 * 1024;
        let store = Store::new(Bounds {
            max_traces: 1000,
            max_spans: 1000,
            max_bytes,
        });
        let mut evicted_for_bytes = 0;
        for t in 1..=100 {
            let out = store.insert(vec![heavy(t, 2, 4)]);
            evicted_for_bytes += out.evicted_for_bytes;
            // Later spans of an older trace merge and count too.
            if t > 1 {
                let out = store.insert(vec![heavy(t - 1, 3, 1)]);
                evicted_for_bytes += out.evicted_for_bytes;
            }
            assert!(
                store.bytes() <= max_bytes,
                "{} > {max_bytes}",
                store.bytes()
            );
            assert_eq!(store.bytes(), sum_of_traces(&store));
        }
        let inner = store.read();
        assert!(inner.traces.contains_key(&[100; 16]));
        assert!(!inner.traces.contains_key(&[1; 16]));
        assert!(inner.traces.len() >= 5, "{}", inner.traces.len());
        assert!(evicted_for_bytes >= 90, "{evicted_for_bytes}");
        // The estimate counts at least the payloads it holds.
        let payload: usize = inner.traces.values().map(|t| t.data.span_count).sum();
        assert!(inner.total_bytes > payload * 1024);
    }

    #[test]
    fn one_trace_never_exceeds_byte_bound() {
        let store = Store::new(Bounds {
            max_traces: 10,
            max_spans: 1000,
            max_bytes: 50 * 1024,
        });
        let out = store.insert(vec![heavy(3, 20, 4)]);
        assert!(out.rejected > 0 && out.rejected < 20, "{out:?}");
        assert!(store.bytes() <= 50 * 1024);
        // Adding to it later is refused the same way.
        let (_, spans_before) = store.len();
        let out = store.insert(vec![heavy(3, 30, 4)]);
        assert!(out.rejected >= 30 - spans_before as u64, "{out:?}");
        assert!(store.bytes() <= 50 * 1024);
        assert_eq!(store.len(), (1, spans_before));
    }

    /// One decoded request: groups of (resource number, spans as (trace,
    /// span id, start, error?)), with two resources to choose from.
    type Request = Vec<(usize, Vec<(u8, u8, u64, bool)>)>;

    fn decoded(req: &Request, resources: &[Arc<ResourceInfo>; 2]) -> Vec<DecodedGroup> {
        use opentelemetry_proto::tonic::trace::v1::Status;
        use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
        let scope = Arc::new(ScopeInfo {
            scope: Default::default(),
            schema_url: String::new(),
            shared: false,
        });
        let mut interner = crate::span::Interner::new(1 << 20);
        req.iter()
            .map(|(r, spans)| {
                let mut g = DecodedGroup::new(resources[*r % 2].clone(), scope.clone());
                for &(trace, span, start, error) in spans {
                    let proto = Span {
                        span_id: vec![span; 8],
                        name: format!("op{}", span % 3),
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 5,
                        status: error.then(|| Status {
                            code: StatusCode::Error as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    g.spans
                        .push(([trace; 16], StoredSpan::from_proto(proto, &mut interner)));
                }
                g
            })
            .collect()
    }

    /// The same request grouped by trace, as the tail sampler gets it.
    fn grouped(groups: Vec<DecodedGroup>) -> Vec<(TraceId, TraceData)> {
        let mut by_trace: std::collections::BTreeMap<TraceId, TraceData> = Default::default();
        for g in groups {
            for (id, span) in g.spans {
                by_trace
                    .entry(id)
                    .or_default()
                    .push(&g.resource, &g.scope, span);
            }
        }
        by_trace.into_iter().collect()
    }

    /// A trace's id, (service, span id) of its spans, bytes, start, end,
    /// whether it has an error.
    type TraceSummary = (TraceId, Vec<(String, [u8; 8])>, usize, u64, u64, bool);

    /// What the traces hold, in a comparable form.
    fn summary(store: &Store) -> Vec<TraceSummary> {
        let inner = store.read();
        let mut out: Vec<_> = inner
            .traces
            .iter()
            .map(|(id, t)| {
                let mut spans: Vec<_> = t
                    .data
                    .spans()
                    .map(|(r, s)| (r.service.clone(), s.span_id))
                    .collect();
                spans.sort();
                let d = &t.data;
                (*id, spans, d.bytes, d.start_ns, d.end_ns, d.has_error)
            })
            .collect();
        out.sort();
        out
    }

    use crate::span::StoredSpan;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Storing a request's spans as they come gives the traces, bytes,
        /// counts and indexes that grouping them by trace first gives.
        #[test]
        fn insert_groups_stores_what_grouped_inserts_store(
            requests in prop::collection::vec(
                prop::collection::vec(
                    (0usize..2, prop::collection::vec((1u8..6, 1u8..50, 1u64..100, any::<bool>()), 0..12)),
                    0..3,
                ),
                1..6,
            )
        ) {
            let resources = ["gateway", "auth"].map(|name| {
                Arc::new(ResourceInfo::new(
                    Resource {
                        attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                            key: "service.name".into(),
                            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                                value: Some(
                                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                        name.into(),
                                    ),
                                ),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    String::new(),
                ))
            });
            let bounds = spans_only(1000, 100_000);
            let (direct, by_trace) = (Store::new(bounds), Store::new(bounds));
            for req in &requests {
                let a = direct.insert_groups(decoded(req, &resources));
                let b = by_trace.insert(grouped(decoded(req, &resources)));
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(summary(&direct), summary(&by_trace));
            prop_assert_eq!(direct.len(), by_trace.len());
            prop_assert_eq!(direct.bytes(), sum_of_traces(&direct));
            prop_assert_eq!(direct.bytes(), by_trace.bytes());
            prop_assert!(direct.read().index_matches_a_rebuild());
        }
    }

    #[test]
    fn insert_groups_keeps_each_trace_within_the_bounds_and_counts_the_rest() {
        let resources =
            [0, 1].map(|_| Arc::new(ResourceInfo::new(Resource::default(), String::new())));
        // Spans: 8 of trace 1 (one sent twice), 2 of trace 2.
        let mut spans: Vec<_> = (1..=8).map(|s| (1u8, s, 10, false)).collect();
        spans.push((1, 3, 10, false));
        spans.extend([(2, 1, 10, false), (2, 2, 10, false)]);
        let store = Store::new(spans_only(10, 5));
        let out = store.insert_groups(decoded(&vec![(0, spans)], &resources));
        // Trace 1 keeps 5 of its 8 spans (the repeat is no span of its
        // own); trace 2 fits, and the store's span bound then evicts the
        // oldest trace (1).
        assert_eq!(out.rejected, 3, "{out:?}");
        assert_eq!(out.evicted, 1, "{out:?}");
        assert_eq!(store.len(), (1, 2));
        assert!(store.read().index_matches_a_rebuild());

        // A span larger than the byte bound is refused; small ones stay.
        let store = Store::new(Bounds {
            max_traces: 10,
            max_spans: 100,
            max_bytes: 4 * 1024,
        });
        let (id, big) = heavy(4, 1, 8);
        let mut groups = decoded(&vec![(0, vec![(4, 9, 10, false)])], &resources);
        for g in big.groups {
            for s in g.scopes {
                groups[0]
                    .spans
                    .extend(s.spans.into_iter().map(|span| (id, span)));
            }
        }
        let out = store.insert_groups(groups);
        assert_eq!(out.rejected, 1, "{out:?}");
        assert_eq!(store.len(), (1, 1));
        assert!(store.bytes() <= 4 * 1024);
    }
}
