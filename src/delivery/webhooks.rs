//! Webhook subscriptions: external systems subscribe a URL to event types (globs such as
//! `callback.reservation.*` or `gateway.target.*`) and receive every matching event, signed
//! (Standard Webhooks), through the durable delivery engine.
//!
//! A subscription is a destination of the engine of kind `webhook` (table
//! `delivery_destinations`, like the targets): made through the admin API (`origin = api`, so
//! its URL is reached through the SSRF guard), VERIFIED from the start (there is no
//! verification step), retried per [`WEBHOOK_RETRY_POLICY`] (EXPONENTIAL, 5 s initial, 10
//! retries), its signing secret and the previous one after a rotation in the destination's own
//! secret fields. Nothing of a subscription is stored anywhere else: the engine routes, signs,
//! sends, retries and buries; this module owns what a valid subscription is, the admin
//! operations and the message every webhook carries.
//!
//! # Subscriptions
//! `{id, url, eventTypes, description, createdAt}` plus a signing secret `whsec_<base64 of 32
//! random bytes>`, shown only in the answers that create it (`POST /admin/v1/webhooks` and
//! `POST /admin/v1/webhooks/{id}/rotate-secret`). A rotation keeps the previous secret signing
//! for [`SECRET_OVERLAP`] (24 h) beside the new one — the engine then puts both `v1,`
//! signatures, space-separated, in `webhook-signature` — so that a subscriber can switch at its
//! own pace; a second rotation within that time drops the oldest. Every change is audited in its
//! own transaction (`webhook.created`, `webhook.deleted`, `webhook.secret_rotated`) without any
//! secret, and without the URL's path or query (which may carry a subscriber's token): the
//! detail names the host and the event types. Deleting a subscription makes its pending
//! deliveries dead ("subscription deleted"); nothing more is enqueued for it.
//!
//! # Rules of a subscription (400 `invalid.input`, one `details` entry per violated field)
//! - `url`: at most [`MAX_URL_CHARS`] characters, absolute, no user name or password, no
//!   fragment; `https`, or `http` only to an address the network policy allows (an IP literal
//!   or `localhost` in a private range allowed by `[delivery] allow_private_networks` or
//!   `allow_cidrs`); an IP literal the policy refuses is refused at once (whatever the scheme).
//!   Host names are checked again after DNS resolution, at every connection, by the SSRF guard.
//! - `eventTypes`: 1 to [`MAX_EVENT_TYPES`] globs ([`EventTypeGlob`]), no glob twice.
//! - `description`: optional, at most [`MAX_DESCRIPTION_CHARS`] characters.
//! - no other field.
//!
//! # Shared across replicas
//! The subscriptions live in the store. A change made here refreshes this process's
//! destination cache at once; the engine's sweeper refreshes it every second
//! ([`DeliveryEngine::refresh_destinations`]), so another replica routes to a new subscription
//! (and stops routing to a deleted one) within about a second.
//!
//! # Producers
//! Producers build their message with [`webhook_message`] (body `{"type", "timestamp",
//! "data"}`, a fresh message id, the idempotency key) and hand it to
//! [`DeliveryEngine::enqueue_for`] with [`DestinationKind::Webhook`] inside their transaction:
//! reservation changes (`callback.reservation.*`) and target changes (`gateway.target.updated`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use url::{Host, Url};
use uuid::Uuid;
use wildmatch::WildMatch;

use super::destination::Origin;
use super::signing::generate_secret;
use super::{
    DeliveryEngine, DestinationKind, OutboundMessage, RetryPolicy, TargetAuth, TargetConfig,
    TargetStatus, purpose,
};
use crate::config::BackoffStrategy;
use crate::error::{ApiError, ErrorDetail, ErrorLog};
use crate::store::{AuditRecord, DestinationRow, Page, PageRequest, StoreError, Transaction};
use crate::telemetry::RequestId;
use crate::upstream::{NetworkPolicy, is_internal};

pub use super::signing::SECRET_PREFIX;
/// How long the secret replaced by a rotation keeps signing.
pub const SECRET_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest `url`.
pub const MAX_URL_CHARS: usize = 2048;
/// Most globs in `eventTypes`.
pub const MAX_EVENT_TYPES: usize = 50;
/// Longest glob.
pub const MAX_GLOB_CHARS: usize = 200;
/// Longest `description`.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Every webhook delivery retries this way: EXPONENTIAL, 5 s initial, 10 retries.
pub const WEBHOOK_RETRY_POLICY: RetryPolicy = RetryPolicy {
    max_retries: 10,
    backoff_strategy: BackoffStrategy::Exponential,
    initial_delay_seconds: 5,
};
/// The audit actor of changes made through the admin API.
const ACTOR_ADMIN: &str = "admin";

/// A subscription's id (a UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct WebhookId(pub Uuid);

impl WebhookId {
    /// A new random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// Reads an id (a path segment, a stored id).
    ///
    /// # Errors
    /// [`WebhookError::NotFound`] for text that is not an id (no subscription can have it).
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        Uuid::parse_str(text)
            .map(Self)
            .map_err(|_| WebhookError::NotFound)
    }
}

impl Default for WebhookId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for WebhookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An event-type glob: dot-separated event type text (`a-z`, `A-Z`, `0-9`, `.`, `_`, `-`) in
/// which `*` stands for any run of characters (dots included) and `?` for one character.
/// `callback.reservation.*` matches `callback.reservation.created`; `gateway.*` matches
/// `gateway.target.updated`; `*` matches everything. Matching is case-sensitive.
#[derive(Debug, Clone)]
pub struct EventTypeGlob {
    text: String,
    matcher: WildMatch,
}

/// Why a text is not an [`EventTypeGlob`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGlob {
    /// Empty.
    #[error("an event type glob cannot be empty")]
    Empty,
    /// Longer than [`MAX_GLOB_CHARS`].
    #[error("an event type glob is at most {MAX_GLOB_CHARS} characters")]
    TooLong,
    /// A character outside the grammar.
    #[error(
        "an event type glob holds only letters, digits, `.`, `_`, `-` and the wildcards `*` and `?` (found {0:?})"
    )]
    Character(char),
    /// An empty segment (`..`, or a dot at either end).
    #[error("an event type glob has no empty segment (no `..` and no dot at either end)")]
    EmptySegment,
}

impl EventTypeGlob {
    /// Reads a glob.
    ///
    /// # Errors
    /// [`InvalidGlob`] naming the broken rule.
    pub fn parse(text: &str) -> Result<Self, InvalidGlob> {
        if text.is_empty() {
            return Err(InvalidGlob::Empty);
        }
        if text.chars().count() > MAX_GLOB_CHARS {
            return Err(InvalidGlob::TooLong);
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?')))
        {
            return Err(InvalidGlob::Character(bad));
        }
        if text.split('.').any(str::is_empty) {
            return Err(InvalidGlob::EmptySegment);
        }
        Ok(Self {
            text: text.to_owned(),
            matcher: WildMatch::new(text),
        })
    }

    /// Whether `event_type` matches.
    pub fn matches(&self, event_type: &str) -> bool {
        self.matcher.matches(event_type)
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}
/// The message every webhook carries: body `{"type": event_type, "timestamp": now (RFC 3339
/// UTC, milliseconds), "data": data}`, a fresh message id (UUIDv7) and an idempotency key made
/// from it. Producers hand it to [`super::DeliveryEngine::enqueue`] inside their transaction.
///
/// # Errors
/// When `data` cannot be written as JSON (a map with non-string keys; never for the gateway's
/// own types).
pub fn webhook_message(
    event_type: &str,
    data: &impl Serialize,
    now: DateTime<Utc>,
) -> Result<OutboundMessage, serde_json::Error> {
    #[derive(Serialize)]
    struct Envelope<'a, T: Serialize + ?Sized> {
        #[serde(rename = "type")]
        event_type: &'a str,
        timestamp: String,
        data: &'a T,
    }
    let body = serde_json::to_vec(&Envelope {
        event_type,
        timestamp: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        data,
    })?;
    let id = Uuid::now_v7();
    Ok(OutboundMessage {
        id,
        event_type: event_type.to_owned(),
        idempotency_key: format!("msg_{}", id.simple()),
        body: Bytes::from(body),
    })
}

/// A subscription as the API shows it (never its secrets).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Its id.
    pub id: WebhookId,
    /// Where deliveries go.
    pub url: String,
    /// The globs it subscribes to.
    pub event_types: Vec<String>,
    /// The operator's description (`""` when none was given).
    pub description: String,
    /// When it was created (RFC 3339 UTC, milliseconds).
    pub created_at: String,
}

/// The answer that creates a subscription: the subscription and, this once, its secret.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhook {
    /// The subscription.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// Its signing secret (`whsec_...`), shown only here.
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
}

/// The answer of a rotation: the new secret, shown only here.
#[derive(Debug, Serialize)]
pub struct RotatedSecret {
    /// The new signing secret (`whsec_...`).
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
}

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

/// A subscription request that passed every rule (see the module docs).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    url: Url,
    event_types: Vec<EventTypeGlob>,
    description: String,
}

impl NewWebhook {
    /// Checks a `POST /admin/v1/webhooks` body against every rule, `policy` deciding which
    /// private addresses `url` may name.
    ///
    /// # Errors
    /// [`WebhookError::Invalid`] with one detail per violated field.
    pub fn from_value(body: &Value, policy: &NetworkPolicy) -> Result<Self, WebhookError> {
        let mut details = Vec::new();
        let Some(object) = body.as_object() else {
            return Err(WebhookError::Invalid(vec![ErrorDetail::new(
                "",
                "type",
                "The body is a JSON object {\"url\", \"eventTypes\", \"description\"}.",
            )]));
        };
        for key in object.keys() {
            if !matches!(key.as_str(), "url" | "eventTypes" | "description") {
                details.push(ErrorDetail::new(
                    format!("/{}", crate::error::escape_pointer(key)),
                    "additionalProperties",
                    "A subscription has no such field (it has `url`, `eventTypes`, `description`).",
                ));
            }
        }
        let url = match object.get("url") {
            None | Some(Value::Null) => {
                details.push(ErrorDetail::new("/url", "required", "`url` is required."));
                None
            }
            Some(Value::String(text)) => match check_url(text, policy) {
                Ok(url) => Some(url),
                Err((code, message)) => {
                    details.push(ErrorDetail::new("/url", code, message));
                    None
                }
            },
            Some(_) => {
                details.push(ErrorDetail::new("/url", "type", "`url` is a string."));
                None
            }
        };
        let event_types = match object.get("eventTypes") {
            None | Some(Value::Null) => {
                details.push(ErrorDetail::new(
                    "/eventTypes",
                    "required",
                    "`eventTypes` is required: a list of event type globs.",
                ));
                None
            }
            Some(Value::Array(items)) => check_event_types(items, &mut details),
            Some(_) => {
                details.push(ErrorDetail::new(
                    "/eventTypes",
                    "type",
                    "`eventTypes` is a list of event type globs.",
                ));
                None
            }
        };
        let description = match object.get("description") {
            None | Some(Value::Null) => Some(String::new()),
            Some(Value::String(text)) if text.chars().count() > MAX_DESCRIPTION_CHARS => {
                details.push(ErrorDetail::new(
                    "/description",
                    "maxLength",
                    format!("`description` is at most {MAX_DESCRIPTION_CHARS} characters."),
                ));
                None
            }
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                details.push(ErrorDetail::new(
                    "/description",
                    "type",
                    "`description` is a string.",
                ));
                None
            }
        };
        match (url, event_types, description) {
            (Some(url), Some(event_types), Some(description)) if details.is_empty() => Ok(Self {
                url,
                event_types,
                description,
            }),
            _ => Err(WebhookError::Invalid(details)),
        }
    }
}

fn check_event_types(
    items: &[Value],
    details: &mut Vec<ErrorDetail>,
) -> Option<Vec<EventTypeGlob>> {
    let before = details.len();
    if items.is_empty() {
        details.push(ErrorDetail::new(
            "/eventTypes",
            "minItems",
            "`eventTypes` holds at least one glob.",
        ));
    }
    if items.len() > MAX_EVENT_TYPES {
        details.push(ErrorDetail::new(
            "/eventTypes",
            "maxItems",
            format!("`eventTypes` holds at most {MAX_EVENT_TYPES} globs."),
        ));
    }
    let mut globs = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate().take(MAX_EVENT_TYPES) {
        let pointer = format!("/eventTypes/{i}");
        match item {
            Value::String(text) => match EventTypeGlob::parse(text) {
                Ok(glob) if !seen.insert(text.clone()) => {
                    let _ = glob;
                    details.push(ErrorDetail::new(
                        pointer,
                        "uniqueItems",
                        "This glob is listed twice.",
                    ));
                }
                Ok(glob) => globs.push(glob),
                Err(err) => details.push(ErrorDetail::new(pointer, "pattern", err.to_string())),
            },
            _ => details.push(ErrorDetail::new(pointer, "type", "A glob is a string.")),
        }
    }
    (details.len() == before).then_some(globs)
}

/// Checks `url` against the URL rules (see the module docs): the URL, or the detail's error
/// code and message.
fn check_url(text: &str, policy: &NetworkPolicy) -> Result<Url, (&'static str, String)> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err((
            "maxLength",
            format!("`url` is at most {MAX_URL_CHARS} characters."),
        ));
    }
    let url = Url::parse(text)
        .map_err(|err| ("format", format!("`url` is not an absolute URL ({err}).")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(("format", "`url` is an https URL.".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err((
            "format",
            "`url` carries no user name or password (deliveries are signed instead).".to_owned(),
        ));
    }
    if url.fragment().is_some() {
        return Err(("format", "`url` has no fragment (`#...`).".to_owned()));
    }
    let ips: Vec<std::net::IpAddr> = match url.host() {
        None => return Err(("format", "`url` names a host.".to_owned())),
        Some(Host::Ipv4(ip)) => vec![ip.into()],
        Some(Host::Ipv6(ip)) => vec![ip.into()],
        Some(Host::Domain(name)) if name.eq_ignore_ascii_case("localhost") => vec![
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ],
        Some(Host::Domain(_)) => Vec::new(),
    };
    if !ips.is_empty() && !ips.iter().any(|ip| policy.permits(*ip)) {
        return Err((
            "network",
            "`url` names a private, loopback or link-local address, which `[delivery] \
             allow_private_networks` / `allow_cidrs` do not allow."
                .to_owned(),
        ));
    }
    if url.scheme() == "http" && !ips.iter().any(|ip| is_internal(*ip) && policy.permits(*ip)) {
        return Err((
            "format",
            "`url` is an https URL (http only to an allowed private network address).".to_owned(),
        ));
    }
    Ok(url)
}

/// Webhook subscription failures, each with its answer.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The request broke rules (400 `invalid.input`, one detail per field).
    #[error("the subscription is not valid")]
    Invalid(Vec<ErrorDetail>),
    /// No such subscription (404).
    #[error("no such webhook subscription")]
    NotFound,
    /// The store failed (500; an invalid cursor is a 400).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored subscription cannot be read (500).
    #[error("stored webhook subscription {0} is corrupt")]
    Corrupt(String),
}

impl From<WebhookError> for ApiError {
    fn from(err: WebhookError) -> Self {
        match err {
            WebhookError::Invalid(details) => {
                ApiError::invalid_input("The webhook subscription is not valid.", details)
            }
            WebhookError::NotFound => ApiError::not_found("No such webhook subscription."),
            WebhookError::Store(StoreError::InvalidCursor) => {
                ApiError::bad_request("`cursor` is not valid.")
            }
            err => ApiError::internal().with_log(
                ErrorLog::new(
                    tracing::Level::ERROR,
                    "webhook subscription operation failed",
                )
                .error(&err),
            ),
        }
    }
}

impl axum::response::IntoResponse for WebhookError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}

fn millis(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn millis_of(ms: i64) -> String {
    millis(DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

/// The API view of a stored subscription (a destination of kind `webhook`).
fn view_of(row: &DestinationRow) -> Result<Webhook, WebhookError> {
    let corrupt = || WebhookError::Corrupt(row.id.clone());
    let config = TargetConfig::from_stored(&row.config).ok_or_else(corrupt)?;
    Ok(Webhook {
        id: WebhookId::parse(&row.id).map_err(|_| corrupt())?,
        url: config.endpoint_url,
        event_types: config.event_types,
        description: config.description,
        created_at: millis_of(row.created_ms),
    })
}

/// The audit record of a change made at `at`.
fn audit(kind: &str, id: WebhookId, at: DateTime<Utc>, detail: Value) -> AuditRecord {
    let mut record = AuditRecord::now(kind, ACTOR_ADMIN, "success")
        .with_subject(id.to_string())
        .with_detail(detail);
    record.at = at;
    if let Some(request) = RequestId::current() {
        record = record.with_request_id(&*request);
    }
    record
}

/// The host of a stored URL (what audit records name; never its path or query).
fn host_of(url: &str) -> Option<String> {
    Url::parse(url).ok()?.host_str().map(str::to_owned)
}

/// The webhook subscriptions (cheap to clone): their admin operations over the delivery
/// engine's destinations (see the module docs).
#[derive(Clone, Debug)]
pub struct Webhooks {
    engine: DeliveryEngine,
}

impl Webhooks {
    /// The subscriptions kept as destinations of `engine`.
    pub fn new(engine: DeliveryEngine) -> Self {
        Self { engine }
    }

    /// The network policy subscription URLs are checked against (`[delivery]`'s).
    pub fn network_policy(&self) -> &NetworkPolicy {
        self.engine.network_policy()
    }

    /// After a change committed here: this process routes by it at once (on failure the
    /// sweeper's refresh catches up; the change itself is committed).
    async fn after_change(&self) {
        if let Err(err) = self.engine.refresh_destinations().await {
            tracing::warn!(error = %err, "the delivery destinations were not read again after a webhook change; the sweeper will");
        }
        self.engine.wake();
    }

    /// The live subscription `id`, locked in `tx`.
    async fn locked(tx: &mut Transaction, id: WebhookId) -> Result<DestinationRow, WebhookError> {
        tx.destination_for_update(&id.to_string())
            .await?
            .filter(|r| r.kind == DestinationKind::Webhook.as_str())
            .ok_or(WebhookError::NotFound)
    }

    /// Creates a subscription (audited `webhook.created`): it and its secret.
    ///
    /// # Errors
    /// [`WebhookError::Store`].
    pub async fn create(&self, new: NewWebhook) -> Result<CreatedWebhook, WebhookError> {
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let id = WebhookId::new();
        let secret = generate_secret();
        let event_types: Vec<String> = new
            .event_types
            .iter()
            .map(|g| g.as_str().to_owned())
            .collect();
        let config = TargetConfig {
            endpoint_url: new.url.to_string(),
            auth: TargetAuth::None,
            retry_policy: WEBHOOK_RETRY_POLICY,
            headers: BTreeMap::new(),
            event_types: event_types.clone(),
            description: new.description,
        };
        let row = DestinationRow {
            id: id.to_string(),
            kind: DestinationKind::Webhook.as_str().to_owned(),
            origin: Origin::Api.as_str().to_owned(),
            // Names are unique per kind; a subscription is known by its id.
            name: id.to_string(),
            config: config.to_stored(),
            config_hash: config.fingerprint(&secret),
            secret: secret.clone(),
            previous_secret: None,
            previous_secret_until_ms: None,
            status: TargetStatus::Verified.as_str().to_owned(),
            status_reason: None,
            verification_id: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        let record = audit(
            "webhook.created",
            id,
            now,
            serde_json::json!({
                "host": new.url.host_str(),
                "eventTypes": event_types,
            }),
        );
        let mut tx = self.engine.store().begin().await?;
        tx.insert_destination(&row).await?;
        tx.append_audit(&record).await?;
        tx.commit().await?;
        self.after_change().await;
        Ok(CreatedWebhook {
            webhook: view_of(&row)?,
            secret,
        })
    }

    /// The subscription `id` (the path segment as sent).
    ///
    /// # Errors
    /// [`WebhookError::NotFound`], [`WebhookError::Store`].
    pub async fn get(&self, id: &str) -> Result<Webhook, WebhookError> {
        let id = WebhookId::parse(id)?;
        let row = self
            .engine
            .store()
            .destination(&id.to_string())
            .await?
            .filter(|r| r.kind == DestinationKind::Webhook.as_str())
            .ok_or(WebhookError::NotFound)?;
        view_of(&row)
    }

    /// Subscriptions, newest first.
    ///
    /// # Errors
    /// [`WebhookError::Store`] (an invalid cursor is `StoreError::InvalidCursor`, a 400).
    pub async fn list(&self, page: &PageRequest) -> Result<Page<Webhook>, WebhookError> {
        let rows = self
            .engine
            .store()
            .list_destinations(DestinationKind::Webhook.as_str(), page)
            .await?;
        Ok(Page {
            entities: rows
                .entities
                .iter()
                .map(view_of)
                .collect::<Result<_, _>>()?,
            next_cursor: rows.next_cursor,
        })
    }

    /// Deletes the subscription `id` (audited `webhook.deleted`): nothing more is enqueued for
    /// it and its pending deliveries are dead ("subscription deleted").
    ///
    /// # Errors
    /// [`WebhookError::NotFound`], [`WebhookError::Store`].
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let id = WebhookId::parse(id)?;
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let mut tx = self.engine.store().begin().await?;
        let row = Self::locked(&mut tx, id).await?;
        let host = TargetConfig::from_stored(&row.config).and_then(|c| host_of(&c.endpoint_url));
        tx.delete_destination(&row.id, now_ms).await?;
        let dead = tx
            .kill_pending_deliveries(&row.id, purpose::EVENT, "subscription deleted", now_ms)
            .await?;
        tx.append_audit(&audit(
            "webhook.deleted",
            id,
            now,
            serde_json::json!({ "host": host, "deliveriesDead": dead }),
        ))
        .await?;
        tx.commit().await?;
        self.after_change().await;
        Ok(())
    }

    /// Gives the subscription `id` a new secret (audited `webhook.secret_rotated`); the one it
    /// replaces keeps signing for [`SECRET_OVERLAP`].
    ///
    /// # Errors
    /// [`WebhookError::NotFound`], [`WebhookError::Store`], [`WebhookError::Corrupt`].
    pub async fn rotate_secret(&self, id: &str) -> Result<RotatedSecret, WebhookError> {
        let id = WebhookId::parse(id)?;
        let now = Utc::now();
        let overlap =
            chrono::Duration::from_std(SECRET_OVERLAP).unwrap_or_else(|_| chrono::Duration::zero());
        let until = now + overlap;
        let secret = generate_secret();
        let mut tx = self.engine.store().begin().await?;
        let mut row = Self::locked(&mut tx, id).await?;
        let config = TargetConfig::from_stored(&row.config)
            .ok_or_else(|| WebhookError::Corrupt(row.id.clone()))?;
        row.previous_secret = Some(std::mem::replace(&mut row.secret, secret.clone()));
        row.previous_secret_until_ms = Some(until.timestamp_millis());
        row.config_hash = config.fingerprint(&secret);
        row.updated_ms = now.timestamp_millis();
        tx.update_destination(&row).await?;
        tx.append_audit(&audit(
            "webhook.secret_rotated",
            id,
            now,
            serde_json::json!({ "previousSecretValidUntil": millis(until) }),
        ))
        .await?;
        tx.commit().await?;
        self.after_change().await;
        Ok(RotatedSecret { secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> EventTypeGlob {
        EventTypeGlob::parse(text).unwrap()
    }

    #[test]
    fn globs_match_event_types() {
        let reservations = glob("callback.reservation.*");
        assert!(reservations.matches("callback.reservation.created"));
        assert!(reservations.matches("callback.reservation.canceled"));
        assert!(!reservations.matches("callback.reservation"));
        assert!(!reservations.matches("gateway.target.updated"));
        assert!(!reservations.matches("xcallback.reservation.created"));

        let gateway = glob("gateway.*");
        assert!(gateway.matches("gateway.target.updated"));
        assert!(gateway.matches("gateway.target.verification"));
        assert!(!gateway.matches("callback.reservation.created"));

        assert!(glob("*").matches("anything.at.all"));
        assert!(glob("callback.reservation.created").matches("callback.reservation.created"));
        assert!(!glob("callback.reservation.created").matches("callback.reservation.updated"));
        assert!(glob("callback.reservation.?pdated").matches("callback.reservation.updated"));
        assert!(!glob("Callback.*").matches("callback.reservation.created"));
        assert!(glob("*.target.*").matches("gateway.target.updated"));
    }

    #[test]
    fn bad_globs_are_refused_with_their_reason() {
        assert_eq!(EventTypeGlob::parse("").unwrap_err(), InvalidGlob::Empty);
        assert_eq!(
            EventTypeGlob::parse("callback reservation").unwrap_err(),
            InvalidGlob::Character(' ')
        );
        assert_eq!(
            EventTypeGlob::parse("callback/*").unwrap_err(),
            InvalidGlob::Character('/')
        );
        assert_eq!(
            EventTypeGlob::parse("callback..*").unwrap_err(),
            InvalidGlob::EmptySegment
        );
        assert_eq!(
            EventTypeGlob::parse(".callback").unwrap_err(),
            InvalidGlob::EmptySegment
        );
        assert_eq!(
            EventTypeGlob::parse(&"a".repeat(MAX_GLOB_CHARS + 1)).unwrap_err(),
            InvalidGlob::TooLong
        );
        assert!(EventTypeGlob::parse(&"a".repeat(MAX_GLOB_CHARS)).is_ok());
    }

    #[test]
    fn the_message_is_type_timestamp_data() {
        let at = DateTime::parse_from_rfc3339("2027-03-15T13:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let data = serde_json::json!({"id": "r-1", "amount": 12.50});
        let message = webhook_message("callback.reservation.created", &data, at).unwrap();
        let other = webhook_message("callback.reservation.created", &data, at).unwrap();
        assert_ne!(message.id, other.id, "a fresh id each time");
        assert_ne!(message.idempotency_key, other.idempotency_key);
        assert_eq!(message.event_type, "callback.reservation.created");
        let body: Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "callback.reservation.created",
                "timestamp": "2027-03-15T13:00:00.500Z",
                "data": {"id": "r-1", "amount": 12.50},
            })
        );
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 3);
    }

    fn guarded(allow_private: bool, cidrs: &[&str]) -> NetworkPolicy {
        NetworkPolicy::Guarded {
            allow_private,
            allow_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn url_rules() {
        let strict = guarded(false, &[]);
        assert!(check_url("https://hooks.example.com/in?x=1", &strict).is_ok());
        let code = |url: &str, policy: &NetworkPolicy| check_url(url, policy).unwrap_err().0;
        assert_eq!(code("http://hooks.example.com/in", &strict), "format");
        assert_eq!(code("ftp://hooks.example.com/in", &strict), "format");
        assert_eq!(code("hooks.example.com/in", &strict), "format");
        assert_eq!(code("https://u:p@hooks.example.com/in", &strict), "format");
        assert_eq!(code("https://hooks.example.com/in#x", &strict), "format");
        assert_eq!(code("https://127.0.0.1/in", &strict), "network");
        assert_eq!(code("http://127.0.0.1:9/in", &strict), "network");
        assert_eq!(code("https://169.254.169.254/", &strict), "network");
        assert_eq!(code("https://[::1]/", &strict), "network");
        assert_eq!(code("http://localhost:8080/", &strict), "network");
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(code(&long, &strict), "maxLength");

        let loopback = guarded(false, &["127.0.0.0/8"]);
        assert!(check_url("http://127.0.0.1:9/in", &loopback).is_ok());
        assert!(check_url("http://localhost:9/in", &loopback).is_ok());
        assert_eq!(code("http://10.0.0.1/in", &loopback), "network");
        let open = guarded(true, &[]);
        assert!(check_url("http://10.0.0.1/in", &open).is_ok());
        assert_eq!(
            code("http://8.8.8.8/in", &open),
            "format",
            "http only to a private network"
        );
        assert_eq!(code("http://hooks.example.com/in", &open), "format");
    }

    #[test]
    fn every_violated_field_is_named() {
        let strict = guarded(false, &[]);
        let err = NewWebhook::from_value(
            &serde_json::json!({
                "url": "http://hooks.example.com",
                "eventTypes": ["ok.*", "bad glob", 3, "ok.*"],
                "description": "d".repeat(MAX_DESCRIPTION_CHARS + 1),
                "secret": "whsec_mine",
            }),
            &strict,
        )
        .unwrap_err();
        let WebhookError::Invalid(details) = err else {
            panic!("{err:?}")
        };
        let fields: Vec<(&str, &str)> = details
            .iter()
            .map(|d| (d.field_name.as_str(), d.error_code.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("/secret", "additionalProperties"),
                ("/url", "format"),
                ("/eventTypes/1", "pattern"),
                ("/eventTypes/2", "type"),
                ("/eventTypes/3", "uniqueItems"),
                ("/description", "maxLength"),
            ]
        );
        let WebhookError::Invalid(details) =
            NewWebhook::from_value(&serde_json::json!({"eventTypes": []}), &strict).unwrap_err()
        else {
            panic!()
        };
        let fields: Vec<(&str, &str)> = details
            .iter()
            .map(|d| (d.field_name.as_str(), d.error_code.as_str()))
            .collect();
        assert_eq!(fields, [("/url", "required"), ("/eventTypes", "minItems")]);
        let ok = NewWebhook::from_value(
            &serde_json::json!({"url": "https://hooks.example.com/in", "eventTypes": ["*"]}),
            &strict,
        )
        .unwrap();
        assert_eq!(ok.description, "");
    }
}
