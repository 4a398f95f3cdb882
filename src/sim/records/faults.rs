//! Armed faults (`POST /__sim/faults`): each matches a method and a path glob and serves `count`
//! requests (default 1) — after `delayMs`, it answers `status` (with `body` or the Genesys error
//! of that status, and `Retry-After` when `retryAfter` is set), drops the connection without an
//! answer (`status: 0`), or lets the request through (`status` absent: only a delay).

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use wildmatch::WildMatch;

use crate::sim::error::GenesysError;

/// A fault to arm, as posted to `/__sim/faults`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FaultSpec {
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    retry_after: Option<u64>,
    delay_ms: Option<u64>,
    count: Option<u32>,
    body: Option<Value>,
}

/// One armed fault.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    id: u64,
    method: Option<String>,
    path: String,
    glob: WildMatch,
    status: Option<u16>,
    retry_after: Option<u64>,
    delay_ms: u64,
    remaining: u32,
    body: Option<Value>,
}

/// What a fault does once its delay is over.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The request goes on to the simulator.
    PassThrough,
    /// The connection is dropped without an answer.
    Drop,
    /// This answer is sent instead of the simulator's.
    Answer(Response),
}

impl Fault {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "retryAfter": self.retry_after,
            "delayMs": self.delay_ms,
            "count": self.remaining,
            "body": self.body,
        })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m == "*" || m == method)
            && self.glob.matches(path)
    }

    /// How long the request waits before the fault's outcome.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }

    /// What the fault does after its delay.
    pub fn outcome(self) -> Outcome {
        match self.status {
            None => Outcome::PassThrough,
            Some(0) => Outcome::Drop,
            Some(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = match self.body {
                    Some(body) => (status, Json(body)).into_response(),
                    None => (status, Json(GenesysError::for_status(status).body())).into_response(),
                };
                if let Some(seconds) = self.retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                Outcome::Answer(response)
            }
        }
    }
}

/// The armed faults, in the order they were armed.
#[derive(Debug, Default)]
pub(crate) struct Faults(Vec<Fault>);

impl Faults {
    /// Arms the fault `spec` describes and answers it as listed.
    ///
    /// # Errors
    /// 400 when `status` is neither 0 nor an HTTP status, or `count` is 0.
    pub fn arm(&mut self, spec: FaultSpec) -> Result<Value, GenesysError> {
        if let Some(status) = spec.status
            && status != 0
            && !(100..=599).contains(&status)
        {
            return Err(GenesysError::bad_request(
                "status must be 0 or an HTTP status (100-599)",
            ));
        }
        let count = spec.count.unwrap_or(1);
        if count == 0 {
            return Err(GenesysError::bad_request("count must be at least 1"));
        }
        let path = spec.path.unwrap_or_else(|| "*".to_owned());
        let id = self.0.iter().map(|f| f.id).max().unwrap_or(0) + 1;
        let fault = Fault {
            id,
            method: spec.method.map(|m| m.to_ascii_uppercase()),
            glob: WildMatch::new(&path),
            path,
            status: spec.status,
            retry_after: spec.retry_after,
            delay_ms: spec.delay_ms.unwrap_or(0),
            remaining: count,
            body: spec.body,
        };
        let listed = fault.to_json();
        self.0.push(fault);
        Ok(listed)
    }

    /// The first armed fault matching `method` and `path`, with one of its uses spent (a fault
    /// whose uses are all spent is disarmed).
    pub fn take(&mut self, method: &str, path: &str) -> Option<Fault> {
        let fault = self
            .0
            .iter_mut()
            .find(|f| f.remaining > 0 && f.matches(method, path))
            .map(|f| {
                f.remaining -= 1;
                f.clone()
            });
        self.0.retain(|f| f.remaining > 0);
        fault
    }

    /// The armed faults with their remaining counts.
    pub fn to_json(&self) -> Value {
        Value::Array(self.0.iter().map(Fault::to_json).collect())
    }

    /// Disarms every fault.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}
