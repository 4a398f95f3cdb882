//! The JWT verifier of the event ingest surface: which bearer tokens legacy systems may post
//! events with, and who they are.
//!
//! A [`JwtVerifier`] is built once from the `[[jwt_issuers]]` that `[ingest] auth.issuers` names
//! ([`JwtVerifier::from_settings`]); for each request it answers a [`VerifiedToken`] or a
//! [`JwtRejection`], which converts into the gateway's 401 answer. What it accepts:
//!
//! - **One token, in one place**: exactly one `Authorization: Bearer <JWT>` header. Several
//!   `Authorization` headers (or one holding comma-joined values), a credential-named query
//!   parameter (`access_token`, `token`, `api_key`, ...: [`super::CREDENTIAL_QUERY_PARAMETERS`]), or a JWT-shaped
//!   value anywhere in the query string or in any other header are refused: a token is never
//!   taken from a place that access logs and proxies record.
//! - **An asymmetric signature by an allowed algorithm** of the issuer that the token's `iss`
//!   names (issuers are selected by their exact `issuer` value). `none` and every `HS*` are
//!   refused whatever the configuration says, before any key is looked at, so the classic
//!   confusion attack (HS256 "signed" with the issuer's public key as the HMAC secret) has
//!   nothing to work with. Keys embedded in or pointed at by the token (`jwk`, `jku`, `x5u`,
//!   `x5c`) are never used, and a `crit` header is refused: no extension is understood.
//! - **Claims**, checked only once the signature holds: `exp` is required and must not be past
//!   `exp + leeway`; `nbf` and `iat` must not be after `now + leeway`; the lifetime `exp - iat`
//!   (`exp - now` when there is no `iat`) must not exceed `max_token_lifetime_s`; `aud` (a string
//!   or an array) must contain a configured audience. A registered claim of the wrong JSON type
//!   (`"exp": "1700000000"`) or given twice makes the token malformed, never "absent".
//!
//! # Keys
//! An issuer's keys come from a PEM `key_file` read at build time (one or more public keys; PEM
//! keys have no `kid`, so every key of the issuer that fits the token's algorithm is tried and a
//! token's `kid` is ignored), or from a `jwks_url` (see [`JwtVerifier::spawn_refresh`]): fetched
//! at start and every 10 minutes in the background, refetched when a token names an unknown
//! `kid` — at most once per 30 s counted from the last fetch of any kind — and kept as it was
//! when a fetch fails. A token with a `kid` is checked with the JWKS key of that `kid` only, a
//! token without one with every JWKS key that fits its algorithm. JWKS keys meant for
//! encryption, symmetric (`oct`) keys and RSA keys under 2048 bits are never used; a key file
//! holding a private key, a certificate or such a key is a configuration error.
//!
//! # Cache
//! A verified token is remembered, keyed by the SHA-256 of its text (the token itself is never
//! kept), until `exp + leeway`, in a bounded map ([`TOKEN_CACHE_CAPACITY`] entries). An entry is
//! not used once that time has passed, nor after the issuer's JWKS key set has changed (a key
//! withdrawn by the identity provider stops its tokens at once).
//!
//! # Rejections
//! [`JwtRejection::label`] is one of a fixed set, meant for the `reason` label of
//! `gateway_ingest_rejections_total` ([`JwtRejection::LABELS`] lists them): `missing`,
//! `multiple_tokens`, `misplaced_token`, `malformed`, `algorithm`, `issuer`, `unknown_key`,
//! `keys_unavailable`, `signature`, `no_expiry`, `expired`, `not_yet_valid`, `lifetime`,
//! `audience`. A missing token is 401 `authentication.required` with
//! `WWW-Authenticate: Bearer realm="genesys-gateway"`; every other rejection is 401
//! `invalid.token` with `WWW-Authenticate: Bearer error="invalid_token",
//! error_description="<reason>"`. The token never reaches a log line, an error, a metric or a
//! `Debug` output: a rejection carries a fixed reason only.
//!
//! # Local tokens
//! [`mint`] signs test tokens with a sandbox issuer's `private_key_file` (the
//! `genesys-gateway token` command); the verifier never reads that file.

mod cache;
mod keys;
pub mod mint;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Uri, header};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigSource, JwtIssuerSettings, Problem};
use crate::error::{ApiError, ErrorCode};
use crate::upstream::HttpClient;

use cache::{CachedToken, TokenCache};
use keys::IssuerKeys;

/// Verified tokens remembered at most (each entry is about 150 bytes).
pub const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// Longest token read, in bytes; a longer one is malformed before anything is decoded.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The largest leeway an issuer may have.
const MAX_LEEWAY_S: u64 = 60;

const REALM_CHALLENGE: &str = "Bearer realm=\"genesys-gateway\"";

/// Where the verifier reads the time: the system clock unless a test injects another
/// ([`JwtVerifier::with_clock`]).
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What a verified token says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The configured `name` of the issuer whose key signed it.
    pub issuer: Arc<str>,
    /// The token's `iss` claim (equal to the issuer's configured `issuer`).
    pub iss: Arc<str>,
    /// The token's `sub` claim, when it has one.
    pub sub: Option<Arc<str>>,
    /// The token's `exp` claim, in seconds since the Unix epoch.
    pub exp: i64,
}

/// Why a token was refused. [`Display`](std::fmt::Display) is the fixed `error_description`;
/// [`Self::label`] the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtRejection {
    /// No `Authorization` header, or an empty one (an empty credential counts as none).
    #[error("no bearer token was sent")]
    Missing,
    /// Several `Authorization` headers, or several values in one.
    #[error("more than one token was sent")]
    MultipleTokens,
    /// A token (or a credential-named query parameter) outside the `Authorization` header.
    #[error("a token was sent outside the Authorization header")]
    MisplacedToken,
    /// Not a bearer JWT that can be read.
    #[error("{0}")]
    Malformed(MalformedToken),
    /// `none`, `HS*`, an unknown algorithm, or one the issuer does not allow.
    #[error("the token signing algorithm is not allowed")]
    Algorithm,
    /// No `iss`, or no enabled issuer has that `issuer`.
    #[error("the token issuer is not accepted")]
    Issuer,
    /// No key of the issuer has the token's `kid` or fits its algorithm (after a JWKS refetch
    /// when one was allowed).
    #[error("no key of the issuer matches the token")]
    UnknownKey,
    /// The issuer's JWKS has never been fetched successfully.
    #[error("the signing keys of the issuer are not available")]
    KeysUnavailable,
    /// No candidate key verifies the signature.
    #[error("the token signature is not valid")]
    Signature,
    /// No `exp` claim.
    #[error("the token has no expiry")]
    NoExpiry,
    /// `exp + leeway` is past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` is after `now + leeway`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `exp - iat` (or `exp - now` without `iat`) exceeds the issuer's `max_token_lifetime_s`.
    #[error("the token lifetime exceeds the maximum of the issuer")]
    Lifetime,
    /// No `aud`, or none of its values is a configured audience.
    #[error("the token audience is not accepted")]
    Audience,
}

/// What is unreadable about a malformed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedToken {
    /// The `Authorization` header uses another scheme than `Bearer`.
    #[error("the Authorization header is not a Bearer credential")]
    Scheme,
    /// Longer than the verifier reads.
    #[error("the token is too large")]
    TooLarge,
    /// Not three non-empty base64url parts separated by dots.
    #[error("the token is not a signed JWT in compact form")]
    NotCompact,
    /// The header is not base64url JSON with a string `alg`.
    #[error("the token header is not valid")]
    Header,
    /// The header has `crit` (or `b64`): an extension the verifier does not understand.
    #[error("the token uses a critical header extension")]
    CriticalHeader,
    /// The claims are not base64url JSON, or a registered claim is repeated or of the wrong type.
    #[error("the token claims are not valid")]
    Claims,
}

impl JwtRejection {
    /// Every value [`Self::label`] can return.
    pub const LABELS: &'static [&'static str] = &[
        "missing",
        "multiple_tokens",
        "misplaced_token",
        "malformed",
        "algorithm",
        "issuer",
        "unknown_key",
        "keys_unavailable",
        "signature",
        "no_expiry",
        "expired",
        "not_yet_valid",
        "lifetime",
        "audience",
    ];

    /// The `reason` label of `gateway_ingest_rejections_total` (one of [`Self::LABELS`]).
    pub const fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::MultipleTokens => "multiple_tokens",
            Self::MisplacedToken => "misplaced_token",
            Self::Malformed(_) => "malformed",
            Self::Algorithm => "algorithm",
            Self::Issuer => "issuer",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Signature => "signature",
            Self::NoExpiry => "no_expiry",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Lifetime => "lifetime",
            Self::Audience => "audience",
        }
    }

    /// The `WWW-Authenticate` value of the 401 answer: `Bearer realm="genesys-gateway"` for a
    /// missing token, else `Bearer error="invalid_token", error_description="<reason>"`.
    pub fn challenge(self) -> HeaderValue {
        if self == Self::Missing {
            return HeaderValue::from_static(REALM_CHALLENGE);
        }
        // The reasons are fixed ASCII text without quotes or backslashes.
        HeaderValue::from_str(&format!(
            "Bearer error=\"invalid_token\", error_description=\"{self}\""
        ))
        .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""))
    }
}

impl From<JwtRejection> for ApiError {
    fn from(rejection: JwtRejection) -> Self {
        let error = match rejection {
            JwtRejection::Missing => ApiError::new(
                ErrorCode::AuthenticationRequired,
                "A bearer token is required.",
            ),
            other => ApiError::new(
                ErrorCode::InvalidToken,
                format!("The token is not valid: {other}."),
            ),
        };
        error.with_www_authenticate(rejection.challenge())
    }
}

/// The verifier (see the module docs). Cheap to clone: clones share keys and cache.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
    clock: WallClock,
}

struct Inner {
    issuers: Vec<Issuer>,
    /// Exact `iss` value → index in `issuers`.
    by_iss: HashMap<Arc<str>, usize>,
    cache: TokenCache,
}

/// One enabled issuer, compiled.
struct Issuer {
    name: Arc<str>,
    iss: Arc<str>,
    audiences: Box<[String]>,
    algorithms: Box<[Algorithm]>,
    leeway: i64,
    max_lifetime: i64,
    keys: IssuerKeys,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuers", &self.issuer_names())
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds the verifier of the issuers named in `enabled` (the `[ingest] auth.issuers` list),
    /// out of all configured `issuers`. PEM key files are read now (paths relative to the config
    /// folder of `source`); JWKS are fetched later with `http`, which must be the transport for
    /// URLs written in the config ([`crate::upstream::NetworkPolicy::Trusted`]). Nothing is
    /// fetched here: call [`Self::spawn_refresh`] to fetch at start (otherwise the first token
    /// of a JWKS issuer fetches its keys).
    ///
    /// # Errors
    /// Every problem found, with its key path: an enabled name with no issuer
    /// (`ingest.auth.issuers[j]`), a key file that cannot be read, holds a private key, a
    /// certificate, an unsupported or too weak key, or no key that fits the allowed algorithms
    /// (`jwt_issuers[i].key_file`), an unusable `jwks_url`, an algorithm outside the allow-list,
    /// a leeway over 60 s, and two enabled issuers with the same `issuer` value.
    pub fn from_settings(
        issuers: &[JwtIssuerSettings],
        enabled: &[String],
        source: &ConfigSource,
        http: HttpClient,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut built: Vec<Issuer> = Vec::new();
        let mut by_iss: HashMap<Arc<str>, usize> = HashMap::new();
        for (j, name) in enabled.iter().enumerate() {
            if enabled[..j].contains(name) {
                continue;
            }
            let Some(i) = issuers.iter().position(|s| &s.name == name) else {
                problems.push(Problem::new(
                    format!("ingest.auth.issuers[{j}]"),
                    format!("no [[jwt_issuers]] entry named `{name}`"),
                ));
                continue;
            };
            let settings = &issuers[i];
            let before = problems.len();
            let issuer = compile_issuer(i, settings, source, &http, &mut problems);
            if let Some(&other) = by_iss.get(settings.issuer.as_str()) {
                problems.push(Problem::new(
                    format!("jwt_issuers[{i}].issuer"),
                    format!(
                        "`{}` is also the issuer of `{}`; tokens are matched to issuers by `iss`, \
                         so it must be unique among the enabled issuers",
                        settings.issuer, built[other].name
                    ),
                ));
            }
            if let Some(issuer) = issuer
                && problems.len() == before
            {
                by_iss.insert(issuer.iss.clone(), built.len());
                built.push(issuer);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                issuers: built,
                by_iss,
                cache: TokenCache::new(TOKEN_CACHE_CAPACITY),
            }),
            clock: Arc::new(SystemTime::now),
        })
    }

    /// The same verifier reading the time from `clock` (tests and simulations).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The configured names of the enabled issuers, in `[ingest] auth.issuers` order.
    pub fn issuer_names(&self) -> Vec<&str> {
        self.inner.issuers.iter().map(|i| &*i.name).collect()
    }

    /// Verifies the one bearer token of a request (see the module docs for the rules).
    ///
    /// # Errors
    /// The [`JwtRejection`] saying why the request is refused; it converts into the 401 answer.
    pub async fn verify(
        &self,
        parts: &http::request::Parts,
    ) -> Result<VerifiedToken, JwtRejection> {
        self.verify_head(&parts.uri, &parts.headers).await
    }

    /// [`Self::verify`] for callers holding the URI and headers rather than [`http::request::Parts`].
    ///
    /// # Errors
    /// As [`Self::verify`].
    pub async fn verify_head(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<VerifiedToken, JwtRejection> {
        let token = bearer_token(uri, headers)?;
        self.verify_token(token).await
    }

    /// Verifies a bare token (signature, issuer, algorithm and claims; not where it came from —
    /// [`Self::verify`] adds the one-token-per-request rules).
    ///
    /// # Errors
    /// The [`JwtRejection`] saying why the token is refused.
    pub async fn verify_token(&self, token: &str) -> Result<VerifiedToken, JwtRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtRejection::Malformed(MalformedToken::TooLarge));
        }
        let at = (self.clock)();
        let now = unix_seconds(at);
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.inner.cache.get(&digest, now)
            && self.inner.issuers[hit.issuer].keys.generation() == hit.generation
        {
            return Ok(hit.token);
        }
        let jws = Compact::parse(token)?;
        let iss = jws.claims.iss.as_deref().ok_or(JwtRejection::Issuer)?;
        let &index = self.inner.by_iss.get(iss).ok_or(JwtRejection::Issuer)?;
        let issuer = &self.inner.issuers[index];
        if !issuer.algorithms.contains(&jws.alg) {
            return Err(JwtRejection::Algorithm);
        }
        let generation = issuer
            .keys
            .verify(
                jws.alg,
                jws.kid.as_deref(),
                jws.signing_input,
                jws.signature,
                at,
            )
            .await?;
        let exp = issuer.check_claims(&jws.claims, now)?;
        let verified = VerifiedToken {
            issuer: issuer.name.clone(),
            iss: issuer.iss.clone(),
            sub: jws.claims.sub.map(Arc::from),
            exp,
        };
        self.inner.cache.insert(
            digest,
            CachedToken {
                token: verified.clone(),
                valid_until: exp.saturating_add(issuer.leeway),
                issuer: index,
                generation,
            },
            now,
        );
        Ok(verified)
    }

    /// Starts one background task per JWKS issuer on `tasks`: it fetches the key set at once
    /// (a failure is logged and retried 30 s later, never fatal), then every 10 minutes, until
    /// `shutdown` is cancelled. Issuers with a PEM key file need none.
    pub fn spawn_refresh(&self, shutdown: CancellationToken, tasks: &TaskTracker) {
        for (index, issuer) in self.inner.issuers.iter().enumerate() {
            if !matches!(issuer.keys, IssuerKeys::Jwks(_)) {
                continue;
            }
            let verifier = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { verifier.refresh_loop(index, shutdown).await });
        }
    }

    async fn refresh_loop(self, index: usize, shutdown: CancellationToken) {
        let IssuerKeys::Jwks(jwks) = &self.inner.issuers[index].keys else {
            return;
        };
        loop {
            let fetched = tokio::select! {
                () = shutdown.cancelled() => return,
                fetched = jwks.refresh((self.clock)()) => fetched,
            };
            let wait = if fetched {
                keys::JWKS_REFRESH_INTERVAL
            } else {
                keys::JWKS_REFETCH_COOLDOWN
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn compile_issuer(
    i: usize,
    settings: &JwtIssuerSettings,
    source: &ConfigSource,
    http: &HttpClient,
    problems: &mut Vec<Problem>,
) -> Option<Issuer> {
    let at = |key: &str| format!("jwt_issuers[{i}].{key}");
    let mut algorithms = Vec::new();
    for (j, name) in settings.algorithms.iter().enumerate() {
        match allowed_algorithm(name) {
            Some(alg) => algorithms.push(alg),
            None => problems.push(Problem::new(
                format!("jwt_issuers[{i}].algorithms[{j}]"),
                format!(
                    "`{name}` is not allowed; one of ES256 ES384 RS256 RS384 RS512 PS256 PS384 \
                     PS512 EdDSA"
                ),
            )),
        }
    }
    if settings.algorithms.is_empty() {
        problems.push(Problem::new(
            at("algorithms"),
            "must list at least one algorithm",
        ));
    }
    if settings.audiences.is_empty() || settings.audiences.iter().any(String::is_empty) {
        problems.push(Problem::new(
            at("audiences"),
            "must list at least one non-empty audience",
        ));
    }
    if settings.issuer.is_empty() {
        problems.push(Problem::new(at("issuer"), "must not be empty"));
    }
    if settings.leeway_s > MAX_LEEWAY_S {
        problems.push(Problem::new(at("leeway_s"), "must be at most 60"));
    }
    if settings.max_token_lifetime_s == 0 {
        problems.push(Problem::new(
            at("max_token_lifetime_s"),
            "must be greater than 0",
        ));
    }
    let keys = match (&settings.key_file, &settings.jwks_url) {
        (Some(file), None) => keys::load_pem(&source.resolve(file), &algorithms)
            .map(IssuerKeys::Pem)
            .map_err(|message| Problem::new(at("key_file"), message)),
        (None, Some(url)) => keys::Jwks::new(&settings.name, url, http.clone())
            .map(|jwks| IssuerKeys::Jwks(Box::new(jwks)))
            .map_err(|message| Problem::new(at("jwks_url"), message)),
        (Some(_), Some(_)) => Err(Problem::new(
            at("key_file"),
            "give either key_file or jwks_url, not both",
        )),
        (None, None) => Err(Problem::new(
            at("key_file"),
            "key_file or jwks_url is required",
        )),
    };
    let keys = keys.map_err(|p| problems.push(p)).ok()?;
    Some(Issuer {
        name: Arc::from(settings.name.as_str()),
        iss: Arc::from(settings.issuer.as_str()),
        audiences: settings.audiences.clone().into_boxed_slice(),
        algorithms: algorithms.into_boxed_slice(),
        leeway: i64::try_from(settings.leeway_s.min(MAX_LEEWAY_S)).unwrap_or(0),
        max_lifetime: i64::try_from(settings.max_token_lifetime_s).unwrap_or(i64::MAX),
        keys,
    })
}

impl Issuer {
    /// Checks the time and audience claims of a token whose signature holds; answers its `exp`.
    fn check_claims(&self, claims: &Claims, now: i64) -> Result<i64, JwtRejection> {
        let exp = claims.exp.as_ref().ok_or(JwtRejection::NoExpiry)?.floor();
        if exp.saturating_add(self.leeway) < now {
            return Err(JwtRejection::Expired);
        }
        for not_before in [&claims.nbf, &claims.iat].into_iter().flatten() {
            if not_before.ceil().saturating_sub(self.leeway) > now {
                return Err(JwtRejection::NotYetValid);
            }
        }
        let lifetime = match &claims.iat {
            Some(iat) => exp.saturating_sub(iat.floor()),
            None => exp.saturating_sub(now),
        };
        if lifetime > self.max_lifetime {
            return Err(JwtRejection::Lifetime);
        }
        let accepted = |aud: &str| self.audiences.iter().any(|a| a == aud);
        let audience_ok = match &claims.aud {
            None => false,
            Some(Audience::One(aud)) => accepted(aud),
            Some(Audience::Many(auds)) => auds.iter().any(|aud| accepted(aud)),
        };
        if !audience_ok {
            return Err(JwtRejection::Audience);
        }
        Ok(exp)
    }
}

/// The algorithms an issuer may allow, by their JOSE name; `none`, `HS*` and anything else are
/// `None`.
fn allowed_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A compact JWS, decoded but not verified.
struct Compact<'a> {
    alg: Algorithm,
    kid: Option<String>,
    claims: Claims,
    /// `base64url(header) "." base64url(claims)`: what the signature covers.
    signing_input: &'a str,
    /// The base64url signature.
    signature: &'a str,
}

/// The JOSE header fields the verifier reads.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    b64: Option<serde_json::Value>,
}

/// The registered claims the verifier reads. A wrong type or a repeated field fails the whole
/// parse (`serde` refuses duplicate fields), which makes the token malformed.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<NumericDate>,
    #[serde(default)]
    nbf: Option<NumericDate>,
    #[serde(default)]
    iat: Option<NumericDate>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A JSON number of seconds since the epoch (it may have a fraction).
#[derive(Deserialize)]
#[serde(transparent)]
struct NumericDate(serde_json::Number);

impl NumericDate {
    fn floor(&self) -> i64 {
        self.whole(f64::floor)
    }

    fn ceil(&self) -> i64 {
        self.whole(f64::ceil)
    }

    fn whole(&self, round: fn(f64) -> f64) -> i64 {
        if let Some(i) = self.0.as_i64() {
            i
        } else if self.0.as_u64().is_some() {
            i64::MAX
        } else {
            // `as` saturates; JSON has no NaN.
            self.0.as_f64().map_or(0, |f| round(f) as i64)
        }
    }
}

impl<'a> Compact<'a> {
    /// Splits and decodes a token. The algorithm is judged as soon as the header is read, so
    /// `none` and `HS*` tokens are refused for what they are, signature or not.
    fn parse(token: &'a str) -> Result<Self, JwtRejection> {
        use JwtRejection::Malformed;
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Malformed(MalformedToken::NotCompact));
        };
        let header: JoseHeader = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(Malformed(MalformedToken::Header))?;
        let alg = allowed_algorithm(&header.alg).ok_or(JwtRejection::Algorithm)?;
        if header.crit.is_some() || header.b64.is_some() {
            return Err(Malformed(MalformedToken::CriticalHeader));
        }
        if payload.is_empty() || signature.is_empty() {
            return Err(Malformed(MalformedToken::NotCompact));
        }
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(Malformed(MalformedToken::Claims))?;
        let signing_input = &token[..token.len() - signature.len() - 1];
        Ok(Self {
            alg,
            kid: header.kid,
            claims,
            signing_input,
            signature,
        })
    }
}

/// The one bearer token of a request, after refusing tokens sent anywhere else.
fn bearer_token<'a>(uri: &Uri, headers: &'a HeaderMap) -> Result<&'a str, JwtRejection> {
    if uri.query().is_some_and(query_carries_credential) {
        return Err(JwtRejection::MisplacedToken);
    }
    if headers
        .iter()
        .any(|(name, value)| name != header::AUTHORIZATION && looks_like_token(value.as_bytes()))
    {
        return Err(JwtRejection::MisplacedToken);
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(JwtRejection::Missing);
    };
    if values.next().is_some() {
        return Err(JwtRejection::MultipleTokens);
    }
    let value = value.as_bytes().trim_ascii();
    if value.is_empty() {
        return Err(JwtRejection::Missing);
    }
    let token = strip_bearer(value)
        .ok_or(JwtRejection::Malformed(MalformedToken::Scheme))?
        .trim_ascii();
    if token.is_empty() {
        return Err(JwtRejection::Missing);
    }
    if token.contains(&b',') {
        return Err(JwtRejection::MultipleTokens);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtRejection::Malformed(MalformedToken::TooLarge));
    }
    if token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(JwtRejection::Malformed(MalformedToken::NotCompact));
    }
    std::str::from_utf8(token).map_err(|_| JwtRejection::Malformed(MalformedToken::NotCompact))
}

/// `value` after a case-insensitive `Bearer` and at least one space (or nothing at all).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &value[SCHEME.len()..];
    match rest.first() {
        None => Some(rest),
        Some(b' ' | b'\t') => Some(rest),
        Some(_) => None,
    }
}

/// Whether a query string has a credential-named parameter or a JWT-shaped value.
fn query_carries_credential(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(name, value)| {
        super::is_credential_parameter(&name) || looks_like_token(value.as_bytes())
    })
}

/// Whether a value is a JWT (signed or encrypted compact form), with or without `Bearer `.
fn looks_like_token(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let value = strip_bearer(value).map_or(value, <[u8]>::trim_ascii);
    if !value.starts_with(b"eyJ") {
        return false;
    }
    let dots = value.iter().filter(|b| **b == b'.').count();
    (dots == 2 || dots == 4)
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Seconds since the Unix epoch (negative before it).
fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str, headers: &[(&str, &str)]) -> (Uri, HeaderMap) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        (uri.parse().unwrap(), map)
    }

    const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln";

    #[test]
    fn the_bearer_token_is_read_from_the_one_authorization_header() {
        let bearer = format!("Bearer {JWT}");
        let (uri, headers) = head("/v1/events", &[("authorization", &bearer)]);
        assert_eq!(bearer_token(&uri, &headers), Ok(JWT));
        let lower = format!("bearer   {JWT} ");
        let (uri, headers) = head("/v1/events?x=1", &[("authorization", &lower)]);
        assert_eq!(bearer_token(&uri, &headers), Ok(JWT));
    }

    #[test]
    fn missing_and_empty_credentials_count_as_none() {
        for value in [None, Some(" "), Some("Bearer"), Some("Bearer   ")] {
            let pairs: Vec<(&str, &str)> =
                value.map(|v| ("authorization", v)).into_iter().collect();
            let (uri, headers) = head("/v1/events", &pairs);
            assert_eq!(
                bearer_token(&uri, &headers),
                Err(JwtRejection::Missing),
                "{value:?}"
            );
        }
    }

    #[test]
    fn other_schemes_and_joined_values_are_refused() {
        let malformed = JwtRejection::Malformed(MalformedToken::Scheme);
        for (value, expected) in [
            ("Basic Z2VuZXN5czpwdw==", malformed),
            ("Bearerabc", malformed),
            ("Bearer a.b.c, Bearer d.e.f", JwtRejection::MultipleTokens),
            (
                "Bearer a.b.c d.e.f",
                JwtRejection::Malformed(MalformedToken::NotCompact),
            ),
        ] {
            let (uri, headers) = head("/v1/events", &[("authorization", value)]);
            assert_eq!(bearer_token(&uri, &headers), Err(expected), "{value}");
        }
    }

    #[test]
    fn every_credential_named_parameter_is_a_misplaced_token() {
        let bearer = format!("Bearer {JWT}");
        for name in crate::auth::CREDENTIAL_QUERY_PARAMETERS {
            let uri = format!("/v1/events?limit=1&{}=v", name.to_ascii_uppercase());
            let (uri, headers) = head(&uri, &[("authorization", &bearer)]);
            assert_eq!(
                bearer_token(&uri, &headers),
                Err(JwtRejection::MisplacedToken),
                "{uri}"
            );
        }
    }

    #[test]
    fn tokens_outside_the_authorization_header_are_refused() {
        let bearer = format!("Bearer {JWT}");
        for uri in [
            "/v1/events?access_token=abc".to_owned(),
            "/v1/events?ID_TOKEN=abc".to_owned(),
            "/v1/events?api_key=".to_owned(),
            format!("/v1/events?x={JWT}"),
        ] {
            let (uri, headers) = head(&uri, &[("authorization", &bearer)]);
            assert_eq!(
                bearer_token(&uri, &headers),
                Err(JwtRejection::MisplacedToken),
                "{uri}"
            );
        }
        for (name, value) in [
            ("x-access-token", JWT.to_owned()),
            ("x-forwarded-authorization", bearer.clone()),
        ] {
            let (uri, headers) = head(
                "/v1/events",
                &[("authorization", &bearer), (name, value.as_str())],
            );
            assert_eq!(
                bearer_token(&uri, &headers),
                Err(JwtRejection::MisplacedToken),
                "{name}"
            );
        }
        // Ordinary values are not mistaken for tokens.
        let (uri, headers) = head(
            "/v1/events?limit=10&cursor=eyJ",
            &[
                ("authorization", &bearer),
                ("idempotency-key", "order-1.2.3"),
                ("x-request-id", "eyJ-not-a-token"),
            ],
        );
        assert_eq!(bearer_token(&uri, &headers), Ok(JWT));
    }

    #[test]
    fn none_and_hmac_algorithms_are_refused_when_the_header_is_read() {
        let encode = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let claims = encode(r#"{"iss":"x","exp":1}"#);
        for alg in ["none", "None", "HS256", "HS512", "ES512", ""] {
            let header = encode(&format!(r#"{{"alg":"{alg}"}}"#));
            for token in [
                format!("{header}.{claims}."),
                format!("{header}.{claims}.c2ln"),
            ] {
                assert_eq!(
                    Compact::parse(&token).err(),
                    Some(JwtRejection::Algorithm),
                    "{alg}"
                );
            }
        }
        let header = encode(r#"{"alg":"ES256","crit":["exp"]}"#);
        assert_eq!(
            Compact::parse(&format!("{header}.{claims}.c2ln")).err(),
            Some(JwtRejection::Malformed(MalformedToken::CriticalHeader))
        );
    }

    #[test]
    fn registered_claims_of_the_wrong_type_or_repeated_are_malformed() {
        let encode = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let header = encode(r#"{"alg":"ES256"}"#);
        for claims in [
            r#"{"iss":"x","exp":"99999999999"}"#,
            r#"{"iss":"x","exp":1,"exp":99999999999}"#,
            r#"{"iss":["x"],"exp":1}"#,
            r#"{"iss":"x","exp":1,"aud":7}"#,
            r#"{"iss":"x","exp":1,"nbf":true}"#,
            r#"{"iss":"x","exp":1,"sub":1}"#,
            r#"[1]"#,
        ] {
            let token = format!("{header}.{}.c2ln", encode(claims));
            assert_eq!(
                Compact::parse(&token).err(),
                Some(JwtRejection::Malformed(MalformedToken::Claims)),
                "{claims}"
            );
        }
        let token = format!("{header}.{}.c2ln", encode(r#"{"exp":1.7,"iat":1.2}"#));
        let parsed = Compact::parse(&token).ok().unwrap();
        assert_eq!(parsed.claims.exp.unwrap().floor(), 1);
        assert_eq!(parsed.claims.iat.unwrap().ceil(), 2);
    }

    #[test]
    fn labels_are_the_documented_set() {
        let all = [
            JwtRejection::Missing,
            JwtRejection::MultipleTokens,
            JwtRejection::MisplacedToken,
            JwtRejection::Malformed(MalformedToken::Claims),
            JwtRejection::Algorithm,
            JwtRejection::Issuer,
            JwtRejection::UnknownKey,
            JwtRejection::KeysUnavailable,
            JwtRejection::Signature,
            JwtRejection::NoExpiry,
            JwtRejection::Expired,
            JwtRejection::NotYetValid,
            JwtRejection::Lifetime,
            JwtRejection::Audience,
        ];
        let labels: Vec<&str> = all.iter().map(|r| r.label()).collect();
        assert_eq!(labels, JwtRejection::LABELS);
        for rejection in all {
            let challenge = rejection.challenge();
            let text = challenge.to_str().unwrap();
            if rejection == JwtRejection::Missing {
                assert_eq!(text, "Bearer realm=\"genesys-gateway\"");
            } else {
                assert_eq!(
                    text,
                    format!("Bearer error=\"invalid_token\", error_description=\"{rejection}\"")
                );
                assert!(!rejection.to_string().contains(['"', '\\']));
            }
        }
    }
}
