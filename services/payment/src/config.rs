//! payment configuration from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use tracelab_contract::service::ServiceName;
use tracelab_contract::timeouts;
use tracelab_service::W3cHarness;
use tracelab_service::config as common;
use tracelab_telemetry::config::{ConfigError, parse_or};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub db_pool_size: u32,
    /// `TRACELAB_DB_ACQUIRE_TIMEOUT_MS`: the longest wait for a pooled connection.
    pub db_acquire_timeout: Duration,
    pub amqp_url: String,
    pub exchange: String,
    pub provider_url: String,
    pub provider_timeout: Duration,
    /// `TRACELAB_PAYMENT_DEADLINE_MS`: when `POST /payments` stops waiting
    /// for its charge and answers 503 `payment_in_progress`.
    pub deadline: Duration,
    /// `TRACELAB_RECONCILE_AFTER_MS`: how long an order may stay
    /// `processing` untouched before the reconciler settles it.
    pub reconcile_after: Duration,
    /// `TRACELAB_RECONCILE_INTERVAL_MS`: how often the reconciler looks.
    pub reconcile_interval: Duration,
    /// `TRACELAB_W3C_HARNESS`: the W3C test harness endpoint, off unless set.
    pub w3c_harness: W3cHarness,
    /// `TRACELAB_ADMIN_LISTEN`, `TRACELAB_ADMIN_TOKEN` (or `_FILE`): the
    /// fault API's own listener and token.
    pub admin: tracelab_service::config::Admin,
}

/// A positive number of milliseconds from `name`, or `default`.
fn millis(name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    let ms = parse_or(name, std::env::var(name).ok(), default)?;
    if ms == 0 {
        return Err(ConfigError::new(name, "0", "must be positive"));
    }
    Ok(Duration::from_millis(ms))
}

impl Config {
    /// Reads `TRACELAB_PROVIDER_URL`, `TRACELAB_PROVIDER_TIMEOUT_MS`,
    /// `TRACELAB_DB_ACQUIRE_TIMEOUT_MS`, `TRACELAB_PAYMENT_DEADLINE_MS`,
    /// `TRACELAB_RECONCILE_AFTER_MS`, `TRACELAB_RECONCILE_INTERVAL_MS`, and
    /// the common `TRACELAB_LISTEN`, `TRACELAB_ADMIN_LISTEN`,
    /// `TRACELAB_ADMIN_TOKEN` (or `_FILE`), `DATABASE_URL`,
    /// `TRACELAB_DB_POOL_SIZE`, `AMQP_URL`, `TRACELAB_EXCHANGE` (named after
    /// the lab's database unless set), `TRACELAB_W3C_HARNESS` (through
    /// `tracelab_service::config`).
    ///
    /// Fails on a malformed value, and when the time limits are not ordered
    /// ([`timeouts::check_payment`]): a deadline no longer than the work
    /// below it is how a card gets charged with no payment row.
    pub fn from_env() -> Result<Self, ConfigError> {
        let provider_url = std::env::var("TRACELAB_PROVIDER_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ServiceName::PaymentProvider.default_url());
        reqwest::Url::parse(&provider_url).map_err(|e| {
            ConfigError::new("TRACELAB_PROVIDER_URL", provider_url.clone(), e.to_string())
        })?;
        let database_url = common::database_url();
        let config = Self {
            w3c_harness: common::w3c_harness()?,
            listen: common::listen(ServiceName::Payment.default_port())?,
            admin: common::admin(ServiceName::Payment)?,
            db_pool_size: common::db_pool_size(10)?,
            db_acquire_timeout: millis(
                "TRACELAB_DB_ACQUIRE_TIMEOUT_MS",
                timeouts::DB_ACQUIRE_TIMEOUT_MS,
            )?,
            amqp_url: common::amqp_url(),
            exchange: common::exchange(&database_url),
            database_url,
            provider_url: provider_url.trim_end_matches('/').to_string(),
            provider_timeout: millis(
                "TRACELAB_PROVIDER_TIMEOUT_MS",
                timeouts::PROVIDER_TIMEOUT_MS,
            )?,
            deadline: millis(
                "TRACELAB_PAYMENT_DEADLINE_MS",
                timeouts::PAYMENT_DEADLINE_MS,
            )?,
            reconcile_after: millis("TRACELAB_RECONCILE_AFTER_MS", timeouts::RECONCILE_AFTER_MS)?,
            reconcile_interval: millis(
                "TRACELAB_RECONCILE_INTERVAL_MS",
                timeouts::RECONCILE_INTERVAL_MS,
            )?,
        };
        config.check_order()?;
        Ok(config)
    }

    /// Checks that each limit gives up after the work below it.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the variables in the wrong order.
    pub fn check_order(&self) -> Result<(), ConfigError> {
        let ms = |d: Duration| d.as_millis() as u64;
        timeouts::check_payment(
            ms(self.deadline),
            ms(self.db_acquire_timeout),
            ms(self.provider_timeout),
            ms(self.reconcile_after),
        )
        .map_err(|reason| {
            ConfigError::new(
                "TRACELAB_PAYMENT_DEADLINE_MS",
                ms(self.deadline).to_string(),
                reason,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(deadline_ms: u64, acquire_ms: u64, provider_ms: u64) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: String::new(),
            db_pool_size: 1,
            db_acquire_timeout: Duration::from_millis(acquire_ms),
            amqp_url: String::new(),
            exchange: String::new(),
            provider_url: String::new(),
            provider_timeout: Duration::from_millis(provider_ms),
            deadline: Duration::from_millis(deadline_ms),
            reconcile_after: Duration::from_millis(timeouts::RECONCILE_AFTER_MS),
            reconcile_interval: Duration::from_millis(timeouts::RECONCILE_INTERVAL_MS),
            w3c_harness: W3cHarness::off(),
            admin: tracelab_service::config::Admin {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                token: tracelab_service::config::AdminToken::random(),
            },
        }
    }

    #[test]
    fn the_deadline_must_exceed_the_work_below_it() {
        config(
            timeouts::PAYMENT_DEADLINE_MS,
            timeouts::DB_ACQUIRE_TIMEOUT_MS,
            timeouts::PROVIDER_TIMEOUT_MS,
        )
        .check_order()
        .unwrap();
        // The measured failure: a caller giving up exactly when the pool does.
        let err = config(5_000, 5_000, 3_000).check_order().unwrap_err();
        assert!(
            err.to_string().contains("TRACELAB_PAYMENT_DEADLINE_MS"),
            "{err}"
        );
        assert!(config(11_000, 2_000, 3_000).check_order().is_err());
        config(11_001, 2_000, 3_000).check_order().unwrap();
    }
}
