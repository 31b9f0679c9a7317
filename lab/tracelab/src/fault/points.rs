//! The injection points of the six services, as the CLI and scenario files
//! name them. The catalogue itself is the contract's
//! ([`FaultPoint`]); this module reads names people type (a point, a
//! service, `provider` for payment-provider) and checks that a fault's kind
//! acts where it is sent.

use anyhow::bail;
use tracelab_contract::fault::{FaultPoint, FaultSpec};
use tracelab_contract::service::ServiceName;

pub use tracelab_contract::fault::GENERIC_KINDS;

/// The point called `name`.
pub fn point(name: &str) -> Option<FaultPoint> {
    name.parse().ok()
}

/// The service that owns a point, from its prefix (`provider.` is
/// payment-provider's), whether or not the point exists.
pub fn service_of_point(point: &str) -> Option<&'static str> {
    let prefix = point.split('.').next()?;
    ServiceName::ALL
        .into_iter()
        .find(|s| s.point_prefix() == prefix || s.name() == prefix)
        .map(ServiceName::name)
}

/// A service name as a person may type it: `provider` is payment-provider.
pub fn canonical_service(name: &str) -> Option<&'static str> {
    name.parse::<ServiceName>().ok().map(ServiceName::name)
}

/// The six services' names, in the contract's order.
pub fn service_names() -> Vec<&'static str> {
    ServiceName::ALL.map(ServiceName::name).to_vec()
}

/// Checks that `spec.point` exists and that its kind acts there.
///
/// # Errors
/// An unknown point (with the known ones of that service), or a kind that
/// has no effect at that point (with the kinds that do).
pub fn check_point_and_kind(spec: &FaultSpec) -> anyhow::Result<FaultPoint> {
    let Some(p) = point(&spec.point) else {
        let known: Vec<&str> = FaultPoint::ALL
            .iter()
            .filter(|p| service_of_point(&spec.point).is_none_or(|s| p.service().name() == s))
            .map(|p| p.name())
            .collect();
        bail!(
            "unknown injection point {:?} (known: {}; `tracelab fault points` lists them all)",
            spec.point,
            known.join(", ")
        );
    };
    if !p.accepts(&spec.kind) {
        bail!(
            "kind `{}` has no effect at {} ({}); kinds acting there: {}",
            spec.kind.name(),
            p.name(),
            p.acts(),
            p.kind_names().join(", ")
        );
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelab_contract::fault::FaultKind;

    #[test]
    fn every_point_names_its_service_by_prefix() {
        for p in FaultPoint::ALL {
            assert_eq!(
                service_of_point(p.name()),
                Some(p.service().name()),
                "{}",
                p.name()
            );
        }
        assert_eq!(service_of_point("provider.nope"), Some("payment-provider"));
        assert_eq!(service_of_point("nobody.x"), None);
        assert_eq!(canonical_service(" Provider "), Some("payment-provider"));
        assert_eq!(canonical_service("paymnet"), None);
    }

    #[test]
    fn kinds_act_where_the_contract_says() {
        let save = point("payment.save").unwrap();
        assert!(save.accepts(&FaultKind::Latency {
            ms: 1,
            jitter_ms: 0
        }));
        assert!(save.accepts(&FaultKind::LockContention { hold_ms: 5 }));
        assert!(!save.accepts(&FaultKind::DeadLetter));
        let tele = point("search.telemetry").unwrap();
        assert!(tele.accepts(&FaultKind::DropSpans));
        assert!(!tele.accepts(&FaultKind::Latency {
            ms: 1,
            jitter_ms: 0
        }));
        assert!(!tele.accepts(&FaultKind::SamplingMiss { rate: 0.1 }));
        assert!(
            point("gateway.telemetry")
                .unwrap()
                .accepts(&FaultKind::SamplingMiss { rate: 0.1 })
        );
    }

    #[test]
    fn checks_points_and_kinds() {
        let spec = FaultSpec::new("payment.sav", FaultKind::DropSpans);
        let err = check_point_and_kind(&spec).unwrap_err().to_string();
        assert!(err.contains("payment.save"), "{err}");
        let spec = FaultSpec::new("payment.save", FaultKind::DeadLetter);
        let err = check_point_and_kind(&spec).unwrap_err().to_string();
        assert!(err.contains("lock_contention"), "{err}");
        let spec = FaultSpec::new("provider.charge", FaultKind::RateLimit { retry_after_s: 1 });
        assert_eq!(
            check_point_and_kind(&spec).unwrap().service().name(),
            "payment-provider"
        );
    }
}
