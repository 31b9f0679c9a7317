//! A small client for the subset of Grafana Tempo's HTTP API that tracelab
//! uses, and a flat trace model that tests and tools can query.
//!
//! The same client works against the embedded collector (`tracelab up`) and a
//! real Tempo (`docker compose up`), because both serve the same shapes:
//!
//! - `GET /api/traces/{id}` → `{"batches":[ResourceSpans]}` (OTLP/JSON, ids in
//!   base64 as Tempo serves them, integer attributes as strings);
//! - `GET /api/v2/traces/{id}` → `{"trace":{"resourceSpans":[..]}}`;
//! - `GET /api/search` → `{"traces":[{traceID, rootServiceName, ..}]}` (ids in hex).
//!
//! Parsing is deliberately lenient about the encodings OTLP/JSON allows (ids in
//! hex or base64, enums as numbers or names, 64-bit integers as strings or
//! numbers) and strict about what a test relies on: every id in the model is
//! lowercase hex of the right length, every integer attribute is a JSON number.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use tracelab::tempo::{SpanKind, TempoClient};
//!
//! let tempo = TempoClient::new("http://127.0.0.1:3200")?;
//! let trace = tempo
//!     .wait_for_trace("4bf92f3577b34da6a3ce929d0e0e4736", |t| t.len() >= 5, Duration::from_secs(5))
//!     .await?;
//! let root = trace.roots()[0];
//! assert_eq!(root.kind, SpanKind::Server);
//! for child in trace.children(&root.span_id) {
//!     println!("{} {}", child.service, child.name);
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------

/// Length in bytes of a trace id.
pub const TRACE_ID_BYTES: usize = 16;
/// Length in bytes of a span id.
pub const SPAN_ID_BYTES: usize = 8;

/// An id that is neither `2 * bytes` hex digits nor base64 of `bytes` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    /// The text that failed to decode.
    pub input: String,
    /// The expected length in bytes (16 for a trace id, 8 for a span id).
    pub bytes: usize,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.bytes == TRACE_ID_BYTES {
            "trace id"
        } else if self.bytes == SPAN_ID_BYTES {
            "span id"
        } else {
            "id"
        };
        write!(
            f,
            "malformed {what} {:?}: expected {} hex digits (or base64 of {} bytes)",
            self.input,
            self.bytes * 2,
            self.bytes
        )
    }
}

impl std::error::Error for IdError {}

/// Decodes an id found in an OTLP/JSON body into lowercase hex.
///
/// OTLP/JSON says ids are hex; Tempo serves them base64 (protobuf `bytes` in
/// proto3 JSON). The two are told apart by length and charset: exactly
/// `2 * bytes` hex digits is hex, anything else must be base64 (standard or
/// URL-safe, padded or not) that decodes to exactly `bytes` bytes. The two
/// cannot collide: base64 of 16 bytes is 22-24 characters, hex is 32.
///
/// # Errors
/// When the text is neither.
pub fn decode_id(input: &str, bytes: usize) -> Result<String, IdError> {
    let s = input.trim();
    if s.len() == bytes * 2 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(s.to_ascii_lowercase());
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for engine in engines {
        if let Ok(raw) = engine.decode(s)
            && raw.len() == bytes
        {
            return Ok(hex::encode(raw));
        }
    }
    Err(IdError {
        input: input.to_string(),
        bytes,
    })
}

/// Parses a trace id typed by a person (CLI argument, log line, header).
///
/// Accepts 1 to 32 hex digits (Tempo drops leading zeros, so shorter ids are
/// left-padded), an optional `0x` prefix, a whole W3C `traceparent` /
/// `traceresponse` value (`00-<trace id>-<span id>-<flags>`), and base64 of
/// 16 bytes. Returns 32 lowercase hex digits.
///
/// # Errors
/// When the input is none of those, or is the all-zero (invalid) trace id.
pub fn parse_trace_id(input: &str) -> Result<String, IdError> {
    let err = || IdError {
        input: input.to_string(),
        bytes: TRACE_ID_BYTES,
    };
    let mut s = input.trim();
    // A traceparent/traceresponse pasted whole.
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() == 4 && parts[0].len() == 2 && parts[1].len() == 32 {
        s = parts[1];
    }
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let id = if !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("{:0>32}", s.to_ascii_lowercase())
    } else {
        decode_id(s, TRACE_ID_BYTES).map_err(|_| err())?
    };
    if id.bytes().all(|b| b == b'0') {
        return Err(err());
    }
    Ok(id)
}

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

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

fn as_array(v: &Value) -> Vec<&Value> {
    v.as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

fn parse_u64(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f as u64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
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

/// Converts an OTLP/JSON `[{key, value: AnyValue}]` list into a map.
pub fn convert_attributes(list: &Value) -> BTreeMap<String, Value> {
    as_array(list)
        .into_iter()
        .filter_map(|kv| {
            let key = kv.get("key")?.as_str()?.to_string();
            let value = kv
                .get("value")
                .map(convert_any_value)
                .unwrap_or(Value::Null);
            Some((key, value))
        })
        .collect()
}

/// Converts one OTLP/JSON `AnyValue` (`{"stringValue":..}`, `{"intValue":"42"}`, ...)
/// into plain JSON. Integers sent as strings become numbers; bytes stay base64 text.
pub fn convert_any_value(v: &Value) -> Value {
    let Some(obj) = v.as_object() else {
        return v.clone(); // already plain
    };
    if let Some(s) = obj.get("stringValue") {
        return s.clone();
    }
    if let Some(b) = obj.get("boolValue") {
        return b.clone();
    }
    if let Some(i) = obj.get("intValue") {
        return match i {
            Value::String(s) => s
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| i.clone()),
            other => other.clone(),
        };
    }
    if let Some(d) = obj.get("doubleValue") {
        return match d {
            Value::String(s) => s
                .parse::<f64>()
                .ok()
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                .unwrap_or_else(|| d.clone()),
            other => other.clone(),
        };
    }
    if let Some(a) = obj.get("arrayValue") {
        let values = a.get("values").map(as_array).unwrap_or_default();
        return Value::Array(values.into_iter().map(convert_any_value).collect());
    }
    if let Some(kv) = obj.get("kvlistValue") {
        let map = kv.get("values").map(convert_attributes).unwrap_or_default();
        return Value::Object(map.into_iter().collect());
    }
    if let Some(b) = obj.get("bytesValue") {
        return b.clone();
    }
    Value::Null
}

// ---------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------

/// Parameters of `GET /api/search`. Unset fields are not sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchQuery {
    /// Tag filters, sent as logfmt (`service.name=gateway http.route="/api/x"`).
    pub tags: Vec<(String, String)>,
    /// A TraceQL query, e.g. `{ status = error }`.
    pub q: Option<String>,
    /// Maximum number of traces.
    pub limit: Option<u32>,
    /// Window start, unix seconds.
    pub start: Option<i64>,
    /// Window end, unix seconds.
    pub end: Option<i64>,
    /// Minimum trace duration, e.g. `100ms`.
    pub min_duration: Option<String>,
    /// Maximum trace duration, e.g. `2s`.
    pub max_duration: Option<String>,
}

impl SearchQuery {
    /// The query-string pairs for this search.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if !self.tags.is_empty() {
            p.push(("tags", logfmt(&self.tags)));
        }
        if let Some(q) = &self.q {
            p.push(("q", q.clone()));
        }
        if let Some(v) = self.limit {
            p.push(("limit", v.to_string()));
        }
        if let Some(v) = self.start {
            p.push(("start", v.to_string()));
        }
        if let Some(v) = self.end {
            p.push(("end", v.to_string()));
        }
        if let Some(v) = &self.min_duration {
            p.push(("minDuration", v.clone()));
        }
        if let Some(v) = &self.max_duration {
            p.push(("maxDuration", v.clone()));
        }
        p
    }
}

/// Encodes tags as logfmt, quoting values that need it.
pub fn logfmt(tags: &[(String, String)]) -> String {
    tags.iter()
        .map(|(k, v)| {
            if v.is_empty() || v.contains([' ', '"', '=', '\\']) {
                let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
                format!("{k}=\"{escaped}\"")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Span and error counts of one service in a search result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceStats {
    /// Spans of this service in the trace.
    pub span_count: u64,
    /// Of which with status ERROR.
    pub error_count: u64,
}

/// A span as listed in a search result's span set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchSpan {
    /// Span id, lowercase hex.
    pub span_id: String,
    /// Span name.
    pub name: String,
    /// Start, unix ns.
    pub start_ns: u64,
    /// Duration in ns.
    pub duration_ns: u64,
    /// Attributes that matched or were selected.
    pub attributes: BTreeMap<String, Value>,
}

/// One trace in a search result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceSummary {
    /// Trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// Service of the root span (empty while the root has not arrived).
    pub root_service_name: String,
    /// Name of the root span.
    pub root_trace_name: String,
    /// Start, unix ns.
    pub start_ns: u64,
    /// Duration in ms (`None` when the server left it out, as Tempo does for <1 ms).
    pub duration_ms: Option<f64>,
    /// Matching spans, per span set.
    pub span_sets: Vec<Vec<SearchSpan>>,
    /// Per-service counts.
    pub service_stats: BTreeMap<String, ServiceStats>,
}

impl TraceSummary {
    /// Total spans over all services.
    pub fn span_count(&self) -> u64 {
        self.service_stats.values().map(|s| s.span_count).sum()
    }

    /// Total error spans over all services.
    pub fn error_count(&self) -> u64 {
        self.service_stats.values().map(|s| s.error_count).sum()
    }
}

/// Parses a `/api/search` body.
///
/// # Errors
/// When `traces` is missing or a trace id is malformed.
pub fn parse_search(body: &Value) -> anyhow::Result<Vec<TraceSummary>> {
    let traces = body
        .get("traces")
        .context("not a Tempo search body: no \"traces\"")?;
    let mut out = Vec::new();
    for t in as_array(traces) {
        let s = |k: &str| {
            t.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let trace_id = parse_trace_id(&s("traceID")).context("search result traceID")?;
        let duration_ms = t.get("durationMs").and_then(|d| match d {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        let mut span_sets = Vec::new();
        let sets = t
            .get("spanSets")
            .map(as_array)
            .or_else(|| t.get("spanSet").map(|s| vec![s]))
            .unwrap_or_default();
        for set in sets {
            let spans = set
                .get("spans")
                .map(as_array)
                .unwrap_or_default()
                .into_iter()
                .map(|sp| SearchSpan {
                    span_id: sp
                        .get("spanID")
                        .and_then(Value::as_str)
                        .and_then(|id| decode_id(id, SPAN_ID_BYTES).ok())
                        .unwrap_or_default(),
                    name: sp
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    start_ns: parse_u64(sp.get("startTimeUnixNano")),
                    duration_ns: parse_u64(sp.get("durationNanos")),
                    attributes: sp
                        .get("attributes")
                        .map(convert_attributes)
                        .unwrap_or_default(),
                })
                .collect();
            span_sets.push(spans);
        }
        let service_stats = t
            .get("serviceStats")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(svc, st)| {
                        (
                            svc.clone(),
                            ServiceStats {
                                span_count: parse_u64(st.get("spanCount")),
                                error_count: parse_u64(st.get("errorCount")),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(TraceSummary {
            trace_id,
            root_service_name: s("rootServiceName"),
            root_trace_name: s("rootTraceName"),
            start_ns: parse_u64(t.get("startTimeUnixNano")),
            duration_ms,
            span_sets,
            service_stats,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// Returned (inside `anyhow::Error`) by [`TempoClient::wait_for_trace`] when the
/// predicate did not hold in time; carries the last version seen so a caller
/// can still show it (`err.downcast_ref::<TraceWaitTimeout>()`).
#[derive(Debug, Clone)]
pub struct TraceWaitTimeout {
    /// The trace id waited for.
    pub trace_id: String,
    /// How long we waited.
    pub waited: Duration,
    /// The last trace fetched, `None` if the trace was never found.
    pub last: Option<Trace>,
}

impl fmt::Display for TraceWaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.last {
            None => write!(
                f,
                "trace {} not found after {:.1}s",
                self.trace_id,
                self.waited.as_secs_f64()
            ),
            Some(t) => write!(
                f,
                "trace {} incomplete after {:.1}s: {} spans from {}",
                self.trace_id,
                self.waited.as_secs_f64(),
                t.len(),
                t.services().into_iter().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

impl std::error::Error for TraceWaitTimeout {}

/// Client for a Tempo-compatible HTTP API (real Tempo or the embedded collector).
#[derive(Debug, Clone)]
pub struct TempoClient {
    base: String,
    http: reqwest::Client,
}

impl TempoClient {
    /// A client for the API at `base_url` (e.g. `http://127.0.0.1:3200`).
    ///
    /// # Errors
    /// When the URL is not an absolute http(s) URL.
    pub fn new(base_url: &str) -> anyhow::Result<TempoClient> {
        let url = reqwest::Url::parse(base_url)
            .with_context(|| format!("invalid Tempo URL {base_url:?}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            bail!("invalid Tempo URL {base_url:?}: expected http://host:port");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building HTTP client")?;
        Ok(TempoClient {
            base: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Whether `GET /ready` answers 200.
    pub async fn ready(&self) -> bool {
        matches!(
            self.http.get(format!("{}/ready", self.base)).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// Fetches the raw JSON of `GET /api/traces/{id}`; `None` on 404.
    ///
    /// # Errors
    /// When the id is malformed, the server is unreachable or answers another
    /// non-2xx status, or the body is not JSON.
    pub async fn get_trace_json(&self, trace_id: &str) -> anyhow::Result<Option<Value>> {
        let id = parse_trace_id(trace_id)?;
        let url = format!("{}/api/traces/{id}", self.base);
        let resp = self
            .http
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("GET {url}"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", truncate(&text, 200));
        }
        let body = serde_json::from_str(&text)
            .with_context(|| format!("GET {url}: body is not JSON: {}", truncate(&text, 200)))?;
        Ok(Some(body))
    }

    /// Fetches and flattens a trace; `None` when the server does not know it.
    ///
    /// # Errors
    /// As [`TempoClient::get_trace_json`], plus a body that is not a trace.
    pub async fn get_trace(&self, trace_id: &str) -> anyhow::Result<Option<Trace>> {
        match self.get_trace_json(trace_id).await? {
            None => Ok(None),
            Some(body) => Trace::from_tempo_json(&body).map(Some),
        }
    }

    /// Runs `GET /api/search`.
    ///
    /// # Errors
    /// When the server is unreachable, answers non-2xx (e.g. a TraceQL syntax
    /// error, whose message is included) or the body is not a search result.
    pub async fn search(&self, query: &SearchQuery) -> anyhow::Result<Vec<TraceSummary>> {
        let url = format!("{}/api/search", self.base);
        let mut full = reqwest::Url::parse(&url).with_context(|| format!("bad URL {url}"))?;
        {
            let mut pairs = full.query_pairs_mut();
            for (k, v) in query.params() {
                pairs.append_pair(k, &v);
            }
        }
        let resp = self
            .http
            .get(full)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("GET {url}"))?;
        if !status.is_success() {
            bail!("search failed: {status}: {}", truncate(text.trim(), 300));
        }
        let body: Value = serde_json::from_str(&text)
            .with_context(|| format!("GET {url}: body is not JSON: {}", truncate(&text, 200)))?;
        parse_search(&body)
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach Tempo at {}: {}; is the collector (or Tempo) running?",
            self.base,
            http_error_summary(e)
        )
    }

    /// Polls `GET /api/traces/{id}` (every 100 ms) until the trace exists and
    /// `predicate` holds, and returns it.
    ///
    /// Spans reach the collector in batches, from several processes, so a trace
    /// fetched too early is incomplete: pass a predicate that says what
    /// "complete" means for the caller (e.g. "has a notification CONSUMER span").
    ///
    /// # Errors
    /// [`TraceWaitTimeout`] (with the last version seen) when `timeout` passes;
    /// a malformed id or unparsable body at once. Connection errors are retried
    /// until the timeout, since the collector may still be starting.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        predicate: impl Fn(&Trace) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Trace> {
        let id = parse_trace_id(trace_id)?;
        let started = tokio::time::Instant::now();
        let mut last = None;
        let mut last_err = None;
        loop {
            match self.get_trace_json(&id).await {
                Ok(Some(body)) => {
                    let trace = Trace::from_tempo_json(&body)?;
                    if predicate(&trace) {
                        return Ok(trace);
                    }
                    last = Some(trace);
                }
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            if started.elapsed() >= timeout {
                if last.is_none()
                    && let Some(e) = last_err
                {
                    return Err(e.context(format!("waiting for trace {id}")));
                }
                return Err(TraceWaitTimeout {
                    trace_id: id,
                    waited: started.elapsed(),
                    last,
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The useful part of a reqwest error: "timed out", or its innermost cause
/// (e.g. "Connection refused (os error 111)") without the repeated URL.
pub fn http_error_summary(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decode_id_accepts_hex_and_base64() {
        let hex_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_id).unwrap());
        assert_eq!(b64.len(), 24);
        assert_eq!(decode_id(hex_id, 16).unwrap(), hex_id);
        assert_eq!(decode_id(&hex_id.to_uppercase(), 16).unwrap(), hex_id);
        assert_eq!(decode_id(&b64, 16).unwrap(), hex_id);
        assert_eq!(decode_id(b64.trim_end_matches('='), 16).unwrap(), hex_id);

        let span = "00f067aa0ba902b7";
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(span).unwrap());
        assert_eq!(b64, "APBnqgupArc=");
        assert_eq!(decode_id(&b64, 8).unwrap(), span);
        assert_eq!(decode_id(span, 8).unwrap(), span);
    }

    #[test]
    fn decode_id_rejects_wrong_lengths_and_garbage() {
        assert!(decode_id("", 8).is_err());
        assert!(decode_id("abc", 8).is_err());
        assert!(decode_id("4bf92f3577b34da6a3ce929d0e0e4736", 8).is_err());
        assert!(decode_id("zzzzzzzzzzzzzzzz", 8).is_err());
        let e = decode_id("nope", 16).unwrap_err();
        assert!(e.to_string().contains("malformed trace id"), "{e}");
    }

    #[test]
    fn parse_trace_id_forms() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(parse_trace_id(id).unwrap(), id);
        assert_eq!(parse_trace_id(&format!(" 0x{id} ")).unwrap(), id);
        assert_eq!(
            parse_trace_id(&format!("00-{id}-00f067aa0ba902b7-01")).unwrap(),
            id
        );
        assert_eq!(
            parse_trace_id("abc").unwrap(),
            "00000000000000000000000000000abc"
        );
        assert_eq!(parse_trace_id("S/kvNXezTaajzpKdDg5HNg==").unwrap(), id);
        assert!(parse_trace_id("").is_err());
        assert!(parse_trace_id("not-a-trace-id").is_err());
        assert!(parse_trace_id(&"0".repeat(32)).is_err());
        assert!(parse_trace_id(&"a".repeat(33)).is_err());
    }

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

    #[test]
    fn parses_search_body() {
        let body = json!({"traces": [{
            "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
            "rootServiceName": "gateway",
            "rootTraceName": "POST /api/checkout",
            "startTimeUnixNano": "1700000000000000000",
            "durationMs": 412,
            "spanSets": [{"spans": [{"spanID": "00f067aa0ba902b7", "name": "x",
                "startTimeUnixNano": "1700000000000000000", "durationNanos": "5000",
                "attributes": [{"key": "service.name", "value": {"stringValue": "gateway"}}]}], "matched": 1}],
            "serviceStats": {"gateway": {"spanCount": 3, "errorCount": 1}, "auth": {"spanCount": 2}}
        }]});
        let r = parse_search(&body).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].duration_ms, Some(412.0));
        assert_eq!(r[0].span_count(), 5);
        assert_eq!(r[0].error_count(), 1);
        assert_eq!(r[0].span_sets[0][0].duration_ns, 5000);
        assert!(parse_search(&json!({})).is_err());
    }

    #[test]
    fn search_params_and_logfmt() {
        let q = SearchQuery {
            tags: vec![
                ("service.name".into(), "gateway".into()),
                ("http.route".into(), "/api/a b".into()),
            ],
            q: Some("{ status = error }".into()),
            limit: Some(5),
            ..Default::default()
        };
        let p = q.params();
        assert_eq!(
            p[0],
            (
                "tags",
                "service.name=gateway http.route=\"/api/a b\"".to_string()
            )
        );
        assert_eq!(p[1].0, "q");
        assert_eq!(p[2], ("limit", "5".to_string()));
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn client_rejects_bad_urls() {
        assert!(TempoClient::new("not a url").is_err());
        assert!(TempoClient::new("ftp://x").is_err());
        assert_eq!(
            TempoClient::new("http://127.0.0.1:3200/")
                .unwrap()
                .base_url(),
            "http://127.0.0.1:3200"
        );
    }
}
