//! `tracelab fault list|set|clear|points`.
//!
//! ```text
//! tracelab fault points                                  # every point and the kinds acting there
//! tracelab fault set payment.save latency ms=800 --for 5m
//! tracelab fault set auth.verify error                   # expires by itself after 15m
//! tracelab fault set provider.charge outage --for never  # stays until cleared
//! tracelab fault set provider.charge outage --probability 0.3
//! tracelab fault set --spec faults.yaml                  # one spec or a list, JSON or YAML
//! tracelab fault list                                    # every service (or: tracelab fault list payment)
//! tracelab fault clear payment.save                      # one point; a service name or `all` clears more
//! ```
//!
//! Every command but `points` is a client of the lab console (`--lab`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::args::LabUrlArg;
use crate::console::ConsoleClient;
use crate::console::api::faults::{Cleared, ClearedPoint, FaultList, SetFault};
use crate::fault::{
    GENERIC_KINDS, canonical_service, check_point_and_kind, params_text, parse_specs, point,
    service_names, service_of_point, spec_from_args,
};
use crate::format::human_secs;
use tracelab_contract::fault::FaultPoint;

/// `tracelab fault`
#[derive(Debug, Args)]
pub struct FaultArgs {
    #[command(subcommand)]
    pub command: FaultCommand,
    #[command(flatten)]
    pub lab: LabUrlArg,
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
    /// How long the fault stays set, e.g. 30s, 5m, 1h, or `never` to keep it
    /// until cleared [default: 15m].
    #[arg(long = "for", value_name = "DURATION|never")]
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
}

/// `tracelab fault clear`
#[derive(Debug, Args)]
pub struct FaultClearArgs {
    /// A point (payment.save), a service (payment), or `all`.
    #[arg(default_value = "all")]
    pub target: String,
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
        FaultCommand::List(a) => list(a, &args.lab).await,
        FaultCommand::Set(a) => set(a, &args.lab).await,
        FaultCommand::Clear(a) => clear(a, &args.lab).await,
    }
}

fn print_points() {
    println!("{:<24} {:<17} {:<52} KINDS", "POINT", "SERVICE", "ACTS ON");
    for p in FaultPoint::ALL {
        println!(
            "{:<24} {:<17} {:<52} {}",
            p.name(),
            p.service().name(),
            p.acts(),
            p.kind_names().join(", ")
        );
    }
    println!(
        "\nGeneric kinds ({}) act at every point except the .telemetry ones.\n\
         Parameters: docs/architecture.md (fault kinds) or docs/lab-guide.md.",
        GENERIC_KINDS.join(", ")
    );
}

fn selected_services(target: &str) -> anyhow::Result<Vec<&'static str>> {
    if target.eq_ignore_ascii_case("all") {
        return Ok(service_names());
    }
    let svc = canonical_service(target).with_context(|| {
        format!(
            "unknown service {target:?}: one of {}, or all",
            service_names().join(", ")
        )
    })?;
    Ok(vec![svc])
}

fn console(lab: &LabUrlArg) -> anyhow::Result<ConsoleClient> {
    lab.client(Duration::from_secs(30))
}

async fn list(args: FaultListArgs, lab: &LabUrlArg) -> anyhow::Result<ExitCode> {
    let services = selected_services(&args.service)?;
    let path = if args.peek {
        "/api/faults?peek=true"
    } else {
        "/api/faults"
    };
    let list: FaultList = console(lab)?.get(path).await?;
    if list.hidden {
        println!(
            "an exercise is running: {} fault(s) set, details hidden (that would be the answer).\n\
             `tracelab exercise status` shows your progress; add --peek to show them anyway.",
            list.count
        );
        return Ok(ExitCode::SUCCESS);
    }
    let reports: Vec<_> = list
        .services
        .into_iter()
        .filter(|s| services.contains(&s.service.as_str()))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(ExitCode::SUCCESS);
    }
    let total: usize = reports.iter().map(|r| r.faults.len()).sum();
    if total == 0 {
        println!("no faults set");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<17} {:<24} {:<18} {:<28} {:>5} {:<8} EXPIRES",
        "SERVICE", "POINT", "KIND", "PARAMS", "PROB", "ACTIVE"
    );
    let now = chrono::Utc::now();
    for report in &reports {
        for f in &report.faults {
            let expires = match f.expires_at {
                Some(at) => {
                    let left = (at - now).num_seconds().max(0);
                    format!("in {}", human_secs(left as u64))
                }
                None => "never".into(),
            };
            println!(
                "{:<17} {:<24} {:<18} {:<28} {:>5} {:<8} {expires}",
                report.service,
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

async fn set(args: FaultSetArgs, lab: &LabUrlArg) -> anyhow::Result<ExitCode> {
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
            check_point_and_kind(&spec)?.service().name()
        };
        targets.push((service, spec));
    }
    let console = console(lab)?;
    let mut path = String::from("/api/faults?");
    if args.force {
        path.push_str("force=true&");
    }
    if args.show_in_traces {
        path.push_str("show_in_traces=true");
    }
    for (_, spec) in &targets {
        let started = Instant::now();
        let set: SetFault = console.put(path.trim_end_matches(['?', '&']), spec).await?;
        let took = started.elapsed();
        let active = set.fault;
        let params = params_text(&active.spec);
        let mut line = format!(
            "set {} {}{}{} on {}",
            active.spec.point,
            active.spec.kind.name(),
            if params.is_empty() { "" } else { " " },
            params,
            set.service
        );
        if active.spec.probability < 1.0 {
            line.push_str(&format!(" (probability {})", active.spec.probability));
        }
        match active.expires_at {
            Some(at) => line.push_str(&format!(
                ", until {}",
                at.with_timezone(&chrono::Local).format("%H:%M:%S")
            )),
            None => line.push_str(", until cleared (never expires)"),
        }
        println!("{line}  [{} ms]", took.as_millis());
    }
    Ok(ExitCode::SUCCESS)
}

async fn clear(args: FaultClearArgs, lab: &LabUrlArg) -> anyhow::Result<ExitCode> {
    let console = console(lab)?;
    let target = args.target.trim();
    if point(target).is_some() || (target.contains('.') && service_of_point(target).is_some()) {
        let cleared: ClearedPoint = console.delete(&format!("/api/faults/{target}")).await?;
        if cleared.cleared {
            println!("cleared {target} on {}", cleared.service);
        } else {
            println!("no fault was set at {target}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let path = match selected_services(target)?.as_slice() {
        [one] if !target.eq_ignore_ascii_case("all") => format!("/api/faults?service={one}"),
        _ => "/api/faults".to_string(),
    };
    let cleared: Cleared = console.delete(&path).await?;
    let total = cleared.cleared;
    println!("cleared {total} fault{}", if total == 1 { "" } else { "s" });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tracelab_contract::fault::duration;
    use tracelab_contract::fault::limits::DEFAULT_FAULT_LIFETIME;

    use super::*;
    use crate::cli::{Cli, Command};

    fn set_args(argv: &[&str]) -> FaultSetArgs {
        let cli = Cli::try_parse_from([&["tracelab", "fault", "set"], argv].concat()).unwrap();
        let Command::Fault(FaultArgs {
            command: FaultCommand::Set(args),
            ..
        }) = cli.command
        else {
            panic!("not fault set")
        };
        args
    }

    fn spec_of(args: &FaultSetArgs) -> tracelab_contract::fault::FaultSpec {
        spec_from_args(
            args.point.as_deref().unwrap(),
            args.kind.as_deref().unwrap(),
            &args.params,
            args.duration.as_deref(),
            args.probability,
            args.schedule.as_deref(),
        )
        .unwrap()
    }

    #[test]
    fn for_never_and_the_default_lifetime() {
        let args = set_args(&["payment.save", "latency", "ms=5", "--for", "never"]);
        assert_eq!(spec_of(&args).duration, None, "--for never: until cleared");
        let args = set_args(&["payment.save", "latency", "ms=5", "--for", "90s"]);
        assert_eq!(
            spec_of(&args).duration,
            Some(std::time::Duration::from_secs(90))
        );
        let args = set_args(&["payment.save", "latency", "ms=5"]);
        assert_eq!(spec_of(&args).duration, Some(DEFAULT_FAULT_LIFETIME));
        let args = set_args(&["payment.save", "latency", "ms=5", "--for", "forever"]);
        let err = spec_from_args(
            "payment.save",
            "latency",
            &args.params,
            args.duration.as_deref(),
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("or never"), "{err}");
    }

    #[test]
    fn the_for_help_names_the_default_and_never() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("fault")
            .and_then(|c| c.find_subcommand_mut("set"))
            .unwrap()
            .render_long_help()
            .to_string();
        let default = format!("[default: {}]", duration::format(DEFAULT_FAULT_LIFETIME));
        assert!(help.contains(&default), "{help}");
        assert!(help.contains("`never`"), "{help}");
    }
}
