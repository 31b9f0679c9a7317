//! The flat trace model: spans with lowercase hex ids, plain JSON attribute
//! values, and the questions tests and tools ask of a trace (`roots()`,
//! `children()`, `find()`, orphans, services), parsed from the bodies of
//! Tempo's `GET /api/traces/{id}` and `GET /api/v2/traces/{id}`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::ids::{SPAN_ID_BYTES, TRACE_ID_BYTES, decode_id};
use crate::otlp_json::{as_array, convert_attributes, parse_u64};

/// OpenTelemetry span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum SpanKind {
    /// Kind not set by the instrumentation.
    #[default]
    Unspecified,
    /// Work inside one service.
    Internal,
    /// The server side of a synchronous call.
    Server,
    /// The client side of a synchronous call.
    Client,
    /// The sending side of an asynchronous message.
    Producer,
    /// The receiving side of an asynchronous message.
    Consumer,
}

impl SpanKind {
    /// Parses `2`, `"2"`, `"SPAN_KIND_SERVER"` or `"server"`.
    pub fn from_json(v: &Value) -> SpanKind {
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse::<i64>().ok().or_else(|| {
                let name = s.trim_start_matches("SPAN_KIND_").to_ascii_lowercase();
                Some(match name.as_str() {
                    "internal" => 1,
                    "server" => 2,
                    "client" => 3,
                    "producer" => 4,
                    "consumer" => 5,
                    _ => 0,
                })
            }),
            _ => None,
        };
        match n.unwrap_or(0) {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// Lowercase name as TraceQL writes it (`server`, `client`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

impl fmt::Display for SpanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OpenTelemetry span status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StatusCode {
    /// No status set (the default; a server answering 4xx leaves it unset).
    #[default]
    Unset,
    /// Explicitly OK.
    Ok,
    /// The operation failed.
    Error,
}

impl StatusCode {
    /// Parses `2`, `"STATUS_CODE_ERROR"` or `"error"`.
    pub fn from_json(v: &Value) -> StatusCode {
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse::<i64>().ok().or_else(|| {
                let name = s.trim_start_matches("STATUS_CODE_").to_ascii_lowercase();
                Some(match name.as_str() {
                    "ok" => 1,
                    "error" => 2,
                    _ => 0,
                })
            }),
            _ => None,
        };
        match n.unwrap_or(0) {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    /// Lowercase name as TraceQL writes it (`unset`, `ok`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A timestamped event on a span (e.g. the `exception` event of an error).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event name, e.g. `exception`.
    pub name: String,
    /// Unix time in nanoseconds.
    pub time_ns: u64,
    /// Event attributes (`exception.message`, ...), same conversion as span attributes.
    pub attributes: BTreeMap<String, Value>,
}

/// A link from a span to a span of another (or the same) trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// Linked trace id, lowercase hex.
    pub trace_id: String,
    /// Linked span id, lowercase hex.
    pub span_id: String,
    /// Link attributes.
    pub attributes: BTreeMap<String, Value>,
}

/// One span, flattened out of OTLP's resource → scope → span nesting.
///
/// Attribute values are plain JSON: strings, numbers (OTLP `intValue` strings
/// become integers), booleans, arrays and objects (for `kvlistValue`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    /// Trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// Span id, 16 lowercase hex digits.
    pub span_id: String,
    /// Parent span id (16 lowercase hex digits), `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Span name, e.g. `POST /api/checkout`.
    pub name: String,
    /// `service.name` of the resource that emitted the span (`unknown` when absent).
    pub service: String,
    /// Span kind.
    pub kind: SpanKind,
    /// Start, unix time in nanoseconds.
    pub start_ns: u64,
    /// End, unix time in nanoseconds.
    pub end_ns: u64,
    /// Status code.
    pub status_code: StatusCode,
    /// Status message (empty when none).
    pub status_message: String,
    /// Span attributes.
    pub attributes: BTreeMap<String, Value>,
    /// Resource attributes (`service.name`, `telemetry.sdk.*`, ...).
    pub resource: BTreeMap<String, Value>,
    /// Instrumentation scope name.
    pub scope: String,
    /// Span events in the order they were sent.
    pub events: Vec<Event>,
    /// Span links.
    pub links: Vec<Link>,
}

impl Span {
    /// Duration in nanoseconds (0 when the end is before the start).
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> f64 {
        self.duration_ns() as f64 / 1e6
    }

    /// Whether the span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.status_code == StatusCode::Error
    }

    /// A span attribute.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// A string span attribute (`None` when absent or not a string).
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }

    /// An integer span attribute (`None` when absent or not an integer).
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(Value::as_i64)
    }

    /// The first event with this name.
    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.name == name)
    }
}

/// A trace: all spans with one trace id, sorted by start time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    /// Spans sorted by (start time, span id).
    pub spans: Vec<Span>,
}

impl Trace {
    /// Builds a trace from spans in any order (sorts them by start time).
    pub fn new(mut spans: Vec<Span>) -> Trace {
        spans.sort_by(|a, b| {
            a.start_ns
                .cmp(&b.start_ns)
                .then_with(|| a.span_id.cmp(&b.span_id))
        });
        Trace { spans }
    }

    /// Parses a Tempo trace body: `{"batches":[..]}` (v1),
    /// `{"trace":{"resourceSpans":[..]}}` (v2) or a bare OTLP
    /// `{"resourceSpans":[..]}` export request.
    ///
    /// # Errors
    /// When the body has none of those shapes or an id is malformed.
    pub fn from_tempo_json(body: &Value) -> anyhow::Result<Trace> {
        let resource_spans = body
            .get("batches")
            .or_else(|| body.get("trace").and_then(|t| t.get("resourceSpans")))
            .or_else(|| body.get("resourceSpans"));
        let Some(resource_spans) = resource_spans else {
            // Tempo v2 answers `{}` / `{"trace":{}}` for a trace with no spans.
            if body.get("trace").is_some() || body.as_object().is_some_and(|o| o.is_empty()) {
                return Ok(Trace::default());
            }
            bail!("not a Tempo trace body: expected \"batches\" or \"trace.resourceSpans\"");
        };
        let mut spans = Vec::new();
        for rs in as_array(resource_spans) {
            let resource = rs
                .get("resource")
                .and_then(|r| r.get("attributes"))
                .map(convert_attributes)
                .unwrap_or_default();
            let service = resource
                .get("service.name")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string();
            // `instrumentationLibrarySpans` is the pre-1.0 OTLP name, still seen in old Tempo.
            let scopes = rs
                .get("scopeSpans")
                .or_else(|| rs.get("instrumentationLibrarySpans"));
            for ss in scopes.map(as_array).unwrap_or_default() {
                let scope = ss
                    .get("scope")
                    .or_else(|| ss.get("instrumentationLibrary"))
                    .and_then(|s| s.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                for s in ss.get("spans").map(as_array).unwrap_or_default() {
                    let mut span = parse_span(s)?;
                    span.service.clone_from(&service);
                    span.resource.clone_from(&resource);
                    span.scope.clone_from(&scope);
                    spans.push(span);
                }
            }
        }
        Ok(Trace::new(spans))
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the trace has no spans.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The trace id (of the first span), `None` for an empty trace.
    pub fn trace_id(&self) -> Option<&str> {
        self.spans.first().map(|s| s.trace_id.as_str())
    }

    /// The span with this id.
    pub fn span(&self, span_id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.span_id == span_id)
    }

    /// True roots: spans without a parent, by start time.
    pub fn roots(&self) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|s| s.parent_span_id.is_none())
            .collect()
    }

    /// Orphans: spans whose parent id is set but not in this trace (the parent
    /// was not sampled, not exported yet, or propagation broke), by start time.
    pub fn orphans(&self) -> Vec<&Span> {
        let ids: HashSet<&str> = self.spans.iter().map(|s| s.span_id.as_str()).collect();
        self.spans
            .iter()
            .filter(|s| {
                s.parent_span_id
                    .as_deref()
                    .is_some_and(|p| !ids.contains(p))
            })
            .collect()
    }

    /// Direct children of a span, by start time.
    pub fn children(&self, span_id: &str) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == Some(span_id))
            .collect()
    }

    /// The parent of a span, when it is in the trace.
    pub fn parent(&self, span: &Span) -> Option<&Span> {
        span.parent_span_id.as_deref().and_then(|p| self.span(p))
    }

    /// All descendants of a span (children, grandchildren, ...), depth first.
    pub fn descendants(&self, span_id: &str) -> Vec<&Span> {
        let mut out = Vec::new();
        let mut stack: Vec<&Span> = self.children(span_id).into_iter().rev().collect();
        let mut seen = HashSet::new();
        while let Some(s) = stack.pop() {
            if !seen.insert(s.span_id.as_str()) {
                continue; // a cycle in bad data must not loop forever
            }
            out.push(s);
            stack.extend(self.children(&s.span_id).into_iter().rev());
        }
        out
    }

    /// The first span (by start time) with exactly this name.
    pub fn find(&self, name: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.name == name)
    }

    /// Every span with exactly this name, by start time.
    pub fn find_all(&self, name: &str) -> Vec<&Span> {
        self.spans.iter().filter(|s| s.name == name).collect()
    }

    /// The first span matching a predicate.
    pub fn find_by(&self, pred: impl Fn(&Span) -> bool) -> Option<&Span> {
        self.spans.iter().find(|s| pred(s))
    }

    /// The first span of `service` with this name.
    pub fn find_in(&self, service: &str, name: &str) -> Option<&Span> {
        self.spans
            .iter()
            .find(|s| s.service == service && s.name == name)
    }

    /// The service that emitted a span.
    pub fn service_of(&self, span_id: &str) -> Option<&str> {
        self.span(span_id).map(|s| s.service.as_str())
    }

    /// The services in the trace, sorted by name.
    pub fn services(&self) -> BTreeSet<&str> {
        self.spans.iter().map(|s| s.service.as_str()).collect()
    }

    /// Spans with status ERROR.
    pub fn errors(&self) -> Vec<&Span> {
        self.spans.iter().filter(|s| s.is_error()).collect()
    }

    /// Earliest start, unix ns (0 for an empty trace).
    pub fn start_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.start_ns).min().unwrap_or(0)
    }

    /// Latest end, unix ns (0 for an empty trace).
    pub fn end_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.end_ns).max().unwrap_or(0)
    }

    /// From the earliest start to the latest end, in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns().saturating_sub(self.start_ns())
    }
}
fn parse_span(s: &Value) -> anyhow::Result<Span> {
    let str_field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default();
    let trace_id = decode_id(str_field("traceId"), TRACE_ID_BYTES).context("span traceId")?;
    let span_id = decode_id(str_field("spanId"), SPAN_ID_BYTES).context("span spanId")?;
    // An absent, empty or all-zero parent id means "root".
    let parent_raw = str_field("parentSpanId");
    let parent_span_id = if parent_raw.is_empty() {
        None
    } else {
        let p = decode_id(parent_raw, SPAN_ID_BYTES).context("span parentSpanId")?;
        (!p.bytes().all(|b| b == b'0')).then_some(p)
    };
    let status = s.get("status");
    let events = s
        .get("events")
        .map(as_array)
        .unwrap_or_default()
        .into_iter()
        .map(|e| Event {
            name: e
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            time_ns: parse_u64(e.get("timeUnixNano")),
            attributes: e
                .get("attributes")
                .map(convert_attributes)
                .unwrap_or_default(),
        })
        .collect();
    let links = s
        .get("links")
        .map(as_array)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| {
            Some(Link {
                trace_id: decode_id(l.get("traceId")?.as_str()?, TRACE_ID_BYTES).ok()?,
                span_id: decode_id(l.get("spanId")?.as_str()?, SPAN_ID_BYTES).ok()?,
                attributes: l
                    .get("attributes")
                    .map(convert_attributes)
                    .unwrap_or_default(),
            })
        })
        .collect();
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        name: str_field("name").to_string(),
        service: String::new(),
        kind: s.get("kind").map(SpanKind::from_json).unwrap_or_default(),
        start_ns: parse_u64(s.get("startTimeUnixNano")),
        end_ns: parse_u64(s.get("endTimeUnixNano")),
        status_code: status
            .and_then(|st| st.get("code"))
            .map(StatusCode::from_json)
            .unwrap_or_default(),
        status_message: status
            .and_then(|st| st.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        attributes: s
            .get("attributes")
            .map(convert_attributes)
            .unwrap_or_default(),
        resource: BTreeMap::new(),
        scope: String::new(),
        events,
        links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tempo_body() -> Value {
        json!({"batches": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "payment"}}]},
            "scopeSpans": [{
                "scope": {"name": "payment"},
                "spans": [
                    {
                        "traceId": "S/kvNXezTaajzpKdDg5HNg==",
                        "spanId": "APBnqgupArc=",
                        "parentSpanId": "",
                        "name": "processPayment",
                        "kind": "SPAN_KIND_INTERNAL",
                        "startTimeUnixNano": "1000000000",
                        "endTimeUnixNano": "1250000000",
                        "attributes": [
                            {"key": "payment.amount", "value": {"intValue": "4980"}},
                            {"key": "payment.currency", "value": {"stringValue": "JPY"}},
                            {"key": "ok", "value": {"boolValue": true}},
                            {"key": "ratio", "value": {"doubleValue": 0.5}},
                            {"key": "list", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "x"}]}}}
                        ],
                        "status": {"code": "STATUS_CODE_ERROR", "message": "card declined"},
                        "events": [{"name": "exception", "timeUnixNano": "1200000000",
                                    "attributes": [{"key": "exception.message", "value": {"stringValue": "declined"}}]}]
                    },
                    {
                        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                        "spanId": "1111111111111111",
                        "parentSpanId": "00f067aa0ba902b7",
                        "name": "SELECT orders",
                        "kind": 3,
                        "startTimeUnixNano": 1010000000u64,
                        "endTimeUnixNano": 1020000000u64,
                        "status": {}
                    }
                ]
            }]
        }]})
    }

    #[test]
    fn parses_tempo_v1_body() {
        let t = Trace::from_tempo_json(&tempo_body()).unwrap();
        assert_eq!(t.len(), 2);
        let root = t.roots()[0];
        assert_eq!(root.span_id, "00f067aa0ba902b7");
        assert_eq!(root.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(root.service, "payment");
        assert_eq!(root.scope, "payment");
        assert_eq!(root.kind, SpanKind::Internal);
        assert_eq!(root.status_code, StatusCode::Error);
        assert_eq!(root.status_message, "card declined");
        assert_eq!(root.attr_i64("payment.amount"), Some(4980));
        assert_eq!(root.attr_str("payment.currency"), Some("JPY"));
        assert_eq!(root.attr("ok"), Some(&json!(true)));
        assert_eq!(root.attr("ratio"), Some(&json!(0.5)));
        assert_eq!(root.attr("list"), Some(&json!([1, "x"])));
        assert_eq!(root.duration_ms(), 250.0);
        assert_eq!(
            root.event("exception").unwrap().attributes["exception.message"],
            json!("declined")
        );
        let kids = t.children(&root.span_id);
        assert_eq!(kids.len(), 1);
        assert_eq!(kids[0].kind, SpanKind::Client);
        assert_eq!(kids[0].status_code, StatusCode::Unset);
        assert_eq!(t.find("SELECT orders").unwrap().span_id, "1111111111111111");
        assert_eq!(t.service_of("1111111111111111"), Some("payment"));
        assert_eq!(t.parent(kids[0]).unwrap().name, "processPayment");
        assert_eq!(t.errors().len(), 1);
        assert!(t.orphans().is_empty());
        assert_eq!(t.duration_ns(), 250_000_000);
        assert_eq!(t.descendants(&root.span_id).len(), 1);
    }

    #[test]
    fn parses_v2_and_bare_bodies_and_detects_orphans() {
        let body = tempo_body();
        let v2 = json!({"trace": {"resourceSpans": body["batches"].clone()}});
        let bare = json!({"resourceSpans": body["batches"].clone()});
        assert_eq!(Trace::from_tempo_json(&v2).unwrap().len(), 2);
        assert_eq!(Trace::from_tempo_json(&bare).unwrap().len(), 2);
        assert!(Trace::from_tempo_json(&json!({})).unwrap().is_empty());
        assert!(Trace::from_tempo_json(&json!({"foo": 1})).is_err());

        let mut orphan = body.clone();
        orphan["batches"][0]["scopeSpans"][0]["spans"][0]["parentSpanId"] =
            json!("2222222222222222");
        let t = Trace::from_tempo_json(&orphan).unwrap();
        assert!(t.roots().is_empty());
        assert_eq!(t.orphans().len(), 1);
    }
}
