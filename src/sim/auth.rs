//! The login service (`POST /oauth/token`, client credentials) and the bearer check of every
//! `/api/v2` request: `authentication.required` (no token), `bad.credentials` (unknown token),
//! `credentials.expired`, then the per-token rate limit (sliding one-minute window, 429
//! `too.many.requests` with `Retry-After` in whole seconds).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::error::{GenesysError, OAuthError};
use super::state::{Sim, Token};

/// How long an expired token is still recognised as expired.
const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// The client the current API request authenticated as.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub client_id: String,
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (client_id, secret) = match basic_credentials(&headers) {
        Some(pair) => pair,
        None => match (field("client_id"), field("client_secret")) {
            (Some(id), Some(secret)) => (id, secret),
            _ => {
                return Err(OAuthError {
                    status: StatusCode::UNAUTHORIZED,
                    error: "invalid_client",
                    description: "client authentication is required".to_owned(),
                });
            }
        },
    };
    let known = sim
        .fixtures
        .clients()
        .iter()
        .find(|c| c.id == client_id)
        .ok_or_else(|| OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "client not found: invalid client".to_owned(),
        })?;
    if !bool::from(
        known
            .secret
            .expose_secret()
            .as_bytes()
            .ct_eq(secret.as_bytes()),
    ) {
        return Err(OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "authentication failed".to_owned(),
        });
    }
    match field("grant_type").as_deref() {
        Some("client_credentials") => {}
        None => {
            return Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "invalid_request",
                description: "grant_type is required".to_owned(),
            });
        }
        Some(other) => {
            return Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: format!("grant type {other} is not supported for this client"),
            });
        }
    }
    let mut raw = [0u8; 64];
    rand::rng().fill_bytes(&mut raw);
    let access_token = URL_SAFE_NO_PAD.encode(raw);
    let now = Instant::now();
    {
        // Tokens expired for more than an hour are forgotten (they then answer
        // `bad.credentials`, as Genesys does for tokens it no longer knows).
        let mut tokens = sim.tokens.lock();
        let before = tokens.len();
        tokens.retain(|_, t| t.expires_at + FORGET_AFTER > now);
        if tokens.len() != before {
            sim.rate
                .lock()
                .retain(|token, _| tokens.contains_key(token));
        }
        tokens.insert(
            access_token.clone(),
            Token {
                client_id,
                expires_at: now + sim.token_lifetime,
            },
        );
    }
    let mut response = axum::Json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": sim.token_lifetime.as_secs(),
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Middleware of `/api/v2`: bearer token, then rate limit; adds Genesys' `inin-ratelimit-*`
/// headers and puts the [`Caller`] into the request extensions.
pub(crate) async fn require_token(
    State(sim): State<Arc<Sim>>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return GenesysError::new(
            StatusCode::UNAUTHORIZED,
            "authentication.required",
            "No authentication bearer token specified in authorization header.",
        )
        .into_response();
    };
    let now = Instant::now();
    let known = sim.tokens.lock().get(&token).cloned();
    let Some(known) = known else {
        return GenesysError::new(
            StatusCode::UNAUTHORIZED,
            "bad.credentials",
            "Invalid login credentials.",
        )
        .into_response();
    };
    if known.expires_at <= now {
        return GenesysError::new(
            StatusCode::UNAUTHORIZED,
            "credentials.expired",
            "The authentication token has expired.",
        )
        .into_response();
    }
    let rate = match sim.take_rate(&token, now) {
        Ok(rate) => rate,
        Err(retry_after) => {
            let mut err = GenesysError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too.many.requests",
                format!(
                    "Rate limit exceeded the maximum. Retry the request in [{retry_after}] seconds"
                ),
            );
            err.message_params
                .insert("limit".into(), json!(sim.rate_limit_per_min.to_string()));
            err.retry_after = Some(retry_after);
            let mut response = err.into_response();
            let h = response.headers_mut();
            h.insert(
                "inin-ratelimit-count",
                HeaderValue::from(sim.rate_limit_per_min),
            );
            h.insert(
                "inin-ratelimit-allowed",
                HeaderValue::from(sim.rate_limit_per_min),
            );
            h.insert("inin-ratelimit-reset", HeaderValue::from(retry_after));
            return response;
        }
    };
    req.extensions_mut().insert(Caller {
        client_id: known.client_id,
    });
    let mut response = next.run(req).await;
    if rate.allowed > 0 {
        let h = response.headers_mut();
        h.insert("inin-ratelimit-count", HeaderValue::from(rate.count));
        h.insert("inin-ratelimit-allowed", HeaderValue::from(rate.allowed));
        h.insert("inin-ratelimit-reset", HeaderValue::from(rate.reset_s));
    }
    response
}
