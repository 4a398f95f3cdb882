//! The admin surface: bearer auth, not served without tokens, list shape.

use crate::common;

use common::{ADMIN_TOKEN, TestApp};

#[tokio::test]
async fn admin_requires_the_bearer_token() {
    let app = TestApp::spawn().await;
    let url = app.url("/admin/v1/audit");

    let r = app.client.get(&url).send().await.unwrap();
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    common::assert_error(r, 401, "authentication.required").await;

    let r = app.client.get(&url).bearer_auth("").send().await.unwrap();
    common::assert_error(r, 401, "authentication.required").await;

    let r = app
        .client
        .get(&url)
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let body = common::assert_error(r, 401, "invalid.token").await;
    assert!(
        !body.to_string().contains("wrong-token"),
        "no echo of credentials"
    );

    let r = app
        .client
        .get(&url)
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 401, "invalid.token").await;

    let r = app.admin_get("/admin/v1/audit").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["entities"].is_array(), "{body}");
    assert!(body.get("nextCursor").is_some(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn admin_is_not_served_without_a_token() {
    let config = common::base_config().replace(
        &format!("tokens = [\"{ADMIN_TOKEN}\"]"),
        "tokens = [\"${ADMIN_TOKEN:-}\"]",
    );
    let app = TestApp::spawn_with(&config).await;
    let r = app.admin_get("/admin/v1/audit").await;
    common::assert_error(r, 404, "not.found").await;
    let r = app
        .client
        .get(app.url("/admin/v1/audit"))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 404, "not.found").await;
    app.stop().await;
}

#[tokio::test]
async fn audit_query_parameters_are_validated() {
    let app = TestApp::spawn().await;
    let r = app.admin_get("/admin/v1/audit?since=yesterday").await;
    common::assert_error(r, 400, "bad.request").await;
    let r = app.admin_get("/admin/v1/audit?limit=lots").await;
    common::assert_error(r, 400, "bad.request").await;
    let r = app.admin_get("/admin/v1/audit?cursor=not-a-cursor").await;
    common::assert_error(r, 400, "bad.request").await;
    let r = app
        .admin_get("/admin/v1/audit?since=2026-01-01T00:00:00Z&limit=5000&kind=config.reloaded")
        .await;
    assert_eq!(r.status(), 200);
    app.stop().await;
}
