//! tracelab-client: everything that talks to a running lab from the outside,
//! with no knowledge of how the lab was started.
//!
//! - [`tempo`]: [`TempoClient`], a client for the subset of Grafana Tempo's
//!   HTTP API the lab uses. It works against the embedded collector
//!   (`tracelab up`) and a real Tempo (`docker compose up`), which serve the
//!   same shapes:
//!   - `GET /api/traces/{id}` → `{"batches":[ResourceSpans]}` (OTLP/JSON, ids
//!     in base64 as Tempo serves them, integer attributes as strings);
//!   - `GET /api/v2/traces/{id}` → `{"trace":{"resourceSpans":[..]}}`;
//!   - `GET /api/search` → `{"traces":[{traceID, rootServiceName, ..}]}` (ids in hex).
//! - [`trace`]: the flat [`Trace`] model tests and tools query (`roots()`,
//!   `children()`, `find()`, ...). Parsing is lenient about the encodings
//!   OTLP/JSON allows (ids in hex or base64, enums as numbers or names,
//!   64-bit integers as strings or numbers) and strict about what a test
//!   relies on: every id is lowercase hex of the right length, every integer
//!   attribute a JSON number.
//! - [`search`]: `/api/search` parameters and results; [`ids`]: trace and
//!   span ids as people paste them.
//! - [`waterfall`]: a trace drawn as a terminal waterfall.
//! - [`gateway`]: login as a demo user, the checkout body, the trace id of
//!   an answer.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use tracelab_client::{SpanKind, TempoClient};
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

pub mod gateway;
pub mod http;
pub mod ids;
mod otlp_json;
pub mod search;
pub mod tempo;
pub mod trace;
pub mod waterfall;

pub use http::http_error_summary;
pub use ids::{IdError, parse_trace_id};
pub use otlp_json::{convert_any_value, convert_attributes};
pub use search::{SearchQuery, TraceSummary};
pub use tempo::{TempoClient, TraceWaitTimeout};
pub use trace::{Event, Link, Span, SpanKind, StatusCode, Trace};
pub use waterfall::render_waterfall;
