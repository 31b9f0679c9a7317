//! The catalogue of fault injection points: every place a fault can act,
//! the service that carries it, where it acts and which kinds act there.
//!
//! Services build their registries from it and name points at injection
//! sites by variant (`faults.inject(FaultPoint::PaymentSave)`), so a typo is
//! a compile error instead of a fault that silently never fires. On the wire
//! (admin API, scenario files, the CLI) a point is its name, `payment.save`.
//!
//! docs/architecture.md's table is [`markdown_table`]'s output; a test in
//! this crate fails when the two differ.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::spec::{AppliedBy, FaultKind};
use crate::service::ServiceName;

/// The kinds the registry applies itself at any point a request passes
/// (`latency`, `error`, `hang`, `cpu_burn`, `outage`).
pub const GENERIC_KINDS: &[&str] = &["latency", "error", "hang", "cpu_burn", "outage"];

/// What acts at a `<service>.telemetry` point of every service but the
/// gateway, which also takes `sampling_miss` (only the root decides).
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

/// Declares [`FaultPoint`] and its table from one list, so a point cannot
/// be added to the enum and forgotten in [`FaultPoint::ALL`] (or the other
/// way round).
macro_rules! catalogue {
    ($(
        $variant:ident = $name:literal, $service:ident, $acts:literal, $kinds:expr;
    )*) => {
        /// A fault injection point of the catalogue. Serialized as its
        /// [`name`](FaultPoint::name).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FaultPoint {
            $(
                #[doc = concat!("`", $name, "`: ", $acts, ".")]
                $variant,
            )*
        }

        impl FaultPoint {
            /// Every point, grouped by service in [`ServiceName::ALL`] order.
            pub const ALL: &'static [FaultPoint] = &[$(FaultPoint::$variant),*];

            /// The name on the wire, e.g. `payment.save`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(FaultPoint::$variant => $name,)*
                }
            }

            /// The service that carries this point.
            pub const fn service(self) -> ServiceName {
                match self {
                    $(FaultPoint::$variant => ServiceName::$service,)*
                }
            }

            /// Where it acts, in a line (names the span it shows in).
            pub const fn acts(self) -> &'static str {
                match self {
                    $(FaultPoint::$variant => $acts,)*
                }
            }

            /// The kinds that act here besides the generic ones: handed to
            /// the injection site's code, or (at a telemetry point) followed
            /// by the telemetry setup.
            pub const fn kinds(self) -> &'static [&'static str] {
                match self {
                    $(FaultPoint::$variant => $kinds,)*
                }
            }
        }
    };
}

catalogue! {
    GatewayAuth = "gateway.auth", Gateway,
        "the calls to auth (POST /login, POST /verify)", &["propagation_break"];
    GatewayPayment = "gateway.payment", Gateway,
        "the call to payment POST /payments", &["retry_storm", "propagation_break"];
    GatewaySearch = "gateway.search", Gateway,
        "the call to search GET /products", &["propagation_break"];
    GatewayTelemetry = "gateway.telemetry", Gateway,
        "the gateway's own tracing (head sampling decides here)", GATEWAY_TELEMETRY_KINDS;
    AuthVerify = "auth.verify", Auth,
        "token verification (POST /verify)", &[];
    AuthTelemetry = "auth.telemetry", Auth,
        "auth's own tracing", TELEMETRY_KINDS;
    SearchQuery = "search.query", Search,
        "the products query (SELECT products)", &["slow_query"];
    SearchTelemetry = "search.telemetry", Search,
        "search's own tracing", TELEMETRY_KINDS;
    PaymentValidateOrder = "payment.validate_order", Payment,
        "validateOrder", &["slow_query"];
    PaymentProviderCall = "payment.provider_call", Payment,
        "callExternalPaymentAPI", &[];
    PaymentSave = "payment.save", Payment,
        "savePaymentResult", &["slow_query", "lock_contention", "pool_exhaustion"];
    PaymentRelayPublish = "payment.relay_publish", Payment,
        "the outbox relay's publish (publish payment.completed)", &["propagation_break"];
    PaymentTelemetry = "payment.telemetry", Payment,
        "payment's own tracing", TELEMETRY_KINDS;
    ProviderCharge = "provider.charge", PaymentProvider,
        "POST /v1/charges, its lookup GET /v1/charges?idempotency_key= and POST /v1/charges/cancel", &["rate_limit", "outage"];
    ProviderTelemetry = "provider.telemetry", PaymentProvider,
        "payment-provider's own tracing", TELEMETRY_KINDS;
    NotificationConsume = "notification.consume", Notification,
        "before a delivery is processed (process payment.completed)",
        &["consumer_stall", "dead_letter", "propagation_break"];
    NotificationSendEmail = "notification.send_email", Notification,
        "sendEmail", &["slow_query"];
    NotificationTelemetry = "notification.telemetry", Notification,
        "notification's own tracing", TELEMETRY_KINDS;
}

impl FaultPoint {
    /// The points of `service`, in catalogue order.
    pub fn of(service: ServiceName) -> impl Iterator<Item = FaultPoint> {
        FaultPoint::ALL
            .iter()
            .copied()
            .filter(move |p| p.service() == service)
    }

    /// The `<service>.telemetry` point of `service`: where the telemetry
    /// kinds are set, followed by the service's tracing setup rather than
    /// by an injection site.
    pub const fn telemetry_of(service: ServiceName) -> FaultPoint {
        match service {
            ServiceName::Gateway => FaultPoint::GatewayTelemetry,
            ServiceName::Auth => FaultPoint::AuthTelemetry,
            ServiceName::Search => FaultPoint::SearchTelemetry,
            ServiceName::Payment => FaultPoint::PaymentTelemetry,
            ServiceName::PaymentProvider => FaultPoint::ProviderTelemetry,
            ServiceName::Notification => FaultPoint::NotificationTelemetry,
        }
    }

    /// Whether this is a `<service>.telemetry` point, where no request
    /// passes and only the telemetry kinds act.
    pub fn is_telemetry(self) -> bool {
        self == FaultPoint::telemetry_of(self.service())
    }

    /// Whether `kind` has an effect here: a generic kind at a point
    /// requests pass, or one of [`FaultPoint::kinds`].
    pub fn accepts(self, kind: &FaultKind) -> bool {
        let listed = self.kinds().contains(&kind.name());
        if self.is_telemetry() {
            listed
        } else {
            listed || kind.applied_by() == AppliedBy::Generic
        }
    }

    /// Every kind with an effect here, generic ones first.
    pub fn kind_names(self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = if self.is_telemetry() {
            Vec::new()
        } else {
            GENERIC_KINDS.to_vec()
        };
        for kind in self.kinds() {
            if !out.contains(kind) {
                out.push(kind);
            }
        }
        out
    }
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<FaultPoint> for String {
    fn from(point: FaultPoint) -> String {
        point.name().to_string()
    }
}

/// A point name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault point {name:?} (valid: {})", valid_names())]
pub struct UnknownPoint {
    /// What was given.
    pub name: String,
}

fn valid_names() -> String {
    FaultPoint::ALL
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for FaultPoint {
    type Err = UnknownPoint;

    /// Reads a point by its exact name (`payment.save`).
    ///
    /// Fails with [`UnknownPoint`], whose message lists every valid name.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        FaultPoint::ALL
            .iter()
            .copied()
            .find(|p| p.name() == name)
            .ok_or_else(|| UnknownPoint {
                name: name.to_string(),
            })
    }
}

impl Serialize for FaultPoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for FaultPoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The catalogue as docs/architecture.md shows it: a sentence on the
/// generic kinds, then one table row per point.
pub fn markdown_table() -> String {
    let code = |names: &[&str]| names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>();
    let mut out = format!(
        "Generic kinds ({}) act at every point a request passes (\"generic\" \
         below); at a `<service>.telemetry` point only the kinds listed act.\n\n",
        code(GENERIC_KINDS).join(", ")
    );
    out.push_str("| service | point | where it acts | kinds that act there |\n");
    out.push_str("|---|---|---|---|\n");
    for point in FaultPoint::ALL {
        let mut kinds = code(point.kinds());
        if !point.is_telemetry() {
            kinds.insert(0, "generic".to_string());
        }
        out.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            point.service(),
            point.name(),
            point.acts(),
            kinds.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_read_back() {
        for (i, point) in FaultPoint::ALL.iter().enumerate() {
            assert_eq!(point.name().parse(), Ok(*point));
            assert_eq!(point.to_string(), point.name());
            let (prefix, rest) = point.name().split_once('.').expect("service.where");
            assert_eq!(prefix, point.service().point_prefix(), "{point}");
            assert!(
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{point}"
            );
            assert!(
                !FaultPoint::ALL[..i].contains(point),
                "{point} listed twice"
            );
        }
        let mut names: Vec<&str> = FaultPoint::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FaultPoint::ALL.len());
    }

    #[test]
    fn every_service_has_its_telemetry_point_and_a_request_point() {
        for service in ServiceName::ALL {
            let telemetry = FaultPoint::telemetry_of(service);
            assert_eq!(telemetry.service(), service);
            assert_eq!(
                telemetry.name(),
                format!("{}.telemetry", service.point_prefix())
            );
            let points: Vec<FaultPoint> = FaultPoint::of(service).collect();
            assert_eq!(
                points.iter().filter(|p| p.is_telemetry()).count(),
                1,
                "{service}: {points:?}"
            );
            assert!(points.iter().any(|p| !p.is_telemetry()), "{service}");
        }
        // Grouped by service, in ServiceName::ALL order.
        let order: Vec<ServiceName> = FaultPoint::ALL.iter().map(|p| p.service()).collect();
        let mut sorted = order.clone();
        sorted.sort_by_key(|s| ServiceName::ALL.iter().position(|x| x == s));
        assert_eq!(order, sorted);
    }

    fn applied_by(name: &str) -> AppliedBy {
        crate::fault::spec::example_of(name).applied_by()
    }

    #[test]
    fn listed_kinds_exist_and_act_where_listed() {
        for name in FaultKind::NAMES {
            assert_eq!(
                GENERIC_KINDS.contains(name),
                applied_by(name) == AppliedBy::Generic,
                "{name}"
            );
        }
        for point in FaultPoint::ALL {
            for kind in point.kinds() {
                assert!(FaultKind::NAMES.contains(kind), "{point}: {kind}");
                let by = applied_by(kind);
                if point.is_telemetry() {
                    assert_eq!(by, AppliedBy::Telemetry, "{point}: {kind}");
                } else {
                    assert_ne!(by, AppliedBy::Telemetry, "{point}: {kind}");
                }
            }
        }
        // Every telemetry kind acts at some point.
        for name in FaultKind::NAMES {
            if applied_by(name) == AppliedBy::Telemetry {
                assert!(
                    FaultPoint::ALL.iter().any(|p| p.kinds().contains(name)),
                    "{name} acts nowhere"
                );
            }
        }
    }

    #[test]
    fn accepts_generic_kinds_only_where_requests_pass() {
        let latency = FaultKind::Latency {
            ms: 5,
            jitter_ms: 0,
        };
        let slow_query = FaultKind::SlowQuery { ms: 5 };
        assert!(FaultPoint::PaymentSave.accepts(&latency));
        assert!(FaultPoint::PaymentSave.accepts(&slow_query));
        assert!(!FaultPoint::PaymentProviderCall.accepts(&slow_query));
        assert!(!FaultPoint::PaymentTelemetry.accepts(&latency));
        assert!(FaultPoint::PaymentTelemetry.accepts(&FaultKind::DropSpans));
        assert!(
            !FaultPoint::PaymentTelemetry.accepts(&FaultKind::SamplingMiss { rate: 0.1 }),
            "only the root decides sampling"
        );
        assert!(FaultPoint::GatewayTelemetry.accepts(&FaultKind::SamplingMiss { rate: 0.1 }));
        assert_eq!(
            FaultPoint::PaymentSave.kind_names(),
            [
                "latency",
                "error",
                "hang",
                "cpu_burn",
                "outage",
                "slow_query",
                "lock_contention",
                "pool_exhaustion"
            ]
        );
        assert_eq!(
            FaultPoint::ProviderCharge.kind_names(),
            [
                "latency",
                "error",
                "hang",
                "cpu_burn",
                "outage",
                "rate_limit"
            ],
            "outage is generic and listed: once"
        );
        assert_eq!(
            FaultPoint::AuthTelemetry.kind_names(),
            [
                "slow_export",
                "drop_spans",
                "clock_skew",
                "high_cardinality"
            ]
        );
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let err = "payment.sav".parse::<FaultPoint>().unwrap_err();
        assert_eq!(err.name, "payment.sav");
        let text = err.to_string();
        assert!(
            text.starts_with("unknown fault point \"payment.sav\" (valid: gateway.auth, "),
            "{text}"
        );
        for point in FaultPoint::ALL {
            assert!(text.contains(point.name()), "{text}");
        }
        // Names are exact: the wire format has one spelling.
        assert!("Payment.Save".parse::<FaultPoint>().is_err());
        assert!(" payment.save".parse::<FaultPoint>().is_err());
    }

    #[test]
    fn serde_uses_the_name() {
        let json = serde_json::to_string(&FaultPoint::NotificationSendEmail).unwrap();
        assert_eq!(json, "\"notification.send_email\"");
        let back: FaultPoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, FaultPoint::NotificationSendEmail);
        let err = serde_json::from_str::<FaultPoint>("\"payment.db.save\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown fault point \"payment.db.save\""),
            "{err}"
        );
        assert_eq!(String::from(FaultPoint::PaymentSave), "payment.save");
    }

    #[test]
    fn the_table_has_a_row_per_point() {
        let table = markdown_table();
        assert!(
            table.contains(
                "| auth | `auth.telemetry` | auth's own tracing | `slow_export`, `drop_spans`, `clock_skew`, `high_cardinality` |"
            ),
            "no generic kinds at a telemetry point: {table}"
        );
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), FaultPoint::ALL.len() + 1, "{table}");
        assert!(
            table.contains(
                "| payment | `payment.save` | savePaymentResult | generic, `slow_query`, `lock_contention`, `pool_exhaustion` |"
            ),
            "{table}"
        );
        assert!(
            table
                .contains("| auth | `auth.verify` | token verification (POST /verify) | generic |"),
            "{table}"
        );
    }
}
