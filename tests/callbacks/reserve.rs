//! Reserving, reading, listing and canceling through HTTP; capacity; the Genesys interplay seen
//! in the simulator's request log, with its faults.

use serde_json::{Value, json};

use crate::common::assert_error;
use crate::support::{Env, KEY, QUEUE, request, slot};

#[tokio::test]
async fn a_reservation_is_created_in_genesys_and_read_back() {
    let env = Env::start(10).await;
    let first = slot(2, 10, 30);
    let response = env.reserve(&request(vec![first.clone()])).await;
    assert_eq!(response.status(), 201);
    let reservation: Value = response.json().await.unwrap();
    assert_eq!(reservation["status"], "scheduled");
    assert_eq!(reservation["version"], 1);
    assert!(reservation["seq"].as_u64().unwrap() >= 1);
    assert_eq!(reservation["callbackNumber"], "+14155550199");
    assert_eq!(reservation["queueId"], QUEUE);
    assert!(reservation["conversationId"].is_string());
    assert_eq!(reservation["data"], json!({"crmId": "c-1"}));
    let id = reservation["id"].as_str().unwrap();

    let created = env.sim_requests("/api/v2/conversations/callbacks").await;
    assert_eq!(created.len(), 1, "{created:?}");
    let command = &created[0]["body"];
    assert_eq!(command["routingData"]["queueId"], QUEUE);
    assert_eq!(command["callbackNumbers"], json!(["+14155550199"]));
    assert_eq!(command["callbackUserName"], "Jane");
    let scheduled =
        chrono::DateTime::parse_from_rfc3339(command["callbackScheduledTime"].as_str().unwrap())
            .unwrap();
    let start = chrono::DateTime::parse_from_rfc3339(first["start"].as_str().unwrap()).unwrap();
    assert_eq!(scheduled, start, "scheduled at the slot start");
    assert_eq!(command["data"]["gatewayReservationId"], id);
    assert_eq!(command["data"]["crmId"], "c-1");

    let again: Value = env
        .get(&format!("/v1/callbacks/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, reservation);
    let list: Value = env
        .get(&format!("/v1/callbacks?queueId={QUEUE}&status=scheduled"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["entities"][0]["id"], id);
    assert_eq!(list["nextCursor"], Value::Null);
    env.app.stop().await;
}

#[tokio::test]
async fn bad_requests_are_answered_before_anything_is_reserved() {
    let env = Env::start(10).await;
    let mut body = request(vec![slot(2, 10, 30)]);
    body["callbackNumber"] = json!("12");
    let err = assert_error(env.reserve(&body).await, 400, "invalid.input").await;
    assert_eq!(err["details"][0]["fieldName"], "/callbackNumber");

    let past = request(vec![slot(-1, 10, 30)]);
    let err = assert_error(env.reserve(&past).await, 400, "invalid.input").await;
    assert_eq!(err["details"][0]["fieldName"], "/timeSlots/0/start");

    let response = env
        .http
        .post(env.app.url("/v1/callbacks"))
        .json(&request(vec![slot(2, 10, 30)]))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "authentication.required").await;
    let response = env
        .http
        .get(env.app.url(&format!("/v1/callbacks?api_key={KEY}")))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid.token").await;
    let err = assert_error(
        env.get("/v1/callbacks?stauts=failed").await,
        400,
        "bad.request",
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("stauts"), "{err}");
    assert_error(env.get("/v1/callbacks/not-a-uuid").await, 404, "not.found").await;
    assert!(
        env.sim_requests("/api/v2/conversations/callbacks")
            .await
            .is_empty()
    );
    env.app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_requests_for_ten_places_create_exactly_ten() {
    let env = Env::start(10).await;
    let body = request(vec![slot(3, 14, 30)]);
    let url = env.app.url("/v1/callbacks");
    let answers = futures_util::future::join_all((0..50).map(|_| {
        let (http, url, body) = (env.http.clone(), url.clone(), body.clone());
        async move {
            crate::support::reserve_at(&http, &url, &body)
                .await
                .status()
                .as_u16()
        }
    }))
    .await;
    assert_eq!(
        answers.iter().filter(|s| **s == 201).count(),
        10,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 409).count(),
        40,
        "{answers:?}"
    );
    let err = assert_error(env.reserve(&body).await, 409, "capacity.exceeded").await;
    assert!(err["message"].is_string());
    // A later slot of the same request is taken when the first is full.
    let second = request(vec![slot(3, 14, 30), slot(3, 16, 30)]);
    let taken: Value = env.reserve(&second).await.json().await.unwrap();
    assert_eq!(taken["slot"]["start"].as_str().unwrap()[11..16], *"16:00");
    env.app.stop().await;
}

#[tokio::test]
async fn genesys_unavailable_twice_then_created() {
    let env = Env::start(10).await;
    env.sim_post(
        "/__sim/faults",
        json!({"method": "POST", "path": "/api/v2/conversations/callbacks", "status": 503, "count": 2}),
    )
    .await;
    let response = env.reserve(&request(vec![slot(2, 11, 30)])).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        env.sim_requests("/api/v2/conversations/callbacks")
            .await
            .len(),
        3
    );
    env.app.stop().await;
}

#[tokio::test]
async fn genesys_refusing_fails_the_reservation_and_frees_the_place() {
    let env = Env::start(1).await;
    env.sim_post(
        "/__sim/faults",
        json!({"method": "POST", "path": "/api/v2/conversations/callbacks", "status": 400, "count": 1}),
    )
    .await;
    let body = request(vec![slot(2, 12, 30)]);
    assert_error(env.reserve(&body).await, 502, "upstream.error").await;
    let failed: Value = env
        .get("/v1/callbacks?status=failed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(failed["entities"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed["entities"][0]["version"], 1);
    // The only place is free again.
    assert_eq!(env.reserve(&body).await.status(), 201);
    env.app.stop().await;
}

#[tokio::test]
async fn canceling_disconnects_in_genesys() {
    let env = Env::start(10).await;
    let reservation: Value = env
        .reserve(&request(vec![slot(2, 13, 30)]))
        .await
        .json()
        .await
        .unwrap();
    let id = reservation["id"].as_str().unwrap();
    let response = env.delete(&format!("/v1/callbacks/{id}")).await;
    assert_eq!(response.status(), 200);
    let canceled: Value = response.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert!(canceled["version"].as_u64().unwrap() >= 2);
    let disconnects = env
        .sim_requests("/api/v2/conversations/callbacks/bulk/disconnect")
        .await;
    assert_eq!(disconnects.len(), 1);
    assert_eq!(
        disconnects[0]["body"]["callbackDisconnectIdentifiers"][0]["conversationId"],
        reservation["conversationId"]
    );
    assert_error(
        env.delete(&format!("/v1/callbacks/{id}")).await,
        409,
        "conflict",
    )
    .await;
    env.app.stop().await;
}
