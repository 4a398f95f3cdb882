//! Reloading actions without a restart (SPEC §3.2, §3.6): `POST /admin/v1/reload`, and
//! `GET /admin/v1/actions`.
mod common;
mod data_actions_mock;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ADMIN_TOKEN, TestApp, assert_error, base_config};
use data_actions_mock::{MockUpstream, Reply};
use serde_json::{Value, json};

/// A config whose `lookup` action answers `{"version": <version>}` plus the upstream's `id`,
/// and `extra` more TOML at the end.
fn config(mock: &MockUpstream, version: u32, extra: &str) -> String {
    format!(
        r#"{base}
[upstreams.crm]
base_url = "{url}"
retry = {{ max_attempts = 1 }}
circuit_breaker = {{ failure_threshold = 1, open_ms = 60000 }}

[[actions]]
name = "lookup"
upstream = "crm"
path = "/things/{{id}}"
[actions.params]
id = "/id"
[actions.output]
"/version" = {{ value = {version} }}
"/id" = "/id"
{extra}
"#,
        base = base_config(),
        url = mock.base_url(),
    )
}

const SECOND_ACTION: &str = r#"
[[actions]]
name = "second"
upstream = "crm"
method = "POST"
path = "/second"
timeout_ms = 2500
input_schema = { type = "object" }
"#;

async fn reload(app: &TestApp) -> reqwest::Response {
    app.client
        .post(app.url("/admin/v1/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

fn write_config(app: &TestApp, text: &str) {
    std::fs::write(app.dir.path().join("gateway.toml"), text).unwrap();
}

async fn lookup(client: &reqwest::Client, app_url: &str) -> (u16, Value) {
    let r = client
        .post(format!("{app_url}/v1/actions/lookup"))
        .json(&json!({"id": "t-1"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn reloads_swap_the_action_set_under_load_with_no_failed_request() {
    let mock = MockUpstream::start().await;
    mock.default_reply(Reply::json(200, json!({"id": "t-1"})));
    let v1 = config(&mock, 1, "");
    let v2 = config(&mock, 2, SECOND_ACTION);
    let app = TestApp::spawn_with(&v1).await;
    let base = app.url("");

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let client = app.client.clone();
        let base = base.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(lookup(&client, &base).await);
            }
            seen
        }));
    }

    let mut reports = Vec::new();
    for round in 0..6 {
        write_config(&app, if round % 2 == 0 { &v2 } else { &v1 });
        let r = reload(&app).await;
        assert_eq!(r.status(), 200);
        reports.push(r.json::<Value>().await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write_config(&app, &v2);
    let last = reload(&app).await.json::<Value>().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);

    let mut answers = Vec::new();
    for w in workers {
        answers.extend(w.await.unwrap());
    }
    assert!(answers.len() > 50, "load ran: {} calls", answers.len());
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "failed calls during reloads: {failed:?}");
    assert!(answers.iter().any(|(_, b)| b["version"] == 1));
    assert!(answers.iter().any(|(_, b)| b["version"] == 2));
    assert_eq!(
        last,
        json!({"actions": 2, "upstreams": 2, "targets": 0, "restartRequired": []})
    );
    assert_eq!(reports[1]["actions"], 1);
    assert_eq!(lookup(&app.client, &base).await.1["version"], 2);
    let r = app
        .client
        .post(app.url("/v1/actions/second"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new action is served");
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_config_is_rejected_whole_and_the_running_set_stays() {
    let mock = MockUpstream::start().await;
    mock.default_reply(Reply::json(200, json!({"id": "t-1"})));
    let v1 = config(&mock, 1, "");
    let app = TestApp::spawn_with(&v1).await;

    // Problems the loader finds...
    let unknown_upstream = config(
        &mock,
        2,
        "[[actions]]\nname = \"broken\"\nupstream = \"nowhere\"\npath = \"/x\"\n",
    );
    write_config(&app, &unknown_upstream);
    let body = assert_error(reload(&app).await, 400, "invalid.input").await;
    assert_eq!(body["details"][0]["fieldName"], "actions[1].upstream");

    // ...and those only the action compiler finds, every one with its key path.
    let broken = config(
        &mock,
        2,
        r#"
[[actions]]
name = "broken"
upstream = "crm"
path = "/x/{missing}"
input_schema = { type = "nonsense" }
[actions.params]
id = "no-slash"
[actions.output]
"/a" = "/x"
"/a/b" = "/y"
"#,
    );
    write_config(&app, &broken);
    let body = assert_error(reload(&app).await, 400, "invalid.input").await;
    let fields: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["fieldName"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "actions[1].path",
            "actions[1].input_schema",
            "actions[1].params.id",
            "actions[1].output.\"/a/b\"",
        ]
    );

    write_config(&app, "this is [not toml");
    assert_error(reload(&app).await, 400, "invalid.input").await;

    let (status, body) = lookup(&app.client, &app.url("")).await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], 1, "the old set still answers");
    let list: Value = app
        .admin_get("/admin/v1/actions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["entities"].as_array().unwrap().len(), 1);

    // The refusal and the successful reload are both audited.
    write_config(&app, &v1);
    assert_eq!(reload(&app).await.status(), 200);
    let audit: Value = app
        .admin_get("/admin/v1/audit?kind=config.reloaded")
        .await
        .json()
        .await
        .unwrap();
    let outcomes: Vec<&str> = audit["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "failure", "failure", "failure"]);
    app.stop().await;
}

#[tokio::test]
async fn keys_that_need_a_restart_are_reported_and_keep_their_running_value() {
    let mock = MockUpstream::start().await;
    let v1 = config(&mock, 1, "");
    let app = TestApp::spawn_with(&v1).await;

    let changed = v1.replace(
        "io_threads = 2",
        "io_threads = 2\nrequest_timeout_ms = 12345",
    );
    assert_ne!(changed, v1);
    write_config(&app, &changed);
    let report: Value = reload(&app).await.json().await.unwrap();
    assert_eq!(
        report["restartRequired"],
        json!(["server.request_timeout_ms"])
    );

    // Still not applied: reported again.
    let report: Value = reload(&app).await.json().await.unwrap();
    assert_eq!(
        report["restartRequired"],
        json!(["server.request_timeout_ms"])
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unchanged_upstream_keeps_its_breaker_across_a_reload() {
    let mock = MockUpstream::start().await;
    mock.default_reply(Reply::json(500, json!({})));
    let v1 = config(&mock, 1, "");
    let app = TestApp::spawn_with(&v1).await;
    assert_eq!(lookup(&app.client, &app.url("")).await.0, 502);
    assert_eq!(
        lookup(&app.client, &app.url("")).await.0,
        503,
        "breaker open"
    );

    write_config(&app, &config(&mock, 2, SECOND_ACTION));
    assert_eq!(reload(&app).await.status(), 200);

    let (status, body) = lookup(&app.client, &app.url("")).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "circuit.open");
    assert_eq!(mock.hits(), 1);
    app.stop().await;
}

#[tokio::test]
async fn lists_the_actions_served() {
    let mock = MockUpstream::start().await;
    let app = TestApp::spawn_with(&config(&mock, 1, SECOND_ACTION)).await;

    let r = app
        .client
        .get(app.url("/admin/v1/actions"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "authentication.required").await;
    let list: Value = app
        .admin_get("/admin/v1/actions")
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(
        list,
        json!({"entities": [
            {"name": "lookup", "upstream": "crm", "method": "GET", "path": "/things/{id}",
             "timeoutMs": 10000, "hasInputSchema": false, "hasOutputSchema": false},
            {"name": "second", "upstream": "crm", "method": "POST", "path": "/second",
             "timeoutMs": 2500, "hasInputSchema": true, "hasOutputSchema": false}
        ], "nextCursor": null})
    );
    app.stop().await;
}
