//! The runtime every tracelab service shares, so a service's own files hold
//! only what is particular to it.
//!
//! - [`error::ApiError`]: the one error type at the HTTP edge, rendered as
//!   `{"error":{"code","message"},"trace_id"}`; 5xx details go on the span,
//!   never to the client.
//! - [`error::Json`]: a JSON extractor whose rejections use that shape.
//! - [`health`]: the `/health` report.
//! - [`app`]: standard layers (SERVER span, body limit, timeout, JSON 404/405),
//!   the admin API's own listener, the `listening` log line, and serving
//!   with graceful shutdown.
//! - [`serve`]: the connection limits every listener has (header read and
//!   idle timeouts, a maximum number of connections).
//! - [`w3c`]: the W3C test-harness endpoint, off unless `TRACELAB_W3C_HARNESS`
//!   names the test suite's server, and then forwarding only there.

pub mod amqp;
pub mod app;
pub mod config;
pub mod error;
pub mod health;
pub mod serve;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod w3c;

pub use app::{App, Service, StandardLimits, bind, serve};
pub use error::{ApiError, Json, RawBody};
pub use health::{Check, health_response};
pub use serve::{ConnectionLimits, serve_with_limits};
pub use w3c::W3cHarness;
