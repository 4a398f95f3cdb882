//! Operations endpoints (SPEC §3.1).
mod common;
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
async fn unknown_route_is_404_in_error_shape() {
    let app = TestApp::spawn().await;
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    common::assert_error(r, 404, "not.found").await;
    let r = app.client.post(app.url("/healthz")).send().await.unwrap();
    common::assert_error(r, 405, "method.not.allowed").await;
    app.stop().await;
}
