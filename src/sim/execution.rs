//! Running a data action the way Genesys does, for real: render the request from the action's
//! Velocity templates (`${input.x}`, `${input.rawRequest}`), call `requestUrlTemplate` over HTTP
//! with the integration's Basic credential within the action's timeout, then build the output
//! from the answer with `translationMap` (JSONPath, RFC 9535), `translationMapDefaults` and
//! `successTemplate` (`${rawResult}` = the raw answer, `${name}` = a translated value,
//! JSON-encoded).
//!
//! `POST .../execute` answers the output, or an `ErrorBody` (a generic `message` for the status,
//! the cause in `errors[0].message` = `REST call for action execute failed. Message: ...`) whose
//! `details[0].errorCode` says where it failed (`ACTION.REMOTE_ENDPOINT`: the remote answered non-2xx — its status is kept —,
//! was unreachable (500), timed out (504) or answered something else than JSON (400);
//! `ACTION.PROCESSING`: a template or the translation map failed — a template also fails when it
//! nests references too deep or renders too much, see `velocity`). `POST .../test` always answers
//! 200 with a `TestExecutionResult` listing each step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use serde_json_path::JsonPath;

use super::error::{GenesysError, context_id};
use super::extract::GJson;
use super::records::integrations::ActionRecord;
use super::state::Sim;
use super::velocity::{Resolve, TemplateError, render};

/// Timeout of an action without `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest remote answer read.
const MAX_RESPONSE: usize = 5 * 1024 * 1024;

/// `ActionConfig` as far as execution needs it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActionConfig {
    pub timeout_seconds: Option<u64>,
    pub request: RequestConfig,
    #[serde(default, deserialize_with = "null_as_default")]
    pub response: ResponseConfig,
}

/// `RequestConfig`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestConfig {
    pub request_url_template: String,
    pub request_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub headers: BTreeMap<String, String>,
    pub request_template: Option<String>,
    pub timeout_seconds: Option<u64>,
}

/// `ResponseConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResponseConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub translation_map: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub translation_map_defaults: BTreeMap<String, String>,
    pub success_template: Option<String>,
}

fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

impl ActionConfig {
    /// Reads an action's `config`.
    ///
    /// # Errors
    /// The key path and problem when `config` is not an `ActionConfig`.
    pub fn parse(config: &Value) -> Result<Self, String> {
        serde_path_to_error::deserialize(config)
            .map_err(|err| format!("config.{}: {}", err.path(), err.inner()))
    }

    fn timeout(&self) -> Duration {
        self.timeout_seconds
            .or(self.request.timeout_seconds)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
    }
}

/// Compiles a translation-map path (a leading `$.` is implied when absent).
///
/// # Errors
/// The parse error of an invalid JSONPath.
pub(crate) fn compile_path(path: &str) -> Result<JsonPath, String> {
    let path = path.trim();
    let full = if path.starts_with('$') {
        path.to_owned()
    } else {
        format!("$.{path}")
    };
    JsonPath::parse(&full).map_err(|err| err.to_string())
}

/// Whether a path may select several nodes (Jayway's "indefinite" paths answer a list).
fn indefinite(path: &str) -> bool {
    if path.contains('*') || path.contains("..") || path.contains("[?") {
        return true;
    }
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' | ',' if depth > 0 => return true,
            _ => {}
        }
    }
    false
}

struct RequestContext<'a> {
    input: &'a Value,
    raw: &'a str,
}

impl Resolve for RequestContext<'_> {
    fn resolve(&self, path: &[String]) -> Option<String> {
        let (first, rest) = path.split_first()?;
        if first != "input" {
            return None;
        }
        if rest.len() == 1 && rest[0] == "rawRequest" {
            return Some(self.raw.to_owned());
        }
        let mut value = self.input;
        for key in rest {
            value = value.get(key)?;
        }
        match value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

struct SuccessContext<'a> {
    raw_result: &'a str,
    translated: &'a BTreeMap<String, Value>,
}

impl Resolve for SuccessContext<'_> {
    fn resolve(&self, path: &[String]) -> Option<String> {
        let (first, rest) = path.split_first()?;
        if first == "rawResult" && rest.is_empty() {
            return Some(self.raw_result.to_owned());
        }
        let mut value = self.translated.get(first)?;
        for key in rest {
            value = value.get(key)?;
        }
        Some(value.to_string())
    }
}

/// The steps of one execution, for `/test`.
#[derive(Default)]
struct Steps(Vec<Value>);

impl Steps {
    fn ok(&mut self, name: &str, result: Value) {
        let step = self.0.len() + 1;
        self.0
            .push(json!({ "step": step, "name": name, "success": true, "result": result }));
    }

    fn failed(&mut self, name: &str, error: &GenesysError) {
        let step = self.0.len() + 1;
        self.0
            .push(json!({ "step": step, "name": name, "success": false, "error": error.body() }));
    }
}

fn failure(status: StatusCode, detail_code: &str, inner_code: &str, message: &str) -> GenesysError {
    let full = format!(
        "REST call for action execute failed. Message: {message} [{}]",
        context_id()
    );
    // As Genesys does: a generic message for the status on top, the cause in `errors[0]`.
    let mut err = GenesysError::for_status(status).with_detail_code(detail_code);
    err.errors.push(json!({
        "message": full,
        "code": inner_code,
        "status": status.as_u16(),
        "messageParams": {},
        "details": [],
        "errors": [],
    }));
    err
}

fn processing(message: &str) -> GenesysError {
    failure(
        StatusCode::BAD_REQUEST,
        "ACTION.PROCESSING",
        "BAD_REQUEST",
        message,
    )
}

/// The `ACTION.PROCESSING` failure of a template that cannot be rendered (nested too deep,
/// renders too much), recorded as the failed step `name`.
fn unrenderable(steps: &mut Steps, name: &str, what: &str, err: TemplateError) -> GenesysError {
    let err = processing(&format!("Failed while resolving the {what}: {err}"));
    steps.failed(name, &err);
    err
}

fn inner_code(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("ERROR")
        .to_ascii_uppercase()
        .replace([' ', '-'], "_")
}

/// Runs `action` with `input`, recording each step.
async fn run(
    sim: &Sim,
    action: &ActionRecord,
    credential: Option<&(String, SecretString)>,
    input: &Value,
    steps: &mut Steps,
) -> Result<Value, GenesysError> {
    let config = ActionConfig::parse(&action.config).map_err(|m| processing(&m))?;
    let raw = input.to_string();
    let ctx = RequestContext { input, raw: &raw };

    let name = "Resolve request URL template";
    let url = render(&config.request.request_url_template, &ctx)
        .map_err(|e| unrenderable(steps, name, "request URL template", e))?;
    let uri = match url.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => uri,
        Ok(uri) if uri.scheme_str() == Some("https") => {
            let err = processing("The simulator calls http:// endpoints only");
            steps.failed(name, &err);
            return Err(err);
        }
        _ => {
            let err = processing(&format!(
                "The resolved request URL '{url}' is not a valid absolute URL"
            ));
            steps.failed(name, &err);
            return Err(err);
        }
    };
    steps.ok(name, json!(url));

    let method = Method::from_bytes(config.request.request_type.to_ascii_uppercase().as_bytes())
        .map_err(|_| processing("Invalid requestType"))?;
    let sends_body = matches!(method, Method::POST | Method::PUT | Method::PATCH);
    let template = config
        .request
        .request_template
        .as_deref()
        .unwrap_or("${input.rawRequest}");
    let name = "Resolve request body template";
    let body =
        render(template, &ctx).map_err(|e| unrenderable(steps, name, "request template", e))?;
    steps.ok(name, json!(body));

    let name = "Resolve request headers template";
    let mut headers = http::HeaderMap::new();
    if let Some((user, password)) = credential {
        let token = STANDARD.encode(format!("{user}:{}", password.expose_secret()));
        if let Ok(v) = HeaderValue::from_str(&format!("Basic {token}")) {
            headers.insert(header::AUTHORIZATION, v);
        }
    }
    if sends_body {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let mut shown = Map::new();
    for (key, value) in &config.request.headers {
        let rendered = render(value, &ctx)
            .map_err(|e| unrenderable(steps, name, &format!("header '{key}'"), e))?;
        match (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&rendered),
        ) {
            (Ok(k), Ok(v)) => {
                headers.insert(k, v);
                shown.insert(key.clone(), json!(rendered));
            }
            _ => {
                let err = processing(&format!(
                    "The header '{key}' does not resolve to a valid HTTP header"
                ));
                steps.failed(name, &err);
                return Err(err);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&context_id()) {
        headers.insert("inin-correlation-id", v);
    }
    steps.ok(name, Value::Object(shown));

    let name = "Execute";
    let mut request = http::Request::new(Full::new(if sends_body {
        Bytes::from(body)
    } else {
        Bytes::new()
    }));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let timeout = config.timeout();
    let call = async {
        let response = sim.http.request(request).await?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|err| boxed_error(&*err))?
            .to_bytes();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, bytes))
    };
    let (status, bytes) = match tokio::time::timeout(timeout, call).await {
        Err(_) => {
            let err = failure(
                StatusCode::GATEWAY_TIMEOUT,
                "ACTION.REMOTE_ENDPOINT",
                "GATEWAY_TIMEOUT",
                &format!(
                    "Request to backend service timed out after {} seconds",
                    timeout.as_secs_f64()
                ),
            );
            steps.failed(name, &err);
            return Err(err);
        }
        Ok(Err(cause)) => {
            let err = failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ACTION.REMOTE_ENDPOINT",
                "INTERNAL_SERVER_ERROR",
                &root_cause(&*cause),
            );
            steps.failed(name, &err);
            return Err(err);
        }
        Ok(Ok(answer)) => answer,
    };
    let raw_result = String::from_utf8_lossy(&bytes).into_owned();
    if !status.is_success() {
        let kept = if status.is_client_error() || status.is_server_error() {
            status
        } else {
            StatusCode::BAD_GATEWAY
        };
        let shown: String = raw_result.chars().take(2000).collect();
        let err = failure(
            kept,
            "ACTION.REMOTE_ENDPOINT",
            &inner_code(kept),
            &format!("Request to backend service failed. Response from web service: {shown}"),
        );
        steps.failed(name, &err);
        return Err(err);
    }
    let document: Value = if raw_result.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(&raw_result) {
            Ok(v) => v,
            Err(_) => {
                let err = failure(
                    StatusCode::BAD_REQUEST,
                    "ACTION.REMOTE_ENDPOINT",
                    "BAD_REQUEST",
                    "Request to backend service failed. The response from the web service is not JSON.",
                );
                steps.failed(name, &err);
                return Err(err);
            }
        }
    };
    steps.ok(name, document.clone());

    let name = "Resolve translation map";
    let mut translated = BTreeMap::new();
    for (key, path) in &config.response.translation_map {
        let compiled = match compile_path(path) {
            Ok(c) => c,
            Err(m) => {
                let err = processing(&format!("Invalid JSONPath for the key '{key}': {m}"));
                steps.failed(name, &err);
                return Err(err);
            }
        };
        let nodes = compiled.query(&document).all();
        let value = if indefinite(path) {
            (!nodes.is_empty()).then(|| Value::Array(nodes.into_iter().cloned().collect()))
        } else {
            nodes.first().map(|v| (*v).clone())
        };
        let value = match value {
            Some(v) => v,
            None => match config.response.translation_map_defaults.get(key) {
                Some(default) => serde_json::from_str(default).unwrap_or_else(|_| json!(default)),
                None if indefinite(path) => json!([]),
                None => {
                    let err = processing(&format!(
                        "Failed while processing the translation map. Could not resolve value for the key: '{key}' and no default value was configured."
                    ));
                    steps.failed(name, &err);
                    return Err(err);
                }
            },
        };
        translated.insert(key.clone(), value);
    }
    steps.ok(name, json!(translated));

    let name = "Resolve success template";
    let template = config
        .response
        .success_template
        .as_deref()
        .unwrap_or("${rawResult}");
    let output = render(
        template,
        &SuccessContext {
            raw_result: &raw_result,
            translated: &translated,
        },
    )
    .map_err(|e| unrenderable(steps, name, "success template", e))?;
    let output = if output.trim().is_empty() {
        "{}".to_owned()
    } else {
        output
    };
    match serde_json::from_str::<Value>(&output) {
        Ok(v) => {
            steps.ok(name, v.clone());
            Ok(v)
        }
        Err(e) => {
            let err = processing(&format!(
                "Failed while processing the success template. The resolved template is not valid JSON: {e}"
            ));
            steps.failed(name, &err);
            Err(err)
        }
    }
}

fn boxed_error(
    err: &(dyn std::error::Error + Send + Sync),
) -> Box<dyn std::error::Error + Send + Sync> {
    err.to_string().into()
}

/// The innermost cause of an HTTP client error ("Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn checked_input(input: Value) -> Result<Value, GenesysError> {
    match input {
        Value::Object(_) => Ok(input),
        Value::Null => Ok(json!({})),
        _ => Err(GenesysError::bad_request(
            "The action input must be a JSON object",
        )),
    }
}

/// An action ready to run: the action, its integration's Basic credential, and the input.
struct Prepared {
    action: ActionRecord,
    credential: Option<(String, SecretString)>,
    input: Value,
}

impl Prepared {
    /// The action `id` with `input`.
    ///
    /// # Errors
    /// 400 when `input` is not an object, 404 when there is no action `id`.
    fn new(sim: &Sim, id: &str, input: Value) -> Result<Self, GenesysError> {
        let input = checked_input(input)?;
        let data = sim.data();
        let action = data
            .actions
            .iter()
            .find(|a| a.id == id)
            .ok_or_else(|| ActionRecord::not_found(id))?;
        let credential = data
            .integrations
            .iter()
            .find(|i| i.id == action.integration_id)
            .and_then(|i| i.basic_credential(&data.credentials))
            .map(|(user, password)| (user.to_owned(), password.clone()));
        Ok(Self {
            action: action.clone(),
            credential,
            input,
        })
    }

    /// Runs the action, recording each step in `steps`.
    async fn run(&self, sim: &Sim, steps: &mut Steps) -> Result<Value, GenesysError> {
        run(
            sim,
            &self.action,
            self.credential.as_ref(),
            &self.input,
            steps,
        )
        .await
    }
}

/// `POST /api/v2/integrations/actions/{actionId}/execute`.
pub(crate) async fn execute(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(input): GJson<Value>,
) -> Result<Json<Value>, GenesysError> {
    let prepared = Prepared::new(&sim, &id, input)?;
    prepared.run(&sim, &mut Steps::default()).await.map(Json)
}

/// `POST /api/v2/integrations/actions/{actionId}/test`.
pub(crate) async fn test(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(input): GJson<Value>,
) -> Result<Json<Value>, GenesysError> {
    let prepared = Prepared::new(&sim, &id, input)?;
    let mut steps = Steps::default();
    let outcome = prepared.run(&sim, &mut steps).await;
    let mut result = json!({ "operations": steps.0 });
    match outcome {
        Ok(output) => {
            result["finalResult"] = output;
            result["success"] = json!(true);
        }
        Err(err) => {
            result["success"] = json!(false);
            result["error"] = err.body();
        }
    }
    Ok(Json(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_may_select_several_nodes_are_indefinite() {
        for path in [
            "$.items[*].id",
            "$..id",
            "$.a[?@.x == 1]",
            "$.a[0:2]",
            "$.a[0,1]",
        ] {
            assert!(indefinite(path), "{path}");
        }
        for path in ["$.a.b", "$.a[0].b", "name", "$['a b']"] {
            assert!(!indefinite(path), "{path}");
        }
        assert!(compile_path("name").is_ok());
        assert!(compile_path("$.a[").is_err());
    }
}
