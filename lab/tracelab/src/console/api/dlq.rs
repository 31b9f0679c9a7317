//! The notification dead-letter queue: what is parked there and why, and
//! replaying it ([`crate::dlq`]; `tracelab dlq list|replay` is a client of
//! these routes). The console knows the lab's RabbitMQ and queue from its
//! [`VerifyBackends`](crate::console::VerifyBackends), and runs one DLQ
//! operation at a time.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use http::StatusCode;
use serde::Deserialize;

use super::{ApiError, ApiResult, Json, optional_body, upstream};
use crate::console::ConsoleState;
use crate::dlq::{self, DlqTarget, NoSuchMessage, Parked, Replayed, Selection};

/// How many messages `GET /api/dlq` shows unless `?limit=` says otherwise.
const DEFAULT_LIMIT: usize = 50;
/// The most it shows.
const MAX_LIMIT: usize = 500;

/// `POST /api/dlq/replay`: `{"all": true, "include_poison"?: bool}` or `{"id": "..."}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayBody {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    include_poison: bool,
    id: Option<String>,
}

impl ReplayBody {
    fn selection(self) -> Result<Selection, ApiError> {
        let bad = |message: &str| ApiError::bad_request("invalid_selection", message.to_string());
        match (self.all, self.id) {
            (true, Some(_)) => Err(bad("give either \"all\": true or an \"id\", not both")),
            (false, None) => Err(bad(
                "say which messages: {\"all\": true} (transient ones; add \"include_poison\": true for all) or {\"id\": \"<message id>\"}",
            )),
            (false, Some(_)) if self.include_poison => Err(bad(
                "\"include_poison\" goes with \"all\"; a replay by id replays that message whatever its kind",
            )),
            (false, Some(id)) if id.trim().is_empty() => Err(bad("\"id\" is empty")),
            (false, Some(id)) => Ok(Selection::Id(id.trim().to_string())),
            (true, None) => Ok(Selection::All {
                include_poison: self.include_poison,
            }),
        }
    }
}

fn target(state: &ConsoleState) -> Result<DlqTarget, ApiError> {
    let backends = state.inner.config.verify.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dlq_unknown",
            "this console does not know the lab's RabbitMQ: start `tracelab console` with --amqp-url and --database-url (or AMQP_URL and DATABASE_URL)",
        )
    })?;
    Ok(DlqTarget {
        amqp_url: backends.amqp_url.clone(),
        queue: backends.queue.clone(),
    })
}

pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Parked> {
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("limit: expected a number from 1 to {MAX_LIMIT}, got {v:?}"),
                )
            })?,
    };
    let target = target(&state)?;
    let _one_at_a_time = state.inner.dlq_lock.lock().await;
    let parked = dlq::peek(&target, limit)
        .await
        .map_err(|e| upstream("dlq_unreachable", None, &e))?;
    Ok(Json(parked))
}

pub(crate) async fn replay(State(state): State<ConsoleState>, body: Bytes) -> ApiResult<Replayed> {
    let selection = optional_body::<ReplayBody>(&body)?.selection()?;
    let target = target(&state)?;
    let _one_at_a_time = state.inner.dlq_lock.lock().await;
    match dlq::replay(&target, &selection).await {
        Ok(done) => Ok(Json(done)),
        Err(e) => match e.downcast_ref::<NoSuchMessage>() {
            Some(missing) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_message",
                format!("{missing} (GET /api/dlq lists what is parked)"),
            )),
            None => Err(upstream("dlq_unreachable", None, &e)),
        },
    }
}
