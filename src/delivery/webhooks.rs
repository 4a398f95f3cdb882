//! Webhook subscriptions: external systems subscribe a URL to event types (globs such as
//! `callback.reservation.*` or `gateway.target.*`) and receive every matching event, signed
//! (Standard Webhooks), through the durable delivery engine.
//!
//! This module owns the subscriptions — what a valid one is, their signing secrets and
//! rotation, the routing of an event type to the subscriptions that want it, and the payload
//! every webhook carries — not the delivery itself: the engine stores, signs, sends and retries.
//!
//! # Subscriptions
//! `{id, url, eventTypes, description, createdAt}` plus a signing secret `whsec_<base64 of 32
//! random bytes>`, shown only in the answers that create it (`POST /admin/v1/webhooks` and
//! `POST /admin/v1/webhooks/{id}/rotate-secret`). A rotation keeps the previous secret signing
//! for [`SECRET_OVERLAP`] (24 h) beside the new one, so that a subscriber can switch at its own
//! pace; a second rotation within that time drops the oldest. Every change is audited in its
//! own transaction (`webhook.created`, `webhook.deleted`, `webhook.secret_rotated`) without any
//! secret, and without the URL's path or query (which may carry a subscriber's token): the
//! detail names the host and the event types.
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
//! The subscriptions live in the store. Each process keeps a routing cache (the subscriptions
//! with their compiled globs and secrets) in a [`WebhookRegistry`]: replaced at once after a
//! change made through this process, and checked every [`REFRESH_INTERVAL`] against the
//! store's change counter (one row) by [`WebhookRegistry::run_refresh`], so that a change made
//! on another replica is seen within seconds.
//!
//! # The interface of the delivery engine
//! - At enqueue time (inside the producer's transaction): [`WebhookRegistry::matching`]
//!   gives, from the cache and without a query, the subscriptions whose globs match the
//!   message's `event_type` — one delivery per [`WebhookRoute`] (its id and URL).
//! - At delivery time: [`WebhookRegistry::destination`] gives what an attempt needs — the URL,
//!   the secrets that sign *now* (newest first; each gives one `v1,<signature>` entry of
//!   `webhook-signature`, space-separated), the retry policy ([`WEBHOOK_RETRY_POLICY`]:
//!   EXPONENTIAL, 5 s initial, 10 retries) and the network policy (always guarded: these URLs
//!   came through the API). `Ok(None)` means the subscription was deleted: its pending
//!   deliveries end `dead` ("subscription deleted"). A cache miss is looked up in the store
//!   (a subscription just created on another replica), so a miss never loses a delivery.
//! - Producers build their message with [`webhook_message`]: body `{"type", "timestamp",
//!   "data"}`, a fresh message id, the idempotency key.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::{Host, Url};
use uuid::Uuid;
use wildmatch::WildMatch;

use super::OutboundMessage;
use crate::config::{BackoffStrategy, DeliverySettings, RetryPolicySettings};
use crate::error::{ApiError, ErrorDetail, ErrorLog};
use crate::store::{AuditRecord, Page, PageRequest, Store, StoreError, WebhookRow};
use crate::telemetry::RequestId;
use crate::upstream::{NetworkPolicy, is_internal};

/// How long the secret replaced by a rotation keeps signing.
pub const SECRET_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);
/// How often a process compares its routing cache with the store's change counter.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// Random bytes of a signing secret (Standard Webhooks asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;
/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Longest `url`.
pub const MAX_URL_CHARS: usize = 2048;
/// Most globs in `eventTypes`.
pub const MAX_EVENT_TYPES: usize = 50;
/// Longest glob.
pub const MAX_GLOB_CHARS: usize = 200;
/// Longest `description`.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Every webhook delivery retries this way: EXPONENTIAL, 5 s initial, 10 retries.
pub const WEBHOOK_RETRY_POLICY: RetryPolicySettings = RetryPolicySettings {
    max_retries: 10,
    backoff: BackoffStrategy::Exponential,
    initial_delay_s: 5,
};
/// The audit actor of changes made through the admin API.
const ACTOR_ADMIN: &str = "admin";

/// Where the registry reads the time: the system clock unless a test injects another.
pub type WallClock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

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

/// A new signing secret: `whsec_` + base64 of [`SECRET_BYTES`] random bytes.
pub fn generate_secret() -> SecretString {
    let mut key = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut key);
    let secret = SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)));
    key.fill(0);
    secret
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

/// What the engine needs at enqueue time: a matching subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRoute {
    /// The subscription (the delivery's destination id).
    pub id: WebhookId,
    /// Its URL when the event was routed.
    pub url: Url,
}

/// What the engine needs at delivery time.
#[derive(Debug, Clone)]
pub struct WebhookDestination {
    /// The subscription.
    pub id: WebhookId,
    /// Where to POST.
    pub url: Url,
    /// The secrets that sign now, newest first (one, or two during a rotation's overlap).
    pub secrets: Vec<SecretString>,
    /// How failed attempts are retried ([`WEBHOOK_RETRY_POLICY`]).
    pub retry: RetryPolicySettings,
    /// Which addresses the connection may reach (always guarded).
    pub network: NetworkPolicy,
}

/// One subscription in the routing cache.
struct Cached {
    id: WebhookId,
    url: Url,
    globs: Vec<EventTypeGlob>,
    secret: SecretString,
    previous: Option<(SecretString, DateTime<Utc>)>,
}

impl Cached {
    fn from_row(row: &WebhookRow) -> Result<Self, WebhookError> {
        let corrupt = || WebhookError::Corrupt(row.id.clone());
        let id = WebhookId::parse(&row.id).map_err(|_| corrupt())?;
        let url = Url::parse(&row.url).map_err(|_| corrupt())?;
        let texts: Vec<String> = serde_json::from_str(&row.event_types).map_err(|_| corrupt())?;
        let globs = texts
            .iter()
            .map(|t| EventTypeGlob::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt())?;
        let previous = match (&row.previous_secret, row.previous_expires_ms) {
            (Some(secret), Some(ms)) => {
                DateTime::from_timestamp_millis(ms).map(|until| (secret.clone(), until))
            }
            _ => None,
        };
        Ok(Self {
            id,
            url,
            globs,
            secret: row.secret.clone(),
            previous,
        })
    }

    fn destination(&self, now: DateTime<Utc>, network: &NetworkPolicy) -> WebhookDestination {
        let mut secrets = vec![self.secret.clone()];
        if let Some((previous, until)) = &self.previous
            && now < *until
        {
            secrets.push(previous.clone());
        }
        WebhookDestination {
            id: self.id,
            url: self.url.clone(),
            secrets,
            retry: WEBHOOK_RETRY_POLICY,
            network: network.clone(),
        }
    }
}

/// The routing cache: the subscriptions as of the store's change counter `version`.
struct Routes {
    version: i64,
    subscriptions: Vec<Cached>,
}

struct Inner {
    store: Store,
    network: NetworkPolicy,
    clock: WallClock,
    routes: ArcSwap<Routes>,
    /// One reload at a time (a local change and the periodic check may race).
    reload: tokio::sync::Mutex<()>,
}

/// The webhook subscriptions of the process: their admin operations and the routing the
/// delivery engine asks (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct WebhookRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WebhookRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes = self.inner.routes.load();
        f.debug_struct("WebhookRegistry")
            .field("version", &routes.version)
            .field("subscriptions", &routes.subscriptions.len())
            .finish_non_exhaustive()
    }
}

/// The network policy of every webhook URL: guarded, with `[delivery]`'s exceptions.
pub fn network_policy(settings: &DeliverySettings) -> NetworkPolicy {
    NetworkPolicy::Guarded {
        allow_private: settings.allow_private_networks,
        allow_cidrs: settings.allow_cidrs.clone(),
    }
}

fn millis(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn view_of(row: &WebhookRow) -> Result<Webhook, WebhookError> {
    let corrupt = || WebhookError::Corrupt(row.id.clone());
    Ok(Webhook {
        id: WebhookId::parse(&row.id).map_err(|_| corrupt())?,
        url: row.url.clone(),
        event_types: serde_json::from_str(&row.event_types).map_err(|_| corrupt())?,
        description: row.description.clone(),
        created_at: millis(DateTime::from_timestamp_millis(row.created_ms).ok_or_else(corrupt)?),
    })
}

impl WebhookRegistry {
    /// The registry over `store`, its routing cache loaded. `network` is the policy of every
    /// subscription URL ([`network_policy`]); `clock` is the system clock unless given.
    ///
    /// # Errors
    /// [`WebhookError::Store`] when the subscriptions cannot be read,
    /// [`WebhookError::Corrupt`] when one cannot be understood.
    pub async fn load(
        store: Store,
        network: NetworkPolicy,
        clock: Option<WallClock>,
    ) -> Result<Self, WebhookError> {
        let registry = Self {
            inner: Arc::new(Inner {
                store,
                network,
                clock: clock.unwrap_or_else(|| Arc::new(Utc::now)),
                routes: ArcSwap::from_pointee(Routes {
                    version: -1,
                    subscriptions: Vec::new(),
                }),
                reload: tokio::sync::Mutex::new(()),
            }),
        };
        registry.reload().await?;
        Ok(registry)
    }

    fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    /// The subscriptions whose globs match `event_type`, from the routing cache (no query): one
    /// delivery each. The order is the subscriptions' creation order.
    pub fn matching(&self, event_type: &str) -> Vec<WebhookRoute> {
        self.inner
            .routes
            .load()
            .subscriptions
            .iter()
            .filter(|s| s.globs.iter().any(|g| g.matches(event_type)))
            .map(|s| WebhookRoute {
                id: s.id,
                url: s.url.clone(),
            })
            .collect()
    }

    /// What a delivery to the subscription `id` needs now (see the module docs); `None` when it
    /// no longer exists. Served from the routing cache; a miss is looked up in the store.
    ///
    /// # Errors
    /// [`WebhookError::Store`] when the look-up of a miss fails (retry the attempt later),
    /// [`WebhookError::Corrupt`] when the stored subscription cannot be understood.
    pub async fn destination(
        &self,
        id: WebhookId,
    ) -> Result<Option<WebhookDestination>, WebhookError> {
        let now = self.now();
        if let Some(cached) = self
            .inner
            .routes
            .load()
            .subscriptions
            .iter()
            .find(|s| s.id == id)
        {
            return Ok(Some(cached.destination(now, &self.inner.network)));
        }
        match self.inner.store.webhook(&id.to_string()).await? {
            Some(row) => Ok(Some(
                Cached::from_row(&row)?.destination(now, &self.inner.network),
            )),
            None => Ok(None),
        }
    }

    /// Reloads the routing cache when the store's change counter moved; whether it did.
    ///
    /// # Errors
    /// [`WebhookError::Store`], [`WebhookError::Corrupt`].
    pub async fn refresh(&self) -> Result<bool, WebhookError> {
        let version = self.inner.store.webhooks_version().await?;
        if version == self.inner.routes.load().version {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Reads every subscription into the routing cache.
    async fn reload(&self) -> Result<(), WebhookError> {
        let _one = self.inner.reload.lock().await;
        let (version, rows) = self.inner.store.all_webhooks().await?;
        let subscriptions = rows
            .iter()
            .map(Cached::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.inner.routes.store(Arc::new(Routes {
            version,
            subscriptions,
        }));
        Ok(())
    }

    /// After a change committed here: the cache is replaced at once (on failure the periodic
    /// check catches up; the change itself is committed).
    async fn changed(&self) {
        if let Err(err) = self.reload().await {
            tracing::warn!(error = %err, "webhook routing cache not reloaded after a change; the periodic check will");
        }
    }

    /// Checks the store's change counter every [`REFRESH_INTERVAL`] until `shutdown` (a
    /// background task of the application's): another replica's change is routed within
    /// seconds.
    pub async fn run_refresh(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(REFRESH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.refresh().await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("webhook routing cache refreshed again");
                }
                Ok(_) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "webhook routing cache cannot be refreshed; routing with the last one read");
                }
                Err(_) => {}
            }
        }
    }

    /// The audit record of a change made at `at` (the instant the change itself uses).
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

    /// Creates a subscription (audited `webhook.created`): it and its secret.
    ///
    /// # Errors
    /// [`WebhookError::Store`].
    pub async fn create(&self, new: NewWebhook) -> Result<CreatedWebhook, WebhookError> {
        let now = self.now();
        let id = WebhookId::new();
        let secret = generate_secret();
        let event_types: Vec<String> = new
            .event_types
            .iter()
            .map(|g| g.as_str().to_owned())
            .collect();
        let row = WebhookRow {
            id: id.to_string(),
            url: new.url.to_string(),
            event_types: serde_json::to_string(&event_types)
                .map_err(|err| WebhookError::Corrupt(err.to_string()))?,
            description: new.description,
            secret: secret.clone(),
            previous_secret: None,
            previous_expires_ms: None,
            created_ms: now.timestamp_millis(),
            updated_ms: now.timestamp_millis(),
        };
        let audit = Self::audit(
            "webhook.created",
            id,
            now,
            serde_json::json!({
                "host": new.url.host_str(),
                "eventTypes": event_types,
            }),
        );
        let mut tx = self.inner.store.begin().await?;
        tx.insert_webhook(&row).await?;
        tx.append_audit(&audit).await?;
        tx.bump_webhooks_version().await?;
        tx.commit().await?;
        self.changed().await;
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
            .inner
            .store
            .webhook(&id.to_string())
            .await?
            .ok_or(WebhookError::NotFound)?;
        view_of(&row)
    }

    /// Subscriptions, newest first.
    ///
    /// # Errors
    /// [`WebhookError::Store`] (an invalid cursor is `StoreError::InvalidCursor`, a 400).
    pub async fn list(&self, page: &PageRequest) -> Result<Page<Webhook>, WebhookError> {
        let rows = self.inner.store.list_webhooks(page).await?;
        Ok(Page {
            entities: rows
                .entities
                .iter()
                .map(view_of)
                .collect::<Result<_, _>>()?,
            next_cursor: rows.next_cursor,
        })
    }

    /// Deletes the subscription `id` (audited `webhook.deleted`); its pending deliveries end
    /// when the engine finds no destination.
    ///
    /// # Errors
    /// [`WebhookError::NotFound`], [`WebhookError::Store`].
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let id = WebhookId::parse(id)?;
        let mut tx = self.inner.store.begin().await?;
        let row = tx
            .webhook_for_update(&id.to_string())
            .await?
            .ok_or(WebhookError::NotFound)?;
        let url = Url::parse(&row.url).ok();
        let audit = Self::audit(
            "webhook.deleted",
            id,
            self.now(),
            serde_json::json!({ "host": url.as_ref().and_then(Url::host_str) }),
        );
        tx.delete_webhook(&id.to_string()).await?;
        tx.append_audit(&audit).await?;
        tx.bump_webhooks_version().await?;
        tx.commit().await?;
        self.changed().await;
        Ok(())
    }

    /// Gives the subscription `id` a new secret (audited `webhook.secret_rotated`); the one it
    /// replaces keeps signing for [`SECRET_OVERLAP`].
    ///
    /// # Errors
    /// [`WebhookError::NotFound`], [`WebhookError::Store`].
    pub async fn rotate_secret(&self, id: &str) -> Result<RotatedSecret, WebhookError> {
        let id = WebhookId::parse(id)?;
        let now = self.now();
        let until = now
            + chrono::Duration::from_std(SECRET_OVERLAP)
                .unwrap_or_else(|_| chrono::Duration::zero());
        let secret = generate_secret();
        let mut tx = self.inner.store.begin().await?;
        let mut row = tx
            .webhook_for_update(&id.to_string())
            .await?
            .ok_or(WebhookError::NotFound)?;
        row.previous_secret = Some(std::mem::replace(&mut row.secret, secret.clone()));
        row.previous_expires_ms = Some(until.timestamp_millis());
        row.updated_ms = now.timestamp_millis();
        let audit = Self::audit(
            "webhook.secret_rotated",
            id,
            now,
            serde_json::json!({ "previousSecretValidUntil": millis(until) }),
        );
        tx.update_webhook_secrets(&row).await?;
        tx.append_audit(&audit).await?;
        tx.bump_webhooks_version().await?;
        tx.commit().await?;
        self.changed().await;
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
    fn secrets_are_whsec_and_32_random_bytes() {
        let a = generate_secret();
        let b = generate_secret();
        let key = STANDARD
            .decode(a.expose_secret().strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(key.len(), SECRET_BYTES);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(!format!("{a:?}").contains(a.expose_secret()));
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
