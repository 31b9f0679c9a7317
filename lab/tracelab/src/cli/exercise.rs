//! `tracelab exercise start|hint|answer|reveal|status|history`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use chrono::Utc;
use clap::{Args, Subcommand};

use super::args::{LabArgs, TokenArgs, parse_rate};
use super::signal::shutdown_signal;
use crate::exercise::{Begin, Exercises, Graded, HistoryEntry, Outcome, pick};
use crate::format::human_secs;
use crate::load::{LoadConfig, Mix, Progress, Route, run_until};
use crate::scenario::{Catalog, Grade, Lang, Scenario};

/// `tracelab exercise`
#[derive(Debug, Args)]
pub struct ExerciseArgs {
    #[command(subcommand)]
    pub command: ExerciseCommand,
    /// Scenario directory [default: $TRACELAB_SCENARIOS, ./scenarios, or the workspace's].
    #[arg(long, value_name = "DIR", global = true)]
    pub scenarios: Option<PathBuf>,
    /// Language of the texts [default: from $LANG].
    #[arg(long, global = true, value_name = "en|ja")]
    pub lang: Option<Lang>,
}

/// The `exercise` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExerciseCommand {
    /// Inject a hidden scenario and send gentle background load (until solved or Ctrl-C).
    Start(StartArgs),
    /// Show the next hint (three, vaguest first).
    Hint,
    /// Name the cause: SERVICE [OPERATION], e.g. `payment savePaymentResult`.
    Answer(AnswerArgs),
    /// Give up: show the answer, the explanation and the revealing query.
    Reveal(TokenArgs),
    /// The running exercise: symptom, hints unlocked, answers given.
    Status,
    /// Past exercises with the time each took.
    History,
}

/// `tracelab exercise start`
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Play this scenario (it is no secret then, but the hints still help).
    #[arg(long, value_name = "ID", conflicts_with_all = ["random", "seed"])]
    pub scenario: Option<String>,
    /// Pick a scenario at random (the default).
    #[arg(long)]
    pub random: bool,
    /// Seed of the random pick, to replay the same exercise.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Inject and return: no background load.
    #[arg(long)]
    pub no_load: bool,
    /// Background load: checkouts per second (plus twice as many searches).
    #[arg(long, default_value_t = 1.0, value_parser = parse_rate, value_name = "PER_SEC")]
    pub rate: f64,
    /// Abandon a running exercise and start a new one.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub lab: LabArgs,
}

/// `tracelab exercise answer`
#[derive(Debug, Args)]
pub struct AnswerArgs {
    /// Service at fault (gateway, auth, search, payment, payment-provider, notification).
    pub service: String,
    /// Operation (span name) at fault, e.g. savePaymentResult or "POST /v1/charges".
    #[arg(num_args = 0.., trailing_var_arg = true)]
    pub operation: Vec<String>,
    #[command(flatten)]
    pub token: TokenArgs,
}

/// Runs `tracelab exercise ...`.
///
/// # Errors
/// No lab, no catalog, no running exercise where one is needed.
pub async fn run(args: ExerciseArgs) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::load_or_default(args.scenarios.as_deref())?;
    let lang = args.lang.unwrap_or_else(Lang::from_env);
    let ex = Exercises::open_default()?;
    match args.command {
        ExerciseCommand::Start(a) => start(&ex, &catalog, lang, a).await,
        ExerciseCommand::Hint => {
            let (state, hints, newly) = ex.hint(&catalog)?;
            for (i, h) in hints.iter().enumerate() {
                println!("hint {}/3: {}", i + 1, h.get(lang).trim());
            }
            if !newly {
                println!("(that was the last hint; `tracelab exercise reveal` shows the answer)");
            }
            let _ = state;
            Ok(ExitCode::SUCCESS)
        }
        ExerciseCommand::Answer(a) => {
            let operation = a.operation.join(" ");
            let operation = (!operation.trim().is_empty()).then_some(operation);
            let graded = ex
                .answer(
                    &catalog,
                    &a.token.token()?,
                    &a.service,
                    operation.as_deref(),
                )
                .await?;
            print_grade(&graded, lang);
            Ok(if graded.grade == Grade::Correct {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ExerciseCommand::Reveal(t) => {
            let revealed = ex.reveal(&catalog, &t.token()?).await?;
            let scenario = &revealed.scenario;
            println!(
                "exercise #{}: {} — {}",
                revealed.entry.number,
                scenario.id,
                scenario.title.get(lang)
            );
            print_solution(scenario, lang);
            print_cleared(revealed.clear_error.as_deref(), "");
            Ok(ExitCode::SUCCESS)
        }
        ExerciseCommand::Status => {
            status(&ex, &catalog, lang)?;
            Ok(ExitCode::SUCCESS)
        }
        ExerciseCommand::History => {
            print_history(&ex.history()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Says whether the scenario's faults are gone, and what to do if not.
fn print_cleared(clear_error: Option<&str>, next: &str) {
    match clear_error {
        None => println!("\nthe faults are cleared.{next}"),
        Some(e) => println!(
            "\nthe faults could not be cleared ({e}); clear them with `tracelab fault clear all`.{next}"
        ),
    }
}

fn print_solution(s: &Scenario, lang: Lang) {
    println!("\nanswer: {}", s.answer.display());
    println!("\n{}", s.explanation.get(lang).trim());
    println!("\nthe query that shows it in Tempo (Grafana Explore, or `tracelab traces --q`):");
    println!("  {}", s.query);
}

fn print_grade(g: &Graded, lang: Lang) {
    match g.grade {
        Grade::Correct => {
            let entry = g.finished.as_ref();
            let took = entry
                .and_then(|e| e.elapsed_secs)
                .map(|s| human_secs(s.round() as u64))
                .unwrap_or_default();
            let wrong = entry
                .map(|e| {
                    e.attempts
                        .iter()
                        .filter(|a| a.grade != Grade::Correct)
                        .count()
                })
                .unwrap_or(0);
            let hints = entry.map(|e| e.hints_used).unwrap_or(0);
            println!(
                "correct! {} — found in {took} with {hints} hint{} and {wrong} other answer{}.",
                g.scenario.title.get(lang),
                if hints == 1 { "" } else { "s" },
                if wrong == 1 { "" } else { "s" }
            );
            print_solution(&g.scenario, lang);
            print_cleared(
                g.clear_error.as_deref(),
                " Next: tracelab exercise start --random",
            );
        }
        Grade::NeedsOperation => println!(
            "right service. Which operation? Answer again with the span name, e.g. \
             `tracelab exercise answer SERVICE \"OPERATION\"`."
        ),
        Grade::WrongOperation => println!(
            "right service, but not that operation: look at which of its spans carries the time or the error."
        ),
        Grade::Wrong => println!(
            "not it. Follow the symptom down the trace (`tracelab exercise hint` if stuck)."
        ),
    }
}

fn status(ex: &Exercises, catalog: &Catalog, lang: Lang) -> anyhow::Result<()> {
    match ex.current()? {
        None => println!("no exercise running (`tracelab exercise start --random` starts one)"),
        Some(state) => {
            let scenario = ex.scenario_of(&state, catalog)?;
            let ago = (Utc::now() - state.started_at).num_seconds().max(0) as u64;
            println!(
                "exercise #{} running for {}{}",
                state.number,
                human_secs(ago),
                state
                    .seed
                    .map(|s| format!(" (seed {s})"))
                    .unwrap_or_default()
            );
            println!("\nsymptom: {}", scenario.symptom.get(lang).trim());
            println!("\ngateway {}   tempo {}", state.gateway, state.tempo);
            if state.hints_unlocked == 0 {
                println!("\nno hints used (`tracelab exercise hint`)");
            } else {
                println!();
                for (i, h) in scenario.hints[..state.hints_unlocked].iter().enumerate() {
                    println!("hint {}/3: {}", i + 1, h.get(lang).trim());
                }
            }
            if !state.attempts.is_empty() {
                println!("\nanswers so far:");
                for a in &state.attempts {
                    println!(
                        "  {} {}{}  -> {}",
                        a.at.with_timezone(&chrono::Local).format("%H:%M:%S"),
                        a.service,
                        a.operation
                            .as_deref()
                            .map(|o| format!(" / {o}"))
                            .unwrap_or_default(),
                        grade_word(a.grade)
                    );
                }
            }
        }
    }
    Ok(())
}

fn grade_word(g: Grade) -> &'static str {
    match g {
        Grade::Correct => "correct",
        Grade::NeedsOperation => "right service, operation needed",
        Grade::WrongOperation => "right service, wrong operation",
        Grade::Wrong => "wrong",
    }
}

fn print_history(history: &[HistoryEntry]) {
    if history.is_empty() {
        println!("no finished exercises yet");
        return;
    }
    println!(
        "{:>4}  {:<16} {:<34} {:<9} {:>8} {:>5} {:>7}",
        "#", "STARTED", "SCENARIO", "OUTCOME", "TIME", "HINTS", "ANSWERS"
    );
    for h in history {
        println!(
            "{:>4}  {:<16} {:<34} {:<9} {:>8} {:>5} {:>7}",
            h.number,
            h.started_at
                .with_timezone(&chrono::Local)
                .format("%m-%d %H:%M"),
            h.scenario,
            match h.outcome {
                Outcome::Solved => "solved",
                Outcome::Revealed => "revealed",
                Outcome::Abandoned => "abandoned",
            },
            h.elapsed_secs
                .map(|s| human_secs(s.round() as u64))
                .unwrap_or_else(|| "-".into()),
            h.hints_used,
            h.attempts.len()
        );
    }
    let solved: Vec<f64> = history.iter().filter_map(|h| h.elapsed_secs).collect();
    if !solved.is_empty() {
        let mean = solved.iter().sum::<f64>() / solved.len() as f64;
        println!(
            "\n{} solved, mean time {}",
            solved.len(),
            human_secs(mean.round() as u64)
        );
    }
}

async fn start(
    ex: &Exercises,
    catalog: &Catalog,
    lang: Lang,
    a: StartArgs,
) -> anyhow::Result<ExitCode> {
    if catalog.scenarios.is_empty() {
        bail!("the catalog {} holds no scenario", catalog.dir.display());
    }
    let (scenario, seed) = match &a.scenario {
        Some(id) => (catalog.get(id)?, None),
        None => {
            let seed = a.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
                    % 1_000_000
            });
            (
                &catalog.scenarios[pick(seed, catalog.scenarios.len())],
                Some(seed),
            )
        }
    };
    let client = a.lab.fault_client()?;
    let gateway = a.lab.url("gateway");
    let tempo = a.lab.url("tempo");
    let state = ex
        .begin(
            catalog,
            Begin {
                scenario,
                client: &client,
                gateway: &gateway,
                tempo: &tempo,
                seed,
                force: a.force,
            },
        )
        .await?;
    println!(
        "exercise #{} started{}.",
        state.number,
        seed.map(|s| format!(" (seed {s}; replay with --seed {s})"))
            .unwrap_or_default()
    );
    println!("\n{}", scenario.story.get(lang).trim());
    println!(
        "\nsymptom at the gateway: {}",
        scenario.symptom.get(lang).trim()
    );
    println!(
        "\nfind the service and the operation at fault in the traces (Tempo at {tempo}):\n  \
         tracelab traces --since 5m   |   tracelab trace <TRACE ID>   |   tracelab traces --q '{{ status = error }}'\n\
         then: tracelab exercise answer SERVICE OPERATION   (stuck? tracelab exercise hint)"
    );
    if a.no_load {
        println!("\n(no background load: send your own with `tracelab checkout`)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "\nsending gentle background load ({} checkout/s, {} search/s) until the exercise ends; Ctrl-C stops the load only.",
        a.rate,
        a.rate * 2.0
    );
    let number = state.number;
    background_load(ex, &gateway, a.rate, number).await?;
    Ok(ExitCode::SUCCESS)
}

/// Sends checkouts and searches (twice as many) with the load generator
/// ([`crate::load`]) at `rate` checkouts per second, until exercise `number`
/// is over (answered or revealed, maybe from another terminal) or Ctrl-C.
///
/// # Errors
/// When the load generator cannot start (gateway unreachable, login refused).
pub async fn background_load(
    ex: &Exercises,
    gateway: &str,
    rate: f64,
    number: u64,
) -> anyhow::Result<()> {
    let config = LoadConfig {
        gateway: gateway.to_string(),
        rps: rate.clamp(0.05, 50.0) * 3.0,
        duration: None,
        mix: Mix::of(&[(Route::Checkout, 1), (Route::Search, 2)]),
        // A hang must not make requests pile up without bound.
        max_in_flight: 64,
        timeout: Duration::from_secs(15),
        progress: Progress::Stdout,
        ..LoadConfig::default()
    };
    let interrupted = std::sync::atomic::AtomicBool::new(false);
    let stop = async {
        let over = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                match ex.current() {
                    Ok(Some(s)) if s.number == number => {}
                    _ => return,
                }
            }
        };
        tokio::select! {
            () = shutdown_signal() => {
                interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            () = over => {}
        }
    };
    let summary = run_until(config, stop).await?;
    println!("\n{}", summary.render());
    if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        println!(
            "load stopped. The exercise is still running: tracelab exercise status / hint / answer"
        );
    } else {
        println!("the exercise is over; load stopped.");
    }
    Ok(())
}
