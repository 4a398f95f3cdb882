//! Deliveries to a declarative target: what is sent, how failures are retried, dead letters,
//! replay, 410, verification gating, restart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::TestApp;
use crate::support::{
    Answer, SECRET, Target, admin_send, await_delivery, await_target_status, config, enqueue,
    eventually, message, sign, target_named, verified_app,
};

#[tokio::test]
async fn a_delivery_is_signed_and_carries_the_exact_body_and_headers() {
    let target = Target::start().await;
    let app = verified_app(&target, 3).await;
    let body = r#"{"eventId":"e","data":{"amount":1234567890.12345678901}}"#;
    let msg = message(body);
    let ids = enqueue(&app.delivery, &msg).await;
    assert_eq!(ids.len(), 1, "one matching target");
    let delivered = await_delivery(&app, msg.id, "delivered").await;
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["eventId"], msg.id.to_string());
    assert_eq!(delivered["targetName"], "orders");
    assert!(delivered["deliveredAt"].is_string());

    let events = target.events();
    assert_eq!(events.len(), 1);
    let got = &events[0];
    assert_eq!(&got.body[..], body.as_bytes(), "byte-identical body");
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("idempotency-key"), msg.idempotency_key);
    assert_eq!(got.header("x-source-system"), "genesys-gateway");
    let target_id = delivered["targetId"].as_str().unwrap();
    let webhook_id = got.header("webhook-id");
    assert_eq!(webhook_id, format!("msg_{}_{target_id}", msg.id));
    let timestamp = got.header("webhook-timestamp");
    let ts: i64 = timestamp.parse().unwrap();
    assert!((ts - chrono::Utc::now().timestamp()).abs() < 60);
    assert_eq!(
        got.header("webhook-signature"),
        sign(SECRET, webhook_id, timestamp, &got.body)
    );
    // Audited.
    let audit: Value = app
        .admin_get("/admin/v1/audit?kind=delivery.delivered")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entities"][0]["subject"], delivered["id"]);
    // Counted by target name; the queue gauges are exposed.
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"gateway_deliveries_total{outcome="delivered",target="orders"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_delivery_queue_depth "));
    assert!(metrics.contains("gateway_delivery_lag_seconds "));
    app.stop().await;
}

#[tokio::test]
async fn three_503s_then_200_is_delivered_after_the_policys_backoff() {
    let target = Target::start().await;
    target.answer_events([
        Answer::status(503),
        Answer::status(503),
        Answer::status(503),
    ]);
    let app = verified_app(&target, 5).await;
    let msg = message(r#"{"n":1}"#);
    enqueue(&app.delivery, &msg).await;
    let delivered = await_delivery(&app, msg.id, "delivered").await;
    assert_eq!(delivered["attempts"], 4);
    assert_eq!(delivered["lastError"], Value::Null);
    let events = target.events();
    assert_eq!(events.len(), 4);
    // EXPONENTIAL from 1 s: waits of about 1, 2 and 4 s (±20 %, checked loosely).
    let gaps: Vec<Duration> = events.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, ceiling) in gaps.iter().zip([1.0f64, 2.0, 4.0]) {
        assert!(
            gap.as_secs_f64() >= ceiling * 0.75,
            "retry waited {gap:?}, policy ceiling {ceiling} s: {gaps:?}"
        );
    }
    assert!(gaps[2] > gaps[0], "the waits grow: {gaps:?}");
    // One webhook-id for every attempt.
    assert!(
        events
            .iter()
            .all(|e| e.header("webhook-id") == events[0].header("webhook-id"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_longer_retry_after_replaces_the_backoff() {
    let target = Target::start().await;
    target.answer_events([Answer {
        status: 429,
        retry_after: Some("3"),
    }]);
    let app = verified_app(&target, 3).await;
    let msg = message(r#"{"n":2}"#);
    enqueue(&app.delivery, &msg).await;
    await_delivery(&app, msg.id, "delivered").await;
    let events = target.events();
    assert_eq!(events.len(), 2);
    let gap = events[1].at - events[0].at;
    assert!(
        gap >= Duration::from_millis(2800),
        "Retry-After: 3 honoured (the backoff alone is about 1 s): {gap:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_400_is_dead_with_its_reason_and_replay_delivers_it() {
    let target = Target::start().await;
    target.answer_events([Answer::status(400)]);
    let app = verified_app(&target, 5).await;
    let msg = message(r#"{"n":3}"#);
    enqueue(&app.delivery, &msg).await;
    let dead = await_delivery(&app, msg.id, "dead").await;
    assert_eq!(dead["attempts"], 1, "a 400 is not retried");
    assert_eq!(dead["lastError"], "HTTP 400 Bad Request");

    // The dead letter is listed.
    let id = dead["id"].as_str().unwrap();
    let target_id = dead["targetId"].as_str().unwrap();
    let list: Value = app
        .admin_get(&format!(
            "/admin/v1/deliveries?status=dead&target={target_id}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["entities"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["entities"][0]["id"], id);
    assert_eq!(list["nextCursor"], Value::Null);
    let audit: Value = app
        .admin_get("/admin/v1/audit?kind=delivery.dead")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entities"][0]["subject"], id);
    assert_eq!(
        audit["entities"][0]["detail"]["reason"],
        "HTTP 400 Bad Request"
    );

    // Replay: pending again, then delivered (the target answers 200 now).
    let replay = admin_send(
        &app,
        reqwest::Method::POST,
        &format!("/admin/v1/deliveries/{id}/replay"),
        None,
    )
    .await;
    assert_eq!(replay.status(), 200);
    let delivered = await_delivery(&app, msg.id, "delivered").await;
    assert_eq!(delivered["attempts"], 1, "attempts start again on replay");
    assert_eq!(target.events().len(), 2);
    // A delivery that is not dead is not replayed.
    let again = admin_send(
        &app,
        reqwest::Method::POST,
        &format!("/admin/v1/deliveries/{id}/replay"),
        None,
    )
    .await;
    crate::common::assert_error(again, 409, "conflict").await;
    app.stop().await;
}

#[tokio::test]
async fn retries_exhausted_are_dead_and_replay_all_of_a_target_brings_them_back() {
    let target = Target::start().await;
    target.answer_events([Answer::status(500), Answer::status(500)]);
    target.answer_events([Answer::status(404)]);
    let app = verified_app(&target, 1).await;
    let first = message(r#"{"n":"a"}"#);
    enqueue(&app.delivery, &first).await;
    let dead = await_delivery(&app, first.id, "dead").await;
    assert_eq!(dead["attempts"], 2, "max_retries = 1: two attempts");
    assert!(
        dead["lastError"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 500 Internal Server Error (retries exhausted"),
        "{dead}"
    );
    let second = message(r#"{"n":"b"}"#);
    enqueue(&app.delivery, &second).await;
    await_delivery(&app, second.id, "dead").await;
    let target_id = dead["targetId"].as_str().unwrap();
    let replay = admin_send(
        &app,
        reqwest::Method::POST,
        &format!("/admin/v1/deliveries/replay?target={target_id}"),
        None,
    )
    .await;
    assert_eq!(replay.status(), 200);
    assert_eq!(
        replay.json::<Value>().await.unwrap(),
        json!({"replayed": 2})
    );
    await_delivery(&app, first.id, "delivered").await;
    await_delivery(&app, second.id, "delivered").await;
    let missing = admin_send(
        &app,
        reqwest::Method::POST,
        "/admin/v1/deliveries/replay",
        None,
    )
    .await;
    crate::common::assert_error(missing, 400, "bad.request").await;
    app.stop().await;
}

#[tokio::test]
async fn a_410_disables_the_target_and_kills_its_pending_deliveries() {
    let target = Target::start().await;
    // The first delivery gets 410; a second one waits for its retry meanwhile.
    target.answer_events([Answer::status(503), Answer::status(410)]);
    let app = verified_app(&target, 5).await;
    let waiting = message(r#"{"n":"waiting"}"#);
    enqueue(&app.delivery, &waiting).await;
    eventually("the first attempt", || async {
        (target.events().len() == 1).then_some(())
    })
    .await;
    let gone = message(r#"{"n":"gone"}"#);
    enqueue(&app.delivery, &gone).await;
    let dead = await_delivery(&app, gone.id, "dead").await;
    assert!(
        dead["lastError"].as_str().unwrap().contains("410"),
        "{dead}"
    );
    let t = await_target_status(&app, "orders", "DISABLED").await;
    assert!(t["statusReason"].as_str().unwrap().contains("410"));
    let killed = await_delivery(&app, waiting.id, "dead").await;
    assert_eq!(killed["lastError"], "target disabled");
    // New deliveries to a disabled target are created dead.
    let later = message(r#"{"n":"later"}"#);
    enqueue(&app.delivery, &later).await;
    let born_dead = await_delivery(&app, later.id, "dead").await;
    assert_eq!(born_dead["attempts"], 0);
    assert_eq!(born_dead["lastError"], "target disabled");
    // Verify brings it back; nothing is re-sent by itself.
    let sent = target.events().len();
    let id = t["id"].as_str().unwrap();
    let verify = admin_send(
        &app,
        reqwest::Method::POST,
        &format!("/admin/v1/targets/{id}/verify"),
        None,
    )
    .await;
    assert_eq!(verify.status(), 202);
    await_target_status(&app, "orders", "VERIFIED").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        target.events().len(),
        sent,
        "dead deliveries wait for a replay"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unverified_target_receives_nothing_until_it_is_verified() {
    let target = Target::start().await;
    // The first two verification attempts fail: about 1 + 2 s of PENDING_VERIFICATION.
    target.answer_verifications([Answer::status(500), Answer::status(503)]);
    let app = TestApp::spawn_with(&config(&target.url(), 3)).await;
    let msg = message(r#"{"n":"early"}"#);
    enqueue(&app.delivery, &msg).await;
    let pending = crate::support::deliveries(&app, msg.id).await;
    assert_eq!(pending[0]["status"], "pending");
    assert_eq!(
        target_named(&app, "orders").await["status"],
        "PENDING_VERIFICATION"
    );
    await_target_status(&app, "orders", "VERIFIED").await;
    await_delivery(&app, msg.id, "delivered").await;
    let received = target.received();
    let kinds: Vec<bool> = received.iter().map(|r| r.is_verification()).collect();
    assert_eq!(
        kinds,
        [true, true, true, false],
        "three verifications, then the event"
    );
    // The verification is signed like any delivery.
    let v = &received[2];
    assert_eq!(
        v.header("webhook-signature"),
        sign(
            SECRET,
            v.header("webhook-id"),
            v.header("webhook-timestamp"),
            &v.body
        )
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failing_verification_ends_failed_with_its_reason_and_deliveries_are_dead() {
    let target = Target::start().await;
    target.answer_verifications((0..5).map(|_| Answer::status(500)));
    let app = TestApp::spawn_with(&config(&target.url(), 3)).await;
    let t = await_target_status(&app, "orders", "FAILED").await;
    assert_eq!(
        t["statusReason"],
        "HTTP 500 Internal Server Error (after 5 attempts)"
    );
    assert_eq!(target.received().len(), 5);
    let msg = message(r#"{"n":"x"}"#);
    enqueue(&app.delivery, &msg).await;
    let dead = await_delivery(&app, msg.id, "dead").await;
    assert_eq!(dead["lastError"], "target failed verification");
    app.stop().await;
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart_and_are_completed() {
    let target = Target::start().await;
    let toml = config(&target.url(), 10);
    let app = verified_app(&target, 10).await;
    // Every attempt fails while the first gateway runs.
    target.answer_events((0..100).map(|_| Answer::status(503)));
    let messages: Vec<_> = (0..3)
        .map(|i| message(&format!(r#"{{"i":{i}}}"#)))
        .collect();
    for m in &messages {
        enqueue(&app.delivery, m).await;
    }
    eventually("first attempts", || async {
        (target.events().len() >= 3).then_some(())
    })
    .await;
    let dir = app.stop_keeping_dir().await;
    // The target works again.
    target.clear_answers();
    let app = TestApp::spawn_in(dir, &toml, &Default::default(), |b| b).await;
    for m in &messages {
        let d = await_delivery(&app, m.id, "delivered").await;
        assert!(d["attempts"].as_u64().unwrap() >= 2, "{d}");
    }
    // Still VERIFIED after the restart: no second verification.
    assert_eq!(
        target
            .received()
            .iter()
            .filter(|r| r.is_verification())
            .count(),
        1
    );
    app.stop().await;
}
