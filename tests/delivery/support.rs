//! A local target (an axum server on 127.0.0.1:0 that records every request and answers from
//! a script), a gateway delivering to it, and helpers to enqueue and to wait.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use genesys_gateway::delivery::{DeliveryEngine, DeliveryId, OutboundMessage};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use crate::common::{ADMIN_TOKEN, TestApp, base_config};

/// The secret of the declarative test target.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";
/// The event type the test target takes.
pub const EVENT_TYPE: &str = "custom.legacy.orders.order_created";
/// Longest wait for something asynchronous.
pub const WAIT: Duration = Duration::from_secs(30);

/// One request the target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Whether this is a verification (`gateway.target.verification`).
    pub fn is_verification(&self) -> bool {
        self.json()["type"] == "gateway.target.verification"
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<&'static str>,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
        }
    }
}

#[derive(Default)]
struct Script {
    received: Vec<Received>,
    /// Answers to event deliveries, in order (then 200).
    events: VecDeque<Answer>,
    /// Answers to verifications, in order (then 200).
    verifications: VecDeque<Answer>,
}

/// A local target server.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        at: Instant::now(),
        headers,
        body,
    };
    let mut script = script.lock().unwrap();
    let answer = if received.is_verification() {
        script.verifications.pop_front()
    } else {
        script.events.pop_front()
    }
    .unwrap_or(Answer::status(200));
    script.received.push(received);
    let status = StatusCode::from_u16(answer.status).unwrap();
    match answer.retry_after {
        Some(after) => (status, [("retry-after", after)], "").into_response(),
        None => (status, "").into_response(),
    }
}

impl Target {
    /// A target answering 200 to everything not scripted.
    pub async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new().fallback(receive).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, script }
    }

    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// The next event deliveries get these answers.
    pub fn answer_events(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().events.extend(answers);
    }

    /// Forgets the scripted answers (everything gets 200).
    pub fn clear_answers(&self) {
        let mut script = self.script.lock().unwrap();
        script.events.clear();
        script.verifications.clear();
    }

    /// The next verifications get these answers.
    pub fn answer_verifications(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().verifications.extend(answers);
    }

    /// Every request received, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// The event deliveries received (no verifications, no probes).
    pub fn events(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| !r.is_verification() && r.json()["type"] != "gateway.target.health")
            .collect()
    }
}

/// A gateway configuration with one declarative target `orders` at `url` (EXPONENTIAL from
/// 1 s, `max_retries` retries) and loopback allowed for API targets.
pub fn config(url: &str, max_retries: u32) -> String {
    config_with(
        url,
        max_retries,
        "EXPONENTIAL",
        "allow_cidrs = [\"127.0.0.0/8\"]",
    )
}

/// Like [`config`], with the backoff and the `[delivery]` network lines given.
pub fn config_with(url: &str, max_retries: u32, backoff: &str, network: &str) -> String {
    base_config()
        + &format!(
            r#"
[delivery]
workers = 4
{network}

[[targets]]
name = "orders"
endpoint_url = "{url}"
retry_policy = {{ max_retries = {max_retries}, backoff = "{backoff}", initial_delay_s = 1 }}
headers = {{ X-Source-System = "genesys-gateway" }}
event_types = ["custom.legacy.orders.*"]
secret = "{SECRET}"
"#
        )
}

/// A message of [`EVENT_TYPE`] with `body`.
pub fn message(body: &str) -> OutboundMessage {
    let id = Uuid::now_v7();
    OutboundMessage {
        id,
        event_type: EVENT_TYPE.to_owned(),
        idempotency_key: format!("key-{id}"),
        body: body.to_owned().into(),
    }
}

/// Enqueues `message` in a transaction of its own, commits and wakes the engine.
pub async fn enqueue(engine: &DeliveryEngine, message: &OutboundMessage) -> Vec<DeliveryId> {
    let mut tx = engine.store().begin().await.unwrap();
    let ids = engine.enqueue(&mut tx, message).await.unwrap();
    tx.commit().await.unwrap();
    engine.wake();
    ids
}

/// Polls `check` every 50 ms until it gives `Some`, at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The deliveries of message `id` (as `GET /v1/events/{id}` shows them).
pub async fn deliveries(app: &TestApp, id: Uuid) -> Vec<Value> {
    app.delivery
        .of_message(id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| serde_json::to_value(d).unwrap())
        .collect()
}

/// Waits until the one delivery of message `id` has `status`; returns it.
pub async fn await_delivery(app: &TestApp, id: Uuid, status: &str) -> Value {
    eventually(&format!("the delivery of {id} to be {status}"), || async {
        deliveries(app, id)
            .await
            .into_iter()
            .find(|d| d["status"] == status)
    })
    .await
}

/// The target named `name` as the admin API shows it.
pub async fn target_named(app: &TestApp, name: &str) -> Value {
    let list: Value = app
        .admin_get("/admin/v1/targets")
        .await
        .json()
        .await
        .unwrap();
    list["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no target {name}: {list}"))
}

/// Waits until the target `name` has `status`.
pub async fn await_target_status(app: &TestApp, name: &str, status: &str) -> Value {
    eventually(&format!("target {name} to be {status}"), || async {
        let t = target_named(app, name).await;
        (t["status"] == status).then_some(t)
    })
    .await
}

/// An admin request with a JSON body.
pub async fn admin_send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

/// The Standard Webhooks signature of a delivery with `secret`.
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A gateway delivering to `target` (declarative `orders`), with the target VERIFIED.
pub async fn verified_app(target: &Target, max_retries: u32) -> TestApp {
    let app = TestApp::spawn_with(&config(&target.url(), max_retries)).await;
    await_target_status(&app, "orders", "VERIFIED").await;
    app
}
