//! W3C Trace Context and Baggage propagation over HTTP headers, AMQP headers
//! and plain string maps (outbox rows).
//!
//! Every extraction applies [`crate::tracecontext::W3cTraceContext`]'s
//! rules, then W3C Baggage: an invalid `traceparent` restarts the trace and
//! an invalid `tracestate` is dropped, as the W3C processing model asks.
//! The carriers hand it every value of a header (HTTP may repeat one), so
//! two `traceparent`s restart the trace and several `tracestate` fields
//! are read as one list. AMQP headers and string maps go through the
//! global propagator (the same two, set by [`crate::init`]); HTTP headers,
//! on every request, call the same two directly with typed headers, which
//! borrows every value and formats the `traceparent` on the stack.

use std::collections::{BTreeMap, HashMap};

use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::BaggagePropagator;

pub use crate::tracecontext::{validate_traceparent, validate_tracestate};

/// What a carrier hands the propagator for a header value that is not
/// visible ASCII: invalid in both grammars, so a `traceparent` restarts
/// the trace and a `tracestate` is dropped as a whole.
const NOT_TEXT: &str = "\0";

/// Extracts the remote context from HTTP headers (strictly), on top of the
/// current context.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    let cx = crate::tracecontext::extract_http_headers(&Context::current(), headers);
    // Without the header the propagator would hand back `cx` as it is: a
    // lookup by a ready-made header name says so for less.
    if !headers.contains_key(&BAGGAGE) {
        return cx;
    }
    BaggagePropagator::new().extract_with_context(&cx, &HeaderCarrier(headers))
}

/// The W3C `baggage` header, checked once at compile time.
const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

/// Injects `cx` into outgoing HTTP headers.
pub fn inject_http(cx: &Context, headers: &mut http::HeaderMap) {
    crate::tracecontext::inject_http_headers(cx, headers);
    BaggagePropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.to_str().unwrap_or(NOT_TEXT))
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .map(|v| v.to_str().unwrap_or(NOT_TEXT))
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Injects `cx` into AMQP message headers.
pub fn inject_amqp(cx: &Context, headers: &mut FieldTable) {
    let mut map = HashMap::new();
    inject_map(cx, &mut map);
    for (k, v) in map {
        headers.insert(ShortString::from(k), AMQPValue::LongString(v.into()));
    }
}

/// Extracts the producer's context from AMQP message headers (strictly).
pub fn extract_amqp(headers: Option<&FieldTable>) -> Context {
    let mut map = BTreeMap::new();
    if let Some(table) = headers {
        for (k, v) in table.inner() {
            let text = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                _ => continue,
            };
            map.insert(k.as_str().to_ascii_lowercase(), text);
        }
    }
    extract_map(&map)
}

/// Injects `cx` into a string map, e.g. to store with an outbox row.
pub fn inject_map(cx: &Context, map: &mut HashMap<String, String>) {
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, map));
}

/// Extracts a context from a string map with lowercase keys (strictly).
pub fn extract_map(map: &BTreeMap<String, String>) -> Context {
    struct MapCarrier<'a>(&'a BTreeMap<String, String>);
    impl Extractor for MapCarrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&MapCarrier(map)))
}
