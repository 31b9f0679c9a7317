//! What the admin API answers (`/admin/faults`), shared by the services
//! that serve it and the CLI and console that read it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::spec::FaultSpec;

/// A fault as a service holds it: the spec plus when it was set. The spec's
/// fields are flattened beside `set_at`, `expires_at` and `active`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// The fault as it was set.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// When it was set.
    pub set_at: DateTime<Utc>,
    /// When `for` runs out; `None` (`null`) for a `for: never` fault,
    /// which stays until cleared.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the fault is in effect right now: `false` while its schedule
    /// is in the off phase.
    pub active: bool,
}

/// The answer to `GET /admin/faults`.
///
/// Names are plain strings, not [`super::FaultPoint`]s: a CLI must still
/// read the report of a service built from another version of the
/// catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultsReport {
    /// The service answering (`payment`).
    pub service: String,
    /// The points it accepts faults at.
    pub points: Vec<String>,
    /// The faults set now, sorted by point.
    pub faults: Vec<ActiveFault>,
    /// Whether firing faults add a `fault.injected` span event.
    pub visible: bool,
}

/// The body of `PUT /admin/faults/_visible` and the answer of both its
/// `GET` and `PUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visibility {
    /// Whether firing faults add a `fault.injected` span event.
    pub visible: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fault::{FaultKind, FaultPoint};

    #[test]
    fn a_report_round_trips() {
        let report = FaultsReport {
            service: "payment".into(),
            points: FaultPoint::of(crate::service::ServiceName::Payment)
                .map(String::from)
                .collect(),
            faults: vec![ActiveFault {
                spec: FaultSpec::new(FaultPoint::PaymentSave, FaultKind::SlowQuery { ms: 900 })
                    .with_duration(std::time::Duration::from_secs(300)),
                set_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                expires_at: DateTime::from_timestamp(1_700_000_300, 0),
                active: true,
            }],
            visible: false,
        };
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(
            value["faults"][0],
            json!({
                "point": "payment.save", "kind": "slow_query", "ms": 900,
                "probability": 1.0, "for": "5m",
                "set_at": "2023-11-14T22:13:20Z", "expires_at": "2023-11-14T22:18:20Z",
                "active": true
            })
        );
        assert_eq!(value["points"][2], "payment.save");
        let back: FaultsReport = serde_json::from_value(value).unwrap();
        assert_eq!(back, report);

        let visibility: Visibility = serde_json::from_str(r#"{"visible":true}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&visibility).unwrap(),
            r#"{"visible":true}"#
        );
    }
}
