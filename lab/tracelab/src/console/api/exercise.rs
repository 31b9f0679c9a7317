//! Exercises, with their state held by the console: start one (blind, by
//! id or by seed), read its status (symptom, timer, hints shown, answers
//! given), unlock hints, answer, reveal, and the history. The CLI, the
//! page and a second terminal all see this one exercise.

use axum::body::Bytes;
use axum::extract::State;
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::load::{LoadSettings, Owner, check_gateway};
use super::scenarios::{exercise_running_error, scenario};
use super::{ApiError, ApiResult, Json, no_exercise, optional_body, upstream};
use crate::console::ConsoleState;
use crate::exercise::{Attempt, Begin, ExerciseState, HistoryEntry, Outcome, pick};
use crate::fault::canonical_service;
use crate::load::{Mix, Route};
use crate::scenario::{Answer, Grade, Scenario, Text, normalize_operation};

/// The running exercise, as a learner may see it (no scenario id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExerciseStatus {
    /// Exercise number (1, 2, ...).
    pub number: u64,
    /// The seed of a random pick (replays the same exercise).
    pub seed: Option<u64>,
    /// When the faults were set.
    pub started_at: DateTime<Utc>,
    /// Seconds since then.
    pub elapsed_secs: f64,
    /// When the first of its faults expires and the symptom starts to go
    /// (`None`: they stay until the exercise ends).
    #[serde(default)]
    pub faults_expire_at: Option<DateTime<Utc>>,
    /// What the learner sees at the gateway.
    pub symptom: Text,
    /// What happened, as the on-call engineer hears it.
    pub story: Text,
    /// The hints unlocked so far.
    pub hints: Vec<Text>,
    /// How many hints there are.
    pub hints_total: usize,
    /// Answers given so far.
    pub attempts: Vec<Attempt>,
    /// The background load, while it runs.
    pub load: Option<BackgroundLoad>,
}

/// An exercise's background load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackgroundLoad {
    /// Whether it runs.
    pub running: bool,
    /// Checkouts per second (plus twice as many searches).
    pub rate: f64,
}

/// The answer of `GET /api/exercise`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurrentExercise {
    /// The running exercise, if any.
    pub exercise: Option<ExerciseStatus>,
}

/// The answer of `POST /api/exercise/hint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hints {
    /// Every hint unlocked, vaguest first.
    pub hints: Vec<Text>,
    /// Whether this call unlocked one (false: all were shown already).
    pub new: bool,
    /// How many hints there are.
    pub total: usize,
}

/// What a trace offered as proof holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceCheck {
    /// The trace id.
    pub trace_id: String,
    /// Whether Tempo has the trace.
    pub found: bool,
    /// Whether it holds a span of the answered service and operation.
    pub has_answered_span: bool,
}

/// A scenario, named once the exercise is over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioName {
    /// Identifier.
    pub id: String,
    /// Title.
    pub title: Text,
}

/// The end of an exercise: the answer and how to see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Solution {
    /// Exercise number.
    pub number: u64,
    /// The scenario played.
    pub scenario: ScenarioName,
    /// The expected answer.
    pub answer: Answer,
    /// Why.
    pub explanation: Text,
    /// The TraceQL query that reveals the cause.
    pub query: String,
    /// That query through the console's Tempo pass-through.
    pub query_link: String,
    /// Solved or revealed.
    pub outcome: Outcome,
    /// Seconds from start to the correct answer (solved only).
    pub elapsed_secs: Option<f64>,
    /// Hints used.
    pub hints_used: usize,
    /// Whether the scenario's faults are gone.
    pub faults_cleared: bool,
    /// Why they are not, when clearing failed.
    pub clear_error: Option<String>,
}

/// The answer of `POST /api/exercise/answer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Graded {
    /// How the answer was graded.
    pub grade: Grade,
    /// Whether it was correct (the exercise is over then).
    pub correct: bool,
    /// What the grade means, and what to do next.
    pub message: Text,
    /// What the trace offered as proof holds, when one was given.
    pub trace: Option<TraceCheck>,
    /// The solution, when correct.
    pub solution: Option<Solution>,
}

/// The answer of `GET /api/exercise/history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// Finished exercises, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// How many were solved.
    pub solved: usize,
    /// Mean time to a correct answer, seconds.
    pub mean_secs: Option<f64>,
}

/// Background load: `false`, or `{"rate": R}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum LoadChoice {
    Switch(bool),
    Rate { rate: f64 },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    scenario: Option<String>,
    seed: Option<u64>,
    #[serde(default)]
    force: bool,
    load: Option<LoadChoice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerBody {
    service: String,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
}

/// The background load's default rate: checkouts per second.
const DEFAULT_LOAD_RATE: f64 = 1.0;
/// The highest background load rate.
const MAX_LOAD_RATE: f64 = 50.0;

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::internal("exercise_state", format!("{e:#}"))
}

fn current(state: &ConsoleState) -> Result<Option<ExerciseState>, ApiError> {
    state.inner.exercises.current().map_err(internal)
}

fn scenario_of<'s>(state: &'s ConsoleState, ex: &ExerciseState) -> Result<&'s Scenario, ApiError> {
    let inner = &state.inner;
    inner
        .exercises
        .scenario_of(ex, &inner.config.catalog)
        .map_err(internal)
}

async fn status_of(state: &ConsoleState, ex: &ExerciseState) -> Result<ExerciseStatus, ApiError> {
    let scenario = scenario_of(state, ex)?;
    let load = state
        .inner
        .load
        .exercise_rate(ex.number)
        .await
        .map(|rate| BackgroundLoad {
            running: true,
            // The load sends two searches to a checkout.
            rate: rate / 3.0,
        });
    Ok(ExerciseStatus {
        number: ex.number,
        seed: ex.seed,
        started_at: ex.started_at,
        elapsed_secs: (Utc::now() - ex.started_at).num_milliseconds().max(0) as f64 / 1000.0,
        faults_expire_at: ex.faults_expire_at,
        symptom: scenario.symptom.clone(),
        story: scenario.story.clone(),
        hints: scenario.hints[..ex.hints_unlocked.min(scenario.hints.len())].to_vec(),
        hints_total: scenario.hints.len(),
        attempts: ex.attempts.clone(),
        load,
    })
}

fn solution(scenario: &Scenario, entry: &HistoryEntry, clear_error: Option<String>) -> Solution {
    let mut link = reqwest::Url::parse("http://console/api/tempo/api/search")
        .unwrap_or_else(|e| unreachable!("a fixed URL: {e}"));
    link.query_pairs_mut().append_pair("q", &scenario.query);
    Solution {
        number: entry.number,
        scenario: ScenarioName {
            id: scenario.id.clone(),
            title: scenario.title.clone(),
        },
        answer: scenario.answer.clone(),
        explanation: scenario.explanation.clone(),
        query: scenario.query.clone(),
        query_link: format!("{}?{}", link.path(), link.query().unwrap_or_default()),
        outcome: entry.outcome,
        elapsed_secs: entry.elapsed_secs,
        hints_used: entry.hints_used,
        faults_cleared: clear_error.is_none(),
        clear_error,
    }
}

pub(crate) async fn start(
    State(state): State<ConsoleState>,
    body: Bytes,
) -> Result<(StatusCode, Json<ExerciseStatus>), ApiError> {
    let body: StartBody = optional_body(&body)?;
    let inner = &state.inner;
    let catalog = &inner.config.catalog;
    if catalog.scenarios.is_empty() {
        return Err(ApiError::internal(
            "empty_catalog",
            format!("the catalog {} holds no scenario", catalog.dir.display()),
        ));
    }
    let rate = match body.load {
        None | Some(LoadChoice::Switch(true)) => Some(DEFAULT_LOAD_RATE),
        Some(LoadChoice::Switch(false)) => None,
        Some(LoadChoice::Rate { rate }) => {
            if !(rate.is_finite() && rate > 0.0 && rate <= MAX_LOAD_RATE) {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    format!(
                        "load.rate: checkouts per second, above 0 and at most {MAX_LOAD_RATE}, got {rate}"
                    ),
                ));
            }
            Some(rate)
        }
    };
    let (picked, seed) = match (&body.scenario, body.seed) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give scenario or seed, not both",
            ));
        }
        (Some(id), None) => (scenario(&state, id)?, None),
        (None, seed) => {
            let seed = seed.unwrap_or_else(|| {
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
    if rate.is_some() {
        check_gateway(&state).await?;
    }
    let _guard = inner.exercise_lock.lock().await;
    let running = current(&state)?;
    if let Some(running) = &running {
        if !body.force {
            return Err(exercise_running_error(running.number));
        }
        inner.load.stop_if_owned_by(running.number).await;
    }
    let ex = inner
        .exercises
        .begin(
            catalog,
            Begin {
                scenario: picked,
                client: &inner.faults,
                gateway: &inner.config.gateway,
                tempo: &inner.config.tempo,
                seed,
                force: body.force,
            },
        )
        .await
        .map_err(|e| upstream("lab_unreachable", None, &e))?;
    if let Some(rate) = rate {
        let mix = Mix::of(&[(Route::Checkout, 1), (Route::Search, 2)]);
        let settings = LoadSettings {
            rate: rate * 3.0,
            mix: mix.to_string(),
            decline_share: 0.0,
            duration: None,
        };
        inner
            .load
            .start(
                &inner.config.gateway,
                Owner::Exercise(ex.number),
                settings,
                mix,
                None,
            )
            .await;
    }
    Ok((StatusCode::CREATED, Json(status_of(&state, &ex).await?)))
}

pub(crate) async fn status(State(state): State<ConsoleState>) -> ApiResult<CurrentExercise> {
    let exercise = match current(&state)? {
        Some(ex) => Some(status_of(&state, &ex).await?),
        None => None,
    };
    Ok(Json(CurrentExercise { exercise }))
}

pub(crate) async fn hint(State(state): State<ConsoleState>) -> ApiResult<Hints> {
    let inner = &state.inner;
    let _guard = inner.exercise_lock.lock().await;
    let Some(ex) = current(&state)? else {
        return Err(no_exercise());
    };
    let total = scenario_of(&state, &ex)?.hints.len();
    let (_, hints, new) = inner
        .exercises
        .hint(&inner.config.catalog)
        .map_err(internal)?;
    Ok(Json(Hints { hints, new, total }))
}

fn message(grade: Grade) -> Text {
    let (en, ja) = match grade {
        Grade::Correct => (
            "Correct: that is the cause. The faults are cleared.",
            "正解です。それが原因です。障害は解除されました。",
        ),
        Grade::NeedsOperation => (
            "Right service. Which operation? Answer again with the span name.",
            "サービスは正解です。どのオペレーションですか?スパン名を添えてもう一度答えてください。",
        ),
        Grade::WrongOperation => (
            "Right service, but not that operation: look at which of its spans carries the time or the error.",
            "サービスは正解ですが、そのオペレーションではありません。時間やエラーを抱えているスパンを探してください。",
        ),
        Grade::Wrong => (
            "Not it. Follow the symptom down the trace (a hint may help).",
            "違います。症状をトレースの下へたどってください(ヒントも使えます)。",
        ),
    };
    Text {
        en: en.to_string(),
        ja: ja.to_string(),
    }
}

/// Whether Tempo has `trace_id`, and whether it holds a span of `service`
/// named `operation` (any span of the service when no operation is given).
async fn check_trace(
    state: &ConsoleState,
    trace_id: &str,
    service: &str,
    operation: Option<&str>,
) -> Result<TraceCheck, ApiError> {
    let tempo = tracelab_client::TempoClient::new(&state.inner.config.tempo)
        .map_err(|e| ApiError::internal("tempo_client", e))?;
    let trace = tempo
        .get_trace(trace_id)
        .await
        .map_err(|e| upstream("tempo_unreachable", Some("tempo"), &e))?;
    let wanted = operation.map(normalize_operation);
    let has_answered_span = trace.as_ref().is_some_and(|t| {
        t.spans.iter().any(|s| {
            canonical_service(&s.service) == Some(service)
                && wanted
                    .as_ref()
                    .is_none_or(|w| normalize_operation(&s.name) == *w)
        })
    });
    Ok(TraceCheck {
        trace_id: trace_id.to_string(),
        found: trace.is_some(),
        has_answered_span,
    })
}

pub(crate) async fn answer(
    State(state): State<ConsoleState>,
    Json(body): Json<AnswerBody>,
) -> ApiResult<Graded> {
    let inner = &state.inner;
    let service = canonical_service(&body.service).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_service",
            format!(
                "unknown service {:?}: one of {}",
                body.service,
                crate::fault::service_names().join(", ")
            ),
        )
        .with_details(serde_json::json!({"field": "service"}))
    })?;
    let operation = body
        .operation
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty());
    let trace_id = match body.trace_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => Some(tracelab_client::parse_trace_id(id).map_err(|e| {
            ApiError::bad_request("invalid_trace_id", format!("trace_id: {e}"))
                .with_details(serde_json::json!({"field": "trace_id"}))
        })?),
    };
    let _guard = inner.exercise_lock.lock().await;
    let Some(ex) = current(&state)? else {
        return Err(no_exercise());
    };
    let trace = match &trace_id {
        Some(id) => Some(check_trace(&state, id, service, operation).await?),
        None => None,
    };
    let graded = inner
        .exercises
        .answer(
            &inner.config.catalog,
            &inner.config.admin_token,
            service,
            operation,
        )
        .await
        .map_err(internal)?;
    let correct = graded.grade == Grade::Correct;
    if correct {
        inner.load.stop_if_owned_by(ex.number).await;
    }
    let solution = graded
        .finished
        .as_ref()
        .map(|entry| solution(&graded.scenario, entry, graded.clear_error.clone()));
    Ok(Json(Graded {
        grade: graded.grade,
        correct,
        message: message(graded.grade),
        trace,
        solution,
    }))
}

pub(crate) async fn reveal(State(state): State<ConsoleState>) -> ApiResult<Solution> {
    let inner = &state.inner;
    let _guard = inner.exercise_lock.lock().await;
    let Some(ex) = current(&state)? else {
        return Err(no_exercise());
    };
    inner.load.stop_if_owned_by(ex.number).await;
    let revealed = inner
        .exercises
        .reveal(&inner.config.catalog, &inner.config.admin_token)
        .await
        .map_err(internal)?;
    Ok(Json(solution(
        &revealed.scenario,
        &revealed.entry,
        revealed.clear_error,
    )))
}

pub(crate) async fn history(State(state): State<ConsoleState>) -> ApiResult<History> {
    let entries = state.inner.exercises.history().map_err(internal)?;
    let solved: Vec<f64> = entries
        .iter()
        .filter(|e| e.outcome == Outcome::Solved)
        .filter_map(|e| e.elapsed_secs)
        .collect();
    let mean_secs = (!solved.is_empty()).then(|| solved.iter().sum::<f64>() / solved.len() as f64);
    Ok(Json(History {
        solved: solved.len(),
        mean_secs,
        entries,
    }))
}
