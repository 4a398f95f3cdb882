//! Outbound authentication: static headers (API key, Basic, bearer) and OAuth2 client
//! credentials with a shared token cache.
//!
//! A token is cached until 60 s before it expires. Any number of concurrent callers that need a
//! token — on any server thread — share one fetch: the cache is read lock-free
//! (`arc_swap`), and a miss waits on one async mutex whose holder fetches; waiters that were
//! queued behind a fetch take its outcome (its token, or its failure) instead of fetching again.
//! When the token endpoint answers with a `Retry-After`, no caller fetches again before it has
//! passed: they all get that failure with the time left. A 401 from the upstream invalidates the
//! token it was sent with (only that one), so a burst of 401s causes one refetch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri, header};
use prometheus::IntCounter;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

use super::error::{TokenFetchFailure, UpstreamError};
use super::transport::{HttpClient, TransportError};
use crate::config::ClientAuthMethod;
use crate::telemetry::Metrics;

/// Tokens are refreshed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Lifetime assumed when the token endpoint does not say (`expires_in` absent).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// How requests to one upstream are authenticated.
pub(crate) enum OutboundAuth {
    /// Nothing is added.
    None,
    /// A fixed header (API key, Basic, bearer).
    Static(HeaderName, HeaderValue),
    /// `Authorization: Bearer <token>` from a client-credentials token source.
    OAuth(Box<TokenSource>),
}

impl OutboundAuth {
    /// `Authorization: Basic base64(user:password)`, marked sensitive.
    pub(crate) fn basic(username: &str, password: &SecretString) -> Option<Self> {
        basic_header(username, password).map(|v| Self::Static(header::AUTHORIZATION, v))
    }

    /// `Authorization: Bearer <token>`, marked sensitive.
    pub(crate) fn bearer(token: &SecretString) -> Option<Self> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).ok()?;
        value.set_sensitive(true);
        Some(Self::Static(header::AUTHORIZATION, value))
    }

    /// `<header>: <key>`, marked sensitive.
    pub(crate) fn api_key(header: &str, key: &SecretString) -> Option<Self> {
        let name = HeaderName::from_bytes(header.as_bytes()).ok()?;
        let mut value = HeaderValue::from_str(key.expose_secret()).ok()?;
        value.set_sensitive(true);
        Some(Self::Static(name, value))
    }
}

fn basic_header(username: &str, password: &SecretString) -> Option<HeaderValue> {
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose_secret()));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Where and how to get OAuth2 client-credentials tokens.
#[derive(Clone)]
pub struct ClientCredentials {
    /// The token endpoint.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: SecretString,
    /// Requested scopes (sent space-joined; none → no `scope` field).
    pub scopes: Vec<String>,
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuthMethod,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("scopes", &self.scopes)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

struct CachedToken {
    header: HeaderValue,
    refresh_at: Instant,
}

#[derive(Default)]
struct FetchState {
    /// The failure of the last fetch, if it failed.
    last_failure: Option<Failed>,
    /// Until when the token endpoint asked not to be called (its `Retry-After`).
    not_before: Option<Instant>,
}

/// A failed token fetch: what went wrong, and the endpoint's `Retry-After` if it sent one.
#[derive(Clone, Copy)]
struct Failed {
    failure: TokenFetchFailure,
    retry_after: Option<Duration>,
}

impl From<TokenFetchFailure> for Failed {
    fn from(failure: TokenFetchFailure) -> Self {
        Self {
            failure,
            retry_after: None,
        }
    }
}

/// An OAuth2 client-credentials token source with a shared, single-flight cache (see the module
/// docs). Usable on its own, e.g. for delivery targets with OAuth2 (give it a guarded
/// [`HttpClient`]).
pub struct TokenSource {
    upstream: Arc<str>,
    http: HttpClient,
    token_uri: Uri,
    form: Form,
    basic: Option<HeaderValue>,
    timeout: Duration,
    cache: ArcSwapOption<CachedToken>,
    fetch: tokio::sync::Mutex<FetchState>,
    generation: AtomicU64,
    fetched: IntCounter,
    failed: IntCounter,
}

/// The token request form; holds the secret only for `client_auth = "body"`.
struct Form {
    client_id: String,
    client_secret: Option<SecretString>,
    scope: Option<String>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("upstream", &self.upstream)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    /// A token source named `upstream` (in metrics and errors) fetching with `http`; each fetch
    /// takes at most `timeout`.
    ///
    /// # Errors
    /// When the token URL is not an absolute http(s) URL, or the client id cannot be sent.
    pub fn new(
        upstream: &str,
        credentials: &ClientCredentials,
        http: HttpClient,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        let token_uri: Uri = credentials
            .token_url
            .parse()
            .map_err(|_| "is not a valid URL".to_owned())?;
        if !matches!(token_uri.scheme_str(), Some("http" | "https")) || token_uri.host().is_none() {
            return Err("must be an absolute http:// or https:// URL".to_owned());
        }
        let basic = match credentials.client_auth {
            ClientAuthMethod::Basic => Some(
                basic_header(&credentials.client_id, &credentials.client_secret)
                    .ok_or_else(|| "client_id cannot be sent in a header".to_owned())?,
            ),
            ClientAuthMethod::Body => None,
        };
        let scope = (!credentials.scopes.is_empty()).then(|| credentials.scopes.join(" "));
        Ok(Self {
            upstream: Arc::from(upstream),
            http,
            token_uri,
            form: Form {
                client_id: credentials.client_id.clone(),
                client_secret: (credentials.client_auth == ClientAuthMethod::Body)
                    .then(|| credentials.client_secret.clone()),
                scope,
            },
            basic,
            timeout,
            cache: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            generation: AtomicU64::new(0),
            fetched: metrics
                .oauth_token_fetches_total
                .with_label_values(&[upstream, "success"]),
            failed: metrics
                .oauth_token_fetches_total
                .with_label_values(&[upstream, "error"]),
        })
    }

    /// The `Authorization` value to send: the cached token, or a fresh one fetched once for all
    /// concurrent callers.
    ///
    /// # Errors
    /// [`UpstreamError::TokenFetch`] naming the upstream (never the secret) and carrying the
    /// endpoint's `Retry-After` when the token endpoint fails (see
    /// [`TokenFetchFailure::is_transient`]); [`UpstreamError::Timeout`] when `deadline` passes
    /// first.
    pub async fn authorization(&self, deadline: Instant) -> Result<HeaderValue, UpstreamError> {
        if let Some(header) = self.cached(Instant::now()) {
            return Ok(header);
        }
        let seen = self.generation.load(Ordering::Acquire);
        let mut state = tokio::time::timeout_at(deadline, self.fetch.lock())
            .await
            .map_err(|_| UpstreamError::Timeout)?;
        let now = Instant::now();
        if let Some(header) = self.cached(now) {
            return Ok(header);
        }
        if let (Some(failed), Some(until)) = (state.last_failure, state.not_before)
            && now < until
        {
            // The token endpoint asked to wait: every caller honours it.
            return Err(self.error(Failed {
                retry_after: Some(until - now),
                ..failed
            }));
        }
        if self.generation.load(Ordering::Acquire) != seen
            && let Some(failed) = state.last_failure
        {
            // The fetch we queued behind failed: share its outcome instead of hammering.
            return Err(self.error(failed));
        }
        let result = self.fetch_once(deadline).await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(token) => {
                let header = token.header.clone();
                self.cache.store(Some(Arc::new(token)));
                state.last_failure = None;
                state.not_before = None;
                self.fetched.inc();
                Ok(header)
            }
            Err(failed) => {
                self.failed.inc();
                tracing::warn!(upstream = %self.upstream, error = %failed.failure, "OAuth token fetch failed");
                state.last_failure = Some(failed);
                state.not_before = failed.retry_after.map(|d| Instant::now() + d);
                if failed.failure == TokenFetchFailure::Timeout && Instant::now() >= deadline {
                    return Err(UpstreamError::Timeout);
                }
                Err(self.error(failed))
            }
        }
    }

    /// Forgets the token that `used` carries (after the upstream answered 401 to it). A token
    /// already replaced by a newer one is left alone.
    pub fn invalidate(&self, used: &HeaderValue) {
        let current = self.cache.load_full();
        if current.as_ref().is_some_and(|t| t.header == *used) {
            let _ = self.cache.compare_and_swap(&current, None);
        }
    }

    fn cached(&self, now: Instant) -> Option<HeaderValue> {
        let guard = self.cache.load();
        guard
            .as_ref()
            .filter(|t| now < t.refresh_at)
            .map(|t| t.header.clone())
    }

    fn error(&self, failed: Failed) -> UpstreamError {
        UpstreamError::TokenFetch {
            upstream: self.upstream.to_string(),
            failure: failed.failure,
            retry_after: failed.retry_after,
        }
    }

    async fn fetch_once(&self, deadline: Instant) -> Result<CachedToken, Failed> {
        let started = Instant::now();
        let budget = deadline
            .saturating_duration_since(started)
            .min(self.timeout);
        if budget.is_zero() {
            return Err(TokenFetchFailure::Timeout.into());
        }
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &self.form.scope {
                form.append_pair("scope", scope);
            }
            if let Some(secret) = &self.form.client_secret {
                form.append_pair("client_id", &self.form.client_id);
                form.append_pair("client_secret", secret.expose_secret());
            }
            form.finish()
        };
        let mut request = http::Request::builder()
            .method(Method::POST)
            .uri(self.token_uri.clone())
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .body(Bytes::from(body))
            .map_err(|_| TokenFetchFailure::InvalidResponse)?;
        if let Some(basic) = &self.basic {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, basic.clone());
        }
        if let Some(id) = crate::telemetry::RequestId::current() {
            request
                .headers_mut()
                .insert(super::CORRELATION_HEADER, id.header_value());
        }
        let response = self
            .http
            .send(request, budget)
            .await
            .map_err(|err| match err {
                TransportError::Timeout => TokenFetchFailure::Timeout,
                TransportError::Refused(_) => TokenFetchFailure::Refused,
                TransportError::ResponseTooLarge { .. } => TokenFetchFailure::InvalidResponse,
                TransportError::Connect(_) | TransportError::Network(_) => {
                    TokenFetchFailure::Unreachable
                }
            })?;
        if !response.status.is_success() {
            return Err(Failed {
                failure: TokenFetchFailure::Status(response.status),
                retry_after: super::retry::retry_after(&response.headers),
            });
        }
        let token: TokenResponse = serde_json::from_slice(&response.body)
            .map_err(|_| TokenFetchFailure::InvalidResponse)?;
        if token.access_token.is_empty() {
            return Err(TokenFetchFailure::InvalidResponse.into());
        }
        if token
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(TokenFetchFailure::InvalidResponse.into());
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.access_token))
            .map_err(|_| TokenFetchFailure::InvalidResponse)?;
        header.set_sensitive(true);
        let lifetime = token
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        Ok(CachedToken {
            header,
            refresh_at: started + cache_for(lifetime),
        })
    }
}

/// How long a token with this lifetime is used: until 60 s before it expires; a token living
/// two minutes or less is used for half its life.
fn cache_for(lifetime: Duration) -> Duration {
    if lifetime > 2 * REFRESH_MARGIN {
        lifetime - REFRESH_MARGIN
    } else {
        lifetime / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_a_minute_early() {
        assert_eq!(
            cache_for(Duration::from_secs(3600)),
            Duration::from_secs(3540)
        );
        assert_eq!(cache_for(Duration::from_secs(120)), Duration::from_secs(60));
        assert_eq!(cache_for(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[test]
    fn static_headers_are_sensitive() {
        let Some(OutboundAuth::Static(name, value)) =
            OutboundAuth::basic("u", &SecretString::from("p"))
        else {
            panic!("basic auth builds");
        };
        assert_eq!(name, header::AUTHORIZATION);
        assert_eq!(value, "Basic dTpw");
        assert!(value.is_sensitive());
        assert!(OutboundAuth::api_key("bad header", &SecretString::from("k")).is_none());
    }
}
