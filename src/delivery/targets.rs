//! Delivery targets: the event destinations of the gateway, declarative (`[[targets]]`, swapped
//! on reload) or managed through `/admin/v1/targets`.
//!
//! - **Validation** ([`validate`]): every rule is checked and every violated field reported at
//!   once, as a JSON pointer (`/retryPolicy/maxRetries`).
//! - **Verification**: a new target, a target whose endpoint, auth or headers changed, and one
//!   asked to (`POST .../verify`) is PENDING_VERIFICATION until the engine delivered it a signed
//!   `gateway.target.verification` message (a delivery row of its own, claimed by any replica,
//!   surviving restarts): 2xx → VERIFIED, else retried, at most 5 attempts within 60 s →
//!   FAILED with the reason. Only the current verification (the target's `verification_id`)
//!   counts. The state lives in the store, shared by every replica; a declarative target keeps
//!   it across restarts unless its configuration (or secret) changed.
//! - **Changes** are audited in their transaction and published as `gateway.target.updated`
//!   messages (`{"type", "timestamp", "data": <the target>}`) to webhook destinations through
//!   the engine ([`publish_update`]); with no subscription that makes no delivery.
//! - Declarative targets answer 409 to PATCH, DELETE and rotate-secret.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use uuid::Uuid;

use super::destination::{Destination, Origin};
use super::signing::{SECRET_PREFIX, generate_secret};
use super::worker::{self, ATTEMPT_TIMEOUT, Attempt};
use super::{
    DeliveryEngine, DestinationKind, OutboundMessage, RetryPolicy, TargetAuth, TargetConfig,
    TargetError, TargetStatus, purpose,
};
use crate::config::{BackoffStrategy, Problem, Settings, TargetSettings};
use crate::error::ErrorDetail;
use crate::reload::{Prepared, Reloadable, Staging};
use crate::store::{
    AuditRecord, DestinationRow, MessageRow, NewDelivery, Page, PageRequest, StoreError,
    Transaction,
};
use crate::telemetry::RequestId;
use crate::upstream::NetworkPolicy;

/// The event type of the verification message.
pub const VERIFICATION_EVENT: &str = "gateway.target.verification";
/// The event type of a health probe.
pub const HEALTH_EVENT: &str = "gateway.target.health";
/// The event type published on every target change.
pub const UPDATED_EVENT: &str = "gateway.target.updated";
/// How long the secret before a rotation keeps signing too.
const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;
/// Headers the gateway sets itself on every delivery; a target's headers may not name them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-length",
    "host",
    "idempotency-key",
    "transfer-encoding",
    "connection",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];
/// The body of a typical event, for `estimatedEventBytes`.
const TYPICAL_EVENT: &str = r#"{"eventId":"0192f0c4-5b7e-7c1a-9d3e-2f4b6a8c0e1f","eventType":"custom.legacy.orders.order_created","eventTime":"2026-01-15T09:30:00.000Z","source":{"system":"legacy-ordering-platform","version":"2.1.0"},"data":{"transaction_id":"TX-2026-000123456","amount":1234.56,"currency":"USD","original_type":"ORDER_CREATED"}}"#;
/// What an OAuth2 access token is assumed to take in `estimatedEventBytes`.
const TYPICAL_ACCESS_TOKEN: usize = 1024;

/// A target as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Where deliveries go.
    pub endpoint_url: String,
    /// NONE | BASIC | OAUTH2 | JWT.
    pub auth_type: &'static str,
    /// The non-secret part of the auth configuration.
    pub auth_config: Value,
    /// The retry policy.
    pub retry_policy: RetryPolicy,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// Event type globs.
    pub event_types: Vec<String>,
    /// PENDING_VERIFICATION | VERIFIED | FAILED | DISABLED.
    pub status: TargetStatus,
    /// Why it is FAILED or DISABLED.
    pub status_reason: Option<String>,
    /// Declared in the configuration file (changed only there).
    pub declarative: bool,
    /// Body plus headers of a delivery of a typical event to this target.
    pub estimated_event_bytes: u64,
    /// Created.
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
    /// The signing secret: only in the answers of POST and rotate-secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl TargetView {
    fn of(
        id: &str,
        name: &str,
        origin: Origin,
        config: &TargetConfig,
        status: TargetStatus,
        status_reason: Option<String>,
        created_ms: i64,
        updated_ms: i64,
    ) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            endpoint_url: config.endpoint_url.clone(),
            auth_type: config.auth.type_name(),
            auth_config: config.auth.public_view(),
            retry_policy: config.retry_policy,
            headers: config.headers.clone(),
            event_types: config.event_types.clone(),
            status,
            status_reason,
            declarative: origin == Origin::Config,
            estimated_event_bytes: estimate_event_bytes(config),
            created_at: rfc3339(created_ms),
            updated_at: rfc3339(updated_ms),
            secret: None,
        }
    }

    fn of_row(row: &DestinationRow) -> Option<Self> {
        let config = TargetConfig::from_stored(&row.config)?;
        Some(Self::of(
            &row.id,
            &row.name,
            Origin::parse(&row.origin),
            &config,
            TargetStatus::parse(&row.status),
            row.status_reason.clone(),
            row.created_ms,
            row.updated_ms,
        ))
    }

    fn of_destination(
        d: &Destination,
        status: TargetStatus,
        reason: Option<&str>,
        now: i64,
    ) -> Self {
        Self::of(
            &d.id,
            &d.name,
            d.origin,
            &d.config,
            status,
            reason.map(str::to_owned),
            d.created_ms,
            now,
        )
    }
}

/// Body plus headers of a delivery of [`TYPICAL_EVENT`] to a target with `config`: the request
/// line, every header line (`name: value\r\n`) and the body.
pub fn estimate_event_bytes(config: &TargetConfig) -> u64 {
    let line = |name: &str, value_len: usize| name.len() + 2 + value_len + 2;
    let url = url::Url::parse(&config.endpoint_url).ok();
    let path = url
        .as_ref()
        .map_or(1, |u| u.path().len() + u.query().map_or(0, |q| q.len() + 1));
    let host = url
        .as_ref()
        .and_then(|u| u.host_str().map(str::len))
        .unwrap_or(0);
    let body = TYPICAL_EVENT.len();
    let mut total = "POST ".len() + path + " HTTP/1.1\r\n".len();
    total += line("host", host);
    total += line("content-type", "application/json".len());
    total += line("content-length", body.to_string().len());
    total += line(
        "user-agent",
        concat!("genesys-gateway/", env!("CARGO_PKG_VERSION")).len(),
    );
    total += line("idempotency-key", 64);
    // msg_<uuid>_<uuid>
    total += line("webhook-id", 4 + 36 + 1 + 36);
    total += line("webhook-timestamp", 10);
    // v1,<base64 of 32 bytes>
    total += line("webhook-signature", 3 + 44);
    total += match &config.auth {
        TargetAuth::None => 0,
        TargetAuth::Basic { username, password } => line(
            "authorization",
            "Basic ".len() + (username.len() + 1 + password.expose_secret().len()).div_ceil(3) * 4,
        ),
        TargetAuth::Jwt { token } => line(
            "authorization",
            "Bearer ".len() + token.expose_secret().len(),
        ),
        TargetAuth::Oauth2 { .. } => line("authorization", "Bearer ".len() + TYPICAL_ACCESS_TOKEN),
    };
    for (name, value) in &config.headers {
        total += line(name, value.len());
    }
    total += 2 + body;
    total as u64
}

/// A validated target: its name and configuration.
#[derive(Debug, Clone)]
pub struct TargetInput {
    /// 1–100 characters.
    pub name: String,
    /// The configuration.
    pub config: TargetConfig,
}

const FIELDS: &[&str] = &[
    "name",
    "endpointUrl",
    "authType",
    "authConfig",
    "retryPolicy",
    "headers",
    "eventTypes",
];

/// Collects the violations of one body.
struct Violations(Vec<ErrorDetail>);

impl Violations {
    fn add(&mut self, field: &str, code: &str, message: impl Into<String>) {
        self.0.push(ErrorDetail::new(field, code, message));
    }
}

fn string_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    at: &str,
    v: &mut Violations,
) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            v.add(at, "required", format!("`{key}` is required."));
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            v.add(at, "minLength", format!("`{key}` must not be empty."));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            v.add(at, "type", format!("`{key}` must be a string."));
            None
        }
    }
}

/// Checks a URL that arrived through the API: http(s), a host, no credentials in it; https,
/// or http only to an address the network policy allows (a private network allowed by
/// `[delivery] allow_private_networks` or `allow_cidrs`); an IP literal the policy refuses is
/// refused here already (names are checked after resolution, at connect time).
fn check_url(text: &str, at: &str, policy: &NetworkPolicy, v: &mut Violations) {
    let Ok(url) = url::Url::parse(text) else {
        v.add(at, "format", "Must be an absolute URL.");
        return;
    };
    if !matches!(url.scheme(), "http" | "https") {
        v.add(at, "format", "Must be an https:// URL.");
        return;
    }
    if !url.username().is_empty() || url.password().is_some() {
        v.add(
            at,
            "format",
            "Must not carry credentials; use authType and authConfig.",
        );
        return;
    }
    let ip: Option<std::net::IpAddr> = match url.host() {
        None => {
            v.add(at, "format", "Must name a host.");
            return;
        }
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
            Some(std::net::Ipv4Addr::LOCALHOST.into())
        }
        Some(url::Host::Domain(_)) => None,
    };
    let internal_allowed =
        ip.is_some_and(|ip| crate::upstream::is_internal(ip) && policy.permits(ip));
    if let Some(ip) = ip
        && !policy.permits(ip)
    {
        v.add(
            at,
            "network",
            "Points at a private, loopback or link-local address, which the network policy \
             refuses ([delivery] allow_private_networks / allow_cidrs).",
        );
        return;
    }
    if url.scheme() == "http" && !internal_allowed {
        v.add(
            at,
            "format",
            "Must be an https:// URL (http:// only to an allowed private network).",
        );
    }
}

fn auth_of(
    auth_type: &str,
    config: Option<&Value>,
    policy: &NetworkPolicy,
    v: &mut Violations,
) -> Option<TargetAuth> {
    let empty = Map::new();
    let obj = match config {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            v.add("/authConfig", "type", "`authConfig` must be an object.");
            return None;
        }
    };
    let allowed: &[&str] = match auth_type {
        "NONE" => &[],
        "BASIC" => &["username", "password"],
        "OAUTH2" => &["clientId", "clientSecret", "tokenUrl"],
        "JWT" => &["token"],
        _ => return None,
    };
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            v.add(
                &format!("/authConfig/{key}"),
                "unknown",
                format!("`{key}` is not a setting of authType {auth_type}."),
            );
        }
    }
    let mut field =
        |key: &str| string_field(obj, key, &format!("/authConfig/{key}"), v).map(str::to_owned);
    match auth_type {
        "NONE" => Some(TargetAuth::None),
        "BASIC" => {
            let (username, password) = (field("username"), field("password"));
            Some(TargetAuth::Basic {
                username: username?,
                password: SecretString::from(password?),
            })
        }
        "OAUTH2" => {
            let (client_id, client_secret, token_url) =
                (field("clientId"), field("clientSecret"), field("tokenUrl"));
            if let Some(url) = &token_url {
                check_url(url, "/authConfig/tokenUrl", policy, v);
            }
            Some(TargetAuth::Oauth2 {
                client_id: client_id?,
                client_secret: SecretString::from(client_secret?),
                token_url: token_url?,
            })
        }
        "JWT" => Some(TargetAuth::Jwt {
            token: SecretString::from(field("token")?),
        }),
        _ => None,
    }
}

fn retry_policy_of(value: Option<&Value>, v: &mut Violations) -> Option<RetryPolicy> {
    let defaults = RetryPolicy::from(crate::config::RetryPolicySettings::default());
    let obj = match value {
        None | Some(Value::Null) => return Some(defaults),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            v.add("/retryPolicy", "type", "`retryPolicy` must be an object.");
            return None;
        }
    };
    for key in obj.keys() {
        if !["maxRetries", "backoffStrategy", "initialDelaySeconds"].contains(&key.as_str()) {
            v.add(
                &format!("/retryPolicy/{key}"),
                "unknown",
                format!("`{key}` is not a retry policy setting (maxRetries, backoffStrategy, initialDelaySeconds)."),
            );
        }
    }
    let mut ok = true;
    let mut integer = |key: &str, range: std::ops::RangeInclusive<u64>, default: u64| -> u64 {
        match obj.get(key) {
            None | Some(Value::Null) => default,
            Some(value) => match value.as_u64().filter(|n| range.contains(n)) {
                Some(n) => n,
                None => {
                    v.add(
                        &format!("/retryPolicy/{key}"),
                        "range",
                        format!(
                            "`{key}` must be an integer from {} to {}.",
                            range.start(),
                            range.end()
                        ),
                    );
                    ok = false;
                    default
                }
            },
        }
    };
    let max_retries = integer("maxRetries", 0..=10, u64::from(defaults.max_retries));
    let initial = integer(
        "initialDelaySeconds",
        1..=30,
        defaults.initial_delay_seconds,
    );
    let backoff_strategy = match obj.get("backoffStrategy") {
        None | Some(Value::Null) => defaults.backoff_strategy,
        Some(Value::String(s)) if s == "EXPONENTIAL" => BackoffStrategy::Exponential,
        Some(Value::String(s)) if s == "LINEAR" => BackoffStrategy::Linear,
        Some(_) => {
            v.add(
                "/retryPolicy/backoffStrategy",
                "enum",
                "`backoffStrategy` must be EXPONENTIAL or LINEAR.",
            );
            ok = false;
            defaults.backoff_strategy
        }
    };
    ok.then_some(RetryPolicy {
        max_retries: u32::try_from(max_retries).unwrap_or(0),
        backoff_strategy,
        initial_delay_seconds: initial,
    })
}

fn headers_of(value: Option<&Value>, v: &mut Violations) -> Option<BTreeMap<String, String>> {
    let obj = match value {
        None | Some(Value::Null) => return Some(BTreeMap::new()),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            v.add(
                "/headers",
                "type",
                "`headers` must be an object of strings.",
            );
            return None;
        }
    };
    let mut headers = BTreeMap::new();
    let mut ok = true;
    for (name, value) in obj {
        let at = format!("/headers/{}", crate::error::escape_pointer(name));
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            v.add(&at, "format", "Not a valid header name.");
            ok = false;
            continue;
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            v.add(
                &at,
                "reserved",
                format!("`{name}` is set by the gateway on every delivery."),
            );
            ok = false;
            continue;
        }
        match value.as_str() {
            Some(text) if http::HeaderValue::from_str(text).is_ok() => {
                headers.insert(name.clone(), text.to_owned());
            }
            _ => {
                v.add(
                    &at,
                    "type",
                    "A header value must be a string of visible characters.",
                );
                ok = false;
            }
        }
    }
    ok.then_some(headers)
}

fn event_types_of(value: Option<&Value>, v: &mut Violations) -> Option<Vec<String>> {
    let list = match value {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            v.add(
                "/eventTypes",
                "minItems",
                "`eventTypes` must list at least one event type (globs: `custom.legacy.orders.*`).",
            );
            return None;
        }
        Some(_) => {
            v.add(
                "/eventTypes",
                "type",
                "`eventTypes` must be an array of strings.",
            );
            return None;
        }
    };
    let mut types = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, item) in list.iter().enumerate() {
        match item.as_str() {
            Some(s) if !s.is_empty() && s.len() <= 200 => types.push(s.to_owned()),
            _ => {
                v.add(
                    &format!("/eventTypes/{i}"),
                    "type",
                    "An event type is a non-empty string of at most 200 characters.",
                );
                ok = false;
            }
        }
    }
    ok.then_some(types)
}

/// Validates a target body (camelCase, the API form) against every rule; `Err` lists every
/// violated field.
///
/// # Errors
/// One [`ErrorDetail`] per violation.
pub fn validate(body: &Value, policy: &NetworkPolicy) -> Result<TargetInput, Vec<ErrorDetail>> {
    let mut v = Violations(Vec::new());
    let Some(obj) = body.as_object() else {
        return Err(vec![ErrorDetail::new(
            "",
            "type",
            "The target must be a JSON object.",
        )]);
    };
    for key in obj.keys() {
        if !FIELDS.contains(&key.as_str()) {
            v.add(
                &format!("/{}", crate::error::escape_pointer(key)),
                "unknown",
                format!("`{key}` is not a target field ({}).", FIELDS.join(", ")),
            );
        }
    }
    let name = string_field(obj, "name", "/name", &mut v).and_then(|n| {
        if n.chars().count() > 100 {
            v.add("/name", "maxLength", "`name` must be 1 to 100 characters.");
            None
        } else {
            Some(n.to_owned())
        }
    });
    let endpoint = string_field(obj, "endpointUrl", "/endpointUrl", &mut v).map(str::to_owned);
    if let Some(url) = &endpoint {
        check_url(url, "/endpointUrl", policy, &mut v);
    }
    let auth_type = match obj.get("authType") {
        None | Some(Value::Null) => Some("NONE"),
        Some(Value::String(t)) if ["NONE", "BASIC", "OAUTH2", "JWT"].contains(&t.as_str()) => {
            Some(t.as_str())
        }
        Some(_) => {
            v.add(
                "/authType",
                "enum",
                "`authType` must be NONE, BASIC, OAUTH2 or JWT.",
            );
            None
        }
    };
    let auth = auth_type.and_then(|t| auth_of(t, obj.get("authConfig"), policy, &mut v));
    let retry_policy = retry_policy_of(obj.get("retryPolicy"), &mut v);
    let headers = headers_of(obj.get("headers"), &mut v);
    let event_types = event_types_of(obj.get("eventTypes"), &mut v);
    if !v.0.is_empty() {
        return Err(v.0);
    }
    match (name, endpoint, auth, retry_policy, headers, event_types) {
        (
            Some(name),
            Some(endpoint_url),
            Some(auth),
            Some(retry_policy),
            Some(headers),
            Some(event_types),
        ) => Ok(TargetInput {
            name,
            config: TargetConfig {
                endpoint_url,
                auth,
                retry_policy,
                headers,
                event_types,
                description: String::new(),
            },
        }),
        _ => Err(vec![ErrorDetail::new(
            "",
            "invalid",
            "The target is not valid.",
        )]),
    }
}

/// The API body of a stored target, credentials included: what a PATCH is merged into.
fn body_of(name: &str, config: &TargetConfig) -> Value {
    let auth_config = match &config.auth {
        TargetAuth::None => json!({}),
        TargetAuth::Basic { username, password } => {
            json!({ "username": username, "password": password.expose_secret() })
        }
        TargetAuth::Oauth2 {
            client_id,
            client_secret,
            token_url,
        } => json!({
            "clientId": client_id,
            "clientSecret": client_secret.expose_secret(),
            "tokenUrl": token_url,
        }),
        TargetAuth::Jwt { token } => json!({ "token": token.expose_secret() }),
    };
    json!({
        "name": name,
        "endpointUrl": config.endpoint_url,
        "authType": config.auth.type_name(),
        "authConfig": auth_config,
        "retryPolicy": config.retry_policy,
        "headers": config.headers,
        "eventTypes": config.event_types,
    })
}

/// The id of the declarative target `name`: derived from the name, so every replica and every
/// restart agree on it.
pub fn declarative_id(name: &str) -> String {
    let digest = sha2::Sha256::digest(format!("genesys-gateway target {name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn audit(kind: &str, actor: &str, subject: &str, detail: Value) -> AuditRecord {
    let mut record = AuditRecord::now(kind, actor, "success")
        .with_subject(subject)
        .with_detail(detail);
    if let Some(id) = RequestId::current() {
        record = record.with_request_id(&*id);
    }
    record
}

/// Publishes a `gateway.target.updated` message about `view` (`change` says what happened) to
/// the webhook destinations through the engine, inside `tx`.
///
/// # Errors
/// When the store refuses a write.
pub async fn publish_update(
    tx: &mut Transaction,
    engine: &DeliveryEngine,
    view: &TargetView,
    change: &str,
) -> Result<(), StoreError> {
    let message = target_updated_message(view, change);
    engine
        .enqueue_for(tx, &message, DestinationKind::Webhook)
        .await?;
    Ok(())
}

/// The `gateway.target.updated` message about `view`: `{"type", "timestamp", "data"}`, `data`
/// the target (never its secret) with `change` (`created`, `updated`, `deleted`, `verified`,
/// `verification_failed`, `disabled`, `verification_requested`, `secret_rotated`).
pub fn target_updated_message(view: &TargetView, change: &str) -> OutboundMessage {
    let mut data = serde_json::to_value(TargetView {
        secret: None,
        ..view.clone()
    })
    .unwrap_or(Value::Null);
    if let Some(obj) = data.as_object_mut() {
        obj.insert("change".to_owned(), Value::String(change.to_owned()));
    }
    let id = Uuid::now_v7();
    let body = json!({
        "type": UPDATED_EVENT,
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    });
    OutboundMessage {
        id,
        event_type: UPDATED_EVENT.to_owned(),
        idempotency_key: id.to_string(),
        body: Bytes::from(body.to_string()),
    }
}

/// Queues the verification of destination `id` (`name`) inside `tx` and returns the id of its
/// verification message (store it as the destination's `verification_id`). Pending older
/// verifications are superseded.
async fn queue_verification(
    tx: &mut Transaction,
    id: &str,
    name: &str,
    now: i64,
) -> Result<String, StoreError> {
    tx.kill_pending_deliveries(
        id,
        purpose::VERIFICATION,
        "superseded by a newer verification",
        now,
    )
    .await?;
    let message_id = Uuid::now_v7().to_string();
    let body = json!({
        "type": VERIFICATION_EVENT,
        "timestamp": rfc3339(now),
        "data": { "targetId": id, "name": name },
    })
    .to_string();
    tx.insert_message(&MessageRow {
        id: &message_id,
        event_type: VERIFICATION_EVENT,
        idempotency_key: &message_id,
        body: body.as_bytes(),
        created_ms: now,
    })
    .await?;
    tx.insert_delivery(&NewDelivery {
        id: &Uuid::now_v7().to_string(),
        message_id: &message_id,
        destination_id: id,
        purpose: purpose::VERIFICATION,
        status: "pending",
        last_error: None,
        now_ms: now,
    })
    .await?;
    Ok(message_id)
}

/// Disables `destination` (it answered 410 Gone) inside `tx`: DISABLED with `reason`, its
/// pending deliveries dead ("target disabled"), audited and published.
pub(crate) async fn disable(
    tx: &mut Transaction,
    engine: &DeliveryEngine,
    destination: &Destination,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.set_destination_status(
        &destination.id,
        TargetStatus::Disabled.as_str(),
        Some(reason),
        None,
        now,
    )
    .await?;
    let killed = tx
        .kill_pending_deliveries(&destination.id, purpose::EVENT, "target disabled", now)
        .await?;
    tx.append_audit(&audit(
        "target.disabled",
        "system",
        &destination.id,
        json!({ "name": destination.name, "reason": reason, "deliveriesDead": killed }),
    ))
    .await?;
    let view = TargetView::of_destination(destination, TargetStatus::Disabled, Some(reason), now);
    publish_update(tx, engine, &view, "disabled").await
}

/// Ends the verification `verification_id` of `destination` with `status` inside `tx` (only if
/// it is still the current one): audited and published; a FAILED target's pending deliveries
/// become dead.
pub(crate) async fn settle_verification(
    tx: &mut Transaction,
    engine: &DeliveryEngine,
    destination: &Destination,
    verification_id: &str,
    status: TargetStatus,
    reason: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    let settled = tx
        .settle_verification(
            &destination.id,
            verification_id,
            status.as_str(),
            reason,
            now,
        )
        .await?;
    if !settled {
        return Ok(());
    }
    let (kind, change) = if status == TargetStatus::Verified {
        ("target.verified", "verified")
    } else {
        let killed = tx
            .kill_pending_deliveries(
                &destination.id,
                purpose::EVENT,
                "target failed verification",
                now,
            )
            .await?;
        tracing::warn!(target_name = %destination.name, reason = reason.unwrap_or(""), dead = killed, "a delivery target failed its verification");
        ("target.verification_failed", "verification_failed")
    };
    let mut record = AuditRecord::now(
        kind,
        "system",
        if status == TargetStatus::Verified {
            "success"
        } else {
            "failure"
        },
    )
    .with_subject(destination.id.clone())
    .with_detail(json!({ "name": destination.name, "reason": reason }));
    record.at = Utc::now();
    tx.append_audit(&record).await?;
    let view = TargetView::of_destination(destination, status, reason, now);
    publish_update(tx, engine, &view, change).await
}

/// The targets capability (cheap to clone): what the admin handlers and the reload part call.
#[derive(Clone, Debug)]
pub struct Targets {
    engine: DeliveryEngine,
}

/// The answer of a health probe.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthProbe {
    /// `UP` (2xx) or `DOWN`.
    pub status: &'static str,
    /// How long the probe took.
    pub latency_ms: u64,
    /// What the target answered, if it answered.
    pub http_status: Option<u16>,
    /// Why it is DOWN.
    pub error: Option<String>,
}

fn conflict_on_name(err: StoreError, name: &str) -> TargetError {
    if err.is_unique_violation() {
        TargetError::NameTaken(name.to_owned())
    } else {
        TargetError::Store(err)
    }
}

impl Targets {
    /// The targets over `engine`.
    pub fn new(engine: DeliveryEngine) -> Self {
        Self { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &DeliveryEngine {
        &self.engine
    }

    async fn after_change(&self) {
        if let Err(err) = self.engine.refresh_destinations().await {
            tracing::warn!(error = %err, "reading the delivery destinations failed");
        }
        self.engine.wake();
    }

    /// `POST /admin/v1/targets`: validates, stores (PENDING_VERIFICATION, a fresh secret),
    /// queues the verification; the view carries the secret.
    ///
    /// # Errors
    /// [`TargetError::Invalid`], [`TargetError::NameTaken`], [`TargetError::Store`].
    pub async fn create(&self, body: &Value) -> Result<TargetView, TargetError> {
        let input = validate(body, self.engine.network_policy()).map_err(TargetError::Invalid)?;
        let secret = generate_secret();
        let now = now_ms();
        let id = Uuid::now_v7().to_string();
        let mut tx = self.engine.store().begin().await?;
        let mut row = DestinationRow {
            id: id.clone(),
            kind: DestinationKind::Target.as_str().to_owned(),
            origin: Origin::Api.as_str().to_owned(),
            name: input.name.clone(),
            config: input.config.to_stored(),
            config_hash: input.config.fingerprint(&secret),
            secret: secret.clone(),
            previous_secret: None,
            previous_secret_until_ms: None,
            status: TargetStatus::PendingVerification.as_str().to_owned(),
            status_reason: None,
            verification_id: None,
            created_ms: now,
            updated_ms: now,
        };
        tx.insert_destination(&row)
            .await
            .map_err(|e| conflict_on_name(e, &input.name))?;
        let verification = queue_verification(&mut tx, &id, &input.name, now).await?;
        row.verification_id = Some(verification.clone());
        tx.set_destination_status(
            &id,
            TargetStatus::PendingVerification.as_str(),
            None,
            Some(&verification),
            now,
        )
        .await?;
        let mut view = TargetView::of(
            &id,
            &input.name,
            Origin::Api,
            &input.config,
            TargetStatus::PendingVerification,
            None,
            now,
            now,
        );
        tx.append_audit(&audit(
            "target.created",
            "admin",
            &id,
            json!({ "name": input.name, "endpointUrl": input.config.endpoint_url, "authType": input.config.auth.type_name() }),
        ))
        .await?;
        publish_update(&mut tx, &self.engine, &view, "created").await?;
        tx.commit().await?;
        self.after_change().await;
        view.secret = Some(secret.expose_secret().to_owned());
        Ok(view)
    }

    /// `GET /admin/v1/targets`, newest first.
    ///
    /// # Errors
    /// [`TargetError::Store`] (an invalid cursor among them).
    pub async fn list(&self, page: &PageRequest) -> Result<Page<TargetView>, TargetError> {
        let rows = self
            .engine
            .store()
            .list_destinations(DestinationKind::Target.as_str(), page)
            .await?;
        Ok(Page {
            entities: rows
                .entities
                .iter()
                .filter_map(TargetView::of_row)
                .collect(),
            next_cursor: rows.next_cursor,
        })
    }

    /// `GET /admin/v1/targets/{id}`.
    ///
    /// # Errors
    /// [`TargetError::NotFound`], [`TargetError::Store`].
    pub async fn get(&self, id: &str) -> Result<TargetView, TargetError> {
        let row = self
            .engine
            .store()
            .destination(id)
            .await?
            .filter(|r| r.kind == DestinationKind::Target.as_str())
            .ok_or(TargetError::NotFound("target"))?;
        TargetView::of_row(&row).ok_or(TargetError::NotFound("target"))
    }

    /// The live target row `id`, locked in `tx`.
    async fn locked(tx: &mut Transaction, id: &str) -> Result<DestinationRow, TargetError> {
        tx.destination_for_update(id)
            .await?
            .filter(|r| r.kind == DestinationKind::Target.as_str())
            .ok_or(TargetError::NotFound("target"))
    }

    /// `PATCH /admin/v1/targets/{id}`: the fields given replace the stored ones (an
    /// `authConfig` replaces the whole auth configuration), the result is validated whole; a
    /// changed endpoint, auth or headers puts the target back to PENDING_VERIFICATION.
    ///
    /// # Errors
    /// [`TargetError::Declarative`], [`TargetError::NotFound`], [`TargetError::Invalid`],
    /// [`TargetError::NameTaken`], [`TargetError::Store`].
    pub async fn patch(&self, id: &str, patch: &Value) -> Result<TargetView, TargetError> {
        let Some(changes) = patch.as_object() else {
            return Err(TargetError::Invalid(vec![ErrorDetail::new(
                "",
                "type",
                "The patch must be a JSON object.",
            )]));
        };
        let now = now_ms();
        let mut tx = self.engine.store().begin().await?;
        let mut row = Self::locked(&mut tx, id).await?;
        if Origin::parse(&row.origin) == Origin::Config {
            return Err(TargetError::Declarative);
        }
        let old = TargetConfig::from_stored(&row.config).ok_or(TargetError::NotFound("target"))?;
        let mut merged = body_of(&row.name, &old);
        if let Some(obj) = merged.as_object_mut() {
            let type_changed = changes
                .get("authType")
                .is_some_and(|t| t.as_str() != Some(old.auth.type_name()));
            if type_changed && !changes.contains_key("authConfig") {
                obj.insert("authConfig".to_owned(), json!({}));
            }
            for (key, value) in changes {
                obj.insert(key.clone(), value.clone());
            }
        }
        let input =
            validate(&merged, self.engine.network_policy()).map_err(TargetError::Invalid)?;
        let reverify = input.config.endpoint_url != old.endpoint_url
            || input.config.headers != old.headers
            || body_of("", &input.config)["authConfig"] != body_of("", &old)["authConfig"]
            || input.config.auth.type_name() != old.auth.type_name();
        row.name = input.name.clone();
        row.config = input.config.to_stored();
        row.config_hash = input.config.fingerprint(&row.secret);
        row.updated_ms = now;
        if reverify {
            row.status = TargetStatus::PendingVerification.as_str().to_owned();
            row.status_reason = None;
            row.verification_id = Some(queue_verification(&mut tx, id, &input.name, now).await?);
        }
        tx.update_destination(&row)
            .await
            .map_err(|e| conflict_on_name(e, &input.name))?;
        let changed: Vec<&String> = changes.keys().collect();
        tx.append_audit(&audit(
            "target.updated",
            "admin",
            id,
            json!({ "name": row.name, "fields": changed, "reverify": reverify }),
        ))
        .await?;
        let view = TargetView::of_row(&row).ok_or(TargetError::NotFound("target"))?;
        publish_update(&mut tx, &self.engine, &view, "updated").await?;
        tx.commit().await?;
        self.after_change().await;
        Ok(view)
    }

    /// `DELETE /admin/v1/targets/{id}`: its pending deliveries become dead ("target deleted").
    ///
    /// # Errors
    /// [`TargetError::Declarative`], [`TargetError::NotFound`], [`TargetError::Store`].
    pub async fn delete(&self, id: &str) -> Result<(), TargetError> {
        let now = now_ms();
        let mut tx = self.engine.store().begin().await?;
        let row = Self::locked(&mut tx, id).await?;
        if Origin::parse(&row.origin) == Origin::Config {
            return Err(TargetError::Declarative);
        }
        Self::remove(&mut tx, &self.engine, &row, "admin", "target deleted", now).await?;
        tx.commit().await?;
        self.after_change().await;
        Ok(())
    }

    async fn remove(
        tx: &mut Transaction,
        engine: &DeliveryEngine,
        row: &DestinationRow,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        tx.delete_destination(&row.id, now).await?;
        let dead = tx
            .kill_pending_deliveries(&row.id, purpose::EVENT, reason, now)
            .await?;
        tx.kill_pending_deliveries(&row.id, purpose::VERIFICATION, reason, now)
            .await?;
        tx.append_audit(&audit(
            "target.deleted",
            actor,
            &row.id,
            json!({ "name": row.name, "deliveriesDead": dead }),
        ))
        .await?;
        if let Some(view) = TargetView::of_row(row) {
            publish_update(tx, engine, &view, "deleted").await?;
        }
        Ok(())
    }

    /// `POST /admin/v1/targets/{id}/verify`: back to PENDING_VERIFICATION (from any status,
    /// DISABLED included) with a new verification queued.
    ///
    /// # Errors
    /// [`TargetError::NotFound`], [`TargetError::Store`].
    pub async fn verify(&self, id: &str) -> Result<TargetView, TargetError> {
        let now = now_ms();
        let mut tx = self.engine.store().begin().await?;
        let mut row = Self::locked(&mut tx, id).await?;
        let verification = queue_verification(&mut tx, id, &row.name, now).await?;
        tx.set_destination_status(
            id,
            TargetStatus::PendingVerification.as_str(),
            None,
            Some(&verification),
            now,
        )
        .await?;
        row.status = TargetStatus::PendingVerification.as_str().to_owned();
        row.status_reason = None;
        row.updated_ms = now;
        tx.append_audit(&audit(
            "target.verification_requested",
            "admin",
            id,
            json!({ "name": row.name }),
        ))
        .await?;
        let view = TargetView::of_row(&row).ok_or(TargetError::NotFound("target"))?;
        publish_update(&mut tx, &self.engine, &view, "verification_requested").await?;
        tx.commit().await?;
        self.after_change().await;
        Ok(view)
    }

    /// `POST /admin/v1/targets/{id}/rotate-secret`: a new secret; the previous one keeps
    /// signing too for 24 hours. The view carries the new secret.
    ///
    /// # Errors
    /// [`TargetError::Declarative`], [`TargetError::NotFound`], [`TargetError::Store`].
    pub async fn rotate_secret(&self, id: &str) -> Result<TargetView, TargetError> {
        let now = now_ms();
        let mut tx = self.engine.store().begin().await?;
        let mut row = Self::locked(&mut tx, id).await?;
        if Origin::parse(&row.origin) == Origin::Config {
            return Err(TargetError::Declarative);
        }
        let config =
            TargetConfig::from_stored(&row.config).ok_or(TargetError::NotFound("target"))?;
        let secret = generate_secret();
        row.previous_secret = Some(row.secret.clone());
        row.previous_secret_until_ms = Some(now + ROTATION_OVERLAP_MS);
        row.secret = secret.clone();
        row.config_hash = config.fingerprint(&secret);
        row.updated_ms = now;
        tx.update_destination(&row).await?;
        tx.append_audit(&audit(
            "target.secret_rotated",
            "admin",
            id,
            json!({ "name": row.name, "previousSecretSignsUntil": rfc3339(now + ROTATION_OVERLAP_MS) }),
        ))
        .await?;
        let mut view = TargetView::of_row(&row).ok_or(TargetError::NotFound("target"))?;
        publish_update(&mut tx, &self.engine, &view, "secret_rotated").await?;
        tx.commit().await?;
        self.after_change().await;
        view.secret = Some(secret.expose_secret().to_owned());
        Ok(view)
    }

    /// `POST /admin/v1/targets/{id}/health`: one signed `gateway.target.health` probe now.
    ///
    /// # Errors
    /// [`TargetError::NotFound`], [`TargetError::Store`].
    pub async fn probe(&self, id: &str) -> Result<HealthProbe, TargetError> {
        let destination = match self.engine.destination(id) {
            Some(d) => d,
            None => {
                self.engine.refresh_destinations().await?;
                self.engine
                    .destination(id)
                    .ok_or(TargetError::NotFound("target"))?
            }
        };
        if destination.kind != DestinationKind::Target {
            return Err(TargetError::NotFound("target"));
        }
        let message_id = Uuid::now_v7().to_string();
        let body = json!({
            "type": HEALTH_EVENT,
            "timestamp": rfc3339(now_ms()),
            "data": { "targetId": destination.id, "name": destination.name },
        })
        .to_string();
        let started = Instant::now();
        let outcome = worker::send(
            &self.engine,
            &destination,
            &message_id,
            &message_id,
            Bytes::from(body),
            ATTEMPT_TIMEOUT,
        )
        .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(match outcome {
            Attempt::Delivered(status) => HealthProbe {
                status: "UP",
                latency_ms,
                http_status: Some(status.as_u16()),
                error: None,
            },
            Attempt::Failed(failure) => HealthProbe {
                status: "DOWN",
                latency_ms,
                http_status: failure.status.map(|s| s.as_u16()),
                error: Some(failure.error),
            },
        })
    }

    /// Makes the stored declarative targets those of `declared`: new ones are inserted (and
    /// verified), changed ones (configuration or secret) updated and verified again, unchanged
    /// ones keep their state, those no longer declared are deleted.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails (targets already synchronised stay so).
    pub async fn sync_declarative(&self, declared: &[DeclaredTarget]) -> Result<(), StoreError> {
        let store = self.engine.store();
        let existing = store
            .destinations_of_origin(DestinationKind::Target.as_str(), Origin::Config.as_str())
            .await?;
        let by_id: std::collections::HashMap<&str, &(DestinationRow, bool)> =
            existing.iter().map(|e| (e.0.id.as_str(), e)).collect();
        let mut wanted = std::collections::HashSet::new();
        for target in declared {
            let id = declarative_id(&target.name);
            wanted.insert(id.clone());
            let hash = target.config.fingerprint(&target.secret);
            let current = by_id.get(id.as_str());
            if let Some((row, deleted)) = current
                && !deleted
                && row.config_hash == hash
                && row.name == target.name
            {
                continue;
            }
            let now = now_ms();
            let mut tx = store.begin().await?;
            let row = DestinationRow {
                id: id.clone(),
                kind: DestinationKind::Target.as_str().to_owned(),
                origin: Origin::Config.as_str().to_owned(),
                name: target.name.clone(),
                config: target.config.to_stored(),
                config_hash: hash,
                secret: target.secret.clone(),
                previous_secret: None,
                previous_secret_until_ms: None,
                status: TargetStatus::PendingVerification.as_str().to_owned(),
                status_reason: None,
                verification_id: None,
                created_ms: current.map_or(now, |c| c.0.created_ms),
                updated_ms: now,
            };
            let written = if current.is_some() {
                tx.update_destination(&row).await
            } else {
                tx.insert_destination(&row).await
            };
            if let Err(err) = written {
                if err.is_unique_violation() {
                    // Another replica wrote it first, or an API target has the name.
                    tracing::warn!(target_name = %target.name, "a declarative target could not be stored: its name is taken, or another replica stored it at the same moment");
                    continue;
                }
                return Err(err);
            }
            let verification = queue_verification(&mut tx, &id, &target.name, now).await?;
            tx.set_destination_status(
                &id,
                TargetStatus::PendingVerification.as_str(),
                None,
                Some(&verification),
                now,
            )
            .await?;
            let change = if current.is_some() {
                "updated"
            } else {
                "created"
            };
            tx.append_audit(&audit(
                &format!("target.{change}"),
                "config",
                &id,
                json!({ "name": target.name, "declarative": true }),
            ))
            .await?;
            if let Some(view) = TargetView::of_row(&row) {
                publish_update(&mut tx, &self.engine, &view, change).await?;
            }
            tx.commit().await?;
        }
        for (row, deleted) in &existing {
            if *deleted || wanted.contains(&row.id) {
                continue;
            }
            let mut tx = store.begin().await?;
            Self::remove(
                &mut tx,
                &self.engine,
                row,
                "config",
                "target removed from the configuration",
                now_ms(),
            )
            .await?;
            tx.commit().await?;
        }
        self.after_change().await;
        Ok(())
    }
}

/// A declarative target as the configuration gives it.
#[derive(Debug, Clone)]
pub struct DeclaredTarget {
    /// Its name.
    pub name: String,
    /// Its configuration.
    pub config: TargetConfig,
    /// Its `whsec_` secret.
    pub secret: SecretString,
}

impl DeclaredTarget {
    /// The declarative targets of `settings`.
    pub fn all(settings: &Settings) -> Vec<Self> {
        settings.targets.iter().map(Self::of).collect()
    }

    fn of(t: &TargetSettings) -> Self {
        Self {
            name: t.name.clone(),
            config: TargetConfig {
                endpoint_url: t.endpoint_url.clone(),
                auth: TargetAuth::from(&t.auth),
                retry_policy: RetryPolicy::from(t.retry_policy),
                headers: t.headers.clone(),
                event_types: t.event_types.clone(),
                description: String::new(),
            },
            secret: t.secret.clone(),
        }
    }
}

/// Checks what a compiled destination needs of declarative targets (URL, header values,
/// secret), with key paths.
fn check_declared(settings: &Settings) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, t) in settings.targets.iter().enumerate() {
        if t.endpoint_url.parse::<http::Uri>().is_err() {
            problems.push(Problem::new(
                format!("targets[{i}].endpoint_url"),
                "is not a valid URL",
            ));
        }
        for (name, value) in &t.headers {
            if http::HeaderValue::from_str(value).is_err() {
                problems.push(Problem::new(
                    format!("targets[{i}].headers.{name}"),
                    "is not a valid header value",
                ));
            }
        }
        if !t.secret.expose_secret().starts_with(SECRET_PREFIX) {
            problems.push(Problem::new(
                format!("targets[{i}].secret"),
                "must be whsec_ followed by base64",
            ));
        }
    }
    problems
}

/// The reload part of the declarative targets: a reloaded `[[targets]]` is stored (changed
/// targets verified again) and swapped into the engine.
pub struct DeclarativeTargets(pub Targets);

struct PreparedTargets {
    targets: Targets,
    declared: Vec<DeclaredTarget>,
}

impl Reloadable for DeclarativeTargets {
    fn name(&self) -> &'static str {
        "targets"
    }

    fn prepare(&self, staging: &mut Staging<'_>) -> Result<Box<dyn Prepared>, Vec<Problem>> {
        let problems = check_declared(staging.settings());
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(PreparedTargets {
            targets: self.0.clone(),
            declared: DeclaredTarget::all(staging.settings()),
        }))
    }
}

impl Prepared for PreparedTargets {
    fn report(&self, report: &mut Map<String, Value>) {
        report.insert("targets".to_owned(), self.declared.len().into());
    }

    fn apply(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            if let Err(err) = self.targets.sync_declarative(&self.declared).await {
                tracing::error!(error = %err, "storing the reloaded declarative targets failed; the next reload or restart tries again");
            }
        })
    }
}

/// Shared by the reload part and the startup: checks then synchronises.
///
/// # Errors
/// The problems of the declared targets, or the store's failure.
pub async fn start_declarative(
    targets: &Targets,
    settings: &Settings,
) -> Result<(), anyhow::Error> {
    let problems = check_declared(settings);
    if let Some(problem) = problems.first() {
        anyhow::bail!("{}: {}", problem.path, problem.message);
    }
    targets
        .sync_declarative(&DeclaredTarget::all(settings))
        .await?;
    Ok(())
}
