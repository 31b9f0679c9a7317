//! Settings several services read the same way, each read once at startup
//! (the service's own `config.rs` calls these and adds its own).

use std::net::SocketAddr;
use std::path::Path;

use tracelab_contract::defaults;
use tracelab_contract::messaging;
use tracelab_contract::service::ServiceName;
use tracelab_telemetry::config::{ConfigError, parse_or};

use crate::w3c::W3cHarness;

fn non_empty(value: Result<String, std::env::VarError>) -> Option<String> {
    value.ok().filter(|s| !s.trim().is_empty())
}

/// The admin (fault) API of a service: its own listener, apart from the
/// public one, and the bearer token it requires.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `TRACELAB_ADMIN_LISTEN`, or `127.0.0.1:<the service's admin port>`
    /// (`ServiceName::default_admin_port`).
    pub listen: SocketAddr,
    /// `TRACELAB_ADMIN_TOKEN`, else the contents of
    /// `TRACELAB_ADMIN_TOKEN_FILE`, else drawn at random.
    pub token: AdminToken,
}

/// `TRACELAB_ADMIN_LISTEN` and the admin token of `service`.
///
/// # Errors
/// An address that is not `ip:port`, or a token as [`admin_token`] refuses it.
pub fn admin(service: ServiceName) -> Result<Admin, ConfigError> {
    Ok(Admin {
        listen: parse_or(
            "TRACELAB_ADMIN_LISTEN",
            std::env::var("TRACELAB_ADMIN_LISTEN").ok(),
            SocketAddr::from(([127, 0, 0, 1], service.default_admin_port())),
        )?,
        token: admin_token(
            std::env::var("TRACELAB_ADMIN_TOKEN").ok(),
            std::env::var_os("TRACELAB_ADMIN_TOKEN_FILE").map(std::path::PathBuf::from),
        )?,
    })
}

pub use tracelab_contract::defaults::MIN_ADMIN_TOKEN_LEN;

/// The admin API's bearer token. `Debug` hides it: configs are printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    value: String,
    random: bool,
}

impl AdminToken {
    /// A token drawn from the OS's random source: 64 hex digits.
    pub fn random() -> AdminToken {
        let bytes: [u8; 32] = rand::random();
        AdminToken {
            value: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            random: true,
        }
    }

    /// The token, to compare with what a client presents.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Drawn at start because none was configured: nobody knows it, so the
    /// admin API answers no one.
    pub fn is_random(&self) -> bool {
        self.random
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.random {
            "AdminToken(<random>)"
        } else {
            "AdminToken(<hidden>)"
        })
    }
}

/// The admin token from `TRACELAB_ADMIN_TOKEN`'s value, else from the file
/// `TRACELAB_ADMIN_TOKEN_FILE` names (surrounding whitespace trimmed), else
/// a random one: there is no default token, since one written in the
/// source would open every lab's admin API to whoever read it.
///
/// # Errors
/// A token shorter than [`MIN_ADMIN_TOKEN_LEN`], or a file that cannot be
/// read or holds no token.
pub fn admin_token(
    value: Option<String>,
    file: Option<std::path::PathBuf>,
) -> Result<AdminToken, ConfigError> {
    let (name, token) = match (
        value.filter(|v| !v.trim().is_empty()),
        file.filter(|f| !f.as_os_str().is_empty()),
    ) {
        (Some(value), _) => ("TRACELAB_ADMIN_TOKEN", value.trim().to_string()),
        (None, Some(path)) => ("TRACELAB_ADMIN_TOKEN_FILE", read_token_file(&path)?),
        (None, None) => return Ok(AdminToken::random()),
    };
    if token.chars().count() < MIN_ADMIN_TOKEN_LEN {
        return Err(ConfigError::new(
            name,
            "<hidden>",
            format!("the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
        ));
    }
    Ok(AdminToken {
        value: token,
        random: false,
    })
}

fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("TRACELAB_ADMIN_TOKEN_FILE", shown.clone(), e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::new(
            "TRACELAB_ADMIN_TOKEN_FILE",
            shown,
            "the file is empty",
        ));
    }
    Ok(token.to_string())
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

/// `TRACELAB_EXCHANGE`, or the exchange of the lab whose database is
/// `database_url` (`tracelab.events.<lab id>`, `messaging::lab_exchange`):
/// the topic exchange of the lab's events.
pub fn exchange(database_url: &str) -> String {
    non_empty(std::env::var("TRACELAB_EXCHANGE"))
        .unwrap_or_else(|| messaging::lab_exchange(database_url))
}

/// `TRACELAB_QUEUE`, or notification's queue in the lab whose database is
/// `database_url` (`notification.payment-completed.<lab id>`,
/// `messaging::lab_queue`).
pub fn queue(database_url: &str) -> String {
    non_empty(std::env::var("TRACELAB_QUEUE")).unwrap_or_else(|| messaging::lab_queue(database_url))
}

/// `TRACELAB_W3C_HARNESS`: the W3C trace-context test suite's server
/// (`http://127.0.0.1:7777`), the one address `POST /_w3c/test` may forward
/// to; unset or empty, the endpoint is off. Fails on a value that is not
/// such a URL.
pub fn w3c_harness() -> Result<W3cHarness, ConfigError> {
    W3cHarness::from_value(std::env::var("TRACELAB_W3C_HARNESS").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_each_start_draws_its_own() {
        let a = admin_token(None, None).unwrap();
        let b = admin_token(Some("  ".into()), Some("".into())).unwrap();
        assert!(a.is_random() && b.is_random());
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "AdminToken(<random>)");
    }

    #[test]
    fn the_variable_wins_over_the_file_and_short_tokens_are_refused() {
        let dir = std::env::temp_dir().join(format!("tracelab-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-the-file-0123456789\n").unwrap();
        let t = admin_token(None, Some(file.clone())).unwrap();
        assert_eq!(t.expose(), "from-the-file-0123456789");
        assert!(!t.is_random());
        assert_eq!(format!("{t:?}"), "AdminToken(<hidden>)");
        let t = admin_token(Some("from-the-variable-0123".into()), Some(file.clone())).unwrap();
        assert_eq!(t.expose(), "from-the-variable-0123");

        let err = admin_token(Some("tracelab-admin".into()), None).unwrap_err();
        assert_eq!(err.name, "TRACELAB_ADMIN_TOKEN");
        assert!(err.reason.contains("at least 16"), "{err}");
        assert!(
            !err.to_string().contains("tracelab-admin"),
            "the token is not shown: {err}"
        );
        std::fs::write(&file, " \n").unwrap();
        let err = admin_token(None, Some(file.clone())).unwrap_err();
        assert!(err.reason.contains("empty"), "{err}");
        let err = admin_token(None, Some(dir.join("missing"))).unwrap_err();
        assert_eq!(err.name, "TRACELAB_ADMIN_TOKEN_FILE");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
