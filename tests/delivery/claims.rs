//! The claim statements on both databases, without the engine: a lease keeps a delivery from
//! every other claim until it expires, then it is taken over and the first holder can no longer
//! write its outcome; concurrent claims on PostgreSQL (`FOR UPDATE SKIP LOCKED`) take disjoint
//! rows; only VERIFIED destinations' deliveries are claimed (a verification also while
//! PENDING_VERIFICATION); claims come in acceptance order.

use std::collections::HashSet;

use genesys_gateway::store::{DestinationRow, Finish, MessageRow, NewDelivery, Store};
use secrecy::SecretString;

use crate::common::postgres::PgDatabase;

const CONFIG: &str = r#"{"endpointUrl":"https://example.com/x","auth":{"type":"NONE"},"retryPolicy":{"maxRetries":1,"backoffStrategy":"LINEAR","initialDelaySeconds":1},"headers":{},"eventTypes":["*"]}"#;

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fresh SQLite store (kept alive by the returned folder).
async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&SecretString::from("sqlite://claims.db"), dir.path())
        .await
        .unwrap();
    (store, dir)
}

/// A store on a fresh PostgreSQL database (dropped with the returned guard), or `None` when
/// no test server is configured.
async fn postgres() -> Option<(Store, PgDatabase)> {
    let db = PgDatabase::create().await?;
    let store = Store::connect(
        &SecretString::from(db.url.clone()),
        std::path::Path::new("."),
    )
    .await
    .unwrap();
    Some((store, db))
}

async fn destination(store: &Store, id: &str, status: &str) {
    let mut tx = store.begin().await.unwrap();
    tx.insert_destination(&DestinationRow {
        id: id.to_owned(),
        kind: "target".to_owned(),
        origin: "api".to_owned(),
        name: format!("name-{id}"),
        config: SecretString::from(CONFIG),
        config_hash: "h".to_owned(),
        secret: SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        previous_secret: None,
        previous_secret_until_ms: None,
        status: status.to_owned(),
        status_reason: None,
        verification_id: None,
        created_ms: now(),
        updated_ms: now(),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// `n` messages with one delivery each to `destination`; their delivery ids in order.
async fn deliveries(store: &Store, destination: &str, purpose: &str, n: usize) -> Vec<String> {
    let mut tx = store.begin().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let message = uuid::Uuid::now_v7().to_string();
        let id = uuid::Uuid::now_v7().to_string();
        tx.insert_message(&MessageRow {
            id: &message,
            event_type: "e",
            idempotency_key: &message,
            body: b"{}",
            created_ms: now(),
        })
        .await
        .unwrap();
        tx.insert_delivery(&NewDelivery {
            id: &id,
            message_id: &message,
            destination_id: destination,
            purpose,
            status: "pending",
            last_error: None,
            now_ms: now(),
        })
        .await
        .unwrap();
        ids.push(id);
    }
    tx.commit().await.unwrap();
    ids
}

fn delivered() -> Finish<'static> {
    Finish {
        status: "delivered",
        attempts: 1,
        next_at_ms: now(),
        last_error: None,
        delivered_ms: Some(now()),
        now_ms: now(),
    }
}

async fn leases_and_take_over(store: Store) {
    destination(&store, "verified", "VERIFIED").await;
    destination(&store, "waiting", "PENDING_VERIFICATION").await;
    let ids = deliveries(&store, "verified", "event", 3).await;
    deliveries(&store, "waiting", "event", 2).await;
    let verification = deliveries(&store, "waiting", "verification", 1).await;

    // In acceptance order, only what may be sent.
    let first = store.claim_deliveries(now(), 10, "a", 300).await.unwrap();
    let claimed: Vec<&str> = first.iter().map(|c| c.id.as_str()).collect();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.push(&verification[0]);
    assert_eq!(
        claimed, want,
        "events of the VERIFIED one and the verification"
    );
    assert!(first.iter().all(|c| c.attempts == 0 && c.body == b"{}"));

    // Leased: nobody else gets them.
    assert!(
        store
            .claim_deliveries(now(), 10, "b", 300)
            .await
            .unwrap()
            .is_empty()
    );
    // Renewed by its holder only.
    assert!(store.renew_lease(&ids[0], "a", now() + 300).await.unwrap());
    assert!(!store.renew_lease(&ids[0], "b", now() + 300).await.unwrap());

    // The lease expires (its holder died): taken over; the first holder writes nothing.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let second = store
        .claim_deliveries(now(), 10, "b", 30_000)
        .await
        .unwrap();
    assert_eq!(second.len(), 4);
    let mut tx = store.begin().await.unwrap();
    assert!(
        !tx.finish_delivery(&ids[0], "a", &delivered())
            .await
            .unwrap()
    );
    assert!(
        tx.finish_delivery(&ids[0], "b", &delivered())
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let row = store.delivery(&ids[0]).await.unwrap().unwrap();
    assert_eq!(row.status, "delivered");
    // A released lease is due again at once.
    assert!(store.release_lease(&ids[1], "b", now()).await.unwrap());
    let again = store
        .claim_deliveries(now(), 10, "c", 30_000)
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [ids[1].as_str()]
    );
}

#[tokio::test]
async fn sqlite_claims_are_leases_taken_over_when_they_expire() {
    let (store, _dir) = sqlite().await;
    leases_and_take_over(store).await;
}

#[tokio::test]
async fn postgres_claims_are_leases_taken_over_when_they_expire() {
    let Some((store, _db)) = postgres().await else {
        return;
    };
    leases_and_take_over(store).await;
}

#[tokio::test]
async fn concurrent_postgres_claims_take_disjoint_rows() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let url = SecretString::from(db.url.clone());
    let a = Store::connect(&url, std::path::Path::new("."))
        .await
        .unwrap();
    let b = Store::connect(&url, std::path::Path::new("."))
        .await
        .unwrap();
    destination(&a, "t", "VERIFIED").await;
    let ids = deliveries(&a, "t", "event", 200).await;
    let mut seen = HashSet::new();
    let mut total = 0;
    loop {
        let (x, y) = tokio::join!(
            a.claim_deliveries(now(), 7, "a", 60_000),
            b.claim_deliveries(now(), 7, "b", 60_000)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        if x.is_empty() && y.is_empty() {
            break;
        }
        for c in x.iter().chain(&y) {
            assert!(seen.insert(c.id.clone()), "claimed twice: {}", c.id);
            total += 1;
        }
    }
    assert_eq!(total, ids.len(), "every delivery claimed once");
}

/// A claim written inside a transaction (as the group committer writes the delivery engine's
/// claims on SQLite) takes effect when the transaction commits and not before, and reads back
/// every claimed delivery with its message in acceptance order — more of them than one
/// statement reads at a time.
async fn claims_inside_a_transaction(store: Store) {
    destination(&store, "verified", "VERIFIED").await;
    let ids = deliveries(&store, "verified", "event", 1_203).await;

    // Rolled back: nothing was claimed.
    let mut tx = store.begin().await.unwrap();
    let claim = tx
        .claim_deliveries(now(), 5_000, "a", 30_000)
        .await
        .unwrap();
    assert_eq!(claim.len(), ids.len());
    tx.rollback().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let claim = tx
        .claim_deliveries(now(), 5_000, "b", 30_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let claimed = store.claimed_deliveries(claim).await.unwrap();
    let claimed_ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    let want: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(claimed_ids, want, "every delivery, in acceptance order");
    assert!(claimed.iter().all(|c| c.body == b"{}" && c.attempts == 0));

    // Committed: leased to "b", so a later claim gets nothing, and "b" may write outcomes.
    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.claim_deliveries(now(), 5_000, "c", 30_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        tx.finish_delivery(&ids[0], "b", &delivered())
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    // One message to two destinations: both deliveries are claimed, each with the message.
    destination(&store, "second", "VERIFIED").await;
    let message = uuid::Uuid::now_v7().to_string();
    let mut tx = store.begin().await.unwrap();
    tx.insert_message(&MessageRow {
        id: &message,
        event_type: "e",
        idempotency_key: &message,
        body: b"{\"both\":true}",
        created_ms: now(),
    })
    .await
    .unwrap();
    for to in ["verified", "second"] {
        tx.insert_delivery(&NewDelivery {
            id: &uuid::Uuid::now_v7().to_string(),
            message_id: &message,
            destination_id: to,
            purpose: "event",
            status: "pending",
            last_error: None,
            now_ms: now(),
        })
        .await
        .unwrap();
    }
    let claim = tx.claim_deliveries(now(), 10, "d", 30_000).await.unwrap();
    tx.commit().await.unwrap();
    let claimed = store.claimed_deliveries(claim).await.unwrap();
    let mut to: Vec<&str> = claimed.iter().map(|c| c.destination_id.as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, ["second", "verified"]);
    assert!(claimed.iter().all(|c| c.body == b"{\"both\":true}"));
}

#[tokio::test]
async fn sqlite_claims_inside_a_transaction_take_effect_when_it_commits() {
    let (store, _dir) = sqlite().await;
    claims_inside_a_transaction(store).await;
}

#[tokio::test]
async fn postgres_claims_inside_a_transaction_take_effect_when_it_commits() {
    let Some((store, _db)) = postgres().await else {
        return;
    };
    claims_inside_a_transaction(store).await;
}

/// Deliveries that may not be sent (to a destination awaiting verification, to one that failed
/// it — a verification there too), more than a page of them ahead in acceptance order, are
/// passed over and never claimed: the deliveries behind them are claimed, oldest first, a claim
/// at a time.
async fn claims_pass_over_what_may_not_be_sent(store: Store) {
    destination(&store, "waiting", "PENDING_VERIFICATION").await;
    destination(&store, "failed", "FAILED").await;
    destination(&store, "verified", "VERIFIED").await;
    // More than one page of PostgreSQL's claim (512 rows) ahead of what may be sent.
    let held = deliveries(&store, "waiting", "event", 530).await;
    deliveries(&store, "failed", "event", 9).await;
    let first = deliveries(&store, "verified", "event", 3).await;
    deliveries(&store, "failed", "verification", 4).await;
    let second = deliveries(&store, "verified", "event", 4).await;

    let ids = |claim: Vec<genesys_gateway::store::ClaimedDelivery>| {
        claim.into_iter().map(|c| c.id).collect::<Vec<_>>()
    };
    let mut want = first.clone();
    want.extend_from_slice(&second[..2]);
    assert_eq!(
        ids(store.claim_deliveries(now(), 5, "a", 30_000).await.unwrap()),
        want
    );
    assert_eq!(
        ids(store.claim_deliveries(now(), 5, "b", 30_000).await.unwrap()),
        second[2..]
    );
    assert!(
        store
            .claim_deliveries(now(), 5, "c", 30_000)
            .await
            .unwrap()
            .is_empty()
    );
    for id in held.iter().step_by(53) {
        assert_eq!(store.delivery(id).await.unwrap().unwrap().status, "pending");
    }
}

#[tokio::test]
async fn sqlite_claims_pass_over_what_may_not_be_sent() {
    let (store, _dir) = sqlite().await;
    claims_pass_over_what_may_not_be_sent(store).await;
}

#[tokio::test]
async fn postgres_claims_pass_over_what_may_not_be_sent() {
    let Some((store, _db)) = postgres().await else {
        return;
    };
    claims_pass_over_what_may_not_be_sent(store).await;
}
