//! Reloading actions without a restart: `POST /admin/v1/reload`, and
//! `GET /admin/v1/actions`.

use crate::common;
use crate::mock as data_actions_mock;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ADMIN_TOKEN, TestApp, assert_error, base_config};
use data_actions_mock::{MockUpstream, Reply};
use genesys_gateway::config::MappingSource;
use genesys_gateway::data_actions::DataAction;
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
        json!({"actions": 2, "upstreams": 2, "targets": 0, "restartRequired": [],
               "added": ["second"], "changed": ["lookup"], "removed": [],
               "warnings": [
                   "actions[0] (lookup).input_schema: not set: the action is published with \
                    an empty input contract, so a flow sees no inputs to fill",
                   "actions[0] (lookup).output_schema: not set: the action is published with \
                    an empty output contract, so a flow sees no outputs to map",
                   "actions[1] (second).output_schema: not set: the action is published with \
                    an empty output contract, so a flow sees no outputs to map"]})
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

/// `text` with the `second` action's `timeout_ms` set to `timeout_ms`.
fn with_timeout(text: &str, timeout_ms: u32) -> String {
    text.replace(
        "path = \"/second\"\n",
        &format!("path = \"/second\"\ntimeout_ms = {timeout_ms}\n"),
    )
    .replacen("timeout_ms = 2500\n", "", 1)
}

#[tokio::test]
async fn an_action_deadline_beyond_the_server_deadline_is_refused_by_a_reload() {
    let mock = MockUpstream::start().await;
    let v1 = config(&mock, 1, "");
    let app = TestApp::spawn_with(&v1).await;

    // 45 s would be cut at the server's 30 s while Genesys waits 45 s. Raising the server's
    // deadline in the same file does not help: that key only takes effect on restart.
    for text in [
        with_timeout(&config(&mock, 2, SECOND_ACTION), 45_000),
        with_timeout(&config(&mock, 2, SECOND_ACTION), 45_000).replace(
            "io_threads = 2",
            "io_threads = 2\nrequest_timeout_ms = 60000",
        ),
    ] {
        assert!(text.contains("timeout_ms = 45000"));
        write_config(&app, &text);
        let body = assert_error(reload(&app).await, 400, "invalid.input").await;
        assert_eq!(
            body["details"],
            json!([{"fieldName": "actions[1].timeout_ms", "errorCode": "invalid",
                    "message": "actions[1] (second).timeout_ms: must not exceed \
                                server.request_timeout_ms (30000): the server's deadline \
                                would cut the action first"}])
        );
    }
    assert_eq!(lookup(&app.client, &app.url("")).await.1["version"], 1);
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_toml_reload_names_the_problem() {
    let mock = MockUpstream::start().await;
    let app = TestApp::spawn_with(&config(&mock, 1, "")).await;

    write_config(&app, "[server\nlisten = 1");
    let body = assert_error(reload(&app).await, 400, "invalid.input").await;

    let details = body["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{body}");
    assert_eq!(details[0]["fieldName"], "");
    assert_eq!(details[0]["errorCode"], "invalid");
    // The line and column of the syntax error come first.
    let message = details[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("line 1, column ") && message.contains(": not valid TOML: "),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_action_list_is_paged_by_name() {
    let mock = MockUpstream::start().await;
    let more = format!(
        "{SECOND_ACTION}\n[[actions]]\nname = \"alpha\"\nupstream = \"crm\"\npath = \"/a\"\n\
         [[actions]]\nname = \"Zulu\"\nupstream = \"crm\"\npath = \"/z\"\n\
         [[actions]]\nname = \"mid-1\"\nupstream = \"crm\"\npath = \"/m\"\n"
    );
    let app = TestApp::spawn_with(&config(&mock, 1, &more)).await;

    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/admin/v1/actions?limit=1".to_owned(),
            Some(c) => format!("/admin/v1/actions?limit=1&cursor={c}"),
        };
        let page: Value = app.admin_get(&path).await.json().await.unwrap();
        pages += 1;
        let entities = page["entities"].as_array().unwrap();
        assert_eq!(entities.len(), 1, "{page}");
        names.push(entities[0]["name"].as_str().unwrap().to_owned());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(names, ["Zulu", "alpha", "lookup", "mid-1", "second"]);

    // Default and clamped limits give one page.
    let all: Value = app
        .admin_get("/admin/v1/actions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["entities"].as_array().unwrap().len(), 5);
    assert_eq!(all["nextCursor"], Value::Null);
    let all: Value = app
        .admin_get("/admin/v1/actions?limit=5000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["entities"].as_array().unwrap().len(), 5);
    let two: Value = app
        .admin_get("/admin/v1/actions?limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(two["entities"][1]["name"], "alpha");
    assert!(two["nextCursor"].is_string());

    for bad in ["%%%", "bm90IGEgbmFtZSE", "_w"] {
        let r = app
            .admin_get(&format!("/admin/v1/actions?cursor={bad}"))
            .await;
        assert_error(r, 400, "bad.request").await;
    }
    app.stop().await;
}

/// An upstream whose `/gated/...` answers wait for a permit, announcing each arrival.
struct GatedUpstream {
    addr: std::net::SocketAddr,
    arrived: Arc<tokio::sync::Semaphore>,
    release: Arc<tokio::sync::Semaphore>,
}

impl GatedUpstream {
    async fn start() -> Self {
        use axum::extract::{Path, State};
        let arrived = Arc::new(tokio::sync::Semaphore::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let gates = (arrived.clone(), release.clone());
        let app = axum::Router::new()
            .route(
                "/gated/{id}",
                axum::routing::get(
                    |State((arrived, release)): State<(
                        Arc<tokio::sync::Semaphore>,
                        Arc<tokio::sync::Semaphore>,
                    )>,
                     Path(id): Path<String>| async move {
                        arrived.add_permits(1);
                        release.acquire().await.unwrap().forget();
                        axum::Json(json!({"id": id}))
                    },
                ),
            )
            .route(
                "/open/{id}",
                axum::routing::get(|Path(id): Path<String>| async move {
                    axum::Json(json!({"id": id}))
                }),
            )
            .with_state(gates);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            arrived,
            release,
        }
    }
}

fn gated_config(upstream: &GatedUpstream, version: u32, path: &str) -> String {
    format!(
        r#"{base}
[upstreams.crm]
base_url = "http://{addr}"
retry = {{ max_attempts = 1 }}

[[actions]]
name = "lookup"
upstream = "crm"
path = "{path}/{{id}}"
[actions.params]
id = "/id"
[actions.output]
"/version" = {{ value = {version} }}
"/id" = "/id"
"#,
        base = base_config(),
        addr = upstream.addr,
    )
}

#[tokio::test]
async fn a_call_in_flight_across_a_reload_finishes_on_the_old_definition() {
    let upstream = GatedUpstream::start().await;
    let app = TestApp::spawn_with(&gated_config(&upstream, 1, "/gated")).await;
    let old_call = tokio::spawn({
        let (client, base) = (app.client.clone(), app.url(""));
        async move { lookup(&client, &base).await }
    });
    // The old call is at the upstream, waiting.
    tokio::time::timeout(Duration::from_secs(10), upstream.arrived.acquire())
        .await
        .expect("the call reaches the upstream")
        .unwrap()
        .forget();

    write_config(&app, &gated_config(&upstream, 2, "/open"));
    assert_eq!(reload(&app).await.status(), 200);
    let new_call = lookup(&app.client, &app.url("")).await;
    assert_eq!(new_call, (200, json!({"version": 2, "id": "t-1"})));
    assert!(!old_call.is_finished(), "the old call is still waiting");

    upstream.release.add_permits(1);
    let old_call = tokio::time::timeout(Duration::from_secs(10), old_call)
        .await
        .expect("the old call finishes")
        .unwrap();
    assert_eq!(old_call, (200, json!({"version": 1, "id": "t-1"})));
    app.stop().await;
}

/// A gateway built with actions made in code, next to the configuration's.
struct CodeApp {
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    dir: tempfile::TempDir,
    shutdown: genesys_gateway::app::ShutdownHandle,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl CodeApp {
    async fn spawn(toml: &str, actions: Vec<DataAction>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = genesys_gateway::config::Environment::default();
        let settings = common::settings(toml, dir.path(), &env);
        std::fs::write(dir.path().join("gateway.toml"), toml).unwrap();
        let app = genesys_gateway::app::Application::build_with_actions(settings, env, actions)
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let shutdown = app.shutdown_handle();
        let join = tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            addr,
            client,
            dir,
            shutdown,
            join,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        self.shutdown.shutdown();
        self.join.await.unwrap().unwrap();
    }
}

fn code_built() -> DataAction {
    DataAction::builder("codeBuilt")
        .upstream("crm")
        .path("/code/{id}")
        .param("id", "/id")
        .output_field("/source", MappingSource::literal("code"))
        .output_field("/id", "/id")
        .build()
        .unwrap()
}

#[tokio::test]
async fn actions_built_in_code_are_served_next_to_the_config_and_survive_a_reload() {
    let mock = MockUpstream::start().await;
    mock.default_reply(Reply::json(200, json!({"id": "t-1"})));
    let app = CodeApp::spawn(&config(&mock, 1, ""), vec![code_built()]).await;
    let call = |name: &'static str| {
        app.client
            .post(app.url(&format!("/v1/actions/{name}")))
            .json(&json!({"id": "t-1"}))
            .send()
    };

    let r = call("codeBuilt").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"source": "code", "id": "t-1"})
    );
    assert_eq!(call("lookup").await.unwrap().status(), 200);
    assert_eq!(mock.seen()[0].path_and_query, "/code/t-1");

    std::fs::write(
        app.dir.path().join("gateway.toml"),
        config(&mock, 2, SECOND_ACTION),
    )
    .unwrap();
    let report: Value = app
        .client
        .post(app.url("/admin/v1/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["actions"], 3, "{report}");

    let r = call("codeBuilt").await.unwrap();
    assert_eq!(r.status(), 200, "still served after the reload");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"source": "code", "id": "t-1"})
    );
    assert_eq!(call("second").await.unwrap().status(), 200);
    let list: Value = app
        .client
        .get(app.url("/admin/v1/actions"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["codeBuilt", "lookup", "second"]);
    app.stop().await;
}

#[tokio::test]
async fn a_code_built_action_clashing_with_the_config_is_a_startup_problem() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = genesys_gateway::config::Environment::default();
    let settings = common::settings(&config(&mock, 1, ""), dir.path(), &env);
    let clash = DataAction::builder("lookup")
        .upstream("crm")
        .path("/x")
        .build()
        .unwrap();

    let err = genesys_gateway::app::Application::build_with_actions(settings, env, vec![clash])
        .await
        .unwrap_err();

    assert!(
        format!("{err:#}").contains("actions[1].name: `lookup` is used twice"),
        "{err:#}"
    );
}

/// Kills a child process when dropped (a failed assertion never leaves it running).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// `GET path` with the admin token on a plain connection; the body.
fn admin_get_blocking(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

#[test]
fn sighup_reloads_the_running_binary() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let action = |name: &str| {
        format!("[[actions]]\nname = \"{name}\"\nupstream = \"genesys\"\npath = \"/api/v2/x\"\n")
    };
    std::fs::write(&file, format!("{}{}", base_config(), action("before"))).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["serve", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .env_remove("GATEWAY_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the gateway logs its address").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    assert!(admin_get_blocking(&addr, "/admin/v1/actions").contains("\"before\""));

    std::fs::write(&file, format!("{}{}", base_config(), action("after"))).unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());

    // The reload runs in the background: poll (bounded) until the new set is served.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let list = loop {
        let list = admin_get_blocking(&addr, "/admin/v1/actions");
        if list.contains("\"after\"") || std::time::Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        list.contains("\"after\"") && !list.contains("\"before\""),
        "{list}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP did not end the process"
    );
    let audit = admin_get_blocking(&addr, "/admin/v1/audit?kind=config.reloaded");
    assert!(audit.contains("\"actor\":\"system\""), "{audit}");
}
