//! The scenario catalog: list, show, start, stop and verify.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tracelab_contract::fault::limits::DEFAULT_FAULT_LIFETIME;
use tracelab_contract::fault::{ActiveFault, FaultSpec};

use super::faults::SetFault;
use super::{ApiError, ApiResult, Json, optional_body, upstream};
use crate::console::ConsoleState;
use crate::scenario::verify::{Target, verify as verify_scenario};
use crate::scenario::{Answer, Category, Pitfall, Scenario, Text};

/// A scenario without its answer: what a learner may see before playing.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScenarioSummary {
    /// Identifier.
    pub id: String,
    /// Single fault, pitfall or compound incident.
    pub category: Category,
    /// For pitfall scenarios, which one.
    pub pitfall: Option<Pitfall>,
    /// 1 (easy) to 3 (hard).
    pub difficulty: u8,
    /// Short title.
    pub title: Text,
    /// What happened, as the on-call engineer hears it.
    pub story: Text,
    /// What the learner sees at the gateway.
    pub symptom: Text,
}

impl ScenarioSummary {
    pub(crate) fn of(s: &Scenario) -> ScenarioSummary {
        ScenarioSummary {
            id: s.id.clone(),
            category: s.category,
            pitfall: s.pitfall,
            difficulty: s.difficulty,
            title: s.title.clone(),
            story: s.story.clone(),
            symptom: s.symptom.clone(),
        }
    }
}

/// The answer of `GET /api/scenarios`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScenarioList {
    /// Every scenario, by id.
    pub scenarios: Vec<ScenarioSummary>,
}

/// A scenario's fault.
#[derive(Debug, Serialize, Deserialize)]
pub struct FaultView {
    /// The service it is sent to.
    pub service: String,
    /// The spec.
    pub spec: FaultSpec,
}

/// A scenario in full, answer included.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScenarioView {
    /// What a learner sees first.
    #[serde(flatten)]
    pub summary: ScenarioSummary,
    /// The faults, in the order they are set.
    pub faults: Vec<FaultView>,
    /// Three hints, vaguest first.
    pub hints: Vec<Text>,
    /// The TraceQL query that reveals the cause.
    pub query: String,
    /// The expected answer.
    pub answer: Answer,
    /// Why.
    pub explanation: Text,
    /// The trace signature checks, described.
    pub signature: Vec<String>,
    /// Checks that hold whether it runs or not, described.
    pub invariants: Vec<String>,
}

/// The answer of `POST /api/scenarios/{id}/start`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Started {
    /// The scenario.
    pub id: String,
    /// Its title.
    pub title: Text,
    /// What the learner will see at the gateway.
    pub symptom: Text,
    /// The faults set.
    pub set: Vec<SetFault>,
}

/// The answer of `POST /api/scenarios/stop`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stopped {
    /// The scenario stopped, when one was named.
    pub stopped: Option<String>,
    /// How many faults were cleared, when none was named (all of them).
    pub cleared: Option<u64>,
}

/// The answer of `POST /api/scenarios/{id}/verify`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Verified {
    /// The scenario.
    pub id: String,
    /// Whether the signature was absent while stopped and present while running.
    pub passed: bool,
    /// The account of both phases.
    pub report: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    #[serde(default)]
    show_in_traces: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StopBody {
    id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyBody {
    settle_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

/// The longest a verification may wait for a signature.
const MAX_VERIFY_TIMEOUT: Duration = Duration::from_secs(300);

/// The scenario with this id, or the 404 naming close ids.
pub(crate) fn scenario<'s>(state: &'s ConsoleState, id: &str) -> Result<&'s Scenario, ApiError> {
    state
        .inner
        .config
        .catalog
        .get(id)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "unknown_scenario", e.to_string()))
}

pub(crate) fn exercise_running_error(number: u64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "exercise_running",
        format!(
            "exercise #{number} is running: answer it or reveal it first (its faults would be changed)"
        ),
    )
}

fn refuse_during_exercise(state: &ConsoleState) -> Result<(), ApiError> {
    match state.inner.exercises.current() {
        Ok(Some(running)) => Err(exercise_running_error(running.number)),
        _ => Ok(()),
    }
}

pub(crate) async fn list(State(state): State<ConsoleState>) -> Json<ScenarioList> {
    Json(ScenarioList {
        scenarios: state
            .inner
            .config
            .catalog
            .scenarios
            .iter()
            .map(ScenarioSummary::of)
            .collect(),
    })
}

pub(crate) async fn show(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
) -> ApiResult<ScenarioView> {
    let s = scenario(&state, &id)?;
    Ok(Json(ScenarioView {
        summary: ScenarioSummary::of(s),
        faults: s
            .faults
            .iter()
            .map(|f| FaultView {
                service: f.service.to_string(),
                spec: f.spec.clone(),
            })
            .collect(),
        hints: s.hints.clone(),
        query: s.query.clone(),
        answer: s.answer.clone(),
        explanation: s.explanation.clone(),
        signature: s.signature.iter().map(|c| c.describe()).collect(),
        invariants: s.invariants.iter().map(|c| c.describe()).collect(),
    }))
}

pub(crate) async fn start(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Started> {
    let body: StartBody = optional_body(&body)?;
    let s = scenario(&state, &id)?;
    let _guard = state.inner.exercise_lock.lock().await;
    refuse_during_exercise(&state)?;
    let set: Vec<ActiveFault> = s
        .start(
            &state.inner.faults,
            body.show_in_traces,
            DEFAULT_FAULT_LIFETIME,
        )
        .await
        .map_err(|e| upstream("lab_unreachable", None, &e))?;
    Ok(Json(Started {
        id: s.id.clone(),
        title: s.title.clone(),
        symptom: s.symptom.clone(),
        set: s
            .faults
            .iter()
            .zip(set)
            .map(|(f, fault)| SetFault {
                service: f.service.to_string(),
                fault,
            })
            .collect(),
    }))
}

pub(crate) async fn stop(State(state): State<ConsoleState>, body: Bytes) -> ApiResult<Stopped> {
    let body: StopBody = optional_body(&body)?;
    let faults = &state.inner.faults;
    match body.id {
        Some(id) => {
            let s = scenario(&state, &id)?;
            s.stop(faults)
                .await
                .map_err(|e| upstream("lab_unreachable", None, &e))?;
            Ok(Json(Stopped {
                stopped: Some(s.id.clone()),
                cleared: None,
            }))
        }
        None => {
            let n = faults
                .clear_all()
                .await
                .map_err(|e| upstream("lab_unreachable", None, &e))?;
            Ok(Json(Stopped {
                stopped: None,
                cleared: Some(n),
            }))
        }
    }
}

pub(crate) async fn verify(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Verified> {
    let body: VerifyBody = optional_body(&body)?;
    let mut s = scenario(&state, &id)?.clone();
    let timeout = Duration::from_millis(body.timeout_ms.unwrap_or(30_000));
    if timeout.is_zero() || timeout > MAX_VERIFY_TIMEOUT {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!(
                "timeout_ms: 1 to {}, got {}",
                MAX_VERIFY_TIMEOUT.as_millis(),
                timeout.as_millis()
            ),
        ));
    }
    if let Some(settle) = body.settle_ms {
        if settle > MAX_VERIFY_TIMEOUT.as_millis() as u64 {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!(
                    "settle_ms: at most {}, got {settle}",
                    MAX_VERIFY_TIMEOUT.as_millis()
                ),
            ));
        }
        s.traffic.settle_ms = settle;
    }
    let inner = &state.inner;
    let _guard = inner.exercise_lock.lock().await;
    refuse_during_exercise(&state)?;
    let target = Target {
        gateway: inner.config.gateway.clone(),
        tempo: tracelab_client::TempoClient::new(&inner.config.tempo)
            .map_err(|e| ApiError::internal("tempo_client", e))?,
        faults: inner.faults.clone(),
        database_url: inner.config.verify.as_ref().map(|v| v.database_url.clone()),
        dlq: inner
            .config
            .verify
            .as_ref()
            .map(|v| (v.amqp_url.clone(), format!("{}.dlq", v.queue))),
    };
    let v = verify_scenario(&target, &s, timeout)
        .await
        .map_err(|e| upstream("lab_unreachable", None, &e))?;
    Ok(Json(Verified {
        id: s.id.clone(),
        passed: v.passed(),
        report: v.render(),
    }))
}
