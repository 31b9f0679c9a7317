//! `tracelab exercise`: play a scenario blind. `start` injects a hidden
//! scenario (chosen, or random with a seed) and sends gentle background
//! load; the learner watches the symptom at the gateway, reads the traces,
//! and answers `SERVICE [OPERATION]`. `hint` unlocks the next of three
//! hints, `answer` grades (and on a correct answer shows the explanation and
//! the query that reveals the cause, then clears the faults), `reveal` gives
//! up, `status` shows progress and `history` the past attempts.
//!
//! State lives in a directory (`$TRACELAB_HOME`, else `~/.tracelab`):
//! `exercise.json` for the running exercise (so `hint` and `answer` work
//! from another terminal while `start` sends load, or after it returned)
//! and `history.json` for finished ones, each with the time from start to
//! the correct answer. The running exercise names its scenario by a digest
//! only, so the file does not give the answer away.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fault::{FaultClient, LabArgs, human_secs};
use crate::scenario::{Catalog, Grade, Lang, Scenario, Text, load_catalog};

const CURRENT: &str = "exercise.json";
const HISTORY: &str = "history.json";

/// The state directory: `$TRACELAB_HOME`, else `~/.tracelab`.
///
/// # Errors
/// When neither `TRACELAB_HOME` nor `HOME` is set.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TRACELAB_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .context("set TRACELAB_HOME (or HOME) for the exercise state")?;
    Ok(PathBuf::from(home).join(".tracelab"))
}

/// Whether an exercise is running (its state file exists).
pub fn exercise_running() -> bool {
    state_dir().is_ok_and(|d| d.join(CURRENT).is_file())
}

/// The digest naming a scenario in the state file.
pub fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(format!("tracelab-exercise:{id}").as_bytes()))
}

/// One answer given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When.
    pub at: DateTime<Utc>,
    /// Service named.
    pub service: String,
    /// Operation named.
    #[serde(default)]
    pub operation: Option<String>,
    /// How it was graded.
    pub grade: Grade,
}

/// The running exercise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExerciseState {
    /// Exercise number (1, 2, ...).
    pub number: u64,
    /// [`digest`] of the scenario id.
    pub scenario: String,
    /// The catalog it came from.
    pub catalog_dir: PathBuf,
    /// The seed of a random pick.
    #[serde(default)]
    pub seed: Option<u64>,
    /// When the faults were set.
    pub started_at: DateTime<Utc>,
    /// Hints shown so far (0..=3).
    pub hints_unlocked: usize,
    /// Answers given so far.
    pub attempts: Vec<Attempt>,
    /// Where the faults were set: service → base URL.
    pub services: BTreeMap<String, String>,
    /// The gateway and Tempo the learner should look at.
    pub gateway: String,
    /// Tempo API base URL.
    pub tempo: String,
}

/// How an exercise ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered correctly.
    Solved,
    /// Gave up with `reveal`.
    Revealed,
    /// Replaced by another `start --force`.
    Abandoned,
}

/// A finished exercise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Exercise number.
    pub number: u64,
    /// Scenario id (no secret any more).
    pub scenario: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// How.
    pub outcome: Outcome,
    /// Seconds from start to the correct answer (solved only).
    #[serde(default)]
    pub elapsed_secs: Option<f64>,
    /// Hints used.
    pub hints_used: usize,
    /// Every answer given.
    pub attempts: Vec<Attempt>,
}

/// What [`Exercises::begin`] needs.
#[derive(Debug, Clone, Copy)]
pub struct Begin<'a> {
    /// The scenario to hide.
    pub scenario: &'a Scenario,
    /// The lab's admin API.
    pub client: &'a FaultClient,
    /// Gateway base URL (for the learner and the load).
    pub gateway: &'a str,
    /// Tempo API base URL (for the learner).
    pub tempo: &'a str,
    /// Seed of a random pick.
    pub seed: Option<u64>,
    /// Abandon a running exercise.
    pub force: bool,
}

/// The result of `answer`.
#[derive(Debug, Clone)]
pub struct Graded {
    /// The grade.
    pub grade: Grade,
    /// The scenario (for the explanation).
    pub scenario: Scenario,
    /// The history entry, when the answer ended the exercise.
    pub finished: Option<HistoryEntry>,
}

/// Exercise state in one directory.
#[derive(Debug, Clone)]
pub struct Exercises {
    dir: PathBuf,
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

impl Exercises {
    /// State in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Exercises {
        Exercises { dir: dir.into() }
    }

    /// State in [`state_dir`].
    ///
    /// # Errors
    /// As [`state_dir`].
    pub fn open_default() -> anyhow::Result<Exercises> {
        Ok(Exercises::new(state_dir()?))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The running exercise, if any.
    ///
    /// # Errors
    /// When the state file exists but cannot be read.
    pub fn current(&self) -> anyhow::Result<Option<ExerciseState>> {
        let path = self.dir.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is damaged; delete it to start over", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }

    fn require_current(&self) -> anyhow::Result<ExerciseState> {
        self.current()?
            .context("no exercise is running; start one with `tracelab exercise start --random`")
    }

    fn save_current(&self, state: &ExerciseState) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        write_json(&self.dir.join(CURRENT), state)
    }

    /// Past exercises, oldest first.
    ///
    /// # Errors
    /// When the history exists but cannot be read.
    pub fn history(&self) -> anyhow::Result<Vec<HistoryEntry>> {
        let path = self.dir.join(HISTORY);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }

    fn finish(
        &self,
        state: &ExerciseState,
        id: &str,
        outcome: Outcome,
    ) -> anyhow::Result<HistoryEntry> {
        let now = Utc::now();
        let entry = HistoryEntry {
            number: state.number,
            scenario: id.to_string(),
            started_at: state.started_at,
            finished_at: now,
            outcome,
            elapsed_secs: (outcome == Outcome::Solved)
                .then(|| (now - state.started_at).num_milliseconds() as f64 / 1000.0),
            hints_used: state.hints_unlocked,
            attempts: state.attempts.clone(),
        };
        let mut history = self.history()?;
        history.push(entry.clone());
        std::fs::create_dir_all(&self.dir)?;
        write_json(&self.dir.join(HISTORY), &history)?;
        let _ = std::fs::remove_file(self.dir.join(CURRENT));
        Ok(entry)
    }

    /// The scenario of the running exercise.
    ///
    /// # Errors
    /// When the scenario is no longer in the catalog.
    pub fn scenario_of<'c>(
        &self,
        state: &ExerciseState,
        catalog: &'c Catalog,
    ) -> anyhow::Result<&'c Scenario> {
        catalog
            .scenarios
            .iter()
            .find(|s| digest(&s.id) == state.scenario)
            .with_context(|| {
                format!(
                    "the running exercise's scenario is not in the catalog {} any more",
                    catalog.dir.display()
                )
            })
    }

    /// Starts an exercise: clears every fault, sets the scenario's (with
    /// `fault.injected` events off), and records the state.
    ///
    /// # Errors
    /// When an exercise is already running (unless `force`, which records
    /// it as abandoned and clears its faults), or the lab refuses the faults.
    pub async fn begin(
        &self,
        catalog: &Catalog,
        start: Begin<'_>,
    ) -> anyhow::Result<ExerciseState> {
        let Begin {
            scenario,
            client,
            gateway,
            tempo,
            seed,
            force,
        } = start;
        if let Some(running) = self.current()? {
            if !force {
                let ago = (Utc::now() - running.started_at).num_seconds().max(0) as u64;
                bail!(
                    "exercise #{} is running (started {} ago): answer it, `tracelab exercise reveal` it, \
                     or start another with --force",
                    running.number,
                    human_secs(ago)
                );
            }
            let id = self
                .scenario_of(&running, catalog)
                .map(|s| s.id.clone())
                .unwrap_or_else(|_| "(unknown)".into());
            self.finish(&running, &id, Outcome::Abandoned)?;
        }
        client
            .clear_all()
            .await
            .context("clearing faults before the exercise")?;
        for service in client.services() {
            client.set_visible(service, false).await?;
        }
        scenario.start(client, false).await?;
        let number = self.history()?.iter().map(|h| h.number).max().unwrap_or(0) + 1;
        let state = ExerciseState {
            number,
            scenario: digest(&scenario.id),
            catalog_dir: std::path::absolute(&catalog.dir).unwrap_or_else(|_| catalog.dir.clone()),
            seed,
            started_at: Utc::now(),
            hints_unlocked: 0,
            attempts: Vec::new(),
            services: client
                .services()
                .into_iter()
                .filter_map(|s| {
                    client
                        .service_url(s)
                        .map(|u| (s.to_string(), u.to_string()))
                })
                .collect(),
            gateway: gateway.to_string(),
            tempo: tempo.to_string(),
        };
        self.save_current(&state)?;
        Ok(state)
    }

    /// Unlocks the next hint; returns the state and every unlocked hint.
    ///
    /// # Errors
    /// No exercise running, or its scenario is gone.
    pub fn hint(&self, catalog: &Catalog) -> anyhow::Result<(ExerciseState, Vec<Text>, bool)> {
        let mut state = self.require_current()?;
        let scenario = self.scenario_of(&state, catalog)?;
        let newly = state.hints_unlocked < scenario.hints.len();
        if newly {
            state.hints_unlocked += 1;
            self.save_current(&state)?;
        }
        let hints = scenario.hints[..state.hints_unlocked].to_vec();
        Ok((state, hints, newly))
    }

    fn client_for(state: &ExerciseState, token: &str) -> anyhow::Result<FaultClient> {
        FaultClient::new(state.services.clone(), token)
    }

    /// Grades an answer; a correct one clears the faults and ends the exercise.
    ///
    /// # Errors
    /// No exercise running, or the faults cannot be cleared.
    pub async fn answer(
        &self,
        catalog: &Catalog,
        token: &str,
        service: &str,
        operation: Option<&str>,
    ) -> anyhow::Result<Graded> {
        let mut state = self.require_current()?;
        let scenario = self.scenario_of(&state, catalog)?.clone();
        let grade = scenario.answer.grade(service, operation);
        state.attempts.push(Attempt {
            at: Utc::now(),
            service: service.to_string(),
            operation: operation.map(str::to_string),
            grade,
        });
        if grade != Grade::Correct {
            self.save_current(&state)?;
            return Ok(Graded {
                grade,
                scenario,
                finished: None,
            });
        }
        let finished = self.finish(&state, &scenario.id, Outcome::Solved)?;
        // The answer is recorded first: a lab that is gone must not cost
        // the learner a solved exercise.
        if let Err(e) = scenario.stop(&Self::client_for(&state, token)?).await {
            eprintln!("note: could not clear the scenario's faults: {e:#}");
        }
        Ok(Graded {
            grade,
            scenario,
            finished: Some(finished),
        })
    }

    /// Gives up: ends the exercise and clears its faults.
    ///
    /// # Errors
    /// No exercise running.
    pub async fn reveal(
        &self,
        catalog: &Catalog,
        token: &str,
    ) -> anyhow::Result<(Scenario, HistoryEntry)> {
        let state = self.require_current()?;
        let scenario = self.scenario_of(&state, catalog)?.clone();
        let entry = self.finish(&state, &scenario.id, Outcome::Revealed)?;
        if let Err(e) = scenario.stop(&Self::client_for(&state, token)?).await {
            eprintln!("note: could not clear the scenario's faults: {e:#}");
        }
        Ok((scenario, entry))
    }
}

/// Picks a scenario index from a seed (splitmix64), the same on every machine.
pub fn pick(seed: u64, n: usize) -> usize {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % n.max(1) as u64) as usize
}

/// `tracelab exercise`
#[derive(Debug, Args)]
pub struct ExerciseArgs {
    #[command(subcommand)]
    pub command: ExerciseCommand,
    /// Scenario directory [default: $TRACELAB_SCENARIOS, ./scenarios, or the workspace's].
    #[arg(long, value_name = "DIR", global = true)]
    pub scenarios: Option<PathBuf>,
    /// Language of the texts [default: from $LANG].
    #[arg(long, value_enum, global = true)]
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
    #[arg(long, default_value_t = 1.0, value_name = "PER_SEC")]
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

/// The admin token, to clear the faults at the end.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Token of the services' admin (fault) API.
    #[arg(long, env = "TRACELAB_ADMIN_TOKEN", default_value = crate::lab::DEFAULT_ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: String,
}

/// Runs `tracelab exercise ...`.
///
/// # Errors
/// No lab, no catalog, no running exercise where one is needed.
pub async fn run(args: ExerciseArgs) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(args.scenarios.as_deref())?;
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
                    &a.token.admin_token,
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
            let (scenario, entry) = ex.reveal(&catalog, &t.admin_token).await?;
            println!(
                "exercise #{}: {} — {}",
                entry.number,
                scenario.id,
                scenario.title.get(lang)
            );
            print_solution(&scenario, lang);
            println!("\nthe faults are cleared.");
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
            println!("\nthe faults are cleared. Next: tracelab exercise start --random");
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
         tracelab traces --since 5   |   tracelab trace <TRACE ID>   |   tracelab traces --q '{{ status = error }}'\n\
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
    use crate::load::{LoadConfig, Mix, Progress, Route, run_until};
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
            _ = tokio::signal::ctrl_c() => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_stable_and_spread() {
        assert_eq!(pick(42, 17), pick(42, 17));
        let picks: std::collections::BTreeSet<usize> = (0..200).map(|s| pick(s, 17)).collect();
        assert!(picks.len() > 12, "{picks:?}");
        assert!(picks.iter().all(|&p| p < 17));
    }

    #[test]
    fn digests_hide_the_id() {
        let d = digest("payment-save-slow");
        assert_eq!(d.len(), 64);
        assert!(!d.contains("payment"));
        assert_ne!(d, digest("payment-save-slo"));
    }
}
