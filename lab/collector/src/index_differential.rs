//! Differential test of the span-level indexes: on random stores (traces
//! arriving in fragments, merged, evicted by count and by bytes) and for
//! the conformance table's queries plus random ones of the same shapes, a
//! search and a metrics query answered through the indexes must equal the
//! answer of a full scan of every stored trace. The indexes themselves must
//! equal indexes rebuilt from scratch from what is stored.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::metrics::{MetricsParams, MetricsRequest};
use crate::model::{ResourceInfo, ScopeInfo, TraceData, TraceId};
use crate::search::{SearchParams, SearchRequest};
use crate::store::{Bounds, Store, StoreInner};
use crate::traceql::Need;

const SERVICES: [&str; 4] = ["gateway", "payment", "auth", ""];
const NAMES: [&str; 5] = [
    "POST /api/checkout",
    "POST /payments",
    "processPayment",
    "SELECT orders",
    "payment.completed process",
];
/// Durations in ms (0 is 0 ns; the last is just over 140 ms).
const DURATIONS_MS: [u64; 7] = [0, 1, 5, 120, 140, 150, 2000];

#[derive(Debug, Clone)]
struct SpanSpec {
    service: usize,
    name: usize,
    kind: i32,
    status: i32,
    start_ms: u64,
    dur: usize,
    /// Index of an earlier span of the trace, or none (a root).
    parent: Option<usize>,
    /// Which fragment (export) of the trace brings the span.
    fragment: usize,
}

fn span_spec() -> impl Strategy<Value = SpanSpec> {
    (
        0..SERVICES.len() + 1,
        0..NAMES.len(),
        0..7i32,
        0..3i32,
        0..50u64,
        0..DURATIONS_MS.len() + 1,
        proptest::option::of(0..8usize),
        0..3usize,
    )
        .prop_map(
            |(service, name, kind, status, start_ms, dur, parent, fragment)| SpanSpec {
                service,
                name,
                kind,
                status,
                start_ms,
                dur,
                parent,
                fragment,
            },
        )
}

#[derive(Debug, Clone)]
struct StoreSpec {
    traces: Vec<Vec<SpanSpec>>,
    max_traces: usize,
    /// In spans' worth of bytes (about 1 KB each); 0: no byte bound.
    max_kb: usize,
    /// Resend the first fragment of every trace (an exporter retry).
    retry: bool,
}

fn store_spec() -> impl Strategy<Value = StoreSpec> {
    (
        proptest::collection::vec(proptest::collection::vec(span_spec(), 1..8), 1..40),
        3..60usize,
        prop_oneof![Just(0usize), 20..120usize],
        any::<bool>(),
    )
        .prop_map(|(traces, max_traces, max_kb, retry)| StoreSpec {
            traces,
            max_traces,
            max_kb,
            retry,
        })
}

fn kv(k: &str, v: Av) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn resource(service: usize) -> Arc<ResourceInfo> {
    let value = match SERVICES.get(service) {
        Some(s) => Av::StringValue((*s).into()),
        // A service.name that is not a string: an array holding one.
        None => Av::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(Av::StringValue("payment".into())),
            }],
        }),
    };
    Arc::new(ResourceInfo::new(
        Resource {
            attributes: vec![kv("service.name", value)],
            ..Default::default()
        },
        String::new(),
    ))
}

/// The fragments of the spec's traces, in the order they are inserted:
/// every trace's first fragment in trace order, then the later ones.
fn fragments(spec: &StoreSpec) -> Vec<Vec<(TraceId, TraceData)>> {
    let scope = Arc::new(ScopeInfo {
        scope: Default::default(),
        schema_url: String::new(),
        shared: false,
    });
    let mut rounds: Vec<Vec<(TraceId, TraceData)>> = (0..4).map(|_| Vec::new()).collect();
    for (t, spans) in spec.traces.iter().enumerate() {
        let mut id = [0u8; 16];
        id[15] = t as u8 + 1;
        // Two traces share a start now and then: ties order by id.
        let base = 1_000_000_000_000 + (t as u64 / 2) * 10_000_000;
        let span_id = |s: usize| vec![t as u8 + 1, s as u8 + 1, 0, 0, 0, 0, 0, 1];
        let mut by_fragment: Vec<TraceData> = (0..3).map(|_| TraceData::new()).collect();
        for (s, sp) in spans.iter().enumerate() {
            let start = base + sp.start_ms * 1_000_000;
            let dur = match DURATIONS_MS.get(sp.dur) {
                Some(ms) => ms * 1_000_000,
                None => 140_000_001,
            };
            let span = Span {
                trace_id: id.to_vec(),
                span_id: span_id(s),
                parent_span_id: sp
                    .parent
                    .filter(|p| *p < s)
                    .map(span_id)
                    .unwrap_or_default(),
                name: NAMES[sp.name].into(),
                kind: sp.kind,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes: vec![kv("n", Av::IntValue(s as i64))],
                status: (sp.status > 0).then(|| Status {
                    code: sp.status,
                    message: String::new(),
                }),
                ..Default::default()
            };
            by_fragment[sp.fragment].push(&resource(sp.service), &scope, span);
        }
        let mut first = true;
        for (round, data) in by_fragment.into_iter().enumerate() {
            if data.span_count == 0 {
                continue;
            }
            if first && spec.retry {
                let mut again = TraceData::new();
                for g in &data.groups {
                    for s in &g.scopes {
                        for span in &s.spans {
                            again.push(&g.resource, &s.scope, span.to_proto());
                        }
                    }
                }
                rounds[3].push((id, again));
            }
            first = false;
            rounds[round].push((id, data));
        }
    }
    rounds
}

/// The queries: every search query of the conformance table, then
/// generated ones of its shapes.
fn queries() -> Vec<String> {
    let table: serde_yaml::Value = serde_yaml::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/search.yaml"
    )))
    .expect("the conformance table is YAML");
    let mut out: Vec<String> = table["cases"]
        .as_sequence()
        .expect("cases")
        .iter()
        .filter_map(|c| c["q"].as_str().map(str::to_owned))
        .collect();
    let atoms = [
        "status = error",
        "status = ok",
        "status = unset",
        "kind = server",
        "kind = client",
        "span:kind = internal",
        "name = \"processPayment\"",
        "name = \"POST /payments\"",
        "resource.service.name = \"payment\"",
        "resource.service.name = \"\"",
        "resource.service.name = \"gateway\"",
        "duration > 140ms",
        "duration >= 140ms",
        "duration < 5ms",
        "duration <= 1ms",
        "duration = 0",
        "1ms < duration",
        "duration > 140000000",
        "duration > 139.5ms",
        "span.n = 1",
    ];
    let ops = [
        "&&", "||", ">", "<", ">>", "<<", "~", "!>", "!<", "!>>", "!<<", "!~", "&>", "&<", "&>>",
        "&<<", "&~",
    ];
    for (i, a) in atoms.iter().enumerate() {
        let b = atoms[(i * 7 + 3) % atoms.len()];
        let c = atoms[(i * 5 + 1) % atoms.len()];
        out.push(format!("{{ {a} }}"));
        out.push(format!("{{ {a} && {b} }}"));
        out.push(format!("{{ {a} || {b} }}"));
        out.push(format!("{{ {a} }} | count() > 1"));
        out.push(format!("({{ {a} }} | count()) > 1 && {{ {b} }}"));
        out.push(format!("{{ {a} }} | {{ {b} }}"));
        out.push(format!("{{ {a} && ({b} || {c}) }}"));
        out.push(format!("{{ {a} }} {} {{ {b} }}", ops[i % ops.len()]));
        out.push(format!(
            "{{ {a} }} {} {{ {b} }} {} {{ {c} }}",
            ops[(i + 5) % ops.len()],
            ops[(i + 11) % ops.len()]
        ));
    }
    for op in ops {
        out.push(format!("{{ status = error }} {op} {{ kind = server }}"));
    }
    out
}

/// The search as it was before the indexes: every trace matched, sorted.
fn full_scan(inner: &StoreInner, req: &SearchRequest) -> serde_json::Value {
    let mut hits: Vec<(u64, &TraceId)> = inner
        .traces
        .iter()
        .filter(|(id, t)| req.matches(id, &t.data))
        .map(|(id, t)| (t.data.start_ns, id))
        .collect();
    hits.sort_unstable_by(|a, b| b.cmp(a));
    let results: Vec<_> = hits
        .iter()
        .take(req.limit)
        .filter_map(|(_, id)| req.eval(id, &inner.traces[*id].data))
        .collect();
    serde_json::to_value(results).expect("serialises")
}

fn indexed(inner: &StoreInner, req: &SearchRequest) -> serde_json::Value {
    let results: Vec<_> = inner
        .newest_first(&req.need())
        .filter(|(id, data)| req.matches(id, data))
        .take(req.limit)
        .filter_map(|(id, data)| req.eval(id, data))
        .collect();
    serde_json::to_value(results).expect("serialises")
}

fn check(spec: StoreSpec, queries: &[String]) -> Result<(), TestCaseError> {
    let store = Store::new(Bounds {
        max_traces: spec.max_traces,
        max_spans: 10_000,
        max_bytes: if spec.max_kb == 0 {
            usize::MAX
        } else {
            spec.max_kb * 1024
        },
    });
    for round in fragments(&spec) {
        store.insert(round);
    }
    let inner = store.read();
    prop_assert!(
        inner.index_matches_a_rebuild(),
        "index differs from a rebuild"
    );
    for q in queries {
        for limit in ["1000", "3"] {
            let params = SearchParams {
                q: Some(q.clone()),
                limit: Some(limit.into()),
                ..Default::default()
            };
            let Ok(req) = SearchRequest::from_params(&params) else {
                continue;
            };
            let want = full_scan(&inner, &req);
            let got = indexed(&inner, &req);
            prop_assert_eq!(got, want, "query {} limit {}", q, limit);
        }
        // The same spans through the metrics path.
        let metrics = MetricsParams {
            q: Some(format!(
                "{q} | count_over_time() by (resource.service.name, name)"
            )),
            start: Some("999".into()),
            end: Some("1001".into()),
            step: Some("1s".into()),
            ..Default::default()
        };
        let Ok(req) = MetricsRequest::from_params(&metrics, false, 2_000_000_000_000) else {
            continue;
        };
        let all = crate::metrics::evaluate(&req, inner.newest_first(&Need::All));
        let narrowed = crate::metrics::evaluate(&req, inner.newest_first(&req.need()));
        prop_assert_eq!(
            narrowed.range_json(&req)["series"].clone(),
            all.range_json(&req)["series"].clone(),
            "metrics query {}",
            q
        );
    }
    // `{ }` is counted without evaluating each span; `{ true && true }` is
    // evaluated: the same series either way.
    let series = |q: &str| {
        let params = MetricsParams {
            q: Some(q.into()),
            start: Some("999".into()),
            end: Some("1001".into()),
            step: Some("1s".into()),
            ..Default::default()
        };
        let req = MetricsRequest::from_params(&params, false, 2_000_000_000_000).expect("valid");
        crate::metrics::evaluate(&req, inner.newest_first(&req.need())).range_json(&req)["series"]
            .clone()
    };
    for by in ["by (resource.service.name)", "by (name)", ""] {
        prop_assert_eq!(
            series(&format!("{{ }} | rate() {by}")),
            series(&format!("{{ true && true }} | rate() {by}")),
            "{}",
            by
        );
    }
    Ok(())
}

#[test]
fn indexed_answers_equal_a_full_scan() {
    let queries = queries();
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&store_spec(), |spec| check(spec, &queries))
        .unwrap();
}
