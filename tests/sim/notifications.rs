//! Callbacks, conversations and the notifications service: channels, subscriptions, the
//! channel WebSocket (events, heartbeat, pause, ping/pong, socket_closing) and the `/__sim`
//! controls that drive them.

use std::time::Duration;

use crate::support::{
    BILLING, SUPPORT, TestSim, assert_error, callbacks_topic, next_event, next_text,
};
use futures_util::{SinkExt, StreamExt};
use genesys_gateway::sim::SimOptions;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

fn customer(conversation_or_event: &Value) -> &Value {
    conversation_or_event["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .find(|p| p["purpose"] == "customer")
        .expect("a customer participant")
}

#[tokio::test]
async fn a_callback_change_reaches_every_channel_subscribed_to_its_queue() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let (channel, mut ws) = t.channel(&token, &[callbacks_topic(SUPPORT)]).await;
    assert!(
        channel["connectUri"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ws://{}/channels/", t.sim.local_addr()))
    );
    assert!(channel["expires"].as_str().unwrap().ends_with('Z'));

    // A Billing callback is not seen by a Support subscriber.
    let response = t
        .post(
            &token,
            "/api/v2/conversations/callbacks",
            &json!({"routingData": {"queueId": BILLING}, "callbackNumbers": ["+14155550111"]}),
        )
        .await;
    assert_eq!(response.status(), 200);

    let scheduled = (chrono::Utc::now() + chrono::Duration::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let response = t
        .post(
            &token,
            "/api/v2/conversations/callbacks",
            &json!({
                "routingData": {"queueId": SUPPORT},
                "callbackNumbers": ["+14155550199"],
                "callbackUserName": "Jane Doe",
                "callbackScheduledTime": scheduled,
                "data": {"gatewayReservationId": "r-1"},
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.unwrap();
    let conversation_id = created["conversation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["conversation"]["selfUri"],
        format!("/api/v2/conversations/{conversation_id}")
    );
    let identifiers = created["callbackIdentifiers"].as_array().unwrap();
    assert!(
        identifiers
            .iter()
            .any(|i| i["type"] == "EXTERNAL" && i["id"].is_string())
    );

    let event = next_event(&mut ws, WAIT).await;
    assert_eq!(event["topicName"], callbacks_topic(SUPPORT));
    assert_eq!(event["version"], "2");
    assert!(event["metadata"]["CorrelationId"].is_string());
    assert_eq!(event["eventBody"]["id"], conversation_id.as_str());
    let participant = customer(&event["eventBody"]);
    assert_eq!(participant["state"], "scheduled");
    assert_eq!(participant["queue"]["id"], SUPPORT);
    assert_eq!(participant["callbackNumbers"][0], "+14155550199");
    assert_eq!(participant["callbackScheduledTime"], scheduled.as_str());
    assert_eq!(participant["attributes"]["gatewayReservationId"], "r-1");
    assert_eq!(participant["callbacks"][0]["state"], "scheduled");

    let conversation: Value = t
        .get(&token, &format!("/api/v2/conversations/{conversation_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(conversation["id"], conversation_id.as_str());
    let participant = customer(&conversation);
    assert_eq!(participant["queueId"], SUPPORT);
    assert_eq!(participant["callbacks"][0]["state"], "scheduled");
    assert_eq!(participant["callbacks"][0]["callbackUserName"], "Jane Doe");
    let callback: Value = t
        .get(
            &token,
            &format!("/api/v2/conversations/callbacks/{conversation_id}"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(customer(&callback)["state"], "scheduled");
    assert_eq!(customer(&callback)["queue"]["id"], SUPPORT);

    // The control API moves the state and emits the event.
    let response = t
        .control(
            Method::POST,
            &format!("/__sim/callbacks/{conversation_id}/state"),
            Some(json!({"state": "connected"})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let event = next_event(&mut ws, WAIT).await;
    assert_eq!(customer(&event["eventBody"])["state"], "connected");
    assert!(customer(&event["eventBody"])["connectedTime"].is_string());
    let conversation: Value = t
        .get(&token, &format!("/api/v2/conversations/{conversation_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        customer(&conversation)["callbacks"][0]["state"],
        "connected"
    );

    // Bulk disconnect: 202, then the event.
    let callback_id = identifiers[0]["id"].as_str().unwrap();
    let response = t
        .post(
            &token,
            "/api/v2/conversations/callbacks/bulk/disconnect",
            &json!({"callbackDisconnectIdentifiers": [{"conversationId": conversation_id, "callbackId": callback_id}]}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let event = next_event(&mut ws, WAIT).await;
    assert_eq!(customer(&event["eventBody"])["state"], "disconnected");
    assert_eq!(customer(&event["eventBody"])["disconnectType"], "client");
}

#[tokio::test]
async fn callbacks_need_a_known_queue_and_a_number() {
    let t = TestSim::start().await;
    let token = t.token().await;
    for body in [
        json!({"routingData": {"queueId": "no-such-queue"}, "callbackNumbers": ["+14155550199"]}),
        json!({"callbackNumbers": ["+14155550199"]}),
        json!({"routingData": {"queueId": SUPPORT}, "callbackNumbers": []}),
        json!({"routingData": {"queueId": SUPPORT}, "callbackNumbers": ["+1"], "callbackScheduledTime": "tomorrow"}),
        json!({"routingData": {"queueId": SUPPORT}, "callbackNumbers": ["+1"], "data": {"n": 1}}),
    ] {
        let response = t
            .post(&token, "/api/v2/conversations/callbacks", &body)
            .await;
        assert_error(response, 400, "bad.request").await;
    }
    let response = t
        .http
        .post(t.url("/api/v2/conversations/callbacks"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "bad.request").await;
    assert_error(
        t.get(&token, "/api/v2/conversations/nope").await,
        404,
        "not.found",
    )
    .await;
    let response = t
        .control(
            Method::POST,
            "/__sim/callbacks/nope/state",
            Some(json!({"state": "connected"})),
        )
        .await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn subscriptions_can_be_read_added_replaced_and_removed() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let channel: Value = t
        .post(&token, "/api/v2/notifications/channels", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let id = channel["id"].as_str().unwrap();
    let subs = format!("/api/v2/notifications/channels/{id}/subscriptions");

    let head = t
        .send(
            Method::HEAD,
            &token,
            &format!("/api/v2/notifications/channels/{id}"),
            None,
        )
        .await;
    assert_eq!(head.status(), 200);
    let head = t
        .send(
            Method::HEAD,
            &token,
            "/api/v2/notifications/channels/nope",
            None,
        )
        .await;
    assert_eq!(head.status(), 404);

    let list: Value = t
        .get(&token, "/api/v2/notifications/channels")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        list["entities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id)
    );

    let added: Value = t
        .send(
            Method::POST,
            &token,
            &subs,
            Some(&json!([{"id": callbacks_topic(SUPPORT)}])),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(added["entities"][0]["id"], callbacks_topic(SUPPORT));
    let added: Value = t
        .send(
            Method::POST,
            &token,
            &subs,
            Some(&json!([{"id": callbacks_topic(BILLING)}])),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(added["entities"].as_array().unwrap().len(), 2);
    let read: Value = t.get(&token, &subs).await.json().await.unwrap();
    assert_eq!(read["entities"].as_array().unwrap().len(), 2);

    let replaced: Value = t
        .send(
            Method::PUT,
            &token,
            &subs,
            Some(&json!([{"id": callbacks_topic(BILLING)}])),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        replaced["entities"],
        json!([{"id": callbacks_topic(BILLING), "state": "Permitted"}])
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"id": format!("v2.users.u-{i}.presence")}))
        .collect();
    let response = t
        .send(Method::PUT, &token, &subs, Some(&Value::Array(too_many)))
        .await;
    assert_error(response, 400, "bad.request").await;
    let exactly: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("v2.users.u-{i}.presence")}))
        .collect();
    let response = t
        .send(Method::PUT, &token, &subs, Some(&Value::Array(exactly)))
        .await;
    assert_eq!(response.status(), 200);
    let response = t
        .send(
            Method::POST,
            &token,
            &subs,
            Some(&json!([{"id": callbacks_topic(SUPPORT)}])),
        )
        .await;
    assert_error(response, 400, "bad.request").await;

    assert_eq!(
        t.send(Method::DELETE, &token, &subs, None).await.status(),
        204
    );
    let read: Value = t.get(&token, &subs).await.json().await.unwrap();
    assert_eq!(read["entities"], json!([]));
    assert_error(
        t.get(&token, "/api/v2/notifications/channels/nope/subscriptions")
            .await,
        404,
        "not.found",
    )
    .await;
}

/// Many concurrent state changes on one conversation: every subscriber sees one event per
/// change, all subscribers see them in the same order, and the last one is the state the
/// conversation ended in — events are published in the order the changes were applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_of_one_conversation_reach_subscribers_in_the_order_applied() {
    const STATES: [&str; 8] = [
        "alerting",
        "dialing",
        "contacting",
        "offering",
        "connected",
        "scheduled",
        "none",
        "alerting",
    ];
    let t = TestSim::start().await;
    let token = t.token().await;
    let topics = [callbacks_topic(SUPPORT)];
    let (_, mut first) = t.channel(&token, &topics).await;
    let (_, mut second) = t.channel(&token, &topics).await;
    let created: Value = t
        .post(
            &token,
            "/api/v2/conversations/callbacks",
            &json!({"routingData": {"queueId": SUPPORT}, "callbackNumbers": ["+14155550100"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = created["conversation"]["id"].as_str().unwrap().to_owned();
    for ws in [&mut first, &mut second] {
        assert_eq!(
            customer(&next_event(ws, WAIT).await["eventBody"])["state"],
            "alerting"
        );
    }

    let path = format!("/__sim/callbacks/{id}/state");
    for round in 0..25 {
        let changes = STATES
            .iter()
            .cycle()
            .skip(round)
            .take(STATES.len())
            .map(|state| t.control(Method::POST, &path, Some(json!({"state": state}))));
        for response in futures_util::future::join_all(changes).await {
            assert_eq!(response.status(), 200);
        }
        let conversation: Value = t
            .get(&token, &format!("/api/v2/conversations/{id}"))
            .await
            .json()
            .await
            .unwrap();
        let applied_last = customer(&conversation)["callbacks"][0]["state"].clone();

        let mut seen = Vec::new();
        for ws in [&mut first, &mut second] {
            let mut states = Vec::new();
            for _ in 0..STATES.len() {
                let event = next_event(ws, WAIT).await;
                assert_eq!(event["eventBody"]["id"], id.as_str());
                states.push(customer(&event["eventBody"])["state"].clone());
            }
            seen.push(states);
        }
        assert_eq!(
            seen[0], seen[1],
            "round {round}: both subscribers, one order"
        );
        assert_eq!(
            seen[0].last(),
            Some(&applied_last),
            "round {round}: the last event is the last change applied: {:?}",
            seen[0]
        );
        let mut sent: Vec<&str> = STATES.to_vec();
        let mut received: Vec<&str> = seen[0].iter().map(|s| s.as_str().unwrap()).collect();
        sent.sort_unstable();
        received.sort_unstable();
        assert_eq!(sent, received, "round {round}: one event per change");
    }
}

#[tokio::test]
async fn heartbeats_come_every_interval_and_stop_while_paused() {
    let t = TestSim::start_with(SimOptions {
        heartbeat: Duration::from_millis(50),
        ..SimOptions::default()
    })
    .await;
    let token = t.token().await;
    let (_, mut ws) = t.channel(&token, &[]).await;
    for _ in 0..3 {
        let heartbeat = next_text(&mut ws, WAIT).await.expect("a heartbeat");
        assert_eq!(
            heartbeat,
            json!({"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}})
        );
    }

    // Only lower bounds on time are asserted, and none that a slow machine could break: the
    // pause is in effect once its 204 is back, so once the socket has answered a ping sent
    // after that, no heartbeat may come before the pause ends.
    let pause = Duration::from_millis(600);
    let before_pause = std::time::Instant::now();
    let response = t
        .control(
            Method::POST,
            "/__sim/notifications/pause",
            Some(json!({"seconds": pause.as_secs_f64()})),
        )
        .await;
    assert_eq!(response.status(), 204);
    ws.send(Message::Text(r#"{"message":"ping"}"#.into()))
        .await
        .unwrap();
    loop {
        // Heartbeats sent before the pause took effect may still be on their way.
        let message = next_text(&mut ws, WAIT).await.expect("pong");
        if message["eventBody"]["message"] == "pong" {
            break;
        }
        assert_eq!(message["eventBody"]["message"], "WebSocket Heartbeat");
    }
    let resumed = next_text(&mut ws, WAIT).await.expect("heartbeats resume");
    assert_eq!(resumed["eventBody"]["message"], "WebSocket Heartbeat");
    assert!(
        before_pause.elapsed() >= pause,
        "a heartbeat came {:?} into a pause of {pause:?}",
        before_pause.elapsed()
    );
    // And they keep coming.
    let again = next_text(&mut ws, WAIT).await.expect("heartbeats go on");
    assert_eq!(again["eventBody"]["message"], "WebSocket Heartbeat");
}

#[tokio::test]
async fn a_ping_message_is_answered_with_pong() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let (_, mut ws) = t.channel(&token, &[]).await;
    ws.send(Message::Text(r#"{"message":"ping"}"#.into()))
        .await
        .unwrap();
    let pong = next_text(&mut ws, WAIT).await.expect("pong");
    assert_eq!(
        pong,
        json!({"topicName": "channel.metadata", "eventBody": {"message": "pong"}})
    );
}

#[tokio::test]
async fn socket_closing_is_announced_then_the_socket_closes_after_the_delay() {
    let t = TestSim::start_with(SimOptions {
        socket_closing_delay: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await;
    let token = t.token().await;
    let (channel, mut ws) = t.channel(&token, &[]).await;

    let sockets: Vec<Value> = t
        .control(Method::GET, "/__sim/notifications/sockets", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0]["channelId"], channel["id"]);
    assert!(sockets[0]["connectedAt"].is_string());
    assert!(
        sockets[0]["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let handshakes = t.requests("/channels/*").await;
    assert_eq!(handshakes.len(), 1);
    assert_eq!(handshakes[0]["method"], "GET");

    let started = std::time::Instant::now();
    let response = t
        .control(Method::POST, "/__sim/notifications/socket-closing", None)
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["sockets"], 1);
    let closing = next_event(&mut ws, WAIT).await;
    assert_eq!(closing["topicName"], "v2.system.socket_closing");
    let frame = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time");
    assert!(frame.is_some());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    // The channel stays: a new socket connects to it.
    let uri = channel["connectUri"].as_str().unwrap();
    let (mut again, _) = tokio_tungstenite::connect_async(uri)
        .await
        .expect("reconnect");
    again
        .send(Message::Text(r#"{"message":"ping"}"#.into()))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut again, WAIT).await.unwrap()["eventBody"]["message"],
        "pong"
    );
}

#[tokio::test]
async fn faults_apply_to_the_websocket_handshake_and_unknown_channels_are_refused() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let channel: Value = t
        .post(&token, "/api/v2/notifications/channels", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let uri = channel["connectUri"].as_str().unwrap();
    t.fault(json!({"method": "GET", "path": "/channels/*", "status": 503}))
        .await;
    match tokio_tungstenite::connect_async(uri).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected an HTTP 503, got {other:?}"),
    }
    assert!(tokio_tungstenite::connect_async(uri).await.is_ok());
    let unknown = uri.rsplit_once('/').unwrap().0.to_owned() + "/nope";
    match tokio_tungstenite::connect_async(unknown).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404);
        }
        other => panic!("expected an HTTP 404, got {other:?}"),
    }
}

#[tokio::test]
async fn reset_forgets_conversations_but_keeps_tokens() {
    let t = TestSim::start().await;
    let token = t.token().await;
    let created: Value = t
        .post(
            &token,
            "/api/v2/conversations/callbacks",
            &json!({"routingData": {"queueId": SUPPORT}, "callbackNumbers": ["+14155550100"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let path = format!(
        "/api/v2/conversations/{}",
        created["conversation"]["id"].as_str().unwrap()
    );
    assert_eq!(t.get(&token, &path).await.status(), 200);
    assert_eq!(
        t.control(Method::POST, "/__sim/reset", None).await.status(),
        204
    );
    assert_eq!(t.get(&token, &path).await.status(), 404);
    assert_eq!(
        t.requests("*").await.len(),
        1,
        "the log restarted at the reset"
    );
}
