//! payment configuration from the environment.

use std::net::SocketAddr;
use std::time::Duration;

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
}

impl Config {
    /// Reads `TRACELAB_LISTEN`, `DATABASE_URL`, `TRACELAB_DB_POOL_SIZE`,
    /// `AMQP_URL`, `TRACELAB_EXCHANGE`, `TRACELAB_PROVIDER_URL`,
    /// `TRACELAB_PROVIDER_TIMEOUT_MS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let listen = parse_or(
            "TRACELAB_LISTEN",
            std::env::var("TRACELAB_LISTEN").ok(),
            SocketAddr::from(([127, 0, 0, 1], 8083)),
        )?;
        let database_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/tracelab".into());
        let db_pool_size = parse_or(
            "TRACELAB_DB_POOL_SIZE",
            std::env::var("TRACELAB_DB_POOL_SIZE").ok(),
            10_u32,
        )?;
        if db_pool_size == 0 {
            return Err(ConfigError::new(
                "TRACELAB_DB_POOL_SIZE",
                "0",
                "must be at least 1",
            ));
        }
        let amqp_url = std::env::var("AMQP_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let exchange = std::env::var("TRACELAB_EXCHANGE")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "tracelab.events".into());
        let provider_url = std::env::var("TRACELAB_PROVIDER_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "http://127.0.0.1:8090".into());
        reqwest::Url::parse(&provider_url).map_err(|e| {
            ConfigError::new("TRACELAB_PROVIDER_URL", provider_url.clone(), e.to_string())
        })?;
        let timeout_ms = parse_or(
            "TRACELAB_PROVIDER_TIMEOUT_MS",
            std::env::var("TRACELAB_PROVIDER_TIMEOUT_MS").ok(),
            3000_u64,
        )?;
        Ok(Self {
            listen,
            database_url,
            db_pool_size,
            amqp_url,
            exchange,
            provider_url: provider_url.trim_end_matches('/').to_string(),
            provider_timeout: Duration::from_millis(timeout_ms),
        })
    }
}
