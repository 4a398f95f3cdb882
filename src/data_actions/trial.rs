//! The action test (`POST /admin/v1/actions/{name}/test`): one execution of an action with a
//! trace of every step, the gateway's analogue of Genesys' own action test.
//!
//! A trial runs what [`BoundAction::execute`] runs — input validation, request rendering, the
//! upstream call through the whole outbound stack (auth, retries, breaker, the action's
//! deadline), output mapping, output validation — and records each step as it goes: its name,
//! whether it passed, and a detail an operator can act on. It stops at the first step that
//! fails; the answer is then the one a flow would have got.
//!
//! What a trace shows never holds a credential: the request step names the method, the URL
//! without its query string, and the *names* of the query parameters and headers sent (a
//! mapped literal may carry a key from the environment; the upstream's auth header is named,
//! never its value). A trial is not an execution: it is not counted in the action's metrics
//! or stats, and the caller audits it as `action.tested`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::error::ActionError;
use super::execute::BoundAction;
use super::mapping::{BodyPlan, OutputPlan};
use super::outcome::Outcome;
use crate::config::UpstreamAuthSettings;
use crate::error::{ApiError, ErrorCode, ErrorDetail};
use crate::upstream::{CallTrace, UpstreamRequest};

/// One step of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Step {
    /// `inputValidation`, `requestRendering`, `upstreamCall`, `outputMapping` or
    /// `outputValidation`.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What it did or found (never a credential value).
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// The answer a failed trial would have given a flow, without its request id.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialError {
    /// The HTTP status.
    pub status: u16,
    /// The error code (`upstream.error`, `invalid.input`…).
    pub code: &'static str,
    /// The message.
    pub message: String,
    /// The details (pointers and violations).
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<ErrorDetail>,
}

impl From<&ApiError> for TrialError {
    fn from(err: &ApiError) -> Self {
        Self {
            status: err.status().as_u16(),
            code: err.code().as_str(),
            message: err.message().to_owned(),
            details: err.details().to_vec(),
        }
    }
}

/// What a trial found (the body of `POST /admin/v1/actions/{name}/test`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trial {
    /// Whether the action produced a valid output.
    pub success: bool,
    /// How long the whole trial took.
    pub latency_ms: u64,
    /// The output object, when it succeeded.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The answer a flow would have got, when it failed.
    pub error: Option<TrialError>,
    /// Every step that ran, in order; the last one failed when `success` is false.
    pub steps: Vec<Step>,
    /// The outcome an execution would have been counted under.
    #[serde(skip)]
    pub outcome: Outcome,
    /// The upstream call's trace, when the upstream was called.
    #[serde(skip)]
    pub trace: Option<CallTrace>,
}

impl Trial {
    /// The `detail` of its `action.tested` audit record: status, latency, attempts and the
    /// upstream's status (never a payload value).
    pub fn audit_detail(&self) -> Value {
        let mut detail = serde_json::Map::new();
        let status = self.error.as_ref().map_or(200, |e| e.status);
        detail.insert("status".to_owned(), status.into());
        detail.insert("latencyMs".to_owned(), self.latency_ms.into());
        if let Some(trace) = self.trace {
            detail.insert("attempts".to_owned(), trace.attempts.into());
            if let Some(s) = trace.last_status {
                detail.insert("upstreamStatus".to_owned(), s.as_u16().into());
            }
        }
        Value::Object(detail)
    }
}

/// Collects the steps of one trial.
struct Recorder {
    started: Instant,
    steps: Vec<Step>,
}

impl Recorder {
    fn pass(&mut self, name: &'static str, detail: Value) {
        self.steps.push(Step {
            name,
            ok: true,
            detail,
        });
    }

    fn latency_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Ends the trial at step `name` with `err` (the answer a flow would get).
    fn fail(
        mut self,
        name: &'static str,
        detail: Value,
        err: ActionError,
        bound: &BoundAction,
    ) -> Trial {
        self.steps.push(Step {
            name,
            ok: false,
            detail,
        });
        let outcome = err.outcome();
        let trace = err.trace();
        let action = std::sync::Arc::from(bound.action().name().as_str());
        let api = err.into_api_error(&action, &bound.upstream_name());
        Trial {
            success: false,
            latency_ms: self.latency_ms(),
            output: None,
            error: Some(TrialError::from(&api)),
            steps: self.steps,
            outcome,
            trace,
        }
    }
}

fn violations(details: &[ErrorDetail]) -> Value {
    json!({ "violations": details })
}

impl BoundAction {
    /// Runs the action once on `input` (any JSON value) with a trace of every step (see the
    /// module docs). Never counted as an execution.
    pub async fn trial(&self, input: Value) -> Trial {
        let action = self.action();
        let mut rec = Recorder {
            started: Instant::now(),
            steps: Vec::with_capacity(5),
        };
        let deadline = rec.started + action.timeout();

        // 1. Input validation.
        if !input.is_object() {
            let details = vec![ErrorDetail::new(
                "",
                "type",
                "The input must be a JSON object.",
            )];
            let detail = violations(&details);
            let err = ApiError::invalid_input("The input must be a JSON object.", details);
            return rec.fail("inputValidation", detail, ActionError::Input(err), self);
        }
        if let Some(schema) = action.input_schema() {
            let found = schema.violations(&input);
            if !found.is_empty() {
                let detail = violations(&found);
                let err = ApiError::invalid_input(
                    "The input does not satisfy the action's input schema.",
                    found,
                );
                return rec.fail("inputValidation", detail, ActionError::Input(err), self);
            }
        }
        rec.pass(
            "inputValidation",
            json!({ "inputSchema": action.input_schema().is_some() }),
        );

        // 2. Request rendering.
        let raw_input = Bytes::from(serde_json::to_vec(&input).unwrap_or_default());
        let rendered = match action.request().render(&input, &raw_input) {
            Ok(rendered) => rendered,
            Err(details) => {
                let detail = violations(&details);
                let err =
                    ApiError::invalid_input("The input lacks values the action needs.", details);
                return rec.fail("requestRendering", detail, ActionError::Input(err), self);
            }
        };
        let (path, query) = match rendered.path_and_query.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (rendered.path_and_query.clone(), None),
        };
        let query_names: Vec<String> = query
            .as_deref()
            .map(|q| {
                let mut names: Vec<String> = form_urlencoded::parse(q.as_bytes())
                    .map(|(name, _)| name.into_owned())
                    .collect();
                names.dedup();
                names
            })
            .unwrap_or_default();
        let mut headers: Vec<String> = rendered
            .headers
            .keys()
            .map(|name| name.as_str().to_owned())
            .collect();
        if rendered.body.is_some() {
            headers.push("content-type".to_owned());
        }
        if let Some(auth) = auth_header(&self.upstream().settings().auth)
            && !headers.contains(&auth)
        {
            headers.push(auth);
        }
        let body = match action.request().body() {
            BodyPlan::Empty => "none",
            BodyPlan::PassThrough => "the input, as received",
            BodyPlan::Mapped(_) => "mapped from the input",
        };
        rec.pass(
            "requestRendering",
            json!({
                "method": action.method().as_str(),
                "url": format!("{}{path}", self.upstream().base_url().trim_end_matches('/')),
                "query": query_names,
                "headers": headers,
                "body": body,
            }),
        );

        // 3. The upstream call.
        let mut request = UpstreamRequest {
            method: action.method().clone(),
            path_and_query: rendered.path_and_query,
            headers: rendered.headers,
            body: Bytes::new(),
        };
        if let Some(body) = rendered.body {
            request.headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            request.body = body;
        }
        let mut trace = CallTrace::default();
        let called = Instant::now();
        let result = self
            .upstream()
            .call_traced(request, deadline, &mut trace)
            .await;
        let call_ms = u64::try_from(called.elapsed().as_millis()).unwrap_or(u64::MAX);
        let call_detail = |error: Option<String>| {
            json!({
                "upstream": self.upstream().name(),
                "status": trace.last_status.map(|s| s.as_u16()),
                "attempts": trace.attempts,
                "latencyMs": call_ms,
                "error": error,
            })
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let detail = call_detail(Some(error.to_string()));
                let err = ActionError::Upstream {
                    upstream: self.upstream_name(),
                    error,
                    trace,
                };
                return rec.fail("upstreamCall", detail, err, self);
            }
        };
        rec.pass("upstreamCall", call_detail(None));

        // 4. Output mapping.
        let not_json = || ActionError::NotJson {
            upstream: self.upstream_name(),
            trace,
        };
        let answer: Value = if response.body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            match serde_json::from_slice(&response.body) {
                Ok(answer) => answer,
                Err(_) => {
                    let detail = json!({ "error": "the upstream's answer is not JSON" });
                    return rec.fail("outputMapping", detail, not_json(), self);
                }
            }
        };
        let (output, mapping) = match action.output() {
            OutputPlan::PassThrough => (answer, json!({ "mapping": "pass-through" })),
            OutputPlan::Mapped(plan) => match plan.apply(&answer) {
                Ok(output) => (output, json!({ "mapping": "mapped", "fields": plan.len() })),
                Err(details) => {
                    let detail = violations(&details);
                    let err = ApiError::new(
                        ErrorCode::OutputInvalid,
                        "The upstream's answer lacks values the action's output requires.",
                    )
                    .with_details(details);
                    return rec.fail(
                        "outputMapping",
                        detail,
                        ActionError::Output(err, trace),
                        self,
                    );
                }
            },
        };
        if !output.is_object() {
            let details = vec![ErrorDetail::new(
                "",
                "type",
                "The output must be a JSON object.",
            )];
            let detail = violations(&details);
            let err = ApiError::new(
                ErrorCode::OutputInvalid,
                "The action's output is not a JSON object.",
            )
            .with_details(details);
            return rec.fail(
                "outputMapping",
                detail,
                ActionError::Output(err, trace),
                self,
            );
        }
        rec.pass("outputMapping", mapping);

        // 5. Output validation.
        if let Some(schema) = action.output_schema() {
            let found = schema.violations(&output);
            if !found.is_empty() {
                let detail = violations(&found);
                let err = ApiError::new(
                    ErrorCode::OutputInvalid,
                    "The upstream's answer does not satisfy the action's output schema.",
                )
                .with_details(found);
                return rec.fail(
                    "outputValidation",
                    detail,
                    ActionError::Output(err, trace),
                    self,
                );
            }
        }
        rec.pass(
            "outputValidation",
            json!({ "outputSchema": action.output_schema().is_some() }),
        );
        Trial {
            success: true,
            latency_ms: rec.latency_ms(),
            output: Some(output),
            error: None,
            steps: rec.steps,
            outcome: Outcome::Success,
            trace: Some(trace),
        }
    }
}

/// The name of the header the upstream's auth adds, lowercase (never its value).
fn auth_header(auth: &UpstreamAuthSettings) -> Option<String> {
    match auth {
        UpstreamAuthSettings::None => None,
        UpstreamAuthSettings::ApiKey { header, .. } => Some(header.to_ascii_lowercase()),
        UpstreamAuthSettings::Oauth2ClientCredentials { .. }
        | UpstreamAuthSettings::Basic { .. }
        | UpstreamAuthSettings::Bearer { .. } => Some("authorization".to_owned()),
    }
}
