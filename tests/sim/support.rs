//! Shared harness of the simulator tests: a simulator on 127.0.0.1:0 and small HTTP helpers.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use genesys_gateway::sim::{SimOptions, Simulator};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The built-in "Support" queue.
pub const SUPPORT: &str = "a3b1f7c2-0000-4000-8000-000000000001";
/// The built-in "Billing" queue.
pub const BILLING: &str = "a3b1f7c2-0000-4000-8000-000000000002";

/// A running simulator and a client for it.
pub struct TestSim {
    pub sim: Simulator,
    pub base: String,
    pub http: reqwest::Client,
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl TestSim {
    pub async fn start() -> Self {
        Self::start_with(SimOptions::default()).await
    }

    pub async fn start_with(options: SimOptions) -> Self {
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), options)
            .await
            .expect("simulator starts");
        let base = sim.base_url();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        Self { sim, base, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A token of the built-in client.
    pub async fn token(&self) -> String {
        crate::common::sim_token(&self.http, &self.base).await
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    /// A control call (`/__sim/...`).
    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("control request")
    }

    pub async fn fault(&self, fault: Value) {
        let response = self
            .control(reqwest::Method::POST, "/__sim/faults", Some(fault))
            .await;
        assert_eq!(response.status(), 201);
    }

    pub async fn requests(&self, glob: &str) -> Vec<Value> {
        let response = self
            .http
            .get(self.url("/__sim/requests"))
            .query(&[("path", glob)])
            .send()
            .await
            .expect("requests");
        assert_eq!(response.status(), 200);
        response.json::<Vec<Value>>().await.expect("json")
    }

    /// Creates a channel subscribed to `topics` and connects its WebSocket.
    pub async fn channel(&self, token: &str, topics: &[String]) -> (Value, Ws) {
        let response = self
            .post(token, "/api/v2/notifications/channels", &json!({}))
            .await;
        assert_eq!(response.status(), 200);
        let channel: Value = response.json().await.expect("json");
        let id = channel["id"].as_str().expect("id").to_owned();
        let body: Vec<Value> = topics.iter().map(|t| json!({ "id": t })).collect();
        let response = self
            .send(
                reqwest::Method::PUT,
                token,
                &format!("/api/v2/notifications/channels/{id}/subscriptions"),
                Some(&Value::Array(body)),
            )
            .await;
        assert_eq!(response.status(), 200);
        let uri = channel["connectUri"]
            .as_str()
            .expect("connectUri")
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(uri)
            .await
            .expect("websocket");
        (channel, ws)
    }
}

/// The callbacks topic of a queue.
pub fn callbacks_topic(queue: &str) -> String {
    format!("v2.routing.queues.{queue}.conversations.callbacks")
}

/// The next text message as JSON, skipping heartbeats, within `within`.
pub async fn next_event(ws: &mut Ws, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("an event in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(text.as_str()).expect("json message");
            if value["topicName"] == "channel.metadata"
                && value["eventBody"]["message"] == "WebSocket Heartbeat"
            {
                continue;
            }
            return value;
        }
    }
}

/// The next text message as JSON (heartbeats included), or `None` after `within`.
pub async fn next_text(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(text)))) => {
                return Some(serde_json::from_str(text.as_str()).expect("json message"));
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("socket ended: {other:?}"),
        }
    }
}

/// Asserts a Genesys `ErrorBody` with this status and code.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let correlation = response
        .headers()
        .get("inin-correlation-id")
        .expect("inin-correlation-id")
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("json error body");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["messageParams"].is_object(), "{body}");
    assert!(body["details"].is_array(), "{body}");
    assert!(body["errors"].is_array(), "{body}");
    assert_eq!(body["contextId"], correlation.as_str(), "{body}");
    body
}
