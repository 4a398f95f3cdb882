//! An action bound to its upstream, and executing it: input → schema → request → upstream →
//! output → schema.
//!
//! Nothing here is compiled or parsed that could have been prepared at load: the action's plans
//! and schemas are ready, the upstream is already resolved. The input is parsed once (for the
//! schema and the mapping) and, when the body is forwarded, the received bytes are sent as they
//! are; a passed-through answer is returned as the upstream's own bytes. Retries, auth and the
//! breaker are the upstream stack's business: this calls [`Upstream::call`] once, with the
//! action's deadline.
//!
//! The output is always a JSON object (a data action answers 200 with the output object): an answer, or
//! a mapping with a root target, that makes anything else is 422 `output.invalid` (detail
//! `fieldName ""`, `errorCode "type"`).
//!
//! [`Upstream::call`]: crate::upstream::Upstream::call

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::time::Instant;

use std::sync::Arc;

use super::action::DataAction;
use super::error::ActionError;
use super::mapping::OutputPlan;
use super::outcome::ActionMetrics;
use crate::error::{ApiError, ErrorCode, ErrorDetail};
use crate::upstream::{CallTrace, Upstream, UpstreamRequest};

/// The answer of an upstream that sent no body.
const EMPTY_OBJECT: &[u8] = b"{}";

/// An action bound to its upstream and its metric handles.
#[derive(Debug)]
pub struct BoundAction {
    action: DataAction,
    upstream: Arc<Upstream>,
    metrics: ActionMetrics,
}

impl BoundAction {
    /// Binds `action` to `upstream` with its metric handles.
    pub(super) fn new(action: DataAction, upstream: Arc<Upstream>, metrics: ActionMetrics) -> Self {
        Self {
            action,
            upstream,
            metrics,
        }
    }

    /// The action.
    pub fn action(&self) -> &DataAction {
        &self.action
    }

    /// The upstream it calls.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Its metric handles.
    pub fn metrics(&self) -> &ActionMetrics {
        &self.metrics
    }
}

/// A successful execution: the output and what the upstream call took.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The output object, as JSON bytes.
    pub output: Bytes,
    /// Attempts made and the status answered.
    pub trace: CallTrace,
}

impl BoundAction {
    /// Runs the action on `raw_input` (JSON bytes that passed the size, type and depth checks),
    /// and returns the output as JSON bytes.
    ///
    /// # Errors
    /// [`ActionError::Input`] (unparsable, not an object, schema, mapping),
    /// [`ActionError::Output`] (422), [`ActionError::Upstream`] / [`ActionError::NotJson`]
    /// (502, 503, 504).
    pub async fn execute(&self, raw_input: Bytes) -> Result<Executed, ActionError> {
        let action = self.action();
        let deadline = Instant::now() + action.timeout();

        // Any JSON is a `Value`: only syntax can fail (depth was checked by `JsonBytes`).
        let input: Value = serde_json::from_slice(&raw_input).map_err(|_| {
            ActionError::Input(ApiError::bad_request("The request body is not valid JSON."))
        })?;
        if !input.is_object() {
            return Err(ActionError::Input(ApiError::invalid_input(
                "The input must be a JSON object.",
                vec![ErrorDetail::new(
                    "",
                    "type",
                    "The input must be a JSON object.",
                )],
            )));
        }
        if let Some(schema) = action.input_schema() {
            let violations = schema.violations(&input);
            if !violations.is_empty() {
                return Err(ActionError::Input(ApiError::invalid_input(
                    "The input does not satisfy the action's input schema.",
                    violations,
                )));
            }
        }
        let rendered = action
            .request()
            .render(&input, &raw_input)
            .map_err(|details| {
                ActionError::Input(ApiError::invalid_input(
                    "The input lacks values the action needs.",
                    details,
                ))
            })?;
        drop(input);

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
        // `call` answers `Ok` for a 2xx only.
        let response = match self
            .upstream()
            .call_traced(request, deadline, &mut trace)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                return Err(ActionError::Upstream {
                    upstream: self.upstream_name(),
                    error,
                    trace,
                });
            }
        };
        let body = if response.body.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(EMPTY_OBJECT)
        } else {
            response.body
        };
        let not_json = || ActionError::NotJson {
            upstream: self.upstream_name(),
            trace,
        };
        let refused = |api: ApiError| ActionError::Output(api, trace);

        let output = match action.output() {
            OutputPlan::PassThrough => {
                match action.output_schema() {
                    Some(schema) => {
                        let answer: Value =
                            serde_json::from_slice(&body).map_err(|_| not_json())?;
                        check_object(&answer).map_err(refused)?;
                        check_output(schema.violations(&answer)).map_err(refused)?;
                    }
                    None => {
                        if serde_json::from_slice::<IgnoredAny>(&body).is_err() {
                            return Err(not_json());
                        }
                        // Valid JSON that starts with `{` is an object.
                        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                            return Err(refused(not_an_object()));
                        }
                    }
                }
                body
            }
            OutputPlan::Mapped(plan) => {
                let answer: Value = serde_json::from_slice(&body).map_err(|_| not_json())?;
                let output = plan.apply(&answer).map_err(|details| {
                    refused(
                        ApiError::new(
                            ErrorCode::OutputInvalid,
                            "The upstream's answer lacks values the action's output requires.",
                        )
                        .with_details(details),
                    )
                })?;
                // Only a root target (`""`) can make it something else.
                check_object(&output).map_err(refused)?;
                if let Some(schema) = action.output_schema() {
                    check_output(schema.violations(&output)).map_err(refused)?;
                }
                Bytes::from(serde_json::to_vec(&output).unwrap_or_default())
            }
        };
        Ok(Executed { output, trace })
    }

    /// The name of the upstream it calls (shared, for error context).
    pub fn upstream_name(&self) -> Arc<str> {
        self.upstream.name_arc()
    }
}

fn check_object(output: &Value) -> Result<(), ApiError> {
    if output.is_object() {
        Ok(())
    } else {
        Err(not_an_object())
    }
}

/// 422: an action answers "200 with the output object"; an array or a scalar is not one.
fn not_an_object() -> ApiError {
    ApiError::new(
        ErrorCode::OutputInvalid,
        "The action's output is not a JSON object.",
    )
    .with_details(vec![ErrorDetail::new(
        "",
        "type",
        "The output must be a JSON object.",
    )])
}

fn check_output(violations: Vec<ErrorDetail>) -> Result<(), ApiError> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::OutputInvalid,
            "The upstream's answer does not satisfy the action's output schema.",
        )
        .with_details(violations))
    }
}
