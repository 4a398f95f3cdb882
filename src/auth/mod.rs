//! Inbound authentication of the gateway's surfaces.
//!
//! Each surface has one credential scheme, compiled once from its settings into an
//! [`InboundAuth`] and applied with [`require`] as a `route_layer` on that surface's router only.
//! Every comparison of a shared secret is constant-time ([`subtle`]); credentials never reach
//! logs or error bodies. A missing (or empty) credential is 401 `authentication.required`, a
//! wrong one 401 `invalid.token`; both carry `WWW-Authenticate` for the scheme.
//!
//! The ingest surface's bearer JWTs are verified by [`jwt::JwtVerifier`].
//!
//! Repeated failures from one client address are throttled where a surface asks for it
//! ([`throttle`]: the admin surface): 429 `too.many.requests` for the rest of the minute.

pub mod jwt;
pub mod throttle;

pub use throttle::{FailedAuthThrottle, ThrottledAuth, require_throttled};

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::config::InboundAuthSettings;
use crate::error::{ApiError, ErrorCode};

const REALM: &str = "genesys-gateway";

/// Query parameters that carry a credential, compared without regard to ASCII case: a request
/// with one is refused with 401 `invalid.token` whatever its value, on every surface (the
/// inbound schemes here, the JWT verifier, the gateway's query extractor) — a credential is
/// never taken from a place that access logs and proxies record. The one list of them.
pub const CREDENTIAL_QUERY_PARAMETERS: &[&str] = &[
    "access_token",
    "token",
    "jwt",
    "id_token",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "password",
    "client_secret",
    "bearer",
    "authorization",
];

/// Whether `name` is a credential-named query parameter ([`CREDENTIAL_QUERY_PARAMETERS`]).
pub fn is_credential_parameter(name: &str) -> bool {
    CREDENTIAL_QUERY_PARAMETERS
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

/// The first credential-named parameter of `query` (see [`CREDENTIAL_QUERY_PARAMETERS`]), as
/// sent; never its value.
pub fn query_credential(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .map(|(name, _)| name)
        .find(|name| is_credential_parameter(name))
        .map(std::borrow::Cow::into_owned)
}

/// A compiled inbound credential check.
#[derive(Clone)]
pub enum InboundAuth {
    /// Anyone may call.
    None,
    /// HTTP Basic with one user.
    Basic {
        /// Expected user name.
        username: Arc<str>,
        /// Expected password.
        password: SecretString,
    },
    /// A shared key in a header.
    Header {
        /// Header name.
        name: HeaderName,
        /// The header name as configured (for the challenge; header names are case-insensitive).
        display: Arc<str>,
        /// Expected value.
        value: SecretString,
    },
    /// `Authorization: Bearer <token>` with any of these tokens.
    Bearer {
        /// Accepted tokens.
        tokens: Arc<[SecretString]>,
    },
}

impl std::fmt::Debug for InboundAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "InboundAuth::None",
            Self::Basic { .. } => "InboundAuth::Basic([REDACTED])",
            Self::Header { .. } => "InboundAuth::Header([REDACTED])",
            Self::Bearer { .. } => "InboundAuth::Bearer([REDACTED])",
        })
    }
}

impl InboundAuth {
    /// Compiles the settings of a surface (validated at load: header names are valid).
    pub fn from_settings(settings: &InboundAuthSettings) -> Self {
        match settings {
            InboundAuthSettings::None => Self::None,
            InboundAuthSettings::Basic { username, password } => Self::Basic {
                username: Arc::from(username.as_str()),
                password: password.clone(),
            },
            InboundAuthSettings::Header { name, value } => Self::Header {
                name: HeaderName::from_bytes(name.as_bytes())
                    .unwrap_or(HeaderName::from_static("x-api-key")),
                display: Arc::from(name.as_str()),
                value: value.clone(),
            },
        }
    }

    /// Bearer tokens (empty ones must already be filtered out).
    pub fn bearer(tokens: Vec<SecretString>) -> Self {
        Self::Bearer {
            tokens: tokens.into(),
        }
    }

    /// Checks the credentials of a request.
    ///
    /// # Errors
    /// 401 `authentication.required` when none were sent, 401 `invalid.token` when wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self {
            Self::None => Ok(()),
            Self::Basic { username, password } => {
                let Some(value) = non_empty(headers, &header::AUTHORIZATION) else {
                    return Err(self.missing());
                };
                let credential = match parse_basic(value) {
                    BasicCredential::Empty => return Err(self.missing()),
                    BasicCredential::Malformed => return Err(self.wrong()),
                    BasicCredential::Present(user, pass) => (user, pass),
                };
                let (user, pass) = credential;
                // Both comparisons run whatever the first one gave.
                let user_ok = ct_eq(user.as_bytes(), username.as_bytes());
                let pass_ok = ct_eq(pass.as_bytes(), password.expose_secret().as_bytes());
                if (user_ok & pass_ok).into() {
                    Ok(())
                } else {
                    Err(self.wrong())
                }
            }
            Self::Header { name, value, .. } => {
                let Some(sent) = non_empty(headers, name) else {
                    return Err(self.missing());
                };
                if ct_eq(sent, value.expose_secret().as_bytes()).into() {
                    Ok(())
                } else {
                    Err(self.wrong())
                }
            }
            Self::Bearer { tokens } => {
                let Some(value) = non_empty(headers, &header::AUTHORIZATION) else {
                    return Err(self.missing());
                };
                let Some(token) = strip_scheme(value, b"bearer") else {
                    return Err(self.wrong());
                };
                if token.is_empty() {
                    return Err(self.missing());
                }
                let mut ok = subtle::Choice::from(0);
                for t in tokens.iter() {
                    ok |= ct_eq(token, t.expose_secret().as_bytes());
                }
                if ok.into() { Ok(()) } else { Err(self.wrong()) }
            }
        }
    }

    /// Checks the credentials of a request, refusing first a credential sent in its query
    /// string (401 `invalid.token`, see [`CREDENTIAL_QUERY_PARAMETERS`]).
    ///
    /// # Errors
    /// As [`Self::check`].
    pub fn check_request(&self, uri: &http::Uri, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(parameter) = query_credential(uri.query()) {
            let err = crate::error::credential_in_query(&parameter);
            return Err(match self.challenge(Some("invalid_token")) {
                Some(c) => err.with_www_authenticate(c),
                None => err,
            });
        }
        self.check(headers)
    }

    /// The `WWW-Authenticate` challenge of the scheme.
    pub fn challenge(&self, error: Option<&str>) -> Option<HeaderValue> {
        let text = match self {
            Self::None => return None,
            Self::Basic { .. } => format!("Basic realm=\"{REALM}\""),
            Self::Header { display, .. } => {
                format!("ApiKey realm=\"{REALM}\", header=\"{display}\"")
            }
            Self::Bearer { .. } => match error {
                Some(e) => format!("Bearer realm=\"{REALM}\", error=\"{e}\""),
                None => format!("Bearer realm=\"{REALM}\""),
            },
        };
        HeaderValue::from_str(&text).ok()
    }

    fn missing(&self) -> ApiError {
        let err = ApiError::new(
            ErrorCode::AuthenticationRequired,
            "Credentials are required.",
        );
        match self.challenge(None) {
            Some(c) => err.with_www_authenticate(c),
            None => err,
        }
    }

    fn wrong(&self) -> ApiError {
        let err = ApiError::new(ErrorCode::InvalidToken, "The credentials are not valid.");
        match self.challenge(Some("invalid_token")) {
            Some(c) => err.with_www_authenticate(c),
            None => err,
        }
    }
}

/// Middleware enforcing an [`InboundAuth`]; use with `route_layer(from_fn_with_state(auth, require))`.
pub async fn require(State(auth): State<InboundAuth>, req: Request, next: Next) -> Response {
    match auth.check_request(req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(err) => err.into_response(),
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    a.ct_eq(b)
}

/// The header's value when present exactly once and not blank. Several values count as wrong
/// credentials, not missing ones, so they are returned as-is joined (and then fail).
fn non_empty<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(b"\0multiple");
    }
    let bytes = first.as_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(bytes)
    }
}

/// `value` without its case-insensitive auth scheme and the following spaces.
fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = &value[scheme.len()..];
    if !rest.is_empty() && rest[0] != b' ' {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    Some(&rest[start..])
}

/// What a `Basic` Authorization header carries.
enum BasicCredential {
    /// `Basic` with nothing, or only `:` (an empty credential counts as none).
    Empty,
    /// Another scheme, bad base64, not UTF-8, or no `:`.
    Malformed,
    /// User and password.
    Present(String, String),
}

fn parse_basic(value: &[u8]) -> BasicCredential {
    let Some(encoded) = strip_scheme(value, b"basic") else {
        return BasicCredential::Malformed;
    };
    if encoded.is_empty() {
        return BasicCredential::Empty;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return BasicCredential::Malformed;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return BasicCredential::Malformed;
    };
    match text.split_once(':') {
        Some(("", "")) => BasicCredential::Empty,
        Some((user, pass)) => BasicCredential::Present(user.to_owned(), pass.to_owned()),
        None => BasicCredential::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_named_parameter_is_refused_by_the_schemes_and_the_query_extractor() {
        for name in CREDENTIAL_QUERY_PARAMETERS {
            let sent = name.to_ascii_uppercase();
            let query = format!("queueId=q&{sent}=s3cr3t");
            assert_eq!(query_credential(Some(&query)), Some(sent.clone()));
            let uri: http::Uri = format!("/v1/callbacks?{query}").parse().unwrap();
            let err = InboundAuth::None
                .check_request(&uri, &HeaderMap::new())
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidToken, "{name}");
            assert!(!err.message().contains("s3cr3t"));
            let err = crate::error::parse_query::<std::collections::BTreeMap<String, String>>(
                Some(&query),
            )
            .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidToken, "{name}");
        }
        assert_eq!(query_credential(Some("queueId=q&status=scheduled")), None);
        assert_eq!(query_credential(Some("")), None);
        assert_eq!(query_credential(None), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn basic() {
        let auth = InboundAuth::from_settings(&InboundAuthSettings::Basic {
            username: "genesys".into(),
            password: SecretString::from("s3cret"),
        });
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("genesys:s3cret")
        );
        assert!(auth.check(&headers(&[("authorization", &good)])).is_ok());
        let lower = good.replacen("Basic", "basic", 1);
        assert!(auth.check(&headers(&[("authorization", &lower)])).is_ok());
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("genesys:nope")
        );
        let err = auth
            .check(&headers(&[("authorization", &bad)]))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidToken);
        let err = auth.check(&headers(&[])).unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthenticationRequired);
        let err = auth.check(&headers(&[("authorization", " ")])).unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthenticationRequired);
        for empty in ["Basic", "Basic ", "basic Og=="] {
            let err = auth
                .check(&headers(&[("authorization", empty)]))
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::AuthenticationRequired, "{empty}");
        }
        for wrong in ["Basic !!!", "Bearer abc", "Basic Z2VuZXN5cw=="] {
            let err = auth
                .check(&headers(&[("authorization", wrong)]))
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidToken, "{wrong}");
        }
    }

    #[test]
    fn bearer() {
        let auth = InboundAuth::bearer(vec![SecretString::from("token-aaaaaaaaaaaaaaaa")]);
        assert!(
            auth.check(&headers(&[(
                "authorization",
                "Bearer token-aaaaaaaaaaaaaaaa"
            )]))
            .is_ok()
        );
        let err = auth
            .check(&headers(&[("authorization", "Bearer ")]))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthenticationRequired);
        let err = auth
            .check(&headers(&[
                ("authorization", "Bearer token-aaaaaaaaaaaaaaaa"),
                ("authorization", "Bearer token-aaaaaaaaaaaaaaaa"),
            ]))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidToken);
        let err = auth
            .check(&headers(&[("authorization", "Basic abc")]))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidToken);
    }

    #[test]
    fn header_key() {
        let auth = InboundAuth::from_settings(&InboundAuthSettings::Header {
            name: "X-Api-Key".into(),
            value: SecretString::from("k1"),
        });
        assert!(auth.check(&headers(&[("x-api-key", "k1")])).is_ok());
        assert_eq!(
            auth.check(&headers(&[("x-api-key", "k2")]))
                .unwrap_err()
                .code(),
            ErrorCode::InvalidToken
        );
        assert_eq!(
            auth.challenge(None).unwrap(),
            "ApiKey realm=\"genesys-gateway\", header=\"X-Api-Key\""
        );
    }
}
