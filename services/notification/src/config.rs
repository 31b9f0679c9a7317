//! notification configuration from the environment.

use std::net::SocketAddr;

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
    pub queue: String,
    pub prefetch: u16,
    /// `TRACELAB_W3C_HARNESS`: the W3C test harness endpoint, off unless set.
    pub w3c_harness: W3cHarness,
    /// `TRACELAB_ADMIN_LISTEN`, `TRACELAB_ADMIN_TOKEN` (or `_FILE`): the
    /// fault API's own listener and token.
    pub admin: tracelab_service::config::Admin,
}

impl Config {
    /// Reads `TRACELAB_PREFETCH`, and the common `TRACELAB_LISTEN`,
    /// `TRACELAB_ADMIN_LISTEN`, `TRACELAB_ADMIN_TOKEN` (or `_FILE`),
    /// `DATABASE_URL`, `TRACELAB_DB_POOL_SIZE`, `AMQP_URL`, `TRACELAB_EXCHANGE`,
    /// `TRACELAB_QUEUE` (both named after the lab's database unless set),
    /// `TRACELAB_W3C_HARNESS` (through `tracelab_service::config`).
    pub fn from_env() -> Result<Self, ConfigError> {
        let prefetch = parse_or(
            "TRACELAB_PREFETCH",
            std::env::var("TRACELAB_PREFETCH").ok(),
            10_u16,
        )?;
        if prefetch == 0 {
            return Err(ConfigError::new(
                "TRACELAB_PREFETCH",
                "0",
                "must be at least 1",
            ));
        }
        let database_url = common::database_url();
        Ok(Self {
            w3c_harness: common::w3c_harness()?,
            listen: common::listen(ServiceName::Notification.default_port())?,
            admin: common::admin(ServiceName::Notification)?,
            db_pool_size: common::db_pool_size(5)?,
            amqp_url: common::amqp_url(),
            exchange: common::exchange(&database_url),
            queue: common::queue(&database_url),
            database_url,
            prefetch,
        })
    }
}
