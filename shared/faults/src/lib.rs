//! Fault injection for the tracelab services: the faults a learner sets,
//! the registry each service consults at its named injection points, and
//! the authenticated admin API that `tracelab fault` and the console drive.
//!
//! A fault is data ([`FaultSpec`]): an injection point (e.g.
//! `payment.save`), a [`FaultKind`] with its parameters, a probability,
//! an optional lifetime (`for: 5m`) and an optional on/off [`Schedule`].
//! The same shape is read from scenario files (JSON or YAML), the CLI and
//! `PUT /admin/faults`:
//!
//! ```yaml
//! point: payment.save
//! kind: latency
//! ms: 800
//! jitter_ms: 200
//! probability: 0.5
//! for: 5m
//! schedule: { on: 30s, off: 1m }
//! ```
//!
//! ## Kinds, and who applies them
//!
//! *Generic* kinds are applied by [`FaultRegistry::inject`] itself; *caller*
//! kinds are handed back by `inject` for the code at the injection point to
//! apply (they need the database, the queue or the HTTP client); *telemetry*
//! kinds are read with [`FaultRegistry::is_active`] by the telemetry setup.
//!
//! | kind | parameters | effect | applied by |
//! |---|---|---|---|
//! | `latency` | `ms`, `jitter_ms` = 0 | sleep `ms` ± `jitter_ms` | generic |
//! | `error` | `status` = 500, `message` | fail with `status` and the code a real failure would carry | generic |
//! | `hang` | `max_ms` = 120000 | wait until the caller gives up (or the fault is cleared), at most `max_ms`, then 504 | generic |
//! | `cpu_burn` | `ms` | spin the current thread for `ms`: self time in the span | generic |
//! | `outage` | `status` = 503 | answer `status` as if down | generic (or caller) |
//! | `retry_storm` | `retries` | retry the downstream call `retries` times, no backoff | caller |
//! | `slow_query` | `ms` | `pg_sleep` inside the query | caller |
//! | `lock_contention` | `hold_ms` | another transaction holds `FOR UPDATE` on the row | caller |
//! | `pool_exhaustion` | `connections`, `hold_ms` | hold pool connections | caller |
//! | `consumer_stall` | `ms` | the consumer sleeps before processing | caller |
//! | `dead_letter` | | the consumer fails the message to the DLQ | caller |
//! | `rate_limit` | `retry_after_s` = 1 | answer 429 with `Retry-After` | caller |
//! | `propagation_break` | | do not inject/extract trace context on that hop | caller |
//! | `high_cardinality` | `attribute` = `user.id` | a unique attribute value / span name per request | caller |
//! | `sampling_miss` | `rate` | head sampling rate for root spans drops to `rate` | telemetry |
//! | `slow_export` | `ms` | a synchronous slow export path | telemetry |
//! | `drop_spans` | | this service's spans are dropped | telemetry |
//! | `clock_skew` | `ms` (may be negative) | this service's span timestamps are shifted | telemetry |
//!
//! ## Using it in a service
//!
//! ```no_run
//! use tracelab_faults::{FaultKind, FaultRegistry, admin_router};
//!
//! const POINTS: &[&str] = &["payment.save", "provider.charge"];
//!
//! # async fn save() -> Result<(), tracelab_service::ApiError> {
//! let faults = FaultRegistry::new("payment", POINTS);
//! let admin = admin_router(faults.clone(), "tracelab-admin".to_string());
//! // ... router.merge(admin) ...
//! match faults.inject("payment.save").await? {
//!     None => { /* no fault, or a generic one already applied */ }
//!     Some(FaultKind::SlowQuery { ms }) => { /* run the query with pg_sleep(ms / 1000.0) */ }
//!     Some(_) => {}
//! }
//! # Ok(()) }
//! ```
//!
//! `check` and `is_active` cost one atomic load while no fault is set.
//! A fault that fires adds a `fault.injected` span event (`fault.point`,
//! `fault.kind`) only once [`FaultRegistry::set_visible`] turned it on:
//! exercises must not give their answer away.

pub mod admin;
pub mod duration;
pub mod registry;
pub mod spec;
pub mod telemetry;

pub use admin::{FaultsReport, Visibility, admin_router};
pub use registry::{ActiveFault, Clock, FaultRegistry, Injected, ManualClock, SystemClock};
pub use spec::{AppliedBy, FaultError, FaultKind, FaultSpec, Schedule};

/// What a service needs to take faults: its registry (with the
/// `<service>.telemetry` point, if listed, already followed) and the admin
/// router guarded by `TRACELAB_ADMIN_TOKEN`. Call inside a Tokio runtime.
pub fn for_service(
    service: &'static str,
    points: &'static [&'static str],
) -> (FaultRegistry, axum::Router) {
    let registry = FaultRegistry::new(service, points);
    if let Some(point) = points.iter().find(|p| p.ends_with(".telemetry")) {
        telemetry::follow(&registry, point);
    }
    let admin = admin_router(registry.clone(), tracelab_service::config::admin_token());
    (registry, admin)
}
