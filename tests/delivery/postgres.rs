//! Several gateways on one PostgreSQL database: claims with `FOR UPDATE SKIP LOCKED` hand each
//! delivery to one replica; a replica stopped mid-run leaves nothing behind; verification
//! state is shared. The database comes from `GATEWAY_TEST_DATABASE_URL`; each test creates its
//! own and says clearly when it is skipped.

use std::collections::HashMap;

use crate::common::TestApp;
use crate::common::postgres::PgDatabase;
use crate::support::{
    Answer, Target, await_delivery, await_target_status, config, enqueue, eventually, message,
};

#[tokio::test]
async fn two_replicas_deliver_every_event_exactly_once_and_share_verification() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let target = Target::start().await;
    let toml = config(&target.url(), 5).replace("sqlite://data/gateway.db", &db.url);
    let a = TestApp::spawn_with(&toml).await;
    let b = TestApp::spawn_with(&toml).await;
    await_target_status(&a, "orders", "VERIFIED").await;
    await_target_status(&b, "orders", "VERIFIED").await;
    // A few failures on the way, retried by whichever replica claims them.
    target.answer_events([Answer::status(503), Answer::status(502)]);
    let messages: Vec<_> = (0..40)
        .map(|i| message(&format!(r#"{{"i":{i}}}"#)))
        .collect();
    for (i, m) in messages.iter().enumerate() {
        let app = if i % 2 == 0 { &a } else { &b };
        enqueue(&app.delivery, m).await;
    }
    for m in &messages {
        await_delivery(&a, m.id, "delivered").await;
    }
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for e in target.events() {
        *per_id.entry(e.header("webhook-id").to_owned()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 40, "every event arrived");
    let repeated: usize = per_id.values().map(|n| n - 1).sum();
    assert_eq!(repeated, 2, "only the two failed attempts were sent again");
    assert_eq!(
        target
            .received()
            .iter()
            .filter(|r| r.is_verification())
            .count(),
        1,
        "one verification for both replicas (the declarative target is stored once)"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn deliveries_left_by_a_stopped_replica_are_completed_by_another() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let target = Target::start().await;
    let toml = config(&target.url(), 10).replace("sqlite://data/gateway.db", &db.url);
    let a = TestApp::spawn_with(&toml).await;
    await_target_status(&a, "orders", "VERIFIED").await;
    target.answer_events((0..20).map(|_| Answer::status(503)));
    let messages: Vec<_> = (0..5)
        .map(|i| message(&format!(r#"{{"i":{i}}}"#)))
        .collect();
    for m in &messages {
        enqueue(&a.delivery, m).await;
    }
    eventually("first attempts", || async {
        (target.events().len() >= 5).then_some(())
    })
    .await;
    a.stop().await;
    target.clear_answers();
    let b = TestApp::spawn_with(&toml).await;
    for m in &messages {
        await_delivery(&b, m.id, "delivered").await;
    }
    b.stop().await;
}
