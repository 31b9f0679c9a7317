//! From a decoded export request to the store: validate ids, group spans by
//! trace, pass through the tail sampler when one is configured.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::model::{ResourceInfo, ScopeInfo, TraceData, TraceId, attrs_bytes};
use crate::span::{Interner, StoredSpan};
use crate::store::{Counters, Reservation, Store};
use crate::tail::TailSampler;

pub(crate) struct Pipeline {
    pub store: Store,
    pub tail: Option<TailSampler>,
    pub counters: Arc<Counters>,
}

/// Result of one export, reported back to the exporter as partial success.
#[derive(Debug, Default)]
pub(crate) struct IngestOutcome {
    pub rejected: u64,
    pub message: String,
}

impl Pipeline {
    /// Validates, groups and stores (or hands to the tail sampler) one
    /// request's spans; `held` is the request's share of the byte bound,
    /// given back once its spans are grouped.
    pub(crate) fn ingest(
        &self,
        req: ExportTraceServiceRequest,
        held: Option<Reservation<'_>>,
    ) -> IngestOutcome {
        let mut received = 0u64;
        let mut invalid = 0u64;
        let mut by_trace: HashMap<TraceId, TraceData> = HashMap::new();
        // One lock for the whole request: receivers on other threads wait
        // at most one request's conversion.
        let mut interner = Interner::global();
        for rs in req.resource_spans {
            let resource = Arc::new(ResourceInfo::new(
                rs.resource.unwrap_or_default(),
                rs.schema_url,
            ));
            for ss in rs.scope_spans {
                let scope = Arc::new(ScopeInfo {
                    scope: ss.scope.unwrap_or_default(),
                    schema_url: ss.schema_url,
                });
                for mut span in ss.spans {
                    received += 1;
                    // Some bridges send an all-zero parent for a root span.
                    if span.parent_span_id.iter().all(|b| *b == 0) {
                        span.parent_span_id.clear();
                    }
                    let Some(trace_id) = valid_ids(&span) else {
                        invalid += 1;
                        continue;
                    };
                    let span = StoredSpan::from_proto(span, &mut interner);
                    by_trace
                        .entry(trace_id)
                        .or_default()
                        .push(&resource, &scope, span);
                }
            }
        }
        drop(interner);
        Counters::add(&self.counters.spans_received, received);
        // The decoded request is about to be counted by the store itself.
        drop(held);
        let fragments: Vec<_> = by_trace.into_iter().collect();
        let to_store = match &self.tail {
            Some(tail) => tail.offer(fragments, Instant::now()),
            None => fragments,
        };
        let over_bound = self.store_fragments(to_store);
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
        let out = self.store.insert(fragments);
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
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    size_of::<Span>()
        + span.trace_id.capacity()
        + span.span_id.capacity()
        + span.trace_state.capacity()
        + span.parent_span_id.capacity()
        + span.name.capacity()
        + attrs_bytes(&span.attributes)
        + span.events.capacity() * size_of::<Event>()
        + span
            .events
            .iter()
            .map(|e| e.name.capacity() + attrs_bytes(&e.attributes))
            .sum::<usize>()
        + span.links.capacity() * size_of::<Link>()
        + span
            .links
            .iter()
            .map(|l| {
                l.trace_id.capacity()
                    + l.span_id.capacity()
                    + l.trace_state.capacity()
                    + attrs_bytes(&l.attributes)
            })
            .sum::<usize>()
        + span.status.as_ref().map_or(0, |s| s.message.capacity())
}

fn valid_ids(span: &opentelemetry_proto::tonic::trace::v1::Span) -> Option<TraceId> {
    let ok_len = span.trace_id.len() == 16
        && span.span_id.len() == 8
        && (span.parent_span_id.is_empty() || span.parent_span_id.len() == 8);
    if !ok_len || span.trace_id.iter().all(|b| *b == 0) || span.span_id.iter().all(|b| *b == 0) {
        return None;
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&span.trace_id);
    Some(id)
}
