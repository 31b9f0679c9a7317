//! `tracelab exercise start|hint|answer|reveal|status|history`: a client of
//! the lab console, which holds the exercise (so the page and another
//! terminal see the same one) and sends its background load.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::args::{LabUrlArg, parse_rate};
use crate::console::api::exercise::{
    CurrentExercise, ExerciseStatus, Graded, Hints, History, Solution,
};
use crate::exercise::Outcome;
use crate::format::human_secs;
use crate::scenario::{Grade, Lang};

/// `tracelab exercise`
#[derive(Debug, Args)]
pub struct ExerciseArgs {
    #[command(subcommand)]
    pub command: ExerciseCommand,
    /// Language of the texts [default: from $LANG].
    #[arg(long, global = true, value_name = "en|ja")]
    pub lang: Option<Lang>,
    #[command(flatten)]
    pub lab: LabUrlArg,
}

/// The `exercise` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExerciseCommand {
    /// Inject a hidden scenario; the console sends gentle background load until it is solved.
    Start(StartArgs),
    /// Show the next hint (three, vaguest first).
    Hint,
    /// Name the cause: SERVICE [OPERATION], e.g. `payment savePaymentResult`.
    Answer(AnswerArgs),
    /// Give up: show the answer, the explanation and the revealing query.
    Reveal,
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
    /// Inject only: no background load.
    #[arg(long)]
    pub no_load: bool,
    /// Background load: checkouts per second (plus twice as many searches), at most 50.
    #[arg(long, default_value_t = 1.0, value_parser = parse_rate, value_name = "PER_SEC")]
    pub rate: f64,
    /// Abandon a running exercise and start a new one.
    #[arg(long)]
    pub force: bool,
}

/// `tracelab exercise answer`
#[derive(Debug, Args)]
pub struct AnswerArgs {
    /// Service at fault (gateway, auth, search, payment, payment-provider, notification).
    pub service: String,
    /// Operation (span name) at fault, e.g. savePaymentResult or "POST /v1/charges".
    #[arg(num_args = 0.., trailing_var_arg = true)]
    pub operation: Vec<String>,
    /// A trace that shows the cause (checked for a span of that service and operation).
    #[arg(long, value_name = "TRACE_ID")]
    pub trace: Option<String>,
}

/// Runs `tracelab exercise ...`.
///
/// # Errors
/// No console, or its refusal (no running exercise where one is needed,
/// one running already, an unknown scenario or service).
pub async fn run(args: ExerciseArgs) -> anyhow::Result<ExitCode> {
    let lang = args.lang.unwrap_or_else(Lang::from_env);
    let console = args.lab.client(Duration::from_secs(60))?;
    match args.command {
        ExerciseCommand::Start(a) => {
            let load = if a.no_load {
                json!(false)
            } else {
                json!({ "rate": a.rate })
            };
            let body = json!({
                "scenario": a.scenario,
                "seed": a.seed,
                "force": a.force,
                "load": load,
            });
            let status: ExerciseStatus = console.post("/api/exercise", Some(&body)).await?;
            print_started(&status, lang, console.base_url());
        }
        ExerciseCommand::Hint => {
            let hints: Hints = console.post("/api/exercise/hint", None::<&Value>).await?;
            for (i, h) in hints.hints.iter().enumerate() {
                println!("hint {}/{}: {}", i + 1, hints.total, h.get(lang).trim());
            }
            if !hints.new {
                println!("(that was the last hint; `tracelab exercise reveal` shows the answer)");
            }
        }
        ExerciseCommand::Answer(a) => {
            let operation = a.operation.join(" ");
            let operation = (!operation.trim().is_empty()).then_some(operation);
            let body = json!({
                "service": a.service,
                "operation": operation,
                "trace_id": a.trace,
            });
            let graded: Graded = console.post("/api/exercise/answer", Some(&body)).await?;
            print_grade(&graded, lang);
            return Ok(if graded.correct {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        ExerciseCommand::Reveal => {
            let solution: Solution = console.post("/api/exercise/reveal", None::<&Value>).await?;
            println!(
                "exercise #{}: {} — {}",
                solution.number,
                solution.scenario.id,
                solution.scenario.title.get(lang)
            );
            print_solution(&solution, lang);
        }
        ExerciseCommand::Status => {
            let current: CurrentExercise = console.get("/api/exercise").await?;
            print_status(current.exercise.as_ref(), lang);
        }
        ExerciseCommand::History => {
            let history: History = console.get("/api/exercise/history").await?;
            print_history(&history);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_started(status: &ExerciseStatus, lang: Lang, console: &str) {
    println!(
        "exercise #{} started{}.",
        status.number,
        status
            .seed
            .map(|s| format!(" (seed {s}; replay with --seed {s})"))
            .unwrap_or_default()
    );
    println!("\n{}", status.story.get(lang).trim());
    println!(
        "\nsymptom at the gateway: {}",
        status.symptom.get(lang).trim()
    );
    println!(
        "\nfind the service and the operation at fault in the traces (the console at {console}):\n  \
         tracelab traces --since 5m   |   tracelab trace <TRACE ID>   |   tracelab traces --q '{{ status = error }}'\n\
         then: tracelab exercise answer SERVICE OPERATION   (stuck? tracelab exercise hint)"
    );
    match &status.load {
        Some(load) => println!(
            "\nthe console sends gentle background load ({} checkout/s, {} search/s) until the exercise ends.",
            load.rate,
            load.rate * 2.0
        ),
        None => println!("\n(no background load: send your own with `tracelab checkout`)"),
    }
}

fn print_solution(s: &Solution, lang: Lang) {
    println!("\nanswer: {}", s.answer.display());
    println!("\n{}", s.explanation.get(lang).trim());
    println!("\nthe query that shows it in Tempo (Grafana Explore, or `tracelab traces --q`):");
    println!("  {}", s.query);
    match &s.clear_error {
        None => println!("\nthe faults are cleared."),
        Some(e) => println!(
            "\nthe faults could not be cleared ({e}); clear them with `tracelab fault clear all`."
        ),
    }
}

fn print_grade(g: &Graded, lang: Lang) {
    if let Some(t) = &g.trace {
        match (t.found, t.has_answered_span) {
            (false, _) => println!("(trace {} is not in Tempo)", t.trace_id),
            (true, true) => println!("(trace {} holds that span)", t.trace_id),
            (true, false) => println!("(trace {} holds no such span)", t.trace_id),
        }
    }
    match g.grade {
        Grade::Correct => {
            let Some(s) = &g.solution else {
                println!("correct!");
                return;
            };
            let took = s
                .elapsed_secs
                .map(|secs| human_secs(secs.round() as u64))
                .unwrap_or_default();
            println!(
                "correct! {} — found in {took} with {} hint{}.",
                s.scenario.title.get(lang),
                s.hints_used,
                if s.hints_used == 1 { "" } else { "s" },
            );
            print_solution(s, lang);
            println!("Next: tracelab exercise start --random");
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

fn print_status(status: Option<&ExerciseStatus>, lang: Lang) {
    let Some(s) = status else {
        println!("no exercise running (`tracelab exercise start --random` starts one)");
        return;
    };
    println!(
        "exercise #{} running for {}{}",
        s.number,
        human_secs(s.elapsed_secs.round() as u64),
        s.seed.map(|s| format!(" (seed {s})")).unwrap_or_default()
    );
    match s.faults_expire_at {
        Some(at) if at > chrono::Utc::now() => println!(
            "its faults expire at {} (in {}); then the symptom goes",
            at.with_timezone(&chrono::Local).format("%H:%M:%S"),
            human_secs((at - chrono::Utc::now()).num_seconds().max(0) as u64)
        ),
        Some(_) => println!(
            "its faults have expired: the symptom is gone (answer, or `tracelab exercise reveal`)"
        ),
        None => {}
    }
    println!("\nsymptom: {}", s.symptom.get(lang).trim());
    if s.hints.is_empty() {
        println!("\nno hints used (`tracelab exercise hint`)");
    } else {
        println!();
        for (i, h) in s.hints.iter().enumerate() {
            println!("hint {}/{}: {}", i + 1, s.hints_total, h.get(lang).trim());
        }
    }
    if !s.attempts.is_empty() {
        println!("\nanswers so far:");
        for a in &s.attempts {
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
    if let Some(load) = &s.load {
        println!(
            "\nbackground load: {} checkout/s, {} search/s",
            load.rate,
            load.rate * 2.0
        );
    }
}

fn grade_word(g: Grade) -> &'static str {
    match g {
        Grade::Correct => "correct",
        Grade::NeedsOperation => "right service, operation needed",
        Grade::WrongOperation => "right service, wrong operation",
        Grade::Wrong => "wrong",
    }
}

fn print_history(history: &History) {
    if history.entries.is_empty() {
        println!("no finished exercises yet");
        return;
    }
    println!(
        "{:>4}  {:<16} {:<34} {:<9} {:>8} {:>5} {:>7}",
        "#", "STARTED", "SCENARIO", "OUTCOME", "TIME", "HINTS", "ANSWERS"
    );
    for h in &history.entries {
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
    if let Some(mean) = history.mean_secs {
        println!(
            "\n{} solved, mean time {}",
            history.solved,
            human_secs(mean.round() as u64)
        );
    }
}
