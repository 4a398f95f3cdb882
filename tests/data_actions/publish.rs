//! Publishing data actions into Genesys, end to end against the simulator: the
//! gateway provisions the integration, credential and actions; the simulator then executes an
//! action for real, calling the gateway, which calls the upstream.

use crate::common;
use crate::mock as data_actions_mock;

use common::{ADMIN_TOKEN, TestApp, assert_error, base_config};
use data_actions_mock::{MockUpstream, Reply};
use genesys_gateway::sim::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, SimOptions, Simulator};
use serde_json::{Value, json};

const USER: &str = "genesys";

/// A gateway config talking to the simulator at `sim` (as a separately run Genesys), serving
/// two actions on the upstream `mock`.
fn config(sim: &str, mock: &MockUpstream, public_url: &str, password: &str, extra: &str) -> String {
    let base = base_config().replace(
        "simulate = true",
        &format!(
            "api_url = \"{sim}\"\nlogin_url = \"{sim}\"\nclient_id = \"{SIM_CLIENT_ID}\"\nclient_secret = \"{SIM_CLIENT_SECRET}\""
        ),
    );
    format!(
        r#"{base}
[data_actions]
auth = {{ type = "basic", username = "{USER}", password = "{password}" }}
public_url = "{public_url}"

[upstreams.orders]
base_url = "{mock}/api"

[[actions]]
name = "lookupOrder"
upstream = "orders"
path = "/orders/{{orderId}}"
timeout_ms = 4500
input_schema = {{ type = "object", required = ["orderId"], properties = {{ orderId = {{ type = "string" }} }} }}
output_schema = {{ type = "object", properties = {{ status = {{ type = "string" }} }} }}
example_input = {{ orderId = "o-example" }}
[actions.params]
orderId = "/orderId"
[actions.output]
"/status" = "/state"
"/total" = "/amounts/total"

[[actions]]
name = "createNote"
upstream = "orders"
method = "POST"
path = "/notes"
{extra}
"#,
        mock = mock.base_url(),
    )
}

/// Reads the simulator's state as Genesys clients do.
struct SimApi {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl SimApi {
    async fn new(base: String) -> Self {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let token = common::sim_token(&client, &base).await;
        Self {
            base,
            token,
            client,
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The requests the simulator received on paths matching `glob` (`METHOD path` each).
    async fn requests(&self, glob: &str) -> Vec<String> {
        let seen: Value = self
            .client
            .get(format!("{}/__sim/requests", self.base))
            .query(&[("path", glob)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap(),
                    r["path"].as_str().unwrap()
                )
            })
            .collect()
    }

    async fn forget_requests(&self) {
        let r = self
            .client
            .delete(format!("{}/__sim/requests", self.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Arms a simulator fault.
    async fn fault(&self, fault: Value) {
        let r = self
            .client
            .post(format!("{}/__sim/faults", self.base))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// How many integrations, credentials and actions exist.
    async fn counts(&self) -> (usize, usize, usize) {
        let n = |v: Value| v["entities"].as_array().map_or(0, Vec::len);
        (
            n(self.get("/api/v2/integrations?pageSize=100").await),
            n(self
                .get("/api/v2/integrations/credentials?pageSize=100")
                .await),
            n(self.get("/api/v2/integrations/actions?pageSize=100").await),
        )
    }
}

async fn publish(app: &TestApp, dry_run: bool) -> reqwest::Response {
    let query = if dry_run { "?dryRun=true" } else { "" };
    app.client
        .post(app.url(&format!("/admin/v1/actions/publish{query}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

async fn reload_with(app: &TestApp, text: &str) {
    std::fs::write(app.dir.path().join("gateway.toml"), text).unwrap();
    let r = app
        .client
        .post(app.url("/admin/v1/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

fn entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

#[tokio::test]
async fn publish_provisions_genesys_idempotently_and_genesys_calls_the_gateway() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let api = SimApi::new(sim.base_url()).await;
    let mock = MockUpstream::start().await;
    mock.default_reply(Reply::json(
        200,
        json!({"state": "shipped", "amounts": {"total": 12.5}, "secret": "x"}),
    ));
    // The gateway's port is known once it runs: start it, then reload with its public URL.
    let app = TestApp::spawn_with(&config(
        &sim.base_url(),
        &mock,
        "http://127.0.0.1:9",
        "pw-1",
        "",
    ))
    .await;
    let public_url = app.url("");
    let v1 = config(&sim.base_url(), &mock, &public_url, "pw-1", "");
    reload_with(&app, &v1).await;

    // Dry run on an empty org: everything would be created, nothing is written.
    let r = publish(&app, true).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(
        report,
        json!({"success": true,
               "warnings": [
                   "createNote: no input_schema: published with an empty input contract",
                   "createNote: no output_schema: published with an empty output contract"],
               "actions": [
            {"name": "lookupOrder", "genesysActionId": null, "change": "created", "changes": [],
             "error": null, "test": null},
            {"name": "createNote", "genesysActionId": null, "change": "created", "changes": [],
             "error": null, "test": null}
        ]})
    );
    assert_eq!(api.counts().await, (0, 0, 0));

    // Apply: integration, credential, two actions; the one with an example is tested.
    let report: Value = publish(&app, false).await.json().await.unwrap();
    let lookup = entry(&report, "lookupOrder");
    assert_eq!(lookup["change"], "created");
    let lookup_id = lookup["genesysActionId"].as_str().unwrap().to_owned();
    assert_eq!(lookup["test"]["success"], true, "{report}");
    assert!(lookup["test"]["latencyMs"].is_u64());
    assert_eq!(lookup["test"]["error"], Value::Null);
    let note = entry(&report, "createNote");
    assert_eq!(note["change"], "created");
    assert_eq!(note["test"], Value::Null);
    let note_id = note["genesysActionId"].as_str().unwrap().to_owned();
    assert_eq!(api.counts().await, (1, 1, 2));
    assert!(
        mock.seen()
            .iter()
            .any(|s| s.path_and_query == "/api/orders/o-example"),
        "the test went simulator → gateway → upstream"
    );

    let integrations = api.get("/api/v2/integrations?pageSize=100").await;
    let integration = &integrations["entities"][0];
    assert_eq!(integration["name"], "genesys-gateway");
    assert_eq!(integration["integrationType"]["id"], "custom-rest-actions");
    assert_eq!(integration["intendedState"], "ENABLED");
    let integration_id = integration["id"].as_str().unwrap();
    let config_now = api
        .get(&format!(
            "/api/v2/integrations/{integration_id}/config/current"
        ))
        .await;
    assert!(config_now["credentials"]["basicAuth"]["id"].is_string());
    let credential_id = config_now["credentials"]["basicAuth"]["id"]
        .as_str()
        .unwrap();
    let credential = api
        .get(&format!("/api/v2/integrations/credentials/{credential_id}"))
        .await;
    assert_eq!(
        credential["name"], "genesys-gateway",
        "a name that says nothing about the password"
    );
    let action = api
        .get(&format!(
            "/api/v2/integrations/actions/{lookup_id}?expand=contract&includeConfig=true"
        ))
        .await;
    assert_eq!(action["category"], "genesys-gateway");
    let fingerprint = action["config"]["request"]["headers"]["X-Gateway-Definition"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(fingerprint.len(), 64);
    assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(action["integrationId"], integration_id);
    assert_eq!(
        action["config"]["request"]["requestUrlTemplate"],
        format!("{public_url}/v1/actions/lookupOrder")
    );
    assert_eq!(action["config"]["request"]["requestType"], "POST");
    assert_eq!(
        action["config"]["request"]["requestTemplate"],
        "${input.rawRequest}"
    );
    assert_eq!(
        action["config"]["response"]["successTemplate"],
        "${rawResult}"
    );
    assert_eq!(action["config"]["response"]["translationMap"], json!({}));
    assert_eq!(action["config"]["timeoutSeconds"], 5);
    assert_eq!(
        action["contract"]["input"]["inputSchema"]["required"],
        json!(["orderId"])
    );
    let note_action = api
        .get(&format!(
            "/api/v2/integrations/actions/{note_id}?expand=contract&includeConfig=true"
        ))
        .await;
    assert_eq!(
        note_action["contract"]["output"]["successSchema"],
        json!({"type": "object"})
    );

    // A second run changes nothing and creates nothing.
    api.forget_requests().await;
    let report: Value = publish(&app, false).await.json().await.unwrap();
    assert_eq!(entry(&report, "lookupOrder")["change"], "unchanged");
    assert_eq!(
        entry(&report, "lookupOrder")["genesysActionId"],
        lookup_id.as_str()
    );
    assert_eq!(entry(&report, "createNote")["change"], "unchanged");
    assert_eq!(api.counts().await, (1, 1, 2));
    let writes: Vec<String> = api
        .requests("/api/v2/integrations*")
        .await
        .into_iter()
        .filter(|r| !r.starts_with("GET ") && !r.ends_with("/test"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    // What a flow sees: Genesys executes the action, calling the gateway with the credential.
    let (status, output) = api
        .post(
            &format!("/api/v2/integrations/actions/{lookup_id}/execute"),
            json!({"orderId": "o-42"}),
        )
        .await;
    assert_eq!(status, 200, "{output}");
    assert_eq!(output, json!({"status": "shipped", "total": 12.5}));
    assert_eq!(
        mock.seen().last().unwrap().path_and_query,
        "/api/orders/o-42"
    );

    // A changed timeout and a changed contract both update the action through a draft,
    // keeping its id (Architect flows refer to it).
    let v2 = config(
        &sim.base_url(),
        &mock,
        &public_url,
        "pw-1",
        "output_schema = { type = \"object\", required = [\"id\"] }",
    )
    .replace("timeout_ms = 4500", "timeout_ms = 9000");
    reload_with(&app, &v2).await;
    let dry: Value = publish(&app, true).await.json().await.unwrap();
    assert_eq!(entry(&dry, "lookupOrder")["change"], "updated");
    assert_eq!(entry(&dry, "createNote")["change"], "updated");
    assert_eq!(entry(&dry, "lookupOrder")["test"], Value::Null);
    // The dry run names what would change, per action.
    assert_eq!(
        entry(&dry, "lookupOrder")["changes"],
        json!(["timeoutSeconds"])
    );
    assert_eq!(
        entry(&dry, "createNote")["changes"],
        json!(["contract.output"])
    );
    assert_eq!(dry["success"], true);
    api.forget_requests().await;
    let report: Value = publish(&app, false).await.json().await.unwrap();
    assert_eq!(entry(&report, "lookupOrder")["change"], "updated");
    assert_eq!(
        entry(&report, "lookupOrder")["genesysActionId"],
        lookup_id.as_str()
    );
    assert_eq!(entry(&report, "createNote")["change"], "updated");
    assert_eq!(
        entry(&report, "createNote")["genesysActionId"],
        note_id.as_str()
    );
    let action = api
        .get(&format!(
            "/api/v2/integrations/actions/{lookup_id}?includeConfig=true"
        ))
        .await;
    assert_eq!(action["config"]["timeoutSeconds"], 9);
    assert_ne!(
        action["config"]["request"]["headers"]["X-Gateway-Definition"],
        fingerprint.as_str()
    );
    let note_action = api
        .get(&format!(
            "/api/v2/integrations/actions/{note_id}?expand=contract"
        ))
        .await;
    assert_eq!(
        note_action["contract"]["output"]["successSchema"],
        json!({"type": "object", "required": ["id"]})
    );
    assert_eq!(api.counts().await, (1, 1, 2));
    let action_writes: Vec<String> = api
        .requests("/api/v2/integrations/actions*")
        .await
        .into_iter()
        .filter(|r| !r.starts_with("GET ") && !r.ends_with("/test"))
        .collect();
    let draft = |id: &str| {
        [
            format!("POST /api/v2/integrations/actions/{id}/draft"),
            format!("PATCH /api/v2/integrations/actions/{id}/draft"),
            format!("POST /api/v2/integrations/actions/{id}/draft/publish"),
        ]
    };
    assert_eq!(
        action_writes,
        [draft(&lookup_id), draft(&note_id)].concat(),
        "draft, patch, publish; no delete, no create"
    );

    // A new password: a new credential replaces the old one, which is deleted; actions
    // unchanged, Genesys still gets in.
    let v3 = v2.replace("password = \"pw-1\"", "password = \"pw-2\"");
    reload_with(&app, &v3).await;
    let report: Value = publish(&app, false).await.json().await.unwrap();
    assert_eq!(entry(&report, "lookupOrder")["change"], "unchanged");
    assert_eq!(
        entry(&report, "lookupOrder")["test"]["success"],
        true,
        "{report}"
    );
    assert_eq!(
        api.counts().await.1,
        1,
        "the replaced credential is deleted"
    );
    let config_now = api
        .get(&format!(
            "/api/v2/integrations/{integration_id}/config/current"
        ))
        .await;
    let rotated_id = config_now["credentials"]["basicAuth"]["id"]
        .as_str()
        .unwrap();
    assert_ne!(rotated_id, credential_id);
    let old = api
        .client
        .get(format!(
            "{}/api/v2/integrations/credentials/{credential_id}",
            api.base
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 404);
    // The same credential again: nothing created, nothing deleted.
    api.forget_requests().await;
    let report: Value = publish(&app, false).await.json().await.unwrap();
    assert_eq!(entry(&report, "lookupOrder")["change"], "unchanged");
    assert_eq!(
        api.requests("/api/v2/integrations/credentials*").await,
        ["GET /api/v2/integrations/credentials"],
        "only the look for credentials of older versions"
    );
    let put_configs = api.requests("/api/v2/integrations/*/config/current").await;
    assert!(
        put_configs.iter().all(|r| r.starts_with("GET ")),
        "{put_configs:?}"
    );
    let (status, _) = api
        .post(
            &format!("/api/v2/integrations/actions/{lookup_id}/execute"),
            json!({"orderId": "o-43"}),
        )
        .await;
    assert_eq!(status, 200);

    // Every write is audited.
    let audit: Value = app
        .admin_get("/admin/v1/audit?kind=action.published")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entities"].as_array().unwrap().len(), 4);
    app.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn failing_tests_are_reported_and_stop_after_a_few() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let mock = MockUpstream::start().await;
    // Genesys cannot reach the gateway at this public URL.
    let extra = (0..10)
        .map(|i| {
            format!(
                "[[actions]]\nname = \"probe{i}\"\nupstream = \"orders\"\npath = \"/p\"\nexample_input = {{ a = 1 }}\n"
            )
        })
        .collect::<String>();
    let app = TestApp::spawn_with(&config(
        &sim.base_url(),
        &mock,
        "http://127.0.0.1:9",
        "pw-1",
        &extra,
    ))
    .await;

    let report: Value = publish(&app, false).await.json().await.unwrap();

    let tests: Vec<&Value> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !a["test"].is_null())
        .map(|a| &a["test"])
        .collect();
    assert_eq!(tests.len(), 11, "{report}");
    assert!(tests.iter().all(|t| t["success"] == false));
    assert!(tests.iter().all(|t| t["error"].is_string()));
    // Four run at a time; none starts once three failed in a row: the three failures and at
    // most the three others running beside the third one were run.
    let run = tests
        .iter()
        .filter(|t| !t["error"].as_str().unwrap().contains("circuit open"))
        .count();
    assert!((3..=6).contains(&run), "{run} run: {report}");
    app.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn publishing_needs_a_public_url_and_a_basic_credential() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let mock = MockUpstream::start().await;
    let text = config(&sim.base_url(), &mock, "", "pw", "").replace("public_url = \"\"\n", "");
    let app = TestApp::spawn_with(&text).await;

    let body = assert_error(publish(&app, false).await, 400, "invalid.input").await;
    assert_eq!(body["details"][0]["fieldName"], "data_actions.public_url");

    let r = app
        .client
        .post(app.url("/admin/v1/actions/publish"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "authentication.required").await;
    app.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_and_dry_runs() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let api = SimApi::new(sim.base_url()).await;
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let text = config(
        &sim.base_url(),
        &mock,
        "https://gateway.example.com",
        "pw",
        "",
    )
    .replace("example_input = { orderId = \"o-example\" }\n", "");
    std::fs::write(&file, &text).unwrap();

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
                .args(args)
                .env("RUST_LOG", "error")
                .output()
                .unwrap()
        })
    };
    let config_arg = file.display().to_string();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "actions".to_owned(),
            "publish".to_owned(),
            "--config".to_owned(),
            config_arg.clone(),
        ];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };

    let out = run(args(&["--dry-run"])).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry(&report, "lookupOrder")["change"], "created");
    assert_eq!(api.counts().await, (0, 0, 0));

    let out = run(args(&[])).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry(&report, "createNote")["change"], "created");
    assert_eq!(api.counts().await, (1, 1, 2));

    let out = run(args(&[])).await.unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry(&report, "lookupOrder")["change"], "unchanged");
    assert_eq!(entry(&report, "createNote")["change"], "unchanged");
    assert_eq!(api.counts().await, (1, 1, 2));

    // A configuration that cannot be published exits 64 naming the key.
    std::fs::write(
        &file,
        text.replace("public_url = \"https://gateway.example.com\"\n", ""),
    )
    .unwrap();
    let out = run(args(&[])).await.unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("data_actions.public_url"));
    sim.shutdown().await;
}

/// A published action's definition as the simulator keeps it (reduced to Genesys'
/// `JsonSchemaDocument`) differs from what the gateway sent; a second run must still see no
/// change: changes are decided by the fingerprint header, not by comparing schemas.
#[tokio::test]
async fn a_schema_genesys_keeps_in_its_own_form_is_not_republished() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let api = SimApi::new(sim.base_url()).await;
    let mock = MockUpstream::start().await;
    let extra = "[[actions]]\nname = \"strict\"\nupstream = \"orders\"\npath = \"/s\"\ninput_schema = { type = \"object\", minProperties = 1, properties = { a = { type = \"string\" } } }\n";
    let text = config(
        &sim.base_url(),
        &mock,
        "https://gateway.example.com",
        "pw-1",
        extra,
    )
    .replace("example_input = { orderId = \"o-example\" }\n", "");
    let app = TestApp::spawn_with(&text).await;

    let report: Value = publish(&app, false).await.json().await.unwrap();
    let strict = entry(&report, "strict");
    assert_eq!(strict["change"], "created");
    let id = strict["genesysActionId"].as_str().unwrap();
    let stored = api
        .get(&format!(
            "/api/v2/integrations/actions/{id}?expand=contract"
        ))
        .await;
    assert_eq!(
        stored["contract"]["input"]["inputSchema"],
        json!({"type": "object", "properties": {"a": {"type": "string"}}}),
        "Genesys kept the schema in its own form"
    );

    let report: Value = publish(&app, false).await.json().await.unwrap();
    for name in ["lookupOrder", "createNote", "strict"] {
        assert_eq!(entry(&report, name)["change"], "unchanged", "{report}");
    }
    app.stop().await;
    sim.shutdown().await;
}

/// Two publications at once (two admin calls) create one integration, one credential and one
/// action per gateway action: the second waits for the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publications_do_not_duplicate_anything() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let api = SimApi::new(sim.base_url()).await;
    let mock = MockUpstream::start().await;
    let text = config(
        &sim.base_url(),
        &mock,
        "https://gateway.example.com",
        "pw-1",
        "",
    )
    .replace("example_input = { orderId = \"o-example\" }\n", "");
    let app = TestApp::spawn_with(&text).await;
    // Creating the integration is slow: a publication that did not wait would look for the
    // integration meanwhile, find none and create a second one.
    api.fault(
        json!({"method": "POST", "path": "/api/v2/integrations", "delayMs": 400, "count": 2}),
    )
    .await;

    let (a, b) = tokio::join!(publish(&app, false), publish(&app, false));

    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 200);
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!(api.counts().await, (1, 1, 2));
    let mut changes: Vec<&str> = [&a, &b]
        .iter()
        .map(|r| entry(r, "lookupOrder")["change"].as_str().unwrap())
        .collect();
    changes.sort_unstable();
    assert_eq!(changes, ["created", "unchanged"], "{a} {b}");
    assert_eq!(
        entry(&a, "lookupOrder")["genesysActionId"],
        entry(&b, "lookupOrder")["genesysActionId"]
    );
    app.stop().await;
    sim.shutdown().await;
}

/// A publication outlives a request cut by the server's deadline: it finishes and is audited,
/// and the next publication finds everything done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_cut_by_the_request_deadline_still_finishes() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let api = SimApi::new(sim.base_url()).await;
    let mock = MockUpstream::start().await;
    let text = config(
        &sim.base_url(),
        &mock,
        "https://gateway.example.com",
        "pw-1",
        // Action deadlines may not exceed the (short) server deadline of this test.
        "timeout_ms = 1000",
    )
    .replace("example_input = { orderId = \"o-example\" }\n", "")
    .replace("timeout_ms = 4500", "timeout_ms = 1000")
    .replace(
        "shutdown_grace_ms = 5000",
        "shutdown_grace_ms = 5000\nrequest_timeout_ms = 1000",
    );
    let app = TestApp::spawn_with(&text).await;
    // Creating the first action takes longer than the request may.
    api.fault(json!({"method": "POST", "path": "/api/v2/integrations/actions", "delayMs": 2000}))
        .await;

    assert_error(publish(&app, false).await, 504, "request.timeout").await;

    // The publication goes on without its request: both actions get created and audited.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let audit: Value = app
            .admin_get("/admin/v1/audit?kind=action.published")
            .await
            .json()
            .await
            .unwrap();
        if audit["entities"].as_array().unwrap().len() == 2 {
            assert!(
                audit["entities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|e| e["outcome"] == "created"),
                "{audit}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cut publication never finished: {audit}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let report: Value = publish(&app, false).await.json().await.unwrap();
    assert_eq!(entry(&report, "lookupOrder")["change"], "unchanged");
    assert_eq!(entry(&report, "createNote")["change"], "unchanged");
    assert_eq!(api.counts().await, (1, 1, 2));
    app.stop().await;
    sim.shutdown().await;
}

/// Credentials whose name carried a password hash (made by older gateway versions) are
/// deleted; a credential set by hand in Genesys is replaced by the next publication (and left
/// alone: the gateway did not make it), the gateway's previous one is deleted.
#[tokio::test]
async fn old_and_foreign_credentials_are_replaced_and_deleted() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let api = SimApi::new(sim.base_url()).await;
    let mock = MockUpstream::start().await;
    let text = config(
        &sim.base_url(),
        &mock,
        "https://gateway.example.com",
        "pw-1",
        "",
    )
    .replace("example_input = { orderId = \"o-example\" }\n", "");
    let app = TestApp::spawn_with(&text).await;
    let basic = |name: &str| {
        json!({"name": name, "type": {"name": "basicAuth"},
               "credentialFields": {"userName": USER, "password": "old"}})
    };
    for name in [
        "genesys-gateway basicAuth 0123456789abcdef",
        "genesys-gateway basicAuth fedcba9876543210",
    ] {
        let (status, _) = api
            .post("/api/v2/integrations/credentials", basic(name))
            .await;
        assert_eq!(status, 200);
    }
    let (_, unrelated) = api
        .post("/api/v2/integrations/credentials", basic("crm"))
        .await;

    let report: Value = publish(&app, false).await.json().await.unwrap();
    assert_eq!(entry(&report, "lookupOrder")["change"], "created");
    let names = |listing: Value| -> Vec<String> {
        let mut names: Vec<String> = listing["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(
            api.get("/api/v2/integrations/credentials?pageSize=100")
                .await
        ),
        ["crm", "genesys-gateway"],
        "the old versions' credentials are gone, others are left alone"
    );

    // Someone points the integration at another credential by hand.
    let integrations = api.get("/api/v2/integrations?pageSize=100").await;
    let integration_id = integrations["entities"][0]["id"].as_str().unwrap();
    let config_path = format!("/api/v2/integrations/{integration_id}/config/current");
    let mut current = api.get(&config_path).await;
    let ours = current["credentials"]["basicAuth"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    current["credentials"] = json!({"basicAuth": {"id": unrelated["id"]}});
    let r = api
        .client
        .put(format!("{}{config_path}", api.base))
        .bearer_auth(&api.token)
        .json(&current)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    publish(&app, false).await.json::<Value>().await.unwrap();
    let now = api.get(&config_path).await;
    let set = now["credentials"]["basicAuth"]["id"].as_str().unwrap();
    assert_ne!(set, unrelated["id"].as_str().unwrap());
    assert_ne!(set, ours);
    assert_eq!(
        names(
            api.get("/api/v2/integrations/credentials?pageSize=100")
                .await
        ),
        ["crm", "genesys-gateway"],
        "the gateway's previous credential is deleted; the one someone else made is left alone"
    );
    app.stop().await;
    sim.shutdown().await;
}

/// A draft left behind (by an interrupted publication, or started in Genesys' editor) is taken
/// over: the update still goes through and the action keeps its id.
#[tokio::test]
async fn an_existing_draft_is_taken_over() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let api = SimApi::new(sim.base_url()).await;
    let mock = MockUpstream::start().await;
    let v1 = config(
        &sim.base_url(),
        &mock,
        "https://gateway.example.com",
        "pw-1",
        "",
    )
    .replace("example_input = { orderId = \"o-example\" }\n", "");
    let app = TestApp::spawn_with(&v1).await;
    let report: Value = publish(&app, false).await.json().await.unwrap();
    let id = entry(&report, "lookupOrder")["genesysActionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = api
        .post(
            &format!("/api/v2/integrations/actions/{id}/draft"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);

    reload_with(&app, &v1.replace("timeout_ms = 4500", "timeout_ms = 7000")).await;
    let report: Value = publish(&app, false).await.json().await.unwrap();

    assert_eq!(
        entry(&report, "lookupOrder")["change"],
        "updated",
        "{report}"
    );
    assert_eq!(
        entry(&report, "lookupOrder")["genesysActionId"],
        id.as_str()
    );
    let action = api
        .get(&format!(
            "/api/v2/integrations/actions/{id}?includeConfig=true"
        ))
        .await;
    assert_eq!(action["config"]["timeoutSeconds"], 7);
    let draft = api
        .client
        .get(format!(
            "{}/api/v2/integrations/actions/{id}/draft",
            api.base
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(draft.status(), 404, "the draft was published");
    app.stop().await;
    sim.shutdown().await;
}

/// `actions publish` exits 1 when an action's test fails in Genesys — the report says which —
/// and 0 once every action is published and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exits_1_when_a_test_fails_and_0_when_every_action_passes() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let mock = MockUpstream::start().await;
    mock.default_reply(Reply::json(200, json!({"state": "open"})));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let publish_cli = |text: String| {
        std::fs::write(&file, text).unwrap();
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
                .args(["actions", "publish", "--config"])
                .arg(&file)
                .env("RUST_LOG", "error")
                .output()
                .unwrap()
        })
    };

    // Nothing listens at this public URL: Genesys' test of lookupOrder fails.
    let out = publish_cli(config(
        &sim.base_url(),
        &mock,
        "http://127.0.0.1:9",
        "pw-1",
        "",
    ))
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["success"], false, "{report}");
    assert_eq!(entry(&report, "lookupOrder")["test"]["success"], false);
    assert!(entry(&report, "lookupOrder")["test"]["error"].is_string());
    assert_eq!(entry(&report, "createNote")["test"], Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lookupOrder"), "{stderr}");
    assert!(!stderr.contains("createNote"), "{stderr}");

    // A gateway that serves the actions at the public URL: the test passes, exit 0.
    let text = config(&sim.base_url(), &mock, "http://127.0.0.1:9", "pw-1", "");
    let app = TestApp::spawn_with(&text).await;
    let out = publish_cli(text.replace("http://127.0.0.1:9", &app.url("")))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["success"], true, "{report}");
    assert_eq!(entry(&report, "lookupOrder")["change"], "updated");
    assert_eq!(
        entry(&report, "lookupOrder")["changes"],
        json!(["requestUrlTemplate"])
    );
    assert_eq!(entry(&report, "lookupOrder")["test"]["success"], true);
    app.stop().await;
    sim.shutdown().await;
}

/// One action Genesys refuses does not stop the others; the report names it and why.
#[tokio::test]
async fn an_action_genesys_refuses_is_reported_and_the_others_are_published() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default())
        .await
        .unwrap();
    let api = SimApi::new(sim.base_url()).await;
    let mock = MockUpstream::start().await;
    let text = config(
        &sim.base_url(),
        &mock,
        "https://gateway.example.com",
        "pw-1",
        "",
    )
    .replace("example_input = { orderId = \"o-example\" }\n", "");
    let app = TestApp::spawn_with(&text).await;
    api.fault(json!({"method": "POST", "path": "/api/v2/integrations/actions", "status": 400, "count": 1}))
        .await;

    let r = publish(&app, false).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["success"], false, "{report}");
    let failed = entry(&report, "lookupOrder");
    assert_eq!(failed["genesysActionId"], Value::Null, "{report}");
    assert!(failed["error"].is_string(), "{report}");
    let note = entry(&report, "createNote");
    assert_eq!(note["change"], "created");
    assert_eq!(note["error"], Value::Null);
    assert!(note["genesysActionId"].is_string());

    // The next run creates what is missing.
    let report: Value = publish(&app, false).await.json().await.unwrap();
    assert_eq!(report["success"], true, "{report}");
    assert_eq!(entry(&report, "lookupOrder")["change"], "created");
    assert_eq!(entry(&report, "createNote")["change"], "unchanged");
    app.stop().await;
    sim.shutdown().await;
}
