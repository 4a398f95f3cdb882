//! Admin endpoints of webhook subscriptions: `/admin/v1/webhooks` — create (the secret shown
//! once), list, show, delete, rotate the secret.
//!
//! Thin: they call [`crate::delivery::webhooks::Webhooks`] and render.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, ThrottledAuth};
use crate::delivery::webhooks::{CreatedWebhook, NewWebhook, RotatedSecret, Webhook, Webhooks};
use crate::error::{ApiError, NoParams, Query};
use crate::store::Page;

/// What the webhook admin endpoints need.
#[derive(Clone, Debug)]
pub struct WebhooksAdminState {
    /// The subscriptions.
    pub webhooks: Webhooks,
}

/// The `/admin/v1/webhooks` routes, behind the admin bearer check.
pub fn router(state: WebhooksAdminState, auth: ThrottledAuth) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .with_state(state)
        .route_layer(from_fn_with_state(auth, auth::require_throttled))
}

/// Query of `GET /admin/v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size (default 100, clamped to 1000).
    limit: Option<u32>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Subscribes a URL to event types: 201 with the subscription and its signing secret (shown
/// only here).
#[utoipa::path(post, path = "/admin/v1/webhooks", tag = "admin",
    security(("bearer" = [])),
    request_body(content = serde_json::Value, description = "`{url, eventTypes, description}`"),
    responses((status = 201, description = "`{id, url, eventTypes, description, createdAt, secret}`"),
              (status = 400, description = "`invalid.input`: every violated field in `details`"),
              (status = 401, description = "Missing or wrong bearer token")))]
async fn create_webhook(
    State(state): State<WebhooksAdminState>,
    Query(NoParams {}): Query<NoParams>,
    crate::error::Json(body): crate::error::Json<serde_json::Value>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let new = NewWebhook::from_value(&body, state.webhooks.network_policy())?;
    Ok((StatusCode::CREATED, Json(state.webhooks.create(new).await?)))
}

/// Lists the subscriptions, newest first (never their secrets).
#[utoipa::path(get, path = "/admin/v1/webhooks", tag = "admin", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "`{entities, nextCursor}`, newest first"),
              (status = 400, description = "`bad.request`: an unknown parameter or a bad cursor"),
              (status = 401, description = "Missing or wrong bearer token")))]
async fn list_webhooks(
    State(state): State<WebhooksAdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<Webhook>>, ApiError> {
    let page = super::page_request(q.limit, q.cursor);
    Ok(Json(state.webhooks.list(&page).await?))
}

/// One subscription (never its secret).
#[utoipa::path(get, path = "/admin/v1/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "Subscription id")),
    security(("bearer" = [])),
    responses((status = 200, description = "`{id, url, eventTypes, description, createdAt}`"),
              (status = 401, description = "Missing or wrong bearer token"),
              (status = 404, description = "No such subscription")))]
async fn get_webhook(
    State(state): State<WebhooksAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(state.webhooks.get(&id).await?))
}

/// Deletes a subscription: 204.
#[utoipa::path(delete, path = "/admin/v1/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "Subscription id")),
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"),
              (status = 401, description = "Missing or wrong bearer token"),
              (status = 404, description = "No such subscription")))]
async fn delete_webhook(
    State(state): State<WebhooksAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<StatusCode, ApiError> {
    state.webhooks.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives a subscription a new secret (shown only here); the previous one keeps signing for
/// 24 hours.
#[utoipa::path(post, path = "/admin/v1/webhooks/{id}/rotate-secret", tag = "admin",
    params(("id" = String, Path, description = "Subscription id")),
    security(("bearer" = [])),
    responses((status = 200, description = "`{secret}`"),
              (status = 401, description = "Missing or wrong bearer token"),
              (status = 404, description = "No such subscription")))]
async fn rotate_secret(
    State(state): State<WebhooksAdminState>,
    Path(id): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Json<RotatedSecret>, ApiError> {
    Ok(Json(state.webhooks.rotate_secret(&id).await?))
}
