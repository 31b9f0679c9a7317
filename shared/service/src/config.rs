//! Settings several services read the same way, each read once at startup
//! (the service's own `config.rs` calls these and adds its own).

use std::net::SocketAddr;

use tracelab_contract::defaults;
use tracelab_telemetry::config::{ConfigError, parse_or};

use crate::w3c::W3cHarness;

fn non_empty(value: Result<String, std::env::VarError>) -> Option<String> {
    value.ok().filter(|s| !s.trim().is_empty())
}

/// The bearer token the admin (fault) API requires: `TRACELAB_ADMIN_TOKEN`,
/// or the contract's default, which `tracelab up` uses too.
pub fn admin_token() -> String {
    non_empty(std::env::var("TRACELAB_ADMIN_TOKEN"))
        .unwrap_or_else(|| defaults::ADMIN_TOKEN.to_string())
}

/// `TRACELAB_LISTEN`, or `127.0.0.1:<default_port>`. Fails on a value that
/// is not `ip:port`.
pub fn listen(default_port: u16) -> Result<SocketAddr, ConfigError> {
    parse_or(
        "TRACELAB_LISTEN",
        std::env::var("TRACELAB_LISTEN").ok(),
        SocketAddr::from(([127, 0, 0, 1], default_port)),
    )
}

/// `DATABASE_URL`, or the local `tracelab` database.
pub fn database_url() -> String {
    non_empty(std::env::var("DATABASE_URL")).unwrap_or_else(|| defaults::DATABASE_URL.into())
}

/// `TRACELAB_DB_POOL_SIZE`, or `default`. Fails unless it is a positive number.
pub fn db_pool_size(default: u32) -> Result<u32, ConfigError> {
    let size = parse_or(
        "TRACELAB_DB_POOL_SIZE",
        std::env::var("TRACELAB_DB_POOL_SIZE").ok(),
        default,
    )?;
    if size == 0 {
        return Err(ConfigError::new(
            "TRACELAB_DB_POOL_SIZE",
            "0",
            "must be at least 1",
        ));
    }
    Ok(size)
}

/// `AMQP_URL`, or the local broker's default vhost as guest.
pub fn amqp_url() -> String {
    non_empty(std::env::var("AMQP_URL")).unwrap_or_else(|| defaults::AMQP_URL.into())
}

/// `TRACELAB_EXCHANGE`, or `tracelab.events`: the topic exchange of the lab's events.
pub fn exchange() -> String {
    non_empty(std::env::var("TRACELAB_EXCHANGE")).unwrap_or_else(|| defaults::EXCHANGE.into())
}

/// `TRACELAB_W3C_HARNESS`: the W3C trace-context test suite's server
/// (`http://127.0.0.1:7777`), the one address `POST /_w3c/test` may forward
/// to; unset or empty, the endpoint is off. Fails on a value that is not
/// such a URL.
pub fn w3c_harness() -> Result<W3cHarness, ConfigError> {
    W3cHarness::from_value(std::env::var("TRACELAB_W3C_HARNESS").ok())
}
