//! Webhook subscriptions delivered end to end by the engine: a subscription on a local receiver
//! gets `callback.reservation.created` when a reservation is made (sandbox simulator) and
//! `gateway.target.updated` when a target is created (never the target's own verification),
//! signed with the subscription's secret; during a rotation both secrets sign; a subscriber
//! answering 503 receives everything once it is back; a deleted subscription gets nothing more.

use chrono::{TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, base_config};
use crate::support::{Answer, Received, Target, admin_send, eventually, sign};

const KEY: &str = "portal-key-for-tests";
const QUEUE: &str = "a3b1f7c2-0000-4000-8000-000000000001";

/// The sandbox (in-process simulator) with one callback queue open all the time, and loopback
/// allowed for subscription URLs.
fn config() -> String {
    base_config()
        + &format!(
            r#"
[delivery]
workers = 4
allow_cidrs = ["127.0.0.0/8"]

[callbacks]
auth = {{ type = "header", name = "X-Api-Key", value = "{KEY}" }}

[[callbacks.queues]]
id = "{QUEUE}"
name = "Support"
timezone = "UTC"
open_hours = ["mon-sun 00:00-24:00"]
slot_capacity = 50
max_slot_minutes = 60
booking_horizon_days = 30
"#
        )
}

/// Reserves a 30-minute slot `days` days ahead at `hour`:00 UTC; the reservation.
async fn reserve(app: &TestApp, days: i64, hour: u32) -> Value {
    let day = (Utc::now() + TimeDelta::days(days)).date_naive();
    let start = day.and_hms_opt(hour, 0, 0).unwrap().and_utc();
    let end = start + TimeDelta::minutes(30);
    let r = app
        .client
        .post(app.url("/v1/callbacks"))
        .header("X-Api-Key", KEY)
        .json(&json!({
            "callbackNumber": "+14155550199",
            "callbackUserName": "Jane",
            "queueId": QUEUE,
            "timeSlots": [{"start": start.to_rfc3339(), "end": end.to_rfc3339()}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    r.json().await.unwrap()
}

/// Subscribes `url` to `event_types`: the subscription with its secret.
async fn subscribe(app: &TestApp, url: &str, event_types: &[&str]) -> Value {
    let r = admin_send(
        app,
        Method::POST,
        "/admin/v1/webhooks",
        Some(json!({"url": url, "eventTypes": event_types, "description": "e2e"})),
    )
    .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    r.json().await.unwrap()
}

/// The deliveries received for `event_type` whose `data` matches `pick`.
fn of_type(receiver: &Target, event_type: &str, pick: impl Fn(&Value) -> bool) -> Vec<Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| {
            let body = r.json();
            body["type"] == event_type && pick(&body["data"])
        })
        .collect()
}

/// Waits for the first delivery of `event_type` whose `data` matches `pick`.
async fn await_one(
    receiver: &Target,
    event_type: &str,
    pick: impl Fn(&Value) -> bool + Copy,
) -> Received {
    eventually(&format!("a {event_type} webhook"), || async move {
        of_type(receiver, event_type, pick).into_iter().next()
    })
    .await
}

/// The `v1,` entries of a delivery's `webhook-signature`.
fn signatures(received: &Received) -> Vec<String> {
    received
        .header("webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// The signature `secret` gives `received`.
fn signed_by(received: &Received, secret: &str) -> String {
    sign(
        secret,
        received.header("webhook-id"),
        received.header("webhook-timestamp"),
        &received.body,
    )
}

/// Every delivery to destination `id`, through the admin API.
async fn deliveries_to(app: &TestApp, id: &str) -> Vec<Value> {
    let r = admin_send(
        app,
        Method::GET,
        &format!("/admin/v1/deliveries?target={id}&limit=1000"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    page["entities"].as_array().unwrap().clone()
}

#[tokio::test]
async fn reservations_and_target_changes_reach_a_subscription_signed_through_a_rotation_until_it_is_deleted()
 {
    let receiver = Target::start().await;
    let app = TestApp::spawn_with(&config()).await;
    let created = subscribe(
        &app,
        &receiver.url(),
        &["callback.reservation.*", "gateway.target.*"],
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first_secret = created["secret"].as_str().unwrap().to_owned();

    // A reservation: its `callback.reservation.created`, the payload {"type","timestamp","data"}.
    let reservation = reserve(&app, 2, 10).await;
    let rid = reservation["id"].as_str().unwrap().to_owned();
    let got = await_one(&receiver, "callback.reservation.created", |d| {
        d["id"] == rid.as_str()
    })
    .await;
    let body = got.json();
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["data"]["status"], "scheduled");
    assert_eq!(body["data"]["version"], 1);
    assert_eq!(
        body["data"], reservation,
        "the reservation as the API answered it"
    );
    assert_eq!(signatures(&got), [signed_by(&got, &first_secret)]);
    assert!(
        got.header("webhook-id").ends_with(&id),
        "webhook-id names the subscription"
    );

    // A target is created: `gateway.target.updated` (change `created`), without its secret;
    // its verification goes to the target, never to the subscriber.
    let target = Target::start().await;
    let r = admin_send(
        &app,
        Method::POST,
        "/admin/v1/targets",
        Some(json!({"name": "crm", "endpointUrl": target.url(), "eventTypes": ["custom.*"]})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    let tid = made["id"].as_str().unwrap().to_owned();
    let update = await_one(&receiver, "gateway.target.updated", |d| {
        d["id"] == tid.as_str() && d["change"] == "created"
    })
    .await;
    assert_eq!(update.json()["data"]["name"], "crm");
    assert!(update.json()["data"].get("secret").is_none());
    assert_eq!(signatures(&update), [signed_by(&update, &first_secret)]);
    eventually("the target's verification", || async {
        target
            .received()
            .iter()
            .any(Received::is_verification)
            .then_some(())
    })
    .await;
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.json()["type"] != "gateway.target.verification"),
        "a target's verification is its own"
    );

    // Rotation: both secrets sign, the new one first.
    let r = admin_send(
        &app,
        Method::POST,
        &format!("/admin/v1/webhooks/{id}/rotate-secret"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().await.unwrap();
    let second_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(second_secret, first_secret);
    let during = reserve(&app, 2, 11).await;
    let rid2 = during["id"].as_str().unwrap().to_owned();
    let got = await_one(&receiver, "callback.reservation.created", |d| {
        d["id"] == rid2.as_str()
    })
    .await;
    assert_eq!(
        signatures(&got),
        [
            signed_by(&got, &second_secret),
            signed_by(&got, &first_secret)
        ],
        "both secrets sign during the rotation, the new one first"
    );

    // Deleted: nothing more is enqueued for it.
    let before = deliveries_to(&app, &id).await.len();
    assert!(before >= 3, "{before}");
    let r = admin_send(
        &app,
        Method::DELETE,
        &format!("/admin/v1/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    let after = reserve(&app, 2, 12).await;
    let rid3 = after["id"].as_str().unwrap().to_owned();
    // A second subscription, made after the deletion, does get that reservation's webhooks:
    // once it has them, the deleted one would have had them too.
    let witness = Target::start().await;
    subscribe(&app, &witness.url(), &["callback.reservation.*"]).await;
    let r = app
        .client
        .delete(app.url(&format!("/v1/callbacks/{rid3}")))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    await_one(&witness, "callback.reservation.canceled", |d| {
        d["id"] == rid3.as_str()
    })
    .await;
    assert_eq!(deliveries_to(&app, &id).await.len(), before);
    assert!(
        of_type(&receiver, "callback.reservation.created", |d| d["id"]
            == rid3.as_str())
        .is_empty()
    );
    assert!(
        of_type(&receiver, "callback.reservation.canceled", |d| d["id"]
            == rid3.as_str())
        .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_answers_503_for_a_while_receives_everything_once_back() {
    let receiver = Target::start().await;
    let app = TestApp::spawn_with(&config()).await;
    let created = subscribe(&app, &receiver.url(), &["callback.reservation.created"]).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    // The outage: the first attempts of the next three deliveries are refused; the subscriber
    // is back by the first retry (about 5 s later: EXPONENTIAL from 5 s).
    receiver.answer_events([
        Answer::status(503),
        Answer::status(503),
        Answer::status(503),
    ]);
    let mut ids = Vec::new();
    for hour in [9, 10, 11] {
        ids.push(
            reserve(&app, 3, hour).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let delivered = eventually("every delivery delivered after the outage", || async {
        let list = deliveries_to(&app, &id).await;
        (list.len() == 3 && list.iter().all(|d| d["status"] == "delivered")).then_some(list)
    })
    .await;
    for d in &delivered {
        assert_eq!(
            d["attempts"], 2,
            "refused once, delivered by the first retry: {d}"
        );
    }
    for rid in &ids {
        let got = of_type(&receiver, "callback.reservation.created", |d| {
            d["id"] == rid.as_str()
        });
        assert_eq!(got.len(), 2, "one refused attempt, one delivered");
        assert_eq!(
            got[0].header("webhook-id"),
            got[1].header("webhook-id"),
            "the same webhook-id on the retry"
        );
        for r in &got {
            assert_eq!(signatures(r), [signed_by(r, &secret)]);
        }
        let waited = got[1].at - got[0].at;
        assert!(
            waited >= std::time::Duration::from_secs(4),
            "the retry waited about 5 s: {waited:?}"
        );
    }
    app.stop().await;
}
