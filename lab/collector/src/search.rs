//! `/api/search`: tag (logfmt) and TraceQL search over the store, shaped like
//! Tempo's response.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::Serialize;

use crate::model::{ResourceInfo, TraceData, any_value_to_string, find_attr, status_code};
use crate::otlp_json::Attrs;
use crate::span::{StoredSpan, ValueRef};
use crate::traceql::{
    AttrRef, Eval, Field, Intrinsic, Need, QueryError, Root, Scope, Spanset, Static, TraceView,
    parse, parse_go_duration, plan_pipeline,
};

/// Tempo's name for a trace whose root span has not arrived.
pub(crate) const ROOT_NOT_RECEIVED: &str = "<root span not yet received>";

/// Default number of traces returned (as Tempo).
pub(crate) const DEFAULT_LIMIT: usize = 20;
/// Default spans per spanset (Tempo's `spss`).
pub(crate) const DEFAULT_SPSS: usize = 3;

/// A parsed search request.
pub(crate) struct SearchRequest {
    tags: Vec<(String, String)>,
    query: Option<Root>,
    min_duration_ns: Option<u64>,
    max_duration_ns: Option<u64>,
    start_ns: Option<u64>,
    end_ns: Option<u64>,
    pub limit: usize,
    spss: usize,
}

/// Raw query-string parameters of `/api/search`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct SearchParams {
    pub tags: Option<String>,
    pub q: Option<String>,
    #[serde(rename = "minDuration")]
    pub min_duration: Option<String>,
    #[serde(rename = "maxDuration")]
    pub max_duration: Option<String>,
    pub limit: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub spss: Option<String>,
}

impl SearchRequest {
    /// Validates the parameters.
    ///
    /// # Errors
    /// With a message for the user when a parameter is malformed or the
    /// TraceQL is outside the supported subset.
    pub(crate) fn from_params(p: &SearchParams) -> Result<SearchRequest, QueryError> {
        for (name, value) in [
            ("tags", &p.tags),
            ("q", &p.q),
            ("minDuration", &p.min_duration),
            ("maxDuration", &p.max_duration),
            ("limit", &p.limit),
            ("start", &p.start),
            ("end", &p.end),
            ("spss", &p.spss),
        ] {
            if let Some(v) = value {
                no_control_chars(name, v)?;
            }
        }
        let nonempty = |o: &Option<String>| {
            o.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let tags = match nonempty(&p.tags) {
            Some(t) => parse_logfmt(&t)?,
            None => Vec::new(),
        };
        let query = match nonempty(&p.q) {
            Some(q) => {
                let root = parse(&q)?;
                if root.is_metrics() {
                    return Err(QueryError(
                        "a metrics query (`| rate()`, `| count_over_time()`, ...) is answered by \
                         /api/metrics/query_range and /api/metrics/query, not /api/search"
                            .into(),
                    ));
                }
                Some(root)
            }
            None => None,
        };
        let dur = |name: &str, v: &Option<String>| -> Result<Option<u64>, QueryError> {
            match nonempty(v) {
                None => Ok(None),
                Some(s) => parse_go_duration(&s).map(Some).ok_or_else(|| {
                    QueryError(format!(
                        "invalid {name} {s:?}: use a Go duration such as 100ms or 2s"
                    ))
                }),
            }
        };
        let int = |name: &str, v: &Option<String>| -> Result<Option<u64>, QueryError> {
            match nonempty(v) {
                None => Ok(None),
                Some(s) => s.parse::<u64>().map(Some).map_err(|_| {
                    QueryError(format!(
                        "invalid {name} {s:?}: expected a non-negative integer"
                    ))
                }),
            }
        };
        let min_duration_ns = dur("minDuration", &p.min_duration)?;
        let max_duration_ns = dur("maxDuration", &p.max_duration)?;
        if let (Some(min), Some(max)) = (min_duration_ns, max_duration_ns)
            && min > max
        {
            return Err(QueryError("minDuration is greater than maxDuration".into()));
        }
        let start = int("start", &p.start)?;
        let end = int("end", &p.end)?;
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(QueryError("start is after end".into()));
        }
        let limit = int("limit", &p.limit)?
            .map(|l| l as usize)
            .filter(|l| *l > 0)
            .unwrap_or(DEFAULT_LIMIT);
        let spss = int("spss", &p.spss)?
            .map(|l| l as usize)
            .filter(|l| *l > 0)
            .unwrap_or(DEFAULT_SPSS);
        Ok(SearchRequest {
            tags,
            query,
            min_duration_ns,
            max_duration_ns,
            start_ns: start.map(|s| s.saturating_mul(1_000_000_000)),
            // `end` is a whole second: include spans that start within it.
            end_ns: end.map(|e| e.saturating_add(1).saturating_mul(1_000_000_000)),
            limit,
            spss,
        })
    }

    /// What a trace needs to match (for the store's indexes).
    pub(crate) fn need(&self) -> Need {
        // Tags only narrow further; the query alone is planned.
        self.query
            .as_ref()
            .map_or(Need::All, |q| plan_pipeline(&q.pipeline))
    }

    /// Whether the trace matches, without building a result (the search
    /// builds results only for the `limit` most recent matches).
    pub(crate) fn matches(&self, trace_id: &[u8; 16], data: &TraceData) -> bool {
        if data.span_count == 0 {
            return false;
        }
        let duration_ns = data.duration_ns();
        if self.min_duration_ns.is_some_and(|m| duration_ns < m)
            || self.max_duration_ns.is_some_and(|m| duration_ns > m)
            || self.start_ns.is_some_and(|s| data.end_ns < s)
            || self.end_ns.is_some_and(|e| data.start_ns >= e)
        {
            return false;
        }
        if !self.tags.is_empty() {
            return self.eval(trace_id, data).is_some();
        }
        match &self.query {
            Some(q) => {
                let view = TraceView::new(trace_id, data);
                !Eval { view: &view }.run(&q.pipeline).is_empty()
            }
            None => true,
        }
    }

    /// Evaluates the request on one trace; `None` when it does not match.
    pub(crate) fn eval(&self, trace_id: &[u8; 16], data: &TraceData) -> Option<TraceResult> {
        if data.span_count == 0 {
            return None;
        }
        let duration_ns = data.duration_ns();
        if self.min_duration_ns.is_some_and(|m| duration_ns < m)
            || self.max_duration_ns.is_some_and(|m| duration_ns > m)
        {
            return None;
        }
        if self.start_ns.is_some_and(|s| data.end_ns < s)
            || self.end_ns.is_some_and(|e| data.start_ns >= e)
        {
            return None;
        }
        let view = TraceView::new(trace_id, data);
        let spans = &view.spans;

        // Tags: every tag must be matched by some span of the trace (not
        // necessarily the same one), as in Tempo's tag search.
        let mut matched: Vec<u32> = Vec::new();
        for (k, v) in &self.tags {
            let before = matched.len();
            match k.as_str() {
                "root.service.name" | "root.name" => {
                    let have = if k == "root.name" {
                        view.root_name()
                    } else {
                        view.root_service()
                    };
                    if view.root.is_none() || !have.contains(v.as_str()) {
                        return None;
                    }
                    matched.extend(view.root.map(|r| r as u32));
                }
                _ => matched.extend(
                    spans
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| tag_matches(k, v, s.res, s.span))
                        .map(|(i, _)| i as u32),
                ),
            }
            if matched.len() == before {
                return None;
            }
        }
        let mut sets: Vec<Spanset> = if let Some(q) = &self.query {
            // With both tags and q, the spansets are what the TraceQL matched.
            let sets = Eval { view: &view }.run(&q.pipeline);
            if sets.is_empty() {
                return None;
            }
            sets
        } else if self.tags.is_empty() {
            vec![Spanset {
                spans: (0..spans.len() as u32).collect(),
                attrs: Vec::new(),
            }]
        } else {
            matched.sort_unstable();
            matched.dedup();
            vec![Spanset {
                spans: matched,
                attrs: Vec::new(),
            }]
        };
        for ss in &mut sets {
            ss.spans
                .sort_by_key(|&i| spans[i as usize].span.start_time_unix_nano);
        }

        // Attributes shown per span: the ones the query or tags refer to,
        // plus service.name (Grafana shows it in the result table).
        let mut keys: Vec<(Field, String)> = Vec::new();
        let mut shown: Vec<(&Field, String)> = self
            .query
            .as_ref()
            .map(|q| q.shown_fields())
            .unwrap_or_default();
        for (k, _) in &self.tags {
            if k != "name" && !k.starts_with("root.") && !shown.iter().any(|(_, have)| have == k) {
                let field = if k == "status" {
                    Field::Intrinsic(Intrinsic::Status)
                } else {
                    Field::Attr(AttrRef {
                        scope: Scope::Any,
                        parent: false,
                        name: k.clone(),
                    })
                };
                keys.push((field, k.clone()));
            }
        }
        shown.extend(keys.iter().map(|(f, k)| (f, k.clone())));
        let ev = Eval { view: &view };

        let span_sets: Vec<SpanSet> = sets
            .iter()
            .map(|ss| SpanSet {
                spans: ss
                    .spans
                    .iter()
                    .take(self.spss)
                    .map(|&i| {
                        let s = spans[i as usize];
                        ResultSpan {
                            span_id: hex::encode(s.span.span_id),
                            name: s.span.name().to_owned(),
                            start_time_unix_nano: s.span.start_time_unix_nano.to_string(),
                            duration_nanos: s
                                .span
                                .end_time_unix_nano
                                .saturating_sub(s.span.start_time_unix_nano)
                                .to_string(),
                            attributes: span_attributes(&ev, &shown, i as usize),
                        }
                    })
                    .collect(),
                matched: ss.spans.len(),
                attributes: ss
                    .attrs
                    .iter()
                    .filter_map(|(k, v)| static_kv(k, v))
                    .collect(),
            })
            .collect();

        let mut service_stats: BTreeMap<String, ServiceStats> = BTreeMap::new();
        for s in spans {
            let st = service_stats.entry(s.res.service.clone()).or_default();
            st.span_count += 1;
            if status_code(s.span) == StatusCode::Error {
                st.error_count += 1;
            }
        }
        let root = view.root.map(|r| spans[r]);
        Some(TraceResult {
            trace_id: hex::encode(trace_id),
            root_service_name: root
                .map(|r| r.res.service.clone())
                .unwrap_or_else(|| ROOT_NOT_RECEIVED.into()),
            root_trace_name: root.map(|r| r.span.name().to_owned()).unwrap_or_default(),
            start_time_unix_nano: data.start_ns.to_string(),
            duration_ms: duration_ns / 1_000_000,
            span_set: span_sets[0].clone(),
            span_sets,
            service_stats,
        })
    }
}

/// The shown fields' values on span `i` (nil ones left out), then its
/// `service.name`.
fn span_attributes(ev: &Eval<'_, '_>, shown: &[(&Field, String)], i: usize) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = Vec::new();
    for (field, key) in shown {
        if out.iter().any(|o| o.key == *key) {
            continue;
        }
        // Attribute values keep their OTLP type (arrays included).
        let kv = match field {
            Field::Attr(a) if !a.parent => {
                let s = ev.view.spans[i];
                let on_span = || s.span.attr(&a.name).map(ValueRef::to_any_value);
                let v = match a.scope {
                    Scope::Span => on_span(),
                    Scope::Resource => find_attr(&s.res.resource.attributes, &a.name).cloned(),
                    Scope::Any => on_span()
                        .or_else(|| find_attr(&s.res.resource.attributes, &a.name).cloned()),
                    Scope::Instrumentation => {
                        find_attr(&s.scope.scope.attributes, &a.name).cloned()
                    }
                    Scope::Event => s
                        .span
                        .events()
                        .iter()
                        .find_map(|e| find_attr(&e.attributes, &a.name))
                        .cloned(),
                    Scope::Link => s
                        .span
                        .links()
                        .iter()
                        .find_map(|l| find_attr(&l.attributes, &a.name))
                        .cloned(),
                };
                v.map(|v| KeyValue {
                    key: key.clone(),
                    value: Some(v),
                    ..Default::default()
                })
            }
            f => static_kv(key, &ev.value(f, i).to_static()),
        };
        out.extend(kv);
    }
    let service = &ev.view.spans[i].res.service;
    if !service.is_empty() && !out.iter().any(|o| o.key == "service.name") {
        out.extend(static_kv("service.name", &Static::Str(service.clone())));
    }
    out
}

/// A value as an OTLP attribute: statuses and kinds as their words,
/// durations as Go-style text (`1.5s`); nil as nothing.
pub(crate) fn static_kv(key: &str, v: &Static) -> Option<KeyValue> {
    let value = match v {
        Static::Nil => return None,
        Static::Int(i) => Av::IntValue(*i),
        Static::Float(f) => Av::DoubleValue(*f),
        Static::Str(s) => Av::StringValue(s.clone()),
        Static::Bool(b) => Av::BoolValue(*b),
        Static::Duration(d) => Av::StringValue(format_duration(*d)),
        Static::Status(c) => Av::StringValue(
            status_word(StatusCode::try_from(*c).unwrap_or(StatusCode::Unset)).into(),
        ),
        Static::Kind(k) => Av::StringValue(kind_word(*k).into()),
    };
    Some(KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    })
}

/// `1.5s`, `250ms`, `3µs`, `42ns`: the largest unit that keeps it short.
pub(crate) fn format_duration(ns: i64) -> String {
    let a = ns.unsigned_abs() as f64;
    let sign = if ns < 0 { "-" } else { "" };
    let (v, unit) = if a >= 1e9 {
        (a / 1e9, "s")
    } else if a >= 1e6 {
        (a / 1e6, "ms")
    } else if a >= 1e3 {
        (a / 1e3, "µs")
    } else {
        (a, "ns")
    };
    format!("{sign}{}{unit}", (v * 1000.0).round() / 1000.0)
}

fn status_word(c: StatusCode) -> &'static str {
    match c {
        StatusCode::Unset => "unset",
        StatusCode::Ok => "ok",
        StatusCode::Error => "error",
    }
}

fn kind_word(kind: i32) -> &'static str {
    match SpanKind::try_from(kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

/// Whether a tag of a tag search (`tags=k=v`) matches a span, as Tempo
/// matches them: `name` and `service.name` by substring (Tempo keeps them in
/// their own columns and searches those with a substring predicate),
/// `status.code` / `status` by the status word (`error`, `STATUS_CODE_ERROR`),
/// `kind` by the kind word, and any other key by the exact value of a span
/// or resource attribute. Tempo compares only string attributes there;
/// here an int, float or bool attribute matches its text too (`code=500`),
/// a documented difference. (`root.name` and `root.service.name` are
/// trace-level and handled by the caller.)
fn tag_matches(key: &str, value: &str, r: &ResourceInfo, s: &StoredSpan) -> bool {
    match key {
        "name" => s.name().contains(value),
        "service.name" => r.service.contains(value) || span_attr_is(s, key, value),
        "status" | "status.code" => {
            let v = value.to_ascii_lowercase();
            let v = v.strip_prefix("status_code_").unwrap_or(&v);
            status_word(status_code(s)) == v
        }
        "kind" => kind_word(s.kind) == value.to_ascii_lowercase(),
        _ => {
            span_attr_is(s, key, value)
                || find_attr(&r.resource.attributes, key)
                    .is_some_and(|v| any_value_to_string(v) == value)
        }
    }
}

fn span_attr_is(s: &StoredSpan, key: &str, value: &str) -> bool {
    s.attr(key).is_some_and(|v| v.to_text() == value)
}

/// Refuses control characters (NUL, ESC, DEL, ...) in user input; tab and
/// line breaks stay allowed, since multi-line TraceQL is common.
///
/// No query can mean them, and passed further they end up in places that
/// choke on them (a NUL is refused by Postgres text, breaks C strings and
/// log lines), so they get a clear 400 here instead of a 500 somewhere else.
///
/// # Errors
/// Naming `what`, the character and its position (1-based, in characters).
pub(crate) fn no_control_chars(what: &str, s: &str) -> Result<(), QueryError> {
    let found = s
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    match found {
        Some((at, c)) => Err(QueryError(format!(
            "{what} contains the control character U+{:04X} at character {}: \
             control characters other than tab and newline are not allowed",
            c as u32,
            at + 1
        ))),
        None => Ok(()),
    }
}

/// Parses logfmt `k=v k2="quoted value"`.
///
/// # Errors
/// On a key without `=`, an empty key or an unterminated quote.
pub(crate) fn parse_logfmt(s: &str) -> Result<Vec<(String, String)>, QueryError> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i == chars.len() {
            return Ok(out);
        }
        let mut key = String::new();
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            key.push(chars[i]);
            i += 1;
        }
        if chars.get(i) != Some(&'=') {
            return Err(QueryError(format!(
                "tag {key:?} has no value: use key=value"
            )));
        }
        if key.is_empty() {
            return Err(QueryError(format!("empty tag name in {s:?}")));
        }
        i += 1;
        let mut value = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(QueryError(format!("unterminated quote in tags {s:?}"))),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') if i + 1 < chars.len() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                value.push(chars[i]);
                i += 1;
            }
        }
        out.push((key, value));
    }
}

#[derive(Serialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceStats {
    span_count: u64,
    error_count: u64,
}

#[derive(Clone)]
pub(crate) struct SpanSet {
    spans: Vec<ResultSpan>,
    matched: usize,
    /// What the pipeline attached (`by(...)`, `count()`), as Tempo reports it.
    attributes: Vec<KeyValue>,
}

impl Serialize for SpanSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("spans", &self.spans)?;
        m.serialize_entry("matched", &self.matched)?;
        if !self.attributes.is_empty() {
            m.serialize_entry("attributes", &Attrs(&self.attributes))?;
        }
        m.end()
    }
}

#[derive(Clone)]
pub(crate) struct ResultSpan {
    span_id: String,
    name: String,
    start_time_unix_nano: String,
    duration_nanos: String,
    attributes: Vec<KeyValue>,
}

impl Serialize for ResultSpan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("spanID", &self.span_id)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("startTimeUnixNano", &self.start_time_unix_nano)?;
        m.serialize_entry("durationNanos", &self.duration_nanos)?;
        m.serialize_entry("attributes", &Attrs(&self.attributes))?;
        m.end()
    }
}

/// One trace in a search response.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TraceResult {
    #[serde(rename = "traceID")]
    trace_id: String,
    root_service_name: String,
    root_trace_name: String,
    start_time_unix_nano: String,
    duration_ms: u64,
    /// Deprecated single spanset Tempo still sends next to `spanSets`.
    span_set: SpanSet,
    span_sets: Vec<SpanSet>,
    service_stats: BTreeMap<String, ServiceStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_tags() {
        assert_eq!(
            parse_logfmt(
                r#"service.name=payment http.response.status_code=500 name="POST /api/checkout""#
            )
            .unwrap(),
            vec![
                ("service.name".into(), "payment".into()),
                ("http.response.status_code".into(), "500".into()),
                ("name".into(), "POST /api/checkout".into()),
            ]
        );
        assert_eq!(
            parse_logfmt(r#"a="x \"y\"""#).unwrap(),
            vec![("a".into(), "x \"y\"".into())]
        );
        assert!(parse_logfmt("novalue").is_err());
        assert!(parse_logfmt(r#"a="open"#).is_err());
        assert!(parse_logfmt("=x").is_err());
    }

    #[test]
    fn bad_params_are_errors() {
        let p = |f: fn(&mut SearchParams)| {
            let mut p = SearchParams::default();
            f(&mut p);
            SearchRequest::from_params(&p).err().map(|e| e.0)
        };
        assert!(
            p(|p| p.min_duration = Some("fast".into()))
                .unwrap()
                .contains("minDuration")
        );
        assert!(
            p(|p| p.limit = Some("-1".into()))
                .unwrap()
                .contains("limit")
        );
        assert!(
            p(|p| p.q = Some("{ status = error } | rate()".into()))
                .unwrap()
                .contains("/api/metrics/query_range")
        );
        assert!(
            p(|p| {
                p.start = Some("20".into());
                p.end = Some("10".into());
            })
            .is_some()
        );
        assert!(p(|p| p.min_duration = Some("100ms".into())).is_none());
    }
}
