//! `/admin/v1/targets`: the validation matrix, conflicts, secrets, declarative targets,
//! rotation, health probes, the SSRF guard, and `/admin/v1/deliveries` parameters.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_error};
use crate::support::{
    Target, admin_send, await_target_status, config, config_with, enqueue, eventually, message,
    sign,
};

fn valid(url: &str) -> Value {
    json!({
        "name": "crm-events",
        "endpointUrl": url,
        "authType": "BASIC",
        "authConfig": {"username": "gw", "password": "p4ssw0rd"},
        "retryPolicy": {"maxRetries": 3, "backoffStrategy": "LINEAR", "initialDelaySeconds": 2},
        "headers": {"X-Team": "crm"},
        "eventTypes": ["custom.legacy.orders.*"],
    })
}

fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let obj = if parent.is_empty() {
        body.as_object_mut().unwrap()
    } else {
        body.pointer_mut(parent).unwrap().as_object_mut().unwrap()
    };
    if value.is_null() {
        obj.remove(key);
    } else {
        obj.insert(key.to_owned(), value);
    }
    body
}

async fn post(app: &TestApp, body: Value) -> reqwest::Response {
    admin_send(app, Method::POST, "/admin/v1/targets", Some(body)).await
}

#[tokio::test]
async fn every_rule_of_the_validation_matrix_is_a_400_naming_its_field() {
    let target = Target::start().await;
    let app = TestApp::spawn_with(&config(&target.url(), 3)).await;
    let url = target.url();
    let long = "x".repeat(101);
    // (case, body, the field named)
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "name missing",
            with(valid(&url), "/name", Value::Null),
            "/name",
        ),
        ("name empty", with(valid(&url), "/name", json!("")), "/name"),
        (
            "name over 100",
            with(valid(&url), "/name", json!(long)),
            "/name",
        ),
        (
            "name not a string",
            with(valid(&url), "/name", json!(7)),
            "/name",
        ),
        (
            "endpoint missing",
            with(valid(&url), "/endpointUrl", Value::Null),
            "/endpointUrl",
        ),
        (
            "endpoint not a url",
            with(valid(&url), "/endpointUrl", json!("not a url")),
            "/endpointUrl",
        ),
        (
            "endpoint ftp",
            with(valid(&url), "/endpointUrl", json!("ftp://example.com/x")),
            "/endpointUrl",
        ),
        (
            "endpoint plain http",
            with(valid(&url), "/endpointUrl", json!("http://example.com/x")),
            "/endpointUrl",
        ),
        (
            "endpoint with credentials",
            with(
                valid(&url),
                "/endpointUrl",
                json!("https://u:p@example.com/x"),
            ),
            "/endpointUrl",
        ),
        (
            "endpoint on a refused network",
            with(valid(&url), "/endpointUrl", json!("https://10.1.2.3/x")),
            "/endpointUrl",
        ),
        (
            "endpoint on link-local metadata",
            with(
                valid(&url),
                "/endpointUrl",
                json!("http://169.254.169.254/latest"),
            ),
            "/endpointUrl",
        ),
        (
            "authType unknown",
            with(valid(&url), "/authType", json!("DIGEST")),
            "/authType",
        ),
        (
            "basic without username",
            with(valid(&url), "/authConfig/username", Value::Null),
            "/authConfig/username",
        ),
        (
            "basic without password",
            with(valid(&url), "/authConfig/password", Value::Null),
            "/authConfig/password",
        ),
        (
            "basic with a stray key",
            with(valid(&url), "/authConfig/token", json!("t")),
            "/authConfig/token",
        ),
        (
            "oauth2 without clientId",
            json!({"name": "o", "endpointUrl": url, "authType": "OAUTH2", "authConfig": {"clientSecret": "s", "tokenUrl": "https://idp.example.com/token"}, "eventTypes": ["a"]}),
            "/authConfig/clientId",
        ),
        (
            "oauth2 without clientSecret",
            json!({"name": "o", "endpointUrl": url, "authType": "OAUTH2", "authConfig": {"clientId": "c", "tokenUrl": "https://idp.example.com/token"}, "eventTypes": ["a"]}),
            "/authConfig/clientSecret",
        ),
        (
            "oauth2 without tokenUrl",
            json!({"name": "o", "endpointUrl": url, "authType": "OAUTH2", "authConfig": {"clientId": "c", "clientSecret": "s"}, "eventTypes": ["a"]}),
            "/authConfig/tokenUrl",
        ),
        (
            "oauth2 tokenUrl not https",
            json!({"name": "o", "endpointUrl": url, "authType": "OAUTH2", "authConfig": {"clientId": "c", "clientSecret": "s", "tokenUrl": "http://idp.example.com/token"}, "eventTypes": ["a"]}),
            "/authConfig/tokenUrl",
        ),
        (
            "jwt without token",
            json!({"name": "j", "endpointUrl": url, "authType": "JWT", "authConfig": {}, "eventTypes": ["a"]}),
            "/authConfig/token",
        ),
        (
            "maxRetries above 10",
            with(valid(&url), "/retryPolicy/maxRetries", json!(11)),
            "/retryPolicy/maxRetries",
        ),
        (
            "maxRetries negative",
            with(valid(&url), "/retryPolicy/maxRetries", json!(-1)),
            "/retryPolicy/maxRetries",
        ),
        (
            "backoffStrategy unknown",
            with(
                valid(&url),
                "/retryPolicy/backoffStrategy",
                json!("FIBONACCI"),
            ),
            "/retryPolicy/backoffStrategy",
        ),
        (
            "initialDelaySeconds 0",
            with(valid(&url), "/retryPolicy/initialDelaySeconds", json!(0)),
            "/retryPolicy/initialDelaySeconds",
        ),
        (
            "initialDelaySeconds 31",
            with(valid(&url), "/retryPolicy/initialDelaySeconds", json!(31)),
            "/retryPolicy/initialDelaySeconds",
        ),
        (
            "eventTypes empty",
            with(valid(&url), "/eventTypes", json!([])),
            "/eventTypes",
        ),
        (
            "eventTypes missing",
            with(valid(&url), "/eventTypes", Value::Null),
            "/eventTypes",
        ),
        (
            "eventTypes with a number",
            with(valid(&url), "/eventTypes", json!(["a", 3])),
            "/eventTypes/1",
        ),
        (
            "header name invalid",
            with(valid(&url), "/headers", json!({"bad header": "x"})),
            "/headers/bad header",
        ),
        (
            "header reserved",
            with(valid(&url), "/headers", json!({"Webhook-Signature": "x"})),
            "/headers/Webhook-Signature",
        ),
        (
            "unknown field",
            with(valid(&url), "/secret", json!("whsec_x")),
            "/secret",
        ),
    ];
    for (case, body, field) in cases {
        let response = post(&app, body).await;
        let error = assert_error(response, 400, "invalid.input").await;
        let fields: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["fieldName"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{case}: {error}");
    }
    // Every violated field at once.
    let all = json!({
        "name": "",
        "endpointUrl": "ftp://x",
        "authType": "BASIC",
        "authConfig": {},
        "retryPolicy": {"maxRetries": 99, "backoffStrategy": "NOPE", "initialDelaySeconds": 0},
        "eventTypes": [],
    });
    let error = assert_error(post(&app, all).await, 400, "invalid.input").await;
    let mut fields: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["fieldName"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "/authConfig/password",
            "/authConfig/username",
            "/endpointUrl",
            "/eventTypes",
            "/name",
            "/retryPolicy/backoffStrategy",
            "/retryPolicy/initialDelaySeconds",
            "/retryPolicy/maxRetries",
        ]
    );
    // The valid body passes, a second one with its name is a conflict.
    let created = post(&app, valid(&url)).await;
    assert_eq!(created.status(), 201);
    assert_error(post(&app, valid(&url)).await, 409, "conflict").await;
    app.stop().await;
}

#[tokio::test]
async fn a_created_target_shows_its_secret_once_is_verified_and_can_be_changed() {
    let target = Target::start().await;
    let app = TestApp::spawn_with(&config(&target.url(), 3)).await;
    let response = post(&app, valid(&target.url())).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["status"], "PENDING_VERIFICATION");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["authType"], "BASIC");
    assert_eq!(
        created["authConfig"],
        json!({"username": "gw"}),
        "no password shown"
    );
    assert_eq!(created["declarative"], false);
    let estimated = created["estimatedEventBytes"].as_u64().unwrap();
    assert!((400..2000).contains(&estimated), "{estimated}");
    let id = created["id"].as_str().unwrap().to_owned();

    await_target_status(&app, "crm-events", "VERIFIED").await;
    let verification = target
        .received()
        .into_iter()
        .find(|r| r.is_verification() && r.json()["data"]["targetId"] == id.as_str())
        .expect("verification delivered");
    assert_eq!(
        verification.header("webhook-signature"),
        sign(
            &secret,
            verification.header("webhook-id"),
            verification.header("webhook-timestamp"),
            &verification.body
        )
    );
    assert!(verification.header("authorization").starts_with("Basic "));

    let got: Value = app
        .admin_get(&format!("/admin/v1/targets/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["secret"], Value::Null, "GET never shows the secret");
    assert!(!got.to_string().contains("p4ssw0rd"));

    // PATCH: a new retry policy keeps it VERIFIED; a new endpoint verifies again.
    let patched = admin_send(
        &app,
        Method::PATCH,
        &format!("/admin/v1/targets/{id}"),
        Some(json!({"retryPolicy": {"maxRetries": 0}})),
    )
    .await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["status"], "VERIFIED");
    assert_eq!(patched["retryPolicy"]["maxRetries"], 0);
    let bad = admin_send(
        &app,
        Method::PATCH,
        &format!("/admin/v1/targets/{id}"),
        Some(json!({"retryPolicy": {"maxRetries": 50}})),
    )
    .await;
    assert_error(bad, 400, "invalid.input").await;
    let moved = admin_send(
        &app,
        Method::PATCH,
        &format!("/admin/v1/targets/{id}"),
        Some(json!({"endpointUrl": format!("{}/v2", target.url())})),
    )
    .await;
    let moved: Value = moved.json().await.unwrap();
    assert_eq!(moved["status"], "PENDING_VERIFICATION");
    await_target_status(&app, "crm-events", "VERIFIED").await;
    // Taking the declarative target's name is a conflict.
    let clash = admin_send(
        &app,
        Method::PATCH,
        &format!("/admin/v1/targets/{id}"),
        Some(json!({"name": "orders"})),
    )
    .await;
    assert_error(clash, 409, "conflict").await;

    // Rotation: a new secret; deliveries are signed with both for a while.
    let rotated = admin_send(
        &app,
        Method::POST,
        &format!("/admin/v1/targets/{id}/rotate-secret"),
        None,
    )
    .await;
    assert_eq!(rotated.status(), 200);
    let new_secret = rotated.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_secret, secret);
    let msg = message(r#"{"rotated":true}"#);
    enqueue(&app.delivery, &msg).await;
    let event = eventually("the event at the target", || async {
        target.events().into_iter().find(|e| {
            e.header("idempotency-key") == msg.idempotency_key
                && e.header("webhook-id").ends_with(&id)
        })
    })
    .await;
    let (wid, ts) = (
        event.header("webhook-id"),
        event.header("webhook-timestamp"),
    );
    assert_eq!(
        event.header("webhook-signature"),
        format!(
            "{} {}",
            sign(&new_secret, wid, ts, &event.body),
            sign(&secret, wid, ts, &event.body)
        )
    );

    // Health probe.
    let probe: Value = admin_send(
        &app,
        Method::POST,
        &format!("/admin/v1/targets/{id}/health"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(probe["status"], "UP");
    assert_eq!(probe["httpStatus"], 200);
    assert!(probe["latencyMs"].is_u64());

    // Every change is audited.
    let audit: Value = app
        .admin_get("/admin/v1/audit?kind=target.secret_rotated")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entities"][0]["subject"], id.as_str());
    assert!(!audit.to_string().contains(&new_secret));

    // Delete: 204, then 404.
    let deleted = admin_send(
        &app,
        Method::DELETE,
        &format!("/admin/v1/targets/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let gone = app.admin_get(&format!("/admin/v1/targets/{id}")).await;
    assert_error(gone, 404, "not.found").await;
    app.stop().await;
}

#[tokio::test]
async fn declarative_targets_refuse_patch_delete_and_rotation_but_verify_and_probe() {
    let target = Target::start().await;
    let app = TestApp::spawn_with(&config(&target.url(), 3)).await;
    let t = await_target_status(&app, "orders", "VERIFIED").await;
    assert_eq!(t["declarative"], true);
    let id = t["id"].as_str().unwrap();
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/admin/v1/targets/{id}"),
            Some(json!({"eventTypes": ["x"]})),
        ),
        (Method::DELETE, format!("/admin/v1/targets/{id}"), None),
        (
            Method::POST,
            format!("/admin/v1/targets/{id}/rotate-secret"),
            None,
        ),
    ] {
        let response = admin_send(&app, method.clone(), &path, body).await;
        assert_error(response, 409, "conflict").await;
    }
    let probe = admin_send(
        &app,
        Method::POST,
        &format!("/admin/v1/targets/{id}/health"),
        None,
    )
    .await;
    assert_eq!(probe.status(), 200);
    let verify = admin_send(
        &app,
        Method::POST,
        &format!("/admin/v1/targets/{id}/verify"),
        None,
    )
    .await;
    assert_eq!(verify.status(), 202);
    await_target_status(&app, "orders", "VERIFIED").await;
    app.stop().await;
}

#[tokio::test]
async fn the_network_policy_refuses_private_targets_unless_allowed() {
    let target = Target::start().await;
    // No allow_cidrs: loopback is refused for API targets (the declarative one is trusted).
    let app = TestApp::spawn_with(&config_with(&target.url(), 3, "EXPONENTIAL", "")).await;
    await_target_status(&app, "orders", "VERIFIED").await;
    let mut body = valid(&target.url());
    body["name"] = json!("local");
    let error = assert_error(post(&app, body).await, 400, "invalid.input").await;
    assert_eq!(error["details"][0]["fieldName"], "/endpointUrl");
    assert_eq!(error["details"][0]["errorCode"], "network");
    app.stop().await;
}

#[tokio::test]
async fn delivery_lists_check_their_parameters() {
    let target = Target::start().await;
    let app = TestApp::spawn_with(&config(&target.url(), 3)).await;
    assert_error(
        app.admin_get("/admin/v1/deliveries?status=lost").await,
        400,
        "bad.request",
    )
    .await;
    assert_error(
        app.admin_get("/admin/v1/deliveries?cursor=garbage").await,
        400,
        "bad.request",
    )
    .await;
    assert_error(
        app.admin_get("/admin/v1/deliveries?statuss=dead").await,
        400,
        "bad.request",
    )
    .await;
    let unknown = admin_send(
        &app,
        Method::POST,
        "/admin/v1/deliveries/0192f0c4-5b7e-7c1a-9d3e-2f4b6a8c0e1f/replay",
        None,
    )
    .await;
    assert_error(unknown, 404, "not.found").await;
    let list: Value = app
        .admin_get("/admin/v1/deliveries?status=pending")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!({"entities": [], "nextCursor": null}));
    let unauthenticated = app
        .client
        .get(app.url("/admin/v1/targets"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn a_reload_swaps_the_declarative_targets() {
    let target = Target::start().await;
    let app = TestApp::spawn_with(&config(&target.url(), 3)).await;
    let before = await_target_status(&app, "orders", "VERIFIED").await;
    // Same file again: nothing changes, no second verification.
    let reload = admin_send(&app, Method::POST, "/admin/v1/reload", None).await;
    assert_eq!(reload.status(), 200);
    assert_eq!(reload.json::<Value>().await.unwrap()["targets"], 1);
    assert_eq!(
        crate::support::target_named(&app, "orders").await["status"],
        "VERIFIED"
    );
    // A changed endpoint: the same target (same id), verified again at the new URL.
    let moved = config(&format!("{}/moved", target.url()), 3);
    std::fs::write(app.dir.path().join("gateway.toml"), &moved).unwrap();
    let reload = admin_send(&app, Method::POST, "/admin/v1/reload", None).await;
    assert_eq!(reload.status(), 200);
    let after = await_target_status(&app, "orders", "VERIFIED").await;
    assert_eq!(after["id"], before["id"]);
    assert!(after["endpointUrl"].as_str().unwrap().ends_with("/moved"));
    assert_eq!(
        target
            .received()
            .iter()
            .filter(|r| r.is_verification())
            .count(),
        2
    );
    // Removed from the file: gone.
    std::fs::write(
        app.dir.path().join("gateway.toml"),
        crate::common::base_config(),
    )
    .unwrap();
    let reload = admin_send(&app, Method::POST, "/admin/v1/reload", None).await;
    assert_eq!(reload.json::<Value>().await.unwrap()["targets"], 0);
    let list: Value = app
        .admin_get("/admin/v1/targets")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["entities"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn oauth2_and_jwt_targets_send_their_bearer_tokens() {
    use axum::routing::post as route_post;
    let target = Target::start().await;
    // A token endpoint checking the client's Basic credentials.
    let tokens = axum::Router::new().route(
        "/token",
        route_post(|headers: axum::http::HeaderMap, body: String| async move {
            let basic = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if basic != "Basic Y2xpZW50OmNsaWVudC1zZWNyZXQ=" || !body.contains("client_credentials") {
                return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({}))).into_response();
            }
            axum::Json(json!({"access_token": "oauth-token-1", "token_type": "bearer", "expires_in": 3600}))
                .into_response()
        }),
    );
    use axum::response::IntoResponse as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, tokens).await.unwrap() });
    let app = TestApp::spawn_with(&config(&target.url(), 3)).await;
    let oauth = post(
        &app,
        json!({
            "name": "oauth",
            "endpointUrl": format!("{}/oauth", target.url()),
            "authType": "OAUTH2",
            "authConfig": {"clientId": "client", "clientSecret": "client-secret", "tokenUrl": token_url},
            "eventTypes": ["custom.other.*"],
        }),
    )
    .await;
    assert_eq!(oauth.status(), 201);
    let jwt = post(
        &app,
        json!({
            "name": "jwt",
            "endpointUrl": format!("{}/jwt", target.url()),
            "authType": "JWT",
            "authConfig": {"token": "eyJ.static.jwt"},
            "eventTypes": ["custom.other.*"],
        }),
    )
    .await;
    assert_eq!(jwt.status(), 201);
    await_target_status(&app, "oauth", "VERIFIED").await;
    await_target_status(&app, "jwt", "VERIFIED").await;
    let auth_of = |name: &str| {
        target
            .received()
            .into_iter()
            .find(|r| r.is_verification() && r.json()["data"]["name"] == name)
            .map(|r| r.header("authorization").to_owned())
    };
    assert_eq!(auth_of("oauth").as_deref(), Some("Bearer oauth-token-1"));
    assert_eq!(auth_of("jwt").as_deref(), Some("Bearer eyJ.static.jwt"));
    app.stop().await;
}
