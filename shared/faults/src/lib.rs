//! Fault injection at run time, inside the tracelab services: the registry
//! each service consults at its injection points, the generic effects it
//! applies itself, the authenticated admin API that `tracelab fault` and
//! the console drive (faults, and the head sampling rules in [`sampling`]),
//! and the bridge from a service's `<service>.telemetry` point to its
//! tracing.
//!
//! Faults as data (the spec, the kinds and who applies them, the catalogue
//! of points, the admin API's answers) live in `tracelab-contract`'s
//! `fault` module, which the CLI reads without compiling this runtime.
//!
//! ## Using it in a service
//!
//! A service takes its registry and admin router from [`for_service`],
//! serves the router on its admin listener (never on the public one), and
//! names points from the catalogue at its injection sites, so a misspelt
//! point does not compile:
//!
//! ```
//! use tracelab_contract::fault::{FaultKind, FaultPoint, FaultSpec};
//! use tracelab_contract::service::ServiceName;
//! use tracelab_faults::FaultRegistry;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let faults = FaultRegistry::new(ServiceName::Payment);
//! // What `PUT /admin/faults` does with `{"point":"payment.save",...}`:
//! faults.set(FaultSpec::new(FaultPoint::PaymentSave, FaultKind::SlowQuery { ms: 900 }))?;
//!
//! // At the injection site: generic kinds are applied inside `inject`
//! // (or fail it), caller kinds come back for the site to apply.
//! let pause_ms = match faults.inject(FaultPoint::PaymentSave).await? {
//!     Some(FaultKind::SlowQuery { ms }) => ms, // run the query with pg_sleep
//!     _ => 0,
//! };
//! assert_eq!(pause_ms, 900);
//! # Ok(()) }
//! ```
//!
//! `check` and `is_active` cost one atomic load while no fault is set.
//! A fault that fires adds a `fault.injected` span event (`fault.point`,
//! `fault.kind`) only once [`FaultRegistry::set_visible`] turned it on:
//! exercises must not give their answer away.

pub mod admin;
pub mod registry;
pub mod sampling;
pub mod telemetry;

pub use admin::{admin_router, admin_router_with_head};
pub use registry::{Clock, FaultRegistry, Injected, ManualClock, SystemClock};

use tracelab_contract::fault::FaultPoint;
use tracelab_contract::service::ServiceName;

/// What a service needs to take faults: its registry over the catalogue's
/// points of `service`, with its `<service>.telemetry` point already
/// followed by the tracing setup, and the admin router guarded by `token`
/// (the service's `tracelab_service::config::Admin` token), for its admin
/// listener (`tracelab_service::App::with_admin`). Call inside a Tokio
/// runtime.
///
/// ```
/// use tower::ServiceExt as _;
/// use tracelab_contract::service::ServiceName;
/// use tracelab_service::config::AdminToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A service started without TRACELAB_ADMIN_TOKEN draws one at random.
/// let token = AdminToken::random();
/// let (faults, admin) = tracelab_faults::for_service(ServiceName::Search, &token);
/// assert_eq!(faults.points().len(), 2);
/// let request = http::Request::get("/admin/faults")
///     .header("authorization", format!("Bearer {}", token.expose()))
///     .body(axum::body::Body::empty())
///     .unwrap();
/// let response = admin.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
pub fn for_service(
    service: ServiceName,
    token: &tracelab_service::config::AdminToken,
) -> (FaultRegistry, axum::Router) {
    let registry = FaultRegistry::new(service);
    telemetry::follow(&registry, FaultPoint::telemetry_of(service));
    if token.is_random() {
        tracing::info!(
            "TRACELAB_ADMIN_TOKEN is not set: the admin API requires a token drawn at start, \
             which nobody was given"
        );
    }
    let admin = admin_router(registry.clone(), token.expose().to_string());
    (registry, admin)
}
