//! auth configuration from the environment.

use std::net::SocketAddr;

use tracelab_contract::service::ServiceName;
use tracelab_service::W3cHarness;
use tracelab_telemetry::config::{ConfigError, parse_or};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub token_secret: String,
    /// No `TRACELAB_TOKEN_SECRET` was given: `token_secret` was drawn at
    /// random at start, so tokens end when auth restarts.
    pub token_secret_is_random: bool,
    pub token_ttl_secs: i64,
    /// `TRACELAB_W3C_HARNESS`: the W3C test harness endpoint, off unless set.
    pub w3c_harness: W3cHarness,
    /// `TRACELAB_ADMIN_LISTEN`, `TRACELAB_ADMIN_TOKEN` (or `_FILE`): the
    /// fault API's own listener and token.
    pub admin: tracelab_service::config::Admin,
}

impl Config {
    /// Reads `TRACELAB_LISTEN`, `TRACELAB_TOKEN_SECRET`, `TRACELAB_TOKEN_TTL_SECS`,
    /// `TRACELAB_W3C_HARNESS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let listen = tracelab_service::config::listen(ServiceName::Auth.default_port())?;
        let (token_secret, token_secret_is_random) =
            token_secret(std::env::var("TRACELAB_TOKEN_SECRET").ok())?;
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
            token_secret_is_random,
            token_ttl_secs,
            w3c_harness: tracelab_service::config::w3c_harness()?,
            admin: tracelab_service::config::admin(ServiceName::Auth)?,
        })
    }
}

/// The token secret from `TRACELAB_TOKEN_SECRET`'s value, or a random one
/// when it is unset or empty (`true` then). A secret written in the source
/// would let anyone who read it sign tokens as any user.
///
/// # Errors
/// A given secret shorter than 16 characters.
pub fn token_secret(value: Option<String>) -> Result<(String, bool), ConfigError> {
    use base64::Engine as _;
    match value.filter(|s| !s.is_empty()) {
        None => {
            let bytes: [u8; 32] = rand::random();
            let secret = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
            Ok((secret, true))
        }
        Some(secret) if secret.len() < 16 => Err(ConfigError::new(
            "TRACELAB_TOKEN_SECRET",
            "<hidden>",
            "must be at least 16 characters",
        )),
        Some(secret) => Ok((secret, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_secret_each_start_draws_its_own() {
        let (a, random) = token_secret(None).unwrap();
        assert!(random);
        assert_eq!(a.len(), 43);
        let (b, _) = token_secret(Some(String::new())).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            token_secret(Some("a-secret-of-16-chars".into())).unwrap(),
            ("a-secret-of-16-chars".to_string(), false)
        );
        assert!(token_secret(Some("short".into())).is_err());
    }
}
