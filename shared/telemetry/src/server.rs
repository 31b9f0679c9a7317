//! The SERVER span for every axum request.
//!
//! [`server_span`] is an `axum::middleware::from_fn` layer: it extracts the
//! caller's context (strictly, see [`crate::propagation`]), starts a SERVER
//! span named `"{method} {route}"` from the matched route, runs the handler
//! inside it, records the response status and returns the W3C
//! `traceresponse` header so a client can find its trace. `/health` is not
//! traced: probes would drown the traces a learner is looking for.

use std::borrow::Cow;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue};
use opentelemetry::KeyValue;
use opentelemetry::trace::{FutureExt, SpanKind, Status, TraceContextExt};

use crate::names;
use crate::propagation::extract_http;
use crate::span::start_with_parent_lazy;
use crate::tracecontext::TraceParent;

/// Paths never traced.
pub const UNTRACED_PATHS: &[&str] = &["/health"];

/// The W3C `traceresponse` header, checked once at compile time.
const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// At most this many attributes on a SERVER span: method, path, scheme,
/// route, the high-cardinality fault's, address, port, user agent, and
/// after the handler the status code and `error.type`.
const SERVER_ATTRIBUTES: usize = 10;

/// The standard methods' names as static strings.
fn known_method(method: &http::Method) -> Option<&'static str> {
    use http::Method;
    match *method {
        Method::GET => Some("GET"),
        Method::POST => Some("POST"),
        Method::PUT => Some("PUT"),
        Method::DELETE => Some("DELETE"),
        Method::PATCH => Some("PATCH"),
        Method::HEAD => Some("HEAD"),
        Method::OPTIONS => Some("OPTIONS"),
        _ => None,
    }
}

/// The method as an attribute value: the standard ones are static strings,
/// copied nowhere.
pub(crate) fn method_value(method: &http::Method) -> opentelemetry::Value {
    match known_method(method) {
        Some(m) => m.into(),
        None => method.as_str().to_owned().into(),
    }
}

/// The span name `"{method} {route}"` for a route of the service's own
/// (a matched route or a URL template): kept once and borrowed
/// ([`names::method_route`]) for the standard methods, formatted for others
/// (a client may send any token as a method).
pub(crate) fn route_span_name(method: &http::Method, route: &str) -> Cow<'static, str> {
    match known_method(method) {
        Some(m) => names::method_route(m, route),
        None => format!("{method} {route}").into(),
    }
}

/// axum middleware creating the SERVER span; add with
/// `router.layer(axum::middleware::from_fn(server_span))`.
pub async fn server_span(req: Request, next: Next) -> Response {
    if UNTRACED_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let high_cardinality = crate::chaos::current().and_then(|f| f.high_cardinality);
    let cx = {
        let path = req.uri().path();
        let method = req.method();
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let name: Cow<'static, str> = match (route, &high_cardinality) {
            // The pitfall: an id in the span name makes every request its own
            // operation, and a unique attribute value per request bloats indexes.
            (_, Some(_)) => format!("{method} {path}").into(),
            (Some(route), None) => route_span_name(method, route),
            (None, None) => match known_method(method) {
                Some(m) => m.into(),
                None => method.to_string().into(),
            },
        };
        // The route borrowed from a kept name, so `http.route` copies nothing.
        let kept_route = match (&name, route) {
            (Cow::Borrowed(name), Some(_)) => names::route_of(name, method.as_str()),
            _ => None,
        };
        let parent = extract_http(req.headers());
        let headers = req.headers();
        // Built only for a recorded span: an unsampled request pays for none.
        let attributes = || {
            // Room for every attribute the span may get, the two set after
            // the handler included: the vector is never reallocated.
            let mut attributes = Vec::with_capacity(SERVER_ATTRIBUTES);
            attributes.extend([
                KeyValue::new("http.request.method", method_value(method)),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new("url.scheme", "http"),
            ]);
            if let Some(route) = route {
                let route = match kept_route {
                    Some(kept) => opentelemetry::Value::from(kept),
                    None => route.to_owned().into(),
                };
                attributes.push(KeyValue::new("http.route", route));
            }
            if let Some(attribute) = high_cardinality {
                use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
                let unique = RandomIdGenerator::default().new_trace_id().to_string();
                attributes.push(KeyValue::new(attribute, unique));
            }
            if let Some(host) = headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                let (address, port) = match host.rsplit_once(':') {
                    Some((a, p)) => (a, p.parse::<i64>().ok()),
                    None => (host, None),
                };
                attributes.push(KeyValue::new("server.address", address.to_owned()));
                if let Some(port) = port {
                    attributes.push(KeyValue::new("server.port", port));
                }
            }
            if let Some(agent) = headers
                .get(http::header::USER_AGENT)
                .and_then(|h| h.to_str().ok())
            {
                attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
            }
            attributes
        };
        start_with_parent_lazy(&parent, name, SpanKind::Server, attributes)
    };
    let mut response = next.run(req).with_context(cx.clone()).await;

    let span = cx.span();
    let status = response.status();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    // A server answering 4xx did its job; only 5xx marks the SERVER span.
    if status.is_server_error() {
        span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
        span.set_status(Status::error(status.to_string()));
    }
    // The W3C `traceresponse`, written on the stack: one copy, into the
    // header value.
    if let Some(parent) = TraceParent::of(span.span_context())
        && let Ok(value) = HeaderValue::from_bytes(&parent.encode())
    {
        response.headers_mut().insert(TRACERESPONSE, value);
    }
    span.end();
    response
}
