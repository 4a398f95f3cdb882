//! The simulator's core: login, API auth kinds, rate limit, correlation ids, faults, the
//! request log, users/queues paging and fixtures files.

use std::time::Duration;

use crate::support::{SUPPORT, TestSim, assert_error};
use genesys_gateway::sim::{Fixtures, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SimOptions};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn client_credentials_grant_issues_a_bearer_token() {
    let t = TestSim::start().await;
    let response = t
        .http
        .post(t.url("/oauth/token"))
        .basic_auth(SIM_CLIENT_ID, Some(SIM_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86_400);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.len() >= 40);
    assert_eq!(t.get(token, "/api/v2/users/u-1").await.status(), 200);

    // Client credentials as form fields work too.
    let response = t
        .http
        .post(t.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", SIM_CLIENT_ID),
            ("client_secret", SIM_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn login_refuses_bad_clients_and_other_grants() {
    let t = TestSim::start().await;
    for (id, secret) in [(SIM_CLIENT_ID, "wrong"), ("nobody", SIM_CLIENT_SECRET)] {
        let response = t
            .http
            .post(t.url("/oauth/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        assert!(body["description"].is_string());
        assert_eq!(body["description"], body["error_description"]);
    }
    let response = t
        .http
        .post(t.url("/oauth/token"))
        .basic_auth(SIM_CLIENT_ID, Some(SIM_CLIENT_SECRET))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn api_calls_without_a_valid_token_get_each_kind_of_401() {
    let t = TestSim::start().await;
    let response = t.http.get(t.url("/api/v2/users/u-1")).send().await.unwrap();
    assert_error(response, 401, "authentication.required").await;
    let response = t
        .http
        .get(t.url("/api/v2/users/u-1"))
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "authentication.required").await;
    let response = t.get("not-a-token", "/api/v2/users/u-1").await;
    assert_error(response, 401, "bad.credentials").await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_expired_token_gets_credentials_expired() {
    let t = TestSim::start_with(SimOptions {
        token_lifetime: Duration::from_secs(60),
        ..SimOptions::default()
    })
    .await;
    let token = t.token().await;
    assert_eq!(t.get(&token, "/api/v2/users/u-1").await.status(), 200);
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    tokio::time::resume();
    assert_error(
        t.get(&token, "/api/v2/users/u-1").await,
        401,
        "credentials.expired",
    )
    .await;
    // A new token works.
    let fresh = t.token().await;
    assert_eq!(t.get(&fresh, "/api/v2/users/u-1").await.status(), 200);
}

#[tokio::test(flavor = "current_thread")]
async fn the_rate_limit_answers_429_with_retry_after_then_recovers() {
    let t = TestSim::start_with(SimOptions {
        rate_limit_per_min: 3,
        ..SimOptions::default()
    })
    .await;
    let token = t.token().await;
    for i in 1..=3 {
        let response = t.get(&token, "/api/v2/users/u-1").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["inin-ratelimit-count"],
            i.to_string().as_str()
        );
        assert_eq!(response.headers()["inin-ratelimit-allowed"], "3");
    }
    let response = t.get(&token, "/api/v2/users/u-1").await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(response, 429, "too.many.requests").await;

    // Another token has its own window.
    let other = t.token().await;
    assert_eq!(t.get(&other, "/api/v2/users/u-1").await.status(), 200);

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    tokio::time::resume();
    assert_eq!(t.get(&token, "/api/v2/users/u-1").await.status(), 200);
}

/// The default: 300 requests per minute per client-credentials token, then 429.
#[tokio::test]
async fn the_default_rate_limit_is_300_per_minute_per_token() {
    let t = TestSim::start().await;
    let token = t.token().await;
    for i in 1..=300 {
        let status = t.get(&token, "/api/v2/users/u-1").await.status();
        assert_eq!(status, 200, "call {i} of 300 is allowed");
    }
    let response = t.get(&token, "/api/v2/users/u-1").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 429, "too.many.requests").await;
}

#[tokio::test]
async fn the_correlation_id_is_echoed_or_made_and_is_the_context_id() {
    let t = TestSim::start().await;
    let response = t
        .http
        .get(t.url("/api/v2/users/u-1"))
        .header("inin-correlation-id", "corr-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["inin-correlation-id"], "corr-123");
    let body = assert_error(response, 401, "authentication.required").await;
    assert_eq!(body["contextId"], "corr-123");

    let token = t.token().await;
    let response = t.get(&token, "/api/v2/users/u-1").await;
    let id = response.headers()["inin-correlation-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a uuid: {id}");

    let response = t.get(&token, "/api/v2/nothing/here").await;
    assert_error(response, 404, "not.found").await;
}

#[tokio::test]
async fn faults_answer_count_times_then_the_simulator_answers_again() {
    let t = TestSim::start().await;
    let token = t.token().await;
    t.fault(json!({"method": "GET", "path": "/api/v2/users/*", "status": 503, "retryAfter": 7, "count": 2}))
        .await;
    for _ in 0..2 {
        let response = t.get(&token, "/api/v2/users/u-1").await;
        assert_eq!(response.headers()["retry-after"], "7");
        assert_error(response, 503, "service.unavailable").await;
    }
    assert_eq!(t.get(&token, "/api/v2/users/u-1").await.status(), 200);

    // Method and path must both match; a body given is answered as is.
    t.fault(json!({"method": "POST", "path": "/api/v2/users/*", "status": 500}))
        .await;
    t.fault(json!({"path": "/api/v2/routing/queues", "status": 429, "body": {"custom": true}}))
        .await;
    assert_eq!(t.get(&token, "/api/v2/users/u-1").await.status(), 200);
    let response = t.get(&token, "/api/v2/routing/queues").await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"custom": true})
    );

    // DELETE clears what is armed.
    let armed: Vec<Value> = t
        .control(Method::GET, "/__sim/faults", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(armed.len(), 1);
    assert_eq!(
        t.control(Method::DELETE, "/__sim/faults", None)
            .await
            .status(),
        204
    );
    let armed: Vec<Value> = t
        .control(Method::GET, "/__sim/faults", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(armed.is_empty());
}

#[tokio::test]
async fn faults_can_drop_the_connection_delay_and_hit_the_login() {
    let t = TestSim::start().await;
    let token = t.token().await;
    t.fault(json!({"path": "/api/v2/users/u-2", "status": 0}))
        .await;
    let error = t
        .http
        .get(t.url("/api/v2/users/u-2"))
        .bearer_auth(&token)
        .send()
        .await
        .expect_err("the connection is dropped");
    assert!(!error.is_status(), "{error}");
    assert_eq!(t.get(&token, "/api/v2/users/u-2").await.status(), 200);

    t.fault(json!({"path": "/api/v2/users/u-3", "delayMs": 300}))
        .await;
    let started = std::time::Instant::now();
    assert_eq!(t.get(&token, "/api/v2/users/u-3").await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    t.fault(json!({"method": "POST", "path": "/oauth/token", "status": 503, "retryAfter": 2}))
        .await;
    let response = t
        .http
        .post(t.url("/oauth/token"))
        .basic_auth(SIM_CLIENT_ID, Some(SIM_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");

    let response = t
        .control(
            Method::POST,
            "/__sim/faults",
            Some(json!({"path": "*", "status": 999})),
        )
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn the_request_log_lists_requests_oldest_first_with_auth_redacted() {
    let t = TestSim::start().await;
    let token = t.token().await;
    t.get(&token, "/api/v2/users?pageSize=2").await;
    t.post(
        &token,
        "/api/v2/conversations/callbacks",
        &json!({"routingData": {"queueId": SUPPORT}, "callbackNumbers": ["+14155550100"]}),
    )
    .await;
    t.fault(json!({"path": "/api/v2/users/u-1", "status": 500}))
        .await;
    t.get(&token, "/api/v2/users/u-1").await;

    let all = t.requests("*").await;
    let paths: Vec<&str> = all.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/oauth/token",
            "/api/v2/users",
            "/api/v2/conversations/callbacks",
            "/api/v2/users/u-1"
        ]
    );
    assert_eq!(all[0]["headers"]["authorization"], "Basic [REDACTED]");
    assert_eq!(all[1]["method"], "GET");
    assert_eq!(all[1]["query"], "pageSize=2");
    assert_eq!(all[1]["headers"]["authorization"], "Bearer [REDACTED]");
    assert!(all[1]["body"].is_null());
    assert!(all[1]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(all[2]["body"]["callbackNumbers"][0], "+14155550100");

    // Secret-looking body fields are redacted, in forms and JSON alike.
    t.http
        .post(t.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", SIM_CLIENT_ID),
            ("client_secret", SIM_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    t.post(&token, "/api/v2/integrations/credentials", &json!({"name": "c", "type": "basicAuth", "credentialFields": {"userName": "u", "password": "p"}}))
        .await;
    let tokens = t.requests("/oauth/token").await;
    assert_eq!(
        tokens[1]["body"],
        "grant_type=client_credentials&client_id=sim-client&client_secret=%5BREDACTED%5D"
    );
    let credentials = t.requests("/api/v2/integrations/credentials").await;
    assert_eq!(
        credentials[0]["body"]["credentialFields"],
        json!({"userName": "u", "password": "[REDACTED]"})
    );

    let users = t.requests("/api/v2/users*").await;
    assert_eq!(users.len(), 2);
    assert_eq!(
        t.control(Method::DELETE, "/__sim/requests", None)
            .await
            .status(),
        204
    );
    assert!(t.requests("*").await.is_empty());
}

#[tokio::test]
async fn the_request_log_keeps_only_the_beginning_of_a_long_body() {
    let t = TestSim::start().await;
    // Recorded before any auth check: no token needed to fill the log.
    let pad = "x".repeat(200 * 1024);
    let body = json!({"client_secret": "s3cr3t", "pad": pad}).to_string();
    t.http
        .post(t.url("/api/v2/conversations/callbacks"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    t.http
        .post(t.url("/api/v2/conversations/callbacks"))
        .json(&json!({"small": true}))
        .send()
        .await
        .unwrap();

    let recorded = t.requests("/api/v2/conversations/callbacks").await;
    assert_eq!(recorded.len(), 2);
    let long = &recorded[0];
    assert_eq!(long["bodyTruncated"], true);
    assert_eq!(long["bodySize"], body.len());
    let kept = long["body"].as_str().expect("the beginning, as text");
    assert_eq!(kept.len(), 64 * 1024);
    assert!(
        kept.starts_with(r#"{"client_secret":"[REDACTED]","pad":"xxx"#),
        "{}",
        &kept[..60]
    );
    assert!(!kept.contains("s3cr3t"));
    assert_eq!(recorded[1]["body"], json!({"small": true}));
    assert!(recorded[1].get("bodyTruncated").is_none());
}

#[tokio::test]
async fn users_and_queues_are_paged_like_genesys() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let user: Value = t
        .get(&token, "/api/v2/users/u-1")
        .await
        .json()
        .await
        .unwrap();
    for key in [
        "id", "name", "email", "state", "division", "version", "selfUri",
    ] {
        assert!(!user[key].is_null(), "{key} in {user}");
    }
    assert_eq!(user["selfUri"], "/api/v2/users/u-1");
    assert_error(t.get(&token, "/api/v2/users/u-404").await, 404, "not.found").await;

    let page: Value = t
        .get(&token, "/api/v2/users?pageSize=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["entities"].as_array().unwrap().len(), 2);
    assert_eq!(page["pageSize"], 2);
    assert_eq!(page["pageNumber"], 1);
    assert_eq!(page["total"], 3);
    assert_eq!(page["pageCount"], 2);
    assert_eq!(page["nextUri"], "/api/v2/users?pageSize=2&pageNumber=2");
    assert_eq!(page["lastUri"], "/api/v2/users?pageSize=2&pageNumber=2");
    assert!(page["previousUri"].is_null());
    let page: Value = t
        .get(&token, "/api/v2/users?pageSize=2&pageNumber=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["entities"].as_array().unwrap().len(), 1);
    assert_eq!(page["previousUri"], "/api/v2/users?pageSize=2&pageNumber=1");
    assert!(page["nextUri"].is_null());
    assert_error(
        t.get(&token, "/api/v2/users?pageSize=0").await,
        400,
        "bad.request",
    )
    .await;

    let queues: Value = t
        .get(&token, "/api/v2/routing/queues")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queues["total"], 2);
    let names: Vec<&str> = queues["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Billing", "Support"]);
    let support: Value = t
        .get(&token, &format!("/api/v2/routing/queues/{SUPPORT}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(support["name"], "Support");
    let filtered: Value = t
        .get(&token, "/api/v2/routing/queues?name=supp*")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["total"], 1);
    assert_error(
        t.get(&token, "/api/v2/routing/queues/nope").await,
        404,
        "not.found",
    )
    .await;
}

#[tokio::test]
async fn a_fixtures_file_replaces_the_kinds_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixtures.json");
    std::fs::write(
        &path,
        r#"{"clients": [{"id": "other", "secret": "s3cr3t"}], "users": [], "queues": [{"id": "q-1", "name": "Sales", "description": "custom"}]}"#,
    )
    .unwrap();
    let fixtures = Fixtures::from_file(&path).expect("valid fixtures");
    let t = TestSim::start_with(SimOptions {
        fixtures,
        ..SimOptions::default()
    })
    .await;
    let response = t
        .http
        .post(t.url("/oauth/token"))
        .basic_auth(SIM_CLIENT_ID, Some(SIM_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = t
        .http
        .post(t.url("/oauth/token"))
        .basic_auth("other", Some("s3cr3t"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap();
    let users: Value = t.get(token, "/api/v2/users").await.json().await.unwrap();
    assert_eq!(users["total"], 0);
    let queue: Value = t
        .get(token, "/api/v2/routing/queues/q-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queue["description"], "custom");
    assert_eq!(queue["selfUri"], "/api/v2/routing/queues/q-1");

    std::fs::write(&path, r#"{"queues": [{"id": "q-1"}]}"#).unwrap();
    let err = Fixtures::from_file(&path).expect_err("a queue needs a name");
    assert!(err.to_string().contains("queues[0].name"), "{err}");
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let t = TestSim::start().await;
    let url = t.url("/oauth/token");
    let http = t.http.clone();
    t.sim.shutdown().await;
    assert!(http.post(url).send().await.is_err());
}
