//! The HTTP surface of data actions (SPEC §3.2): `POST /v1/actions/{name}` and the
//! `POST /webhook/data-action` envelope.
//!
//! Both count every execution in `gateway_action_executions_total{action,outcome}` and
//! `gateway_action_duration_seconds{action}` — refused credentials and unknown actions included,
//! under the fixed label `unknown` when no known action is named — and hand one audit record per
//! execution to the [`AuditWriter`] (never a payload value).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, Path, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::outcome::{ActionMetrics, Outcome};
use super::registry::{ActionRegistry, ActionSet, BoundAction};
use crate::error::{ApiError, JsonBytes, parse_json};
use crate::store::{AuditRecord, AuditWriter};
use crate::telemetry::RequestId;

/// The audit `kind` of an execution.
pub const AUDIT_KIND: &str = "action.executed";
/// The audit `actor` of an execution (the caller is a Genesys flow).
const AUDIT_ACTOR: &str = "genesys";

/// What the data actions surface needs.
#[derive(Clone)]
pub struct DataActionsState {
    /// The actions being served.
    pub registry: Arc<ActionRegistry>,
    /// Where execution records go.
    pub audit: AuditWriter,
}

impl std::fmt::Debug for DataActionsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataActionsState").finish_non_exhaustive()
    }
}

/// The data actions routes, behind the `[data_actions.auth]` credential.
pub fn router(state: DataActionsState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(execute_action))
        .routes(routes!(execute_envelope))
        .route_layer(from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Checks the caller's credential against the current set's; a refusal is counted and audited
/// as an `unauthorized` execution.
async fn authorize(State(state): State<DataActionsState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let set = state.registry.peek();
    match set.auth().check(req.headers()) {
        Ok(()) => {
            drop(set);
            next.run(req).await
        }
        Err(err) => {
            let action = req
                .uri()
                .path()
                .strip_prefix("/v1/actions/")
                .and_then(|name| set.get(name));
            let mut execution = Execution::new(&set, &state.audit, started);
            execution.action = action;
            execution.finish(Err(err))
        }
    }
}

/// One execution being served: what to count and audit when it ends. An execution dropped
/// before it finished — the server's request deadline passed first, or the caller went away —
/// is counted and audited as a `timeout`.
struct Execution<'a> {
    set: &'a ActionSet,
    audit: &'a AuditWriter,
    action: Option<&'a Arc<BoundAction>>,
    started: Instant,
    flow_request_id: Option<String>,
    finished: bool,
}

impl<'a> Execution<'a> {
    fn new(set: &'a ActionSet, audit: &'a AuditWriter, started: Instant) -> Self {
        Self {
            set,
            audit,
            action: None,
            started,
            flow_request_id: None,
            finished: false,
        }
    }

    /// Counts, audits and renders the result.
    fn finish(mut self, result: Result<Response, ApiError>) -> Response {
        let (outcome, response) = match result {
            Ok(response) => (Outcome::Success, response),
            Err(err) => (Outcome::of_error(&err), err.into_response()),
        };
        self.record(outcome, Some(response.status()));
        self.finished = true;
        response
    }

    fn record(&mut self, outcome: Outcome, status: Option<StatusCode>) {
        let elapsed = self.started.elapsed();
        let metrics: &ActionMetrics = self
            .action
            .map_or_else(|| self.set.unknown_metrics(), |a| a.metrics());
        metrics.observe(outcome, elapsed.as_secs_f64());
        let mut record = AuditRecord::now(AUDIT_KIND, AUDIT_ACTOR, outcome.as_str()).with_detail(
            serde_json::json!({
                "status": status.map(|s| s.as_u16()),
                "durationMs": elapsed.as_secs_f64() * 1000.0,
                "flowRequestId": self.flow_request_id.take(),
            }),
        );
        if let Some(action) = self.action {
            record = record.with_subject(action.action().name().as_str());
        }
        if let Some(id) = RequestId::current() {
            record = record.with_request_id(&*id);
        }
        self.audit.record(record);
    }
}

impl Drop for Execution<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            self.record(Outcome::Timeout, None);
        }
    }
}

/// 200 with a JSON body.
fn json_response(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn unknown_action() -> ApiError {
    ApiError::not_found("No data action has this name.")
}

/// Runs a data action with the flow's input object.
#[utoipa::path(post, path = "/v1/actions/{name}", tag = "data actions",
    params(("name" = String, Path, description = "Action name")),
    request_body(content = Object, description = "The action's input object", content_type = "application/json"),
    security(("basic" = [])),
    responses((status = 200, description = "The output object", body = Object),
              (status = 400, description = "`invalid.input`: the input fails the schema or lacks a required value"),
              (status = 401, description = "Missing or wrong credentials"),
              (status = 404, description = "No such action"),
              (status = 422, description = "`output.invalid`: the upstream's answer fails the output schema"),
              (status = 502, description = "`upstream.error`"),
              (status = 503, description = "`upstream.unavailable` or `circuit.open`"),
              (status = 504, description = "`request.timeout`")))]
async fn execute_action(
    State(state): State<DataActionsState>,
    name: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let set = state.registry.load();
    let action = name.ok().and_then(|Path(name)| set.get(&name));
    let mut execution = Execution::new(&set, &state.audit, started);
    let Some(action) = action else {
        return execution.finish(Err(unknown_action()));
    };
    execution.action = Some(action);
    let result = async {
        let JsonBytes(raw) = JsonBytes::from_request(req, &()).await?;
        action.execute(raw).await.map(json_response)
    }
    .await;
    execution.finish(result)
}

/// The `POST /webhook/data-action` envelope.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    /// The flow's id of this call, echoed back and audited as `flowRequestId`.
    #[serde(default)]
    request_id: Option<String>,
    /// The action to run.
    action: String,
    /// The input object.
    data: Box<RawValue>,
}

/// Runs a data action from an envelope `{"requestId", "action", "data"}`; answers
/// `{"requestId", "data": <output>}`.
#[utoipa::path(post, path = "/webhook/data-action", tag = "data actions",
    request_body(content = Object, description = "`{\"requestId\", \"action\", \"data\"}`", content_type = "application/json"),
    security(("basic" = [])),
    responses((status = 200, description = "`{\"requestId\", \"data\": <output>}`", body = Object),
              (status = 400, description = "`invalid.input` or `bad.request`"),
              (status = 401, description = "Missing or wrong credentials"),
              (status = 404, description = "No such action"),
              (status = 422, description = "`output.invalid`"),
              (status = 502, description = "`upstream.error`"),
              (status = 503, description = "`upstream.unavailable` or `circuit.open`"),
              (status = 504, description = "`request.timeout`")))]
async fn execute_envelope(State(state): State<DataActionsState>, req: Request) -> Response {
    let started = Instant::now();
    let set = state.registry.load();
    let mut execution = Execution::new(&set, &state.audit, started);
    let envelope = match JsonBytes::from_request(req, &()).await {
        Ok(JsonBytes(raw)) => parse_json::<Envelope>(&raw),
        Err(err) => Err(err),
    };
    let envelope = match envelope {
        Ok(e) => e,
        Err(err) => return execution.finish(Err(err)),
    };
    execution.flow_request_id = envelope.request_id.clone();
    let Some(action) = set.get(&envelope.action) else {
        return execution.finish(Err(unknown_action()));
    };
    execution.action = Some(action);
    let raw = Bytes::copy_from_slice(envelope.data.get().as_bytes());
    let result = action.execute(raw).await.map(|output| {
        let request_id = serde_json::to_vec(&envelope.request_id).unwrap_or_default();
        let mut body = BytesMut::with_capacity(output.len() + request_id.len() + 24);
        body.put_slice(b"{\"requestId\":");
        body.put_slice(&request_id);
        body.put_slice(b",\"data\":");
        body.put_slice(&output);
        body.put_u8(b'}');
        json_response(body.freeze())
    });
    execution.finish(result)
}
