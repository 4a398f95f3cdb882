//! Operations endpoints and graceful shutdown.

use crate::common;
use common::TestApp;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    app.stop().await;
}

#[tokio::test]
async fn readyz_checks_the_store() {
    let app = TestApp::spawn().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert!(
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "store" && c["ok"] == true),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_expose_the_spec_families() {
    let app = TestApp::spawn().await;
    app.client.get(app.url("/healthz")).send().await.unwrap();
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for family in [
        "gateway_http_requests_total",
        "gateway_http_request_duration_seconds",
        "gateway_delivery_queue_depth",
        "gateway_notifications_connected",
        "gateway_stream_clients",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
    assert!(text.contains(r#"route="/healthz""#));
    app.stop().await;
}

#[tokio::test]
async fn openapi_documents_the_routes() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    for path in ["/healthz", "/readyz", "/metrics", "/admin/v1/audit"] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_the_app_returns() {
    let app = TestApp::spawn().await;
    let addr = app.addr;
    app.stop().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn readyz_is_503_once_shutdown_begins() {
    use genesys_gateway::health::Readiness;
    use genesys_gateway::ops::{self, OpsState};
    let readiness = Readiness::new(Vec::new());
    let state = OpsState {
        readiness: readiness.clone(),
        metrics: std::sync::Arc::new(genesys_gateway::telemetry::Metrics::new()),
    };
    let (router, _) = ops::router(state).split_for_parts();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let url = format!("http://{addr}/readyz");
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    readiness.set_stopping();
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"][0]["name"], "shutdown", "{body}");
}

/// `promtool check metrics` reports nothing on the gateway's output. `.ci/run` installs promtool
/// and sets GATEWAY_REQUIRE_PROMTOOL=1; elsewhere the test says it was skipped.
#[tokio::test]
async fn metrics_pass_promtool() {
    let Ok(promtool) = which_promtool() else {
        assert!(
            std::env::var_os("GATEWAY_REQUIRE_PROMTOOL").is_none(),
            "GATEWAY_REQUIRE_PROMTOOL is set but promtool is not on PATH"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: metrics_pass_promtool: promtool not on PATH (apt-get install prometheus)"
        );
        return;
    };
    let app = TestApp::spawn().await;
    app.client.get(app.url("/healthz")).send().await.unwrap();
    app.client.get(app.url("/nope/123")).send().await.unwrap();
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    app.stop().await;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed: {report}");
    assert!(report.trim().is_empty(), "promtool reported: {report}");
}

fn which_promtool() -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .ok_or(())
}

/// Unless simulating, ready only when a Genesys token can be had.
#[tokio::test]
async fn readyz_checks_the_genesys_token_when_not_simulating() {
    use genesys_gateway::sim::{SimOptions, Simulator};
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap();
    let config = |secret: &str| {
        common::base_config().replace(
            "[genesys]\nsimulate = true",
            &format!(
                "[genesys]\nsimulate = false\napi_url = \"{url}\"\nlogin_url = \"{url}\"\nclient_id = \"sim-client\"\nclient_secret = \"{secret}\"",
                url = sim.base_url()
            ),
        )
    };
    let app = TestApp::spawn_with(&config("sim-secret")).await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert!(
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "genesys" && c["ok"] == true),
        "{body}"
    );
    app.stop().await;

    let app = TestApp::spawn_with(&config("wrong-secret")).await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "genesys" && c["ok"] == false),
        "{body}"
    );
    assert!(!body.to_string().contains("wrong-secret"));
    app.stop().await;
    sim.shutdown().await;
}
