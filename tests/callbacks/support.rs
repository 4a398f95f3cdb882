//! A gateway with one callback queue, pointed at a simulator of its own (fast heartbeat).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use genesys_gateway::sim::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, SimOptions, Simulator};
use serde_json::{Value, json};

use crate::common::{TestApp, base_config};

/// The queue of the tests (the simulator's fixtures know it).
pub const QUEUE: &str = "a3b1f7c2-0000-4000-8000-000000000001";
/// The portal key.
pub const KEY: &str = "portal-key-for-tests";
/// The `[data_actions.auth]` password.
pub const PUSH_PASSWORD: &str = "push-secret";
/// Longest wait for something asynchronous.
pub const WAIT: Duration = Duration::from_secs(20);

/// A gateway and its simulator.
pub struct Env {
    pub app: TestApp,
    pub sim: Simulator,
    pub http: reqwest::Client,
}

/// The configuration of a gateway on `sim`, with `store` as the store URL.
pub fn config(sim: &str, store: &str, capacity: u32) -> String {
    base_config()
        .replace("sqlite://data/gateway.db", store)
        .replace(
            "[genesys]\nsimulate = true\n",
            &format!(
                "[genesys]\nsimulate = false\napi_url = \"{sim}\"\nlogin_url = \"{sim}\"\n\
                 client_id = \"{SIM_CLIENT_ID}\"\nclient_secret = \"{SIM_CLIENT_SECRET}\"\n\
                 notifications_heartbeat_timeout_s = 2\n"
            ),
        )
        + &format!(
            r#"
[data_actions]
auth = {{ type = "basic", username = "genesys", password = "{PUSH_PASSWORD}" }}

[callbacks]
auth = {{ type = "header", name = "X-Api-Key", value = "{KEY}" }}

[[callbacks.queues]]
id = "{QUEUE}"
name = "Support"
timezone = "UTC"
open_hours = ["mon-sun 00:00-24:00"]
slot_capacity = {capacity}
max_slot_minutes = 60
booking_horizon_days = 30
"#
        )
}

/// A simulator with a 300 ms heartbeat.
pub async fn simulator() -> Simulator {
    Simulator::start(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            heartbeat: Duration::from_millis(300),
            socket_closing_delay: Duration::from_secs(3),
            rate_limit_per_min: 0,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap()
}

impl Env {
    /// A gateway on SQLite with `capacity` places per slot.
    pub async fn start(capacity: u32) -> Self {
        Self::start_on("sqlite://data/gateway.db", capacity, |text| text).await
    }

    /// A gateway on the store at `store` with `capacity` places per slot, its configuration
    /// text adjusted by `adjust`.
    pub async fn start_on(
        store: &str,
        capacity: u32,
        adjust: impl FnOnce(String) -> String,
    ) -> Self {
        let sim = simulator().await;
        let app = TestApp::spawn_with(&adjust(config(&sim.base_url(), store, capacity))).await;
        Self {
            app,
            sim,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    pub fn sim_url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    /// `POST /v1/callbacks` with the portal key.
    pub async fn reserve(&self, body: &Value) -> reqwest::Response {
        reserve_at(&self.http, &self.app.url("/v1/callbacks"), body).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.app.url(path))
            .header("X-Api-Key", KEY)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http
            .delete(self.app.url(path))
            .header("X-Api-Key", KEY)
            .send()
            .await
            .unwrap()
    }

    /// A control call to the simulator.
    pub async fn sim_post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(self.sim_url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    /// The simulator's request log for `glob`.
    pub async fn sim_requests(&self, glob: &str) -> Vec<Value> {
        self.http
            .get(self.sim_url("/__sim/requests"))
            .query(&[("path", glob)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the gateway's copy of `id` has `status`; returns it.
    pub async fn await_status(&self, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let body: Value = self
                .get(&format!("/v1/callbacks/{id}"))
                .await
                .json()
                .await
                .unwrap();
            if body["status"] == status {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The gateway's `gateway_stream_clients`.
    pub async fn stream_clients(&self) -> i64 {
        let text = self
            .http
            .get(self.app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("gateway_stream_clients "))
            .map(|v| v.trim().parse().unwrap())
            .expect("gateway_stream_clients is exported")
    }

    /// Waits until the gateway's `gateway_stream_clients` is `n`, at most `within`.
    pub async fn await_stream_clients(&self, n: i64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let now = self.stream_clients().await;
            if now == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway_stream_clients stayed {now}, not {n}, for {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the simulator has `n` open notification sockets.
    pub async fn await_sockets(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let sockets: Vec<Value> = self
                .http
                .get(self.sim_url("/__sim/notifications/sockets"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if sockets.len() == n {
                return sockets;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sockets: {sockets:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `POST /v1/callbacks` at `url` with the portal key.
pub async fn reserve_at(http: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    http.post(url)
        .header("X-Api-Key", KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A slot of `minutes` starting `days` days from now at 10:00 UTC.
pub fn slot(days: i64, hour: u32, minutes: i64) -> Value {
    let day = (Utc::now() + TimeDelta::days(days)).date_naive();
    let start = day.and_hms_opt(hour, 0, 0).unwrap().and_utc();
    json!({"start": rfc3339(start), "end": rfc3339(start + TimeDelta::minutes(minutes))})
}

/// A valid request for the test queue whose `data` makes its stream frames about 50 KB.
pub fn large_request(slots: Vec<Value>) -> Value {
    let mut body = request(slots);
    let data: serde_json::Map<String, Value> = (0..50)
        .map(|i| (format!("k{i:02}"), Value::String("x".repeat(1000))))
        .collect();
    body["data"] = Value::Object(data);
    body
}

/// A valid request for the test queue.
pub fn request(slots: Vec<Value>) -> Value {
    json!({
        "callbackNumber": "+1 (415) 555-0199",
        "callbackUserName": "Jane",
        "queueId": QUEUE,
        "reason": "billing",
        "timeSlots": slots,
        "data": {"crmId": "c-1"}
    })
}
