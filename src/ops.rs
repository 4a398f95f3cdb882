//! Operations endpoints (SPEC §3.1): liveness, readiness, metrics and the OpenAPI document.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::telemetry::Metrics;

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency `/readyz` checks (the store, the Genesys token...).
pub trait ReadinessCheck: Send + Sync {
    /// Short name shown in the `/readyz` answer.
    fn name(&self) -> &'static str;
    /// `Ok` when the dependency can serve; `Err` with a short, non-secret reason otherwise.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// The readiness of this process: its checks, and whether it is shutting down.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "checks",
                &self.checks.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("stopping", &self.stopping.load(Ordering::Relaxed))
            .finish()
    }
}

impl Readiness {
    /// Readiness with these checks.
    pub fn new(checks: Vec<Arc<dyn ReadinessCheck>>) -> Self {
        Self {
            checks: Arc::new(checks),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on `/readyz` answers 503 (graceful shutdown has begun).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

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

#[derive(Serialize, utoipa::ToSchema)]
struct CheckResult {
    name: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Readiness: 200 when every dependency answers, 503 with the failing checks otherwise and
/// during shutdown.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Ready),
              (status = 503, description = "Not ready (failing checks, or shutting down)", body = Ready)))]
async fn readyz(State(state): State<OpsState>) -> Response {
    let readiness = &state.readiness;
    let mut checks = Vec::with_capacity(readiness.checks.len() + 1);
    if readiness.stopping.load(Ordering::Acquire) {
        checks.push(CheckResult {
            name: "shutdown",
            ok: false,
            error: Some("the gateway is shutting down".to_owned()),
        });
    }
    let results = futures_util::future::join_all(readiness.checks.iter().map(|c| async move {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, c.check()).await {
            Ok(result) => result,
            Err(_) => Err("timed out".to_owned()),
        };
        CheckResult {
            name: c.name(),
            ok: outcome.is_ok(),
            error: outcome.err(),
        }
    }))
    .await;
    checks.extend(results);
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
