//! `tracelab console`: the lab console for a lab started elsewhere (the
//! compose stack's `console` container), until Ctrl-C. `tracelab up`
//! serves the same console next to the lab it starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use reqwest::Url;

use super::args::{TokenArgs, default_gateway, default_tempo, parse_key_value, url};
use super::logging::{LogFormat, init_logging};
use super::signal::shutdown_signal;
use crate::console::{self, ConsoleConfig, ConsoleState, Mode, VerifyBackends};
use crate::exercise::state_dir;
use crate::fault::{canonical_service, service_names};
use crate::scenario::Catalog;
use tracelab_contract::service::ServiceName;

/// `tracelab console`
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, env = "TRACELAB_CONSOLE_LISTEN", default_value_t = default_listen(), value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Gateway base URL.
    #[arg(long, env = "TRACELAB_GATEWAY_URL", default_value_t = url(&default_gateway()), value_name = "URL")]
    pub gateway: Url,
    /// Tempo API base URL.
    #[arg(long, env = "TRACELAB_TEMPO_URL", default_value_t = url(&default_tempo()), value_name = "URL")]
    pub tempo: Url,
    /// A service's base URL, NAME=URL (repeatable, or comma separated in
    /// the variable); services not given are at their contract URL.
    #[arg(long = "service", env = "TRACELAB_CONSOLE_SERVICES", value_delimiter = ',', value_parser = parse_service_url, value_name = "NAME=URL")]
    pub services: Vec<(String, Url)>,
    /// A service's admin (fault) API base URL, NAME=URL, when it is not the
    /// service's own URL (repeatable, or comma separated).
    #[arg(long = "admin", env = "TRACELAB_CONSOLE_ADMIN", value_delimiter = ',', value_parser = parse_service_url, value_name = "NAME=URL")]
    pub admin: Vec<(String, Url)>,
    /// The services' admin (fault) API token (the console keeps it).
    #[command(flatten)]
    pub token: TokenArgs,
    /// Scenario directory [default: $TRACELAB_SCENARIOS, ./scenarios, or the workspace's].
    #[arg(long, value_name = "DIR")]
    pub scenarios: Option<PathBuf>,
    /// Postgres of the lab, for `scenario verify` (its one-charge-per-key check).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// RabbitMQ of the lab, for `scenario verify` (its dead-letter checks).
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: Option<String>,
    /// The notification queue (its DLQ is `<queue>.dlq`).
    #[arg(long, env = "TRACELAB_QUEUE", default_value = tracelab_contract::defaults::QUEUE)]
    pub queue: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], console::DEFAULT_PORT))
}

fn parse_service_url(s: &str) -> Result<(String, Url), String> {
    let (name, value) = parse_key_value(s)?;
    let name = canonical_service(&name).ok_or_else(|| {
        format!(
            "unknown service {name:?} (one of {})",
            service_names().join(", ")
        )
    })?;
    let url = Url::parse(value.trim()).map_err(|e| format!("{name}: bad URL {value:?}: {e}"))?;
    Ok((name.to_string(), url))
}

impl ConsoleArgs {
    /// `(name, base URL)` of the six services: given, else the contract's.
    fn service_urls(&self) -> Vec<(String, String)> {
        ServiceName::ALL
            .iter()
            .map(|s| {
                let given = self.services.iter().rev().find(|(n, _)| n == s.name());
                let url = match given {
                    Some((_, u)) => u.as_str().trim_end_matches('/').to_string(),
                    None => s.default_url(),
                };
                (s.name().to_string(), url)
            })
            .collect()
    }

    /// The admin URLs: given, else each service's own.
    fn admin_urls(&self, services: &[(String, String)]) -> Vec<(String, String)> {
        services
            .iter()
            .map(|(name, url)| {
                let given = self.admin.iter().rev().find(|(n, _)| n == name);
                let url = match given {
                    Some((_, u)) => u.as_str().trim_end_matches('/').to_string(),
                    None => url.clone(),
                };
                (name.clone(), url)
            })
            .collect()
    }
}

/// Runs `tracelab console` until Ctrl-C or SIGTERM.
///
/// # Errors
/// An invalid catalog, a state directory that cannot be found, a port that
/// cannot be bound.
pub(super) async fn run(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    init_logging(LogFormat::Text, None, false);
    let catalog = Catalog::load_or_default(args.scenarios.as_deref())?;
    let services = args.service_urls();
    let admin = args.admin_urls(&services);
    let verify = match (&args.database_url, &args.amqp_url) {
        (Some(db), Some(amqp)) => Some(VerifyBackends {
            database_url: db.clone(),
            amqp_url: amqp.clone(),
            queue: args.queue.clone(),
        }),
        _ => None,
    };
    let config = ConsoleConfig {
        mode: Mode::Compose,
        gateway: args.gateway.as_str().trim_end_matches('/').to_string(),
        tempo: args.tempo.as_str().trim_end_matches('/').to_string(),
        services,
        admin,
        admin_token: args.token.token()?,
        catalog,
        state_dir: state_dir()?,
        processes: None,
        verify,
        // Compose's tail sampling is the OpenTelemetry Collector's.
        collector: None,
    };
    let state = ConsoleState::new(config)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the console to {} (--listen)", args.listen))?;
    let addr = listener.local_addr()?;
    println!("tracelab console listening on http://{addr}");
    console::serve(listener, state, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
