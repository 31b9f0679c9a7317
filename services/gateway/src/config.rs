//! gateway configuration from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use tracelab_contract::service::ServiceName;
use tracelab_service::W3cHarness;
use tracelab_telemetry::config::{ConfigError, parse_or};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub auth_url: String,
    pub search_url: String,
    pub payment_url: String,
    pub upstream_timeout: Duration,
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

impl Config {
    /// Reads `TRACELAB_LISTEN`, `TRACELAB_AUTH_URL`, `TRACELAB_SEARCH_URL`,
    /// `TRACELAB_PAYMENT_URL`, `TRACELAB_UPSTREAM_TIMEOUT_MS`, and the common
    /// `TRACELAB_W3C_HARNESS`.
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
        let timeout_ms = parse_or(
            "TRACELAB_UPSTREAM_TIMEOUT_MS",
            std::env::var("TRACELAB_UPSTREAM_TIMEOUT_MS").ok(),
            5000_u64,
        )?;
        if timeout_ms == 0 {
            return Err(ConfigError::new(
                "TRACELAB_UPSTREAM_TIMEOUT_MS",
                "0",
                "must be positive",
            ));
        }
        Ok(Self {
            listen,
            auth_url,
            search_url,
            payment_url,
            upstream_timeout: Duration::from_millis(timeout_ms),
            w3c_harness: tracelab_service::config::w3c_harness()?,
            admin: tracelab_service::config::admin(ServiceName::Gateway)?,
        })
    }
}
