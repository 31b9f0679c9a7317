//! `GET /api/search`: the query parameters and the result model.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::Value;

use crate::ids::{SPAN_ID_BYTES, decode_id, parse_trace_id};
use crate::otlp_json::{as_array, convert_attributes, parse_u64};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
