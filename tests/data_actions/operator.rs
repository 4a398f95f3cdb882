//! What an operator reads about data actions: one action with its stats since start, the action
//! test with its step trace, the OpenAPI document per action, and query parameters that are
//! refused rather than ignored.

use crate::common;
use crate::mock as data_actions_mock;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, TestApp, assert_error, base_config};
use data_actions_mock::{MockUpstream, Reply};
use serde_json::{Value, json};

const USER: &str = "genesys";
const PASSWORD: &str = "flow-password-operator";
/// The upstream's API key: it must never appear in what the gateway answers.
const UPSTREAM_KEY: &str = "upstream-key-must-not-leak-1234";
/// A literal mapped into a header: a value, never shown either.
const MAPPED_SECRET: &str = "mapped-literal-must-not-leak-5678";

const LOOKUP_INPUT: &str = r#"{ type = "object", required = ["orderId"], properties = { orderId = { type = "string", minLength = 1 } } }"#;
const LOOKUP_OUTPUT: &str = r#"{ type = "object", required = ["status"], properties = { status = { type = "string" }, total = { type = "number" } } }"#;

/// A gateway with Basic auth on the data-action surface, an upstream `crm` at `mock` with an
/// API key, the action `lookupOrder` (schemas both sides) and `extra` TOML at the end.
fn config(mock: &MockUpstream, extra: &str) -> String {
    format!(
        r#"{base}
[data_actions]
auth = {{ type = "basic", username = "{USER}", password = "{PASSWORD}" }}
public_url = "https://gateway.example.com"

[upstreams.crm]
base_url = "{url}/api"
timeout_ms = 2000
auth = {{ type = "api_key", header = "X-Api-Key", key = "{UPSTREAM_KEY}" }}
retry = {{ max_attempts = 2, base_delay_ms = 5, max_delay_ms = 20, max_retry_after_s = 1 }}

[[actions]]
name = "lookupOrder"
upstream = "crm"
method = "GET"
path = "/orders/{{orderId}}"
timeout_ms = 5000
input_schema = {LOOKUP_INPUT}
output_schema = {LOOKUP_OUTPUT}
[actions.params]
orderId = "/orderId"
[actions.query]
expand = {{ value = "lines" }}
[actions.headers]
X-Tenant-Key = {{ value = "{MAPPED_SECRET}" }}
[actions.output]
"/status" = "/state"
"/total" = "/amounts/total"
{extra}
"#,
        base = base_config(),
        url = mock.base_url(),
    )
}

async fn setup(extra: &str) -> (TestApp, MockUpstream) {
    let mock = MockUpstream::start().await;
    let text = config(&mock, extra);
    let app = TestApp::spawn_with(&text).await;
    std::fs::write(app.dir.path().join("gateway.toml"), &text).unwrap();
    (app, mock)
}

async fn call(app: &TestApp, action: &str, input: Value, request_id: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/actions/{action}")))
        .basic_auth(USER, Some(PASSWORD))
        .header("X-Request-Id", request_id)
        .json(&input)
        .send()
        .await
        .unwrap()
}

async fn admin_post(app: &TestApp, path: &str, body: Option<Value>) -> reqwest::Response {
    let request = app
        .client
        .post(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Request-Id", "req-admin");
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap()
}

/// The audit records of `kind`, once at least `n` are visible (executions are written off the
/// request path in batches; bounded wait).
async fn audited(app: &TestApp, kind: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = app
            .admin_get(&format!("/admin/v1/audit?kind={kind}"))
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

#[tokio::test]
async fn an_action_shows_its_definition_and_its_stats_since_start() {
    let (app, mock) = setup("").await;
    let before: Value = app
        .admin_get("/admin/v1/actions/lookupOrder")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["name"], "lookupOrder");
    assert_eq!(before["upstream"], "crm");
    assert_eq!(before["method"], "GET");
    assert_eq!(before["path"], "/orders/{orderId}");
    assert_eq!(before["timeoutMs"], 5000);
    assert_eq!(before["hasInputSchema"], true);
    assert_eq!(before["hasOutputSchema"], true);
    assert_eq!(before["stats"]["calls"], 0);
    assert_eq!(before["stats"]["lastError"], Value::Null);

    mock.script([
        Reply::json(200, json!({"state": "open", "amounts": {"total": 3}})),
        Reply::json(404, json!({"message": "no such order"})),
    ]);
    let ok = call(&app, "lookupOrder", json!({"orderId": "o-1"}), "req-ok").await;
    assert_eq!(ok.status(), 200);
    let failed = call(&app, "lookupOrder", json!({"orderId": "o-2"}), "req-404").await;
    assert_error(failed, 502, "upstream.error").await;
    let bad = call(&app, "lookupOrder", json!({}), "req-bad").await;
    assert_error(bad, 400, "invalid.input").await;

    let after: Value = app
        .admin_get("/admin/v1/actions/lookupOrder")
        .await
        .json()
        .await
        .unwrap();
    let stats = &after["stats"];
    assert_eq!(stats["calls"], 3, "{after}");
    assert_eq!(stats["byOutcome"]["success"], 1, "{after}");
    assert_eq!(stats["byOutcome"]["upstream_error"], 1, "{after}");
    assert_eq!(stats["byOutcome"]["invalid_input"], 1, "{after}");
    // The last failure is the invalid input (no upstream status); the 404 came before it.
    assert_eq!(stats["lastError"]["outcome"], "invalid_input", "{after}");
    assert_eq!(stats["lastError"]["requestId"], "req-bad", "{after}");
    assert_eq!(stats["lastError"]["upstreamStatus"], Value::Null, "{after}");
    let at = stats["lastError"]["at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");

    mock.script([Reply::json(404, json!({}))]);
    let failed = call(&app, "lookupOrder", json!({"orderId": "o-3"}), "req-404-b").await;
    assert_eq!(failed.status(), 502);
    let after: Value = app
        .admin_get("/admin/v1/actions/lookupOrder")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["stats"]["lastError"]["outcome"], "upstream_error");
    assert_eq!(after["stats"]["lastError"]["upstreamStatus"], 404);
    assert_eq!(after["stats"]["lastError"]["requestId"], "req-404-b");

    // An unknown action is a 404 that names the ones served.
    let r = app.admin_get("/admin/v1/actions/lookupOrdr").await;
    let body = assert_error(r, 404, "not.found").await;
    assert!(
        body["message"].as_str().unwrap().contains("`lookupOrder`"),
        "{body}"
    );
    // The admin token is required.
    let r = app
        .client
        .get(app.url("/admin/v1/actions/lookupOrder"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "authentication.required").await;
    app.stop().await;
}

#[tokio::test]
async fn the_action_test_traces_every_step_of_a_success_and_never_shows_a_credential() {
    let (app, mock) = setup("").await;
    mock.script([Reply::json(
        200,
        json!({"state": "shipped", "amounts": {"total": 12.5}}),
    )]);

    let r = admin_post(
        &app,
        "/admin/v1/actions/lookupOrder/test",
        Some(json!({"orderId": "o-7"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for secret in [UPSTREAM_KEY, MAPPED_SECRET, PASSWORD, ADMIN_TOKEN] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    let trial: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trial["success"], true, "{trial}");
    assert_eq!(trial["output"], json!({"status": "shipped", "total": 12.5}));
    assert_eq!(trial["error"], Value::Null);
    assert!(trial["latencyMs"].is_u64(), "{trial}");
    let steps = trial["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "inputValidation",
            "requestRendering",
            "upstreamCall",
            "outputMapping",
            "outputValidation"
        ]
    );
    assert!(steps.iter().all(|s| s["ok"] == true), "{trial}");
    let request = &steps[1]["detail"];
    assert_eq!(request["method"], "GET");
    assert_eq!(
        request["url"],
        format!("{}/api/orders/o-7", mock.base_url()),
        "{trial}"
    );
    assert_eq!(request["query"], json!(["expand"]));
    let headers: Vec<&str> = request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(headers.contains(&"x-tenant-key"), "{trial}");
    assert!(headers.contains(&"x-api-key"), "{trial}");
    let call = &steps[2]["detail"];
    assert_eq!(call["upstream"], "crm");
    assert_eq!(call["status"], 200);
    assert_eq!(call["attempts"], 1);
    assert!(call["latencyMs"].is_u64(), "{trial}");

    // The upstream really got the request, with its credential.
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, "/api/orders/o-7?expand=lines");
    assert_eq!(seen[0].headers["x-api-key"], UPSTREAM_KEY);

    // Audited as a test, not counted as an execution.
    let tested = audited(&app, "action.tested", 1).await;
    assert_eq!(tested.len(), 1, "{tested:?}");
    assert_eq!(tested[0]["subject"], "lookupOrder");
    assert_eq!(tested[0]["outcome"], "success");
    assert_eq!(tested[0]["actor"], "admin");
    assert_eq!(tested[0]["requestId"], "req-admin");
    assert_eq!(tested[0]["detail"]["upstreamStatus"], 200);
    assert_eq!(tested[0]["detail"]["attempts"], 1);
    let action: Value = app
        .admin_get("/admin/v1/actions/lookupOrder")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(action["stats"]["calls"], 0, "{action}");
    app.stop().await;
}

#[tokio::test]
async fn the_action_test_shows_where_a_failure_happened() {
    let (app, mock) = setup("").await;

    // The upstream answers 404: the upstream call fails, with its status and attempts.
    mock.script([Reply::json(404, json!({"message": "no such order"}))]);
    let r = admin_post(
        &app,
        "/admin/v1/actions/lookupOrder/test",
        Some(json!({"orderId": "o-missing"})),
    )
    .await;
    assert_eq!(r.status(), 200, "a failed action is still a trace");
    let text = r.text().await.unwrap();
    assert!(!text.contains(UPSTREAM_KEY) && !text.contains(MAPPED_SECRET));
    let trial: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trial["success"], false);
    assert_eq!(trial["output"], Value::Null);
    assert_eq!(trial["error"]["status"], 502, "{trial}");
    assert_eq!(trial["error"]["code"], "upstream.error", "{trial}");
    let steps = trial["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "stops at the failing step: {trial}");
    assert_eq!(steps[0]["ok"], true);
    assert_eq!(steps[1]["ok"], true);
    assert_eq!(steps[2]["name"], "upstreamCall");
    assert_eq!(steps[2]["ok"], false);
    assert_eq!(steps[2]["detail"]["status"], 404);
    assert_eq!(steps[2]["detail"]["attempts"], 1, "a 404 is not retried");
    assert!(steps[2]["detail"]["error"].is_string(), "{trial}");

    // A retried 503: every attempt is counted.
    mock.script([Reply::json(503, json!({})), Reply::json(503, json!({}))]);
    let trial: Value = admin_post(
        &app,
        "/admin/v1/actions/lookupOrder/test",
        Some(json!({"orderId": "o-busy"})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(trial["error"]["code"], "upstream.unavailable", "{trial}");
    assert_eq!(trial["steps"][2]["detail"]["attempts"], 2, "{trial}");
    assert_eq!(trial["steps"][2]["detail"]["status"], 503, "{trial}");

    // An input that fails the schema stops at the first step; the upstream is not called.
    let hits = mock.hits();
    let trial: Value = admin_post(&app, "/admin/v1/actions/lookupOrder/test", Some(json!({})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(trial["success"], false);
    assert_eq!(trial["steps"].as_array().unwrap().len(), 1, "{trial}");
    assert_eq!(trial["steps"][0]["name"], "inputValidation");
    assert_eq!(
        trial["steps"][0]["detail"]["violations"][0]["fieldName"],
        "/orderId"
    );
    assert_eq!(trial["error"]["code"], "invalid.input");
    assert_eq!(mock.hits(), hits);

    // An answer that fails the output schema fails the output validation.
    mock.script([Reply::json(200, json!({"state": 7}))]);
    let trial: Value = admin_post(
        &app,
        "/admin/v1/actions/lookupOrder/test",
        Some(json!({"orderId": "o-odd"})),
    )
    .await
    .json()
    .await
    .unwrap();
    let steps = trial["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5, "{trial}");
    assert_eq!(steps[4]["name"], "outputValidation");
    assert_eq!(steps[4]["ok"], false);
    assert_eq!(trial["error"]["code"], "output.invalid");

    // Four tests audited with their outcomes; none counted as executions.
    let tested = audited(&app, "action.tested", 4).await;
    let mut outcomes: Vec<&str> = tested
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        [
            "invalid_input",
            "output_invalid",
            "upstream_error",
            "upstream_unavailable"
        ]
    );
    let action: Value = app
        .admin_get("/admin/v1/actions/lookupOrder")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(action["stats"]["calls"], 0, "{action}");

    // Not JSON, an unknown action.
    let r = app
        .client
        .post(app.url("/admin/v1/actions/lookupOrder/test"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad.request").await;
    let r = admin_post(&app, "/admin/v1/actions/nope/test", Some(json!({}))).await;
    assert_error(r, 404, "not.found").await;
    app.stop().await;
}

/// The schema of the request body or of an answer of `POST /v1/actions/<name>` in `doc`.
fn operation(doc: &Value, name: &str) -> Value {
    doc["paths"][format!("/v1/actions/{name}")]["post"].clone()
}

async fn openapi(app: &TestApp) -> Value {
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn openapi_describes_each_action_with_its_schemas_and_follows_reloads() {
    let (app, mock) = setup("").await;
    let doc = openapi(&app).await;
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let op = operation(&doc, "lookupOrder");
    let input = &op["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(
        input,
        &json!({"type": "object", "required": ["orderId"],
                "properties": {"orderId": {"type": "string", "minLength": 1}}}),
        "{op}"
    );
    let output = &op["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(output["required"], json!(["status"]), "{op}");
    assert_eq!(output["properties"]["total"]["type"], "number", "{op}");
    for status in ["400", "401", "422", "502", "503", "504"] {
        assert_eq!(
            op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error",
            "{status}: {op}"
        );
    }
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(
        error["required"],
        json!([
            "status",
            "code",
            "message",
            "contextId",
            "details",
            "errors"
        ])
    );
    assert_eq!(op["security"], json!([{"basic": []}]));
    // The admin routes are still described.
    assert!(doc["paths"]["/admin/v1/actions/{name}/test"]["post"].is_object());

    // A reload that adds an action and drops the schemas of the other changes the document.
    let text = config(&mock, "[[actions]]\nname = \"createNote\"\nupstream = \"crm\"\nmethod = \"POST\"\npath = \"/notes\"\ninput_schema = { type = \"object\", required = [\"text\"], properties = { text = { type = \"string\" } } }\n")
        .replace(&format!("input_schema = {LOOKUP_INPUT}\n"), "");
    std::fs::write(app.dir.path().join("gateway.toml"), text).unwrap();
    let r = admin_post(&app, "/admin/v1/reload", None).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let doc = openapi(&app).await;
    let note = operation(&doc, "createNote");
    assert_eq!(
        note["requestBody"]["content"]["application/json"]["schema"]["required"],
        json!(["text"]),
        "{note}"
    );
    assert_eq!(
        operation(&doc, "lookupOrder")["requestBody"]["content"]["application/json"]["schema"],
        json!({"type": "object"}),
        "no input schema: any object"
    );
    app.stop().await;
}

#[tokio::test]
async fn query_parameters_are_judged_after_authentication_and_never_ignored() {
    let (app, mock) = setup("").await;

    // Unauthenticated: the 401 comes first, whatever the parameters.
    let r = app
        .client
        .post(app.url("/admin/v1/actions/publish?dry_run=true"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "authentication.required").await;

    // A misspelt dry run is refused, naming it and the right spelling; nothing is published.
    let r = admin_post(&app, "/admin/v1/actions/publish?dry_run=true", None).await;
    let body = assert_error(r, 400, "bad.request").await;
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("`dry_run`"), "{body}");
    assert!(message.contains("`dryRun`"), "{body}");
    assert_eq!(body["details"][0]["fieldName"], "dry_run");
    assert!(audited(&app, "action.published", 0).await.is_empty());

    // The audit filter: an unknown parameter, a kind that cannot match anything.
    let r = app.admin_get("/admin/v1/audit?outcome=failure").await;
    let body = assert_error(r, 400, "bad.request").await;
    assert!(
        body["message"].as_str().unwrap().contains("`outcome`"),
        "{body}"
    );
    let r = app.admin_get("/admin/v1/audit?kind=reload").await;
    let body = assert_error(r, 400, "bad.request").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("config.reloaded"),
        "{body}"
    );
    assert_eq!(
        app.admin_get("/admin/v1/audit?kind=config.reloaded&limit=5")
            .await
            .status(),
        200
    );

    // A credential in the query string is an invalid token, even next to the right header.
    let r = app
        .client
        .get(app.url("/admin/v1/actions?access_token=whatever"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "invalid.token").await;

    // The capability endpoints too: after the credentials, before the upstream.
    let r = app
        .client
        .post(app.url("/v1/actions/lookupOrder?verbose=1"))
        .json(&json!({"orderId": "o-1"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "authentication.required").await;
    let r = app
        .client
        .post(app.url("/v1/actions/lookupOrder?verbose=1"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"orderId": "o-1"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 400, "bad.request").await;
    assert!(
        body["message"].as_str().unwrap().contains("`verbose`"),
        "{body}"
    );
    let r = app
        .client
        .post(app.url("/v1/actions/lookupOrder?api_key=x"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"orderId": "o-1"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "invalid.token").await;
    assert_eq!(mock.hits(), 0, "no refused call reached the upstream");
    app.stop().await;
}

/// In sandbox mode an unset `public_url` is the address actually listened on (here a free
/// port): the in-process simulator's test of a published action reaches this gateway. A
/// `public_url` that points at another port of this machine is warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_publishes_its_own_address_and_warns_about_another() {
    let mock = MockUpstream::start().await;
    mock.default_reply(Reply::json(200, json!({"state": "open"})));
    let with_example = |public_url: &str| {
        config(&mock, "")
            .replace("public_url = \"https://gateway.example.com\"\n", public_url)
            .replace(
                "[actions.params]\norderId",
                "example_input = { orderId = \"o-example\" }\n[actions.params]\norderId",
            )
    };
    let text = with_example("");
    let app = TestApp::spawn_with(&text).await;
    std::fs::write(app.dir.path().join("gateway.toml"), &text).unwrap();

    let r = admin_post(&app, "/admin/v1/actions/publish", None).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["success"], true, "{report}");
    assert_eq!(report["warnings"], json!([]), "{report}");
    assert_eq!(report["actions"][0]["test"]["success"], true, "{report}");
    assert!(
        mock.seen()
            .iter()
            .any(|s| s.path_and_query == "/api/orders/o-example?expand=lines"),
        "the simulator's test went through this gateway"
    );

    // Another port of this machine: the answer warns, and the test fails against it.
    let text = with_example("public_url = \"http://127.0.0.1:9\"\n");
    std::fs::write(app.dir.path().join("gateway.toml"), &text).unwrap();
    assert_eq!(
        admin_post(&app, "/admin/v1/reload", None).await.status(),
        200
    );
    let report: Value = admin_post(&app, "/admin/v1/actions/publish?dryRun=true", None)
        .await
        .json()
        .await
        .unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{report}");
    let warning = warnings[0].as_str().unwrap();
    assert!(warning.contains("data_actions.public_url"), "{warning}");
    assert!(warning.contains(&app.addr.to_string()), "{warning}");
    assert!(
        warning.contains("on this machine, which this gateway does not serve"),
        "one sentence: {warning}"
    );
    assert_eq!(report["actions"][0]["change"], "updated", "{report}");
    assert_eq!(
        report["actions"][0]["changes"],
        json!(["requestUrlTemplate"]),
        "{report}"
    );
    app.stop().await;
}

/// The gateway binary, its JSON log lines collected as they come.
struct Binary {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Binary {
    fn serve(config: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("GATEWAY_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                sink.lock().unwrap().push(value);
            }
        });
        Self { child, lines }
    }

    /// The first line `matches` accepts, waiting for it (bounded).
    async fn line(&self, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(found) = self.lines.lock().unwrap().iter().find(|l| matches(l)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such log line in:\n{:#?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn all(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `request_id` of the request span a line was logged in.
fn request_id(line: &Value) -> Option<&str> {
    line["spans"]
        .as_array()?
        .iter()
        .find_map(|s| s["request_id"].as_str())
}

/// Through the binary with JSON logs: the startup summary line; a failed execution logged once
/// at WARN with its action, upstream, outcome, upstream status and attempts as typed fields,
/// and the same in its audit detail; a reload's `restart_required` as a JSON array; one span
/// representation on every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_its_summary_and_each_failure_once_with_its_cause() {
    let mock = MockUpstream::start().await;
    mock.default_reply(Reply::json(404, json!({"message": "no such order"})));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let text = config(
        &mock,
        "[[actions]]\nname = \"bare\"\nupstream = \"crm\"\npath = \"/bare\"\n",
    )
    .replace(
        "shutdown_grace_ms = 5000",
        "shutdown_grace_ms = 5000\n[telemetry]\nlog_format = \"json\"",
    )
    .replace("public_url = \"https://gateway.example.com\"\n", "");
    std::fs::write(&file, &text).unwrap();
    let gateway = Binary::serve(&file);

    // One summary line: what runs, from where, where it listens, against what.
    let summary = gateway.line(|l| l["message"] == "gateway listening").await;
    assert_eq!(summary["level"], "INFO");
    assert_eq!(summary["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(summary["config"], file.display().to_string());
    let addr = summary["addr"].as_str().unwrap().to_owned();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{summary}"
    );
    assert_eq!(summary["threads"], 2, "{summary}");
    assert_eq!(summary["actions"], 2, "{summary}");
    assert_eq!(summary["action_names"], json!(["lookupOrder", "bare"]));
    assert_eq!(summary["upstreams"], 2, "{summary}");
    assert_eq!(summary["upstream_names"], json!(["crm", "genesys"]));
    assert_eq!(
        summary["store"],
        format!("sqlite {}", dir.path().join("data/gateway.db").display())
    );
    assert_eq!(
        summary["public_url"],
        format!("http://{addr}"),
        "derived: {summary}"
    );
    assert!(
        summary["simulator"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert_eq!(summary["sim_client"], "sim-client");
    assert_eq!(summary["sim_secret"], "sim-secret");
    let summaries = gateway
        .all()
        .iter()
        .filter(|l| l["message"] == "gateway listening")
        .count();
    assert_eq!(summaries, 1);
    // The action without schemas is warned about at load.
    let warning = gateway
        .line(|l| l["key"] == "actions[1].input_schema")
        .await;
    assert_eq!(warning["level"], "WARN");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .starts_with("actions[1] (bare).input_schema: ")
    );

    // A failing execution: one WARN line with its cause, typed.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(format!("http://{addr}/v1/actions/lookupOrder"))
        .basic_auth(USER, Some(PASSWORD))
        .header("X-Request-Id", "req-cause-1")
        .json(&json!({"orderId": "o-404"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 502, "upstream.error").await;
    let failure = gateway
        .line(|l| request_id(l) == Some("req-cause-1") && l["level"] == "WARN")
        .await;
    assert_eq!(failure["action"], "lookupOrder", "{failure}");
    assert_eq!(failure["upstream"], "crm", "{failure}");
    assert_eq!(failure["outcome"], "upstream_error", "{failure}");
    assert_eq!(failure["upstream_status"], 404, "{failure}");
    assert_eq!(failure["attempts"], 1, "{failure}");
    assert_eq!(failure["status"], 502, "{failure}");
    assert!(
        failure["error"].as_str().unwrap().contains("404"),
        "{failure}"
    );
    let lines = gateway.all();
    let warnings = lines
        .iter()
        .filter(|l| request_id(l) == Some("req-cause-1") && l["level"] == "WARN")
        .count();
    assert_eq!(warnings, 1, "logged once: {lines:#?}");
    let audit = loop {
        let page: Value = http
            .get(format!("http://{addr}/admin/v1/audit?kind=action.executed"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(record) = page["entities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["requestId"] == "req-cause-1")
        {
            break record.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(audit["outcome"], "upstream_error");
    assert_eq!(audit["detail"]["status"], 502, "{audit}");
    assert_eq!(audit["detail"]["upstreamStatus"], 404, "{audit}");
    assert_eq!(audit["detail"]["attempts"], 1, "{audit}");
    assert!(audit["detail"]["durationMs"].is_number(), "{audit}");

    // A reload whose listen address changed: restart_required is an array in the log.
    std::fs::write(&file, text.replace("127.0.0.1:0", "127.0.0.1:1")).unwrap();
    let r = http
        .post(format!("http://{addr}/admin/v1/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reloaded = gateway
        .line(|l| l["message"] == "configuration reloaded")
        .await;
    assert_eq!(
        reloaded["restart_required"],
        json!(["server.listen"]),
        "{reloaded}"
    );
    assert_eq!(reloaded["report"]["actions"], 2, "{reloaded}");

    for line in gateway.all() {
        assert!(
            line.get("span").is_none(),
            "one span representation: {line}"
        );
        let text = line.to_string();
        for secret in [UPSTREAM_KEY, MAPPED_SECRET, PASSWORD, ADMIN_TOKEN] {
            assert!(!text.contains(secret), "{secret} logged: {text}");
        }
    }
}
