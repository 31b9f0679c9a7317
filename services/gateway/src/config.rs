//! gateway configuration from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use tracelab_contract::service::ServiceName;
use tracelab_contract::timeouts;
use tracelab_service::W3cHarness;
use tracelab_telemetry::config::{ConfigError, parse_or};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub auth_url: String,
    pub search_url: String,
    pub payment_url: String,
    /// `TRACELAB_UPSTREAM_TIMEOUT_MS`: how long auth and search may take.
    pub upstream_timeout: Duration,
    /// `TRACELAB_PAYMENT_TIMEOUT_MS`: how long payment may take, longer
    /// than payment's own deadline so its answer always arrives.
    pub payment_timeout: Duration,
    /// `TRACELAB_W3C_HARNESS`: the W3C test harness endpoint, off unless set.
    pub w3c_harness: W3cHarness,
    /// `TRACELAB_ADMIN_LISTEN`, `TRACELAB_ADMIN_TOKEN` (or `_FILE`): the
    /// fault API's own listener and token.
    pub admin: tracelab_service::config::Admin,
}

fn url(
    name: &'static str,
    raw: Option<String>,
    default: ServiceName,
) -> Result<String, ConfigError> {
    let value = raw
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.default_url());
    let parsed = reqwest::Url::parse(&value)
        .map_err(|e| ConfigError::new(name, value.clone(), e.to_string()))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(ConfigError::new(name, value, "expected an http:// URL"));
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// A positive number of milliseconds from `raw` (the value of `name`).
fn millis(name: &'static str, raw: Option<String>, default: u64) -> Result<u64, ConfigError> {
    let ms = parse_or(name, raw, default)?;
    if ms == 0 {
        return Err(ConfigError::new(name, "0", "must be positive"));
    }
    Ok(ms)
}

impl Config {
    /// Reads `TRACELAB_LISTEN`, `TRACELAB_AUTH_URL`, `TRACELAB_SEARCH_URL`,
    /// `TRACELAB_PAYMENT_URL`, `TRACELAB_UPSTREAM_TIMEOUT_MS`,
    /// `TRACELAB_PAYMENT_TIMEOUT_MS`, and the common `TRACELAB_W3C_HARNESS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let listen = tracelab_service::config::listen(ServiceName::Gateway.default_port())?;
        let auth_url = url(
            "TRACELAB_AUTH_URL",
            std::env::var("TRACELAB_AUTH_URL").ok(),
            ServiceName::Auth,
        )?;
        let search_url = url(
            "TRACELAB_SEARCH_URL",
            std::env::var("TRACELAB_SEARCH_URL").ok(),
            ServiceName::Search,
        )?;
        let payment_url = url(
            "TRACELAB_PAYMENT_URL",
            std::env::var("TRACELAB_PAYMENT_URL").ok(),
            ServiceName::Payment,
        )?;
        let timeout_ms = millis(
            "TRACELAB_UPSTREAM_TIMEOUT_MS",
            std::env::var("TRACELAB_UPSTREAM_TIMEOUT_MS").ok(),
            timeouts::UPSTREAM_TIMEOUT_MS,
        )?;
        let payment_ms = millis(
            "TRACELAB_PAYMENT_TIMEOUT_MS",
            std::env::var("TRACELAB_PAYMENT_TIMEOUT_MS").ok(),
            timeouts::GATEWAY_PAYMENT_TIMEOUT_MS,
        )?;
        Ok(Self {
            listen,
            auth_url,
            search_url,
            payment_url,
            upstream_timeout: Duration::from_millis(timeout_ms),
            payment_timeout: Duration::from_millis(payment_ms),
            w3c_harness: tracelab_service::config::w3c_harness()?,
            admin: tracelab_service::config::admin(ServiceName::Gateway)?,
        })
    }
}

impl Config {
    /// The gateway's own request timeout: a checkout waits for auth, then
    /// payment, and must pass on payment's answer before giving up itself.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(timeouts::gateway_request_timeout_ms(
            self.upstream_timeout.as_millis() as u64,
            self.payment_timeout.as_millis() as u64,
        ))
    }
}
