//! `POST /v1/events`, `POST /ingest` and `GET /v1/events/{eventId}` through the HTTP surface:
//! single events and batches, all-or-nothing validation, duplicates and conflicts, timestamp
//! forms, the size and type limits, the issuer scoping of reads.

use serde_json::{Value, json};

use crate::common::assert_error;
use crate::support::{self, ISS, derived_key, event, other_token, spawn, token, txid};

#[tokio::test]
async fn a_single_event_is_queued_and_can_be_read_back() {
    let app = spawn("").await;
    let tx = txid("single");
    let results = app.accepted(&token(), &event(&tx)).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["status"], "queued");
    assert_eq!(results[0]["idempotencyKey"], derived_key(ISS, &tx));
    let id = results[0]["eventId"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let response = app.get_event(&token(), id).await;
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["eventId"], id);
    assert_eq!(view["eventType"], "custom.legacy.orders.order_created");
    assert_eq!(view["eventTime"], "2024-05-01T10:30:00.000Z");
    assert_eq!(view["idempotencyKey"], derived_key(ISS, &tx));
    let accepted = chrono::DateTime::parse_from_rfc3339(view["acceptedAt"].as_str().unwrap())
        .expect("acceptedAt is RFC 3339");
    assert!((chrono::Utc::now() - accepted.to_utc()).num_seconds().abs() < 60);
    assert!(view["deliveries"].is_array(), "{view}");

    // Counted and audited (in the same transaction as the event).
    assert_eq!(
        app.metric(r#"gateway_ingest_events_total{outcome="queued"}"#)
            .await,
        1.0
    );
    let audit = app.audit("event.accepted").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["subject"], id);
    assert_eq!(audit[0]["actor"], "issuer:legacy");
    assert_eq!(audit[0]["outcome"], "queued");
    assert!(audit[0]["requestId"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn the_ingest_alias_accepts_like_v1_events() {
    let app = spawn("").await;
    let response = app
        .client
        .post(app.url("/ingest"))
        .bearer_auth(token())
        .json(&event(&txid("alias")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "queued");
    app.stop().await;
}

#[tokio::test]
async fn a_batch_is_answered_in_input_order() {
    let app = spawn("").await;
    let ids: Vec<String> = (0..5).map(|i| txid(&format!("batch{i}"))).collect();
    let body = Value::Array(ids.iter().map(|t| event(t)).collect());
    let results = app.accepted(&token(), &body).await;
    assert_eq!(results.len(), 5);
    let mut seen = std::collections::HashSet::new();
    for (result, tx) in results.iter().zip(&ids) {
        assert_eq!(result["status"], "queued");
        assert_eq!(result["idempotencyKey"], derived_key(ISS, tx));
        assert!(seen.insert(result["eventId"].as_str().unwrap().to_owned()));
    }
    assert_eq!(app.audit("event.accepted").await.len(), 5);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_bad_event_stores_nothing() {
    let app = spawn("").await;
    let good = [txid("good0"), txid("good2")];
    let mut bad = event(&txid("bad1"));
    bad["timestamp"] = json!("yesterday");
    let body = json!([event(&good[0]), bad, event(&good[1])]);
    let response = app.post_events(&token(), &body).await;
    let error = assert_error(response, 400, "invalid.input").await;
    let details = error["details"].as_array().unwrap();
    assert!(
        details.iter().any(|d| d["fieldName"] == "/1/timestamp"),
        "{error}"
    );
    assert!(
        details
            .iter()
            .all(|d| d["fieldName"].as_str().unwrap().starts_with("/1/"))
    );
    // Nothing of the batch was kept: the good events are new when they come again.
    for tx in &good {
        let results = app.accepted(&token(), &event(tx)).await;
        assert_eq!(results[0]["status"], "queued");
    }
    assert_eq!(app.audit("event.accepted").await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_repeat_is_a_duplicate_with_the_original_id() {
    let app = spawn("").await;
    let tx = txid("dup");
    let first = app.accepted(&token(), &event(&tx)).await;
    // The same content with its keys in another order is the same event.
    let reordered = format!(
        r#"{{"currency":"EUR","amount":12.5,"timestamp":"2024-05-01T10:30:00Z","event_type":"Order Created","transaction_id":"{tx}"}}"#
    );
    let response = app.post_events_raw(&token(), reordered).await;
    assert_eq!(response.status(), 202);
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["results"][0]["status"], "duplicate");
    assert_eq!(second["results"][0]["eventId"], first[0]["eventId"]);
    assert_eq!(
        second["results"][0]["idempotencyKey"],
        first[0]["idempotencyKey"]
    );
    // Enqueued once: one accepted record, one queued and one duplicate counted.
    assert_eq!(app.audit("event.accepted").await.len(), 1);
    assert_eq!(
        app.metric(r#"gateway_ingest_events_total{outcome="duplicate"}"#)
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn the_idempotency_key_header_names_a_single_event() {
    let app = spawn("").await;
    let post = |key: &'static str, body: Value| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/events"))
                .bearer_auth(token())
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first: Value = post("order-42-created", event(&txid("h1")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["results"][0]["idempotencyKey"], "order-42-created");
    assert_eq!(first["results"][0]["status"], "queued");
    let again: Value = post("order-42-created", event(&txid("h1-other-tx")))
        .await
        .json()
        .await
        .unwrap();
    // Another transaction_id is other content under the same key.
    assert_eq!(again["code"], "idempotency.conflict", "{again}");
    // With a batch the header is refused.
    let response = post("batch-key", json!([event(&txid("b1")), event(&txid("b2"))])).await;
    assert_error(response, 400, "bad.request").await;
    app.stop().await;
}

#[tokio::test]
async fn same_key_other_content_is_a_conflict_and_a_batch_is_refused_whole() {
    let app = spawn("").await;
    let tx = txid("conflict");
    app.accepted(&token(), &event(&tx)).await;
    let mut changed = event(&tx);
    changed["amount"] = json!(13);
    let response = app.post_events(&token(), &changed).await;
    assert_error(response, 409, "idempotency.conflict").await;

    let fresh = txid("fresh");
    let response = app
        .post_events(&token(), &json!([event(&fresh), changed]))
        .await;
    let error = assert_error(response, 409, "idempotency.conflict").await;
    assert_eq!(error["details"][0]["fieldName"], "/1", "{error}");
    // The new event of the refused batch was not kept.
    let results = app.accepted(&token(), &event(&fresh)).await;
    assert_eq!(results[0]["status"], "queued");

    // Two events of one batch with one key: the same content is one event…
    let twin = txid("twin");
    let results = app
        .accepted(&token(), &json!([event(&twin), event(&twin)]))
        .await;
    assert_eq!(results[0]["status"], "queued");
    assert_eq!(results[1]["status"], "duplicate");
    assert_eq!(results[0]["eventId"], results[1]["eventId"]);
    // …other content is a conflict of the whole batch.
    let pair = txid("pair");
    let mut other = event(&pair);
    other["amount"] = json!(99);
    let response = app
        .post_events(&token(), &json!([event(&pair), other]))
        .await;
    assert_error(response, 409, "idempotency.conflict").await;
    let results = app.accepted(&token(), &event(&pair)).await;
    assert_eq!(
        results[0]["status"], "queued",
        "nothing of the batch was kept"
    );
    assert_eq!(
        app.metric(r#"gateway_ingest_rejections_total{reason="idempotency_conflict"}"#)
            .await,
        3.0
    );
    app.stop().await;
}

#[tokio::test]
async fn every_timestamp_form_becomes_the_same_event_time() {
    let app = spawn("").await;
    let forms = [
        json!("2024-05-01T12:30:00+02:00"),
        json!("2024-05-01T10:30:00Z"),
        json!(1_714_559_400),
        json!(1_714_559_400_000_i64),
        json!("1714559400"),
        json!("1714559400000"),
    ];
    for form in forms {
        let mut body = event(&txid("ts"));
        body["timestamp"] = form.clone();
        let results = app.accepted(&token(), &body).await;
        let id = results[0]["eventId"].as_str().unwrap();
        let view: Value = app.get_event(&token(), id).await.json().await.unwrap();
        assert_eq!(view["eventTime"], "2024-05-01T10:30:00.000Z", "{form}");
    }
    for bad in [json!("yesterday"), json!(1.5), json!(null), json!("")] {
        let mut body = event(&txid("badts"));
        body["timestamp"] = bad.clone();
        let response = app.post_events(&token(), &body).await;
        let error = assert_error(response, 400, "invalid.input").await;
        assert_eq!(
            error["details"][0]["fieldName"], "/timestamp",
            "{bad}: {error}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_batch_over_max_batch_is_413_and_a_non_json_body_is_415() {
    let app = spawn("").await;
    let body = Value::Array((0..6).map(|i| event(&txid(&format!("big{i}")))).collect());
    let response = app.post_events(&token(), &body).await;
    assert_error(response, 413, "payload.too.large").await;
    let response = app
        .client
        .post(app.url("/v1/events"))
        .bearer_auth(token())
        .header("content-type", "text/plain")
        .body(event(&txid("text")).to_string())
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "unsupported.media.type").await;
    assert_eq!(app.audit("event.accepted").await.len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn an_event_is_read_only_by_its_own_issuer() {
    let app = spawn("").await;
    let results = app.accepted(&token(), &event(&txid("mine"))).await;
    let id = results[0]["eventId"].as_str().unwrap();
    let response = app.get_event(&other_token(), id).await;
    assert_error(response, 404, "not.found").await;
    let response = app
        .get_event(&token(), &uuid::Uuid::now_v7().to_string())
        .await;
    assert_error(response, 404, "not.found").await;
    let response = app.get_event(&token(), "not-a-uuid").await;
    assert_error(response, 404, "not.found").await;
    assert_eq!(app.get_event(&token(), id).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_issuer() {
    let app = spawn("").await;
    // The same header key from two issuers names two events.
    let post = |token: String| {
        let app = &app;
        async move {
            let response = app
                .client
                .post(app.url("/v1/events"))
                .bearer_auth(token)
                .header("idempotency-key", "shared-key")
                .json(&event("TX-shared"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            let body: Value = response.json().await.unwrap();
            body["results"][0].clone()
        }
    };
    let mine = post(token()).await;
    let theirs = post(other_token()).await;
    assert_eq!(mine["status"], "queued");
    assert_eq!(theirs["status"], "queued");
    assert_ne!(mine["eventId"], theirs["eventId"]);
    app.stop().await;
}

#[tokio::test]
async fn unknown_query_parameters_are_refused_after_the_token() {
    let app = spawn("").await;
    let response = app
        .client
        .post(app.url("/v1/events?dry_run=true"))
        .json(&event(&txid("q")))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "authentication.required").await;
    let response = app
        .client
        .post(app.url("/v1/events?dry_run=true"))
        .bearer_auth(token())
        .json(&event(&txid("q")))
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 400, "bad.request").await;
    assert!(
        error["message"].as_str().unwrap().contains("dry_run"),
        "{error}"
    );
    app.stop().await;
}

/// The body that
/// arrives at the target is the one stored, with every number's text as sent.
#[tokio::test]
async fn an_exact_decimal_arrives_byte_identical() {
    let receiver = support::Receiver::start().await;
    let app = spawn(&receiver.target()).await;
    let tx = txid("decimal");
    let body = format!(
        r#"{{"transaction_id":"{tx}","event_type":"Payment Received","timestamp":1714559400,"amount":1234567890.12345678901,"currency":"EUR"}}"#
    );
    let response = app.post_events_raw(&token(), body).await;
    assert_eq!(response.status(), 202);
    let results: Value = response.json().await.unwrap();
    let id = results["results"][0]["eventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let delivered = receiver.wait_for(&id).await;
    assert!(
        delivered.contains(r#""amount":1234567890.12345678901"#),
        "{delivered}"
    );
    app.stop().await;
}

/// Backpressure reads the delivery engine's queue depth.
#[tokio::test]
async fn beyond_max_queue_depth_ingest_is_503_with_retry_after() {
    // A target that never answers keeps its deliveries pending.
    let app = spawn(&format!(
        "max_queue_depth = 2\n{}",
        support::unreachable_target()
    ))
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let response = app.post_events(&token(), &event(&txid("bp"))).await;
        if response.status() == 503 {
            assert!(response.headers().get("retry-after").is_some());
            assert_error(response, 503, "overloaded").await;
            break;
        }
        assert_eq!(response.status(), 202);
        assert!(std::time::Instant::now() < deadline, "never overloaded");
    }
    assert!(
        app.metric(r#"gateway_ingest_rejections_total{reason="overloaded"}"#)
            .await
            >= 1.0
    );
    app.stop().await;
}

/// Concurrent requests share units of the group committer: each is still answered as if it had
/// come alone — a conflicting one refused whole, the others kept; repeats of one event are one
/// event.
#[tokio::test]
async fn concurrent_requests_are_answered_as_if_each_came_alone() {
    let app = spawn("").await;
    let taken = txid("taken");
    app.accepted(&token(), &event(&taken)).await;
    let mut conflicting = event(&taken);
    conflicting["amount"] = json!(13);
    let twin = txid("twin-concurrent");
    let fresh: Vec<String> = (0..40).map(|i| txid(&format!("fresh-{i}"))).collect();
    // 40 new events, 10 repeats of one new event, and 10 conflicting batches (each with a new
    // event that must not be kept), all at once.
    let mut bodies: Vec<(String, Value)> = Vec::new();
    for tx in &fresh {
        bodies.push(("fresh".into(), event(tx)));
    }
    for _ in 0..10 {
        bodies.push(("twin".into(), event(&twin)));
    }
    for i in 0..10 {
        let lost = txid(&format!("lost-{i}"));
        bodies.push((lost.clone(), json!([event(&lost), conflicting.clone()])));
    }
    let answers = futures_util::future::join_all(bodies.iter().map(|(label, body)| {
        let app = &app;
        async move {
            let response = app.post_events(&token(), body).await;
            let status = response.status().as_u16();
            (
                label.clone(),
                status,
                response.json::<Value>().await.unwrap(),
            )
        }
    }))
    .await;
    let mut twin_ids = std::collections::HashSet::new();
    let mut twin_queued = 0;
    for (label, status, body) in &answers {
        match label.as_str() {
            "fresh" => {
                assert_eq!(*status, 202, "{body}");
                assert_eq!(body["results"][0]["status"], "queued", "{body}");
            }
            "twin" => {
                assert_eq!(*status, 202, "{body}");
                twin_ids.insert(body["results"][0]["eventId"].to_string());
                if body["results"][0]["status"] == "queued" {
                    twin_queued += 1;
                }
            }
            _ => {
                assert_eq!(*status, 409, "{body}");
                assert_eq!(body["details"][0]["fieldName"], "/1", "{body}");
            }
        }
    }
    assert_eq!(twin_ids.len(), 1, "every repeat answered with one id");
    assert_eq!(twin_queued, 1, "one queued, the others duplicates");
    // The new events of the refused batches were not kept.
    for (label, _, _) in answers.iter().filter(|(l, _, _)| l.starts_with("lost")) {
        let results = app.accepted(&token(), &event(label)).await;
        assert_eq!(
            results[0]["status"], "queued",
            "{label} was not kept before"
        );
    }
    // One accepted record per event: the first, 40 fresh, 1 twin, 10 lost ones now.
    assert_eq!(app.audit("event.accepted").await.len(), 52);
    app.stop().await;
}
