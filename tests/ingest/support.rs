//! What the ingest tests share: a gateway with two issuers (PEM keys of `tests/fixtures/jwt/`),
//! tokens minted with the matching private keys, events, and helpers per endpoint.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{TestApp, base_config};

/// The `iss` of the issuer `legacy`.
pub const ISS: &str = "legacy-ordering";
/// The `iss` of the issuer `other`.
pub const OTHER_ISS: &str = "other-system";
/// The audience both issuers accept.
pub const AUD: &str = "genesys-gateway";

/// `tests/fixtures/jwt/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The configuration of [`spawn`]: issuer `legacy` (ES256, RS256 and EdDSA keys in one PEM
/// file) and issuer `other` (another ES256 key), both enabled, `[ingest]` with `extra` lines.
pub fn config(dir_for_keys: &Path, ingest_extra: &str) -> String {
    let mut pem = String::new();
    for file in ["es256.pub.pem", "rs256.pub.pem", "ed25519.pub.pem"] {
        pem.push_str(&std::fs::read_to_string(fixture(file)).unwrap());
    }
    let legacy_keys = dir_for_keys.join("legacy-keys.pem");
    std::fs::write(&legacy_keys, pem).unwrap();
    format!(
        r#"{base}
[[jwt_issuers]]
name = "legacy"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256", "RS256", "EdDSA"]
key_file = "{legacy}"
leeway_s = 30
max_token_lifetime_s = 3600

[[jwt_issuers]]
name = "other"
issuer = "{OTHER_ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
key_file = "{other}"

[ingest]
auth = {{ type = "jwt", issuers = ["legacy", "other"] }}
max_batch = 5
{ingest_extra}
"#,
        base = base_config(),
        legacy = legacy_keys.display(),
        other = fixture("es256-second.pub.pem").display(),
    )
}

/// A gateway with [`config`].
pub async fn spawn(ingest_extra: &str) -> TestApp {
    let keys = tempfile::tempdir().unwrap().keep();
    TestApp::spawn_with(&config(&keys, ingest_extra)).await
}

/// Claims the `legacy` issuer accepts: valid 10 minutes.
pub fn claims() -> Value {
    let now = now();
    json!({"iss": ISS, "aud": AUD, "sub": "ordering", "iat": now, "exp": now + 600})
}

/// `claims` with `changes` merged in (`null` removes a claim).
pub fn with(mut claims: Value, changes: Value) -> Value {
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

/// A token over `claims` signed by the fixture private key `key_file` with `alg`.
pub fn sign(alg: Algorithm, key_file: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(key_file)).unwrap();
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
}

/// A valid ES256 token of the `legacy` issuer.
pub fn token() -> String {
    sign(Algorithm::ES256, "es256.key.pem", &claims())
}

/// A valid token of the `other` issuer.
pub fn other_token() -> String {
    let claims = with(claims(), json!({"iss": OTHER_ISS}));
    sign(Algorithm::ES256, "es256-second.key.pem", &claims)
}

/// A valid event with this `transaction_id`.
pub fn event(transaction_id: &str) -> Value {
    json!({
        "transaction_id": transaction_id,
        "event_type": "Order Created",
        "timestamp": "2024-05-01T10:30:00Z",
        "amount": 12.5,
        "currency": "EUR",
    })
}

/// The key derived for `transaction_id` of the `legacy` issuer.
pub fn derived_key(iss: &str, transaction_id: &str) -> String {
    format!("{:x}", Sha256::digest(format!("{iss}:{transaction_id}")))
}

/// A fresh transaction id (tests share no database, but stay readable).
pub fn txid(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

impl TestApp {
    /// `POST /v1/events` with `token` and the raw JSON text `body`.
    pub async fn post_events_raw(&self, token: &str, body: String) -> reqwest::Response {
        self.client
            .post(self.url("/v1/events"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// `POST /v1/events` with `token` and `body`.
    pub async fn post_events(&self, token: &str, body: &Value) -> reqwest::Response {
        self.post_events_raw(token, body.to_string()).await
    }

    /// `POST /v1/events` that must answer 202; its `results`.
    pub async fn accepted(&self, token: &str, body: &Value) -> Vec<Value> {
        let response = self.post_events(token, body).await;
        let status = response.status();
        let answer: Value = response.json().await.expect("json");
        assert_eq!(status, 202, "{answer}");
        answer["results"].as_array().expect("results").clone()
    }

    /// `GET /v1/events/{id}` with `token`.
    pub async fn get_event(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/events/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// The value of the sample `name{labels}` in `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().unwrap())
            })
            .unwrap_or(0.0)
    }

    /// The audit records of `kind`, newest first.
    pub async fn audit(&self, kind: &str) -> Vec<Value> {
        let response = self
            .admin_get(&format!("/admin/v1/audit?kind={kind}&limit=1000"))
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["entities"].as_array().unwrap().clone()
    }
}

/// A signing secret for test targets (`whsec_` + base64 of 32 bytes).
pub const TARGET_SECRET: &str = "whsec_UBaVFOnYgW8ew5k9ywpCE/a+7VRWKymegwmSkvzy2fs=";

/// A declarative target whose endpoint refuses connections (port 9 on loopback is closed on
/// test machines), so its deliveries stay pending.
pub fn unreachable_target() -> String {
    format!(
        r#"
[[targets]]
name = "nowhere"
endpoint_url = "http://127.0.0.1:9/events"
auth = {{ type = "NONE" }}
retry_policy = {{ max_retries = 10, backoff = "EXPONENTIAL", initial_delay_s = 30 }}
event_types = ["custom.legacy.orders.*"]
secret = "{TARGET_SECRET}"
"#
    )
}

/// A local HTTP endpoint that answers 200 to every POST and keeps the bodies.
pub struct Receiver {
    addr: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Receiver {
    /// Starts it on a free loopback port.
    pub async fn start() -> Self {
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |body: String| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body);
                    http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, bodies }
    }

    /// A declarative target delivering every ingested event here.
    pub fn target(&self) -> String {
        format!(
            r#"
[[targets]]
name = "receiver"
endpoint_url = "http://{}/events"
auth = {{ type = "NONE" }}
retry_policy = {{ max_retries = 3, backoff = "LINEAR", initial_delay_s = 1 }}
event_types = ["custom.legacy.orders.*"]
secret = "{TARGET_SECRET}"
"#,
            self.addr
        )
    }

    /// The first body received that names `event_id` (polls for 20 s at most).
    pub async fn wait_for(&self, event_id: &str) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(body) = self
                .bodies
                .lock()
                .unwrap()
                .iter()
                .find(|b| b.contains(event_id))
            {
                return body.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "event {event_id} never arrived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
