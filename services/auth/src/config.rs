//! auth configuration from the environment.

use std::net::SocketAddr;

use tracelab_contract::service::ServiceName;
use tracelab_service::W3cHarness;
use tracelab_telemetry::config::{ConfigError, parse_or};

/// The development secret used when none is configured (the service warns).
pub const DEV_SECRET: &str = "tracelab-dev-secret-change-me";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub token_secret: String,
    pub token_ttl_secs: i64,
    /// `TRACELAB_W3C_HARNESS`: the W3C test harness endpoint, off unless set.
    pub w3c_harness: W3cHarness,
}

impl Config {
    /// Reads `TRACELAB_LISTEN`, `TRACELAB_TOKEN_SECRET`, `TRACELAB_TOKEN_TTL_SECS`,
    /// `TRACELAB_W3C_HARNESS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let listen = tracelab_service::config::listen(ServiceName::Auth.default_port())?;
        let token_secret = std::env::var("TRACELAB_TOKEN_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEV_SECRET.into());
        if token_secret.len() < 16 {
            return Err(ConfigError::new(
                "TRACELAB_TOKEN_SECRET",
                "<hidden>",
                "must be at least 16 characters",
            ));
        }
        let token_ttl_secs = parse_or(
            "TRACELAB_TOKEN_TTL_SECS",
            std::env::var("TRACELAB_TOKEN_TTL_SECS").ok(),
            3600_i64,
        )?;
        if token_ttl_secs <= 0 {
            return Err(ConfigError::new(
                "TRACELAB_TOKEN_TTL_SECS",
                token_ttl_secs.to_string(),
                "must be positive",
            ));
        }
        Ok(Self {
            listen,
            token_secret,
            token_ttl_secs,
            w3c_harness: tracelab_service::config::w3c_harness()?,
        })
    }
}
