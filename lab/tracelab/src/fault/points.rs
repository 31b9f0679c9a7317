//! The injection points of the six services and the kinds acting at each.

use anyhow::bail;
use tracelab_faults::{AppliedBy, FaultKind, FaultSpec};

use crate::supervisor::SERVICES;

/// One injection point of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The point's name, e.g. `payment.save`.
    pub name: &'static str,
    /// The service (binary name) that carries it.
    pub service: &'static str,
    /// Where it acts, for `fault points` and the guide.
    pub acts: &'static str,
    /// The caller-handled (or telemetry) kinds that act here besides the
    /// generic ones.
    pub kinds: &'static [&'static str],
}

impl Point {
    /// Whether this is a service's `<service>.telemetry` point, where only
    /// the telemetry kinds act (no request passes through it).
    pub fn is_telemetry(&self) -> bool {
        self.name.ends_with(".telemetry")
    }

    /// Whether `kind` acts at this point.
    pub fn accepts(&self, kind: &FaultKind) -> bool {
        if self.is_telemetry() {
            return self.kinds.contains(&kind.name());
        }
        kind.applied_by() == AppliedBy::Generic || self.kinds.contains(&kind.name())
    }

    /// Every kind acting here, generic ones first.
    pub fn kind_names(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = if self.is_telemetry() {
            Vec::new()
        } else {
            GENERIC_KINDS.to_vec()
        };
        for k in self.kinds {
            if !out.contains(k) {
                out.push(k);
            }
        }
        out
    }
}

/// The kinds `FaultRegistry::inject` applies itself, at any request point.
pub const GENERIC_KINDS: &[&str] = &["latency", "error", "hang", "cpu_burn", "outage"];

const TELEMETRY_KINDS: &[&str] = &[
    "slow_export",
    "drop_spans",
    "clock_skew",
    "high_cardinality",
];
const GATEWAY_TELEMETRY_KINDS: &[&str] = &[
    "sampling_miss",
    "slow_export",
    "drop_spans",
    "clock_skew",
    "high_cardinality",
];

/// Every injection point (docs/architecture.md, "Fault injection points").
pub const POINTS: &[Point] = &[
    Point {
        name: "gateway.auth",
        service: "gateway",
        acts: "the calls to auth (POST /login, POST /verify)",
        kinds: &["propagation_break"],
    },
    Point {
        name: "gateway.payment",
        service: "gateway",
        acts: "the call to payment POST /payments",
        kinds: &["retry_storm", "propagation_break"],
    },
    Point {
        name: "gateway.search",
        service: "gateway",
        acts: "the call to search GET /products",
        kinds: &["propagation_break"],
    },
    Point {
        name: "gateway.telemetry",
        service: "gateway",
        acts: "the gateway's own tracing (head sampling decides here)",
        kinds: GATEWAY_TELEMETRY_KINDS,
    },
    Point {
        name: "auth.verify",
        service: "auth",
        acts: "token verification (POST /verify)",
        kinds: &[],
    },
    Point {
        name: "auth.telemetry",
        service: "auth",
        acts: "auth's own tracing",
        kinds: TELEMETRY_KINDS,
    },
    Point {
        name: "search.query",
        service: "search",
        acts: "the products query (SELECT products)",
        kinds: &["slow_query"],
    },
    Point {
        name: "search.telemetry",
        service: "search",
        acts: "search's own tracing",
        kinds: TELEMETRY_KINDS,
    },
    Point {
        name: "payment.validate_order",
        service: "payment",
        acts: "validateOrder",
        kinds: &["slow_query"],
    },
    Point {
        name: "payment.provider_call",
        service: "payment",
        acts: "callExternalPaymentAPI",
        kinds: &[],
    },
    Point {
        name: "payment.save",
        service: "payment",
        acts: "savePaymentResult",
        kinds: &["slow_query", "lock_contention", "pool_exhaustion"],
    },
    Point {
        name: "payment.relay_publish",
        service: "payment",
        acts: "the outbox relay's publish (publish payment.completed)",
        kinds: &["propagation_break"],
    },
    Point {
        name: "payment.telemetry",
        service: "payment",
        acts: "payment's own tracing",
        kinds: TELEMETRY_KINDS,
    },
    Point {
        name: "provider.charge",
        service: "payment-provider",
        acts: "POST /v1/charges",
        kinds: &["rate_limit", "outage"],
    },
    Point {
        name: "provider.telemetry",
        service: "payment-provider",
        acts: "payment-provider's own tracing",
        kinds: TELEMETRY_KINDS,
    },
    Point {
        name: "notification.consume",
        service: "notification",
        acts: "before a delivery is processed (process payment.completed)",
        kinds: &["consumer_stall", "dead_letter", "propagation_break"],
    },
    Point {
        name: "notification.send_email",
        service: "notification",
        acts: "sendEmail",
        kinds: &["slow_query"],
    },
    Point {
        name: "notification.telemetry",
        service: "notification",
        acts: "notification's own tracing",
        kinds: TELEMETRY_KINDS,
    },
];

/// The point called `name`.
pub fn point(name: &str) -> Option<&'static Point> {
    POINTS.iter().find(|p| p.name == name)
}

/// The service that owns a point, from its prefix (`provider.` is
/// payment-provider's), whether or not the point exists.
pub fn service_of_point(point: &str) -> Option<&'static str> {
    let prefix = point.split('.').next()?;
    match prefix {
        "provider" | "payment-provider" => Some("payment-provider"),
        other => SERVICES.iter().copied().find(|s| *s == other),
    }
}

/// A service name as a person may type it: `provider` is payment-provider.
pub fn canonical_service(name: &str) -> Option<&'static str> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "provider" | "payment_provider" | "paymentprovider" => Some("payment-provider"),
        other => SERVICES.iter().copied().find(|s| *s == other),
    }
}

/// Checks that `spec.point` exists and that its kind acts there.
///
/// # Errors
/// An unknown point (with the known ones of that service), or a kind that
/// has no effect at that point (with the kinds that do).
pub fn check_point_and_kind(spec: &FaultSpec) -> anyhow::Result<&'static Point> {
    let Some(p) = point(&spec.point) else {
        let known: Vec<&str> = match service_of_point(&spec.point) {
            Some(svc) => POINTS
                .iter()
                .filter(|p| p.service == svc)
                .map(|p| p.name)
                .collect(),
            None => POINTS.iter().map(|p| p.name).collect(),
        };
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
            p.name,
            p.acts,
            p.kind_names().join(", ")
        );
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_names_its_service_by_prefix() {
        for p in POINTS {
            assert_eq!(service_of_point(p.name), Some(p.service), "{}", p.name);
            for k in p.kinds {
                assert!(FaultKind::NAMES.contains(k), "{k} at {}", p.name);
            }
        }
        for s in SERVICES {
            assert!(
                POINTS.iter().any(|p| p.service == s && p.is_telemetry()),
                "{s} has a telemetry point"
            );
        }
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
            check_point_and_kind(&spec).unwrap().service,
            "payment-provider"
        );
    }
}
