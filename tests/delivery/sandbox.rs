//! The sandbox: a target on `http://genesys-simulator/...` delivers to the in-process
//! simulator's receiver, which checks the signatures with the target's secret.

use serde_json::Value;

use crate::common::{TestApp, base_config};
use crate::support::{SECRET, await_delivery, await_target_status, enqueue, eventually, message};

#[tokio::test]
async fn the_sandbox_target_delivers_signed_events_to_the_simulator_receiver() {
    let toml = base_config()
        + &format!(
            r#"
[[targets]]
name = "order-events"
endpoint_url = "http://genesys-simulator/__sim/receivers/order-events"
event_types = ["custom.legacy.orders.*"]
secret = "{SECRET}"
"#
        );
    let app = TestApp::spawn_with(&toml).await;
    let sim = app.sim_url.clone().expect("simulating");
    let target = await_target_status(&app, "order-events", "VERIFIED").await;
    assert_eq!(
        target["endpointUrl"],
        format!("{sim}/__sim/receivers/order-events"),
        "rewritten to the simulator's address"
    );
    let msg = message(r#"{"amount":1234567890.12345678901}"#);
    enqueue(&app.delivery, &msg).await;
    await_delivery(&app, msg.id, "delivered").await;
    let received: Vec<Value> = eventually("the delivery at the receiver", || async {
        let list: Value = app
            .client
            .get(format!("{sim}/__sim/receivers/order-events"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let list = list.as_array()?.clone();
        (list.len() >= 2).then_some(list)
    })
    .await;
    assert!(
        received.iter().all(|d| d["signature"] == "valid"),
        "every delivery verified by the receiver: {received:?}"
    );
    let event = received
        .iter()
        .find(|d| d["body"] == r#"{"amount":1234567890.12345678901}"#)
        .expect("the event, byte for byte");
    assert_eq!(event["headers"]["idempotency-key"], msg.idempotency_key);
    app.stop().await;
}
