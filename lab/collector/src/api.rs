//! The Tempo-compatible query API (`/api/traces/{id}`, `/api/search`, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::{MetricsParams, MetricsRequest};
use crate::model::{any_value_to_string, parse_trace_id, status_code};
use crate::otlp_json::TempoBatches;
use crate::pipeline::Pipeline;
use crate::search::{SearchParams, SearchRequest, no_control_chars};
use crate::traceql::QueryError;

/// Upper bound on tag names / values returned, so a high-cardinality
/// attribute (a lesson in itself) cannot produce a huge response.
const MAX_TAG_RESULTS: usize = 1000;

/// The intrinsics Tempo 3.0 lists for `scope=intrinsic` (its
/// `GetVirtualIntrinsicValues`), in its order: the unscoped names, then the
/// scoped spellings.
const INTRINSICS: [&str; 25] = [
    "duration",
    "name",
    "status",
    "statusMessage",
    "kind",
    "rootServiceName",
    "rootName",
    "traceDuration",
    "event:name",
    "event:timeSinceStart",
    "link:spanID",
    "link:traceID",
    "instrumentation:name",
    "instrumentation:version",
    "trace:id",
    "span:id",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "span:duration",
    "span:name",
    "span:kind",
    "trace:rootName",
    "trace:rootService",
    "trace:duration",
];

/// Attribute scopes of the tag endpoints, in the order Tempo lists them.
const SCOPES: [&str; 5] = ["resource", "span", "event", "link", "instrumentation"];

pub(crate) fn router(pipeline: Arc<Pipeline>) -> Router {
    Router::new()
        .route("/ready", get(|| async { "ready" }))
        .route("/api/echo", get(|| async { "echo" }))
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .route("/api/search", get(search))
        .route("/api/metrics/query_range", get(metrics_range))
        .route("/api/metrics/query", get(metrics_instant))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .route("/api/search/tag/{tag}/values", get(tag_values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tag_values_v2))
        .route("/api/tracelab/stats", get(stats))
        .fallback(|| async {
            api_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint".into(),
            )
        })
        .with_state(pipeline)
}

/// The JSON error shape used by every tracelab HTTP API.
fn api_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn json_body(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Looks a trace up and renders it; an unknown id is a 404, or, when
/// `missing` is given, whatever it renders (Tempo's v2 endpoint answers 200
/// with an empty trace).
fn lookup(
    pipeline: &Pipeline,
    id: &str,
    render: impl FnOnce(&crate::model::TraceId, &crate::model::TraceData) -> Response,
    missing: Option<Box<dyn FnOnce() -> Response>>,
) -> Response {
    let Some(trace_id) = parse_trace_id(id) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_trace_id",
            format!("invalid trace id {id:?}: expected up to 32 hex digits"),
        );
    };
    let store = pipeline.store.read();
    match (store.traces.get(&trace_id), missing) {
        (Some(t), _) => render(&trace_id, &t.data),
        (None, Some(missing)) => missing(),
        (None, None) => api_error(
            StatusCode::NOT_FOUND,
            "trace_not_found",
            format!("trace {} not found", hex::encode(trace_id)),
        ),
    }
}

/// Tempo's `TraceByIDResponse` (v2): field 1 is the trace.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
}

/// Grafana asks for protobuf (`Accept: application/protobuf`) on trace by id.
fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/protobuf") || a.contains("application/x-protobuf"))
}

fn protobuf_body(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], bytes).into_response()
}

async fn trace_v1(
    State(p): State<Arc<Pipeline>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let wants_proto = wants_protobuf(&headers);
    lookup(
        &p,
        &id,
        |id, data| {
            if wants_proto {
                // Tempo's `Trace` message has the same wire shape as TracesData
                // (field 1: repeated ResourceSpans).
                protobuf_body(
                    TracesData {
                        resource_spans: data.to_resource_spans(id),
                    }
                    .encode_to_vec(),
                )
            } else {
                json_body(json!({ "batches": TempoBatches(id, data) }).to_string())
            }
        },
        None,
    )
}

async fn trace_v2(
    State(p): State<Arc<Pipeline>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let wants_proto = wants_protobuf(&headers);
    lookup(
        &p,
        &id,
        |id, data| {
            if wants_proto {
                let trace = TracesData {
                    resource_spans: data.to_resource_spans(id),
                };
                protobuf_body(TraceByIdResponse { trace: Some(trace) }.encode_to_vec())
            } else {
                json_body(
                    json!({ "trace": { "resourceSpans": TempoBatches(id, data) } }).to_string(),
                )
            }
        },
        Some(Box::new(move || {
            if wants_proto {
                protobuf_body(
                    TraceByIdResponse {
                        trace: Some(TracesData::default()),
                    }
                    .encode_to_vec(),
                )
            } else {
                json_body(json!({ "trace": {} }).to_string())
            }
        })),
    )
}

async fn search(
    State(p): State<Arc<Pipeline>>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Response {
    // A query string that is not UTF-8 or not form-encoded gets the same
    // JSON error shape as every other bad parameter.
    let params = match params {
        Ok(Query(params)) => params,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
    };
    let req = match SearchRequest::from_params(&params) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_query", e.0),
    };
    let store = p.store.read();
    // The indexes hand out the candidates most recent first (the order of
    // Tempo's results): match until `limit` traces do, then build results
    // for those only.
    let mut inspected = 0usize;
    let hits: Vec<_> = store
        .newest_first(&req.need())
        .inspect(|_| inspected += 1)
        .filter(|(id, data)| req.matches(id, data))
        .take(req.limit)
        .collect();
    let results: Vec<_> = hits
        .into_iter()
        .filter_map(|(id, data)| req.eval(id, data))
        .collect();
    drop(store);
    json_body(
        json!({
            "traces": results,
            "metrics": { "inspectedTraces": inspected, "completedJobs": 1, "totalJobs": 1 },
        })
        .to_string(),
    )
}

async fn metrics_range(
    State(p): State<Arc<Pipeline>>,
    params: Result<Query<MetricsParams>, QueryRejection>,
) -> Response {
    metrics(&p, params, false)
}

async fn metrics_instant(
    State(p): State<Arc<Pipeline>>,
    params: Result<Query<MetricsParams>, QueryRejection>,
) -> Response {
    metrics(&p, params, true)
}

fn metrics(
    p: &Pipeline,
    params: Result<Query<MetricsParams>, QueryRejection>,
    instant: bool,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
    };
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let req = match MetricsRequest::from_params(&params, instant, now_ns) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_query", e.0),
    };
    let store = p.store.read();
    let answer = crate::metrics::evaluate(&req, store.newest_first(&req.need()));
    drop(store);
    let body = if instant {
        answer.instant_json()
    } else {
        answer.range_json(&req)
    };
    json_body(body.to_string())
}

#[derive(Deserialize)]
struct TagParams {
    /// `resource`, `span`, `event`, `link`, `instrumentation`, `intrinsic`
    /// or `none` (every scope).
    scope: Option<String>,
}

/// Scans the store for attribute keys, per scope (in [`SCOPES`] order).
fn tag_names(p: &Pipeline) -> [BTreeSet<String>; 5] {
    let mut out: [BTreeSet<String>; 5] = Default::default();
    let mut add = |scope: usize, key: &str| {
        let set = &mut out[scope];
        if set.len() < MAX_TAG_RESULTS && !set.contains(key) {
            set.insert(key.to_owned());
        }
    };
    let store = p.store.read();
    for t in store.traces.values() {
        for g in &t.data.groups {
            for kv in &g.resource.resource.attributes {
                add(0, &kv.key);
            }
            for s in &g.scopes {
                for kv in &s.scope.scope.attributes {
                    add(4, &kv.key);
                }
                for span in &s.spans {
                    for (key, _) in span.attrs() {
                        add(1, key);
                    }
                    for e in span.events() {
                        for kv in &e.attributes {
                            add(2, &kv.key);
                        }
                    }
                    for l in span.links() {
                        for kv in &l.attributes {
                            add(3, &kv.key);
                        }
                    }
                }
            }
        }
    }
    out
}

fn bad_scope(want: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "bad_scope",
        format!(
            "unsupported scope {want:?}: use resource, span, event, link, instrumentation, \
             intrinsic or none"
        ),
    )
}

async fn tags_v1(State(p): State<Arc<Pipeline>>, Query(q): Query<TagParams>) -> Response {
    let want = q.scope.as_deref().unwrap_or("");
    // As in Tempo, v1 lists intrinsics only when asked for them.
    if want == "intrinsic" {
        return json_body(json!({ "tagNames": INTRINSICS }).to_string());
    }
    let names = tag_names(&p);
    let all: BTreeSet<String> = match SCOPES.iter().position(|s| *s == want) {
        Some(i) => names[i].clone(),
        None if matches!(want, "" | "none") => names.into_iter().flatten().collect(),
        None => return bad_scope(want),
    };
    let all: Vec<String> = all.into_iter().take(MAX_TAG_RESULTS).collect();
    json_body(json!({ "tagNames": all }).to_string())
}

async fn tags_v2(State(p): State<Arc<Pipeline>>, Query(q): Query<TagParams>) -> Response {
    let want = q.scope.as_deref().unwrap_or("");
    let all = matches!(want, "" | "none");
    if !all && want != "intrinsic" && !SCOPES.contains(&want) {
        return bad_scope(want);
    }
    let names = tag_names(&p);
    let mut scopes = Vec::new();
    for (name, tags) in SCOPES.iter().zip(names) {
        // Unasked-for scopes with no keys are left out, as Tempo does.
        if (all && !tags.is_empty()) || *name == want {
            scopes.push(json!({"name": name, "tags": tags}));
        }
    }
    if all || want == "intrinsic" {
        scopes.push(json!({"name": "intrinsic", "tags": INTRINSICS}));
    }
    json_body(json!({ "scopes": scopes }).to_string())
}

/// Which values a tag-values request collects.
enum TagSource {
    Name,
    Status,
    Kind,
    RootService,
    RootName,
    EventName,
    InstrumentationName,
    InstrumentationVersion,
    Span(String),
    Resource(String),
    Event(String),
    Link(String),
    Instrumentation(String),
    Either(String),
}

/// Collects distinct values with their Tempo type names.
fn tag_values(p: &Pipeline, source: &TagSource) -> BTreeMap<String, &'static str> {
    let mut out: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut add = |v: String, ty: &'static str| {
        if out.len() < MAX_TAG_RESULTS {
            out.entry(v).or_insert(ty);
        }
    };
    let typed = |v: &opentelemetry_proto::tonic::common::v1::AnyValue| -> (String, &'static str) {
        let ty = match v.value {
            Some(Av::IntValue(_)) => "int",
            Some(Av::DoubleValue(_)) => "float",
            Some(Av::BoolValue(_)) => "bool",
            _ => "string",
        };
        (any_value_to_string(v), ty)
    };
    let typed_span = |v: crate::span::ValueRef<'_>| -> (String, &'static str) {
        use crate::span::ValueRef;
        match v {
            ValueRef::Other(v) => typed(v),
            ValueRef::Int(_) => (v.to_text(), "int"),
            ValueRef::Double(_) => (v.to_text(), "float"),
            ValueRef::Bool(_) => (v.to_text(), "bool"),
            ValueRef::Str(_) => (v.to_text(), "string"),
        }
    };
    let store = p.store.read();
    for t in store.traces.values() {
        match source {
            TagSource::RootService | TagSource::RootName => {
                if let Some((r, s)) = t.data.root() {
                    let v = if matches!(source, TagSource::RootService) {
                        &r.service
                    } else {
                        s.name()
                    };
                    add(v.to_owned(), "string");
                }
                continue;
            }
            TagSource::InstrumentationName
            | TagSource::InstrumentationVersion
            | TagSource::Instrumentation(_) => {
                for g in &t.data.groups {
                    for sc in &g.scopes {
                        let scope = &sc.scope.scope;
                        match source {
                            TagSource::InstrumentationName => add(scope.name.clone(), "string"),
                            TagSource::InstrumentationVersion => {
                                add(scope.version.clone(), "string")
                            }
                            TagSource::Instrumentation(k) => {
                                if let Some(v) = crate::model::find_attr(&scope.attributes, k) {
                                    let (v, ty) = typed(v);
                                    add(v, ty);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        for (r, s) in t.data.spans() {
            match source {
                TagSource::Name => add(s.name().to_owned(), "string"),
                TagSource::Status => {
                    let w = match status_code(s) {
                        opentelemetry_proto::tonic::trace::v1::status::StatusCode::Unset => "unset",
                        opentelemetry_proto::tonic::trace::v1::status::StatusCode::Ok => "ok",
                        opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error => "error",
                    };
                    add(w.into(), "keyword");
                }
                TagSource::Kind => {
                    let k = opentelemetry_proto::tonic::trace::v1::span::SpanKind::try_from(s.kind)
                        .unwrap_or_default()
                        .as_str_name()
                        .trim_start_matches("SPAN_KIND_")
                        .to_ascii_lowercase();
                    add(k, "keyword");
                }
                TagSource::Span(k) | TagSource::Either(k) => {
                    if let Some(v) = s.attr(k) {
                        let (v, ty) = typed_span(v);
                        add(v, ty);
                    }
                    if let TagSource::Either(k) = source
                        && let Some(v) = crate::model::find_attr(&r.resource.attributes, k)
                    {
                        let (v, ty) = typed(v);
                        add(v, ty);
                    }
                }
                TagSource::Resource(k) => {
                    if let Some(v) = crate::model::find_attr(&r.resource.attributes, k) {
                        let (v, ty) = typed(v);
                        add(v, ty);
                    }
                }
                TagSource::EventName => {
                    for e in s.events() {
                        add(e.name.clone(), "string");
                    }
                }
                TagSource::Event(k) => {
                    for v in s
                        .events()
                        .iter()
                        .filter_map(|e| crate::model::find_attr(&e.attributes, k))
                    {
                        let (v, ty) = typed(v);
                        add(v, ty);
                    }
                }
                TagSource::Link(k) => {
                    for v in s
                        .links()
                        .iter()
                        .filter_map(|l| crate::model::find_attr(&l.attributes, k))
                    {
                        let (v, ty) = typed(v);
                        add(v, ty);
                    }
                }
                TagSource::RootService
                | TagSource::RootName
                | TagSource::InstrumentationName
                | TagSource::InstrumentationVersion
                | TagSource::Instrumentation(_) => {}
            }
        }
    }
    out
}

fn tag_source(tag: &str) -> TagSource {
    match tag {
        "name" | "span:name" => TagSource::Name,
        "status" | "span:status" => TagSource::Status,
        "kind" | "span:kind" => TagSource::Kind,
        "rootServiceName" | "trace:rootService" => TagSource::RootService,
        "rootName" | "trace:rootName" => TagSource::RootName,
        "event:name" => TagSource::EventName,
        "instrumentation:name" => TagSource::InstrumentationName,
        "instrumentation:version" => TagSource::InstrumentationVersion,
        _ => {
            if let Some(k) = tag.strip_prefix("span.") {
                TagSource::Span(k.into())
            } else if let Some(k) = tag.strip_prefix("resource.") {
                TagSource::Resource(k.into())
            } else if let Some(k) = tag.strip_prefix("event.") {
                TagSource::Event(k.into())
            } else if let Some(k) = tag.strip_prefix("link.") {
                TagSource::Link(k.into())
            } else if let Some(k) = tag.strip_prefix("instrumentation.") {
                TagSource::Instrumentation(k.into())
            } else if let Some(k) = tag.strip_prefix('.') {
                TagSource::Either(k.into())
            } else {
                TagSource::Either(tag.into())
            }
        }
    }
}

/// The tag of a tag-values request; control characters are refused as in
/// search parameters.
fn checked_tag(tag: &str) -> Result<TagSource, QueryError> {
    no_control_chars("tag", tag).map(|()| tag_source(tag))
}

async fn tag_values_v1(State(p): State<Arc<Pipeline>>, Path(tag): Path<String>) -> Response {
    let source = match checked_tag(&tag) {
        Ok(s) => s,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_tag", e.0),
    };
    let values: Vec<String> = tag_values(&p, &source).into_keys().collect();
    json_body(json!({ "tagValues": values }).to_string())
}

async fn tag_values_v2(State(p): State<Arc<Pipeline>>, Path(tag): Path<String>) -> Response {
    let source = match checked_tag(&tag) {
        Ok(s) => s,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_tag", e.0),
    };
    let values: Vec<_> = tag_values(&p, &source)
        .into_iter()
        .map(|(value, ty)| json!({"type": ty, "value": value}))
        .collect();
    json_body(json!({ "tagValues": values }).to_string())
}

async fn stats(State(p): State<Arc<Pipeline>>) -> Response {
    json_body(serde_json::to_string(&crate::stats_of(&p)).unwrap_or_else(|_| "{}".into()))
}
