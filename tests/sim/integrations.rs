//! Integrations, credentials and data actions: CRUD with Genesys' versioning rules, contract
//! changes through drafts, and
//! `execute` / `test` calling a real local HTTP server (Velocity rendering, the Basic
//! credential, translationMap + defaults + successTemplate, remote failures).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{TestSim, assert_error};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use reqwest::Method;
use serde_json::{Value, json};

/// What the remote server saw.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<(String, HeaderMap, String)>>>);

async fn remote() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|State(seen): State<Seen>, Path(id): Path<String>, headers: HeaderMap, uri: axum::http::Uri| async move {
                seen.0.lock().unwrap().push((uri.to_string(), headers, String::new()));
                Json(json!({"id": id, "profile": {"name": "Jane Doe", "email": "jane@example.com"}, "tags": ["vip", "emea"]}))
            }),
        )
        .route(
            "/echo",
            post(|State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
                seen.0.lock().unwrap().push(("/echo".to_owned(), headers, body.clone()));
                body
            }),
        )
        .route("/missing", get(|| async { (axum::http::StatusCode::NOT_FOUND, Json(json!({"error": "no such thing"}))) }))
        .route("/text", get(|| async { "plain text" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Json(json!({}))
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// A `custom-rest-actions` integration using a Basic credential; returns its id.
async fn integration(t: &TestSim, token: &str) -> String {
    let credential: Value = t
        .post(token, "/api/v2/integrations/credentials", &json!({"name": "crm", "type": {"name": "basicAuth"}, "credentialFields": {"userName": "genesys", "password": "pa55"}}))
        .await
        .json()
        .await
        .unwrap();
    let credential_id = credential["id"].as_str().unwrap();
    assert_eq!(credential["type"]["name"], "basicAuth");
    let integration: Value = t
        .post(
            token,
            "/api/v2/integrations",
            &json!({"integrationType": {"id": "custom-rest-actions"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = integration["id"].as_str().unwrap().to_owned();
    assert_eq!(integration["intendedState"], "DISABLED");
    let config: Value = t
        .send(
            Method::PUT,
            token,
            &format!("/api/v2/integrations/{id}/config/current"),
            Some(&json!({"name": "CRM actions", "version": 1, "properties": {}, "advanced": {}, "notes": "", "credentials": {"basicAuth": {"id": credential_id, "type": "basicAuth"}}})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["version"], 2);
    assert_eq!(config["credentials"]["basicAuth"]["id"], credential_id);
    let enabled: Value = t
        .send(
            Method::PATCH,
            token,
            &format!("/api/v2/integrations/{id}"),
            Some(&json!({"intendedState": "ENABLED"})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(enabled["intendedState"], "ENABLED");
    assert_eq!(enabled["reportedState"]["code"], "ACTIVE");
    assert_eq!(enabled["name"], "CRM actions");
    id
}

async fn action(
    t: &TestSim,
    token: &str,
    integration_id: &str,
    name: &str,
    config: Value,
) -> Value {
    let response = t
        .post(
            token,
            "/api/v2/integrations/actions",
            &json!({
                "name": name,
                "category": "gateway",
                "integrationId": integration_id,
                "secure": false,
                "config": config,
                "contract": {
                    "input": {"inputSchema": {"type": "object", "properties": {"userId": {"type": "string"}}}},
                    "output": {"successSchema": {"type": "object"}},
                },
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn execute_calls_the_remote_with_the_rendered_request_and_translates_the_answer() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let (addr, seen) = remote().await;
    let integration_id = integration(&t, &token).await;
    let created = action(
        &t,
        &token,
        &integration_id,
        "fetchProfile",
        json!({
            "timeoutSeconds": 5,
            "request": {
                "requestUrlTemplate": format!("http://{addr}/users/${{input.userId}}?q=$esc.url(${{input.q}})"),
                "requestType": "GET",
                "headers": {"X-Trace": "trace-${input.userId}"},
            },
            "response": {
                "translationMap": {"name": "$.profile.name", "tags": "$.tags[*]", "missing": "$.nope"},
                "translationMapDefaults": {"missing": "\"n/a\""},
                "successTemplate": "{\"name\": ${name}, \"tags\": ${tags}, \"missing\": ${missing}, \"raw\": ${rawResult}}",
            },
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("custom_-_"), "{id}");
    assert_eq!(
        created["config"]["request"]["requestTemplate"],
        "${input.rawRequest}"
    );

    let response = t
        .post(
            &token,
            &format!("/api/v2/integrations/actions/{id}/execute"),
            &json!({"userId": "u-7", "q": "a b/c"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let output: Value = response.json().await.unwrap();
    assert_eq!(output["name"], "Jane Doe");
    assert_eq!(output["tags"], json!(["vip", "emea"]));
    assert_eq!(output["missing"], "n/a");
    assert_eq!(output["raw"]["profile"]["email"], "jane@example.com");

    let (uri, headers, _) = seen.0.lock().unwrap()[0].clone();
    assert_eq!(uri, "/users/u-7?q=a+b%2Fc");
    assert_eq!(headers["authorization"], "Basic Z2VuZXN5czpwYTU1"); // genesys:pa55
    assert_eq!(headers["x-trace"], "trace-u-7");

    let result: Value = t
        .post(
            &token,
            &format!("/api/v2/integrations/actions/{id}/test"),
            &json!({"userId": "u-8", "q": "x"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["finalResult"]["name"], "Jane Doe");
    let operations = result["operations"].as_array().unwrap();
    assert!(operations.len() >= 5);
    assert!(
        operations
            .iter()
            .all(|o| o["success"] == true && o["step"].is_number() && o["name"].is_string())
    );
    assert_eq!(
        operations[0]["result"],
        format!("http://{addr}/users/u-8?q=x")
    );
}

#[tokio::test]
async fn a_post_action_sends_its_rendered_request_template() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let (addr, seen) = remote().await;
    let integration_id = integration(&t, &token).await;
    let passthrough = action(
        &t,
        &token,
        &integration_id,
        "passthrough",
        json!({"request": {"requestUrlTemplate": format!("http://{addr}/echo"), "requestType": "POST"}, "response": {}}),
    )
    .await;
    let templated = action(
        &t,
        &token,
        &integration_id,
        "templated",
        json!({
            "request": {
                "requestUrlTemplate": format!("http://{addr}/echo"),
                "requestType": "POST",
                "requestTemplate": "{\"who\": \"$esc.jsonString(${input.name})\", \"all\": ${input.rawRequest}}",
            },
            "response": {"translationMap": {}, "successTemplate": "${rawResult}"},
        }),
    )
    .await;

    let input = json!({"name": "Jane \"JD\" Doe", "n": 1});
    let output: Value = t
        .post(
            &token,
            &format!(
                "/api/v2/integrations/actions/{}/execute",
                passthrough["id"].as_str().unwrap()
            ),
            &input,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(output, input);
    let output: Value = t
        .post(
            &token,
            &format!(
                "/api/v2/integrations/actions/{}/execute",
                templated["id"].as_str().unwrap()
            ),
            &input,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(output, json!({"who": "Jane \"JD\" Doe", "all": input}));
    let seen = seen.0.lock().unwrap();
    assert_eq!(seen[1].1["content-type"], "application/json");
    assert_eq!(seen[1].1["authorization"], "Basic Z2VuZXN5czpwYTU1");
}

#[tokio::test]
async fn remote_failures_are_reported_as_action_remote_endpoint() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let (addr, _) = remote().await;
    let integration_id = integration(&t, &token).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let cases = [
        (
            "missing",
            format!("http://{addr}/missing"),
            404,
            "not.found",
            None,
        ),
        (
            "unreachable",
            format!("http://{closed}/x"),
            500,
            "internal.server.error",
            None,
        ),
        (
            "text",
            format!("http://{addr}/text"),
            400,
            "bad.request",
            None,
        ),
        (
            "slow",
            format!("http://{addr}/slow"),
            504,
            "gateway.timeout",
            Some(1),
        ),
    ];
    for (name, url, status, code, timeout) in cases {
        let mut config = json!({"request": {"requestUrlTemplate": url, "requestType": "GET"}});
        if let Some(seconds) = timeout {
            config["timeoutSeconds"] = json!(seconds);
        }
        let created = action(&t, &token, &integration_id, name, config).await;
        let id = created["id"].as_str().unwrap();
        let response = t
            .post(
                &token,
                &format!("/api/v2/integrations/actions/{id}/execute"),
                &json!({}),
            )
            .await;
        let body = assert_error(response, status, code).await;
        assert_eq!(
            body["details"][0]["errorCode"], "ACTION.REMOTE_ENDPOINT",
            "{name}: {body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("REST call for action execute failed")
        );
        if name == "missing" {
            let cause = body["errors"][0]["message"].as_str().unwrap();
            assert!(
                cause.contains(r#"Response from web service: {"error":"no such thing"}"#),
                "{body}"
            );
            assert_eq!(body["errors"][0]["code"], "NOT_FOUND");
        }

        let result: Value = t
            .post(
                &token,
                &format!("/api/v2/integrations/actions/{id}/test"),
                &json!({}),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(result["success"], false, "{result}");
        assert_eq!(
            result["error"]["details"][0]["errorCode"],
            "ACTION.REMOTE_ENDPOINT"
        );
        let last = result["operations"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["name"], "Execute");
        assert_eq!(last["success"], false);
        assert!(result.get("finalResult").is_none());
    }
}

#[tokio::test]
async fn an_unresolvable_translation_without_default_fails_processing() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let (addr, _) = remote().await;
    let integration_id = integration(&t, &token).await;
    let created = action(
        &t,
        &token,
        &integration_id,
        "strict",
        json!({"request": {"requestUrlTemplate": format!("http://{addr}/users/1"), "requestType": "GET"}, "response": {"translationMap": {"x": "$.nope"}, "successTemplate": "{\"x\": ${x}}"}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let response = t
        .post(
            &token,
            &format!("/api/v2/integrations/actions/{id}/execute"),
            &json!({}),
        )
        .await;
    let body = assert_error(response, 400, "bad.request").await;
    assert_eq!(body["details"][0]["errorCode"], "ACTION.PROCESSING");
}

#[tokio::test]
async fn a_template_nested_too_deep_fails_processing_and_the_simulator_lives_on() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let (addr, seen) = remote().await;
    let integration_id = integration(&t, &token).await;
    // Deep enough to overflow a recursive renderer's stack.
    let deep = "$esc.url(".repeat(200_000);
    let created = action(
        &t,
        &token,
        &integration_id,
        "deep",
        json!({"request": {"requestUrlTemplate": format!("http://{addr}/echo"), "requestType": "POST", "requestTemplate": deep}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let response = t
        .post(
            &token,
            &format!("/api/v2/integrations/actions/{id}/execute"),
            &json!({}),
        )
        .await;
    let body = assert_error(response, 400, "bad.request").await;
    assert_eq!(body["details"][0]["errorCode"], "ACTION.PROCESSING");
    let cause = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        cause.contains("nests references more than 32 levels"),
        "{cause}"
    );
    assert!(seen.0.lock().unwrap().is_empty(), "nothing is sent");

    let report: Value = t
        .post(
            &token,
            &format!("/api/v2/integrations/actions/{id}/test"),
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["success"], false);
    let last = report["operations"].as_array().unwrap().last().unwrap();
    assert_eq!(last["name"], "Resolve request body template");
    assert_eq!(last["success"], false);

    // The simulator still answers.
    assert_eq!(t.get(&token, "/api/v2/users").await.status(), 200);
}

#[tokio::test]
async fn actions_are_listed_read_patched_by_version_and_deleted() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let integration_id = integration(&t, &token).await;
    let config = json!({"request": {"requestUrlTemplate": "http://127.0.0.1:1/x", "requestType": "POST"}, "response": {}});
    let first = action(&t, &token, &integration_id, "b-action", config.clone()).await;
    action(&t, &token, &integration_id, "a-action", config.clone()).await;
    let id = first["id"].as_str().unwrap();

    // Same name in the same integration is refused; an unknown integration too.
    let duplicate = json!({"name": "b-action", "category": "gateway", "integrationId": integration_id, "config": config, "contract": {"input": {"inputSchema": {"type": "object"}}, "output": {"successSchema": {"type": "object"}}}});
    assert_error(
        t.post(&token, "/api/v2/integrations/actions", &duplicate)
            .await,
        400,
        "bad.request",
    )
    .await;
    let mut orphan = duplicate.clone();
    orphan["integrationId"] = json!("nope");
    orphan["name"] = json!("c");
    assert_error(
        t.post(&token, "/api/v2/integrations/actions", &orphan)
            .await,
        400,
        "bad.request",
    )
    .await;

    let list: Value = t
        .get(&token, &format!("/api/v2/integrations/actions?category=gateway&integrationId={integration_id}&pageSize=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 2);
    assert_eq!(list["pageCount"], 2);
    assert_eq!(list["entities"][0]["name"], "a-action");
    assert!(list["entities"][0].get("config").is_none());
    let none: Value = t
        .get(&token, "/api/v2/integrations/actions?category=other")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["total"], 0);

    let plain: Value = t
        .get(&token, &format!("/api/v2/integrations/actions/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(plain.get("config").is_none());
    assert!(plain["contract"]["input"]["inputSchemaUri"].is_string());
    let full: Value = t
        .get(
            &token,
            &format!("/api/v2/integrations/actions/{id}?includeConfig=true&expand=contract"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["config"]["request"]["requestType"], "POST");
    assert_eq!(full["contract"]["input"]["inputSchema"]["type"], "object");
    assert_eq!(full["version"], 1);

    let path = format!("/api/v2/integrations/actions/{id}");
    let response = t
        .send(
            Method::PATCH,
            &token,
            &path,
            Some(&json!({"name": "renamed"})),
        )
        .await;
    assert_error(response, 400, "bad.request").await;
    let response = t
        .send(
            Method::PATCH,
            &token,
            &path,
            Some(&json!({"name": "renamed", "version": 7})),
        )
        .await;
    assert_error(response, 409, "conflict").await;
    let patched: Value = t
        .send(Method::PATCH, &token, &path, Some(&json!({"name": "renamed", "version": 1, "config": {"request": {"requestUrlTemplate": "http://127.0.0.1:2/y", "requestType": "GET"}}})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["name"], "renamed");
    assert_eq!(
        patched["config"]["request"]["requestUrlTemplate"],
        "http://127.0.0.1:2/y"
    );

    assert_eq!(
        t.send(Method::DELETE, &token, &path, None).await.status(),
        204
    );
    assert_error(t.get(&token, &path).await, 404, "not.found").await;
}

#[tokio::test]
async fn integrations_types_configs_and_credentials_behave_like_genesys() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let types: Value = t
        .get(&token, "/api/v2/integrations/types")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        types["entities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "custom-rest-actions")
    );

    let id = integration(&t, &token).await;
    let listed: Value = t
        .get(&token, "/api/v2/integrations")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 1);
    assert_eq!(
        listed["entities"][0]["integrationType"]["id"],
        "custom-rest-actions"
    );

    let config_path = format!("/api/v2/integrations/{id}/config/current");
    let config: Value = t.get(&token, &config_path).await.json().await.unwrap();
    assert_eq!(config["version"], 2);
    let stale = t
        .send(
            Method::PUT,
            &token,
            &config_path,
            Some(&json!({"name": "x", "version": 1})),
        )
        .await;
    assert_error(stale, 409, "conflict").await;
    let unknown = t
        .send(
            Method::PUT,
            &token,
            &config_path,
            Some(&json!({"name": "x", "version": 2, "credentials": {"basicAuth": {"id": "nope"}}})),
        )
        .await;
    assert_error(unknown, 400, "bad.request").await;

    let response = t
        .post(
            &token,
            "/api/v2/integrations/credentials",
            &json!({"name": "x", "type": "basicAuth", "credentialFields": {"userName": "u"}}),
        )
        .await;
    assert_error(response, 400, "bad.request").await;
    let credential_id = config["credentials"]["basicAuth"]["id"].as_str().unwrap();
    let credential: Value = t
        .get(
            &token,
            &format!("/api/v2/integrations/credentials/{credential_id}"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        credential["credentialFields"],
        json!({"userName": "genesys"}),
        "the password is never shown"
    );
    let path = format!("/api/v2/integrations/credentials/{credential_id}");
    assert_eq!(
        t.send(Method::DELETE, &token, &path, None).await.status(),
        204
    );
    assert_error(t.get(&token, &path).await, 404, "not.found").await;

    let deleted: Value = t
        .send(
            Method::DELETE,
            &token,
            &format!("/api/v2/integrations/{id}"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["id"], id.as_str());
    assert_error(
        t.get(&token, &format!("/api/v2/integrations/{id}")).await,
        404,
        "not.found",
    )
    .await;
    let response = t
        .post(
            &token,
            "/api/v2/integrations",
            &json!({"integrationType": {"id": "nope"}}),
        )
        .await;
    assert_error(response, 400, "bad.request").await;
}

#[tokio::test]
async fn a_contract_changes_through_a_draft_and_the_action_keeps_its_id() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let (addr, seen) = remote().await;
    let integration_id = integration(&t, &token).await;
    let created = action(
        &t,
        &token,
        &integration_id,
        "echoNote",
        json!({"request": {"requestUrlTemplate": format!("http://{addr}/echo"), "requestType": "POST"}, "response": {}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let action_path = format!("/api/v2/integrations/actions/{id}");
    let draft_path = format!("{action_path}/draft");

    assert_error(t.get(&token, &draft_path).await, 404, "not.found").await;
    assert_error(
        t.post(
            &token,
            "/api/v2/integrations/actions/custom_-_nope/draft",
            &json!({}),
        )
        .await,
        404,
        "not.found",
    )
    .await;

    // A draft copies the published action; there is one at a time.
    let response = t.send(Method::POST, &token, &draft_path, None).await;
    assert_eq!(response.status(), 200);
    let draft: Value = response.json().await.unwrap();
    assert_eq!(draft["id"], id);
    assert_eq!(draft["version"], 1);
    assert_eq!(draft["name"], "echoNote");
    assert_eq!(
        draft["contract"]["input"]["inputSchema"]["properties"]["userId"]["type"],
        "string"
    );
    assert_eq!(draft["config"]["request"]["requestType"], "POST");
    assert_error(
        t.send(Method::POST, &token, &draft_path, None).await,
        409,
        "conflict",
    )
    .await;
    let read: Value = t
        .get(
            &token,
            &format!("{draft_path}?expand=contract&includeConfig=true"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, draft);
    let plain: Value = t.get(&token, &draft_path).await.json().await.unwrap();
    assert!(plain.get("config").is_none());
    assert!(plain["contract"]["input"]["inputSchemaUri"].is_string());

    // The draft is patched by its own version, contract included.
    let change = json!({
        "name": "echoNote",
        "category": "gateway",
        "config": {"request": {"requestUrlTemplate": format!("http://{addr}/echo"), "requestType": "POST",
                               "headers": {"X-Version": "2"}}, "response": {}},
        "contract": {"input": {"inputSchema": {"type": "object", "required": ["noteId"], "minProperties": 1,
                                               "properties": {"noteId": {"type": "string"}}}},
                     "output": {"successSchema": {"type": "object", "required": ["noteId"]}}},
    });
    assert_error(
        t.send(Method::PATCH, &token, &draft_path, Some(&change))
            .await,
        400,
        "bad.request",
    )
    .await;
    let mut stale = change.clone();
    stale["version"] = json!(7);
    assert_error(
        t.send(Method::PATCH, &token, &draft_path, Some(&stale))
            .await,
        409,
        "conflict",
    )
    .await;
    let mut current = change.clone();
    current["version"] = json!(1);
    let patched: Value = t
        .send(Method::PATCH, &token, &draft_path, Some(&current))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["version"], 2);
    assert_eq!(
        patched["contract"]["input"]["inputSchema"],
        json!({"type": "object", "required": ["noteId"], "properties": {"noteId": {"type": "string"}}}),
        "stored as a JsonSchemaDocument: other top-level keywords are dropped"
    );
    // Until published, the action is what it was.
    let published: Value = t
        .get(&token, &format!("{action_path}?expand=contract"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(published["version"], 1);
    assert!(published["contract"]["input"]["inputSchema"]["properties"]["userId"].is_object());

    // Publishing takes the draft's current version; the action keeps its id.
    let publish_path = format!("{draft_path}/publish");
    assert_error(
        t.post(&token, &publish_path, &json!({})).await,
        400,
        "bad.request",
    )
    .await;
    assert_error(
        t.post(&token, &publish_path, &json!({"version": 1})).await,
        409,
        "conflict",
    )
    .await;
    let response = t.post(&token, &publish_path, &json!({"version": 2})).await;
    assert_eq!(response.status(), 200);
    let published: Value = response.json().await.unwrap();
    assert_eq!(published["id"], id);
    assert_eq!(published["version"], 2);
    assert_eq!(published["category"], "gateway");
    assert_eq!(
        published["contract"]["output"]["successSchema"],
        json!({"type": "object", "required": ["noteId"]})
    );
    assert_error(t.get(&token, &draft_path).await, 404, "not.found").await;
    let listed: Value = t
        .get(
            &token,
            &format!("/api/v2/integrations/actions?integrationId={integration_id}"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["entities"][0]["id"], id);

    // The published configuration is the one that runs.
    let response = t
        .post(
            &token,
            &format!("{action_path}/execute"),
            &json!({"noteId": "n-1"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let (_, headers, body) = seen.0.lock().unwrap().last().unwrap().clone();
    assert_eq!(headers["x-version"], "2");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"noteId": "n-1"})
    );

    // A draft can be dropped; deleting the action drops its draft.
    assert_eq!(
        t.send(Method::POST, &token, &draft_path, None)
            .await
            .status(),
        200
    );
    assert_eq!(
        t.send(Method::DELETE, &token, &draft_path, None)
            .await
            .status(),
        204
    );
    assert_error(
        t.send(Method::DELETE, &token, &draft_path, None).await,
        404,
        "not.found",
    )
    .await;
    assert_eq!(
        t.send(Method::POST, &token, &draft_path, None)
            .await
            .status(),
        200
    );
    assert_eq!(
        t.send(Method::DELETE, &token, &action_path, None)
            .await
            .status(),
        204
    );
    assert_error(t.get(&token, &draft_path).await, 404, "not.found").await;
}
