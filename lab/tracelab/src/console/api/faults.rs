//! Faults: the injection points, the faults set on each service, setting
//! and clearing them, through the services' admin API ([`FaultClient`],
//! built once in [`crate::console::ConsoleState::new`]).
//!
//! [`FaultClient`]: crate::fault::FaultClient

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracelab_contract::fault::{ActiveFault, FaultPoint};

use super::{ApiError, ApiResult, Json, upstream};
use crate::console::ConsoleState;
use crate::fault::{
    GENERIC_KINDS, canonical_service, check_point_and_kind, point, service_names, service_of_point,
    spec_from_value,
};

/// One injection point.
#[derive(Debug, Serialize, Deserialize)]
pub struct PointView {
    /// `payment.save`.
    pub point: String,
    /// The service that owns it.
    pub service: String,
    /// What it acts on.
    pub acts: String,
    /// The kinds that act there.
    pub kinds: Vec<String>,
}

/// The answer of `GET /api/faults/points`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Points {
    /// Every point, in the contract's order.
    pub points: Vec<PointView>,
    /// The kinds that act at every request point.
    pub generic_kinds: Vec<String>,
}

/// The faults of one service.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceFaults {
    /// Service (binary name).
    pub service: String,
    /// Whether firing faults add a `fault.injected` span event.
    pub visible: bool,
    /// The faults set now.
    pub faults: Vec<ActiveFault>,
}

/// The answer of `GET /api/faults`.
#[derive(Debug, Serialize, Deserialize)]
pub struct FaultList {
    /// Whether the faults are hidden (an exercise runs, no `peek`).
    pub hidden: bool,
    /// How many faults are set.
    pub count: usize,
    /// Per service (empty when hidden).
    pub services: Vec<ServiceFaults>,
}

/// The answer of `PUT /api/faults`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetFault {
    /// The service it was sent to.
    pub service: String,
    /// The fault as the service reports it.
    pub fault: ActiveFault,
}

/// The answer of `DELETE /api/faults/{point}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClearedPoint {
    /// The service owning the point.
    pub service: String,
    /// The point.
    pub point: String,
    /// Whether a fault was set there.
    pub cleared: bool,
}

/// The answer of `DELETE /api/faults`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cleared {
    /// How many faults were cleared.
    pub cleared: u64,
}

/// A boolean query flag: absent is false; `true`, `1`, `yes` and an empty
/// value are true; `false`, `0`, `no` are false.
pub(crate) fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if matches!(v.as_str(), "" | "true" | "1" | "yes") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Ok(false),
        Some(v) => Err(ApiError::bad_request(
            "invalid_query",
            format!("{name}: expected true or false, got {v:?}"),
        )),
    }
}

pub(crate) async fn points() -> Json<Points> {
    Json(Points {
        points: FaultPoint::ALL
            .iter()
            .map(|p| PointView {
                point: p.name().to_string(),
                service: p.service().name().to_string(),
                acts: p.acts().to_string(),
                kinds: p.kind_names().into_iter().map(str::to_string).collect(),
            })
            .collect(),
        generic_kinds: GENERIC_KINDS.iter().map(|k| k.to_string()).collect(),
    })
}

pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<FaultList> {
    let peek = flag(&query, "peek")?;
    let inner = &state.inner;
    let reports = inner
        .faults
        .list_all()
        .await
        .map_err(|e| upstream("lab_unreachable", None, &e))?;
    let count = reports.iter().map(|(_, r)| r.faults.len()).sum();
    let hidden = !peek && inner.exercises.current().ok().flatten().is_some();
    let services = if hidden {
        Vec::new()
    } else {
        reports
            .into_iter()
            .map(|(service, r)| ServiceFaults {
                service,
                visible: r.visible,
                faults: r.faults,
            })
            .collect()
    };
    Ok(Json(FaultList {
        hidden,
        count,
        services,
    }))
}

pub(crate) async fn set(
    State(state): State<ConsoleState>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> ApiResult<SetFault> {
    let force = flag(&query, "force")?;
    let show = flag(&query, "show_in_traces")?;
    let (service, spec) = spec_from_value(body)
        .map_err(|e| ApiError::bad_request("invalid_fault", format!("{e:#}")))?;
    if !force {
        if point(&spec.point).is_none() {
            let e = check_point_and_kind(&spec).err().map(|e| e.to_string());
            return Err(ApiError::bad_request(
                "unknown_point",
                e.unwrap_or_else(|| format!("unknown injection point {:?}", spec.point)),
            )
            .with_details(serde_json::json!({"field": "point"})));
        }
        check_point_and_kind(&spec).map_err(|e| {
            ApiError::bad_request("kind_not_here", e.to_string())
                .with_details(serde_json::json!({"field": "kind"}))
        })?;
    }
    let faults = &state.inner.faults;
    if show {
        faults
            .set_visible(service, true)
            .await
            .map_err(|e| upstream("lab_unreachable", Some(service), &e))?;
    }
    let fault = faults.set(service, &spec).await.map_err(|e| {
        // The service answered and refused: its reason is the learner's to read.
        let text = format!("{e:#}");
        if text.contains("refused the fault at") {
            ApiError::bad_request("fault_refused", text)
        } else {
            upstream("lab_unreachable", Some(service), &e)
        }
    })?;
    Ok(Json(SetFault {
        service: service.to_string(),
        fault,
    }))
}

pub(crate) async fn clear_point(
    State(state): State<ConsoleState>,
    Path(point_name): Path<String>,
) -> ApiResult<ClearedPoint> {
    let Some(service) = service_of_point(&point_name).filter(|_| point_name.contains('.')) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_point",
            format!("no injection point {point_name:?} (GET /api/faults/points lists them)"),
        ));
    };
    let cleared = state
        .inner
        .faults
        .clear_point(service, &point_name)
        .await
        .map_err(|e| upstream("lab_unreachable", Some(service), &e))?;
    Ok(Json(ClearedPoint {
        service: service.to_string(),
        point: point_name,
        cleared,
    }))
}

pub(crate) async fn clear_all(
    State(state): State<ConsoleState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Cleared> {
    let services: Vec<&str> = match query.get("service").map(|s| s.trim()) {
        None | Some("" | "all") => service_names(),
        Some(name) => vec![canonical_service(name).ok_or_else(|| {
            ApiError::bad_request(
                "unknown_service",
                format!(
                    "unknown service {name:?}: one of {}, or all",
                    service_names().join(", ")
                ),
            )
        })?],
    };
    let faults = &state.inner.faults;
    let mut cleared = 0;
    for service in services {
        cleared += faults
            .clear_service(service)
            .await
            .map_err(|e| upstream("lab_unreachable", Some(service), &e))?;
    }
    Ok(Json(Cleared { cleared }))
}
