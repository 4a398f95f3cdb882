//! The sync from Genesys: the simulator drives the callback, the reservation follows; the
//! socket is lost and replaced without losing what happened meanwhile; pushed events.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Env, PUSH_PASSWORD, WAIT, request, slot};

async fn reserved(env: &Env, hour: u32) -> (String, String) {
    env.await_sockets(1).await;
    let r: Value = env
        .reserve(&request(vec![slot(2, hour, 30)]))
        .await
        .json()
        .await
        .unwrap();
    (
        r["id"].as_str().unwrap().to_owned(),
        r["conversationId"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn scheduled_connected_disconnected_is_versions_one_two_three() {
    let env = Env::start(10).await;
    let (id, conversation) = reserved(&env, 9).await;
    let state = format!("/__sim/callbacks/{conversation}/state");
    env.sim_post(&state, json!({"state": "connected"})).await;
    let in_progress = env.await_status(&id, "in_progress").await;
    assert_eq!(in_progress["version"], 2);
    env.sim_post(&state, json!({"state": "disconnected"})).await;
    let completed = env.await_status(&id, "completed").await;
    assert_eq!(completed["version"], 3);
    assert!(completed["seq"].as_u64() > in_progress["seq"].as_u64());
    env.app.stop().await;
}

/// The remote addresses of the simulator's open notification sockets (one per connection).
async fn remotes(env: &Env) -> Vec<String> {
    let sockets: Vec<Value> = env
        .http
        .get(env.sim_url("/__sim/notifications/sockets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sockets
        .iter()
        .map(|s| s["remote"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the only open socket is another connection than `old`; returns it.
async fn await_new_socket(env: &Env, old: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let open = remotes(env).await;
        if open.len() == 1 && open[0] != old {
            return open[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reconnected from {old}: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn socket_closing_reconnects_ahead_and_loses_no_event() {
    let env = Env::start(10).await;
    let (id, conversation) = reserved(&env, 10).await;
    let state = format!("/__sim/callbacks/{conversation}/state");
    let old = remotes(&env).await.remove(0);
    env.sim_post("/__sim/notifications/socket-closing", json!({}))
        .await;
    // During the switch: the old socket is still open, the new one opening.
    env.sim_post(&state, json!({"state": "dialing"})).await;
    let in_progress = env.await_status(&id, "in_progress").await;
    assert_eq!(in_progress["version"], 2, "{in_progress}");
    // The gateway moved to a new connection before the simulator closed the old one.
    await_new_socket(&env, &old).await;
    // After the switch, on the new socket only.
    env.sim_post(&state, json!({"state": "disconnected"})).await;
    let done = env.await_status(&id, "canceled").await;
    assert_eq!(done["version"], 3, "{done}");
    env.app.stop().await;
}

#[tokio::test]
async fn heartbeat_silence_reconnects() {
    let env = Env::start(10).await;
    let (id, conversation) = reserved(&env, 10).await;
    let old = remotes(&env).await.remove(0);
    // Silence past the 2 s watchdog: only the gateway's watchdog ends this socket (the
    // simulator keeps it open and sends events on it).
    env.sim_post("/__sim/notifications/pause", json!({"seconds": 3}))
        .await;
    await_new_socket(&env, &old).await;
    env.sim_post(
        &format!("/__sim/callbacks/{conversation}/state"),
        json!({"state": "connected"}),
    )
    .await;
    let in_progress = env.await_status(&id, "in_progress").await;
    assert_eq!(in_progress["version"], 2, "{in_progress}");
    env.app.stop().await;
}

#[tokio::test]
async fn a_change_made_while_disconnected_is_reconciled() {
    let env = Env::start(10).await;
    let (id, conversation) = reserved(&env, 11).await;
    // The socket goes silent (the watchdog drops it) and reconnecting fails for a while.
    env.sim_post(
        "/__sim/faults",
        json!({"method": "GET", "path": "/channels/*", "status": 0, "count": 4}),
    )
    .await;
    env.sim_post("/__sim/notifications/pause", json!({"seconds": 3}))
        .await;
    env.await_sockets(0).await;
    // Changed while no socket is open: no event reaches the gateway.
    env.sim_post(
        &format!("/__sim/callbacks/{conversation}/state"),
        json!({"state": "connected"}),
    )
    .await;
    // Back: the reconciliation after the gap finds it.
    let in_progress = env.await_status(&id, "in_progress").await;
    assert_eq!(in_progress["version"], 2, "{in_progress}");
    env.await_sockets(1).await;
    env.app.stop().await;
}

#[tokio::test]
async fn pushed_events_apply_like_the_socket_and_foreign_ones_are_ignored() {
    let env = Env::start(10).await;
    let (id, conversation) = reserved(&env, 12).await;
    let envelope = |conv: &str, state: &str| {
        json!({
            "topicName": "v2.routing.queues.a3b1f7c2-0000-4000-8000-000000000001.conversations.callbacks",
            "version": "2",
            "eventBody": {"id": conv, "participants": [{"purpose": "customer", "state": state}]},
            "metadata": {}
        })
    };
    let url = env.app.url("/v1/genesys/events");
    let response = env
        .http
        .post(&url)
        .basic_auth("genesys", Some(PUSH_PASSWORD))
        .json(&json!([
            envelope(&conversation, "dialing"),
            envelope("someone-else", "dialing")
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let counts: Value = response.json().await.unwrap();
    assert_eq!(counts, json!({"applied": 1, "ignored": 1}));
    env.await_status(&id, "in_progress").await;
    let response = env
        .http
        .post(&url)
        .json(&envelope(&conversation, "dialing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    env.app.stop().await;
}
