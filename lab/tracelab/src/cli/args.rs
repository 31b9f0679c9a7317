//! Argument groups and value parsers shared by several commands: where the
//! lab is (its console, `up`'s ports, Tempo), how output looks.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use reqwest::Url;
use tracelab_contract::fault::duration;

use crate::console::ConsoleClient;
use crate::supervisor::{LabRecord, Ports};
use tracelab_contract::service::ServiceName;

/// Tempo API of a lab started with the contract's ports.
pub fn default_tempo() -> String {
    tracelab_contract::defaults::tempo_url()
}

/// Gateway of a lab started with the contract's ports.
pub fn default_gateway() -> String {
    ServiceName::Gateway.default_url()
}

/// A default URL of the contract as a flag's value.
pub(crate) fn url(text: &str) -> Url {
    Url::parse(text).unwrap_or_else(|e| unreachable!("the contract's URL {text:?}: {e}"))
}

/// Per-listener ports of `tracelab up` (and, given to a lab command, where
/// that lab's services are).
#[derive(Debug, Args)]
pub struct PortArgs {
    #[arg(long, env = "TRACELAB_GATEWAY_PORT", value_name = "PORT", help = port_help("gateway", Ports::CONTRACT.gateway))]
    pub gateway_port: Option<u16>,
    #[arg(long, env = "TRACELAB_AUTH_PORT", value_name = "PORT", help = port_help("auth", Ports::CONTRACT.auth))]
    pub auth_port: Option<u16>,
    #[arg(long, env = "TRACELAB_SEARCH_PORT", value_name = "PORT", help = port_help("search", Ports::CONTRACT.search))]
    pub search_port: Option<u16>,
    #[arg(long, env = "TRACELAB_PAYMENT_PORT", value_name = "PORT", help = port_help("payment", Ports::CONTRACT.payment))]
    pub payment_port: Option<u16>,
    #[arg(long, env = "TRACELAB_NOTIFICATION_PORT", value_name = "PORT", help = port_help("notification", Ports::CONTRACT.notification))]
    pub notification_port: Option<u16>,
    #[arg(long, env = "TRACELAB_PROVIDER_PORT", value_name = "PORT", help = port_help("payment-provider", Ports::CONTRACT.provider))]
    pub provider_port: Option<u16>,
    #[arg(long, env = "TRACELAB_OTLP_HTTP_PORT", value_name = "PORT", help = port_help("Embedded collector OTLP/HTTP", Ports::CONTRACT.otlp_http))]
    pub otlp_http_port: Option<u16>,
    #[arg(long, env = "TRACELAB_OTLP_GRPC_PORT", value_name = "PORT", help = port_help("Embedded collector OTLP/gRPC", Ports::CONTRACT.otlp_grpc))]
    pub otlp_grpc_port: Option<u16>,
    #[arg(long, env = "TRACELAB_TEMPO_PORT", value_name = "PORT", help = port_help("Embedded collector Tempo API", Ports::CONTRACT.tempo))]
    pub tempo_port: Option<u16>,
}

fn port_help(what: &str, port: u16) -> String {
    format!("{what} port [default: {port}]")
}

impl PortArgs {
    /// The ports as the supervisor takes them: those given, the contract's
    /// for the rest.
    pub fn ports(&self) -> Ports {
        let c = Ports::CONTRACT;
        Ports {
            gateway: self.gateway_port.unwrap_or(c.gateway),
            auth: self.auth_port.unwrap_or(c.auth),
            search: self.search_port.unwrap_or(c.search),
            payment: self.payment_port.unwrap_or(c.payment),
            notification: self.notification_port.unwrap_or(c.notification),
            provider: self.provider_port.unwrap_or(c.provider),
            otlp_http: self.otlp_http_port.unwrap_or(c.otlp_http),
            otlp_grpc: self.otlp_grpc_port.unwrap_or(c.otlp_grpc),
            tempo: self.tempo_port.unwrap_or(c.tempo),
        }
    }

    /// Whether any port was given (flag or variable).
    pub fn any_given(&self) -> bool {
        [
            self.gateway_port,
            self.auth_port,
            self.search_port,
            self.payment_port,
            self.notification_port,
            self.provider_port,
            self.otlp_http_port,
            self.otlp_grpc_port,
            self.tempo_port,
        ]
        .iter()
        .any(Option::is_some)
    }
}
/// Where to find Tempo's API.
#[derive(Debug, Args)]
pub struct TempoArg {
    /// Tempo API base URL (the embedded collector or a real Tempo) [default:
    /// the lab `tracelab up` recorded, else http://127.0.0.1:3200].
    #[arg(long, env = "TRACELAB_TEMPO_URL", value_name = "URL")]
    pub tempo: Option<Url>,
}

impl TempoArg {
    /// `--tempo` / `TRACELAB_TEMPO_URL`, else the recorded lab's, else the contract's.
    pub fn url(&self) -> String {
        match &self.tempo {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => recorded_lab()
                .map(|r| r.tempo)
                .unwrap_or_else(default_tempo),
        }
    }
}

/// The record of a running `tracelab up`, if any (a damaged one counts as none).
pub(crate) fn recorded_lab() -> Option<LabRecord> {
    LabRecord::read_live().ok().flatten()
}

/// How wide and colorful the output is.
#[derive(Debug, Args)]
pub struct DisplayArgs {
    /// Output width in columns [default: $COLUMNS, else 100].
    #[arg(long)]
    pub width: Option<usize>,
    /// Colors: auto = on a terminal unless NO_COLOR is set.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

impl DisplayArgs {
    /// The output width: `--width`, else `$COLUMNS`, else 100.
    pub fn width(&self) -> usize {
        self.width.unwrap_or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse().ok())
                .filter(|&c: &usize| c > 0)
                .unwrap_or(100)
        })
    }

    /// Whether to print colors.
    pub fn color(&self) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// `--color`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

pub(crate) fn parse_trace_id_arg(s: &str) -> Result<String, String> {
    tracelab_client::parse_trace_id(s).map_err(|e| e.to_string())
}

/// The admin token, for the commands that set or clear faults.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Token of the services' admin (fault) API [default: the one `tracelab
    /// up` recorded for its lab].
    #[arg(long, env = "TRACELAB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (compose's generated one), read when
    /// no --admin-token is given.
    #[arg(long, env = "TRACELAB_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token: `--admin-token`, else the file's, else the one in the
    /// record `tracelab up` wrote.
    ///
    /// # Errors
    /// An unreadable or empty file, or no token anywhere.
    pub fn token(&self) -> anyhow::Result<String> {
        self.token_with(recorded_lab().as_ref())
    }

    fn token_with(&self, record: Option<&LabRecord>) -> anyhow::Result<String> {
        if let Some(token) = self.admin_token.as_deref().filter(|t| !t.trim().is_empty()) {
            return Ok(token.trim().to_string());
        }
        if let Some(path) = self
            .admin_token_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the admin token from {}", path.display()))?;
            let token = text.trim();
            if token.is_empty() {
                bail!("{} holds no admin token", path.display());
            }
            return Ok(token.to_string());
        }
        match record {
            Some(record) => Ok(record.admin_token.clone()),
            None => bail!(
                "no admin token: start the lab with `tracelab up` (it records its token), \
                 or pass the lab's token with --admin-token or TRACELAB_ADMIN_TOKEN"
            ),
        }
    }
}

/// Where the lab is: its console, the lab's one URL.
#[derive(Debug, Clone, Args)]
pub struct LabUrlArg {
    /// The lab's URL (its console) [default: the lab `tracelab up` recorded,
    /// else http://127.0.0.1:7070].
    #[arg(long = "lab", env = "TRACELAB_URL", value_name = "URL", global = true)]
    pub lab: Option<Url>,
}

impl LabUrlArg {
    /// The console's URL: `--lab` / `TRACELAB_URL`, else the record of a
    /// running `tracelab up`, else the default.
    ///
    /// # Errors
    /// When the record exists but cannot be read.
    pub fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.lab {
            return Ok(url.as_str().trim_end_matches('/').to_string());
        }
        Ok(LabRecord::read_live()?
            .and_then(|record| record.console)
            .unwrap_or_else(crate::console::default_url))
    }

    /// A client of the lab's console; requests may take `timeout`.
    ///
    /// # Errors
    /// As [`LabUrlArg::url`], or a bad URL.
    pub fn client(&self, timeout: Duration) -> anyhow::Result<ConsoleClient> {
        ConsoleClient::new(&self.url()?, timeout)
    }
}

/// The longest duration a flag takes. Longer is a typo, and every wait and
/// deadline computed from a flag stays far from the clock's limits.
pub const MAX_FLAG_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Reads a duration flag: the grammar of fault specs (`500ms`, `30s`, `5m`,
/// `1h`, `1m30s`), at most [`MAX_FLAG_DURATION`]. Never panics.
///
/// # Errors
/// The parser's message (the input and what is wrong), or "too long".
pub fn duration_arg(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s).map_err(|e| e.to_string())?;
    if d > MAX_FLAG_DURATION {
        return Err(format!(
            "{s:?} is longer than any flag takes (at most {})",
            duration::format(MAX_FLAG_DURATION)
        ));
    }
    Ok(d)
}

/// Reads a rate in requests per second: a finite number above 0, at most
/// one million.
///
/// # Errors
/// Not a number, not finite, 0 or less, or above one million.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of requests per second, got {s:?}"))?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(format!("must be greater than 0, got {s}"));
    }
    if rate > 1_000_000.0 {
        return Err(format!("at most 1000000 requests per second, got {s}"));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        token: TokenArgs,
    }

    fn parse(args: &[&str]) -> TokenArgs {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .token
    }

    fn record() -> LabRecord {
        LabRecord {
            gateway: "http://127.0.0.1:18080".into(),
            tempo: "http://127.0.0.1:13200".into(),
            services: BTreeMap::from([("gateway".into(), "http://127.0.0.1:18080".into())]),
            admin: BTreeMap::from([("gateway".into(), "http://127.0.0.1:40001".into())]),
            admin_token: "the-recorded-lab-s-token".into(),
            database_url: String::new(),
            amqp_url: String::new(),
            exchange: String::new(),
            queue: String::new(),
            console: None,
            pid: None,
        }
    }

    /// The token `tracelab console` keeps: the flag, else the file, else
    /// the recorded lab's; with none, an error that says where to get one.
    #[test]
    fn the_token_comes_from_the_flag_the_file_or_the_record() {
        let none = parse(&[]);
        if none.admin_token.is_some() || none.admin_token_file.is_some() {
            return; // TRACELAB_ADMIN_TOKEN* set in this environment: not this case.
        }
        let r = record();
        assert_eq!(
            none.token_with(Some(&r)).unwrap(),
            "the-recorded-lab-s-token"
        );
        let err = none.token_with(None).unwrap_err().to_string();
        assert!(
            err.contains("no admin token") && err.contains("tracelab up"),
            "{err}"
        );
        let given = parse(&["--admin-token", "given-on-the-command-line"]);
        assert_eq!(
            given.token_with(Some(&r)).unwrap(),
            "given-on-the-command-line"
        );

        let dir = std::env::temp_dir().join(format!("tracelab-args-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-the-token-file\n").unwrap();
        let from_file = parse(&["--admin-token-file", file.to_str().unwrap()]);
        assert_eq!(
            from_file.token_with(Some(&r)).unwrap(),
            "from-the-token-file"
        );
        std::fs::write(&file, "\n").unwrap();
        let err = from_file.token_with(Some(&r)).unwrap_err().to_string();
        assert!(err.contains("holds no admin token"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
