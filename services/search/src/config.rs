//! search configuration from the environment.

use std::net::SocketAddr;

use tracelab_contract::service::ServiceName;
use tracelab_service::W3cHarness;
use tracelab_service::config as common;
use tracelab_telemetry::config::ConfigError;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub db_pool_size: u32,
    /// `TRACELAB_W3C_HARNESS`: the W3C test harness endpoint, off unless set.
    pub w3c_harness: W3cHarness,
    /// `TRACELAB_ADMIN_LISTEN`, `TRACELAB_ADMIN_TOKEN` (or `_FILE`): the
    /// fault API's own listener and token.
    pub admin: tracelab_service::config::Admin,
}

impl Config {
    /// Reads `TRACELAB_LISTEN`, `DATABASE_URL`, `TRACELAB_DB_POOL_SIZE`
    /// `TRACELAB_W3C_HARNESS` (through `tracelab_service::config`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            w3c_harness: common::w3c_harness()?,
            listen: common::listen(ServiceName::Search.default_port())?,
            database_url: common::database_url(),
            db_pool_size: common::db_pool_size(5)?,
            admin: common::admin(ServiceName::Search)?,
        })
    }
}
