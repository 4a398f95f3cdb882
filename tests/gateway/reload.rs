//! Reload as a process-level mechanism: every registered part sees a new configuration, any
//! part can refuse it (then nothing is applied), and calls in flight finish on what they
//! started with.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use genesys_gateway::config::{Environment, Problem};
use genesys_gateway::reload::{Prepared, Reloadable, Staging};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::common::{self, ADMIN_TOKEN, TestApp};

/// A part that records every `public_url` it was asked to prepare and the one it applied, and
/// refuses new settings when told to.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Option<String>>>,
    applied: Arc<Mutex<Option<String>>>,
    refuse: Mutex<bool>,
}

struct Apply {
    applied: Arc<Mutex<Option<String>>>,
    value: Option<String>,
}

impl Reloadable for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn prepare(&self, staging: &mut Staging<'_>) -> Result<Box<dyn Prepared>, Vec<Problem>> {
        let value = staging.settings().data_actions.public_url.clone();
        self.seen.lock().unwrap().push(value.clone());
        if *self.refuse.lock().unwrap() {
            return Err(vec![Problem::new(
                "recorder.public_url",
                "the recorder refuses this configuration",
            )]);
        }
        Ok(Box::new(Apply {
            applied: self.applied.clone(),
            value,
        }))
    }
}

impl Prepared for Apply {
    fn report(&self, report: &mut Map<String, Value>) {
        report.insert("recorded".to_owned(), json!(self.value));
    }

    fn apply(self: Box<Self>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        *self.applied.lock().unwrap() = self.value;
        Box::pin(std::future::ready(()))
    }
}

/// An upstream whose `/v1/slow` waits for a permit; `/version` answers which file it came from.
async fn upstream() -> (String, Arc<Semaphore>, tokio::sync::mpsc::Receiver<()>) {
    let gate = Arc::new(Semaphore::new(0));
    let (arrived_tx, arrived) = tokio::sync::mpsc::channel(4);
    #[derive(Clone)]
    struct Gate(Arc<Semaphore>, tokio::sync::mpsc::Sender<()>);
    let app = Router::new()
        .route(
            "/v1/slow",
            get(|State(Gate(gate, arrived)): State<Gate>| async move {
                let _ = arrived.send(()).await;
                let _permit = gate.acquire().await;
                axum::Json(json!({"version": 1}))
            }),
        )
        .route(
            "/v2/slow",
            get(|| async { axum::Json(json!({"version": 2})) }),
        )
        .with_state(Gate(gate.clone(), arrived_tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), gate, arrived)
}

fn config(upstream: &str, public_url: &str, version: u32, extra_action: bool) -> String {
    let mut text = common::base_config()
        + &format!(
            "[data_actions]\npublic_url = \"{public_url}\"\n\
             [upstreams.u]\nbase_url = \"{upstream}\"\ntimeout_ms = 20000\n\
             [[actions]]\nname = \"slow\"\nupstream = \"u\"\npath = \"/v{version}/slow\"\n\
             timeout_ms = 20000\n"
        );
    if extra_action {
        text.push_str("[[actions]]\nname = \"second\"\nupstream = \"u\"\npath = \"/v2/slow\"\n");
    }
    text
}

async fn reload(app: &TestApp) -> reqwest::Response {
    app.client
        .post(app.url("/admin/v1/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

async fn action_names(app: &TestApp) -> Vec<String> {
    let list: Value = app
        .admin_get("/admin/v1/actions")
        .await
        .json()
        .await
        .unwrap();
    list["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_part_sees_a_new_configuration_and_a_refusal_by_one_applies_none() {
    let (upstream, gate, mut arrived) = upstream().await;
    let recorder = Arc::new(Recorder::default());
    let app = TestApp::spawn_built(
        &config(&upstream, "https://one.example", 1, false),
        &Environment::default(),
        |builder| builder.reloadable(recorder.clone()),
    )
    .await;
    let file = app.dir.path().join("gateway.toml");

    // A call in flight on the first configuration.
    let in_flight = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/v1/actions/slow");
        async move { client.post(url).json(&json!({})).send().await.unwrap() }
    });
    arrived.recv().await.expect("the call reached the upstream");

    // A valid new configuration: both parts see it, both apply it.
    std::fs::write(&file, config(&upstream, "https://two.example", 2, true)).unwrap();
    let r = reload(&app).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["recorded"], "https://two.example", "{report}");
    assert_eq!(report["added"], json!(["second"]), "{report}");
    assert_eq!(
        recorder.seen.lock().unwrap().last().unwrap().as_deref(),
        Some("https://two.example")
    );
    assert_eq!(
        recorder.applied.lock().unwrap().as_deref(),
        Some("https://two.example")
    );
    assert_eq!(action_names(&app).await, ["second", "slow"]);

    // New calls run on the new definition; the call in flight finishes on the old one.
    let r = app
        .client
        .post(app.url("/v1/actions/slow"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    gate.add_permits(1);
    let old = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the call in flight finishes")
        .unwrap();
    assert_eq!(old.status(), 200);
    assert_eq!(old.json::<Value>().await.unwrap()["version"], 1);

    // The second part refuses: nothing is applied, the answer names its problem.
    *recorder.refuse.lock().unwrap() = true;
    std::fs::write(&file, config(&upstream, "https://three.example", 1, false)).unwrap();
    let r = reload(&app).await;
    let body = common::assert_error(r, 400, "invalid.input").await;
    let details = body["details"].as_array().unwrap();
    assert!(
        details
            .iter()
            .any(|d| d["fieldName"] == "recorder.public_url"),
        "{body}"
    );
    assert_eq!(
        recorder.seen.lock().unwrap().last().unwrap().as_deref(),
        Some("https://three.example"),
        "the refusing part saw the new configuration"
    );
    assert_eq!(
        recorder.applied.lock().unwrap().as_deref(),
        Some("https://two.example"),
        "the refused configuration was not applied"
    );
    assert_eq!(
        action_names(&app).await,
        ["second", "slow"],
        "the data actions were not swapped either"
    );
    let r = app
        .client
        .post(app.url("/v1/actions/slow"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    app.stop().await;
}
