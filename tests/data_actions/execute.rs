//! Data actions through the HTTP surface: a real gateway in front of a real local
//! upstream.

use crate::common;
use crate::mock as data_actions_mock;

use std::time::{Duration, Instant};

use common::{TestApp, assert_error, base_config};
use data_actions_mock::{MockUpstream, Reply};
use serde_json::{Value, json};

const USER: &str = "genesys";
const PASSWORD: &str = "flow-password-1";

/// The gateway config for these tests: Basic auth on the surface, an upstream `crm` at the mock
/// with `crm_extra` added to its table, and the actions below.
fn config(mock: &MockUpstream, crm_extra: &str) -> String {
    format!(
        r#"{base}
[data_actions]
auth = {{ type = "basic", username = "{USER}", password = "{PASSWORD}" }}
public_url = "https://gateway.example.com"

[upstreams.crm]
base_url = "{url}/api"
timeout_ms = 2000
{crm_extra}

[[actions]]
name = "lookupOrder"
upstream = "crm"
method = "GET"
path = "/orders/{{orderId}}"
timeout_ms = 5000
input_schema = {{ type = "object", required = ["orderId"], properties = {{ orderId = {{ type = "string", minLength = 1 }} }} }}
output_schema = {{ type = "object", required = ["status", "total"], properties = {{ status = {{ type = "string" }}, total = {{ type = "number" }} }} }}
[actions.params]
orderId = "/orderId"
[actions.query]
expand = {{ value = "lines" }}
[actions.headers]
X-Tenant = {{ from = "/tenant", default = "main" }}
[actions.output]
"/status" = "/state"
"/total" = "/amounts/total"
"/firstSku" = "/lines/0/sku"

[[actions]]
name = "createNote"
upstream = "crm"
method = "POST"
path = "/notes"

[[actions]]
name = "createTicket"
upstream = "crm"
method = "POST"
path = "/tickets"
[actions.body]
"/subject" = {{ from = "/subject", required = true }}
"/customer/id" = "/customerId"
"/channel" = {{ value = "voice" }}
[actions.output]
"/ticketId" = {{ from = "/id", required = true }}

[[actions]]
name = "quick"
upstream = "crm"
path = "/slow"
timeout_ms = 300

[[actions]]
name = "passThrough"
upstream = "crm"
path = "/raw"

[[actions]]
name = "passThroughChecked"
upstream = "crm"
path = "/raw"
output_schema = {{ type = ["object", "array"] }}

[[actions]]
name = "byIndex"
upstream = "crm"
path = "/raw"
[actions.output]
"/0" = "/id"
"/-" = "/id"

[[actions]]
name = "whole"
upstream = "crm"
path = "/raw"
[actions.output]
"" = "/list"
"#,
        base = base_config(),
        url = mock.base_url(),
    )
}

const FAST_RETRIES: &str =
    "retry = { max_attempts = 3, base_delay_ms = 10, max_delay_ms = 50, max_retry_after_s = 5 }";

async fn setup(crm_extra: &str) -> (TestApp, MockUpstream) {
    let mock = MockUpstream::start().await;
    let app = TestApp::spawn_with(&config(&mock, crm_extra)).await;
    (app, mock)
}

async fn call(app: &TestApp, action: &str, input: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/actions/{action}")))
        .basic_auth(USER, Some(PASSWORD))
        .json(&input)
        .send()
        .await
        .expect("request")
}

fn order_answer() -> Reply {
    Reply::json(
        200,
        json!({"id": "o-1", "state": "shipped", "amounts": {"total": 42.5},
               "lines": [{"sku": "s-1"}, {"sku": "s-2"}], "internal": "not for flows"}),
    )
}

#[tokio::test]
async fn maps_input_to_the_upstream_and_the_answer_to_the_output() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.default_reply(order_answer());

    let response = app
        .client
        .post(app.url("/v1/actions/lookupOrder"))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-request-id", "req-map-1")
        .json(&json!({"orderId": "A/7 b"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "shipped", "total": 42.5, "firstSku": "s-1"})
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path_and_query, "/api/orders/A%2F7%20b?expand=lines");
    assert_eq!(seen[0].headers["x-tenant"], "main");
    assert_eq!(seen[0].headers["inin-correlation-id"], "req-map-1");
    assert!(seen[0].body.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn post_without_body_mapping_forwards_the_exact_bytes_and_passes_the_answer_through() {
    let (app, mock) = setup(FAST_RETRIES).await;
    let answer = r#"{"noteId":  "n-1" , "odd":[1,2]}"#;
    mock.default_reply(Reply::raw(201, answer));
    let input = "{ \"text\" : \"hello\",\n \"n\": 1.50 }";

    let response = app
        .client
        .post(app.url("/v1/actions/createNote"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/json")
        .body(input)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        answer,
        "answer bytes unchanged"
    );
    let seen = mock.seen();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(&seen[0].body[..], input.as_bytes(), "input bytes unchanged");
    assert_eq!(seen[0].headers["content-type"], "application/json");
    app.stop().await;
}

#[tokio::test]
async fn body_mapping_builds_the_request_body() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.default_reply(Reply::json(200, json!({"id": "t-9", "extra": true})));

    let response = call(
        &app,
        "createTicket",
        json!({"subject": "Broken", "customerId": "c-1", "ignored": 1}),
    )
    .await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"ticketId": "t-9"})
    );
    let sent: Value = serde_json::from_slice(&mock.seen()[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"subject": "Broken", "customer": {"id": "c-1"}, "channel": "voice"})
    );
    app.stop().await;
}

#[tokio::test]
async fn input_schema_violations_are_400_with_pointers() {
    let (app, mock) = setup(FAST_RETRIES).await;

    let body = assert_error(
        call(&app, "lookupOrder", json!({})).await,
        400,
        "invalid.input",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/orderId");
    assert_eq!(body["details"][0]["errorCode"], "required");

    let body = assert_error(
        call(&app, "lookupOrder", json!({"orderId": ""})).await,
        400,
        "invalid.input",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/orderId");
    assert_eq!(body["details"][0]["errorCode"], "minLength");

    // A required body mapping without a schema.
    let body = assert_error(
        call(&app, "createTicket", json!({})).await,
        400,
        "invalid.input",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/subject");

    // Not an object, not JSON, not JSON content.
    assert_error(
        call(&app, "createNote", json!([1])).await,
        400,
        "invalid.input",
    )
    .await;
    let r = app
        .client
        .post(app.url("/v1/actions/createNote"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad.request").await;
    let r = app
        .client
        .post(app.url("/v1/actions/createNote"))
        .basic_auth(USER, Some(PASSWORD))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(r, 415, "unsupported.media.type").await;

    assert_eq!(mock.hits(), 0, "nothing reached the upstream");
    app.stop().await;
}

#[tokio::test]
async fn output_schema_violations_are_422_listing_them() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.default_reply(Reply::json(
        200,
        json!({"state": 7, "amounts": {"total": "lots"}}),
    ));

    let body = assert_error(
        call(&app, "lookupOrder", json!({"orderId": "o-1"})).await,
        422,
        "output.invalid",
    )
    .await;
    let mut fields: Vec<(String, String)> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["fieldName"].as_str().unwrap().to_owned(),
                d["errorCode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("/status".to_owned(), "type".to_owned()),
            ("/total".to_owned(), "type".to_owned())
        ]
    );
    assert!(
        !body.to_string().contains("lots"),
        "no upstream value echoed"
    );

    // A required output source missing from the answer is 422 as well.
    mock.default_reply(Reply::json(200, json!({"other": 1})));
    let body = assert_error(
        call(&app, "createTicket", json!({"subject": "s"})).await,
        422,
        "output.invalid",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/id");
    app.stop().await;
}

#[tokio::test]
async fn unknown_action_is_404_counted_under_a_fixed_label() {
    let (app, _mock) = setup(FAST_RETRIES).await;

    assert_error(
        call(&app, "noSuchAction", json!({})).await,
        404,
        "not.found",
    )
    .await;
    assert_error(
        call(&app, "evil%7Bname%7D", json!({})).await,
        404,
        "not.found",
    )
    .await;

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"gateway_action_executions_total{action="unknown",outcome="not_found"} 2"#),
        "{metrics}"
    );
    assert!(!metrics.contains("noSuchAction"));
    app.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_401_with_a_challenge() {
    let (app, mock) = setup(FAST_RETRIES).await;

    let r = app
        .client
        .post(app.url("/v1/actions/lookupOrder"))
        .json(&json!({"orderId": "o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"genesys-gateway\""
    );
    assert_error(r, 401, "authentication.required").await;

    let r = app
        .client
        .post(app.url("/v1/actions/lookupOrder"))
        .basic_auth(USER, Some("wrong"))
        .json(&json!({"orderId": "o"}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    assert_error(r, 401, "invalid.token").await;

    let r = app
        .client
        .post(app.url("/webhook/data-action"))
        .json(&json!({"requestId": "f", "action": "lookupOrder", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "authentication.required").await;

    assert_eq!(mock.hits(), 0);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(
        r#"gateway_action_executions_total{action="lookupOrder",outcome="unauthorized"} 2"#
    ));
    assert!(
        metrics.contains(
            r#"gateway_action_executions_total{action="unknown",outcome="unauthorized"} 1"#
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.script([
        Reply::json(429, json!({})).header("retry-after", "1"),
        order_answer(),
    ]);

    let started = Instant::now();
    let response = call(&app, "lookupOrder", json!({"orderId": "o-1"})).await;

    // The one real-time check of the rule "a 429 waits its Retry-After": a lower bound only (a
    // slow machine can only make it longer).
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(
        mock.hits(),
        2,
        "one refused attempt, one retry after the wait"
    );
    app.stop().await;
}

#[tokio::test]
async fn transient_503s_are_retried_within_max_attempts() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.script([
        Reply::json(503, json!({})),
        Reply::json(503, json!({})),
        order_answer(),
    ]);

    let response = call(&app, "lookupOrder", json!({"orderId": "o-1"})).await;

    assert_eq!(response.status(), 200);
    assert_eq!(mock.hits(), 3);

    // Attempts run out: 503 upstream.unavailable.
    mock.script([
        Reply::json(503, json!({})),
        Reply::json(503, json!({})),
        Reply::json(503, json!({})),
    ]);
    let r = call(&app, "lookupOrder", json!({"orderId": "o-1"})).await;
    assert_error(r, 503, "upstream.unavailable").await;
    assert_eq!(mock.hits(), 6);
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_400_is_502_after_one_attempt() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.default_reply(Reply::json(400, json!({"error": "secret upstream detail"})));

    let body = assert_error(
        call(&app, "lookupOrder", json!({"orderId": "o-1"})).await,
        502,
        "upstream.error",
    )
    .await;

    assert_eq!(mock.hits(), 1);
    assert!(body["message"].as_str().unwrap().contains("400"));
    assert!(!body.to_string().contains("secret upstream detail"));
    app.stop().await;
}

#[tokio::test]
async fn an_open_breaker_answers_503_circuit_open_without_calling() {
    let (app, mock) = setup(
        "retry = { max_attempts = 1, base_delay_ms = 10, max_delay_ms = 50 }\n\
         circuit_breaker = { failure_threshold = 2, open_ms = 30000 }",
    )
    .await;
    mock.default_reply(Reply::json(500, json!({})));

    for _ in 0..2 {
        let r = call(&app, "lookupOrder", json!({"orderId": "o-1"})).await;
        assert_error(r, 502, "upstream.error").await;
    }
    let r = call(&app, "lookupOrder", json!({"orderId": "o-1"})).await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_error(r, 503, "circuit.open").await;
    assert_eq!(mock.hits(), 2, "the open breaker made no call");
    app.stop().await;
}

#[tokio::test]
async fn the_action_deadline_is_504() {
    let (app, mock) = setup(FAST_RETRIES).await;
    // Far longer than the action's 300 ms: only the deadline can end the call.
    mock.default_reply(Reply::json(200, json!({})).delayed(Duration::from_secs(30)));

    let r = call(&app, "quick", json!({})).await;

    assert_error(r, 504, "request.timeout").await;
    assert_eq!(
        mock.hits(),
        1,
        "one attempt, cut by the deadline, not retried"
    );
    let metrics = metrics_text(&app).await;
    assert!(
        metrics.contains(r#"gateway_action_executions_total{action="quick",outcome="timeout"} 1"#),
        "{metrics}"
    );
    app.stop().await;
}

fn oauth(mock: &MockUpstream) -> String {
    format!(
        "{FAST_RETRIES}\nauth = {{ type = \"oauth2_client_credentials\", token_url = \"{}/oauth/token\", client_id = \"gw\", client_secret = \"s3cret\" }}",
        mock.base_url()
    )
}

#[tokio::test]
async fn a_cold_oauth2_upstream_fetches_one_token_for_100_concurrent_calls() {
    let mock = MockUpstream::start().await;
    mock.require_tokens();
    mock.default_reply(order_answer());
    let app = TestApp::spawn_with(&config(&mock, &oauth(&mock))).await;

    let calls = (0..100).map(|i| call(&app, "lookupOrder", json!({"orderId": format!("o-{i}")})));
    let responses = futures_util::future::join_all(calls).await;

    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(mock.token_fetches(), 1);
    assert_eq!(mock.hits(), 100);
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_401_refetches_the_token_once_and_succeeds() {
    let mock = MockUpstream::start().await;
    mock.require_tokens();
    mock.default_reply(order_answer());
    let app = TestApp::spawn_with(&config(&mock, &oauth(&mock))).await;
    assert_eq!(
        call(&app, "lookupOrder", json!({"orderId": "o"}))
            .await
            .status(),
        200
    );

    mock.revoke_tokens();
    let r = call(&app, "lookupOrder", json!({"orderId": "o"})).await;

    assert_eq!(r.status(), 200);
    assert_eq!(mock.token_fetches(), 2);
    assert_eq!(
        mock.hits(),
        3,
        "first call, the refused replay, the accepted one"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_envelope_form_echoes_the_request_id() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.default_reply(order_answer());

    let r = app
        .client
        .post(app.url("/webhook/data-action"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"requestId": "flow-42", "action": "lookupOrder", "data": {"orderId": "o-1"}}))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"requestId": "flow-42",
               "data": {"status": "shipped", "total": 42.5, "firstSku": "s-1"}})
    );

    // Same errors as the direct form.
    let r = app
        .client
        .post(app.url("/webhook/data-action"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"requestId": "flow-43", "action": "nope", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not.found").await;
    let r = app
        .client
        .post(app.url("/webhook/data-action"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"requestId": "flow-44", "action": "lookupOrder", "data": {}}))
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 400, "invalid.input").await;
    assert_eq!(body["details"][0]["fieldName"], "/orderId");
    let r = app
        .client
        .post(app.url("/webhook/data-action"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"requestId": "flow-45"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 400, "invalid.input").await;
    assert_eq!(body["details"][0]["fieldName"], "/action");

    // Without a requestId the answer says `null`.
    let r = app
        .client
        .post(app.url("/webhook/data-action"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"action": "lookupOrder", "data": {"orderId": "o-1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"requestId": null,
               "data": {"status": "shipped", "total": 42.5, "firstSku": "s-1"}})
    );
    app.stop().await;
}

#[tokio::test]
async fn every_execution_writes_one_audit_record_without_payloads() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.default_reply(order_answer());

    let r = app
        .client
        .post(app.url("/v1/actions/lookupOrder"))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-request-id", "req-audit-1")
        .json(&json!({"orderId": "payload-value-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .post(app.url("/webhook/data-action"))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-request-id", "req-audit-2")
        .json(&json!({"requestId": "flow-77", "action": "lookupOrder", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Written off the request path, visible within about a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let entities = loop {
        let page: Value = app
            .admin_get("/admin/v1/audit?kind=action.executed")
            .await
            .json()
            .await
            .unwrap();
        let entities = page["entities"].as_array().cloned().unwrap_or_default();
        if entities.len() >= 2 || Instant::now() > deadline {
            break entities;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert_eq!(entities.len(), 2, "{entities:?}");
    let by_request = |id: &str| {
        entities
            .iter()
            .find(|e| e["requestId"] == id)
            .unwrap_or_else(|| panic!("no record for {id}: {entities:?}"))
    };
    let ok = by_request("req-audit-1");
    assert_eq!(ok["subject"], "lookupOrder");
    assert_eq!(ok["outcome"], "success");
    assert_eq!(ok["detail"]["status"], 200);
    let bad = by_request("req-audit-2");
    assert_eq!(bad["outcome"], "invalid_input");
    assert_eq!(bad["detail"]["flowRequestId"], "flow-77");
    assert_eq!(bad["detail"]["status"], 400);
    let all = Value::Array(entities).to_string();
    assert!(!all.contains("payload-value-1") && !all.contains("shipped"));
    app.stop().await;
}

#[tokio::test]
async fn executions_are_counted_and_timed_per_action() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.default_reply(order_answer());
    assert_eq!(
        call(&app, "lookupOrder", json!({"orderId": "o"}))
            .await
            .status(),
        200
    );
    assert_eq!(call(&app, "lookupOrder", json!({})).await.status(), 400);

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    for line in [
        r#"gateway_action_executions_total{action="lookupOrder",outcome="success"} 1"#,
        r#"gateway_action_executions_total{action="lookupOrder",outcome="invalid_input"} 1"#,
        r#"gateway_action_duration_seconds_count{action="lookupOrder"} 2"#,
        r#"gateway_action_executions_total{action="createNote",outcome="timeout"} 0"#,
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
    app.stop().await;
}

/// The sandbox's example actions (proposed for `config/gateway.toml`), against the in-process
/// simulator: a lookup and a POST with a body and an output mapping.
const SANDBOX_ACTIONS: &str = r#"
[data_actions]
auth = { type = "none" }

[[actions]]
name = "fetchUserProfile"
upstream = "genesys"
method = "GET"
path = "/api/v2/users/{userId}"
timeout_ms = 10000
input_schema = { type = "object", required = ["userId"], properties = { userId = { type = "string", minLength = 1 } } }
output_schema = { "$schema" = "https://json-schema.org/draft/2020-12/schema", title = "UserProfile", type = "object", required = ["id", "name"], properties = { id = { type = "string", minLength = 1 }, name = { type = "string" }, email = { type = "string" } }, additionalProperties = false }
example_input = { userId = "u-1" }
[actions.params]
userId = "/userId"
[actions.output]
"/id" = "/id"
"/name" = "/name"
"/email" = "/email"

[[actions]]
name = "requestCallback"
upstream = "genesys"
method = "POST"
path = "/api/v2/conversations/callbacks"
timeout_ms = 10000
input_schema = { type = "object", required = ["queueId", "phoneNumber"], properties = { queueId = { type = "string", minLength = 1 }, phoneNumber = { type = "string", pattern = "^\\+[1-9][0-9]{6,14}$" }, customerName = { type = "string" }, reason = { type = "string" } } }
output_schema = { type = "object", required = ["conversationId"], properties = { conversationId = { type = "string" }, callbackId = { type = "string" } } }
example_input = { queueId = "a3b1f7c2-0000-4000-8000-000000000001", phoneNumber = "+14155550199", customerName = "Jane Doe" }
[actions.body]
"/routingData/queueId" = "/queueId"
"/callbackNumbers/0" = "/phoneNumber"
"/callbackUserName" = { from = "/customerName", default = "Caller" }
"/data/reason" = { from = "/reason", default = "ivr" }
"/data/source" = { value = "genesys-gateway" }
[actions.output]
"/conversationId" = "/conversation/id"
"/callbackId" = "/callbackIdentifiers/0/id"
"#;

#[tokio::test]
async fn the_sandbox_examples_work_against_the_simulator() {
    let app = TestApp::spawn_with(&format!("{}{SANDBOX_ACTIONS}", base_config())).await;
    let post = |action: &'static str, input: Value| {
        app.client
            .post(app.url(&format!("/v1/actions/{action}")))
            .json(&input)
            .send()
    };

    let r = post("fetchUserProfile", json!({"userId": "u-1"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"id": "u-1", "name": "Ada Lovelace", "email": "ada.lovelace@example.com"})
    );
    let r = post("fetchUserProfile", json!({"userId": "nobody"}))
        .await
        .unwrap();
    assert_error(r, 502, "upstream.error").await;

    let r = post(
        "requestCallback",
        json!({"queueId": "a3b1f7c2-0000-4000-8000-000000000001", "phoneNumber": "+14155550199"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    assert!(
        out["conversationId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{out}"
    );
    assert!(out["callbackId"].is_string(), "{out}");

    let r = post(
        "requestCallback",
        json!({"queueId": "a3b1f7c2-0000-4000-8000-000000000001", "phoneNumber": "555"}),
    )
    .await
    .unwrap();
    let body = assert_error(r, 400, "invalid.input").await;
    assert_eq!(body["details"][0]["fieldName"], "/phoneNumber");
    assert_eq!(body["details"][0]["errorCode"], "pattern");
    app.stop().await;
}

#[test]
fn check_config_reports_every_action_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let text = format!(
        "{}\n[[actions]]\nname = \"a\"\nupstream = \"genesys\"\npath = \"/x/{{id}}\"\ninput_schema = \"schemas/missing.json\"\n[actions.params]\nid = \"id\"\n",
        base_config()
    );
    std::fs::write(&file, text).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(": actions[0] (a).input_schema: cannot read"),
        "{stderr}"
    );
    assert!(stderr.contains(": actions[0] (a).params.id: "), "{stderr}");
}

/// The `action.executed` audit records, once at least `n` are visible (written off the request
/// path in batches; bounded wait).
async fn executions_audited(app: &TestApp, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = app
            .admin_get("/admin/v1/audit?kind=action.executed")
            .await
            .json()
            .await
            .unwrap();
        let entities = page["entities"].as_array().cloned().unwrap_or_default();
        if entities.len() >= n || Instant::now() > deadline {
            return entities;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics_text(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn basic_credentials() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
}

#[tokio::test]
async fn an_execution_cut_by_the_server_deadline_is_counted_and_audited_as_a_504() {
    let mock = MockUpstream::start().await;
    let text = format!(
        r#"{base}
[data_actions]
auth = {{ type = "basic", username = "{USER}", password = "{PASSWORD}" }}
[upstreams.crm]
base_url = "{url}"
[[actions]]
name = "echo"
upstream = "crm"
method = "POST"
path = "/echo"
timeout_ms = 300
"#,
        base = base_config().replace("io_threads = 2", "io_threads = 2\nrequest_timeout_ms = 300"),
        url = mock.base_url(),
    );
    let app = TestApp::spawn_with(&text).await;

    // The body never completes: the server's deadline (which covers reading the body) passes
    // while the action is being served, before its own deadline even starts.
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/actions/echo HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nX-Request-Id: req-cut-1\r\n\r\n{{",
        basic_credentials()
    );
    tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut conn, &mut buf),
        )
        .await
        .expect("an answer")
        .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");

    let metrics = metrics_text(&app).await;
    assert!(
        metrics.contains(r#"gateway_action_executions_total{action="echo",outcome="timeout"} 1"#),
        "{metrics}"
    );
    let records = executions_audited(&app, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["requestId"], "req-cut-1");
    assert_eq!(records[0]["outcome"], "timeout");
    assert_eq!(
        records[0]["detail"]["status"], 504,
        "what the client was answered"
    );
    assert_eq!(mock.hits(), 0);
    app.stop().await;
}

#[tokio::test]
async fn every_upstream_outcome_is_counted() {
    let (app, mock) = setup(&format!(
        "{FAST_RETRIES}\ncircuit_breaker = {{ failure_threshold = 4, open_ms = 30000 }}"
    ))
    .await;
    let order = || json!({"orderId": "o-1"});

    // The answer fails the output schema: 422 (the breaker sees a success).
    mock.script([Reply::json(
        200,
        json!({"state": 1, "amounts": {"total": 1}}),
    )]);
    assert_error(
        call(&app, "lookupOrder", order()).await,
        422,
        "output.invalid",
    )
    .await;
    // A 400 is not retried: 502.
    mock.script([Reply::json(400, json!({}))]);
    assert_error(
        call(&app, "lookupOrder", order()).await,
        502,
        "upstream.error",
    )
    .await;
    // Three 503s use up the attempts: 503 (three breaker failures).
    mock.script([
        Reply::json(503, json!({})),
        Reply::json(503, json!({})),
        Reply::json(503, json!({})),
    ]);
    assert_error(
        call(&app, "lookupOrder", order()).await,
        503,
        "upstream.unavailable",
    )
    .await;
    // A 500 is the fourth failure: 502, and the breaker opens.
    mock.script([Reply::json(500, json!({}))]);
    assert_error(
        call(&app, "lookupOrder", order()).await,
        502,
        "upstream.error",
    )
    .await;
    assert_error(
        call(&app, "lookupOrder", order()).await,
        503,
        "circuit.open",
    )
    .await;
    assert_eq!(mock.hits(), 6, "the open breaker made no call");

    let metrics = metrics_text(&app).await;
    for (outcome, n) in [
        ("success", 0),
        ("output_invalid", 1),
        ("upstream_error", 2),
        ("upstream_unavailable", 1),
        ("circuit_open", 1),
        ("timeout", 0),
    ] {
        let line = format!(
            r#"gateway_action_executions_total{{action="lookupOrder",outcome="{outcome}"}} {n}"#
        );
        assert!(metrics.contains(&line), "missing {line}\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_huge_input_failing_the_schema_is_400_with_few_details_and_bounded_memory() {
    let mock = MockUpstream::start().await;
    let text = format!(
        r#"{base}
[upstreams.crm]
base_url = "{url}"
[[actions]]
name = "bulk"
upstream = "crm"
method = "POST"
path = "/bulk"
input_schema = {{ type = "object", properties = {{ list = {{ type = "array", items = {{ type = "object", required = ["a", "b"] }} }} }} }}
"#,
        base = base_config(),
        url = mock.base_url(),
    );
    let app = TestApp::spawn_with(&text).await;
    // ~1 MiB (under the default 1 MiB body limit): 340 000 elements, each missing two
    // properties.
    let mut body = String::with_capacity(1 << 20);
    body.push_str("{\"list\":[");
    for i in 0..340_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str("{}");
    }
    body.push_str("]}");
    assert!(body.len() > 1_000_000 && body.len() < 1_048_576);

    // Peak resident memory from here on (Linux: writing 5 resets the high-water mark).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = memory_kib("VmRSS:");
    let r = app
        .client
        .post(app.url("/v1/actions/bulk"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let answer = assert_error(r, 400, "invalid.input").await;
    let peak = memory_kib("VmHWM:");

    let details = answer["details"].as_array().unwrap();
    assert!(
        !details.is_empty() && details.len() <= 50,
        "{} details",
        details.len()
    );
    assert_eq!(details[0]["errorCode"], "required");
    assert!(
        details[0]["fieldName"]
            .as_str()
            .unwrap()
            .starts_with("/list/"),
        "{answer}"
    );
    assert_eq!(mock.hits(), 0);
    if reset {
        // One error per element (the defect) peaked ~270 MiB above this; the input itself
        // (body, parsed value) needs a few tens.
        assert!(
            peak.saturating_sub(before) < 128 * 1024,
            "peak memory grew by {} MiB",
            peak.saturating_sub(before) / 1024
        );
    }
    app.stop().await;
}

/// A field of `/proc/self/status` in KiB (`VmRSS:`, `VmHWM:`); 0 where there is none.
fn memory_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn the_audited_flow_request_id_is_cut_to_256_characters_and_echoed_whole() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.default_reply(order_answer());
    // 300 two-byte characters: a cut at 256 bytes would split one.
    let flow_id = "é".repeat(300);

    let r = app
        .client
        .post(app.url("/webhook/data-action"))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-request-id", "req-long-flow-id")
        .json(&json!({"requestId": flow_id, "action": "lookupOrder", "data": {"orderId": "o"}}))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["requestId"],
        flow_id.as_str()
    );
    let records = executions_audited(&app, 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0]["detail"]["flowRequestId"],
        "é".repeat(256).as_str()
    );
    app.stop().await;
}

#[tokio::test]
async fn unauthenticated_calls_are_counted_but_not_audited() {
    let (app, mock) = setup(FAST_RETRIES).await;
    mock.default_reply(order_answer());
    for _ in 0..3 {
        let r = app
            .client
            .post(app.url("/v1/actions/lookupOrder"))
            .basic_auth(USER, Some("wrong"))
            .json(&json!({"orderId": "o"}))
            .send()
            .await
            .unwrap();
        assert_error(r, 401, "invalid.token").await;
    }
    let r = app
        .client
        .post(app.url("/webhook/data-action"))
        .json(&json!({"requestId": "f", "action": "lookupOrder", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "authentication.required").await;
    // An execution after them: once its record is visible, theirs would be too.
    let r = app
        .client
        .post(app.url("/v1/actions/lookupOrder"))
        .basic_auth(USER, Some(PASSWORD))
        .header("x-request-id", "req-authorized")
        .json(&json!({"orderId": "o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let records = executions_audited(&app, 1).await;
    let outcomes: Vec<&str> = records
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success"], "{records:?}");
    assert_eq!(records[0]["requestId"], "req-authorized");
    let metrics = metrics_text(&app).await;
    assert!(metrics.contains(
        r#"gateway_action_executions_total{action="lookupOrder",outcome="unauthorized"} 3"#
    ));
    assert!(
        metrics.contains(
            r#"gateway_action_executions_total{action="unknown",outcome="unauthorized"} 1"#
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn an_output_that_is_not_an_object_is_422() {
    let (app, mock) = setup(FAST_RETRIES).await;

    for (action, answer) in [
        ("passThrough", "[1]"),
        ("passThrough", " \"x\" "),
        ("passThrough", "42"),
        ("passThroughChecked", "[1]"),
    ] {
        mock.script([Reply::raw(200, answer)]);
        let body = assert_error(call(&app, action, json!({})).await, 422, "output.invalid").await;
        assert_eq!(
            body["details"],
            json!([{"fieldName": "", "errorCode": "type",
                    "message": "The output must be a JSON object."}]),
            "{action} {answer}"
        );
    }
    // A root target copying something else than an object.
    mock.script([Reply::json(200, json!({"list": [1, 2]}))]);
    let body = assert_error(call(&app, "whole", json!({})).await, 422, "output.invalid").await;
    assert_eq!(body["details"][0]["errorCode"], "type");

    // Objects pass; `/0` and `/-` at the top are member names of the output object.
    mock.script([Reply::raw(200, " {\"list\": {\"a\": 1}} ")]);
    assert_eq!(call(&app, "passThrough", json!({})).await.status(), 200);
    mock.script([Reply::json(200, json!({"list": {"a": 1}}))]);
    let r = call(&app, "whole", json!({})).await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"a": 1}));
    mock.script([Reply::json(200, json!({"id": "i-1"}))]);
    let r = call(&app, "byIndex", json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"0": "i-1", "-": "i-1"})
    );
    app.stop().await;
}

#[test]
fn an_action_deadline_beyond_the_server_deadline_is_a_config_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let text = format!(
        "{}\n[[actions]]\nname = \"slow\"\nupstream = \"genesys\"\npath = \"/x\"\ntimeout_ms = 45000\n",
        base_config()
    );
    std::fs::write(&file, text).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            ": actions[0] (slow).timeout_ms: must not exceed server.request_timeout_ms (30000)"
        ),
        "{stderr}"
    );
}
