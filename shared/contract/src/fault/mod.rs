//! Faults as data: the spec a learner sets ([`FaultSpec`]), the catalogue
//! of points it can be set at ([`FaultPoint`]), the admin API's answers
//! ([`FaultsReport`], [`ActiveFault`], [`Visibility`]) and the duration
//! grammar they are written in ([`duration`]). The runtime that applies
//! faults (registry, admin router) is `tracelab-faults`, in the services.
//!
//! A fault is an injection point (e.g. `payment.save`), a [`FaultKind`]
//! with its parameters, a probability, a lifetime (`for: 5m`; left out:
//! [`limits::DEFAULT_FAULT_LIFETIME`], 15 minutes; `for: never` until
//! cleared) and an optional on/off [`Schedule`]. The same shape is read
//! from scenario files (JSON or YAML), the CLI and `PUT /admin/faults`:
//!
//! ```
//! use std::time::Duration;
//! use tracelab_contract::fault::{FaultKind, FaultPoint, FaultSpec};
//!
//! let spec: FaultSpec = serde_yaml::from_str(
//!     "point: payment.save
//! kind: latency
//! ms: 800
//! jitter_ms: 200
//! probability: 0.5
//! for: 5m
//! schedule: { on: 30s, off: 1m }",
//! )?;
//! spec.validate()?;
//! assert_eq!(spec.fault_point()?, FaultPoint::PaymentSave);
//! assert_eq!(spec.kind, FaultKind::Latency { ms: 800, jitter_ms: 200 });
//! assert_eq!(spec.duration, Some(Duration::from_secs(300)));
//! assert!(FaultPoint::PaymentSave.accepts(&spec.kind));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Kinds, and who applies them
//!
//! *Generic* kinds are applied by the service's registry when the code at
//! an injection point calls `inject`; *caller* kinds are handed back by
//! `inject` for that code to apply (they need the database, the queue or
//! the HTTP client); *telemetry* kinds are set at a `<service>.telemetry`
//! point and followed by the service's tracing setup, with no injection
//! site involved ([`AppliedBy`]).
//!
//! | kind | parameters | effect | applied by |
//! |---|---|---|---|
//! | `latency` | `ms`, `jitter_ms` = 0 | sleep `ms` ± `jitter_ms` | generic |
//! | `error` | `status` = 500, `message` | fail with `status` and the code a real failure would carry | generic |
//! | `hang` | `max_ms` = 120000 | wait until the caller gives up (or the fault is cleared), at most `max_ms`, then 504 | generic |
//! | `cpu_burn` | `ms` | spin the current thread for `ms`: self time in the span | generic |
//! | `outage` | `status` = 503 | answer `status` as if down | generic |
//! | `retry_storm` | `retries` | retry the downstream call `retries` times, no backoff | caller |
//! | `slow_query` | `ms` | `pg_sleep` inside the query | caller |
//! | `lock_contention` | `hold_ms` | another transaction holds `FOR UPDATE` on the row | caller |
//! | `pool_exhaustion` | `connections`, `hold_ms` | hold pool connections | caller |
//! | `consumer_stall` | `ms` | the consumer sleeps before processing | caller |
//! | `dead_letter` | | the consumer fails the message to the DLQ | caller |
//! | `rate_limit` | `retry_after_s` = 1 | answer 429 with `Retry-After` | caller |
//! | `propagation_break` | | do not inject/extract trace context on that hop | caller |
//! | `high_cardinality` | `attribute` = `user.id` | SERVER spans named after the raw path, `attribute` unique per request | telemetry |
//! | `sampling_miss` | `rate` | head sampling rate for root spans drops to `rate` | telemetry |
//! | `slow_export` | `ms` | a synchronous slow export path | telemetry |
//! | `drop_spans` | | this service's spans are dropped | telemetry |
//! | `clock_skew` | `ms` (may be negative) | this service's span timestamps are shifted | telemetry |
//!
//! Where each kind acts is the catalogue's business: [`FaultPoint::kinds`],
//! [`FaultPoint::accepts`], and the table in docs/architecture.md.

pub mod duration;
pub mod limits;
mod point;
mod report;
mod spec;

pub use point::{FaultPoint, GENERIC_KINDS, UnknownPoint, markdown_table};
pub use report::{ActiveFault, FaultsReport, Visibility};
pub use spec::{AppliedBy, FaultError, FaultKind, FaultSpec, Schedule};

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds table above, as `(kind, applied by)` pairs.
    fn documented_kinds() -> Vec<(String, String)> {
        include_str!("mod.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//! | `"))
            .map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                let kind = cells[0].trim_end_matches('`').to_string();
                (kind, cells[cells.len() - 2].to_string())
            })
            .collect()
    }

    #[test]
    fn the_kinds_table_says_who_applies_each_kind() {
        let documented = documented_kinds();
        let mut names: Vec<&str> = documented.iter().map(|(k, _)| k.as_str()).collect();
        let mut expected = FaultKind::NAMES.to_vec();
        names.sort_unstable();
        expected.sort_unstable();
        assert_eq!(names, expected, "one row per kind");
        for (kind, by) in documented {
            let parsed = spec::example_of(&kind);
            let actual = serde_json::to_value(parsed.applied_by()).unwrap();
            assert_eq!(actual, by.as_str(), "{kind}");
        }
    }
}
