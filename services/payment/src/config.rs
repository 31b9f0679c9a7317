//! payment configuration from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use tracelab_contract::service::ServiceName;
use tracelab_service::W3cHarness;
use tracelab_service::config as common;
use tracelab_telemetry::config::{ConfigError, parse_or};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub db_pool_size: u32,
    pub amqp_url: String,
    pub exchange: String,
    pub provider_url: String,
    pub provider_timeout: Duration,
    /// `TRACELAB_W3C_HARNESS`: the W3C test harness endpoint, off unless set.
    pub w3c_harness: W3cHarness,
    /// `TRACELAB_ADMIN_LISTEN`, `TRACELAB_ADMIN_TOKEN` (or `_FILE`): the
    /// fault API's own listener and token.
    pub admin: tracelab_service::config::Admin,
}

impl Config {
    /// Reads `TRACELAB_PROVIDER_URL`, `TRACELAB_PROVIDER_TIMEOUT_MS`, and the
    /// common `TRACELAB_LISTEN`, `TRACELAB_ADMIN_LISTEN`, `TRACELAB_ADMIN_TOKEN`
    /// (or `_FILE`), `DATABASE_URL`, `TRACELAB_DB_POOL_SIZE`, `AMQP_URL`,
    /// `TRACELAB_EXCHANGE` (named after the lab's database unless set),
    /// `TRACELAB_W3C_HARNESS` (through `tracelab_service::config`).
    pub fn from_env() -> Result<Self, ConfigError> {
        let provider_url = std::env::var("TRACELAB_PROVIDER_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ServiceName::PaymentProvider.default_url());
        reqwest::Url::parse(&provider_url).map_err(|e| {
            ConfigError::new("TRACELAB_PROVIDER_URL", provider_url.clone(), e.to_string())
        })?;
        let timeout_ms = parse_or(
            "TRACELAB_PROVIDER_TIMEOUT_MS",
            std::env::var("TRACELAB_PROVIDER_TIMEOUT_MS").ok(),
            3000_u64,
        )?;
        let database_url = common::database_url();
        Ok(Self {
            w3c_harness: common::w3c_harness()?,
            listen: common::listen(ServiceName::Payment.default_port())?,
            admin: common::admin(ServiceName::Payment)?,
            db_pool_size: common::db_pool_size(10)?,
            amqp_url: common::amqp_url(),
            exchange: common::exchange(&database_url),
            database_url,
            provider_url: provider_url.trim_end_matches('/').to_string(),
            provider_timeout: Duration::from_millis(timeout_ms),
        })
    }
}
