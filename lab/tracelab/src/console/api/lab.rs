//! `GET /api/lab`: where the lab is, each service's `/health` (its checks
//! and span export counters) and, natively, the supervisor's view of the
//! processes.

use std::time::Duration;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiResult, Json};
use crate::console::{ConsoleState, Mode, ProcessStatus};
use crate::supervisor::{COLLECTOR, resident_kib};

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
    /// Natively: the resident memory of the lab's processes.
    #[serde(default)]
    pub memory: Option<LabMemory>,
}

/// Resident memory (RSS, in KiB) of a native lab's processes: what the lab
/// costs the machine, and, at rest, the baseline that tracing adds to.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabMemory {
    /// All of them together.
    pub total_kib: u64,
    /// The services' processes (those running now).
    pub services_kib: u64,
    /// The embedded collector's process, while it runs.
    pub collector_kib: Option<u64>,
    /// The process serving this console: `tracelab up` (supervisor and
    /// console).
    pub console_kib: u64,
}

impl LabMemory {
    fn of(services: &[ServiceView], collector: Option<u64>) -> Option<LabMemory> {
        let console_kib = resident_kib(std::process::id())?;
        let services_kib = services
            .iter()
            .filter_map(|s| s.process.as_ref()?.memory_kib)
            .sum();
        Some(LabMemory {
            total_kib: services_kib + collector.unwrap_or(0) + console_kib,
            services_kib,
            collector_kib: collector,
            console_kib,
        })
    }
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
    let memory = processes
        .as_ref()
        .and_then(|ps| LabMemory::of(&services, ps.child(COLLECTOR).and_then(|c| c.memory_kib)));
    Ok(Json(LabView {
        mode: config.mode,
        gateway: config.gateway.clone(),
        tempo: config.tempo.clone(),
        services,
        exercise_running: inner.exercises.current().ok().flatten().is_some(),
        memory,
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
