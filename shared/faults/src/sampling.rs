//! The head sampling part of the admin API: the rules a service's head
//! sampler applies, read and replaced while it runs (the console's switch
//! between the lab's and the lesson's policy).
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/sampling` | 200 [`HeadReport`] |
//! | `PUT /admin/sampling` with a `head_based` section as JSON | 200 [`HeadReport`] (the new rules); 400 `invalid_sampling` |
//!
//! Both answer 409 `sampler_fixed` when the service runs no tracelab head
//! sampler (`OTEL_TRACES_SAMPLER` chose an SDK one, or the SDK is off).
//! The routes sit behind the admin token with the fault routes
//! ([`crate::admin::admin_router`]).

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracelab_service::{ApiError, Json};
use tracelab_telemetry::sampling::{HeadBased, HeadControl, HeadCounts};

/// `GET`/`PUT /admin/sampling`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadReport {
    /// The `service.name` the rules are applied for.
    pub service: String,
    /// The rules in force, in `sampling.yaml`'s `head_based` shape.
    pub head_based: HeadBased,
    /// What they mean here: the rate of a root span no `per_route` rule names.
    pub service_rate: f64,
    /// Root spans this service started, kept and not, since it started.
    pub counts: HeadCounts,
}

fn report(control: &HeadControl) -> HeadReport {
    HeadReport {
        service: control.service().to_string(),
        head_based: control.rules(),
        service_rate: control.service_rate(),
        counts: control.counts(),
    }
}

fn fixed() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "sampler_fixed",
        "this service runs no tracelab head sampler (OTEL_TRACES_SAMPLER chose an SDK sampler, \
         or OTEL_SDK_DISABLED is true): its head sampling cannot be read or replaced",
    )
}

/// The `/admin/sampling` routes over `control` (`None`: the 409 above).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(control: Option<HeadControl>) -> Router<S> {
    let for_put = control.clone();
    Router::new().route(
        "/admin/sampling",
        get(move || {
            let control = control.clone();
            async move { control.as_ref().map(|c| Json(report(c))).ok_or_else(fixed) }
        })
        .put(move |Json(body): Json<Value>| {
            let control = for_put.clone();
            async move {
                let control = control.ok_or_else(fixed)?;
                // Parsed here rather than by the extractor, which would answer 422.
                let head: HeadBased = serde_json::from_value(body).map_err(|e| {
                    ApiError::bad_request(
                        "invalid_sampling",
                        format!("expected a head_based section ({{\"rate\": 0.1, ...}}): {e}"),
                    )
                })?;
                control
                    .replace(head)
                    .map_err(|e| ApiError::bad_request("invalid_sampling", e))?;
                tracing::info!(
                    service_rate = control.service_rate(),
                    "head sampling rules replaced"
                );
                Ok::<_, ApiError>(Json(report(&control)))
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use http::Method;
    use tracelab_contract::service::ServiceName;

    use super::*;
    use crate::{FaultRegistry, admin_router_with_head};

    const TOKEN: &str = "s3cret-token";

    fn lab_rules() -> HeadBased {
        serde_json::from_value(serde_json::json!({
            "type": "probabilistic", "rate": 1.0,
            "per_service": {"search": 1.0}, "per_route": {"GET /api/products": 1.0}
        }))
        .unwrap()
    }

    /// The admin tests' request helper, on `/admin/sampling`.
    async fn call(
        app: &Router,
        method: Method,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        crate::admin::tests::call(app, method, "/admin/sampling", token, body).await
    }

    fn app(head: Option<HeadControl>) -> Router {
        admin_router_with_head(FaultRegistry::new(ServiceName::Gateway), TOKEN.into(), head)
    }

    #[tokio::test]
    async fn the_rules_are_read_and_replaced_with_the_token_only() {
        let control = HeadControl::new(lab_rules(), "search");
        let app = app(Some(control.clone()));
        let lesson = r#"{"type":"probabilistic","rate":0.1,"per_service":{"payment":1.0,"search":0.01},"per_route":{}}"#;
        for token in [None, Some("wrong")] {
            assert_eq!(
                call(&app, Method::GET, token, None).await.0,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                call(&app, Method::PUT, token, Some(lesson)).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            control.rules(),
            lab_rules(),
            "refused requests change nothing"
        );

        let (status, body) = call(&app, Method::GET, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["service"], "search");
        assert_eq!(body["service_rate"], 1.0);
        assert_eq!(body["head_based"]["per_route"]["GET /api/products"], 1.0);
        assert_eq!(
            body["counts"],
            serde_json::json!({"sampled": 0, "not_sampled": 0})
        );

        let (status, body) = call(&app, Method::PUT, Some(TOKEN), Some(lesson)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["service_rate"], 0.01);
        assert_eq!(control.service_rate(), 0.01);
        assert_eq!(control.rules().rate, 0.1);
    }

    #[tokio::test]
    async fn bad_bodies_get_a_json_400_and_change_nothing() {
        let control = HeadControl::new(lab_rules(), "gateway");
        let app = app(Some(control.clone()));
        for body in [
            r#"{"type":"probabilistic","rate":1.5}"#,
            r#"{"rate":0.1,"per_servce":{}}"#,
            r#"{"type":"rate_limiting","rate":0.1}"#,
            r#"{"policy":"lesson"}"#,
            r#"[1,2"#,
        ] {
            let (status, value) = call(&app, Method::PUT, Some(TOKEN), Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {value}");
            assert!(
                value["error"]["code"].is_string() && value["error"]["message"].is_string(),
                "{body}: {value}"
            );
        }
        let (_, value) = call(
            &app,
            Method::PUT,
            Some(TOKEN),
            Some(r#"{"type":"probabilistic","rate":1.5}"#),
        )
        .await;
        assert_eq!(value["error"]["code"], "invalid_sampling");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains("head_based.rate")
        );
        assert_eq!(control.rules(), lab_rules());
    }

    #[tokio::test]
    async fn without_a_tracelab_sampler_both_routes_say_so() {
        let app = app(None);
        let (status, body) = call(&app, Method::GET, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "sampler_fixed");
        let (status, _) = call(&app, Method::PUT, Some(TOKEN), Some(r#"{"rate":1}"#)).await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
}
