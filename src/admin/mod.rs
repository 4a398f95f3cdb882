//! The admin surface `/admin/v1`: bearer-token protected operator endpoints.
//!
//! Handlers here are thin: they parse, call the capability modules and the store, and render.
//! Without a configured non-empty token the surface is not mounted at all (404). Every handler
//! takes its query through [`Query`], so an unknown or misspelt parameter is a 400 naming it
//! (never silently ignored) and a credential in the query string a 401 — both only after the
//! bearer check, which runs first.

pub mod actions;
pub mod targets;
pub mod webhooks;

use axum::extract::State;
use axum::middleware::from_fn_with_state;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, ThrottledAuth};
use crate::error::{ApiError, Query};
use crate::store::{AuditEntry, AuditFilter, Page, PageRequest, Store, StoreError};

/// Default page size of admin lists.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size; larger requests are clamped.
pub const MAX_LIMIT: u32 = 1000;

/// What the admin handlers need.
#[derive(Clone)]
pub struct AdminState {
    /// The store.
    pub store: Store,
}

/// The `/admin/v1` routes behind the bearer check (throttled per address after repeated
/// failures).
pub fn router(state: AdminState, auth: ThrottledAuth) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .with_state(state)
        .route_layer(from_fn_with_state(auth, auth::require_throttled))
}

/// Query of `GET /admin/v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only records at or after this instant (RFC 3339).
    since: Option<String>,
    /// Only records of this kind.
    kind: Option<String>,
    /// Page size (default 100, clamped to 1000).
    limit: Option<u32>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Whether `kind` has the shape of an audit record kind: dot-separated lowercase words
/// (`config.reloaded`, `target.secret_rotated`), so that a filter that can match nothing
/// (`kind=reload`) is refused instead of answering an empty page.
fn is_audit_kind(kind: &str) -> bool {
    let mut parts = kind.split('.');
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    parts.clone().count() >= 2 && parts.all(word)
}

/// Page bounds shared by every admin list.
pub fn page_request(limit: Option<u32>, cursor: Option<String>) -> PageRequest {
    PageRequest {
        limit: limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        cursor: cursor.filter(|c| !c.is_empty()),
    }
}

/// Lists audit records, newest first.
#[utoipa::path(get, path = "/admin/v1/audit", tag = "admin", params(AuditQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "`{entities, nextCursor}`, newest first"),
              (status = 400, description = "Bad `since` or cursor"),
              (status = 401, description = "Missing or wrong bearer token")))]
async fn list_audit(
    State(state): State<AdminState>,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<Page<AuditEntry>>, ApiError> {
    let since = q
        .since
        .as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::bad_request("`since` must be an RFC 3339 date-time."))
        })
        .transpose()?;
    let kind = q.kind.filter(|k| !k.is_empty());
    if let Some(kind) = &kind
        && !is_audit_kind(kind)
    {
        return Err(ApiError::bad_request(format!(
            "`kind` is not an audit record kind: kinds are `<subject>.<event>`, such as \
             `config.reloaded`, `action.executed`, `action.published`, `action.tested` (got \
             `{}`).",
            kind.chars().take(64).collect::<String>()
        ))
        .with_details(vec![crate::error::ErrorDetail::new(
            "kind",
            "pattern",
            "An audit record kind looks like `config.reloaded`.",
        )]));
    }
    let filter = AuditFilter { since, kind };
    let page = state
        .store
        .query_audit(&filter, &page_request(q.limit, q.cursor))
        .await
        .map_err(|err| match err {
            StoreError::InvalidCursor => ApiError::bad_request("`cursor` is not valid."),
            err => {
                tracing::error!(error = %err, "audit query failed");
                ApiError::internal()
            }
        })?;
    Ok(axum::Json(page))
}
