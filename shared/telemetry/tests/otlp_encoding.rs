//! The OTLP bytes `tracelab_telemetry::otlp` writes, decoded with
//! `opentelemetry-proto`'s generated types: every field of every span
//! (events, links, status, attributes of every type, trace state, flags)
//! must equal what the SDK's own conversion to those types gives, and the
//! request must group the spans by scope under one resource. The bytes of
//! a span are also compared with what prost writes for that conversion:
//! the one-pass encoder must give the canonical encoding, lengths of one,
//! two and three bytes included.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, span, status};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use proptest::prelude::*;
use prost::Message;
use tracelab_telemetry::otlp::{Batch, encode_resource, rejected_spans};

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_764_000_000_000 + ms)
}

/// One attribute of every value type, arrays included, and the values a
/// proto3 encoder must not leave out inside a `oneof` (`false`, `0`, `""`).
fn every_type() -> Vec<KeyValue> {
    vec![
        KeyValue::new("s.static", "static"),
        KeyValue::new("s.owned", String::from("owned ünïcode")),
        KeyValue::new(
            "s.shared",
            Value::String(StringValue::from(std::sync::Arc::<str>::from("shared"))),
        ),
        KeyValue::new("s.empty", ""),
        KeyValue::new("b.true", true),
        KeyValue::new("b.false", false),
        KeyValue::new("i.zero", 0_i64),
        KeyValue::new("i.negative", -42_i64),
        KeyValue::new("i.big", i64::MAX),
        KeyValue::new("f.zero", 0.0_f64),
        KeyValue::new("f.pi", std::f64::consts::PI),
        KeyValue::new("a.bool", Value::Array(Array::Bool(vec![true, false]))),
        KeyValue::new("a.int", Value::Array(Array::I64(vec![0, -1, 300]))),
        KeyValue::new("a.double", Value::Array(Array::F64(vec![0.5, -2.0]))),
        KeyValue::new(
            "a.string",
            Value::Array(Array::String(vec!["x".into(), "".into()])),
        ),
        KeyValue::new("a.empty", Value::Array(Array::I64(vec![]))),
    ]
}

fn scope(name: &'static str) -> InstrumentationScope {
    InstrumentationScope::builder(name).build()
}

fn full_span() -> SpanData {
    let trace_id = TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128);
    let state =
        TraceState::from_key_value([("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")])
            .unwrap();
    let mut events = SpanEvents::default();
    events.events = vec![
        Event::new(
            "exception",
            at(5),
            vec![
                KeyValue::new("exception.type", "payment::ProcessError"),
                KeyValue::new("exception.message", "card declined"),
            ],
            3,
        ),
        Event::new("empty", at(6), vec![], 0),
    ];
    events.dropped_count = 4;
    let mut links = SpanLinks::default();
    links.links = vec![
        Link::new(
            SpanContext::new(
                TraceId::from(7_u128),
                SpanId::from(8_u64),
                TraceFlags::SAMPLED,
                true,
                TraceState::from_key_value([("vendor", "v")]).unwrap(),
            ),
            vec![
                KeyValue::new("link.kind", "retry"),
                KeyValue::new("n", 2_i64),
            ],
            1,
        ),
        Link::new(
            SpanContext::new(
                TraceId::from(9_u128),
                SpanId::from(10_u64),
                TraceFlags::default(),
                false,
                TraceState::default(),
            ),
            vec![],
            0,
        ),
    ];
    links.dropped_count = 5;
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            SpanId::from(0x00f0_67aa_0ba9_02b7_u64),
            TraceFlags::new(0x03),
            false,
            state,
        ),
        parent_span_id: SpanId::from(0x1234_u64),
        parent_span_is_remote: true,
        span_kind: SpanKind::Server,
        name: Cow::Borrowed("POST /api/checkout"),
        start_time: at(1),
        end_time: at(9),
        attributes: every_type(),
        dropped_attributes_count: 6,
        events,
        links,
        status: Status::error("payment failed: card declined"),
        instrumentation_scope: InstrumentationScope::builder("tracelab")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", 1_i64)])
            .build(),
    }
}

fn plain_span(kind: SpanKind, status: Status, scope: InstrumentationScope, n: u64) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(u128::from(n) + 1),
            SpanId::from(n + 1),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: kind,
        name: Cow::Owned(format!("span {n}")),
        start_time: at(n),
        end_time: at(n + 1),
        attributes: vec![],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope,
    }
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("payment")
        .with_attributes([
            KeyValue::new("service.version", "0.1.0"),
            KeyValue::new("service.namespace", "tracelab"),
            KeyValue::new("host.cpus", 2_i64),
        ])
        .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
        .build()
}

/// What `spans` become through our encoder, decoded.
fn ours(spans: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
    let mut batch = Batch::default();
    for span in spans {
        batch.push(span);
    }
    assert_eq!(batch.len(), spans.len());
    let bytes = batch.request(
        &encode_resource(resource),
        resource.schema_url().unwrap_or(""),
    );
    ExportTraceServiceRequest::decode(bytes.as_slice()).expect("valid OTLP protobuf")
}

/// What `spans` become through the SDK's conversion.
fn reference(spans: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans.to_vec(),
            &ResourceAttributesWithSchema::from(resource),
        ),
    }
}

#[test]
fn every_field_of_a_full_span_matches_the_sdk_conversion() {
    let spans = [full_span()];
    let resource = resource();
    let ours = ours(&spans, &resource);
    assert_eq!(ours, reference(&spans, &resource));

    // And field by field, so a difference shared with the reference (or a
    // change in it) is still caught.
    let [
        ResourceSpans {
            resource: Some(res),
            scope_spans,
            schema_url,
        },
    ] = ours.resource_spans.as_slice()
    else {
        panic!("one ResourceSpans with a resource: {ours:?}");
    };
    assert_eq!(schema_url, "https://opentelemetry.io/schemas/1.30.0");
    let keys: Vec<&str> = res.attributes.iter().map(|kv| kv.key.as_str()).collect();
    for key in [
        "service.name",
        "service.version",
        "service.namespace",
        "host.cpus",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    assert_eq!(scope_spans.len(), 1);
    let ss = &scope_spans[0];
    let scope = ss.scope.as_ref().expect("scope");
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("tracelab", "0.1.0")
    );
    assert_eq!(scope.attributes.len(), 1);
    assert_eq!(ss.schema_url, "https://opentelemetry.io/schemas/1.30.0");
    let s = &ss.spans[0];
    assert_eq!(
        s.trace_id,
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128.to_be_bytes()
    );
    assert_eq!(s.span_id, 0x00f0_67aa_0ba9_02b7_u64.to_be_bytes());
    assert_eq!(s.parent_span_id, 0x1234_u64.to_be_bytes());
    assert_eq!(s.trace_state, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert_eq!(
        s.flags,
        0x03 | 0x100 | 0x200,
        "sampled, random, remote parent"
    );
    assert_eq!(s.name, "POST /api/checkout");
    assert_eq!(s.kind, span::SpanKind::Server as i32);
    assert_eq!(
        (s.start_time_unix_nano, s.end_time_unix_nano),
        (1_764_000_000_001_000_000, 1_764_000_000_009_000_000)
    );
    assert_eq!(
        (
            s.dropped_attributes_count,
            s.dropped_events_count,
            s.dropped_links_count
        ),
        (6, 4, 5)
    );
    let attr = |key: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone())
            .unwrap_or_else(|| panic!("{key} has a value"))
    };
    use any_value::Value as V;
    assert_eq!(attr("s.static"), V::StringValue("static".into()));
    assert_eq!(attr("s.owned"), V::StringValue("owned ünïcode".into()));
    assert_eq!(attr("s.shared"), V::StringValue("shared".into()));
    assert_eq!(attr("s.empty"), V::StringValue(String::new()));
    assert_eq!(attr("b.false"), V::BoolValue(false));
    assert_eq!(attr("i.zero"), V::IntValue(0));
    assert_eq!(attr("i.negative"), V::IntValue(-42));
    assert_eq!(attr("i.big"), V::IntValue(i64::MAX));
    assert_eq!(attr("f.zero"), V::DoubleValue(0.0));
    assert_eq!(attr("f.pi"), V::DoubleValue(std::f64::consts::PI));
    let V::ArrayValue(ints) = attr("a.int") else {
        panic!("a.int is an array")
    };
    let ints: Vec<_> = ints.values.into_iter().map(|v| v.value).collect();
    assert_eq!(
        ints,
        vec![
            Some(V::IntValue(0)),
            Some(V::IntValue(-1)),
            Some(V::IntValue(300))
        ]
    );
    assert_eq!(s.attributes.len(), every_type().len());
    assert_eq!(s.events.len(), 2);
    let e = &s.events[0];
    assert_eq!(
        (
            e.name.as_str(),
            e.time_unix_nano,
            e.dropped_attributes_count
        ),
        ("exception", 1_764_000_000_005_000_000, 3)
    );
    assert_eq!(e.attributes[1].key, "exception.message");
    assert_eq!(s.links.len(), 2);
    let l = &s.links[0];
    assert_eq!(l.trace_id, 7_u128.to_be_bytes());
    assert_eq!(l.span_id, 8_u64.to_be_bytes());
    assert_eq!(l.trace_state, "vendor=v");
    assert_eq!(l.flags, 0x01 | 0x100 | 0x200);
    assert_eq!(l.dropped_attributes_count, 1);
    assert_eq!(s.links[1].flags, 0x100, "local link, not sampled");
    let st = s.status.as_ref().expect("status is always written");
    assert_eq!(st.code, status::StatusCode::Error as i32);
    assert_eq!(st.message, "payment failed: card declined");
}

#[test]
fn spans_are_grouped_by_scope_under_one_resource() {
    let a = scope("tracelab");
    let b = InstrumentationScope::builder("other")
        .with_version("2")
        .build();
    let spans = vec![
        plain_span(SpanKind::Internal, Status::Unset, a.clone(), 1),
        plain_span(SpanKind::Client, Status::Ok, b.clone(), 2),
        plain_span(SpanKind::Producer, Status::Unset, a.clone(), 3),
        plain_span(SpanKind::Consumer, Status::Ok, b, 4),
    ];
    let resource = resource();
    let ours = ours(&spans, &resource);
    assert_eq!(ours, reference(&spans, &resource));
    let scopes = &ours.resource_spans[0].scope_spans;
    assert_eq!(scopes.len(), 2);
    let names: Vec<Vec<&str>> = scopes
        .iter()
        .map(|s| s.spans.iter().map(|s| s.name.as_str()).collect())
        .collect();
    assert_eq!(
        names,
        vec![vec!["span 1", "span 3"], vec!["span 2", "span 4"]]
    );
    let root = &scopes[0].spans[0];
    assert!(root.parent_span_id.is_empty(), "a root has no parent id");
    assert_eq!(root.flags, 0x101, "sampled, local parent");
    assert_eq!(
        root.status.as_ref().map(|s| s.code),
        Some(status::StatusCode::Unset as i32),
        "an unset status is still written"
    );
}

/// `put_span`'s bytes for `span` and prost's encoding of the SDK's
/// conversion of it, as the same `ScopeSpans.spans` field.
fn span_bytes(span: &SpanData) -> (Vec<u8>, Vec<u8>) {
    let mut ours = vec![0xee]; // something before the span, left as it was
    let n = tracelab_telemetry::otlp::put_span(&mut ours, span);
    assert_eq!(n, ours.len() - 1);
    assert_eq!(ours.remove(0), 0xee);
    let request = reference(std::slice::from_ref(span), &resource());
    let converted = &request.resource_spans[0].scope_spans[0].spans[0];
    let mut theirs = Vec::new();
    prost::encoding::message::encode(2, converted, &mut theirs);
    (ours, theirs)
}

/// A span whose body is `size` bytes or a little more: one attribute
/// holding the bulk.
fn span_of_about(size: usize) -> SpanData {
    let mut span = plain_span(SpanKind::Server, Status::Ok, scope("tracelab"), 1);
    span.attributes = vec![KeyValue::new("db.query.text", "x".repeat(size))];
    span
}

#[test]
fn span_bytes_are_the_canonical_encoding() {
    for span in [
        full_span(),
        plain_span(SpanKind::Internal, Status::Unset, scope("tracelab"), 0),
        plain_span(SpanKind::Client, Status::Ok, scope("tracelab"), 1),
        // Bodies around the one-, two- and three-byte length limits, for
        // the span, its attribute and the attribute's value.
        span_of_about(40),
        span_of_about(100),
        span_of_about(127),
        span_of_about(200),
        span_of_about(16_300),
        span_of_about(20_000),
        span_of_about(3_000_000),
    ] {
        let (ours, theirs) = span_bytes(&span);
        assert!(
            ours == theirs,
            "{} bytes vs prost's {}",
            ours.len(),
            theirs.len()
        );
    }
}

#[test]
fn a_span_written_after_others_leaves_them_as_they_were() {
    let spans = [span_of_about(10), span_of_about(20_000), full_span()];
    let mut together = Vec::new();
    let mut apart = Vec::new();
    for span in &spans {
        tracelab_telemetry::otlp::put_span(&mut together, span);
        apart.extend(span_bytes(span).1);
    }
    assert!(together == apart);
}

#[test]
fn spans_encoded_beforehand_make_the_same_request() {
    let spans = [
        full_span(),
        plain_span(SpanKind::Client, Status::Ok, scope("other"), 2),
        plain_span(
            SpanKind::Internal,
            Status::Unset,
            full_span().instrumentation_scope,
            3,
        ),
    ];
    let resource = resource();
    let mut batch = Batch::default();
    let mut encoded = Vec::new();
    for span in &spans {
        encoded.clear();
        let n = tracelab_telemetry::otlp::put_span(&mut encoded, span);
        assert_eq!(n, encoded.len());
        batch.push_encoded(&span.instrumentation_scope, &encoded);
    }
    let bytes = batch.request(
        &encode_resource(&resource),
        resource.schema_url().unwrap_or(""),
    );
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded, ours(&spans, &resource));
    assert_eq!(decoded, reference(&spans, &resource));
}

#[test]
fn taking_a_batch_leaves_an_empty_one_that_keeps_encoding() {
    let mut batch = Batch::default();
    batch.push(&plain_span(
        SpanKind::Internal,
        Status::Ok,
        scope("tracelab"),
        1,
    ));
    let first = batch.take();
    assert_eq!((first.len(), batch.len()), (1, 0));
    assert!(batch.is_empty());
    batch.push(&plain_span(
        SpanKind::Server,
        Status::Ok,
        scope("tracelab"),
        2,
    ));
    let resource = resource();
    let second = ExportTraceServiceRequest::decode(
        batch.request(&encode_resource(&resource), "").as_slice(),
    )
    .unwrap();
    let spans = &second.resource_spans[0].scope_spans;
    assert_eq!(
        spans.len(),
        1,
        "no empty ScopeSpans left from the first batch"
    );
    assert_eq!(spans[0].spans.len(), 1);
    assert_eq!(spans[0].spans[0].name, "span 2");
}

/// A batch emptied with `clear` keeps its buffers and fills again into
/// the same request a new batch makes; scopes left without spans are not
/// sent; `request_into` empties the buffer it is given first.
#[test]
fn a_cleared_batch_refills_into_the_same_request() {
    let resource = resource();
    let encoded = encode_resource(&resource);
    let mut reused = Batch::default();
    reused.push(&plain_span(SpanKind::Internal, Status::Ok, scope("old"), 1));
    reused.push(&full_span());
    reused.clear();
    assert!(reused.is_empty());
    let spans = [
        plain_span(SpanKind::Server, Status::Ok, scope("tracelab"), 2),
        plain_span(SpanKind::Client, Status::Unset, scope("tracelab"), 3),
    ];
    let mut fresh = Batch::default();
    for span in &spans {
        reused.push(span);
        fresh.push(span);
    }
    let mut buf = vec![1, 2, 3];
    reused.request_into(&mut buf, &encoded, "");
    assert_eq!(buf, fresh.request(&encoded, ""));
    let decoded = ExportTraceServiceRequest::decode(buf.as_slice()).unwrap();
    let scopes: Vec<&str> = decoded.resource_spans[0]
        .scope_spans
        .iter()
        .map(|s| s.scope.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(scopes, ["tracelab"], "the emptied scopes are left out");
}

#[test]
fn rejected_spans_are_read_from_a_partial_success() {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    let answer = |rejected: i64, message: &str| {
        ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message.into(),
            }),
        }
        .encode_to_vec()
    };
    assert_eq!(
        rejected_spans(&[]),
        Some(0),
        "an empty answer: all accepted"
    );
    assert_eq!(rejected_spans(&answer(0, "")), Some(0));
    assert_eq!(rejected_spans(&answer(7, "too old")), Some(7));
    assert_eq!(rejected_spans(&[0x0a, 0x05, 0x08]), None, "truncated");
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        // Past 127 bytes a length takes two bytes.
        ".{100,300}".prop_map(Value::from),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(|v| Value::Array(Array::I64(v))),
        prop::collection::vec(".{0,8}", 0..5).prop_map(|v| {
            Value::Array(Array::String(
                v.into_iter().map(StringValue::from).collect(),
            ))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any attributes, names and ids encode to what the SDK's conversion gives.
    #[test]
    fn any_span_matches_the_sdk_conversion(
        values in prop::collection::vec(("[a-z.]{1,20}", value_strategy()), 0..12),
        name in ".{0,60}",
        ids in (1..u128::MAX, 1..u64::MAX, any::<u64>()),
        kind in 0..5_usize,
        remote in any::<bool>(),
        description in ".{0,30}",
    ) {
        let kinds = [SpanKind::Internal, SpanKind::Server, SpanKind::Client, SpanKind::Producer, SpanKind::Consumer];
        let mut span = plain_span(kinds[kind].clone(), Status::error(description), scope("tracelab"), 1);
        span.span_context = SpanContext::new(TraceId::from(ids.0), SpanId::from(ids.1), TraceFlags::SAMPLED, false, TraceState::default());
        span.parent_span_id = SpanId::from(ids.2);
        span.parent_span_is_remote = remote;
        span.name = Cow::Owned(name);
        span.attributes = values.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
        let (bytes, prost_bytes) = span_bytes(&span);
        prop_assert_eq!(bytes, prost_bytes);
        let spans = [span];
        let resource = resource();
        prop_assert_eq!(ours(&spans, &resource), reference(&spans, &resource));
    }
}
