//! From a decoded export request to the store: validate ids, then store
//! the spans, or group them by trace for the tail sampler when one is
//! configured. Requests
//! arrive as [`Decoded`] (spans already in stored form): OTLP/HTTP protobuf
//! bodies from [`crate::otlp_proto`], prost-decoded requests (gRPC, JSON)
//! through [`Decoded::from_proto`].

use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use prost::Message;

use crate::model::{
    ResourceInfo, ScopeInfo, TraceData, TraceId, attrs_bytes, events_links_bytes, resource_bytes,
    scope_bytes, span_bytes,
};
use crate::otlp_proto::RawIds;
use crate::span::{Interner, SpanBuilder, StoredSpan};
use crate::store::{Counters, InsertOutcome, Reservation, Store};
use crate::tail::TailSampler;

pub(crate) struct Pipeline {
    pub store: Store,
    pub tail: Option<TailSampler>,
    pub counters: Arc<Counters>,
    /// Resources and scopes of recent requests, shared by the spans of
    /// later ones that send the same.
    pub records: Records,
}

/// Result of one export, reported back to the exporter as partial success.
#[derive(Debug, Default)]
pub(crate) struct IngestOutcome {
    pub rejected: u64,
    pub message: String,
}

/// A decoded export request: its spans in stored form, grouped by
/// (resource, scope) as received.
#[derive(Default)]
pub(crate) struct Decoded {
    pub groups: Vec<DecodedGroup>,
}

pub(crate) struct DecodedGroup {
    pub resource: Arc<ResourceInfo>,
    pub scope: Arc<ScopeInfo>,
    pub spans: Vec<(TraceId, StoredSpan)>,
    /// Spans left out for invalid ids.
    pub invalid: u64,
}

impl DecodedGroup {
    pub(crate) fn new(resource: Arc<ResourceInfo>, scope: Arc<ScopeInfo>) -> Self {
        DecodedGroup {
            resource,
            scope,
            spans: Vec::new(),
            invalid: 0,
        }
    }

    /// Adds a decoded span, or counts it as invalid when its ids are.
    pub(crate) fn add(&mut self, ids: RawIds<'_>, span: StoredSpan) {
        match valid_ids(&ids) {
            Some(trace_id) => self.spans.push((trace_id, span)),
            None => self.invalid += 1,
        }
    }
}

impl Decoded {
    /// The stored form of a request prost decoded (OTLP/gRPC, OTLP/JSON).
    pub(crate) fn from_proto(
        req: ExportTraceServiceRequest,
        records: &Records,
        interner: &mut Interner,
    ) -> Decoded {
        let mut b = SpanBuilder::new(interner);
        let mut out = Decoded::default();
        for rs in req.resource_spans {
            let key = rs.resource.as_ref().map(Message::encode_to_vec);
            let schema_url = rs.schema_url;
            let resource = records.resource(key.as_deref().unwrap_or(&[]), &schema_url, || {
                Ok::<_, std::convert::Infallible>(ResourceInfo::new(
                    rs.resource.unwrap_or_default(),
                    schema_url.clone(),
                ))
            });
            let Ok(resource) = resource;
            for ss in rs.scope_spans {
                let key = ss.scope.as_ref().map(Message::encode_to_vec);
                let schema_url = ss.schema_url;
                let scope = records.scope(key.as_deref().unwrap_or(&[]), &schema_url, || {
                    Ok::<_, std::convert::Infallible>(ScopeInfo {
                        scope: ss.scope.unwrap_or_default(),
                        schema_url: schema_url.clone(),
                        shared: false,
                    })
                });
                let Ok(scope) = scope;
                let mut group = DecodedGroup::new(resource.clone(), scope);
                group.spans.reserve_exact(ss.spans.len());
                for mut span in ss.spans {
                    let trace_id = std::mem::take(&mut span.trace_id);
                    let (span_id, parent) = (span.span_id.clone(), span.parent_span_id.clone());
                    let stored = b.build_from(span);
                    let ids = RawIds {
                        trace_id: &trace_id,
                        span_id: &span_id,
                        parent_span_id: &parent,
                    };
                    group.add(ids, stored);
                }
                out.groups.push(group);
            }
        }
        out
    }

    /// Estimated memory of the decoded request: its spans as the store
    /// counts them (the resource and scope records are shared, and counted
    /// by each trace that keeps them).
    pub(crate) fn bytes(&self) -> usize {
        self.groups
            .iter()
            .map(|g| {
                g.spans.capacity() * size_of::<(TraceId, StoredSpan)>()
                    + g.spans
                        .iter()
                        .map(|(_, s)| span_bytes(s) - size_of::<StoredSpan>())
                        .sum::<usize>()
            })
            .sum()
    }
}

/// Resources and scopes shared by every request that sends the same bytes:
/// the lab's services send the same resource and scope with every export,
/// and without sharing each request's copy would live as long as any of its
/// spans and be counted by each trace holding it.
///
/// A kept record stays for the collector's life (a trace may hold it at any
/// time), so the records are bounded instead: at most [`RECORDS_KEPT`] of
/// each kind and [`RECORDS_MAX_BYTES`] in all, a fixed cost outside the
/// store's byte bound (`Stats::bytes_records`). Past that, a request's
/// records are its own and each trace holding one is charged for it, as
/// for any record too large to keep.
pub(crate) struct Records {
    resources: Mutex<RecordCache<ResourceInfo>>,
    scopes: Mutex<RecordCache<ScopeInfo>>,
}

/// Most records of each kind kept (more distinct senders than a lab runs).
const RECORDS_KEPT: usize = 64;

/// Most bytes kept records of each kind hold, as [`Record::bytes`] counts
/// them with their keys.
const RECORDS_MAX_BYTES: usize = 512 * 1024;

/// Largest encoded record kept.
const RECORD_KEY_MAX: usize = 4096;

/// A resource or scope record.
pub(crate) trait Record {
    /// Marks it kept by the records (traces are not charged for it).
    fn share(&mut self);
    /// Its estimated heap bytes.
    fn bytes(&self) -> usize;
}

impl Record for ResourceInfo {
    fn share(&mut self) {
        self.shared = true;
    }

    fn bytes(&self) -> usize {
        resource_bytes(self)
    }
}

impl Record for ScopeInfo {
    fn share(&mut self) {
        self.shared = true;
    }

    fn bytes(&self) -> usize {
        scope_bytes(self)
    }
}

/// A kept record: its encoding, its schema url, the record.
type RecordEntry<T> = (Box<[u8]>, Box<str>, Arc<T>);

struct RecordCache<T> {
    /// Most recently used first.
    entries: Vec<RecordEntry<T>>,
    bytes: usize,
}

impl<T> Default for RecordCache<T> {
    fn default() -> Self {
        RecordCache {
            entries: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T: Record> RecordCache<T> {
    fn get<E>(
        &mut self,
        key: &[u8],
        schema_url: &str,
        build: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        if let Some(i) = self
            .entries
            .iter()
            .position(|(k, u, _)| **k == *key && **u == *schema_url)
        {
            if i > 0 {
                // The most recent sender is the likeliest next one.
                self.entries[..=i].rotate_right(1);
            }
            return Ok(self.entries[0].2.clone());
        }
        let mut record = build()?;
        let cost = key.len()
            + schema_url.len()
            + record.bytes()
            + size_of::<RecordEntry<T>>()
            + 2 * size_of::<usize>();
        if key.len() <= RECORD_KEY_MAX
            && self.entries.len() < RECORDS_KEPT
            && self.bytes + cost <= RECORDS_MAX_BYTES
        {
            record.share();
            let record = Arc::new(record);
            self.entries
                .insert(0, (key.into(), schema_url.into(), record.clone()));
            self.bytes += cost;
            return Ok(record);
        }
        Ok(Arc::new(record))
    }
}

impl Default for Records {
    fn default() -> Self {
        Records {
            resources: Mutex::new(RecordCache::default()),
            scopes: Mutex::new(RecordCache::default()),
        }
    }
}

impl Records {
    /// The kept resource encoded as `key` with `schema_url`; else the one
    /// `build` makes, kept if there is room.
    ///
    /// # Errors
    /// What `build` returns.
    pub(crate) fn resource<E>(
        &self,
        key: &[u8],
        schema_url: &str,
        build: impl FnOnce() -> Result<ResourceInfo, E>,
    ) -> Result<Arc<ResourceInfo>, E> {
        let mut cache = self.resources.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key, schema_url, build)
    }

    /// As [`Records::resource`], for scopes.
    ///
    /// # Errors
    /// What `build` returns.
    pub(crate) fn scope<E>(
        &self,
        key: &[u8],
        schema_url: &str,
        build: impl FnOnce() -> Result<ScopeInfo, E>,
    ) -> Result<Arc<ScopeInfo>, E> {
        let mut cache = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key, schema_url, build)
    }

    /// Bytes the kept records hold.
    pub(crate) fn bytes(&self) -> usize {
        let r = self
            .resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes;
        let s = self.scopes.lock().unwrap_or_else(|e| e.into_inner()).bytes;
        r + s
    }
}

impl Pipeline {
    /// Converts a request prost decoded and ingests it (see
    /// [`Pipeline::ingest_decoded`]).
    pub(crate) fn ingest(
        &self,
        req: ExportTraceServiceRequest,
        held: Option<Reservation<'_>>,
    ) -> IngestOutcome {
        let decoded = Decoded::from_proto(req, &self.records, &mut Interner::global());
        self.ingest_decoded(decoded, held)
    }

    /// Stores one request's spans ([`Store::insert_groups`]), or groups
    /// them by trace for the tail sampler when there is one; `held` is the
    /// request's share of the byte bound, given back just before.
    pub(crate) fn ingest_decoded(
        &self,
        req: Decoded,
        held: Option<Reservation<'_>>,
    ) -> IngestOutcome {
        let mut received = 0u64;
        let mut invalid = 0u64;
        for g in &req.groups {
            received += g.invalid + g.spans.len() as u64;
            invalid += g.invalid;
        }
        Counters::add(&self.counters.spans_received, received);
        // The decoded request is about to be counted by the store itself
        // (or by the tail sampler's buffer).
        drop(held);
        let over_bound = match &self.tail {
            Some(tail) => {
                let mut by_trace: HashMap<TraceId, TraceData> = HashMap::new();
                for g in req.groups {
                    for (trace_id, span) in g.spans {
                        by_trace
                            .entry(trace_id)
                            .or_default()
                            .push(&g.resource, &g.scope, span);
                    }
                }
                let fragments: Vec<_> = by_trace.into_iter().collect();
                self.store_fragments(tail.offer(fragments, Instant::now()))
            }
            None => self.count_insert(self.store.insert_groups(req.groups)),
        };
        let rejected = invalid + over_bound;
        Counters::add(&self.counters.spans_rejected, rejected);
        let mut message = Vec::new();
        if invalid > 0 {
            message.push(format!(
                "{invalid} span(s) with an invalid trace id (16 non-zero bytes) or span id (8 non-zero bytes)"
            ));
        }
        if over_bound > 0 {
            message.push(format!(
                "{over_bound} span(s) over the per-trace span or byte limit"
            ));
        }
        IngestOutcome {
            rejected,
            message: message.join("; "),
        }
    }

    /// Counts traces the store evicted.
    pub(crate) fn count_evictions(&self, evicted: u64, for_bytes: u64) {
        Counters::add(&self.counters.traces_evicted, evicted);
        Counters::add(&self.counters.traces_evicted_for_bytes, for_bytes);
    }

    /// Stores fragments; returns the spans refused by the per-trace bound.
    pub(crate) fn store_fragments(&self, fragments: Vec<(TraceId, TraceData)>) -> u64 {
        if fragments.is_empty() {
            return 0;
        }
        self.count_insert(self.store.insert(fragments))
    }

    /// Counts what an insert evicted; returns the spans it refused.
    fn count_insert(&self, out: InsertOutcome) -> u64 {
        Counters::add(&self.counters.traces_evicted, out.evicted);
        Counters::add(
            &self.counters.traces_evicted_for_bytes,
            out.evicted_for_bytes,
        );
        out.rejected
    }

    /// Moves due tail-sampling decisions into the store.
    pub(crate) fn tail_tick(&self, flush: bool) {
        if let Some(tail) = &self.tail {
            let kept = tail.decide_due(Instant::now(), flush);
            let rejected = self.store_fragments(kept);
            Counters::add(&self.counters.spans_rejected, rejected);
        }
    }
}

/// Estimated memory of a decoded request: its prost spans (with their
/// heap allocations, by capacity), plus its resources' attribute lists.
pub(crate) fn request_bytes(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .map(|rs| {
            let resource = rs.resource.as_ref().map_or(0, |r| {
                r.attributes.capacity()
                    * size_of::<opentelemetry_proto::tonic::common::v1::KeyValue>()
                    + r.attributes
                        .iter()
                        .map(|kv| kv.key.capacity())
                        .sum::<usize>()
            });
            resource
                + rs.scope_spans
                    .iter()
                    .map(|ss| ss.spans.iter().map(decoded_span_bytes).sum::<usize>())
                    .sum::<usize>()
        })
        .sum()
}

/// Memory held by one decoded prost span.
fn decoded_span_bytes(span: &opentelemetry_proto::tonic::trace::v1::Span) -> usize {
    use opentelemetry_proto::tonic::trace::v1::Span;
    size_of::<Span>()
        + span.trace_id.capacity()
        + span.span_id.capacity()
        + span.trace_state.capacity()
        + span.parent_span_id.capacity()
        + span.name.capacity()
        + attrs_bytes(&span.attributes)
        + events_links_bytes(&span.events, &span.links)
        + span.status.as_ref().map_or(0, |s| s.message.capacity())
}

/// The trace id of a span with valid ids: a 16-byte trace id and an 8-byte
/// span id, neither all zero, and an empty or 8-byte parent id (an all-zero
/// parent, which some bridges send for a root, means none).
fn valid_ids(ids: &RawIds<'_>) -> Option<TraceId> {
    let ok_len = ids.trace_id.len() == 16
        && ids.span_id.len() == 8
        && (ids.parent_span_id.is_empty() || ids.parent_span_id.len() == 8);
    if !ok_len || ids.trace_id.iter().all(|b| *b == 0) || ids.span_id.iter().all(|b| *b == 0) {
        return None;
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(ids.trace_id);
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use std::convert::Infallible;

    fn resource(i: usize) -> ResourceInfo {
        ResourceInfo::new(
            Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(format!("service-{i}"))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            String::new(),
        )
    }

    #[test]
    fn records_are_kept_up_to_their_bound_and_only_unkept_ones_are_charged_per_trace() {
        let records = Records::default();
        let mut got = Vec::new();
        for i in 0..RECORDS_KEPT + 5 {
            let key = format!("key-{i}");
            got.push(
                records
                    .resource(key.as_bytes(), "", || Ok::<_, Infallible>(resource(i)))
                    .unwrap(),
            );
        }
        assert!(got[..RECORDS_KEPT].iter().all(|r| r.shared));
        assert!(got[RECORDS_KEPT..].iter().all(|r| !r.shared));
        // A kept record is handed out again, not rebuilt.
        let again = records
            .resource(b"key-0", "", || -> Result<ResourceInfo, Infallible> {
                panic!("rebuilt a kept record")
            })
            .unwrap();
        assert!(Arc::ptr_eq(&again, &got[0]));
        // Another schema url is another record.
        let other = records
            .resource(b"key-0", "https://example.com/schema", || {
                Ok::<_, Infallible>(resource(0))
            })
            .unwrap();
        assert!(!Arc::ptr_eq(&other, &got[0]));
        assert!(records.bytes() > 0 && records.bytes() <= 2 * RECORDS_MAX_BYTES);

        let scope = Arc::new(ScopeInfo {
            scope: Default::default(),
            schema_url: String::new(),
            shared: false,
        });
        let span = || Span {
            span_id: vec![1; 8],
            ..Default::default()
        };
        let mut with_kept = TraceData::new();
        with_kept.push(&got[0], &scope, span());
        let mut with_own = TraceData::new();
        with_own.push(&got[RECORDS_KEPT], &scope, span());
        assert_eq!(
            with_own.bytes - with_kept.bytes,
            resource_bytes(&got[RECORDS_KEPT])
        );
    }
}
