//! `tracelab fault`: the injection points of the six services (the table in
//! docs/architecture.md, "Fault injection points"), a client for their admin
//! API (`/admin/faults`), and the `fault list|set|clear|points` commands.
//!
//! ```text
//! tracelab fault points                                  # every point and the kinds acting there
//! tracelab fault set payment.save latency ms=800 --for 5m
//! tracelab fault set provider.charge outage --probability 0.3
//! tracelab fault set --spec faults.yaml                  # one spec or a list, JSON or YAML
//! tracelab fault list                                    # every service (or: tracelab fault list payment)
//! tracelab fault clear payment.save                      # one point; a service name or `all` clears more
//! ```
//!
//! A spec is parsed and validated by `tracelab-faults` ([`FaultSpec`]) before
//! anything is sent, so a typo names its field; the point must exist and the
//! kind must act there (generic kinds act at every request point, the
//! others only where the table lists them), unless `--force`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use tracelab_contract::fault::{ActiveFault, AppliedBy, FaultKind, FaultSpec, FaultsReport};

use crate::cli::PortArgs;
use crate::lab::{DEFAULT_ADMIN_TOKEN, Lab, SERVICES};

/// One injection point of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The point's name, e.g. `payment.save`.
    pub name: &'static str,
    /// The service (binary name) that carries it.
    pub service: &'static str,
    /// Where it acts, for `fault points` and the guide.
    pub acts: &'static str,
    /// The caller-handled (or telemetry) kinds that act here besides the
    /// generic ones.
    pub kinds: &'static [&'static str],
}

impl Point {
    /// Whether this is a service's `<service>.telemetry` point, where only
    /// the telemetry kinds act (no request passes through it).
    pub fn is_telemetry(&self) -> bool {
        self.name.ends_with(".telemetry")
    }

    /// Whether `kind` acts at this point.
    pub fn accepts(&self, kind: &FaultKind) -> bool {
        if self.is_telemetry() {
            return self.kinds.contains(&kind.name());
        }
        kind.applied_by() == AppliedBy::Generic || self.kinds.contains(&kind.name())
    }

    /// Every kind acting here, generic ones first.
    pub fn kind_names(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = if self.is_telemetry() {
            Vec::new()
        } else {
            GENERIC_KINDS.to_vec()
        };
        for k in self.kinds {
            if !out.contains(k) {
                out.push(k);
            }
        }
        out
    }
}

/// The kinds `FaultRegistry::inject` applies itself, at any request point.
pub const GENERIC_KINDS: &[&str] = &["latency", "error", "hang", "cpu_burn", "outage"];

const TELEMETRY_KINDS: &[&str] = &[
    "slow_export",
    "drop_spans",
    "clock_skew",
    "high_cardinality",
];
const GATEWAY_TELEMETRY_KINDS: &[&str] = &[
    "sampling_miss",
    "slow_export",
    "drop_spans",
    "clock_skew",
    "high_cardinality",
];

/// Every injection point (docs/architecture.md, "Fault injection points").
pub const POINTS: &[Point] = &[
    Point {
        name: "gateway.auth",
        service: "gateway",
        acts: "the calls to auth (POST /login, POST /verify)",
        kinds: &["propagation_break"],
    },
    Point {
        name: "gateway.payment",
        service: "gateway",
        acts: "the call to payment POST /payments",
        kinds: &["retry_storm", "propagation_break"],
    },
    Point {
        name: "gateway.search",
        service: "gateway",
        acts: "the call to search GET /products",
        kinds: &["propagation_break"],
    },
    Point {
        name: "gateway.telemetry",
        service: "gateway",
        acts: "the gateway's own tracing (head sampling decides here)",
        kinds: GATEWAY_TELEMETRY_KINDS,
    },
    Point {
        name: "auth.verify",
        service: "auth",
        acts: "token verification (POST /verify)",
        kinds: &[],
    },
    Point {
        name: "auth.telemetry",
        service: "auth",
        acts: "auth's own tracing",
        kinds: TELEMETRY_KINDS,
    },
    Point {
        name: "search.query",
        service: "search",
        acts: "the products query (SELECT products)",
        kinds: &["slow_query"],
    },
    Point {
        name: "search.telemetry",
        service: "search",
        acts: "search's own tracing",
        kinds: TELEMETRY_KINDS,
    },
    Point {
        name: "payment.validate_order",
        service: "payment",
        acts: "validateOrder",
        kinds: &["slow_query"],
    },
    Point {
        name: "payment.provider_call",
        service: "payment",
        acts: "callExternalPaymentAPI",
        kinds: &[],
    },
    Point {
        name: "payment.save",
        service: "payment",
        acts: "savePaymentResult",
        kinds: &["slow_query", "lock_contention", "pool_exhaustion"],
    },
    Point {
        name: "payment.relay_publish",
        service: "payment",
        acts: "the outbox relay's publish (publish payment.completed)",
        kinds: &["propagation_break"],
    },
    Point {
        name: "payment.telemetry",
        service: "payment",
        acts: "payment's own tracing",
        kinds: TELEMETRY_KINDS,
    },
    Point {
        name: "provider.charge",
        service: "payment-provider",
        acts: "POST /v1/charges",
        kinds: &["rate_limit", "outage"],
    },
    Point {
        name: "provider.telemetry",
        service: "payment-provider",
        acts: "payment-provider's own tracing",
        kinds: TELEMETRY_KINDS,
    },
    Point {
        name: "notification.consume",
        service: "notification",
        acts: "before a delivery is processed (process payment.completed)",
        kinds: &["consumer_stall", "dead_letter", "propagation_break"],
    },
    Point {
        name: "notification.send_email",
        service: "notification",
        acts: "sendEmail",
        kinds: &["slow_query"],
    },
    Point {
        name: "notification.telemetry",
        service: "notification",
        acts: "notification's own tracing",
        kinds: TELEMETRY_KINDS,
    },
];

/// The point called `name`.
pub fn point(name: &str) -> Option<&'static Point> {
    POINTS.iter().find(|p| p.name == name)
}

/// The service that owns a point, from its prefix (`provider.` is
/// payment-provider's), whether or not the point exists.
pub fn service_of_point(point: &str) -> Option<&'static str> {
    let prefix = point.split('.').next()?;
    match prefix {
        "provider" | "payment-provider" => Some("payment-provider"),
        other => SERVICES.iter().copied().find(|s| *s == other),
    }
}

/// A service name as a person may type it: `provider` is payment-provider.
pub fn canonical_service(name: &str) -> Option<&'static str> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "provider" | "payment_provider" | "paymentprovider" => Some("payment-provider"),
        other => SERVICES.iter().copied().find(|s| *s == other),
    }
}

/// Checks that `spec.point` exists and that its kind acts there.
///
/// # Errors
/// An unknown point (with the known ones of that service), or a kind that
/// has no effect at that point (with the kinds that do).
pub fn check_point_and_kind(spec: &FaultSpec) -> anyhow::Result<&'static Point> {
    let Some(p) = point(&spec.point) else {
        let known: Vec<&str> = match service_of_point(&spec.point) {
            Some(svc) => POINTS
                .iter()
                .filter(|p| p.service == svc)
                .map(|p| p.name)
                .collect(),
            None => POINTS.iter().map(|p| p.name).collect(),
        };
        bail!(
            "unknown injection point {:?} (known: {}; `tracelab fault points` lists them all)",
            spec.point,
            known.join(", ")
        );
    };
    if !p.accepts(&spec.kind) {
        bail!(
            "kind `{}` has no effect at {} ({}); kinds acting there: {}",
            spec.kind.name(),
            p.name,
            p.acts,
            p.kind_names().join(", ")
        );
    }
    Ok(p)
}

/// Reads fault specs from JSON or YAML text: one spec or a list. An entry
/// may carry `service:` (as in scenario files); it must agree with the point.
///
/// # Errors
/// When the text is neither JSON nor YAML, or a spec is invalid (the message
/// names the entry and the field).
pub fn parse_specs(text: &str) -> anyhow::Result<Vec<FaultSpec>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_str(text).context("fault spec is neither JSON nor YAML")?,
    };
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut specs = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let (_, spec) = spec_from_value(item).with_context(|| format!("fault #{}", i + 1))?;
        specs.push(spec);
    }
    if specs.is_empty() {
        bail!("no fault spec given");
    }
    Ok(specs)
}

/// Reads one spec, with an optional `service` key beside the FaultSpec
/// fields; returns the service (given or derived from the point) and the spec.
///
/// # Errors
/// When the spec does not parse or validate, or `service` disagrees with
/// the point's prefix.
pub fn spec_from_value(value: Value) -> anyhow::Result<(&'static str, FaultSpec)> {
    let Value::Object(mut map) = value else {
        bail!(
            "a fault spec must be a mapping like {{point: payment.save, kind: latency, ms: 800}}"
        );
    };
    let given =
        match map.remove("service") {
            None => None,
            Some(Value::String(s)) => Some(canonical_service(&s).with_context(|| {
                format!("unknown service {s:?} (one of {})", SERVICES.join(", "))
            })?),
            Some(other) => bail!("service must be a string, got {other}"),
        };
    let spec = FaultSpec::from_value(Value::Object(map)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let derived = service_of_point(&spec.point);
    let service = match (given, derived) {
        (Some(g), Some(d)) if g != d => {
            bail!("point {} belongs to {d}, not to service {g}", spec.point)
        }
        (Some(g), _) => g,
        (None, Some(d)) => d,
        (None, None) => bail!(
            "cannot tell the service of point {:?}: name it with `service:` or use a known point",
            spec.point
        ),
    };
    Ok((service, spec))
}

/// Turns a `KEY=VALUE` parameter into JSON: integers and decimals become
/// numbers, `true`/`false` booleans, anything else a string.
pub fn param_value(raw: &str) -> Value {
    if let Ok(i) = raw.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = raw.parse::<u64>() {
        return Value::from(u);
    }
    if raw.contains('.')
        && let Ok(f) = raw.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(raw.to_string()),
    }
}

/// Builds the spec of `fault set POINT KIND KEY=VALUE...`.
///
/// # Errors
/// A parameter that is not `KEY=VALUE`, a duplicate key, or a spec that does
/// not validate (the message names the field).
pub fn spec_from_args(
    point: &str,
    kind: &str,
    params: &[String],
    duration: Option<&str>,
    probability: Option<f64>,
    schedule: Option<&str>,
) -> anyhow::Result<FaultSpec> {
    let mut map = Map::new();
    map.insert("point".into(), Value::from(point));
    map.insert("kind".into(), Value::from(kind));
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            bail!("parameter {p:?} is not KEY=VALUE (e.g. ms=800)");
        };
        let k = k.trim();
        if k.is_empty() || map.contains_key(k) {
            bail!("parameter {p:?}: empty or repeated key");
        }
        map.insert(k.to_string(), param_value(v.trim()));
    }
    if let Some(d) = duration {
        map.insert("for".into(), Value::from(d));
    }
    if let Some(p) = probability {
        map.insert("probability".into(), json!(p));
    }
    if let Some(s) = schedule {
        let Some((on, off)) = s.split_once('/') else {
            bail!("--schedule takes ON/OFF, e.g. 30s/1m");
        };
        map.insert(
            "schedule".into(),
            json!({"on": on.trim(), "off": off.trim()}),
        );
    }
    FaultSpec::from_value(Value::Object(map)).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Renders a spec's parameters as `key=value ...` (no point, kind or
/// probability), for listings.
pub fn params_text(spec: &FaultSpec) -> String {
    let Ok(Value::Object(map)) = serde_json::to_value(&spec.kind) else {
        return String::new();
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != "kind")
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A client for the admin API of the six services.
#[derive(Debug, Clone)]
pub struct FaultClient {
    http: reqwest::Client,
    token: String,
    /// Service (binary name) → base URL.
    services: BTreeMap<String, String>,
}

impl FaultClient {
    /// A client for services at these base URLs.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        services: impl IntoIterator<Item = (String, String)>,
        token: &str,
    ) -> anyhow::Result<FaultClient> {
        Ok(FaultClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("building HTTP client")?,
            token: token.to_string(),
            services: services
                .into_iter()
                .map(|(k, v)| (k, v.trim_end_matches('/').to_string()))
                .collect(),
        })
    }

    /// A client for a running [`Lab`].
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn for_lab(lab: &Lab) -> anyhow::Result<FaultClient> {
        FaultClient::new(
            lab.services()
                .into_iter()
                .map(|(name, url)| (name.to_string(), url)),
            lab.admin_token(),
        )
    }

    /// The services this client knows, by name.
    pub fn services(&self) -> Vec<&str> {
        self.services.keys().map(String::as_str).collect()
    }

    /// The base URL of a service.
    pub fn service_url(&self, service: &str) -> Option<&str> {
        self.services.get(service).map(String::as_str)
    }

    fn url(&self, service: &str, path: &str) -> anyhow::Result<String> {
        let base = self
            .services
            .get(service)
            .with_context(|| format!("no URL for service {service}"))?;
        Ok(format!("{base}{path}"))
    }

    async fn send(
        &self,
        service: &str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let resp = request.bearer_auth(&self.token).send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach {service}'s admin API: {}; is the lab running? (`tracelab up`)",
                crate::tempo::http_error_summary(&e)
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "{service} refused the admin token (401): pass the lab's token with --admin-token or TRACELAB_ADMIN_TOKEN"
            );
        }
        Ok((status, body))
    }

    fn error_text(body: &Value) -> String {
        body.pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string())
    }

    /// `GET /admin/faults` of one service.
    ///
    /// # Errors
    /// Unreachable service, refused token, or an unexpected answer.
    pub async fn list(&self, service: &str) -> anyhow::Result<FaultsReport> {
        let url = self.url(service, "/admin/faults")?;
        let (status, body) = self.send(service, self.http.get(&url)).await?;
        if !status.is_success() {
            bail!(
                "{service}: GET /admin/faults: {status}: {}",
                Self::error_text(&body)
            );
        }
        serde_json::from_value(body).with_context(|| format!("{service}: unexpected fault list"))
    }

    /// `PUT /admin/faults` on the service that owns the point.
    ///
    /// # Errors
    /// Unreachable service, refused token or spec (with the service's reason).
    pub async fn set(&self, service: &str, spec: &FaultSpec) -> anyhow::Result<ActiveFault> {
        let url = self.url(service, "/admin/faults")?;
        let (status, body) = self.send(service, self.http.put(&url).json(spec)).await?;
        if !status.is_success() {
            bail!(
                "{service} refused the fault at {}: {status}: {}",
                spec.point,
                Self::error_text(&body)
            );
        }
        serde_json::from_value(body).with_context(|| format!("{service}: unexpected answer"))
    }

    /// `DELETE /admin/faults/{point}`; `false` when nothing was set there.
    ///
    /// # Errors
    /// Unreachable service or refused token.
    pub async fn clear_point(&self, service: &str, point: &str) -> anyhow::Result<bool> {
        let url = self.url(service, &format!("/admin/faults/{point}"))?;
        let (status, body) = self.send(service, self.http.delete(&url)).await?;
        match status {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            s => bail!(
                "{service}: DELETE {point}: {s}: {}",
                Self::error_text(&body)
            ),
        }
    }

    /// `DELETE /admin/faults`: clears every fault of a service; returns how many.
    ///
    /// # Errors
    /// Unreachable service or refused token.
    pub async fn clear_service(&self, service: &str) -> anyhow::Result<u64> {
        let url = self.url(service, "/admin/faults")?;
        let (status, body) = self.send(service, self.http.delete(&url)).await?;
        if !status.is_success() {
            bail!(
                "{service}: DELETE /admin/faults: {status}: {}",
                Self::error_text(&body)
            );
        }
        Ok(body.get("cleared").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Turns the `fault.injected` span events of a service on or off.
    ///
    /// # Errors
    /// Unreachable service or refused token.
    pub async fn set_visible(&self, service: &str, visible: bool) -> anyhow::Result<()> {
        let url = self.url(service, "/admin/faults/_visible")?;
        let (status, body) = self
            .send(
                service,
                self.http.put(&url).json(&json!({ "visible": visible })),
            )
            .await?;
        if !status.is_success() {
            bail!(
                "{service}: PUT _visible: {status}: {}",
                Self::error_text(&body)
            );
        }
        Ok(())
    }

    /// Every fault of every service: `(service, report)`.
    ///
    /// # Errors
    /// When any service cannot be listed.
    pub async fn list_all(&self) -> anyhow::Result<Vec<(String, FaultsReport)>> {
        let mut out = Vec::new();
        for service in self.services.keys() {
            out.push((service.clone(), self.list(service).await?));
        }
        Ok(out)
    }

    /// Clears every fault on every service; returns how many were cleared.
    ///
    /// # Errors
    /// When any service cannot be cleared.
    pub async fn clear_all(&self) -> anyhow::Result<u64> {
        let mut n = 0;
        for service in self.services.keys() {
            n += self.clear_service(service).await?;
        }
        Ok(n)
    }
}

/// Where the lab's services are, for the commands that talk to a running lab.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Host the lab's services listen on.
    #[arg(long, env = "TRACELAB_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Token of the services' admin (fault) API.
    #[arg(long, env = "TRACELAB_ADMIN_TOKEN", default_value = DEFAULT_ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: String,
    /// Ports of the running lab (the same flags and variables as `tracelab up`).
    #[command(flatten, next_help_heading = "Lab ports")]
    pub ports: PortArgs,
}

impl LabArgs {
    /// Base URL of a service (or `tempo`).
    pub fn url(&self, service: &str) -> String {
        let ports = self.ports.ports();
        let port = if service == "tempo" {
            ports.tempo
        } else {
            ports.for_service(service).unwrap_or(0)
        };
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("http://{host}:{port}")
    }

    /// The six services' base URLs.
    pub fn service_urls(&self) -> Vec<(String, String)> {
        SERVICES
            .iter()
            .map(|s| (s.to_string(), self.url(s)))
            .collect()
    }

    /// An admin client for the six services.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn fault_client(&self) -> anyhow::Result<FaultClient> {
        FaultClient::new(self.service_urls(), &self.admin_token)
    }
}

/// `tracelab fault`
#[derive(Debug, Args)]
pub struct FaultArgs {
    #[command(subcommand)]
    pub command: FaultCommand,
}

/// The `fault` subcommands.
#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// List the faults set on one service (or all).
    List(FaultListArgs),
    /// Set a fault: `POINT KIND [KEY=VALUE...]`, or `--spec FILE|-|JSON`.
    Set(FaultSetArgs),
    /// Clear a point's fault, a service's faults, or all faults.
    Clear(FaultClearArgs),
    /// List the injection points and the kinds acting at each (no lab needed).
    Points,
}

/// `tracelab fault list`
#[derive(Debug, Args)]
pub struct FaultListArgs {
    /// A service name, or `all`.
    #[arg(default_value = "all")]
    pub service: String,
    /// Print the raw JSON reports.
    #[arg(long)]
    pub json: bool,
    /// Show the faults even while an exercise is running (gives its answer away).
    #[arg(long)]
    pub peek: bool,
    #[command(flatten)]
    pub lab: LabArgs,
}

/// `tracelab fault set`
#[derive(Debug, Args)]
pub struct FaultSetArgs {
    /// Injection point, e.g. payment.save (see `tracelab fault points`).
    #[arg(required_unless_present = "spec", conflicts_with = "spec")]
    pub point: Option<String>,
    /// Fault kind, e.g. latency, error, slow_query.
    #[arg(required_unless_present = "spec")]
    pub kind: Option<String>,
    /// Kind parameters as KEY=VALUE, e.g. ms=800 jitter_ms=100.
    #[arg(value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// How long the fault stays set, e.g. 30s, 5m, 1h [default: until cleared].
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Chance the fault fires on a given request, 0..1.
    #[arg(long)]
    pub probability: Option<f64>,
    /// On/off cycle, e.g. 30s/1m.
    #[arg(long, value_name = "ON/OFF")]
    pub schedule: Option<String>,
    /// A spec (or list of specs) as a JSON/YAML file, `-` for stdin, or inline JSON.
    #[arg(long, value_name = "FILE|-|JSON")]
    pub spec: Option<String>,
    /// Add a `fault.injected` event to the spans where the fault fires.
    #[arg(long)]
    pub show_in_traces: bool,
    /// Send the spec even if the kind has no effect at that point.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub lab: LabArgs,
}

/// `tracelab fault clear`
#[derive(Debug, Args)]
pub struct FaultClearArgs {
    /// A point (payment.save), a service (payment), or `all`.
    #[arg(default_value = "all")]
    pub target: String,
    #[command(flatten)]
    pub lab: LabArgs,
}

/// Runs `tracelab fault ...`.
///
/// # Errors
/// Invalid specs, an unreachable lab, refused requests.
pub async fn run(args: FaultArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        FaultCommand::Points => {
            print_points();
            Ok(ExitCode::SUCCESS)
        }
        FaultCommand::List(a) => list(a).await,
        FaultCommand::Set(a) => set(a).await,
        FaultCommand::Clear(a) => clear(a).await,
    }
}

fn print_points() {
    println!("{:<24} {:<17} {:<52} KINDS", "POINT", "SERVICE", "ACTS ON");
    for p in POINTS {
        println!(
            "{:<24} {:<17} {:<52} {}",
            p.name,
            p.service,
            p.acts,
            p.kind_names().join(", ")
        );
    }
    println!(
        "\nGeneric kinds ({}) act at every point except the .telemetry ones.\n\
         Parameters: tracelab-faults docs, or docs/lab-guide.md.",
        GENERIC_KINDS.join(", ")
    );
}

fn selected_services(target: &str) -> anyhow::Result<Vec<&'static str>> {
    if target.eq_ignore_ascii_case("all") {
        return Ok(SERVICES.to_vec());
    }
    let svc = canonical_service(target).with_context(|| {
        format!(
            "unknown service {target:?}: one of {}, or all",
            SERVICES.join(", ")
        )
    })?;
    Ok(vec![svc])
}

async fn list(args: FaultListArgs) -> anyhow::Result<ExitCode> {
    let client = args.lab.fault_client()?;
    let services = selected_services(&args.service)?;
    let hidden = !args.peek && crate::exercise::exercise_running();
    let mut reports = Vec::new();
    for s in services {
        reports.push((s, client.list(s).await?));
    }
    if hidden {
        let n: usize = reports.iter().map(|(_, r)| r.faults.len()).sum();
        println!(
            "an exercise is running: {n} fault(s) set, details hidden (that would be the answer).\n\
             `tracelab exercise status` shows your progress; add --peek to show them anyway."
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        let out: Vec<Value> = reports
            .iter()
            .map(|(_, r)| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let total: usize = reports.iter().map(|(_, r)| r.faults.len()).sum();
    if total == 0 {
        println!("no faults set");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<17} {:<24} {:<18} {:<28} {:>5} {:<8} EXPIRES",
        "SERVICE", "POINT", "KIND", "PARAMS", "PROB", "ACTIVE"
    );
    let now = chrono::Utc::now();
    for (service, report) in &reports {
        for f in &report.faults {
            let expires = match f.expires_at {
                Some(at) => {
                    let left = (at - now).num_seconds().max(0);
                    format!("in {}", human_secs(left as u64))
                }
                None => "when cleared".into(),
            };
            println!(
                "{:<17} {:<24} {:<18} {:<28} {:>5} {:<8} {expires}",
                service,
                f.spec.point,
                f.spec.kind.name(),
                params_text(&f.spec),
                f.spec.probability,
                if f.active { "yes" } else { "off-phase" },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `95` → `1m35s`.
pub fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn read_spec_arg(arg: &str) -> anyhow::Result<String> {
    if arg == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading stdin")?;
        return Ok(text);
    }
    let trimmed = arg.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return Ok(arg.to_string());
    }
    std::fs::read_to_string(arg).with_context(|| format!("reading fault spec file {arg}"))
}

async fn set(args: FaultSetArgs) -> anyhow::Result<ExitCode> {
    let specs = match (&args.spec, &args.point, &args.kind) {
        (Some(spec), _, _) => parse_specs(&read_spec_arg(spec)?)?,
        (None, Some(point), Some(kind)) => vec![spec_from_args(
            point,
            kind,
            &args.params,
            args.duration.as_deref(),
            args.probability,
            args.schedule.as_deref(),
        )?],
        _ => bail!("give POINT KIND [KEY=VALUE...] or --spec"),
    };
    let mut targets = Vec::new();
    for spec in specs {
        let service = if args.force {
            service_of_point(&spec.point)
                .with_context(|| format!("cannot tell the service of point {}", spec.point))?
        } else {
            check_point_and_kind(&spec)?.service
        };
        targets.push((service, spec));
    }
    let client = args.lab.fault_client()?;
    for (service, spec) in &targets {
        if args.show_in_traces {
            client.set_visible(service, true).await?;
        }
        let started = Instant::now();
        let active = client.set(service, spec).await?;
        let took = started.elapsed();
        let params = params_text(&active.spec);
        let mut line = format!(
            "set {} {}{}{} on {service}",
            active.spec.point,
            active.spec.kind.name(),
            if params.is_empty() { "" } else { " " },
            params
        );
        if active.spec.probability < 1.0 {
            line.push_str(&format!(" (probability {})", active.spec.probability));
        }
        match active.expires_at {
            Some(at) => line.push_str(&format!(
                ", until {}",
                at.with_timezone(&chrono::Local).format("%H:%M:%S")
            )),
            None => line.push_str(", until cleared"),
        }
        println!("{line}  [{} ms]", took.as_millis());
    }
    Ok(ExitCode::SUCCESS)
}

async fn clear(args: FaultClearArgs) -> anyhow::Result<ExitCode> {
    let client = args.lab.fault_client()?;
    let target = args.target.trim();
    if point(target).is_some() || (target.contains('.') && service_of_point(target).is_some()) {
        let service = service_of_point(target).context("no service for that point")?;
        if client.clear_point(service, target).await? {
            println!("cleared {target} on {service}");
        } else {
            println!("no fault was set at {target}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut total = 0;
    for service in selected_services(target)? {
        total += client.clear_service(service).await?;
    }
    println!("cleared {total} fault{}", if total == 1 { "" } else { "s" });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_names_its_service_by_prefix() {
        for p in POINTS {
            assert_eq!(service_of_point(p.name), Some(p.service), "{}", p.name);
            for k in p.kinds {
                assert!(FaultKind::NAMES.contains(k), "{k} at {}", p.name);
            }
        }
        for s in SERVICES {
            assert!(
                POINTS.iter().any(|p| p.service == s && p.is_telemetry()),
                "{s} has a telemetry point"
            );
        }
    }

    #[test]
    fn kinds_act_where_the_contract_says() {
        let save = point("payment.save").unwrap();
        assert!(save.accepts(&FaultKind::Latency {
            ms: 1,
            jitter_ms: 0
        }));
        assert!(save.accepts(&FaultKind::LockContention { hold_ms: 5 }));
        assert!(!save.accepts(&FaultKind::DeadLetter));
        let tele = point("search.telemetry").unwrap();
        assert!(tele.accepts(&FaultKind::DropSpans));
        assert!(!tele.accepts(&FaultKind::Latency {
            ms: 1,
            jitter_ms: 0
        }));
        assert!(!tele.accepts(&FaultKind::SamplingMiss { rate: 0.1 }));
        assert!(
            point("gateway.telemetry")
                .unwrap()
                .accepts(&FaultKind::SamplingMiss { rate: 0.1 })
        );
    }

    #[test]
    fn builds_specs_from_arguments() {
        let spec = spec_from_args(
            "payment.save",
            "latency",
            &["ms=800".into(), "jitter_ms=100".into()],
            Some("5m"),
            Some(0.5),
            Some("30s/1m"),
        )
        .unwrap();
        assert_eq!(
            spec.kind,
            FaultKind::Latency {
                ms: 800,
                jitter_ms: 100
            }
        );
        assert_eq!(spec.duration, Some(Duration::from_secs(300)));
        assert_eq!(spec.probability, 0.5);
        assert!(spec.schedule.is_some());
        let err = spec_from_args(
            "payment.save",
            "latency",
            &["msx=1".into()],
            None,
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("msx") || err.contains("ms"), "{err}");
        let err = spec_from_args(
            "payment.save",
            "latency",
            &["ms=999999".into()],
            None,
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("latency.ms"), "{err}");
        assert!(
            spec_from_args("payment.save", "latency", &["ms".into()], None, None, None).is_err()
        );
        assert!(
            spec_from_args(
                "x.y",
                "error",
                &["message=bad upstream".into()],
                None,
                None,
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn checks_points_and_kinds() {
        let spec = FaultSpec::new("payment.sav", FaultKind::DropSpans);
        let err = check_point_and_kind(&spec).unwrap_err().to_string();
        assert!(err.contains("payment.save"), "{err}");
        let spec = FaultSpec::new("payment.save", FaultKind::DeadLetter);
        let err = check_point_and_kind(&spec).unwrap_err().to_string();
        assert!(err.contains("lock_contention"), "{err}");
        let spec = FaultSpec::new("provider.charge", FaultKind::RateLimit { retry_after_s: 1 });
        assert_eq!(
            check_point_and_kind(&spec).unwrap().service,
            "payment-provider"
        );
    }

    #[test]
    fn parses_spec_files() {
        let yaml = "- {point: payment.save, kind: latency, ms: 800}\n- {service: provider, point: provider.charge, kind: outage}\n";
        let specs = parse_specs(yaml).unwrap();
        assert_eq!(specs.len(), 2);
        let json = r#"{"point":"auth.verify","kind":"error","status":503}"#;
        assert_eq!(parse_specs(json).unwrap().len(), 1);
        let err = format!(
            "{:#}",
            parse_specs("{point: payment.save, kind: latency}").unwrap_err()
        );
        assert!(err.contains("ms"), "{err}");
        let err = format!(
            "{:#}",
            parse_specs("{service: auth, point: payment.save, kind: dead_letter}").unwrap_err()
        );
        assert!(err.contains("belongs to payment"), "{err}");
    }

    #[test]
    fn param_values_are_typed() {
        assert_eq!(param_value("800"), json!(800));
        assert_eq!(param_value("-5"), json!(-5));
        assert_eq!(param_value("0.25"), json!(0.25));
        assert_eq!(param_value("true"), json!(true));
        assert_eq!(param_value("user.id"), json!("user.id"));
        assert_eq!(human_secs(95), "1m35s");
    }
}
