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
//! The output is always a JSON object (SPEC §3.2, "200 with the output object"): an answer, or
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
use super::mapping::OutputPlan;
use super::outcome::ActionMetrics;
use crate::error::{ApiError, ErrorCode, ErrorDetail};
use crate::upstream::{Upstream, UpstreamRequest};

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

impl BoundAction {
    /// Runs the action on `raw_input` (JSON bytes that passed the size, type and depth checks),
    /// and returns the output as JSON bytes.
    ///
    /// # Errors
    /// 400 `bad.request` (unparsable) or `invalid.input` (not an object, schema, mapping); 422
    /// `output.invalid`; the upstream failures of SPEC §3 (502, 503, 504).
    pub async fn execute(&self, raw_input: Bytes) -> Result<Bytes, ApiError> {
        let action = self.action();
        let deadline = Instant::now() + action.timeout();

        // Any JSON is a `Value`: only syntax can fail (depth was checked by `JsonBytes`).
        let input: Value = serde_json::from_slice(&raw_input)
            .map_err(|_| ApiError::bad_request("The request body is not valid JSON."))?;
        if !input.is_object() {
            return Err(ApiError::invalid_input(
                "The input must be a JSON object.",
                vec![ErrorDetail::new(
                    "",
                    "type",
                    "The input must be a JSON object.",
                )],
            ));
        }
        if let Some(schema) = action.input_schema() {
            let violations = schema.violations(&input);
            if !violations.is_empty() {
                return Err(ApiError::invalid_input(
                    "The input does not satisfy the action's input schema.",
                    violations,
                ));
            }
        }
        let rendered = action
            .request()
            .render(&input, &raw_input)
            .map_err(|details| {
                ApiError::invalid_input("The input lacks values the action needs.", details)
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
        let response = self.upstream().call(request, deadline).await?;
        if !response.status.is_success() {
            tracing::warn!(
                status = response.status.as_u16(),
                action = %action.name(),
                "upstream answered a status that is not a success"
            );
            return Err(ApiError::new(
                ErrorCode::UpstreamError,
                format!("The upstream answered {}.", response.status.as_u16()),
            ));
        }
        let body = if response.body.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(EMPTY_OBJECT)
        } else {
            response.body
        };

        match action.output() {
            OutputPlan::PassThrough => {
                match action.output_schema() {
                    Some(schema) => {
                        let answer = parse_answer(&body)?;
                        check_object(&answer)?;
                        check_output(schema.violations(&answer))?;
                    }
                    None => {
                        if serde_json::from_slice::<IgnoredAny>(&body).is_err() {
                            return Err(not_json());
                        }
                        // Valid JSON that starts with `{` is an object.
                        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                            return Err(not_an_object());
                        }
                    }
                }
                Ok(body)
            }
            OutputPlan::Mapped(plan) => {
                let answer = parse_answer(&body)?;
                let output = plan.apply(&answer).map_err(|details| {
                    ApiError::new(
                        ErrorCode::OutputInvalid,
                        "The upstream's answer lacks values the action's output requires.",
                    )
                    .with_details(details)
                })?;
                // Only a root target (`""`) can make it something else.
                check_object(&output)?;
                if let Some(schema) = action.output_schema() {
                    check_output(schema.violations(&output))?;
                }
                Ok(Bytes::from(serde_json::to_vec(&output).unwrap_or_default()))
            }
        }
    }
}

fn parse_answer(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| not_json())
}

fn not_json() -> ApiError {
    tracing::warn!("upstream answered a body that is not JSON");
    ApiError::new(
        ErrorCode::UpstreamError,
        "The upstream answered a body that is not JSON.",
    )
}

fn check_object(output: &Value) -> Result<(), ApiError> {
    if output.is_object() {
        Ok(())
    } else {
        Err(not_an_object())
    }
}

/// 422: SPEC §3.2 answers "200 with the output object"; an array or a scalar is not one.
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
