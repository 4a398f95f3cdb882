//! Destinations as the engine holds them: a target's stored configuration ([`TargetConfig`]),
//! its status ([`TargetStatus`]), and the compiled form the workers send with
//! ([`Destination`]: parsed endpoint, header map, auth, event-type globs, signing keys).
//!
//! A destination is generic: a delivery target or a webhook subscription (its
//! [`DestinationKind`]); the engine only needs where to send, how to authenticate and sign,
//! which event types it takes and its retry policy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use wildmatch::WildMatch;

use super::signing::SigningKey;
use crate::backoff::{Backoff, Jitter};
use crate::config::{BackoffStrategy, ClientAuthMethod, RetryPolicySettings, TargetAuthSettings};
use crate::store::DestinationRow;
use crate::telemetry::Metrics;
use crate::upstream::{ClientCredentials, HttpClient, TokenSource};

/// The longest wait between two attempts (a `Retry-After` included).
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(3600);
/// How long a token fetch for an OAuth2 target may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What kind of destination a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestinationKind {
    /// A delivery target (`/admin/v1/targets`, `[[targets]]`).
    Target,
    /// A webhook subscription (`/admin/v1/webhooks`).
    Webhook,
}

impl DestinationKind {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Target => "target",
            Self::Webhook => "webhook",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "target" => Some(Self::Target),
            "webhook" => Some(Self::Webhook),
            _ => None,
        }
    }
}

/// Where a destination was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file (operator-trusted URLs; changed only by a reload).
    Config,
    /// The admin API (untrusted URLs: the SSRF guard applies).
    Api,
}

impl Origin {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Api => "api",
        }
    }

    /// Reads a stored name (anything unknown counts as untrusted).
    pub fn parse(text: &str) -> Self {
        if text == "config" {
            Self::Config
        } else {
            Self::Api
        }
    }
}

/// A target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetStatus {
    /// Waiting for its verification; deliveries wait.
    PendingVerification,
    /// Receives deliveries.
    Verified,
    /// Its verification failed; deliveries are created dead.
    Failed,
    /// It answered 410 Gone; deliveries are created dead.
    Disabled,
}

impl TargetStatus {
    /// The stored (and shown) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PendingVerification => "PENDING_VERIFICATION",
            Self::Verified => "VERIFIED",
            Self::Failed => "FAILED",
            Self::Disabled => "DISABLED",
        }
    }

    /// Reads a stored name (anything unknown counts as FAILED: nothing is sent to it).
    pub fn parse(text: &str) -> Self {
        match text {
            "PENDING_VERIFICATION" => Self::PendingVerification,
            "VERIFIED" => Self::Verified,
            "DISABLED" => Self::Disabled,
            _ => Self::Failed,
        }
    }
}

/// A retry policy: how many retries after the first attempt and how long to wait before each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt (0–10).
    pub max_retries: u32,
    /// EXPONENTIAL (`initial × 2^(n-1)`) or LINEAR (`initial × n`).
    pub backoff_strategy: BackoffStrategy,
    /// The wait before the first retry, seconds (1–30).
    pub initial_delay_seconds: u64,
}

impl RetryPolicy {
    /// The schedule: the policy's growth from the initial delay, ±20 % jitter, capped at 1 h.
    pub fn backoff(&self) -> Backoff {
        let base = Duration::from_secs(self.initial_delay_seconds);
        match self.backoff_strategy {
            BackoffStrategy::Exponential => {
                Backoff::exponential(base, MAX_RETRY_WAIT, Jitter::Proportional(0.2))
            }
            BackoffStrategy::Linear => {
                Backoff::linear(base, MAX_RETRY_WAIT, Jitter::Proportional(0.2))
            }
        }
    }

    /// The wait before retry `retry` (1 = the first): the schedule's, replaced by a longer
    /// `retry_after` (no jitter added), never above 1 h.
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let planned = self.backoff().delay(retry);
        match retry_after {
            Some(asked) if asked > planned => asked,
            _ => planned,
        }
        .min(MAX_RETRY_WAIT)
    }
}

impl From<RetryPolicySettings> for RetryPolicy {
    fn from(s: RetryPolicySettings) -> Self {
        Self {
            max_retries: s.max_retries,
            backoff_strategy: s.backoff,
            initial_delay_seconds: s.initial_delay_s,
        }
    }
}

fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// How deliveries authenticate to a target (stored with its credentials).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum TargetAuth {
    /// Nothing added.
    None,
    /// `Authorization: Basic`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        #[serde(serialize_with = "expose")]
        password: SecretString,
    },
    /// `Authorization: Bearer` with an OAuth2 client-credentials token.
    Oauth2 {
        /// Client id.
        #[serde(rename = "clientId")]
        client_id: String,
        /// Client secret.
        #[serde(rename = "clientSecret", serialize_with = "expose")]
        client_secret: SecretString,
        /// Token endpoint.
        #[serde(rename = "tokenUrl")]
        token_url: String,
    },
    /// `Authorization: Bearer <token>`.
    Jwt {
        /// The token.
        #[serde(serialize_with = "expose")]
        token: SecretString,
    },
}

impl TargetAuth {
    /// The `authType` name.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Basic { .. } => "BASIC",
            Self::Oauth2 { .. } => "OAUTH2",
            Self::Jwt { .. } => "JWT",
        }
    }

    /// The `authConfig` as the API shows it: never a password, secret or token.
    pub fn public_view(&self) -> serde_json::Value {
        match self {
            Self::None | Self::Jwt { .. } => serde_json::json!({}),
            Self::Basic { username, .. } => serde_json::json!({ "username": username }),
            Self::Oauth2 {
                client_id,
                token_url,
                ..
            } => serde_json::json!({ "clientId": client_id, "tokenUrl": token_url }),
        }
    }
}

impl From<&TargetAuthSettings> for TargetAuth {
    fn from(s: &TargetAuthSettings) -> Self {
        match s {
            TargetAuthSettings::None => Self::None,
            TargetAuthSettings::Basic { username, password } => Self::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            TargetAuthSettings::Oauth2 {
                client_id,
                client_secret,
                token_url,
            } => Self::Oauth2 {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                token_url: token_url.clone(),
            },
            TargetAuthSettings::Jwt { token } => Self::Jwt {
                token: token.clone(),
            },
        }
    }
}

/// A target's configuration as stored (`delivery_destinations.config`, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetConfig {
    /// Where deliveries are POSTed.
    pub endpoint_url: String,
    /// How they authenticate.
    pub auth: TargetAuth,
    /// How failures are retried.
    pub retry_policy: RetryPolicy,
    /// Extra headers on every delivery.
    pub headers: BTreeMap<String, String>,
    /// Event type globs (`*` matches any run of characters).
    pub event_types: Vec<String>,
    /// The operator's description (webhook subscriptions; empty for targets).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl TargetConfig {
    /// The JSON text stored (credentials included).
    pub fn to_stored(&self) -> SecretString {
        SecretString::from(serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads the stored JSON text.
    pub fn from_stored(text: &SecretString) -> Option<Self> {
        serde_json::from_str(text.expose_secret()).ok()
    }

    /// Fingerprint of this configuration with `secret` (hex SHA-256): what tells a changed
    /// declarative target from the same one again.
    pub fn fingerprint(&self, secret: &SecretString) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(self.to_stored().expose_secret().as_bytes());
        hash.update([0]);
        hash.update(secret.expose_secret().as_bytes());
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How the compiled destination authenticates.
pub(crate) enum DestinationAuth {
    /// Nothing added.
    None,
    /// A fixed `Authorization` value (Basic, bearer), marked sensitive.
    Static(HeaderValue),
    /// An OAuth2 client-credentials token source with its shared cache.
    OAuth(Box<TokenSource>),
}

/// A destination compiled for sending (see the module docs).
pub(crate) struct Destination {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) kind: DestinationKind,
    pub(crate) origin: Origin,
    pub(crate) status: TargetStatus,
    pub(crate) config: TargetConfig,
    pub(crate) endpoint: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) auth: Arc<DestinationAuth>,
    globs: Vec<WildMatch>,
    /// Current key first, then the previous one while it still signs.
    keys: Vec<SigningKey>,
    previous_until_ms: Option<i64>,
    /// What the compiled form was built from (rebuilt when it changes).
    pub(crate) fingerprint: String,
    pub(crate) created_ms: i64,
    pub(crate) updated_ms: i64,
}

impl Destination {
    /// Compiles `row`; `reuse` is the compiled form of the same row before, whose auth (and its
    /// token cache) is kept when the configuration did not change. `None` when the stored
    /// configuration is unusable (it is then skipped and logged).
    pub(crate) fn compile(
        row: &DestinationRow,
        reuse: Option<&Destination>,
        trusted: &HttpClient,
        guarded: &HttpClient,
        metrics: &Metrics,
    ) -> Option<Self> {
        let kind = DestinationKind::parse(&row.kind)?;
        let origin = Origin::parse(&row.origin);
        let config = TargetConfig::from_stored(&row.config)?;
        let endpoint: Uri = config.endpoint_url.parse().ok()?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            );
        }
        let auth = match reuse {
            Some(old) if old.fingerprint == row.config_hash => old.auth.clone(),
            _ => {
                let http = match origin {
                    Origin::Config => trusted,
                    Origin::Api => guarded,
                };
                Arc::new(build_auth(&row.name, &config.auth, http, metrics)?)
            }
        };
        let mut keys = vec![SigningKey::parse(&row.secret)?];
        if let Some(previous) = row.previous_secret.as_ref().and_then(SigningKey::parse) {
            keys.push(previous);
        }
        Some(Self {
            id: row.id.clone(),
            name: row.name.clone(),
            kind,
            origin,
            status: TargetStatus::parse(&row.status),
            globs: config
                .event_types
                .iter()
                .map(|g| WildMatch::new(g))
                .collect(),
            config,
            endpoint,
            headers,
            auth,
            keys,
            previous_until_ms: row.previous_secret_until_ms,
            fingerprint: row.config_hash.clone(),
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
        })
    }

    /// Whether this destination takes events of `event_type`.
    pub(crate) fn takes(&self, event_type: &str) -> bool {
        self.globs.iter().any(|g| g.matches(event_type))
    }

    /// The keys that sign now (the previous one only until its rotation window ends).
    pub(crate) fn signing_keys(&self, now_ms: i64) -> &[SigningKey] {
        let previous_valid = self.previous_until_ms.is_some_and(|until| now_ms < until);
        if previous_valid {
            &self.keys
        } else {
            &self.keys[..1]
        }
    }
}

fn build_auth(
    name: &str,
    auth: &TargetAuth,
    http: &HttpClient,
    metrics: &Metrics,
) -> Option<DestinationAuth> {
    use base64::Engine as _;
    Some(match auth {
        TargetAuth::None => DestinationAuth::None,
        TargetAuth::Basic { username, password } => {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.expose_secret()));
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
            value.set_sensitive(true);
            DestinationAuth::Static(value)
        }
        TargetAuth::Jwt { token } => {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).ok()?;
            value.set_sensitive(true);
            DestinationAuth::Static(value)
        }
        TargetAuth::Oauth2 {
            client_id,
            client_secret,
            token_url,
        } => DestinationAuth::OAuth(Box::new(
            TokenSource::new(
                &format!("target:{name}"),
                &ClientCredentials {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    scopes: Vec::new(),
                    client_auth: ClientAuthMethod::Basic,
                },
                http.clone(),
                TOKEN_TIMEOUT,
                metrics,
            )
            .ok()?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff_strategy: BackoffStrategy) -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            backoff_strategy,
            initial_delay_seconds: 2,
        }
    }

    #[test]
    fn waits_follow_the_policy_within_twenty_percent() {
        for (strategy, ceilings) in [
            (BackoffStrategy::Exponential, [2u64, 4, 8, 16]),
            (BackoffStrategy::Linear, [2, 4, 6, 8]),
        ] {
            let p = policy(strategy);
            for (n, ceiling) in (1..).zip(ceilings) {
                for _ in 0..50 {
                    let w = p.wait(n, None).as_secs_f64();
                    let c = ceiling as f64;
                    assert!(
                        w >= c * 0.8 - 1e-6 && w <= c * 1.2 + 1e-6,
                        "{strategy:?} {n}: {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_longer_retry_after_replaces_the_wait_and_an_hour_caps_everything() {
        let p = policy(BackoffStrategy::Exponential);
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert!(p.wait(1, Some(Duration::from_millis(10))) >= Duration::from_millis(1600));
        assert_eq!(p.wait(1, Some(Duration::from_secs(7200))), MAX_RETRY_WAIT);
        assert!(p.wait(30, None) <= MAX_RETRY_WAIT);
    }

    #[test]
    fn stored_configuration_round_trips_with_its_credentials_and_shows_none() {
        let config = TargetConfig {
            endpoint_url: "https://example.com/hook".into(),
            auth: TargetAuth::Basic {
                username: "u".into(),
                password: SecretString::from("p4ss"),
            },
            retry_policy: policy(BackoffStrategy::Linear),
            headers: BTreeMap::from([("X-A".to_owned(), "1".to_owned())]),
            event_types: vec!["a.*".into()],
            description: String::new(),
        };
        let stored = config.to_stored();
        assert!(stored.expose_secret().contains("p4ss"));
        let back = TargetConfig::from_stored(&stored).unwrap();
        assert_eq!(
            back.auth.public_view(),
            serde_json::json!({"username": "u"})
        );
        assert!(!format!("{back:?}").contains("p4ss"));
        let secret = SecretString::from("whsec_a");
        assert_eq!(config.fingerprint(&secret), back.fingerprint(&secret));
        assert_ne!(
            config.fingerprint(&secret),
            config.fingerprint(&SecretString::from("whsec_b"))
        );
    }
}
