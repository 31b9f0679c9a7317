//! payment-provider configuration from the environment.

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use tracelab_contract::service::ServiceName;
use tracelab_service::W3cHarness;
use tracelab_telemetry::config::ConfigError;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Simulated processing time per charge, in milliseconds.
    pub latency_ms: RangeInclusive<u64>,
    /// `TRACELAB_W3C_HARNESS`: the W3C test harness endpoint, off unless set.
    pub w3c_harness: W3cHarness,
    /// `TRACELAB_ADMIN_LISTEN`, `TRACELAB_ADMIN_TOKEN` (or `_FILE`): the
    /// fault API's own listener and token.
    pub admin: tracelab_service::config::Admin,
}

impl Config {
    /// Reads `TRACELAB_LISTEN`, `TRACELAB_PROVIDER_LATENCY_MS` (`"100-200"` or
    /// `"150"`) and `TRACELAB_W3C_HARNESS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let listen = tracelab_service::config::listen(ServiceName::PaymentProvider.default_port())?;
        let raw = std::env::var("TRACELAB_PROVIDER_LATENCY_MS")
            .ok()
            .unwrap_or_else(|| "100-200".into());
        let latency_ms = parse_range(&raw).ok_or_else(|| {
            ConfigError::new(
                "TRACELAB_PROVIDER_LATENCY_MS",
                raw.clone(),
                "expected MIN-MAX or N in milliseconds, MIN <= MAX",
            )
        })?;
        Ok(Self {
            listen,
            latency_ms,
            w3c_harness: tracelab_service::config::w3c_harness()?,
            admin: tracelab_service::config::admin(ServiceName::PaymentProvider)?,
        })
    }
}

/// `"100-200"` or `"150"` as an inclusive range.
pub fn parse_range(raw: &str) -> Option<RangeInclusive<u64>> {
    let raw = raw.trim();
    let (lo, hi) = match raw.split_once('-') {
        Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
        None => {
            let v = raw.parse().ok()?;
            (v, v)
        }
    };
    (lo <= hi).then_some(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn latency_ranges() {
        assert_eq!(parse_range("100-200"), Some(100..=200));
        assert_eq!(parse_range(" 5 "), Some(5..=5));
        assert_eq!(parse_range("200-100"), None);
        assert_eq!(parse_range("fast"), None);
    }
}
