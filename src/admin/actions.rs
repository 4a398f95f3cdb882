//! Admin endpoints of data actions (SPEC §3.6): list the actions served, reload the
//! configuration, publish the actions into Genesys.
//!
//! Thin: they call [`crate::data_actions`] and render.

use axum::Json;
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use serde::Deserialize;
use serde::Serialize;
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, InboundAuth};
use crate::data_actions::ActionRegistry;
use crate::data_actions::publish::{self, Publication, PublishLock, PublishMode, PublishReport};
use crate::error::{ApiError, ErrorCode, Query};
use crate::genesys::GenesysClient;
use crate::reload::{ReloadReport, ReloadTrigger, Reloader};
use crate::store::Store;
use crate::telemetry::RequestId;
use crate::upstream::UpstreamRegistry;

/// What the data actions admin endpoints need.
#[derive(Clone, Debug)]
pub struct ActionsAdminState {
    /// Reloads the configuration; also gives the settings in force.
    pub reloader: Reloader,
    /// The actions being served.
    pub actions: ActionRegistry,
    /// The upstreams (Genesys among them).
    pub upstreams: UpstreamRegistry,
    /// Where `action.published` records go.
    pub store: Store,
    /// The application's background tasks (a publication runs as one).
    pub tasks: tokio_util::task::TaskTracker,
    /// Serialises publications in this process (share it with anything else that publishes).
    pub publish_lock: PublishLock,
}

/// The `/admin/v1` routes of data actions, behind the admin bearer check.
pub fn router(state: ActionsAdminState, auth: InboundAuth) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_actions))
        .routes(routes!(reload))
        .routes(routes!(publish_actions))
        .with_state(state)
        .route_layer(from_fn_with_state(auth, auth::require))
}

/// One action as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ActionEntry {
    name: String,
    upstream: String,
    method: String,
    path: String,
    timeout_ms: u64,
    has_input_schema: bool,
    has_output_schema: bool,
}

/// A page of actions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ActionList {
    entities: Vec<ActionEntry>,
    next_cursor: Option<String>,
}

/// Query of `GET /admin/v1/actions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size (default 100, clamped to 1000).
    limit: Option<u32>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Lists the data actions being served, by name; `nextCursor` (opaque: the last name listed,
/// base64url) continues after the last entry of the page, even across a reload.
#[utoipa::path(get, path = "/admin/v1/actions", tag = "admin",
    params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "`{entities, nextCursor}`, by name", body = ActionList),
              (status = 400, description = "`bad.request`: the cursor is not one this endpoint gave"),
              (status = 401, description = "Missing or wrong bearer token")))]
async fn list_actions(
    State(state): State<ActionsAdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ActionList>, ApiError> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let page = super::page_request(q.limit, q.cursor);
    let after = page
        .cursor
        .map(|cursor| {
            URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|name| String::from_utf8(name).ok())
                .and_then(|name| crate::data_actions::ActionName::parse(&name).ok())
                .ok_or_else(|| ApiError::bad_request("`cursor` is not valid."))
        })
        .transpose()?;
    let set = state.actions.load();
    let mut actions: Vec<_> = set
        .iter()
        .map(|bound| bound.action())
        .filter(|a| after.as_ref().is_none_or(|after| a.name() > after))
        .collect();
    actions.sort_unstable_by(|a, b| a.name().cmp(b.name()));
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    let next_cursor =
        (actions.len() > limit).then(|| URL_SAFE_NO_PAD.encode(actions[limit - 1].name().as_str()));
    let entities = actions
        .into_iter()
        .take(limit)
        .map(|a| ActionEntry {
            name: a.name().to_string(),
            upstream: a.upstream().to_owned(),
            method: a.method().to_string(),
            path: a.path().to_owned(),
            timeout_ms: u64::try_from(a.timeout().as_millis()).unwrap_or(u64::MAX),
            has_input_schema: a.input_schema().is_some(),
            has_output_schema: a.output_schema().is_some(),
        })
        .collect();
    Ok(Json(ActionList {
        entities,
        next_cursor,
    }))
}

/// Reads the config file again and swaps in its actions, upstreams and targets atomically.
#[utoipa::path(post, path = "/admin/v1/reload", tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "Reloaded: `{actions, upstreams, targets, added, changed, removed, restartRequired}`", body = Object),
              (status = 400, description = "`invalid.input`: one detail per problem (`fieldName` = key path); the running configuration stays"),
              (status = 401, description = "Missing or wrong bearer token")))]
async fn reload(State(state): State<ActionsAdminState>) -> Result<Json<ReloadReport>, ApiError> {
    Ok(Json(state.reloader.reload(ReloadTrigger::Admin).await?))
}

/// Query of `POST /admin/v1/actions/publish`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct PublishQuery {
    /// Report what would change; write nothing, run no tests.
    dry_run: Option<bool>,
}

/// Provisions the served actions into Genesys: one `custom-rest-actions` integration with a
/// `basicAuth` credential and one data action per gateway action, then tests each that has an
/// `example_input`.
///
/// The publication runs in a task of its own, one at a time in this process (a second request
/// waits for the first): a request cut by the server's deadline or by its client still gets
/// its publication finished and audited. It publishes the settings and actions of one
/// configuration, as in force when it starts.
#[utoipa::path(post, path = "/admin/v1/actions/publish", tag = "admin",
    params(PublishQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "One entry per action: `{name, genesysActionId, change, test}`", body = PublishReport),
              (status = 400, description = "`invalid.input`: `data_actions.public_url` missing or a header credential"),
              (status = 401, description = "Missing or wrong bearer token"),
              (status = 502, description = "Genesys refused a call"),
              (status = 503, description = "Genesys unavailable"),
              (status = 504, description = "`request.timeout`: the request's deadline passed; the publication goes on and is audited")))]
async fn publish_actions(
    State(state): State<ActionsAdminState>,
    Query(q): Query<PublishQuery>,
) -> Result<Json<PublishReport>, ApiError> {
    let mode = if q.dry_run.unwrap_or(false) {
        PublishMode::DryRun
    } else {
        PublishMode::Apply
    };
    let tasks = state.tasks.clone();
    let publication = async move {
        let _serialised = state.publish_lock.acquire().await;
        // Settings and actions of one configuration: no reload runs while they are taken.
        let (settings, set, upstreams) = state
            .reloader
            .with_settings(|s| (s.clone(), state.actions.load(), state.upstreams.load()))
            .await;
        let client = GenesysClient::from_upstreams(&upstreams).ok_or_else(|| {
            tracing::error!("no genesys upstream to publish through");
            ApiError::new(
                ErrorCode::InternalServerError,
                "The gateway cannot reach Genesys.",
            )
        })?;
        let report = publish::publish(Publication {
            client: &client,
            settings: &settings.data_actions,
            actions: set.iter().map(|b| b.action()).collect(),
            mode,
            store: Some((&state.store, "admin")),
        })
        .await?;
        Ok::<_, ApiError>(report)
    }
    .instrument(tracing::Span::current());
    let request_id = RequestId::current();
    let task = tasks.spawn(async move {
        match request_id {
            Some(id) => id.scope(publication).await,
            None => publication.await,
        }
    });
    let report = task.await.map_err(|err| {
        tracing::error!(error = %err, "the publication task failed");
        ApiError::internal()
    })??;
    Ok(Json(report))
}
