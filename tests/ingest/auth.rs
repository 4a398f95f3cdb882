//! The JWT rules of the issue's acceptance list through the HTTP surface: each token posted to
//! `POST /v1/events` of a running gateway, answered 202 or 401 with the reason in
//! `WWW-Authenticate`, and counted in `gateway_ingest_rejections_total{reason}`. (The verifier's
//! finer points — caches, JWKS cooldowns with a test clock — are in `jwt.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::extract::State;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{TestApp, assert_error, base_config};
use crate::support::{AUD, ISS, claims, event, fixture, now, sign, spawn, token, txid, with};

/// What a request with this token must get.
enum Expect {
    Accepted,
    /// 401 `invalid.token`, this `error_description`, this metric reason.
    Refused(&'static str, &'static str),
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// `alg: none` with an empty signature.
fn alg_none() -> String {
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    )
}

/// HS256 "signed" with the issuer's public key file as the HMAC secret.
fn hs256_with_public_key() -> String {
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT"})),
        b64(&claims())
    );
    let secret = std::fs::read(fixture("es256.pub.pem")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// A valid token whose signature has one byte changed.
fn tampered() -> String {
    let good = token();
    let (head, signature) = good.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[10] ^= 0x01;
    format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn es256(claims: &Value) -> String {
    sign(Algorithm::ES256, "es256.key.pem", claims)
}

#[tokio::test]
async fn every_rule_of_the_acceptance_list_holds_through_http() {
    let app = spawn("").await;
    let n = now();
    let cases: Vec<(&str, String, Expect)> = vec![
        ("valid ES256", token(), Expect::Accepted),
        (
            "valid RS256",
            sign(Algorithm::RS256, "rs256.key.pem", &claims()),
            Expect::Accepted,
        ),
        (
            "valid EdDSA",
            sign(Algorithm::EdDSA, "ed25519.key.pem", &claims()),
            Expect::Accepted,
        ),
        (
            "alg none",
            alg_none(),
            Expect::Refused("the token signing algorithm is not allowed", "algorithm"),
        ),
        (
            "HS256 with the public key as secret",
            hs256_with_public_key(),
            Expect::Refused("the token signing algorithm is not allowed", "algorithm"),
        ),
        (
            "wrong iss",
            es256(&with(claims(), json!({"iss": "someone-else"}))),
            Expect::Refused("the token issuer is not accepted", "issuer"),
        ),
        (
            "aud missing",
            es256(&with(claims(), json!({"aud": null}))),
            Expect::Refused("", "audience"),
        ),
        (
            "aud wrong",
            es256(&with(claims(), json!({"aud": "another-service"}))),
            Expect::Refused("", "audience"),
        ),
        (
            "expired beyond the leeway",
            es256(&with(claims(), json!({"iat": n - 600, "exp": n - 31}))),
            Expect::Refused("", "expired"),
        ),
        (
            "expired within the leeway",
            es256(&with(claims(), json!({"iat": n - 600, "exp": n - 5}))),
            Expect::Accepted,
        ),
        (
            "nbf in the future",
            es256(&with(claims(), json!({"nbf": n + 300}))),
            Expect::Refused("", "not_yet_valid"),
        ),
        (
            "no exp",
            es256(&with(claims(), json!({"exp": null}))),
            Expect::Refused("", "no_expiry"),
        ),
        (
            "lifetime above the maximum",
            es256(&with(claims(), json!({"iat": n, "exp": n + 7200}))),
            Expect::Refused("", "lifetime"),
        ),
        (
            "tampered signature",
            tampered(),
            Expect::Refused("", "signature"),
        ),
        (
            "signed by another key",
            sign(Algorithm::ES256, "es256-second.key.pem", &claims()),
            Expect::Refused("", "signature"),
        ),
    ];
    let mut counted: std::collections::BTreeMap<&str, f64> = Default::default();
    for (name, token, expect) in cases {
        let response = app.post_events(&token, &event(&txid("auth"))).await;
        match expect {
            Expect::Accepted => assert_eq!(response.status(), 202, "{name}"),
            Expect::Refused(description, reason) => {
                *counted.entry(reason).or_default() += 1.0;
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .unwrap_or_else(|| panic!("{name}: no WWW-Authenticate"))
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert!(
                    challenge.starts_with(r#"Bearer error="invalid_token", error_description=""#),
                    "{name}: {challenge}"
                );
                assert!(challenge.contains(description), "{name}: {challenge}");
                let body = assert_error(response, 401, "invalid.token").await;
                assert!(
                    !body["message"].as_str().unwrap().contains(&token),
                    "{name}"
                );
            }
        }
    }
    for (reason, count) in counted {
        let sample = format!(r#"gateway_ingest_rejections_total{{reason="{reason}"}}"#);
        assert_eq!(app.metric(&sample).await, count, "{reason}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_missing_token_is_authentication_required_with_the_realm() {
    let app = spawn("").await;
    let response = app
        .client
        .post(app.url("/v1/events"))
        .json(&event(&txid("none")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="genesys-gateway""#
    );
    assert_error(response, 401, "authentication.required").await;
    assert_eq!(
        app.metric(r#"gateway_ingest_rejections_total{reason="missing"}"#)
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_token_in_the_query_string_is_refused() {
    let app = spawn("").await;
    for path in [
        format!("/v1/events?access_token={}", token()),
        format!("/v1/events?x={}", token()),
    ] {
        // Also when the header holds a good token.
        let response = app
            .client
            .post(app.url(&path))
            .bearer_auth(token())
            .json(&event(&txid("query")))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("www-authenticate"));
        assert_error(response, 401, "invalid.token").await;
    }
    assert_eq!(
        app.metric(r#"gateway_ingest_rejections_total{reason="misplaced_token"}"#)
            .await,
        2.0
    );
    app.stop().await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let app = spawn("").await;
    let bearer = format!("Bearer {}", token());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("authorization", bearer.parse().unwrap());
    headers.append("authorization", bearer.parse().unwrap());
    let response = app
        .client
        .post(app.url("/v1/events"))
        .headers(headers)
        .json(&event(&txid("two")))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid.token").await;
    assert_eq!(
        app.metric(r#"gateway_ingest_rejections_total{reason="multiple_tokens"}"#)
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn the_get_endpoint_is_behind_the_same_token_check() {
    let app = spawn("").await;
    let id = uuid::Uuid::now_v7();
    let response = app
        .client
        .get(app.url(&format!("/v1/events/{id}")))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "authentication.required").await;
    let response = app.get_event(&alg_none(), &id.to_string()).await;
    assert_error(response, 401, "invalid.token").await;
    app.stop().await;
}

/// A JWKS endpoint that serves one key set, counts its fetches and can be taken down.
#[derive(Clone)]
struct Jwks {
    keys: Value,
    fetches: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

async fn jwks(State(jwks): State<Jwks>) -> axum::response::Response {
    jwks.fetches.fetch_add(1, Ordering::SeqCst);
    if jwks.down.load(Ordering::SeqCst) {
        return http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(jwks.keys.clone()).into_response()
}

fn jwk(kid: &str) -> Value {
    // The public point of es256.pub.pem, taken from the key's SPKI (the last 64 bytes).
    let text = std::fs::read_to_string(fixture("es256.pub.pem")).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            text.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let point = &der[der.len() - 64..];
    json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
           "x": URL_SAFE_NO_PAD.encode(&point[..32]), "y": URL_SAFE_NO_PAD.encode(&point[32..])})
}

fn with_kid(kid: &str) -> String {
    let pem = std::fs::read(fixture("es256.key.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims(), &key).unwrap()
}

#[tokio::test]
async fn a_jwks_issuer_verifies_through_http_and_survives_its_endpoint_going_down() {
    let state = Jwks {
        keys: json!({"keys": [jwk("key-1")]}),
        fetches: Arc::new(AtomicU64::new(0)),
        down: Arc::new(AtomicBool::new(false)),
    };
    let server = axum::Router::new()
        .route("/jwks.json", axum::routing::get(jwks))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, server).await });
    let config = format!(
        r#"{base}
[[jwt_issuers]]
name = "idp"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
jwks_url = "{jwks_url}"

[ingest]
auth = {{ type = "jwt", issuers = ["idp"] }}
"#,
        base = base_config()
    );
    let app = TestApp::spawn_with(&config).await;
    // The start-up fetch happens in the background.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while state.fetches.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no start-up fetch");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let response = app
        .post_events(&with_kid("key-1"), &event(&txid("jwks")))
        .await;
    assert_eq!(response.status(), 202);
    let after_start = state.fetches.load(Ordering::SeqCst);
    assert_eq!(after_start, 1, "the start-up fetch served the first token");

    // Unknown kids within the 30 s cooldown of that fetch: refused, no refetch storm.
    for _ in 0..5 {
        let response = app
            .post_events(&with_kid("key-2"), &event(&txid("jwks")))
            .await;
        assert_error(response, 401, "invalid.token").await;
    }
    assert!(
        state.fetches.load(Ordering::SeqCst) <= after_start + 1,
        "at most one refetch within the cooldown"
    );

    // The endpoint goes down: the cached set still verifies.
    state.down.store(true, Ordering::SeqCst);
    let response = app
        .post_events(&with_kid("key-1"), &event(&txid("jwks")))
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        app.metric(r#"gateway_ingest_rejections_total{reason="unknown_key"}"#)
            .await,
        5.0
    );
    app.stop().await;
}
