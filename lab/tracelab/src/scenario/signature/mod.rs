//! Machine-checkable trace signatures: what a scenario leaves in the traces
//! (and around them) while it runs, evaluated through the Tempo-compatible
//! API (`TempoClient`: TraceQL search, then trace by id where the question
//! is about the shape of a trace), Postgres and RabbitMQ.
//!
//! Each check is one YAML mapping in a scenario's `signature:` list:
//!
//! | check | present when |
//! |---|---|
//! | `traceql: '{...}'` or `{query, min_traces}` | the TraceQL search finds at least `min_traces` (1) traces |
//! | `span_error: {service, name}` | a span of `service` named `name` has status ERROR |
//! | `slow_span: {service, name, min_ms}` | such a span lasts at least `min_ms` |
//! | `self_time: {service, name, min_ms}` | such a span spends at least `min_ms` outside its children (CPU, export, waits it does not trace) |
//! | `gap: {from: {service, name}, to: {service, name}, min_ms}` | in one trace, `to` starts at least `min_ms` after `from` starts |
//! | `orphan_root: {service, name?}` | a trace is rooted at a span of `service` (its context was lost on the way in) |
//! | `missing_span: {service, name?, route, min_fraction}` | of the traces of the requests sent on `route` that answered 2xx, at least `min_fraction` lack a span of `service` |
//! | `span_count: {service, name, min_per_trace}` | one trace holds at least `min_per_trace` such spans (retries) |
//! | `cardinality: {service, field, kind?, min_distinct}` | spans of `service` show at least `min_distinct` values of `field` (`name` or an attribute key) |
//! | `skewed_child: {service, min_ms}` | a span of `service` starts before its parent, or ends after it, by at least `min_ms` |
//! | `trace_coverage: {route, max_fraction}` | at most `max_fraction` of the requests sent on `route` left a trace (sampling) |
//! | `dlq_depth: {min}` | the notification dead-letter queue grew by at least `min` messages |
//!
//! and one invariant, for a scenario's `invariants:` list (it must hold
//! whether the scenario runs or not):
//!

pub mod checks;
pub mod eval;
pub mod probes;
pub mod timing;

pub use checks::{Check, SpanRef, TraceqlCheck, parse_checks};
pub use eval::{EvalContext, Outcome, report, unix_ns};
pub use probes::DlqProbe;
pub use timing::{max_gap_ms, self_time_ms};
