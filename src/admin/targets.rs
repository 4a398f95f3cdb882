//! Admin endpoints of delivery targets and dead letters (`/admin/v1/targets*`,
//! `/admin/v1/deliveries*`). Thin: they call [`crate::delivery`] and render.
//!
//! | route | answer |
//! |---|---|
//! | `POST /admin/v1/targets` | 201 the target with its `secret` (PENDING_VERIFICATION); 400 every violated field; 409 name taken |
//! | `GET /admin/v1/targets` | 200 `{entities, nextCursor}`, newest first |
//! | `GET /admin/v1/targets/{id}` | 200 the target (never its secret); 404 |
//! | `PATCH /admin/v1/targets/{id}` | 200 the target; 400; 404; 409 declarative or name taken |
//! | `DELETE /admin/v1/targets/{id}` | 204; 404; 409 declarative |
//! | `POST /admin/v1/targets/{id}/verify` | 202 the target, PENDING_VERIFICATION |
//! | `POST /admin/v1/targets/{id}/health` | 200 `{status: UP\|DOWN, latencyMs, httpStatus, error}` |
//! | `POST /admin/v1/targets/{id}/rotate-secret` | 200 the target with its new `secret`; 409 declarative |
//! | `GET /admin/v1/deliveries?status=&target=&limit=&cursor=` | 200 `{entities, nextCursor}`, newest first |
//! | `POST /admin/v1/deliveries/{id}/replay` | 200 the delivery, pending again; 404; 409 when it is not dead |
//! | `POST /admin/v1/deliveries/replay?target=` | 200 `{"replayed": n}` every dead delivery of the target |

use axum::Json;
use axum::extract::{Path, State};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use chrono::Utc;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, ThrottledAuth};
use crate::delivery::targets::{HealthProbe, TargetView, Targets};
use crate::delivery::{DeliveryStatus, DeliveryView, TargetError};
use crate::error::{self, ApiError, NoParams, Query};
use crate::store::{AuditRecord, DeliveryFilter, Page};
use crate::telemetry::RequestId;

/// What the target and delivery admin endpoints need.
#[derive(Clone, Debug)]
pub struct TargetsAdminState {
    /// The targets capability (and through it the engine).
    pub targets: Targets,
}

/// The `/admin/v1/targets*` and `/admin/v1/deliveries*` routes, behind the admin bearer check.
pub fn router(state: TargetsAdminState, auth: ThrottledAuth) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_targets, create_target))
        .routes(routes!(get_target, patch_target, delete_target))
        .routes(routes!(verify_target))
        .routes(routes!(probe_target))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(replay_delivery))
        .routes(routes!(replay_target))
        .with_state(state)
        .route_layer(from_fn_with_state(auth, auth::require_throttled))
}

/// Query of the lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size (default 100, clamped to 1000).
    limit: Option<u32>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Lists the targets, newest first (never their secrets).
#[utoipa::path(get, path = "/admin/v1/targets", tag = "admin", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "`{entities, nextCursor}`"),
              (status = 400, description = "Bad cursor or parameter"),
              (status = 401, description = "Missing or wrong bearer token")))]
async fn list_targets(
    State(state): State<TargetsAdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<TargetView>>, ApiError> {
    Ok(Json(
        state
            .targets
            .list(&super::page_request(q.limit, q.cursor))
            .await?,
    ))
}

/// Creates a target: 201 with its `secret` (shown only here and on rotation); verification
/// follows asynchronously.
#[utoipa::path(post, path = "/admin/v1/targets", tag = "admin",
    security(("bearer" = [])),
    responses((status = 201, description = "The target, PENDING_VERIFICATION, with `secret`"),
              (status = 400, description = "`invalid.input`: one detail per violated field"),
              (status = 401, description = "Missing or wrong bearer token"),
              (status = 409, description = "`conflict`: the name is taken")))]
async fn create_target(
    State(state): State<TargetsAdminState>,
    Query(NoParams {}): Query<NoParams>,
    error::Json(body): error::Json<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let view = state.targets.create(&body).await?;
    let location = format!("/admin/v1/targets/{}", view.id);
    Ok((
        StatusCode::CREATED,
        [(http::header::LOCATION, location)],
        Json(view),
    ))
}

/// One target (never its secret).
#[utoipa::path(get, path = "/admin/v1/targets/{id}", tag = "admin",
    params(("id" = String, Path, description = "Target id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The target"),
              (status = 401, description = "Missing or wrong bearer token"),
              (status = 404, description = "No such target")))]
async fn get_target(
    State(state): State<TargetsAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Json<TargetView>, ApiError> {
    Ok(Json(state.targets.get(&id).await?))
}

/// Changes a target: the fields given replace the stored ones; the result is validated whole.
#[utoipa::path(patch, path = "/admin/v1/targets/{id}", tag = "admin",
    params(("id" = String, Path, description = "Target id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The target"),
              (status = 400, description = "`invalid.input`: one detail per violated field"),
              (status = 404, description = "No such target"),
              (status = 409, description = "Declarative target, or the name is taken")))]
async fn patch_target(
    State(state): State<TargetsAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
    error::Json(body): error::Json<Value>,
) -> Result<Json<TargetView>, ApiError> {
    Ok(Json(state.targets.patch(&id, &body).await?))
}

/// Deletes a target; its pending deliveries become dead ("target deleted").
#[utoipa::path(delete, path = "/admin/v1/targets/{id}", tag = "admin",
    params(("id" = String, Path, description = "Target id")),
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"),
              (status = 404, description = "No such target"),
              (status = 409, description = "Declarative target")))]
async fn delete_target(
    State(state): State<TargetsAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<StatusCode, ApiError> {
    state.targets.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Verifies a target again (also brings a DISABLED or FAILED one back once it answers).
#[utoipa::path(post, path = "/admin/v1/targets/{id}/verify", tag = "admin",
    params(("id" = String, Path, description = "Target id")),
    security(("bearer" = [])),
    responses((status = 202, description = "The target, PENDING_VERIFICATION"),
              (status = 404, description = "No such target")))]
async fn verify_target(
    State(state): State<TargetsAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<(StatusCode, Json<TargetView>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(state.targets.verify(&id).await?)))
}

/// Probes a target now with one signed `gateway.target.health` event.
#[utoipa::path(post, path = "/admin/v1/targets/{id}/health", tag = "admin",
    params(("id" = String, Path, description = "Target id")),
    security(("bearer" = [])),
    responses((status = 200, description = "`{status, latencyMs, httpStatus, error}`"),
              (status = 404, description = "No such target")))]
async fn probe_target(
    State(state): State<TargetsAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Json<HealthProbe>, ApiError> {
    Ok(Json(state.targets.probe(&id).await?))
}

/// Gives a target a new secret (the previous one keeps signing too for 24 hours).
#[utoipa::path(post, path = "/admin/v1/targets/{id}/rotate-secret", tag = "admin",
    params(("id" = String, Path, description = "Target id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The target with its new `secret`"),
              (status = 404, description = "No such target"),
              (status = 409, description = "Declarative target")))]
async fn rotate_secret(
    State(state): State<TargetsAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Json<TargetView>, ApiError> {
    Ok(Json(state.targets.rotate_secret(&id).await?))
}

/// Query of `GET /admin/v1/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// `dead`, `pending`, `delivering` or `delivered`.
    status: Option<String>,
    /// Only deliveries to this target (its id).
    target: Option<String>,
    /// Page size (default 100, clamped to 1000).
    limit: Option<u32>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Lists deliveries, newest first (dead letters with `status=dead`).
#[utoipa::path(get, path = "/admin/v1/deliveries", tag = "admin", params(DeliveriesQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "`{entities, nextCursor}`"),
              (status = 400, description = "Bad status, cursor or parameter")))]
async fn list_deliveries(
    State(state): State<TargetsAdminState>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Page<DeliveryView>>, ApiError> {
    let status = q.status.filter(|s| !s.is_empty());
    if let Some(status) = &status
        && DeliveryStatus::parse(status).is_none()
    {
        return Err(ApiError::bad_request(
            "`status` must be dead, pending, delivering or delivered.",
        ));
    }
    let filter = DeliveryFilter {
        status,
        destination_id: q.target.filter(|t| !t.is_empty()),
    };
    let page = state
        .targets
        .engine()
        .store()
        .list_deliveries(&filter, &super::page_request(q.limit, q.cursor))
        .await
        .map_err(TargetError::from)?;
    Ok(Json(Page {
        entities: page
            .entities
            .into_iter()
            .map(DeliveryView::of_row)
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

fn replay_record(subject: &str, detail: Value) -> AuditRecord {
    let mut record = AuditRecord::now("delivery.replayed", "admin", "success")
        .with_subject(subject)
        .with_detail(detail);
    if let Some(id) = RequestId::current() {
        record = record.with_request_id(&*id);
    }
    record
}

/// Replays one dead delivery: pending again, due now, its attempts reset (it waits while its
/// target is not VERIFIED).
#[utoipa::path(post, path = "/admin/v1/deliveries/{id}/replay", tag = "admin",
    params(("id" = String, Path, description = "Delivery id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The delivery, pending"),
              (status = 404, description = "No such delivery"),
              (status = 409, description = "The delivery is not dead")))]
async fn replay_delivery(
    State(state): State<TargetsAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Json<DeliveryView>, ApiError> {
    let engine = state.targets.engine();
    let store = engine.store();
    let row = store
        .delivery(&id)
        .await
        .map_err(TargetError::from)?
        .ok_or(TargetError::NotFound("delivery"))?;
    let mut tx = store.begin().await.map_err(TargetError::from)?;
    let replayed = tx
        .replay_delivery(&id, Utc::now().timestamp_millis())
        .await
        .map_err(TargetError::from)?;
    if !replayed {
        return Err(TargetError::Conflict(format!(
            "The delivery is {}, not dead: only dead deliveries are replayed.",
            row.status
        ))
        .into());
    }
    tx.append_audit(&replay_record(
        &id,
        json!({ "eventId": row.message_id, "targetId": row.destination_id }),
    ))
    .await
    .map_err(TargetError::from)?;
    tx.commit().await.map_err(TargetError::from)?;
    engine.wake();
    let row = store
        .delivery(&id)
        .await
        .map_err(TargetError::from)?
        .ok_or(TargetError::NotFound("delivery"))?;
    Ok(Json(DeliveryView::of_row(row)))
}

/// Query of `POST /admin/v1/deliveries/replay`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReplayQuery {
    /// The target whose dead deliveries are replayed (its id).
    target: Option<String>,
}

/// Replays every dead delivery of a target.
#[utoipa::path(post, path = "/admin/v1/deliveries/replay", tag = "admin", params(ReplayQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "`{\"replayed\": n}`"),
              (status = 400, description = "`target` is missing"),
              (status = 404, description = "No such target")))]
async fn replay_target(
    State(state): State<TargetsAdminState>,
    Query(q): Query<ReplayQuery>,
) -> Result<Json<Value>, ApiError> {
    let Some(target) = q.target.filter(|t| !t.is_empty()) else {
        return Err(ApiError::bad_request(
            "`target` (a target id) is required: which target's dead deliveries to replay.",
        ));
    };
    let engine = state.targets.engine();
    let view = state.targets.get(&target).await?;
    let mut tx = engine.store().begin().await.map_err(TargetError::from)?;
    let replayed = tx
        .replay_dead_deliveries(&target, Utc::now().timestamp_millis())
        .await
        .map_err(TargetError::from)?;
    tx.append_audit(&replay_record(
        &target,
        json!({ "targetName": view.name, "replayed": replayed }),
    ))
    .await
    .map_err(TargetError::from)?;
    tx.commit().await.map_err(TargetError::from)?;
    engine.wake();
    Ok(Json(json!({ "replayed": replayed })))
}
