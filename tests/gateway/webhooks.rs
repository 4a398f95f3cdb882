//! Webhook subscriptions: the admin API (create with the secret shown once, validation naming
//! every field, list/show/delete, rotation, query rules, audit without secrets). Deliveries to
//! subscriptions (routing, signatures during a rotation, retries, deletion) are tested end to
//! end in the delivery binary.

use chrono::{DateTime, Utc};
use genesys_gateway::delivery::webhooks::SECRET_PREFIX;
use serde_json::{Value, json};

use crate::common::{self, ADMIN_TOKEN, TestApp};

async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn delete(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .delete(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request")
}

async fn create(app: &TestApp, url: &str, event_types: &[&str]) -> Value {
    let r = post(
        app,
        "/admin/v1/webhooks",
        &json!({"url": url, "eventTypes": event_types, "description": "calendar sync"}),
    )
    .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    r.json().await.unwrap()
}

fn field_codes(body: &Value) -> Vec<(String, String)> {
    body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["fieldName"].as_str().unwrap().to_owned(),
                d["errorCode"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_subscription_is_created_shown_without_its_secret_and_deleted() {
    let app = TestApp::spawn().await;
    let created = create(
        &app,
        "https://hooks.example.com/in",
        &["callback.reservation.*", "gateway.target.*"],
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(SECRET_PREFIX), "{created}");
    assert_eq!(created["url"], "https://hooks.example.com/in");
    assert_eq!(
        created["eventTypes"],
        json!(["callback.reservation.*", "gateway.target.*"])
    );
    assert_eq!(created["description"], "calendar sync");
    assert!(
        DateTime::parse_from_rfc3339(created["createdAt"].as_str().unwrap()).is_ok(),
        "{created}"
    );
    let keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 6, "{keys:?}");

    let r = app.admin_get(&format!("/admin/v1/webhooks/{id}")).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&secret), "GET never shows the secret");
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert!(shown.get("secret").is_none(), "{shown}");
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("secret");
    assert_eq!(shown, expected);

    let r = app.admin_get("/admin/v1/webhooks").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&secret), "lists never show the secret");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["entities"], json!([expected]));
    assert_eq!(list["nextCursor"], Value::Null);

    let r = delete(&app, &format!("/admin/v1/webhooks/{id}")).await;
    assert_eq!(r.status(), 204);
    let r = app.admin_get(&format!("/admin/v1/webhooks/{id}")).await;
    common::assert_error(r, 404, "not.found").await;
    let r = delete(&app, &format!("/admin/v1/webhooks/{id}")).await;
    common::assert_error(r, 404, "not.found").await;
    let r = app.admin_get("/admin/v1/webhooks/not-an-id").await;
    common::assert_error(r, 404, "not.found").await;
    let r = post(
        &app,
        &format!("/admin/v1/webhooks/{id}/rotate-secret"),
        &json!({}),
    )
    .await;
    common::assert_error(r, 404, "not.found").await;
    app.stop().await;
}

#[tokio::test]
async fn every_violated_field_is_named() {
    let app = TestApp::spawn().await;
    let r = post(
        &app,
        "/admin/v1/webhooks",
        &json!({
            "url": "http://hooks.example.com/in",
            "eventTypes": ["callback.reservation.*", "no spaces", 7],
            "description": "x".repeat(501),
            "secret": "whsec_chosen",
        }),
    )
    .await;
    let body = common::assert_error(r, 400, "invalid.input").await;
    assert_eq!(
        field_codes(&body),
        [
            ("/secret".into(), "additionalProperties".into()),
            ("/url".into(), "format".into()),
            ("/eventTypes/1".into(), "pattern".into()),
            ("/eventTypes/2".into(), "type".into()),
            ("/description".into(), "maxLength".into()),
        ]
    );

    let r = post(&app, "/admin/v1/webhooks", &json!({"eventTypes": []})).await;
    let body = common::assert_error(r, 400, "invalid.input").await;
    assert_eq!(
        field_codes(&body),
        [
            ("/url".into(), "required".into()),
            ("/eventTypes".into(), "minItems".into()),
        ]
    );

    // Private addresses are refused unless `[delivery]` allows them.
    for url in [
        "https://127.0.0.1/in",
        "http://localhost:9000/in",
        "https://169.254.169.254/latest",
        "https://[::1]/in",
    ] {
        let r = post(
            &app,
            "/admin/v1/webhooks",
            &json!({"url": url, "eventTypes": ["*"]}),
        )
        .await;
        let body = common::assert_error(r, 400, "invalid.input").await;
        assert_eq!(
            field_codes(&body),
            [("/url".into(), "network".into())],
            "{url}"
        );
    }
    for url in [
        "ftp://hooks.example.com/",
        "not a url",
        "https://u:p@hooks.example.com/",
    ] {
        let r = post(
            &app,
            "/admin/v1/webhooks",
            &json!({"url": url, "eventTypes": ["*"]}),
        )
        .await;
        let body = common::assert_error(r, 400, "invalid.input").await;
        assert_eq!(
            field_codes(&body),
            [("/url".into(), "format".into())],
            "{url}"
        );
    }

    let r = post(&app, "/admin/v1/webhooks", &json!(["not", "an", "object"])).await;
    common::assert_error(r, 400, "invalid.input").await;
    let r = app
        .client
        .post(app.url("/admin/v1/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .body("url=https://x")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    common::assert_error(r, 415, "unsupported.media.type").await;
    let r = app
        .client
        .post(app.url("/admin/v1/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .body("{\"url\": ")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    common::assert_error(r, 400, "bad.request").await;

    // Nothing was created by any of these.
    let list: Value = app
        .admin_get("/admin/v1/webhooks")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["entities"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn an_allowed_private_network_may_be_reached_over_http() {
    let config = format!(
        "{}\n[delivery]\nallow_cidrs = [\"127.0.0.0/8\"]\n",
        common::base_config()
    );
    let app = TestApp::spawn_with(&config).await;
    create(&app, "http://127.0.0.1:9/__sim/receivers/cal", &["*"]).await;
    let r = post(
        &app,
        "/admin/v1/webhooks",
        &json!({"url": "http://10.1.2.3/in", "eventTypes": ["*"]}),
    )
    .await;
    let body = common::assert_error(r, 400, "invalid.input").await;
    assert_eq!(field_codes(&body), [("/url".into(), "network".into())]);
    let r = post(
        &app,
        "/admin/v1/webhooks",
        &json!({"url": "http://hooks.example.com/in", "eventTypes": ["*"]}),
    )
    .await;
    let body = common::assert_error(r, 400, "invalid.input").await;
    assert_eq!(field_codes(&body), [("/url".into(), "format".into())]);
    app.stop().await;
}

#[tokio::test]
async fn lists_page_newest_first_and_refuse_unknown_parameters() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let created = create(&app, &format!("https://hooks.example.com/{i}"), &["*"]).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let page: Value = app
        .admin_get("/admin/v1/webhooks?limit=2")
        .await
        .json()
        .await
        .unwrap();
    let first: Vec<&str> = page["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let cursor = page["nextCursor"].as_str().expect("a next page");
    let rest: Value = app
        .admin_get(&format!("/admin/v1/webhooks?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["nextCursor"], Value::Null);
    let mut seen: Vec<&str> = first.clone();
    seen.extend(
        rest["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap()),
    );
    assert_eq!(seen, ids, "every subscription once, newest first");

    let r = app.admin_get("/admin/v1/webhooks?limt=2").await;
    let body = common::assert_error(r, 400, "bad.request").await;
    assert!(body["message"].as_str().unwrap().contains("limt"), "{body}");
    let r = app.admin_get("/admin/v1/webhooks?cursor=garbage").await;
    common::assert_error(r, 400, "bad.request").await;
    let r = app
        .admin_get(&format!("/admin/v1/webhooks/{}?verbose=true", ids[0]))
        .await;
    common::assert_error(r, 400, "bad.request").await;
    let r = post(
        &app,
        "/admin/v1/webhooks?dryRun=true",
        &json!({"url": "https://hooks.example.com/x", "eventTypes": ["*"]}),
    )
    .await;
    common::assert_error(r, 400, "bad.request").await;

    // Authentication comes first.
    let r = app
        .client
        .get(app.url("/admin/v1/webhooks?limt=2"))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 401, "authentication.required").await;
    let r = app
        .client
        .post(app.url("/admin/v1/webhooks"))
        .json(&json!({"url": "https://hooks.example.com/x", "eventTypes": ["*"]}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 401, "authentication.required").await;
    app.stop().await;
}

#[tokio::test]
async fn rotation_answers_a_new_secret_and_the_audit_never_holds_one() {
    let app = TestApp::spawn().await;
    let created = create(&app, "https://hooks.example.com/in?token=abc", &["*"]).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = created["secret"].as_str().unwrap().to_owned();
    let r = post(
        &app,
        &format!("/admin/v1/webhooks/{id}/rotate-secret"),
        &json!({}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().await.unwrap();
    assert_eq!(rotated.as_object().unwrap().len(), 1, "{rotated}");
    let second = rotated["secret"].as_str().unwrap().to_owned();
    assert!(second.starts_with(SECRET_PREFIX));
    assert_ne!(second, first);
    assert_eq!(
        delete(&app, &format!("/admin/v1/webhooks/{id}"))
            .await
            .status(),
        204
    );

    let r = app.admin_get("/admin/v1/audit?limit=1000").await;
    let text = r.text().await.unwrap();
    for secret in [&first, &second] {
        assert!(!text.contains(secret.as_str()), "no secret in the audit");
        assert!(
            !text.contains(secret.strip_prefix(SECRET_PREFIX).unwrap()),
            "no key in the audit"
        );
    }
    assert!(!text.contains("token=abc"), "no URL query in the audit");
    let audit: Value = serde_json::from_str(&text).unwrap();
    let mine: Vec<&Value> = audit["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == id.as_str())
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "webhook.deleted",
            "webhook.secret_rotated",
            "webhook.created"
        ],
        "newest first"
    );
    for entry in &mine {
        assert_eq!(entry["actor"], "admin");
        assert_eq!(entry["outcome"], "success");
        assert!(entry["requestId"].is_string(), "{entry}");
    }
    assert_eq!(mine[2]["detail"]["host"], "hooks.example.com");
    assert_eq!(mine[2]["detail"]["eventTypes"], json!(["*"]));
    let until = mine[1]["detail"]["previousSecretValidUntil"]
        .as_str()
        .unwrap();
    let until = DateTime::parse_from_rfc3339(until)
        .unwrap()
        .with_timezone(&Utc);
    let at = DateTime::parse_from_rfc3339(mine[1]["at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(until - at, chrono::Duration::hours(24));
    app.stop().await;
}
