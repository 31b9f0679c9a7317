//! The six services of the lab: their names (the binary name, the crate
//! name and `service.name` in every span), their default ports and the
//! localhost URLs the others reach them at when nothing is configured.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::defaults::HOST;

/// One of the lab's services.
///
/// Not to be confused with `tracelab_service::Service`, the runtime that
/// starts a service binary: this is only its name and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    /// The only public API and the root of every trace.
    Gateway,
    /// Logs demo users in and verifies their tokens.
    Auth,
    /// Product search over Postgres: high volume, cheap.
    Search,
    /// processPayment, the outbox and its relay to RabbitMQ.
    Payment,
    /// The Stripe-like mock of an external payment API.
    PaymentProvider,
    /// Consumes `payment.completed` and records the email it would send.
    Notification,
}

impl ServiceName {
    /// Every service, in the order the docs list them (not a start order:
    /// a supervisor starts [`ServiceName::calls`] before their callers).
    pub const ALL: [ServiceName; 6] = [
        ServiceName::Gateway,
        ServiceName::Auth,
        ServiceName::Search,
        ServiceName::Payment,
        ServiceName::PaymentProvider,
        ServiceName::Notification,
    ];

    /// The name: binary, crate and `service.name` (`payment-provider`).
    pub const fn name(self) -> &'static str {
        match self {
            ServiceName::Gateway => "gateway",
            ServiceName::Auth => "auth",
            ServiceName::Search => "search",
            ServiceName::Payment => "payment",
            ServiceName::PaymentProvider => "payment-provider",
            ServiceName::Notification => "notification",
        }
    }

    /// The prefix of this service's fault points: the name, except
    /// `provider` for payment-provider (`provider.charge`).
    pub const fn point_prefix(self) -> &'static str {
        match self {
            ServiceName::PaymentProvider => "provider",
            other => other.name(),
        }
    }

    /// The port the service listens on when `TRACELAB_LISTEN` is unset.
    pub const fn default_port(self) -> u16 {
        match self {
            ServiceName::Gateway => 8080,
            ServiceName::Auth => 8081,
            ServiceName::Search => 8082,
            ServiceName::Payment => 8083,
            ServiceName::Notification => 8084,
            ServiceName::PaymentProvider => 8090,
        }
    }

    /// The port of the service's admin (fault) API when
    /// `TRACELAB_ADMIN_LISTEN` is unset: its own listener, apart from the
    /// public one, so the admin API is never on a port a learner publishes.
    /// `tracelab up` gives every admin listener a free port instead and
    /// records where they are; compose uses these on its internal network.
    pub const fn default_admin_port(self) -> u16 {
        match self {
            ServiceName::Gateway => 8180,
            ServiceName::Auth => 8181,
            ServiceName::Search => 8182,
            ServiceName::Payment => 8183,
            ServiceName::Notification => 8184,
            ServiceName::PaymentProvider => 8190,
        }
    }

    /// The base URL its callers use by default, `http://127.0.0.1:<port>`
    /// (no trailing slash).
    pub fn default_url(self) -> String {
        format!("http://{HOST}:{}", self.default_port())
    }

    /// The services this one calls over HTTP, so they must be up first.
    /// RabbitMQ stands between payment and notification: neither waits
    /// for the other.
    pub const fn calls(self) -> &'static [ServiceName] {
        match self {
            ServiceName::Gateway => &[ServiceName::Auth, ServiceName::Search, ServiceName::Payment],
            ServiceName::Payment => &[ServiceName::PaymentProvider],
            ServiceName::Auth
            | ServiceName::Search
            | ServiceName::PaymentProvider
            | ServiceName::Notification => &[],
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the six services.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service {name:?} ({})", match suggestion {
    Some(s) => format!("did you mean {s}?"),
    None => format!("one of: {}", known_names()),
})]
pub struct UnknownService {
    /// What was given.
    pub name: String,
    /// The service it is closest to, when it looks like a typo of one.
    pub suggestion: Option<&'static str>,
}

impl UnknownService {
    /// The error for `name`, with the closest service name as a suggestion
    /// when at most two edits (or a third of the name) away.
    pub fn new(name: &str) -> UnknownService {
        let wanted = name.trim().to_ascii_lowercase();
        let suggestion = ServiceName::ALL
            .into_iter()
            .flat_map(|s| [s.name(), s.point_prefix()].map(move |n| (s.name(), n)))
            .map(|(service, alias)| (edit_distance(&wanted, alias), service))
            .min()
            .filter(|(d, _)| *d > 0 && *d <= (wanted.chars().count() / 3).max(2))
            .map(|(_, service)| service);
        UnknownService {
            name: name.to_string(),
            suggestion,
        }
    }
}

/// Levenshtein distance of two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn known_names() -> String {
    ServiceName::ALL.map(ServiceName::name).join(", ")
}

impl FromStr for ServiceName {
    type Err = UnknownService;

    /// Reads a service name as a person may type it: case and surrounding
    /// blanks do not matter, and payment-provider also answers to its point
    /// prefix `provider` and to `payment_provider`.
    ///
    /// Fails with [`UnknownService`], which lists the valid names.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        if matches!(wanted.as_str(), "provider" | "payment_provider") {
            return Ok(ServiceName::PaymentProvider);
        }
        ServiceName::ALL
            .into_iter()
            .find(|s| s.name() == wanted)
            .ok_or_else(|| UnknownService::new(text))
    }
}

impl Serialize for ServiceName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_ports_are_distinct() {
        let mut ports = Vec::new();
        for service in ServiceName::ALL {
            assert_eq!(service.name().parse(), Ok(service));
            assert_eq!(service.to_string(), service.name());
            ports.push(service.default_port());
            ports.push(service.default_admin_port());
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 2 * ServiceName::ALL.len(), "two ports each");
    }

    #[test]
    fn people_may_type_loosely() {
        assert_eq!(" Payment ".parse(), Ok(ServiceName::Payment));
        assert_eq!("provider".parse(), Ok(ServiceName::PaymentProvider));
        assert_eq!("payment_provider".parse(), Ok(ServiceName::PaymentProvider));
        let err = "paymnet".parse::<ServiceName>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown service \"paymnet\" (did you mean payment?)"
        );
        let err = "provder".parse::<ServiceName>().unwrap_err();
        assert_eq!(err.suggestion, Some("payment-provider"));
        let err = "database".parse::<ServiceName>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown service \"database\" (one of: gateway, auth, search, payment, payment-provider, notification)"
        );
        assert_eq!(
            "gatway".parse::<ServiceName>().unwrap_err().suggestion,
            Some("gateway")
        );
        assert_eq!("x".parse::<ServiceName>().unwrap_err().suggestion, None);
    }

    #[test]
    fn urls_and_calls() {
        assert_eq!(ServiceName::Auth.default_url(), "http://127.0.0.1:8081");
        assert_eq!(
            ServiceName::PaymentProvider.default_url(),
            "http://127.0.0.1:8090"
        );
        // Nothing calls the gateway, and nothing calls itself.
        for service in ServiceName::ALL {
            assert!(!service.calls().contains(&ServiceName::Gateway));
            assert!(!service.calls().contains(&service));
        }
    }

    #[test]
    fn serde_uses_the_name() {
        let json = serde_json::to_string(&ServiceName::PaymentProvider).unwrap();
        assert_eq!(json, "\"payment-provider\"");
        let back: ServiceName = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ServiceName::PaymentProvider);
        let err = serde_json::from_str::<ServiceName>("\"billing\"").unwrap_err();
        assert!(err.to_string().contains("one of: gateway"), "{err}");
    }
}
