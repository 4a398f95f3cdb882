//! Shared test harness: a real gateway on 127.0.0.1:0 with its own SQLite file.
#![allow(dead_code)]

pub mod postgres;

use std::path::Path;

use genesys_gateway::app::{Application, ApplicationBuilder, ShutdownHandle};
use genesys_gateway::config::{Environment, Settings};
use genesys_gateway::delivery::DeliveryEngine;
use genesys_gateway::sim::{SIM_CLIENT_ID, SIM_CLIENT_SECRET};

/// The admin token of [`base_config`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A minimal valid configuration for tests: loopback port 0, two server threads, SQLite in
/// `dir`, an admin token. Append sections to it.
pub fn base_config() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
io_threads = 2
shutdown_grace_ms = 5000

[store]
url = "sqlite://data/gateway.db"

[genesys]
simulate = true

[admin.auth]
type = "bearer"
tokens = ["{ADMIN_TOKEN}"]
"#
    )
}

/// Parses a configuration the way the binary does, with `dir` as the config folder.
pub fn settings(toml: &str, dir: &Path, env: &Environment) -> Settings {
    Settings::from_toml(toml, &dir.join("gateway.toml"), dir, env)
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"))
}

/// A running gateway.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The app's delivery engine (producers enqueue through it).
    pub delivery: DeliveryEngine,
    /// The in-process simulator's base URL, when simulating.
    pub sim_url: Option<String>,
    shutdown: ShutdownHandle,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// A gateway with [`base_config`].
    pub async fn spawn() -> Self {
        Self::spawn_with(&base_config()).await
    }

    /// A gateway with this configuration text.
    pub async fn spawn_with(toml: &str) -> Self {
        Self::spawn_with_env(toml, &Environment::default()).await
    }

    /// A gateway with this configuration text and environment.
    pub async fn spawn_with_env(toml: &str, env: &Environment) -> Self {
        Self::spawn_built(toml, env, |builder| builder).await
    }

    /// A gateway with this configuration text and environment, its [`ApplicationBuilder`]
    /// adjusted by `adjust` (actions made in code, extra reloadable parts). The config file is
    /// written to `<dir>/gateway.toml` (what a reload reads).
    pub async fn spawn_built(
        toml: &str,
        env: &Environment,
        adjust: impl FnOnce(ApplicationBuilder) -> ApplicationBuilder,
    ) -> Self {
        Self::spawn_in(tempfile::tempdir().expect("temp dir"), toml, env, adjust).await
    }

    /// Like [`TestApp::spawn_built`], in the folder `dir` (a gateway restarted on the store
    /// of a stopped one: see [`TestApp::stop_keeping_dir`]).
    pub async fn spawn_in(
        dir: tempfile::TempDir,
        toml: &str,
        env: &Environment,
        adjust: impl FnOnce(ApplicationBuilder) -> ApplicationBuilder,
    ) -> Self {
        std::fs::write(dir.path().join("gateway.toml"), toml).expect("config written");
        let settings = settings(toml, dir.path(), env);
        let app = adjust(Application::builder(settings))
            .build()
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let delivery = app.delivery();
        let sim_url = app.simulator_url();
        let shutdown = app.shutdown_handle();
        let join = tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Self {
            addr,
            client,
            dir,
            delivery,
            sim_url,
            shutdown,
            join: Some(join),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET with the admin token.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    /// Begins the graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.shutdown.shutdown();
    }

    /// Shuts down and waits for the app to stop.
    pub async fn stop(mut self) {
        self.shutdown.shutdown();
        if let Some(join) = self.join.take() {
            join.await.expect("app task").expect("app stopped cleanly");
        }
    }
}

impl TestApp {
    /// Shuts down, waits for the app to stop and hands back its folder (its SQLite store).
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        self.shutdown.shutdown();
        if let Some(join) = self.join.take() {
            join.await.expect("app task").expect("app stopped cleanly");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

/// A token of the simulator's built-in client (`sim-client` / `sim-secret`) from the login of
/// the simulator at `base` (its base URL); asserts that the login answers 200.
pub async fn sim_token(http: &reqwest::Client, base: &str) -> String {
    let response = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(SIM_CLIENT_ID, Some(SIM_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), 200, "the simulator's login");
    let body: serde_json::Value = response.json().await.expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Asserts an error body has the error shape and returns it.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("x-request-id on every response")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body: serde_json::Value = response.json().await.expect("json error body");
    assert_eq!(body["status"], status, "body.status: {body}");
    assert_eq!(body["code"], code, "body.code: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {body}"
    );
    assert_eq!(
        body["contextId"],
        request_id.as_str(),
        "contextId is the request id"
    );
    assert!(body["details"].is_array(), "details: {body}");
    assert_eq!(body["errors"], serde_json::json!([]));
    body
}
