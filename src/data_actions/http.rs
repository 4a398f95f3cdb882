//! The HTTP surface of data actions: `POST /v1/actions/{name}` and the
//! `POST /webhook/data-action` envelope.
//!
//! # Auth
//! Each handler checks the caller's credential against the action set it loaded for the call
//! (one registry load per request; a reload that changes `[data_actions.auth]` applies to the
//! next call).
//!
//! # Accounting
//! Every call is counted in `gateway_action_executions_total{action,outcome}` and
//! `gateway_action_duration_seconds{action}` — refused credentials and unknown actions
//! included, under the fixed label `unknown` when no known action is named.
//!
//! Every call that got past the credential check is an execution and hands one audit record
//! to the [`AuditWriter`] (never a payload value): `detail` holds the answered `status`,
//! `durationMs` and, for the envelope, the flow's `requestId` as `flowRequestId` (at most
//! [`MAX_FLOW_REQUEST_ID_CHARS`] characters of it; the answer echoes it whole). A call refused
//! for its credential is counted as `unauthorized` but not audited: anyone can send one, and
//! they must not be able to fill the audit log or the writer's queue.
//!
//! A flood must not fill the store either: per action and outcome, the first
//! `audit.execution_records_per_s` executions of each second are written individually; the
//! others are counted, and [`write_audit_summaries`] writes one summary record per second per
//! action and outcome whose `detail.count` is the executions it stands for.
//!
//! An execution dropped before it finished is counted and audited as a `timeout` with status
//! 504 when the server's request deadline (`server.request_timeout_ms`) passed first (the
//! client got that 504 from the edge), and as `canceled` with status 499 when the caller went
//! away mid-call (no answer was sent); the edge marks the drops it makes at the deadline
//! ([`crate::telemetry::DeadlineDrop`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ActionError;
use super::execute::BoundAction;
use super::outcome::{ActionMetrics, LastError, Outcome, UNKNOWN_ACTION};
use super::registry::{ActionRegistry, ActionSet};
use crate::error::{ApiError, JsonBytes, NoParams, parse_json, parse_query};
use crate::store::{AuditRecord, AuditWriter};
use crate::telemetry::RequestId;
use crate::upstream::CallTrace;

/// The audit `kind` of an execution.
pub const AUDIT_KIND: &str = "action.executed";
/// The audit `actor` of an execution (the caller is a Genesys flow).
const AUDIT_ACTOR: &str = "genesys";
/// The status audited for an execution whose caller went away (nginx's "client closed
/// request"; never sent: there is nobody to send it to).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;
/// At most this many characters of the envelope's `requestId` are kept in the audit record.
pub const MAX_FLOW_REQUEST_ID_CHARS: usize = 256;

/// What the data actions surface needs.
#[derive(Clone)]
pub struct DataActionsState {
    /// The actions being served.
    pub registry: ActionRegistry,
    /// Where execution records go.
    pub audit: AuditWriter,
    /// `audit.execution_records_per_s`: records written individually per second, per action
    /// and outcome (0 = no limit); beyond, summary records ([`write_audit_summaries`]).
    pub execution_records_per_s: u64,
}

impl std::fmt::Debug for DataActionsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataActionsState").finish_non_exhaustive()
    }
}

/// The data actions routes; each handler checks the `[data_actions.auth]` credential itself.
pub fn router(state: DataActionsState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(execute_action))
        .routes(routes!(execute_envelope))
        .with_state(state)
}

/// Answers a call refused for its credential: counted as `unauthorized` (under `action` when
/// the URL names a known one), not audited.
fn refuse(
    set: &ActionSet,
    action: Option<&Arc<BoundAction>>,
    started: Instant,
    err: ApiError,
) -> Response {
    let metrics = action.map_or_else(|| set.unknown_metrics(), |a| a.metrics());
    metrics.observe(Outcome::Unauthorized, started.elapsed().as_secs_f64());
    err.into_response()
}

/// One execution being served: what to count and audit when it ends. An execution dropped
/// before it finished is counted and audited as a `timeout` answered 504 or as `canceled`
/// (status 499) (see the module docs).
struct Execution<'a> {
    set: &'a ActionSet,
    audit: &'a AuditWriter,
    /// `audit.execution_records_per_s`.
    records_per_s: u64,
    action: Option<&'a Arc<BoundAction>>,
    started: Instant,
    /// The envelope's `requestId`, already cut to [`MAX_FLOW_REQUEST_ID_CHARS`].
    flow_request_id: Option<String>,
    finished: bool,
}

impl<'a> Execution<'a> {
    fn new(set: &'a ActionSet, state: &'a DataActionsState, started: Instant) -> Self {
        Self {
            set,
            audit: &state.audit,
            records_per_s: state.execution_records_per_s,
            action: None,
            started,
            flow_request_id: None,
            finished: false,
        }
    }

    /// Counts, audits and renders the result.
    fn finish(mut self, result: Result<(Response, CallTrace), ActionError>) -> Response {
        let (outcome, trace, response) = match result {
            Ok((response, trace)) => (Outcome::Success, Some(trace), response),
            Err(err) => {
                let outcome = err.outcome();
                let trace = err.trace();
                let (action, upstream) = match self.action {
                    Some(bound) => (
                        Arc::from(bound.action().name().as_str()),
                        bound.upstream_name(),
                    ),
                    None => (Arc::from(UNKNOWN_ACTION), Arc::from("-")),
                };
                (
                    outcome,
                    trace,
                    err.into_api_error(&action, &upstream).into_response(),
                )
            }
        };
        self.record(outcome, response.status(), trace);
        self.finished = true;
        response
    }

    fn record(&mut self, outcome: Outcome, status: StatusCode, trace: Option<CallTrace>) {
        let elapsed = self.started.elapsed();
        let metrics: &ActionMetrics = self
            .action
            .map_or_else(|| self.set.unknown_metrics(), |a| a.metrics());
        metrics.observe(outcome, elapsed.as_secs_f64());
        if outcome != Outcome::Success {
            metrics.failed(LastError {
                at: chrono::Utc::now(),
                outcome: outcome.as_str(),
                upstream_status: trace.and_then(|t| t.last_status).map(|s| s.as_u16()),
                request_id: RequestId::current().map(|id| (*id).to_owned()),
            });
        }
        if !metrics.admit_audit(outcome, self.started + elapsed, self.records_per_s) {
            // Beyond the second's budget: counted in this action and outcome's next summary
            // record instead.
            return;
        }
        let mut detail = serde_json::Map::new();
        detail.insert("status".to_owned(), status.as_u16().into());
        detail.insert(
            "durationMs".to_owned(),
            (elapsed.as_secs_f64() * 1000.0).into(),
        );
        if let Some(trace) = trace {
            detail.insert("attempts".to_owned(), trace.attempts.into());
            if let Some(upstream) = trace.last_status {
                detail.insert("upstreamStatus".to_owned(), upstream.as_u16().into());
            }
        }
        if let Some(id) = self.flow_request_id.take() {
            detail.insert("flowRequestId".to_owned(), id.into());
        }
        self.audit.record(AuditRecord {
            at: chrono::Utc::now(),
            kind: AUDIT_KIND.to_owned(),
            actor: AUDIT_ACTOR.to_owned(),
            request_id: RequestId::current().map(|id| (*id).to_owned()),
            subject: self.action.map(|a| a.action().name().as_str().to_owned()),
            outcome: outcome.as_str().to_owned(),
            detail: serde_json::Value::Object(detail),
        });
    }
}

impl Drop for Execution<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            if crate::telemetry::deadline_passed() {
                self.record(Outcome::Timeout, StatusCode::GATEWAY_TIMEOUT, None);
            } else {
                let status =
                    StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST);
                self.record(Outcome::Canceled, status, None);
            }
        }
    }
}

/// Writes, once a second until `stop`, one summary record per action and outcome whose
/// execution records were held back beyond `audit.execution_records_per_s` in that second:
/// kind `action.executed`, the outcome, `detail.count` = the executions it stands for
/// (`detail.summary` = `true`). A last pass runs when stopping, so that every execution is
/// accounted for.
pub async fn write_audit_summaries(
    registry: ActionRegistry,
    audit: AuditWriter,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => write_held_back(&registry, &audit),
        }
    }
    write_held_back(&registry, &audit);
}

/// One pass of [`write_audit_summaries`].
pub fn write_held_back(registry: &ActionRegistry, audit: &AuditWriter) {
    for (name, outcome, count) in registry.stats_book().take_held_back() {
        let subject = (&*name != UNKNOWN_ACTION).then(|| name.into_string());
        audit.record(AuditRecord {
            at: chrono::Utc::now(),
            kind: AUDIT_KIND.to_owned(),
            actor: AUDIT_ACTOR.to_owned(),
            request_id: None,
            subject,
            outcome: outcome.as_str().to_owned(),
            detail: serde_json::json!({ "summary": true, "count": count, "periodMs": 1000 }),
        });
    }
}

/// At most [`MAX_FLOW_REQUEST_ID_CHARS`] characters of `id` (cut on a character boundary).
fn audited_flow_request_id(id: &str) -> String {
    match id.char_indices().nth(MAX_FLOW_REQUEST_ID_CHARS) {
        Some((end, _)) => id[..end].to_owned(),
        None => id.to_owned(),
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
    let name = name.ok().map(|Path(name)| name);
    serve_action(&state, name.as_deref(), req).await
}

/// `POST /v1/actions/{name}` for the action named `name` (percent-decoded; `None` when the
/// path segment is not UTF-8 once decoded, which names no action): what the route's handler
/// does, callable without the router (the server dispatches this hot route itself).
pub async fn serve_action(state: &DataActionsState, name: Option<&str>, req: Request) -> Response {
    let started = Instant::now();
    let set = state.registry.load();
    let action = name.and_then(|name| set.get(name));
    if let Err(err) = set.auth().check_request(req.uri(), req.headers()) {
        return refuse(&set, action, started, err);
    }
    let mut execution = Execution::new(&set, state, started);
    if let Err(err) = parse_query::<NoParams>(req.uri().query()) {
        return execution.finish(Err(ActionError::Input(err)));
    }
    let Some(action) = action else {
        return execution.finish(Err(ActionError::UnknownAction));
    };
    execution.action = Some(action);
    let result = async {
        let JsonBytes(raw) = JsonBytes::from_request(req, &())
            .await
            .map_err(ActionError::Input)?;
        let executed = action.execute(raw).await?;
        Ok((json_response(executed.output), executed.trace))
    }
    .await;
    execution.finish(result)
}

/// The `POST /webhook/data-action` envelope, borrowed from the request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    /// The flow's id of this call, echoed back and audited as `flowRequestId`.
    #[serde(default)]
    request_id: Option<String>,
    /// The action to run.
    #[serde(borrow)]
    action: Cow<'a, str>,
    /// The input object, as it appears in the body.
    #[serde(borrow)]
    data: &'a RawValue,
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
    serve_envelope(&state, req).await
}

/// `POST /webhook/data-action`: what the route's handler does, callable without the router (the
/// server dispatches this hot route itself).
pub async fn serve_envelope(state: &DataActionsState, req: Request) -> Response {
    let started = Instant::now();
    let set = state.registry.load();
    if let Err(err) = set.auth().check_request(req.uri(), req.headers()) {
        return refuse(&set, None, started, err);
    }
    let mut execution = Execution::new(&set, state, started);
    if let Err(err) = parse_query::<NoParams>(req.uri().query()) {
        return execution.finish(Err(ActionError::Input(err)));
    }
    let raw = match JsonBytes::from_request(req, &()).await {
        Ok(JsonBytes(raw)) => raw,
        Err(err) => return execution.finish(Err(ActionError::Input(err))),
    };
    let envelope = match parse_json::<Envelope<'_>>(&raw) {
        Ok(e) => e,
        Err(err) => return execution.finish(Err(ActionError::Input(err))),
    };
    execution.flow_request_id = envelope.request_id.as_deref().map(audited_flow_request_id);
    let Some(action) = set.get(&envelope.action) else {
        return execution.finish(Err(ActionError::UnknownAction));
    };
    execution.action = Some(action);
    // The input is a view of the received bytes: no copy.
    let input = raw.slice_ref(envelope.data.get().as_bytes());
    let request_id = envelope.request_id;
    let result = action.execute(input).await.map(|executed| {
        let output = executed.output;
        let id_len = request_id.as_ref().map_or(4, |id| id.len() + 2);
        let mut body = BytesMut::with_capacity(output.len() + id_len + 24);
        body.put_slice(b"{\"requestId\":");
        // Writing JSON into a growable buffer cannot fail.
        let _ = serde_json::to_writer((&mut body).writer(), &request_id);
        body.put_slice(b",\"data\":");
        body.put_slice(&output);
        body.put_u8(b'}');
        (json_response(body.freeze()), executed.trace)
    });
    execution.finish(result)
}
