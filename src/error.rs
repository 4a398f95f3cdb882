//! The one error body of the HTTP surface and the JSON extractor that produces it.
//!
//! # Error policy
//! Every error response, whatever produced it (a handler, the router's 404/405, the body limit,
//! the timeout, a caught panic), is rendered by [`ApiError`] in the Genesys error shape:
//! `{"status", "code", "message", "contextId", "details": [...], "errors": []}` with
//! `Content-Type: application/json`, `contextId` being the request id.
//!
//! - 4xx messages say what was wrong with the request, precisely enough to fix it, and name the
//!   offending JSON pointers in `details`.
//! - 5xx messages never carry internal text: the client sees a fixed message.
//! - Capabilities keep their own `thiserror` enums and convert into [`ApiError`] at the edge.
//!
//! # Logged once, where the answer leaves
//! Converting an error into an answer never logs. The error carries what is worth logging as
//! an [`ErrorLog`] ([`ApiError::with_log`]: level, message, the cause's text, and bounded
//! context such as the action and upstream names, the upstream's status and the attempts made);
//! the answer carries it as a response extension, and the edge of the middleware stack writes
//! it once, inside the request's span (so with the request id), subject to the flood rule: the
//! same line (same route, code and context) at most once per second, with the count of the
//! ones suppressed. An error without an `ErrorLog` is the client's business and is not logged.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::telemetry::RequestId;

/// JSON nested deeper than this is refused with 400 `bad.request` before it is parsed.
pub const MAX_JSON_DEPTH: usize = 50;

/// The error codes of the error shape, each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: malformed request (unparsable or too deep JSON, bad query).
    BadRequest,
    /// 400: the request is well-formed but fails a schema or a rule.
    InvalidInput,
    /// 401: no credentials were sent.
    AuthenticationRequired,
    /// 401: the credentials sent are wrong.
    InvalidToken,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 415.
    UnsupportedMediaType,
    /// 413.
    PayloadTooLarge,
    /// 431: the request's header block is larger than the gateway accepts.
    HeadersTooLarge,
    /// 409.
    Conflict,
    /// 409: same idempotency key, different content.
    IdempotencyConflict,
    /// 409: no capacity left.
    CapacityExceeded,
    /// 422: the upstream answer fails the output schema.
    OutputInvalid,
    /// 502: the upstream answered a non-retryable status.
    UpstreamError,
    /// 503: the upstream stayed unavailable.
    UpstreamUnavailable,
    /// 503: the upstream's circuit breaker is open.
    CircuitOpen,
    /// 504: a deadline passed.
    RequestTimeout,
    /// 429.
    TooManyRequests,
    /// 503: the gateway sheds load.
    Overloaded,
    /// 500.
    InternalServerError,
}

impl ErrorCode {
    /// The `code` string of the body.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad.request",
            Self::InvalidInput => "invalid.input",
            Self::AuthenticationRequired => "authentication.required",
            Self::InvalidToken => "invalid.token",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not.found",
            Self::MethodNotAllowed => "method.not.allowed",
            Self::UnsupportedMediaType => "unsupported.media.type",
            Self::PayloadTooLarge => "payload.too.large",
            Self::HeadersTooLarge => "headers.too.large",
            Self::Conflict => "conflict",
            Self::IdempotencyConflict => "idempotency.conflict",
            Self::CapacityExceeded => "capacity.exceeded",
            Self::OutputInvalid => "output.invalid",
            Self::UpstreamError => "upstream.error",
            Self::UpstreamUnavailable => "upstream.unavailable",
            Self::CircuitOpen => "circuit.open",
            Self::RequestTimeout => "request.timeout",
            Self::TooManyRequests => "too.many.requests",
            Self::Overloaded => "overloaded",
            Self::InternalServerError => "internal.server.error",
        }
    }

    /// The HTTP status that goes with the code.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidInput => StatusCode::BAD_REQUEST,
            Self::AuthenticationRequired | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Conflict | Self::IdempotencyConflict | Self::CapacityExceeded => {
                StatusCode::CONFLICT
            }
            Self::OutputInvalid => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UpstreamError => StatusCode::BAD_GATEWAY,
            Self::UpstreamUnavailable | Self::CircuitOpen | Self::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One entry of `details`: which field, what rule, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// JSON pointer (or key path) of the offending field.
    pub field_name: String,
    /// Machine-readable rule name (`required`, `type`, `maxLength`...).
    pub error_code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorDetail {
    /// A detail about `field_name`.
    pub fn new(
        field_name: impl Into<String>,
        error_code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field_name: field_name.into(),
            error_code: error_code.into(),
            message: message.into(),
        }
    }
}

/// What the edge logs about a failed request (see "Logged once, where the answer leaves").
/// Never holds a secret, a token or a payload value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLog {
    /// The level of the line.
    pub level: tracing::Level,
    /// What happened, fixed text ("upstream call failed").
    pub message: &'static str,
    /// The cause, as text (an error's `Display`, its chain).
    pub error: Option<String>,
    /// The data action (or other named operation) the request ran.
    pub action: Option<Arc<str>>,
    /// The upstream it called.
    pub upstream: Option<Arc<str>>,
    /// How the operation ended (a metric `outcome` label).
    pub outcome: Option<&'static str>,
    /// The upstream's last status, when it answered.
    pub upstream_status: Option<u16>,
    /// Attempts made to the upstream.
    pub attempts: Option<u32>,
}

impl ErrorLog {
    /// A line at `level` saying `message`, with no context yet.
    pub fn new(level: tracing::Level, message: &'static str) -> Self {
        Self {
            level,
            message,
            error: None,
            action: None,
            upstream: None,
            outcome: None,
            upstream_status: None,
            attempts: None,
        }
    }

    /// With the cause's text.
    #[must_use]
    pub fn error(mut self, error: impl std::fmt::Display) -> Self {
        self.error = Some(error.to_string());
        self
    }
}

/// An error answer of the HTTP surface, rendered in the error shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    details: Vec<ErrorDetail>,
    retry_after_s: Option<u64>,
    www_authenticate: Option<HeaderValue>,
    log: Option<Box<ErrorLog>>,
}

impl ApiError {
    /// An error with a code and a message. For 5xx codes the message must be fixed text.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after_s: None,
            www_authenticate: None,
            log: None,
        }
    }

    /// 400 `bad.request`.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 400 `invalid.input` with the violations.
    pub fn invalid_input(message: impl Into<Cow<'static, str>>, details: Vec<ErrorDetail>) -> Self {
        Self::new(ErrorCode::InvalidInput, message).with_details(details)
    }

    /// 404 `not.found`.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 500 with a fixed message. Log the cause before calling this.
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::InternalServerError,
            "The gateway failed to process the request.",
        )
    }

    /// 503 `overloaded` with a `Retry-After`.
    pub fn overloaded(retry_after_s: u64) -> Self {
        Self::new(
            ErrorCode::Overloaded,
            "The gateway is overloaded; retry later.",
        )
        .with_retry_after(retry_after_s)
    }

    /// Adds `details` entries.
    #[must_use]
    pub fn with_details(mut self, details: Vec<ErrorDetail>) -> Self {
        self.details = details;
        self
    }

    /// Adds a `Retry-After` header (whole seconds).
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// Adds a `WWW-Authenticate` header (401 answers).
    #[must_use]
    pub fn with_www_authenticate(mut self, challenge: HeaderValue) -> Self {
        self.www_authenticate = Some(challenge);
        self
    }

    /// Has the edge log this answer's cause once (see the module docs).
    #[must_use]
    pub fn with_log(mut self, log: ErrorLog) -> Self {
        self.log = Some(Box::new(log));
        self
    }

    /// What the edge will log about this answer, if anything.
    pub fn log(&self) -> Option<&ErrorLog> {
        self.log.as_deref()
    }

    /// What the edge will log about this answer, to add context to.
    pub fn log_mut(&mut self) -> Option<&mut ErrorLog> {
        self.log.as_deref_mut()
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The details.
    pub fn details(&self) -> &[ErrorDetail] {
        &self.details
    }

    /// The `Retry-After` seconds, if any.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.retry_after_s
    }

    /// The body as JSON bytes, with the current request id as `contextId`.
    pub fn body(&self) -> Bytes {
        let request_id = RequestId::current();
        self.body_for(request_id.as_deref().unwrap_or(""))
    }

    /// The body as JSON bytes, with `request_id` as `contextId` (for answers written outside
    /// a request's task, like the connection-level 431).
    pub fn body_for(&self, request_id: &str) -> Bytes {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            status: u16,
            code: &'static str,
            message: &'a str,
            context_id: &'a str,
            details: &'a [ErrorDetail],
            errors: [(); 0],
        }
        let body = Body {
            status: self.status().as_u16(),
            code: self.code.as_str(),
            message: &self.message,
            context_id: request_id,
            details: &self.details,
            errors: [],
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body(),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(log) = self.log {
            response.extensions_mut().insert(*log);
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.code.as_str(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// A JSON request body, checked the gateway's way: `application/json` (415 otherwise), at most
/// `max_body_bytes` (413, enforced while reading), at most [`MAX_JSON_DEPTH`] levels (400
/// `bad.request`), parsable with no object key written twice (400 `bad.request`, see
/// [`check_json`]), and of the shape `T` (400 `invalid.input` with
/// the pointer of the offending field).
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// The raw bytes of a JSON body that passed the content-type, size, depth, syntax and
/// duplicate-key checks ([`check_json`]) but is not parsed yet (for handlers that parse in a
/// particular way).
#[derive(Debug, Clone)]
pub struct JsonBytes(pub Bytes);

impl<S> FromRequest<S> for JsonBytes
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Content-Type must be application/json.",
            ));
        }
        let bytes = read_body(req.into_body()).await?;
        check_json(&bytes)?;
        Ok(JsonBytes(bytes))
    }
}

/// The gateway's rules for any JSON body, checked before it is parsed for its meaning: at most
/// [`MAX_JSON_DEPTH`] levels, valid JSON, and no object with a key written twice (one rule
/// everywhere: never last-one-wins). Every body extractor ([`Json`], [`JsonBytes`]) runs it.
///
/// # Errors
/// 400 `bad.request`: too deep, not JSON, or a duplicated key (named with its pointer).
pub fn check_json(bytes: &[u8]) -> Result<(), ApiError> {
    if json_too_deep(bytes, MAX_JSON_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "JSON is nested deeper than {MAX_JSON_DEPTH} levels."
        )));
    }
    match crate::json::strict::check(bytes) {
        Ok(()) => Ok(()),
        Err(crate::json::strict::StrictError::Syntax) => {
            Err(ApiError::bad_request("The request body is not valid JSON."))
        }
        Err(crate::json::strict::StrictError::DuplicateKey { pointer }) => {
            let message = format!(
                "The key at `{pointer}` appears twice in one object; each key may appear once."
            );
            Err(
                ApiError::bad_request(message.clone()).with_details(vec![ErrorDetail::new(
                    pointer,
                    "duplicateKey",
                    message,
                )]),
            )
        }
    }
}

/// Reads a whole request body, turning the body limit into 413 `payload.too.large`.
///
/// # Errors
/// 413 when the body exceeds the configured limit, 400 when the client broke the stream.
pub async fn read_body(body: axum::body::Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => {
            if is_length_limit(&err) {
                Err(payload_too_large())
            } else {
                Err(ApiError::bad_request("The request body could not be read."))
            }
        }
    }
}

/// 413 `payload.too.large`.
pub fn payload_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        "The request body is larger than the gateway accepts.",
    )
}

fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Parses checked JSON bytes into `T` (which may borrow from them): syntax errors are 400
/// `bad.request`, shape errors 400 `invalid.input` naming the pointer.
///
/// # Errors
/// As described.
pub fn parse_json<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => match de.end() {
            Ok(()) => Ok(value),
            Err(_) => Err(ApiError::bad_request("The request body is not valid JSON.")),
        },
        Err(err) => {
            let inner = err.inner();
            if inner.is_data() {
                let pointer = pointer_of(err.path());
                let message = inner.to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                let (pointer, code) = match missing_field(&message) {
                    Some(field) => (format!("{pointer}/{}", escape_pointer(field)), "required"),
                    None => (pointer, "type"),
                };
                Err(ApiError::invalid_input(
                    "The request body does not have the expected shape.",
                    vec![ErrorDetail::new(pointer, code, message)],
                ))
            } else {
                Err(ApiError::bad_request("The request body is not valid JSON."))
            }
        }
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                out.push('/');
                out.push_str(&index.to_string());
            }
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&escape_pointer(key));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Escapes one JSON pointer reference token (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape_pointer(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

/// Whether the request declares a JSON body (`application/json` or `application/*+json`).
pub fn is_json_content_type(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || (mime.len() > 17
            && mime[..12].eq_ignore_ascii_case("application/")
            && mime[mime.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Whether `bytes` nests arrays/objects deeper than `max` (strings are skipped correctly).
/// Linear and allocation-free; run before parsing so deep input never reaches the parser.
pub fn json_too_deep(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_only_structure() {
        assert!(!json_too_deep(br#"{"a":[1,2,{"b":"[[[[[[["}]}"#, 3));
        assert!(json_too_deep(b"[[[[1]]]]", 3));
        assert!(!json_too_deep(b"[[[1]]]", 3));
        assert!(!json_too_deep(br#""\"[[[[""#, 1));
        let deep = "[".repeat(51) + &"]".repeat(51);
        assert!(json_too_deep(deep.as_bytes(), MAX_JSON_DEPTH));
        let ok = "[".repeat(50) + &"]".repeat(50);
        assert!(!json_too_deep(ok.as_bytes(), MAX_JSON_DEPTH));
    }

    #[test]
    fn json_content_types() {
        let mut h = http::HeaderMap::new();
        assert!(!is_json_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.x+json"),
        );
        assert!(is_json_content_type(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json_content_type(&h));
    }

    #[test]
    fn shape_errors_name_the_pointer() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct In {
            items: Vec<Item>,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Item {
            id: u32,
        }
        let err = parse_json::<In>(br#"{"items":[{"id":1},{}]}"#).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidInput);
        assert_eq!(err.details()[0].field_name, "/items/1/id");
        assert_eq!(err.details()[0].error_code, "required");
        let err = parse_json::<In>(b"{nope").unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest);
    }
}

/// 401 `invalid.token` for a credential sent in the query string (without a `WWW-Authenticate`
/// challenge: the surface's auth adds its own). Names the parameter, never its value.
pub fn credential_in_query(parameter: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidToken,
        format!(
            "Credentials are not accepted in the query string (`{parameter}`); send them in \
             the request's headers."
        ),
    )
}

/// The query string parsed into `T`, the gateway's way (what [`Query`] does):
/// 1. a credential-named parameter ([`crate::auth::CREDENTIAL_QUERY_PARAMETERS`]) is 401
///    `invalid.token`;
/// 2. a parameter `T` does not know is 400 `bad.request` naming it (with the nearest known
///    one when it looks like a misspelling: `dry_run` → `dryRun`), so that a misspelt option
///    is never silently ignored;
/// 3. a value of the wrong type is 400 `bad.request` naming the parameter.
///
/// # Errors
/// As described.
pub fn parse_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, ApiError> {
    if let Some(parameter) = crate::auth::query_credential(query) {
        return Err(credential_in_query(&parameter));
    }
    let text = query.unwrap_or("");
    let mut unknown: Vec<String> = Vec::new();
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(text.as_bytes()));
    let parsed = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        de,
        &mut |path: serde_ignored::Path<'_>| {
            let name = path.to_string();
            if !unknown.contains(&name) {
                unknown.push(name);
            }
        },
    ));
    let value: T = match parsed {
        Ok(value) => value,
        Err(err) => {
            let field = err.path().to_string();
            let named = !(field.is_empty() || field == ".");
            let message = format!(
                "Invalid query parameter{}: {}",
                if named {
                    format!(" `{field}`")
                } else {
                    String::new()
                },
                err.inner()
            );
            let details = if named {
                vec![ErrorDetail::new(field, "type", err.inner().to_string())]
            } else {
                Vec::new()
            };
            return Err(ApiError::bad_request(message).with_details(details));
        }
    };
    if unknown.is_empty() {
        Ok(value)
    } else {
        Err(unknown_parameters(&unknown, query_fields::<T>()))
    }
}

/// 400 `bad.request` naming every parameter in `unknown`, each with the nearest of `known`
/// when it is close.
fn unknown_parameters(unknown: &[String], known: &[&str]) -> ApiError {
    let takes = if known.is_empty() {
        "this endpoint takes no query parameters".to_owned()
    } else {
        format!(
            "this endpoint takes {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let details: Vec<ErrorDetail> = unknown
        .iter()
        .map(|name| {
            let message = match nearest(name, known) {
                Some(near) => format!("Unknown query parameter; did you mean `{near}`?"),
                None => format!("Unknown query parameter; {takes}."),
            };
            ErrorDetail::new(name.clone(), "unknown", message)
        })
        .collect();
    let names = unknown
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = match unknown {
        [name] => nearest(name, known).map_or_else(
            || format!("{takes}."),
            |near| format!("did you mean `{near}`?"),
        ),
        _ => format!("{takes}."),
    };
    let plural = if unknown.len() == 1 { "" } else { "s" };
    ApiError::bad_request(format!("Unknown query parameter{plural} {names}: {hint}"))
        .with_details(details)
}

/// The known name nearest to `name`, when it is close enough to be a misspelling of it (case
/// and `_`/`-` ignored, then a small edit distance).
fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let fold = |s: &str| {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let folded = fold(name);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&folded, &fold(k)), *k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// The field names `T` deserializes from (empty when `T` is not a plain struct): asked of
/// `T`'s `Deserialize` by a deserializer that only records what `deserialize_struct` is
/// given. Used for messages only.
fn query_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Fields(Option<&'static [&'static str]>);

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("introspection only")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    impl<'de> de::Deserializer<'de> for &mut Fields {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0.unwrap_or(&[])
}

/// The query of an endpoint that takes no parameters: with [`Query`], any parameter is 400
/// `bad.request` (and a credential-named one 401), like an unknown one anywhere else.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct NoParams {}

/// Query-string extractor of every surface; see [`parse_query`] for its rules (a credential in
/// the query is 401 `invalid.token`, an unknown or misspelt parameter 400 `bad.request` naming
/// it, a bad value 400 `bad.request`).
///
/// Extractors run after a router's `route_layer`s, so the surface's authentication has already
/// answered an unauthenticated request with its 401 before any parameter is judged. A handler
/// that checks credentials itself calls [`parse_query`] after its check instead.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query()).map(Query)
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Publish {
        dry_run: Option<bool>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct List {
        limit: Option<u32>,
        cursor: Option<String>,
    }

    #[test]
    fn known_parameters_parse() {
        let q: Publish = parse_query(Some("dryRun=true")).unwrap();
        assert_eq!(q.dry_run, Some(true));
        let q: List = parse_query(None).unwrap();
        assert!(q.limit.is_none());
        let _: NoParams = parse_query(Some("")).unwrap();
    }

    #[test]
    fn a_misspelt_parameter_is_named_with_the_nearest_known_one() {
        let err = parse_query::<Publish>(Some("dry_run=true")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest);
        assert!(err.message().contains("`dry_run`"), "{}", err.message());
        assert!(
            err.message().contains("did you mean `dryRun`"),
            "{}",
            err.message()
        );
        assert_eq!(err.details()[0].field_name, "dry_run");
        assert_eq!(err.details()[0].error_code, "unknown");
    }

    #[test]
    fn unknown_parameters_are_all_named_with_what_the_endpoint_takes() {
        let err = parse_query::<List>(Some("limit=1&outcome=x&kind=y&outcome=z")).unwrap_err();
        let names: Vec<_> = err
            .details()
            .iter()
            .map(|d| d.field_name.as_str())
            .collect();
        assert_eq!(names, ["outcome", "kind"]);
        assert!(
            err.message().contains("`limit`, `cursor`"),
            "{}",
            err.message()
        );
        let err = parse_query::<NoParams>(Some("x=1")).unwrap_err();
        assert!(
            err.message().contains("takes no query parameters"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_credential_in_the_query_is_an_invalid_token_and_its_value_is_never_echoed() {
        for query in ["access_token=s3cr3t", "limit=1&API_KEY=s3cr3t", "token="] {
            let err = parse_query::<List>(Some(query)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidToken, "{query}");
            assert!(!err.message().contains("s3cr3t"));
        }
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let err = parse_query::<List>(Some("limit=many")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest);
        assert!(err.message().contains("`limit`"), "{}", err.message());
    }
}
