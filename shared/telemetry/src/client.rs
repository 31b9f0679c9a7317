//! Outgoing HTTP: a reqwest client whose every call is a CLIENT span and
//! carries the W3C headers.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{FutureExt, SpanKind, Status, TraceContextExt};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

use crate::propagation::inject_http;
use crate::server::{method_value, route_span_name};
use crate::span::{record_error, start_lazy};

/// At most this many attributes on a CLIENT span: method, full URL,
/// template, address, port, and after the call the status code and
/// `error.type`.
const CLIENT_ATTRIBUTES: usize = 7;

/// A route template for the CLIENT span name, e.g. `/orders/{id}`; set with
/// `RequestBuilder::with_extension(UrlTemplate("/orders/{id}"))`. Without
/// it the request path is used, which is fine for paths without ids.
#[derive(Debug, Clone, Copy)]
pub struct UrlTemplate(pub &'static str);

/// Set on a request to send it WITHOUT trace headers (the propagation-break
/// fault): the callee then starts a trace of its own.
#[derive(Debug, Clone, Copy)]
pub struct SkipPropagation;

/// The middleware; [`traced_client`] installs it.
#[derive(Debug, Clone, Default)]
pub struct TracePropagation;

#[async_trait::async_trait]
impl Middleware for TracePropagation {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let template = extensions.get::<UrlTemplate>().map(|t| t.0);
        let cx = start_client_span(req.method(), req.url(), template);
        if extensions.get::<SkipPropagation>().is_none() {
            inject_http(&cx, req.headers_mut());
        }
        let result = next.run(req, extensions).with_context(cx.clone()).await;
        let span = cx.span();
        match &result {
            Ok(response) => {
                let status = response.status();
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                // The client side of a 4xx or 5xx is an error (semconv).
                if status.is_client_error() || status.is_server_error() {
                    span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
                    span.set_status(Status::error(status.to_string()));
                }
            }
            Err(err) => {
                let kind = if err.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                span.set_attribute(KeyValue::new("error.type", kind));
                record_error(&cx, "reqwest::Error", &err.to_string());
            }
        }
        span.end();
        result
    }
}

/// Starts the CLIENT span of an outgoing call, a child of the current
/// context, named `"{method} {template or path}"`, with the HTTP client
/// attributes (built only when the span is recorded); returns the context
/// holding it. The caller injects it, runs the call and ends the span.
pub fn start_client_span(
    method: &http::Method,
    url: &reqwest::Url,
    template: Option<&'static str>,
) -> opentelemetry::Context {
    // A template is one of the service's own routes: its name is kept and
    // borrowed. A path may hold ids: formatted per call.
    let name = match template {
        Some(template) => route_span_name(method, template),
        None => format!("{} {}", method, url.path()).into(),
    };
    // Built only for a recorded span: an unsampled call pays for none.
    let attributes = || {
        // Room for every attribute the span may get, the two set after the
        // call included: the vector is never reallocated.
        let mut attributes = Vec::with_capacity(CLIENT_ATTRIBUTES);
        attributes.extend([
            KeyValue::new("http.request.method", method_value(method)),
            KeyValue::new("url.full", url.to_string()),
            KeyValue::new(
                "url.template",
                match template {
                    Some(t) => opentelemetry::Value::from(t),
                    None => url.path().to_owned().into(),
                },
            ),
        ]);
        if let Some(host) = url.host_str() {
            attributes.push(KeyValue::new("server.address", host.to_owned()));
        }
        if let Some(port) = url.port_or_known_default() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        attributes
    };
    start_lazy(name, SpanKind::Client, attributes)
}

/// A reqwest client with `timeout` per request that traces and propagates.
///
/// Fails only if the TLS-less reqwest builder cannot start, which would be a
/// build problem rather than a runtime one.
pub fn traced_client(timeout: Duration) -> reqwest::Result<ClientWithMiddleware> {
    let inner = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    Ok(ClientBuilder::new(inner).with(TracePropagation).build())
}
