//! The JWT verifier of the ingest surface with real tokens: minted with the test keys of
//! `tests/fixtures/jwt/`, checked against PEM key files and against JWKS served by a local axum
//! server that counts its fetches. Time is a test clock the verifier reads; nothing sleeps.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use genesys_gateway::auth::jwt::{JwtRejection, JwtVerifier, MalformedToken, VerifiedToken};
use genesys_gateway::config::{ConfigSource, JwtIssuerSettings};
use genesys_gateway::error::{ApiError, ErrorCode};
use genesys_gateway::upstream::{HttpClient, HttpClientOptions, NetworkPolicy};
use http::StatusCode;
use http::request::Parts;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const ISS: &str = "legacy-ordering";
const AUD: &str = "genesys-gateway";

// ---------------------------------------------------------------------------------------------
// Arrange: keys, clock, issuers, tokens, requests.

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt")
}

fn source() -> ConfigSource {
    ConfigSource {
        file: fixtures().join("gateway.toml"),
        base_dir: fixtures(),
    }
}

fn http_client() -> HttpClient {
    HttpClient::new(NetworkPolicy::Trusted, &HttpClientOptions::default())
}

/// A clock that starts at the real time and moves only when a test moves it.
#[derive(Clone)]
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn new() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Self(Arc::new(AtomicI64::new(now.as_secs() as i64)))
    }

    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    fn reader(&self) -> impl Fn() -> SystemTime + Send + Sync + 'static {
        let now = self.0.clone();
        move || UNIX_EPOCH + Duration::from_secs(now.load(Ordering::SeqCst) as u64)
    }
}

/// An issuer `name` for `iss` with a PEM key file.
fn pem_issuer(name: &str, iss: &str, key_file: &str, algorithms: &[&str]) -> JwtIssuerSettings {
    JwtIssuerSettings {
        name: name.to_owned(),
        issuer: iss.to_owned(),
        audiences: vec![AUD.to_owned(), "other-audience".to_owned()],
        algorithms: algorithms.iter().map(|a| (*a).to_owned()).collect(),
        key_file: Some(PathBuf::from(key_file)),
        jwks_url: None,
        leeway_s: 30,
        max_token_lifetime_s: 3600,
        private_key_file: None,
    }
}

/// An issuer `legacy` for [`ISS`] with a JWKS URL, allowing ES256 and EdDSA.
fn jwks_issuer(url: &str) -> JwtIssuerSettings {
    JwtIssuerSettings {
        key_file: None,
        jwks_url: Some(url.to_owned()),
        ..pem_issuer("legacy", ISS, "unused", &["ES256", "EdDSA"])
    }
}

/// The verifier of these issuers (all enabled), reading `clock`.
fn verifier(issuers: &[JwtIssuerSettings], clock: &Clock) -> JwtVerifier {
    let enabled: Vec<String> = issuers.iter().map(|i| i.name.clone()).collect();
    JwtVerifier::from_settings(issuers, &enabled, &source(), http_client())
        .unwrap_or_else(|problems| panic!("issuers are valid: {problems:?}"))
        .with_clock(clock.reader())
}

/// The `legacy` issuer of [`ISS`] with `es256.pub.pem`, allowing ES256.
fn es256_verifier(clock: &Clock) -> JwtVerifier {
    verifier(
        &[pem_issuer("legacy", ISS, "es256.pub.pem", &["ES256"])],
        clock,
    )
}

/// Claims that pass: our issuer and audience, issued now, valid 10 minutes.
fn claims(clock: &Clock) -> Value {
    let now = clock.now();
    json!({"iss": ISS, "aud": AUD, "sub": "ordering-system", "iat": now, "exp": now + 600})
}

/// `claims` with `changes` merged in (a `null` removes the claim).
fn with(mut claims: Value, changes: Value) -> Value {
    let object = claims.as_object_mut().unwrap();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

fn encoding_key(alg: Algorithm, private_key_file: &str) -> EncodingKey {
    let pem = std::fs::read(fixtures().join(private_key_file)).unwrap();
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap()
}

/// A token signed by the private key in `private_key_file`.
fn sign(alg: Algorithm, private_key_file: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(alg, private_key_file)).unwrap()
}

fn es256(claims: &Value) -> String {
    sign(Algorithm::ES256, "es256.key.pem", None, claims)
}

/// The head of `POST /v1/events` with `Authorization: Bearer <token>`.
fn request(token: &str) -> Parts {
    request_with(
        "/v1/events",
        &[("authorization", &format!("Bearer {token}"))],
    )
}

fn request_with(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().method("POST").uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

async fn rejection(verifier: &JwtVerifier, token: &str) -> JwtRejection {
    match verifier.verify(&request(token)).await {
        Ok(verified) => panic!("the token was accepted: {verified:?}"),
        Err(rejection) => rejection,
    }
}

// ---------------------------------------------------------------------------------------------
// Accepted tokens.

#[tokio::test]
async fn a_valid_es256_token_is_accepted() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let claims = claims(&clock);

    let verified = verifier.verify(&request(&es256(&claims))).await.unwrap();

    assert_eq!(
        verified,
        VerifiedToken {
            issuer: Arc::from("legacy"),
            iss: Arc::from(ISS),
            sub: Some(Arc::from("ordering-system")),
            exp: clock.now() + 600,
        }
    );
}

#[tokio::test]
async fn a_valid_rs256_token_is_accepted() {
    let clock = Clock::new();
    let verifier = verifier(
        &[pem_issuer("rsa", ISS, "rs256.pub.pem", &["RS256", "PS256"])],
        &clock,
    );
    let claims = with(claims(&clock), json!({"sub": null}));

    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let token = sign(alg, "rs256.key.pem", None, &claims);
        let verified = verifier.verify(&request(&token)).await.unwrap();
        assert_eq!(&*verified.issuer, "rsa");
        assert_eq!(verified.sub, None);
    }
}

#[tokio::test]
async fn a_valid_eddsa_token_is_accepted() {
    let clock = Clock::new();
    let verifier = verifier(
        &[pem_issuer("ed", ISS, "ed25519.pub.pem", &["EdDSA"])],
        &clock,
    );
    let token = sign(Algorithm::EdDSA, "ed25519.key.pem", None, &claims(&clock));

    let verified = verifier.verify(&request(&token)).await.unwrap();

    assert_eq!(&*verified.issuer, "ed");
}

#[tokio::test]
async fn a_valid_es384_token_is_accepted() {
    let clock = Clock::new();
    let verifier = verifier(
        &[pem_issuer("p384", ISS, "es384.pub.pem", &["ES384"])],
        &clock,
    );
    let token = sign(Algorithm::ES384, "es384.key.pem", None, &claims(&clock));

    assert!(verifier.verify(&request(&token)).await.is_ok());
}

#[tokio::test]
async fn every_key_of_a_pem_file_is_tried_and_a_kid_is_ignored() {
    let clock = Clock::new();
    // es256.pub.pem is the second key of the file.
    let verifier = verifier(
        &[pem_issuer("legacy", ISS, "two-keys.pub.pem", &["ES256"])],
        &clock,
    );
    let claims = claims(&clock);

    for (key, kid) in [
        ("es256.key.pem", Some("no-such-kid")),
        ("es256-second.key.pem", None),
    ] {
        let token = sign(Algorithm::ES256, key, kid, &claims);
        assert!(verifier.verify(&request(&token)).await.is_ok(), "{key}");
    }
    let stranger = sign(Algorithm::ES256, "es256-second.key.pem", None, &claims);
    let only_first = es256_verifier(&clock);
    assert_eq!(
        rejection(&only_first, &stranger).await,
        JwtRejection::Signature
    );
}

#[tokio::test]
async fn the_issuer_is_selected_by_the_iss_claim() {
    let clock = Clock::new();
    let verifier = verifier(
        &[
            pem_issuer("legacy", ISS, "es256.pub.pem", &["ES256"]),
            pem_issuer("billing", "billing-platform", "ed25519.pub.pem", &["EdDSA"]),
        ],
        &clock,
    );
    let billing = with(claims(&clock), json!({"iss": "billing-platform"}));

    let token = sign(Algorithm::EdDSA, "ed25519.key.pem", None, &billing);
    let verified = verifier.verify(&request(&token)).await.unwrap();
    assert_eq!(&*verified.issuer, "billing");
    assert_eq!(&*verified.iss, "billing-platform");

    // The legacy key does not sign for billing.
    let forged = sign(Algorithm::ES256, "es256.key.pem", None, &billing);
    assert_eq!(rejection(&verifier, &forged).await, JwtRejection::Algorithm);
}

#[tokio::test]
async fn an_audience_array_containing_a_configured_audience_is_accepted() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let claims = with(claims(&clock), json!({"aud": ["someone-else", AUD]}));

    assert!(verifier.verify(&request(&es256(&claims))).await.is_ok());
}

// ---------------------------------------------------------------------------------------------
// Algorithms and signatures.

#[tokio::test]
async fn alg_none_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(&clock).to_string());

    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.c2lnbmF0dXJl"),
    ] {
        assert_eq!(rejection(&verifier, &token).await, JwtRejection::Algorithm);
    }
}

#[tokio::test]
async fn hs256_signed_with_the_issuers_public_key_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let public_key = std::fs::read(fixtures().join("es256.pub.pem")).unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&clock),
        &EncodingKey::from_secret(&public_key).unwrap(),
    )
    .unwrap();

    assert_eq!(rejection(&verifier, &token).await, JwtRejection::Algorithm);
}

#[tokio::test]
async fn an_algorithm_outside_the_issuers_allow_list_is_refused() {
    let clock = Clock::new();
    let verifier = verifier(
        &[pem_issuer("rsa", ISS, "rs256.pub.pem", &["RS256"])],
        &clock,
    );
    // Correctly signed by the issuer's key, with an algorithm it does not allow.
    let token = sign(Algorithm::PS256, "rs256.key.pem", None, &claims(&clock));

    assert_eq!(rejection(&verifier, &token).await, JwtRejection::Algorithm);
}

#[tokio::test]
async fn a_tampered_signature_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let token = es256(&claims(&clock));
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[10] ^= 0x01;

    let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&bytes));

    assert_eq!(
        rejection(&verifier, &tampered).await,
        JwtRejection::Signature
    );
}

#[tokio::test]
async fn tampered_claims_are_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let token = es256(&claims(&clock));
    let mut parts: Vec<&str> = token.split('.').collect();
    let longer = with(claims(&clock), json!({"exp": clock.now() + 3000}));
    let payload = URL_SAFE_NO_PAD.encode(longer.to_string());
    parts[1] = &payload;

    assert_eq!(
        rejection(&verifier, &parts.join(".")).await,
        JwtRejection::Signature
    );
}

#[tokio::test]
async fn a_token_that_is_not_a_jwt_is_malformed() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);

    for token in ["abc", "a.b", "a.b.c.d", "!!!.eyJ.sig"] {
        let rejection = rejection(&verifier, token).await;
        assert_eq!(rejection.label(), "malformed", "{token}");
    }
    let string_exp = with(claims(&clock), json!({"exp": "99999999999"}));
    assert_eq!(
        rejection(&verifier, &es256(&string_exp)).await,
        JwtRejection::Malformed(MalformedToken::Claims)
    );
}

// ---------------------------------------------------------------------------------------------
// Claims.

#[tokio::test]
async fn a_wrong_issuer_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);

    for iss in [
        json!("legacy-ordering-2"),
        json!("LEGACY-ORDERING"),
        Value::Null,
    ] {
        let token = es256(&with(claims(&clock), json!({ "iss": iss })));
        assert_eq!(
            rejection(&verifier, &token).await,
            JwtRejection::Issuer,
            "{iss}"
        );
    }
}

#[tokio::test]
async fn a_missing_audience_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let token = es256(&with(claims(&clock), json!({"aud": null})));

    assert_eq!(rejection(&verifier, &token).await, JwtRejection::Audience);
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);

    for aud in [json!("genesys-gateway-2"), json!(["a", "b"]), json!([])] {
        let token = es256(&with(claims(&clock), json!({ "aud": aud })));
        assert_eq!(
            rejection(&verifier, &token).await,
            JwtRejection::Audience,
            "{aud}"
        );
    }
}

#[tokio::test]
async fn a_token_expired_beyond_the_leeway_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let now = clock.now();
    let token = es256(&with(
        claims(&clock),
        json!({"iat": now - 600, "exp": now - 31}),
    ));

    assert_eq!(rejection(&verifier, &token).await, JwtRejection::Expired);
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_is_accepted() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let now = clock.now();
    let token = es256(&with(
        claims(&clock),
        json!({"iat": now - 600, "exp": now - 30}),
    ));

    assert!(verifier.verify(&request(&token)).await.is_ok());
}

#[tokio::test]
async fn a_cached_token_is_not_accepted_past_exp_plus_leeway() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let token = es256(&with(claims(&clock), json!({"exp": clock.now() + 60})));
    assert!(verifier.verify(&request(&token)).await.is_ok());

    clock.advance(90); // exp + leeway exactly
    assert!(verifier.verify(&request(&token)).await.is_ok());
    clock.advance(1);
    assert_eq!(rejection(&verifier, &token).await, JwtRejection::Expired);
}

#[tokio::test]
async fn a_token_whose_nbf_is_in_the_future_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let now = clock.now();

    let later = es256(&with(claims(&clock), json!({"nbf": now + 31})));
    assert_eq!(
        rejection(&verifier, &later).await,
        JwtRejection::NotYetValid
    );
    let issued_later = es256(&with(
        claims(&clock),
        json!({"iat": now + 120, "exp": now + 600}),
    ));
    assert_eq!(
        rejection(&verifier, &issued_later).await,
        JwtRejection::NotYetValid
    );
    let within_leeway = es256(&with(claims(&clock), json!({"nbf": now + 30})));
    assert!(verifier.verify(&request(&within_leeway)).await.is_ok());
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let token = es256(&with(claims(&clock), json!({"exp": null})));

    assert_eq!(rejection(&verifier, &token).await, JwtRejection::NoExpiry);
}

#[tokio::test]
async fn a_lifetime_above_the_maximum_is_refused_with_iat() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let now = clock.now();

    // Issued an hour ago, valid a minute more: 3660 s of life.
    let long = es256(&with(
        claims(&clock),
        json!({"iat": now - 3600, "exp": now + 60}),
    ));
    assert_eq!(rejection(&verifier, &long).await, JwtRejection::Lifetime);
    let at_most = es256(&with(
        claims(&clock),
        json!({"iat": now - 3540, "exp": now + 60}),
    ));
    assert!(verifier.verify(&request(&at_most)).await.is_ok());
}

#[tokio::test]
async fn a_lifetime_above_the_maximum_is_refused_without_iat() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let now = clock.now();

    let long = es256(&with(
        claims(&clock),
        json!({"iat": null, "exp": now + 3601}),
    ));
    assert_eq!(rejection(&verifier, &long).await, JwtRejection::Lifetime);
    let at_most = es256(&with(
        claims(&clock),
        json!({"iat": null, "exp": now + 3600}),
    ));
    assert!(verifier.verify(&request(&at_most)).await.is_ok());
}

// ---------------------------------------------------------------------------------------------
// One token per request, and the 401 answers.

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let bearer = format!("Bearer {}", es256(&claims(&clock)));
    let parts = request_with(
        "/v1/events",
        &[("authorization", &bearer), ("authorization", &bearer)],
    );

    assert_eq!(
        verifier.verify(&parts).await,
        Err(JwtRejection::MultipleTokens)
    );
}

#[tokio::test]
async fn a_token_in_the_query_string_is_refused() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let token = es256(&claims(&clock));
    let bearer = format!("Bearer {token}");

    for (uri, headers) in [
        (format!("/v1/events?access_token={token}"), vec![]),
        (format!("/ingest?jwt={token}"), vec![]),
        (
            "/v1/events?token=x".to_owned(),
            vec![("authorization", bearer.as_str())],
        ),
        (
            format!("/v1/events?q={token}"),
            vec![("authorization", bearer.as_str())],
        ),
    ] {
        let parts = request_with(&uri, &headers);
        assert_eq!(
            verifier.verify(&parts).await,
            Err(JwtRejection::MisplacedToken),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn a_missing_token_is_answered_401_authentication_required_with_the_realm() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let rejection = verifier
        .verify(&request_with("/v1/events", &[]))
        .await
        .unwrap_err();
    assert_eq!(rejection, JwtRejection::Missing);
    assert_eq!(rejection.label(), "missing");

    let response = ApiError::from(rejection).into_response();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"genesys-gateway\""
    );
    let body = body_json(response).await;
    assert_eq!(body["code"], "authentication.required");
    assert_eq!(body["status"], 401);
}

#[tokio::test]
async fn a_rejected_token_is_answered_401_invalid_token_with_the_reason() {
    let clock = Clock::new();
    let verifier = es256_verifier(&clock);
    let now = clock.now();
    let token = es256(&with(
        claims(&clock),
        json!({"iat": now - 900, "exp": now - 600}),
    ));
    let rejection = rejection(&verifier, &token).await;
    assert_eq!(rejection.label(), "expired");

    let error = ApiError::from(rejection);
    assert_eq!(error.code(), ErrorCode::InvalidToken);
    assert!(!error.message().contains(&token));
    let response = error.into_response();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"the token has expired\""
    );
    let body = body_json(response).await;
    assert_eq!(body["code"], "invalid.token");
    assert!(!body.to_string().contains(&token));
}

#[tokio::test]
async fn every_rejection_but_a_missing_token_is_invalid_token() {
    let malformed = ApiError::from(JwtRejection::Malformed(MalformedToken::Scheme));
    assert_eq!(malformed.code(), ErrorCode::InvalidToken);
    let multiple = ApiError::from(JwtRejection::MultipleTokens).into_response();
    assert_eq!(
        multiple.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"more than one token was sent\""
    );
}

async fn body_json(response: Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Building the verifier.

#[test]
fn key_file_problems_are_reported_at_the_issuers_key_file() {
    let issuers = [
        pem_issuer("private", "a", "es256.key.pem", &["ES256"]),
        pem_issuer("absent", "b", "no-such-file.pem", &["ES256"]),
        pem_issuer("mismatch", "c", "es256.pub.pem", &["ES384"]),
        pem_issuer("fine", "d", "es256.pub.pem", &["ES256"]),
    ];
    let enabled: Vec<String> = ["private", "absent", "mismatch", "fine", "ghost"]
        .map(str::to_owned)
        .into();

    let problems =
        JwtVerifier::from_settings(&issuers, &enabled, &source(), http_client()).unwrap_err();

    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "jwt_issuers[0].key_file",
            "jwt_issuers[1].key_file",
            "jwt_issuers[2].key_file",
            "ingest.auth.issuers[4]",
        ]
    );
    assert!(problems[0].message.contains("private key"), "{problems:?}");
    // No key material in the messages.
    assert!(problems.iter().all(|p| !p.message.contains("MIG")));
}

#[test]
fn disabled_issuers_are_not_loaded_and_issuers_must_be_unique_by_iss() {
    let issuers = [
        pem_issuer("legacy", ISS, "es256.pub.pem", &["ES256"]),
        pem_issuer("broken", "x", "no-such-file.pem", &["ES256"]),
        pem_issuer("twin", ISS, "ed25519.pub.pem", &["EdDSA"]),
    ];
    let verifier =
        JwtVerifier::from_settings(&issuers, &["legacy".to_owned()], &source(), http_client())
            .unwrap();
    assert_eq!(verifier.issuer_names(), ["legacy"]);

    let problems = JwtVerifier::from_settings(
        &issuers,
        &["legacy".to_owned(), "twin".to_owned()],
        &source(),
        http_client(),
    )
    .unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "jwt_issuers[2].issuer");
}

// ---------------------------------------------------------------------------------------------
// JWKS: a local server counting its fetches.

/// A JWK of a fixture public key, with a `kid`.
fn jwk(public_key_file: &str, alg: Algorithm, kid: &str) -> Value {
    let pem = std::fs::read(fixtures().join(public_key_file)).unwrap();
    let key = match alg {
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        _ => DecodingKey::from_ec_pem(&pem),
    }
    .unwrap();
    let mut jwk = Jwk::from_decoding_key(&key, Some(alg)).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

fn key_a() -> Value {
    jwk("es256.pub.pem", Algorithm::ES256, "key-a")
}

fn key_b() -> Value {
    jwk("ed25519.pub.pem", Algorithm::EdDSA, "key-b")
}

fn token_a(clock: &Clock, sub: &str) -> String {
    let claims = with(claims(clock), json!({ "sub": sub }));
    sign(Algorithm::ES256, "es256.key.pem", Some("key-a"), &claims)
}

fn token_b(clock: &Clock, sub: &str) -> String {
    let claims = with(claims(clock), json!({ "sub": sub }));
    sign(Algorithm::EdDSA, "ed25519.key.pem", Some("key-b"), &claims)
}

fn token_with_kid(clock: &Clock, kid: &str) -> String {
    sign(Algorithm::ES256, "es256.key.pem", Some(kid), &claims(clock))
}

#[derive(Clone)]
struct JwksState {
    keys: Arc<Mutex<Vec<Value>>>,
    up: Arc<AtomicBool>,
    fetches: Arc<AtomicU64>,
    counted: watch::Sender<u64>,
}

/// A JWKS endpoint on 127.0.0.1:0: serves its keys (503 while down) and counts every request.
struct JwksServer {
    url: String,
    state: JwksState,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> Self {
        let state = JwksState {
            keys: Arc::new(Mutex::new(keys)),
            up: Arc::new(AtomicBool::new(true)),
            fetches: Arc::new(AtomicU64::new(0)),
            counted: watch::channel(0).0,
        };
        async fn serve(State(state): State<JwksState>) -> Response {
            let n = state.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            state.counted.send_replace(n);
            if !state.up.load(Ordering::SeqCst) {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            let keys = state.keys.lock().unwrap().clone();
            axum::Json(json!({ "keys": keys })).into_response()
        }
        let app = Router::new()
            .route("/.well-known/jwks.json", get(serve))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/.well-known/jwks.json"),
            state,
        }
    }

    fn fetches(&self) -> u64 {
        self.state.fetches.load(Ordering::SeqCst)
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock().unwrap() = keys;
    }

    fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    /// Waits (bounded) until the server has been asked at least `n` times.
    async fn fetched(&self, n: u64) {
        let mut counted = self.state.counted.subscribe();
        tokio::time::timeout(Duration::from_secs(10), counted.wait_for(|c| *c >= n))
            .await
            .expect("the JWKS was fetched in time")
            .unwrap();
    }
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_at_most_once_per_cooldown() {
    let jwks = JwksServer::start(vec![key_a()]).await;
    let clock = Clock::new();
    let verifier = verifier(&[jwks_issuer(&jwks.url)], &clock);
    assert!(
        verifier
            .verify(&request(&token_a(&clock, "s1")))
            .await
            .is_ok()
    );
    assert_eq!(jwks.fetches(), 1);
    clock.advance(30); // the cooldown of that first fetch has passed

    let first = token_with_kid(&clock, "unknown-1");
    let second = token_with_kid(&clock, "unknown-2");
    assert_eq!(rejection(&verifier, &first).await, JwtRejection::UnknownKey);
    assert_eq!(
        rejection(&verifier, &second).await,
        JwtRejection::UnknownKey
    );
    assert_eq!(jwks.fetches(), 2, "exactly one refetch within the cooldown");

    clock.advance(29);
    assert_eq!(rejection(&verifier, &first).await, JwtRejection::UnknownKey);
    assert_eq!(jwks.fetches(), 2);
    clock.advance(1);
    assert_eq!(rejection(&verifier, &first).await, JwtRejection::UnknownKey);
    assert_eq!(jwks.fetches(), 3, "the cooldown has passed");
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_refetch() {
    let jwks = JwksServer::start(vec![key_a()]).await;
    let clock = Clock::new();
    let verifier = verifier(&[jwks_issuer(&jwks.url)], &clock);
    let tokens: Vec<String> = (0..8)
        .map(|n| token_with_kid(&clock, &format!("unknown-{n}")))
        .collect();

    let results = futures_util::future::join_all(
        tokens
            .iter()
            .map(|token| verifier.verify_token(token.as_str())),
    )
    .await;

    assert!(results.iter().all(|r| *r == Err(JwtRejection::UnknownKey)));
    assert_eq!(jwks.fetches(), 1);
}

#[tokio::test]
async fn the_cached_key_set_still_verifies_when_the_jwks_endpoint_is_down() {
    let jwks = JwksServer::start(vec![key_a()]).await;
    let clock = Clock::new();
    let verifier = verifier(&[jwks_issuer(&jwks.url)], &clock);
    assert!(
        verifier
            .verify(&request(&token_a(&clock, "s1")))
            .await
            .is_ok()
    );

    jwks.set_up(false);
    clock.advance(31);
    let unknown = token_with_kid(&clock, "unknown");
    assert_eq!(
        rejection(&verifier, &unknown).await,
        JwtRejection::UnknownKey
    );
    assert_eq!(jwks.fetches(), 2, "the failed refetch happened");

    // A token never seen before, signed by the key of the last good set.
    let fresh = token_a(&clock, "s2");
    let verified = verifier.verify(&request(&fresh)).await.unwrap();
    assert_eq!(verified.sub.as_deref(), Some("s2"));
}

#[tokio::test]
async fn a_new_kid_in_the_jwks_verifies_after_the_refetch() {
    let jwks = JwksServer::start(vec![key_a()]).await;
    let clock = Clock::new();
    let verifier = verifier(&[jwks_issuer(&jwks.url)], &clock);
    let old = token_a(&clock, "old");
    assert!(verifier.verify(&request(&old)).await.is_ok());

    jwks.set_keys(vec![key_a(), key_b()]);
    let rotated = token_b(&clock, "new");
    // Fetched a moment ago: the cooldown holds the refetch back.
    assert_eq!(
        rejection(&verifier, &rotated).await,
        JwtRejection::UnknownKey
    );
    assert_eq!(jwks.fetches(), 1);

    clock.advance(30);
    let verified = verifier.verify(&request(&rotated)).await.unwrap();
    assert_eq!(verified.sub.as_deref(), Some("new"));
    assert_eq!(jwks.fetches(), 2);

    // The provider withdraws key-a: once that set is fetched, its tokens stop, cached or not.
    jwks.set_keys(vec![key_b()]);
    clock.advance(30);
    assert_eq!(
        rejection(&verifier, &token_with_kid(&clock, "other")).await,
        JwtRejection::UnknownKey
    );
    assert_eq!(jwks.fetches(), 3);
    assert_eq!(rejection(&verifier, &old).await, JwtRejection::UnknownKey);
}

#[tokio::test]
async fn the_startup_fetch_loads_the_keys_and_counts_for_the_cooldown() {
    let jwks = JwksServer::start(vec![key_a()]).await;
    let clock = Clock::new();
    let verifier = verifier(&[jwks_issuer(&jwks.url)], &clock);
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    verifier.spawn_refresh(shutdown.clone(), &tasks);
    jwks.fetched(1).await;

    assert!(
        verifier
            .verify(&request(&token_a(&clock, "s1")))
            .await
            .is_ok()
    );
    assert_eq!(
        rejection(&verifier, &token_with_kid(&clock, "unknown")).await,
        JwtRejection::UnknownKey
    );
    assert_eq!(jwks.fetches(), 1);

    shutdown.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("the refresh task stops on shutdown");
}

#[tokio::test]
async fn a_jwks_unavailable_at_start_is_not_fatal_and_is_fetched_later() {
    let jwks = JwksServer::start(vec![key_a()]).await;
    jwks.set_up(false);
    let clock = Clock::new();
    let verifier = verifier(&[jwks_issuer(&jwks.url)], &clock);
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    verifier.spawn_refresh(shutdown.clone(), &tasks);
    jwks.fetched(1).await;

    let token = token_a(&clock, "s1");
    let rejected = verifier.verify(&request(&token)).await.unwrap_err();
    assert_eq!(rejected, JwtRejection::KeysUnavailable);
    assert_eq!(
        jwks.fetches(),
        1,
        "within the cooldown of the failed start-up fetch"
    );

    jwks.set_up(true);
    clock.advance(30);
    assert!(verifier.verify(&request(&token)).await.is_ok());
    assert_eq!(jwks.fetches(), 2);
    shutdown.cancel();
}

#[tokio::test]
async fn an_unreachable_jwks_leaves_the_keys_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    drop(listener);
    let clock = Clock::new();
    let verifier = verifier(&[jwks_issuer(&url)], &clock);

    assert_eq!(
        rejection(&verifier, &token_a(&clock, "s1")).await,
        JwtRejection::KeysUnavailable
    );
}
