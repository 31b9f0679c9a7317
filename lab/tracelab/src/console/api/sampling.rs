//! `GET /api/sampling`: the head rules each service applies, the
//! collector's tail policy with its kept/dropped counts, and which named
//! policy that is; `PUT /api/sampling` `{"policy": "lab"|"lesson"}`: the
//! named policy's head rules to every service and its tail policy to the
//! embedded collector, at once, without a restart.
//!
//! In compose the tail policy is the OpenTelemetry Collector's, read from
//! `otel-collector.yaml` at its start: the console cannot change it or
//! read its counts, and both answers say so (`tail.live: false`, `note`).

use axum::body::Bytes;
use axum::extract::State;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracelab_faults::sampling::HeadReport;
use tracelab_telemetry::sampling::HeadCounts;

use super::{ApiError, ApiResult, Json};
use crate::console::sampling::{Policy, PolicyName, SamplingTargets, head_name, tail_name};
use crate::console::{ConsoleState, Mode};

/// The answer of `GET /api/sampling`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SamplingView {
    /// `native` or `compose`.
    pub mode: String,
    /// `lab` or `lesson` when every service and the collector apply that
    /// policy (in compose: every service), else `custom`.
    pub policy: String,
    /// The named policies: `{name, file, head_based, tail_based}`.
    pub policies: Vec<Value>,
    /// The head samplers.
    pub head: HeadView,
    /// The tail sampler.
    pub tail: TailView,
}

/// The head samplers in `GET /api/sampling`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HeadView {
    /// Per service, in the lab's order.
    pub services: Vec<ServiceHead>,
    /// The services' root decisions added up.
    pub counts: HeadCounts,
}

/// One service's head sampler.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceHead {
    /// Service (binary name).
    pub service: String,
    /// `lab`, `lesson` or `custom`; null when it did not answer.
    pub policy: Option<String>,
    /// What the service reported (`head_based`, `service_rate`, `counts`).
    pub report: Option<HeadReport>,
    /// Why there is no report.
    pub error: Option<String>,
}

/// The tail sampler in `GET /api/sampling`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TailView {
    /// Whether the console reads and switches it (the embedded collector).
    pub live: bool,
    /// `lab`, `lesson` or `custom`; null when unknown.
    pub policy: Option<String>,
    /// The collector's report (`tail_based`, `since`, `policies` with
    /// `kept`/`not_kept` each, `kept`, `dropped`, `pending`), when live.
    pub report: Option<Value>,
    /// Why not live, or why there is no report, in plain words.
    pub note: Option<String>,
}

/// `PUT /api/sampling`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    policy: String,
}

/// One target of a switch, in `PUT /api/sampling`'s answer and errors.
#[derive(Debug, Serialize, Deserialize)]
pub struct Applied {
    /// A service name, or `collector`.
    pub target: String,
    /// Whether it took the new policy.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}

/// The answer of `PUT /api/sampling`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Switched {
    /// The policy asked for.
    pub requested: String,
    /// Every target and how it went.
    pub applied: Vec<Applied>,
    /// The state after the switch.
    pub sampling: SamplingView,
}

const COMPOSE_NOTE: &str = "In compose, tail sampling is done by the OpenTelemetry Collector \
    with the policy in otel-collector.yaml, which it reads only when it starts: the console \
    can neither switch it nor read its kept/dropped counts. To switch it, set \
    sampling_percentage in otel-collector.yaml (5 for the lesson, 100 for the lab; the line \
    is marked) and run `docker compose up -d --force-recreate otel-collector`.";

const EXTERNAL_NOTE: &str = "This lab exports its spans to an external collector \
    (--otlp-endpoint): its tail policy is that collector's, out of the console's reach.";

/// How the collector's answer reads when it runs without a tail policy.
const NO_TAIL_ANSWER: &str = "answered 409";

const NO_TAIL_NOTE: &str = "This lab's collector was started without a sampling file: it keeps \
    every trace it receives and has no tail policy to switch. Start the lab with one \
    (`tracelab up --sampling-file sampling.yaml`, or from the repository's directory, where \
    `tracelab up` finds sampling.yaml) to switch tail sampling here.";

fn targets(state: &ConsoleState) -> &SamplingTargets {
    &state.inner.sampling
}

fn policies() -> Result<Vec<Policy>, ApiError> {
    Policy::all().map_err(|e| ApiError::internal("sampling_files", format!("{e:#}")))
}

fn named(name: Option<PolicyName>) -> String {
    name.map_or("custom", PolicyName::as_str).to_string()
}

pub(crate) async fn get_sampling(State(state): State<ConsoleState>) -> ApiResult<SamplingView> {
    Ok(Json(view(&state, &policies()?).await))
}

async fn view(state: &ConsoleState, policies: &[Policy]) -> SamplingView {
    let t = targets(state);
    let heads = futures::future::join_all(t.services().map(|service| async move {
        match t.head(service).await {
            Ok(report) => ServiceHead {
                service: service.to_string(),
                policy: Some(named(head_name(policies, &report.head_based))),
                report: Some(report),
                error: None,
            },
            Err(e) => ServiceHead {
                service: service.to_string(),
                policy: None,
                report: None,
                error: Some(format!("{e:#}")),
            },
        }
    }));
    let tail = async {
        if !t.has_collector() {
            let note = match state.inner.config.mode {
                Mode::Compose => COMPOSE_NOTE,
                Mode::Native => EXTERNAL_NOTE,
            };
            return TailView {
                live: false,
                policy: None,
                report: None,
                note: Some(note.to_string()),
            };
        }
        match t.tail().await {
            Ok(report) => TailView {
                live: true,
                policy: Some(named(tail_name(
                    policies,
                    report.get("tail_based").unwrap_or(&Value::Null),
                ))),
                report: Some(report),
                note: None,
            },
            // A collector started without a sampling file keeps every
            // span: there is no tail policy to show or replace. (Its
            // `GET /api/tracelab/sampling` answers 409 then, and only then.)
            Err(e) if format!("{e:#}").contains(NO_TAIL_ANSWER) => TailView {
                live: false,
                policy: None,
                report: None,
                note: Some(NO_TAIL_NOTE.to_string()),
            },
            Err(e) => TailView {
                live: true,
                policy: None,
                report: None,
                note: Some(format!("{e:#}")),
            },
        }
    };
    let (services, tail) = futures::join!(heads, tail);
    let counts =
        services
            .iter()
            .filter_map(|s| s.report.as_ref())
            .fold(HeadCounts::default(), |acc, r| HeadCounts {
                sampled: acc.sampled + r.counts.sampled,
                not_sampled: acc.not_sampled + r.counts.not_sampled,
            });
    // One name only when every part that can be read says it.
    let mut names = services
        .iter()
        .map(|s| s.policy.clone())
        .chain(tail.live.then(|| tail.policy.clone()));
    let first = names.next().flatten();
    let policy = match first {
        Some(name) if names.all(|n| n.as_deref() == Some(name.as_str())) => name,
        _ => "custom".to_string(),
    };
    SamplingView {
        mode: match state.inner.config.mode {
            Mode::Native => "native",
            Mode::Compose => "compose",
        }
        .to_string(),
        policy,
        policies: policies
            .iter()
            .map(|p| {
                json!({
                    "name": p.name.as_str(),
                    "file": p.name.file(),
                    "head_based": p.head,
                    "tail_based": p.tail.to_json(),
                })
            })
            .collect(),
        head: HeadView { services, counts },
        tail,
    }
}

pub(crate) async fn set_sampling(
    State(state): State<ConsoleState>,
    body: Bytes,
) -> ApiResult<Switched> {
    let body: SetBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"policy\": \"lab\"|\"lesson\"}}: {e}"),
        )
    })?;
    let name = PolicyName::parse(&body.policy).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_policy",
            format!(
                "no sampling policy {:?}: use \"lab\" (sampling.yaml) or \"lesson\" (sampling.lesson.yaml)",
                body.policy
            ),
        )
    })?;
    let policies = policies()?;
    let policy = policies
        .iter()
        .find(|p| p.name == name)
        .expect("every name has its policy");
    let t = targets(&state);
    let heads = futures::future::join_all(t.services().map(|service| async move {
        let result = t.set_head(service, &policy.head).await;
        Applied {
            target: service.to_string(),
            ok: result.is_ok(),
            error: result.err().map(|e| format!("{e:#}")),
        }
    }));
    let tail = async {
        if !t.has_collector() {
            return None;
        }
        let result = t.set_tail(&policy.tail).await;
        Some(Applied {
            target: "collector".to_string(),
            ok: result.is_ok(),
            error: result.err().map(|e| format!("{e:#}")),
        })
    };
    let (mut applied, tail) = futures::join!(heads, tail);
    applied.extend(tail);
    let failed: Vec<&str> = applied
        .iter()
        .filter(|a| !a.ok)
        .map(|a| a.target.as_str())
        .collect();
    if !failed.is_empty() {
        tracing::warn!(
            ?failed,
            policy = name.as_str(),
            "sampling switch failed in part"
        );
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "sampling_not_applied",
            format!(
                "the {} policy did not reach {}; the others have it (see targets)",
                name.as_str(),
                failed.join(", ")
            ),
        )
        .with_details(json!({ "targets": applied })));
    }
    tracing::info!(policy = name.as_str(), "sampling policy switched");
    Ok(Json(Switched {
        requested: name.as_str().to_string(),
        applied,
        sampling: view(&state, &policies).await,
    }))
}
