//! search configuration from the environment.

use std::net::SocketAddr;

use tracelab_contract::service::ServiceName;
use tracelab_service::config as common;
use tracelab_telemetry::config::ConfigError;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub db_pool_size: u32,
}

impl Config {
    /// Reads `TRACELAB_LISTEN`, `DATABASE_URL`, `TRACELAB_DB_POOL_SIZE`
    /// (through `tracelab_service::config`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            listen: common::listen(ServiceName::Search.default_port())?,
            database_url: common::database_url(),
            db_pool_size: common::db_pool_size(5)?,
        })
    }
}
