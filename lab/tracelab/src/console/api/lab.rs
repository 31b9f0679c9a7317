//! `GET /api/lab`: where the lab is, each service's `/health` (its checks
//! and span export counters) and, natively, the supervisor's view of the
//! processes.

use std::time::Duration;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiResult, Json};
use crate::console::{ConsoleState, Mode, ProcessStatus};

/// How long one `/health` may take before the service counts as not answering.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer of `GET /api/lab`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LabView {
    /// Native or compose.
    pub mode: Mode,
    /// Gateway base URL.
    pub gateway: String,
    /// Tempo API base URL (the page reads it through `/api/tempo/`).
    pub tempo: String,
    /// One entry per service.
    pub services: Vec<ServiceView>,
    /// Whether an exercise runs (the fault list is hidden then).
    pub exercise_running: bool,
}

/// One service in `GET /api/lab`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceView {
    /// Service (binary name).
    pub name: String,
    /// Base URL.
    pub url: String,
    /// The HTTP status of its `/health`, when it answered.
    pub health_status: Option<u16>,
    /// Its `/health` body as it sent it (checks, `telemetry` counters).
    pub health: Option<Value>,
    /// Why there is no health, when it did not answer.
    pub error: Option<String>,
    /// The supervisor's view of its process (native only).
    pub process: Option<ProcessStatus>,
}

pub(crate) async fn get_lab(State(state): State<ConsoleState>) -> ApiResult<LabView> {
    let inner = &state.inner;
    let config = &inner.config;
    let processes = config.processes.as_ref().map(|m| m.status());
    let processes = &processes;
    let probes = config.services.iter().map(|(name, url)| async move {
        let (health_status, health, error) = probe(&inner.http, url).await;
        ServiceView {
            name: name.clone(),
            url: url.clone(),
            health_status,
            health,
            error,
            process: processes
                .as_ref()
                .and_then(|ps| ps.child(name))
                .map(ProcessStatus::of_child),
        }
    });
    let services = futures::future::join_all(probes).await;
    Ok(Json(LabView {
        mode: config.mode,
        gateway: config.gateway.clone(),
        tempo: config.tempo.clone(),
        services,
        exercise_running: inner.exercises.current().ok().flatten().is_some(),
    }))
}

async fn probe(http: &reqwest::Client, base: &str) -> (Option<u16>, Option<Value>, Option<String>) {
    let url = format!("{}/health", base.trim_end_matches('/'));
    match http.get(&url).timeout(HEALTH_TIMEOUT).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.json::<Value>().await {
                Ok(body) => (Some(status), Some(body), None),
                Err(e) => (
                    Some(status),
                    None,
                    Some(format!(
                        "/health answered {status} without JSON: {}",
                        tracelab_client::http_error_summary(&e)
                    )),
                ),
            }
        }
        Err(e) => (
            None,
            None,
            Some(format!(
                "no answer from {url}: {}",
                tracelab_client::http_error_summary(&e)
            )),
        ),
    }
}
