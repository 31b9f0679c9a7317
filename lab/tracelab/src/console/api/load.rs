//! Load held by the console: start (or retarget) it, stop it, watch its
//! live per-route summary. One load runs at a time; an exercise's gentle
//! background load is the same load, owned by the exercise and stopped
//! when it ends.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tracelab_contract::fault::duration;

use super::{ApiError, ApiResult, Json, upstream};
use crate::console::ConsoleState;
use crate::load::{DEFAULT_MIX, LiveSummary, LoadConfig, Mix, Summary, parse_mix, run_watched};

/// The longest load the console runs with a duration.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The highest rate the console sends (requests per second).
pub const MAX_RATE: f64 = 1000.0;

/// How a load runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSettings {
    /// Requests per second.
    pub rate: f64,
    /// Route weights, as `tracelab load --mix` takes them.
    pub mix: String,
    /// Share of checkouts sent with the declining card (0..1).
    pub decline_share: f64,
    /// How long it runs; `None` until stopped.
    pub duration: Option<String>,
}

/// Who started the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "exercise")]
pub enum Owner {
    /// `POST /api/load`.
    Console,
    /// The background load of this exercise number.
    Exercise(u64),
}

/// The answer of the `/api/load` routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadStatus {
    /// The load's number: each start gets the next one, so a client can
    /// tell the load it started from one started after it (null: no load
    /// yet).
    pub id: Option<u64>,
    /// Whether requests are being sent.
    pub running: bool,
    /// Who started it (null: no load yet).
    pub owner: Option<Owner>,
    /// Its settings (null: no load yet).
    pub config: Option<LoadSettings>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// The generator's summary so far (refreshed about once a second), or
    /// the final one.
    pub summary: Option<Summary>,
    /// Why it stopped early, when it failed.
    pub error: Option<String>,
}

/// `POST /api/load` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadBody {
    rate: f64,
    #[serde(default)]
    mix: Option<String>,
    #[serde(default)]
    decline_share: Option<f64>,
    #[serde(default)]
    duration: Option<String>,
}

struct Run {
    id: u64,
    owner: Owner,
    settings: LoadSettings,
    started_at: DateTime<Utc>,
    live: LiveSummary,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<Summary>>>,
    /// The task's failure, once it ended with one.
    error: Option<String>,
}

impl Run {
    /// Collects the task's result if it has ended.
    async fn reap(&mut self) {
        if self.task.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(task) = self.task.take()
        {
            self.record(task.await);
        }
    }

    fn record(&mut self, result: Result<anyhow::Result<Summary>, tokio::task::JoinError>) {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.error = Some(format!("{e:#}")),
            Err(e) => self.error = Some(format!("the load task failed: {e}")),
        }
    }

    /// Stops the sending and waits for the summary.
    async fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = task.await;
            self.record(result);
        }
    }

    fn status(&self) -> LoadStatus {
        LoadStatus {
            id: Some(self.id),
            running: self.task.is_some(),
            owner: Some(self.owner),
            config: Some(self.settings.clone()),
            started_at: Some(self.started_at),
            summary: self.live.get(),
            error: self.error.clone(),
        }
    }
}

/// The console's one load.
#[derive(Default)]
pub(crate) struct LoadRunner {
    run: Mutex<Option<Run>>,
    /// The number of the last load started.
    last_id: std::sync::atomic::AtomicU64,
}

impl LoadRunner {
    /// Starts a load (stopping the one running first).
    pub(crate) async fn start(
        &self,
        gateway: &str,
        owner: Owner,
        settings: LoadSettings,
        mix: Mix,
        duration: Option<Duration>,
    ) -> LoadStatus {
        let mut slot = self.run.lock().await;
        if let Some(run) = slot.as_mut() {
            run.finish().await;
        }
        let config = LoadConfig {
            gateway: gateway.to_string(),
            rps: settings.rate,
            duration,
            mix,
            decline_share: settings.decline_share,
            // A hang in the lab must not pile requests up without bound.
            max_in_flight: 256,
            timeout: Duration::from_secs(15),
            ..LoadConfig::default()
        };
        let live = LiveSummary::default();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_watched(
            config,
            async {
                let _ = stop_rx.await;
            },
            Some(live.clone()),
        ));
        let id = self
            .last_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let run = Run {
            id,
            owner,
            settings,
            started_at: Utc::now(),
            live,
            stop: Some(stop_tx),
            task: Some(task),
            error: None,
        };
        let status = run.status();
        *slot = Some(run);
        status
    }

    /// The load's state.
    pub(crate) async fn status(&self) -> LoadStatus {
        let mut slot = self.run.lock().await;
        match slot.as_mut() {
            Some(run) => {
                run.reap().await;
                run.status()
            }
            None => LoadStatus {
                id: None,
                running: false,
                owner: None,
                config: None,
                started_at: None,
                summary: None,
                error: None,
            },
        }
    }

    /// Stops the running load; `None` when none runs.
    pub(crate) async fn stop(&self) -> Option<LoadStatus> {
        self.stop_id(None).await.ok()
    }

    /// Stops the running load if it is load `id` (any load for `None`).
    ///
    /// # Errors
    /// 409 `no_load` when none runs, 409 `load_replaced` when another
    /// load than `id` runs.
    async fn stop_id(&self, id: Option<u64>) -> Result<LoadStatus, ApiError> {
        let mut slot = self.run.lock().await;
        let no_load = || ApiError::new(StatusCode::CONFLICT, "no_load", "no load is running");
        let run = slot.as_mut().ok_or_else(no_load)?;
        run.reap().await;
        if run.task.is_none() {
            return Err(no_load());
        }
        if let Some(id) = id
            && id != run.id
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "load_replaced",
                format!(
                    "load {id} is not the running load: load {} replaced it",
                    run.id
                ),
            ));
        }
        run.finish().await;
        Ok(run.status())
    }

    /// Stops the load if exercise `number` owns it.
    pub(crate) async fn stop_if_owned_by(&self, number: u64) {
        let mut slot = self.run.lock().await;
        if let Some(run) = slot.as_mut()
            && run.owner == Owner::Exercise(number)
        {
            run.finish().await;
        }
    }

    /// The rate of the load exercise `number` owns, while it runs.
    pub(crate) async fn exercise_rate(&self, number: u64) -> Option<f64> {
        let mut slot = self.run.lock().await;
        let run = slot.as_mut()?;
        run.reap().await;
        (run.owner == Owner::Exercise(number) && run.task.is_some()).then_some(run.settings.rate)
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_load", message)
}

/// Checks that the gateway answers before a load is started against it, so
/// a lab that is down is a 502 now rather than a failed load later.
pub(crate) async fn check_gateway(state: &ConsoleState) -> Result<(), ApiError> {
    let inner = &state.inner;
    let url = format!("{}/health", inner.config.gateway.trim_end_matches('/'));
    inner
        .http
        .get(&url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            let e = anyhow::anyhow!(
                "cannot reach the gateway at {url}: {}",
                tracelab_client::http_error_summary(&e)
            );
            upstream("gateway_unreachable", Some("gateway"), &e)
        })
}

pub(crate) async fn start(
    State(state): State<ConsoleState>,
    Json(body): Json<LoadBody>,
) -> ApiResult<LoadStatus> {
    if !(body.rate.is_finite() && body.rate > 0.0 && body.rate <= MAX_RATE) {
        return Err(invalid(format!(
            "rate: requests per second, above 0 and at most {MAX_RATE}, got {}",
            body.rate
        )));
    }
    let mix_text = body.mix.unwrap_or_else(|| DEFAULT_MIX.to_string());
    let mix = parse_mix(&mix_text).map_err(|e| invalid(format!("mix: {e}")))?;
    let decline_share = body.decline_share.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&decline_share) {
        return Err(invalid(format!(
            "decline_share: between 0 and 1, got {decline_share}"
        )));
    }
    let run_for = match body.duration.as_deref().map(str::trim) {
        None | Some("" | "never") => None,
        Some(text) => {
            let d = duration::parse(text).map_err(|e| invalid(format!("duration: {e}")))?;
            if d.is_zero() || d > MAX_DURATION {
                return Err(invalid(format!(
                    "duration: above 0 and at most {}, or never; got {text:?}",
                    duration::format(MAX_DURATION)
                )));
            }
            Some(d)
        }
    };
    check_gateway(&state).await?;
    let settings = LoadSettings {
        rate: body.rate,
        mix: mix.to_string(),
        decline_share,
        duration: run_for.map(duration::format),
    };
    let inner = &state.inner;
    let status = inner
        .load
        .start(
            &inner.config.gateway,
            Owner::Console,
            settings,
            mix,
            run_for,
        )
        .await;
    Ok(Json(status))
}

pub(crate) async fn status(State(state): State<ConsoleState>) -> Json<LoadStatus> {
    Json(state.inner.load.status().await)
}

/// `DELETE /api/load`, or `DELETE /api/load?id=N`: stop the load only if
/// it is still load N (a client stopping the load it started must not stop
/// one that replaced it).
pub(crate) async fn stop(
    State(state): State<ConsoleState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<LoadStatus> {
    let id = match query.get("id") {
        None => None,
        Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_load",
                format!("id: the number of a load (GET /api/load gives it), got {text:?}"),
            )
        })?),
    };
    state.inner.load.stop_id(id).await.map(Json)
}
