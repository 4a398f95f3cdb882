//! Two gateways on one PostgreSQL database: idempotency is enforced by the database, so the
//! same event posted to both at the same moment is `queued` at one and `duplicate` (with the
//! same `eventId`) at the other. The database comes from `GATEWAY_TEST_DATABASE_URL`; each test
//! creates its own and says clearly when it is skipped.

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::common::TestApp;
use crate::common::postgres::PgDatabase;
use crate::support::{config, event, token, txid};

#[tokio::test]
async fn concurrent_duplicates_at_two_replicas_are_one_event() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let text = config(keys.path(), "").replace(
        "url = \"sqlite://data/gateway.db\"",
        &format!("url = \"{}\"", db.url),
    );
    assert!(text.contains(&db.url));
    // Both start at once: migrations are serialised.
    let (a, b) = tokio::join!(TestApp::spawn_with(&text), TestApp::spawn_with(&text));
    for round in 0..20 {
        let body = if round % 4 == 3 {
            json!([event(&txid("pg-batch-a")), event(&txid("pg-batch-b"))])
        } else {
            event(&txid("pg"))
        };
        let token = token();
        let (ra, rb) = tokio::join!(a.post_events(&token, &body), b.post_events(&token, &body));
        assert_eq!(ra.status(), 202, "round {round}");
        assert_eq!(rb.status(), 202, "round {round}");
        let ra: Value = ra.json().await.unwrap();
        let rb: Value = rb.json().await.unwrap();
        let (ra, rb) = (
            ra["results"].as_array().unwrap(),
            rb["results"].as_array().unwrap(),
        );
        assert_eq!(ra.len(), rb.len());
        for (x, y) in ra.iter().zip(rb) {
            assert_eq!(x["eventId"], y["eventId"], "round {round}: one event id");
            let mut statuses = [x["status"].as_str().unwrap(), y["status"].as_str().unwrap()];
            statuses.sort_unstable();
            assert_eq!(statuses, ["duplicate", "queued"], "round {round}");
        }
    }
    // One row per event: each replica reads the other's events.
    let results = a.accepted(&token(), &event(&txid("pg-read"))).await;
    let id = results[0]["eventId"].as_str().unwrap();
    assert_eq!(b.get_event(&token(), id).await.status(), 200);
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (events,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ingest_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(events, 15 + 5 * 2 + 1, "one row per distinct event");
    conn.close().await.ok();
    a.stop().await;
    b.stop().await;
}
