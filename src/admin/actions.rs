//! Admin endpoints of data actions: list the actions served, show one with its stats since
//! start, test one with a trace of its steps, reload the configuration, publish the actions
//! into Genesys.
//!
//! Thin: they call [`crate::data_actions`] and render.

use axum::Json;
use axum::extract::{Path, State};
use axum::middleware::from_fn_with_state;
use serde::Deserialize;
use serde::Serialize;
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, ThrottledAuth};
use crate::data_actions::outcome::ActionStats;
use crate::data_actions::publish::{self, Publication, PublishLock, PublishMode, PublishReport};
use crate::data_actions::trial::Trial;
use crate::data_actions::{ActionRegistry, ActionSet, DataAction};
use crate::error::{ApiError, ErrorCode, NoParams, Query};
use crate::genesys::GenesysClient;
use crate::reload::{ReloadReport, ReloadTrigger, Reloader};
use crate::store::{AuditRecord, Store};
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
    /// The address this gateway listens on: a publication warns when `public_url` points at
    /// this machine but not there.
    pub served: std::net::SocketAddr,
}

/// The `/admin/v1` routes of data actions, behind the admin bearer check (throttled per
/// address after repeated failures).
pub fn router(state: ActionsAdminState, auth: ThrottledAuth) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_actions))
        .routes(routes!(get_action))
        .routes(routes!(test_action))
        .routes(routes!(reload))
        .routes(routes!(publish_actions))
        .with_state(state)
        .route_layer(from_fn_with_state(auth, auth::require_throttled))
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

impl ActionEntry {
    fn of(a: &DataAction) -> Self {
        Self {
            name: a.name().to_string(),
            upstream: a.upstream().to_owned(),
            method: a.method().to_string(),
            path: a.path().to_owned(),
            timeout_ms: u64::try_from(a.timeout().as_millis()).unwrap_or(u64::MAX),
            has_input_schema: a.input_schema().is_some(),
            has_output_schema: a.output_schema().is_some(),
        }
    }
}

/// One action with its figures since start.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ActionDetail {
    #[serde(flatten)]
    definition: ActionEntry,
    stats: ActionStats,
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
        .map(ActionEntry::of)
        .collect();
    Ok(Json(ActionList {
        entities,
        next_cursor,
    }))
}

/// One action being served — its definition as in the list — with `stats` since the process
/// started: `{calls, byOutcome: {outcome: n}, lastError: {at, outcome, upstreamStatus,
/// requestId} | null}` (kept across reloads).
#[utoipa::path(get, path = "/admin/v1/actions/{name}", tag = "admin",
    params(("name" = String, Path, description = "Action name")),
    security(("bearer" = [])),
    responses((status = 200, description = "The action and its stats", body = ActionDetail),
              (status = 401, description = "Missing or wrong bearer token"),
              (status = 404, description = "No action has this name")))]
async fn get_action(
    State(state): State<ActionsAdminState>,
    Path(name): Path<String>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Json<ActionDetail>, ApiError> {
    let set = state.actions.load();
    let bound = set.get(&name).ok_or_else(|| unknown_action(&set))?;
    Ok(Json(ActionDetail {
        definition: ActionEntry::of(bound.action()),
        stats: bound.metrics().stats(),
    }))
}

/// Runs an action once with the input object in the body and answers a trace of its steps:
/// input validation, request rendering (method, URL, query and header names — never a
/// credential value), the upstream call (status, attempts, latency), output mapping and output
/// validation. It really calls the upstream; it is audited (`action.tested`) and not counted
/// as an execution.
#[utoipa::path(post, path = "/admin/v1/actions/{name}/test", tag = "admin",
    params(("name" = String, Path, description = "Action name")),
    request_body(content = Object, description = "The action's input object", content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 200, description = "`{success, latencyMs, output, error, steps: [{name, ok, detail}]}` — also when the action failed", body = Trial),
              (status = 400, description = "`bad.request`: the body is not JSON"),
              (status = 401, description = "Missing or wrong bearer token"),
              (status = 404, description = "No action has this name")))]
async fn test_action(
    State(state): State<ActionsAdminState>,
    Path(name): Path<String>,
    Query(NoParams {}): Query<NoParams>,
    crate::error::Json(input): crate::error::Json<serde_json::Value>,
) -> Result<Json<Trial>, ApiError> {
    let set = state.actions.load();
    let bound = set.get(&name).ok_or_else(|| unknown_action(&set))?;
    let trial = bound.trial(input).await;
    let mut record = AuditRecord::now("action.tested", "admin", trial.outcome.as_str())
        .with_subject(bound.action().name().as_str())
        .with_detail(trial.audit_detail());
    if let Some(id) = RequestId::current() {
        record = record.with_request_id(&*id);
    }
    if let Err(err) = state.store.append_audit(&record).await {
        tracing::error!(error = %err, action = %name, "cannot audit an action test");
    }
    Ok(Json(trial))
}

/// 404 for an action name that is not served, naming those that are (a few).
fn unknown_action(set: &ActionSet) -> ApiError {
    let mut names: Vec<&str> = set.iter().map(|b| b.action().name().as_str()).collect();
    names.sort_unstable();
    let shown = names
        .iter()
        .take(20)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let message = if names.is_empty() {
        "No data action has this name; none are configured.".to_owned()
    } else if names.len() > 20 {
        format!("No data action has this name; served: {shown}, …")
    } else {
        format!("No data action has this name; served: {shown}.")
    };
    ApiError::not_found(message)
}

/// Reads the config file again and swaps in its actions, upstreams and targets atomically.
#[utoipa::path(post, path = "/admin/v1/reload", tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "Reloaded: `{actions, upstreams, targets, added, changed, removed, restartRequired}`", body = Object),
              (status = 400, description = "`invalid.input`: one detail per problem (`fieldName` = key path, `message` naming actions by name); the running configuration stays"),
              (status = 401, description = "Missing or wrong bearer token")))]
async fn reload(
    State(state): State<ActionsAdminState>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Json<ReloadReport>, ApiError> {
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
    responses((status = 200, description = "`{success, warnings, actions: [{name, genesysActionId, change, changes, error, test}]}` — also when an action failed to publish or its test failed (`success` is then false and the entry says why)", body = PublishReport),
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
            served: Some(state.served),
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
