//! Operations endpoints: liveness, readiness, metrics and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::health::{CheckResult, Readiness};
use crate::telemetry::Metrics;

/// State of the operations routes.
#[derive(Clone)]
pub struct OpsState {
    /// Readiness checks.
    pub readiness: Readiness,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

/// Routes `/healthz`, `/readyz` and `/metrics` (`/openapi.json` is added by the app, which is
/// the only place that knows every route).
pub fn router(state: OpsState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .with_state(state)
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
}

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
struct Ready {
    status: &'static str,
    checks: Vec<CheckResult>,
}

/// Readiness: 200 when every dependency answers, 503 with the failing checks otherwise and
/// during shutdown.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Ready),
              (status = 503, description = "Not ready (failing checks, or shutting down)", body = Ready)))]
async fn readyz(State(state): State<OpsState>) -> Response {
    let checks = state.readiness.evaluate().await;
    let ok = checks.iter().all(|c| c.ok);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Ready {
        status: if ok { "ok" } else { "unavailable" },
        checks,
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition of every gateway metric.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(state): State<OpsState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}
