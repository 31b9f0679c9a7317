//! Argument groups and value parsers shared by several commands: where the
//! lab is (its console, `up`'s ports, Tempo), how output looks.

use std::io::IsTerminal as _;
use std::time::Duration;

use clap::Args;
use reqwest::Url;
use tracelab_contract::fault::duration;

use crate::console::{ConsoleClient, LabRecord};
use crate::supervisor::Ports;
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

/// Per-listener ports of `tracelab up`.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// gateway port.
    #[arg(long, env = "TRACELAB_GATEWAY_PORT", default_value_t = Ports::CONTRACT.gateway)]
    pub gateway_port: u16,
    /// auth port.
    #[arg(long, env = "TRACELAB_AUTH_PORT", default_value_t = Ports::CONTRACT.auth)]
    pub auth_port: u16,
    /// search port.
    #[arg(long, env = "TRACELAB_SEARCH_PORT", default_value_t = Ports::CONTRACT.search)]
    pub search_port: u16,
    /// payment port.
    #[arg(long, env = "TRACELAB_PAYMENT_PORT", default_value_t = Ports::CONTRACT.payment)]
    pub payment_port: u16,
    /// notification port.
    #[arg(long, env = "TRACELAB_NOTIFICATION_PORT", default_value_t = Ports::CONTRACT.notification)]
    pub notification_port: u16,
    /// payment-provider port.
    #[arg(long, env = "TRACELAB_PROVIDER_PORT", default_value_t = Ports::CONTRACT.provider)]
    pub provider_port: u16,
    /// Embedded collector OTLP/HTTP port.
    #[arg(long, env = "TRACELAB_OTLP_HTTP_PORT", default_value_t = Ports::CONTRACT.otlp_http)]
    pub otlp_http_port: u16,
    /// Embedded collector OTLP/gRPC port.
    #[arg(long, env = "TRACELAB_OTLP_GRPC_PORT", default_value_t = Ports::CONTRACT.otlp_grpc)]
    pub otlp_grpc_port: u16,
    /// Embedded collector Tempo API port.
    #[arg(long, env = "TRACELAB_TEMPO_PORT", default_value_t = Ports::CONTRACT.tempo)]
    pub tempo_port: u16,
}

impl PortArgs {
    /// The ports as the supervisor takes them.
    pub fn ports(&self) -> Ports {
        Ports {
            gateway: self.gateway_port,
            auth: self.auth_port,
            search: self.search_port,
            payment: self.payment_port,
            notification: self.notification_port,
            provider: self.provider_port,
            otlp_http: self.otlp_http_port,
            otlp_grpc: self.otlp_grpc_port,
            tempo: self.tempo_port,
        }
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
                .and_then(|r| r.tempo)
                .unwrap_or_else(default_tempo),
        }
    }
}

/// The record of a running `tracelab up`, if any (a damaged one counts as none).
pub(crate) fn recorded_lab() -> Option<LabRecord> {
    LabRecord::read_live().ok().flatten()
}

/// A gateway flag's value, else the recorded lab's gateway, else the contract's.
pub(crate) fn gateway_or_recorded(flag: Option<&Url>) -> String {
    match flag {
        Some(u) => u.as_str().trim_end_matches('/').to_string(),
        None => recorded_lab()
            .and_then(|r| r.gateway)
            .unwrap_or_else(default_gateway),
    }
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
        Ok(match LabRecord::read_live()? {
            Some(record) => record.console,
            None => crate::console::default_url(),
        })
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
