//! W3C Trace Context and Baggage propagation over HTTP headers, AMQP headers
//! and plain string maps (outbox rows).
//!
//! The SDK's `TraceContextPropagator` is lenient (it accepts `0` as a version,
//! short ids, a leading `+`...). The W3C processing model says an invalid
//! `traceparent` must restart the trace and an invalid `tracestate` must be
//! dropped, so every extraction goes through [`StrictExtractor`] first.

use std::collections::{BTreeMap, HashMap, HashSet};

use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Checks a `traceparent` value against the W3C Trace Context rules and
/// returns it in version-00 form, or `None` when the trace must restart.
pub fn validate_traceparent(raw: &str) -> Option<String> {
    let value = raw.trim_matches(|c| c == ' ' || c == '\t');
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let is_lower_hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let version = &bytes[0..2];
    if !is_lower_hex(version) || version == b"ff" {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace_id, parent_id, flags) = (&bytes[3..35], &bytes[36..52], &bytes[53..55]);
    if !is_lower_hex(trace_id) || !is_lower_hex(parent_id) || !is_lower_hex(flags) {
        return None;
    }
    if trace_id.iter().all(|b| *b == b'0') || parent_id.iter().all(|b| *b == b'0') {
        return None;
    }
    if version == b"00" {
        if bytes.len() != 55 {
            return None;
        }
    } else if bytes.len() > 55 && bytes[55] != b'-' {
        // A future version may append fields, but only after a dash.
        return None;
    }
    Some(format!("00-{}", &value[3..55]))
}

/// Checks a combined `tracestate` value; `None` means drop it.
pub fn validate_tracestate(raw: &str) -> Option<String> {
    let mut keys = HashSet::new();
    let mut members = Vec::new();
    for member in raw.split(',') {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        if !valid_tracestate_key(key) || !valid_tracestate_value(value) || !keys.insert(key) {
            return None;
        }
        members.push(member);
    }
    if members.len() > 32 {
        return None;
    }
    Some(members.join(","))
}

fn valid_tracestate_key(key: &str) -> bool {
    let simple = |s: &str, max: usize| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(c))
    };
    let tenant = |s: &str| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 241
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(c))
    };
    match key.split_once('@') {
        None => simple(key, 256),
        Some((t, system)) => tenant(t) && simple(system, 14),
    }
}

fn valid_tracestate_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
        && b[b.len() - 1] != b' '
}

/// Wraps a carrier so the propagator only sees W3C-valid trace headers.
pub struct StrictExtractor<'a> {
    inner: &'a dyn Extractor,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl<'a> StrictExtractor<'a> {
    /// `traceparent_values` holds every `traceparent` the carrier had: more
    /// than one is invalid, as is any tracestate without a valid traceparent.
    pub fn new(
        inner: &'a dyn Extractor,
        traceparent_values: &[&str],
        tracestate_values: &[&str],
    ) -> Self {
        let traceparent = match traceparent_values {
            [one] => validate_traceparent(one),
            _ => None,
        };
        let tracestate = traceparent
            .as_ref()
            .and_then(|_| validate_tracestate(&tracestate_values.join(",")));
        Self {
            inner,
            traceparent,
            tracestate,
        }
    }
}

impl Extractor for StrictExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => self.inner.get(key),
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.inner.keys()
    }
}

/// Extracts the remote context from HTTP headers (strictly).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    let carrier = HeaderCarrier(headers);
    let parents: Vec<&str> = headers
        .get_all(TRACEPARENT)
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    let states: Vec<&str> = headers
        .get_all(TRACESTATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let strict = StrictExtractor::new(&carrier, &parents, &states);
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&strict))
}

/// Injects `cx` into outgoing HTTP headers.
pub fn inject_http(cx: &Context, headers: &mut http::HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut HeaderInjector(headers))
    });
}

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
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
    let carrier = MapCarrier(map);
    let parents: Vec<&str> = map
        .get(TRACEPARENT)
        .map(String::as_str)
        .into_iter()
        .collect();
    let states: Vec<&str> = map
        .get(TRACESTATE)
        .map(String::as_str)
        .into_iter()
        .collect();
    let strict = StrictExtractor::new(&carrier, &parents, &states);
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&strict))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn accepts_the_spec_example_and_future_versions() {
        assert_eq!(validate_traceparent(VALID).as_deref(), Some(VALID));
        assert_eq!(
            validate_traceparent(&format!(" {VALID}\t")).as_deref(),
            Some(VALID)
        );
        let future =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds";
        assert_eq!(
            validate_traceparent(future).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09")
        );
    }

    #[test]
    fn refuses_what_the_sdk_would_let_through() {
        for bad in [
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09.extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-abc123def456-span789-01",
            "",
        ] {
            assert_eq!(
                validate_traceparent(bad),
                None,
                "{bad:?} must restart the trace"
            );
        }
    }

    #[test]
    fn tracestate_rules() {
        assert_eq!(
            validate_tracestate("foo=1, bar=2").as_deref(),
            Some("foo=1,bar=2")
        );
        assert_eq!(validate_tracestate("t1@sys=x").as_deref(), Some("t1@sys=x"));
        assert_eq!(validate_tracestate("foo=1,foo=2"), None, "duplicate keys");
        assert_eq!(validate_tracestate("Foo=1"), None, "uppercase key");
        assert_eq!(validate_tracestate("foo=a=b"), None);
        assert_eq!(validate_tracestate("foo"), None);
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(validate_tracestate(&many), None, "more than 32 members");
    }
}
