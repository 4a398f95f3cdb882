//! The webhook receivers of the control API (`/__sim/receivers/{name}`): what they record, the
//! Standard Webhooks signature check (valid, invalid, unchecked; secret rotation; stale
//! timestamps), faults on deliveries, the bounds of the records, clearing and reset.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{TestSim, assert_error};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1rZXktb2YtMzItYnl0ZXM=";
const EVENT: &str = r#"{"type":"order.created","data":{"orderId":"o-1"}}"#;

/// `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>` with the key of `secret`.
fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl TestSim {
    /// `PUT /__sim/receivers/{name}` with `body`.
    async fn set_receiver(&self, name: &str, body: Value) -> reqwest::Response {
        self.control(Method::PUT, &format!("/__sim/receivers/{name}"), Some(body))
            .await
    }

    /// Delivers `body` to the receiver `name` with these headers.
    async fn deliver(&self, name: &str, headers: &[(&str, String)], body: &str) -> u16 {
        let mut request = self
            .http
            .post(self.url(&format!("/__sim/receivers/{name}")))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (header, value) in headers {
            request = request.header(*header, value);
        }
        request.send().await.expect("delivery").status().as_u16()
    }

    /// Delivers `body` to `name` signed at `timestamp` with `signature`.
    async fn deliver_signed(&self, name: &str, timestamp: i64, signature: &str, body: &str) -> u16 {
        let headers = [
            ("webhook-id", "msg_1".to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature.to_owned()),
        ];
        self.deliver(name, &headers, body).await
    }

    /// `GET /__sim/receivers/{name}`.
    async fn deliveries(&self, name: &str) -> Vec<Value> {
        let response = self
            .control(Method::GET, &format!("/__sim/receivers/{name}"), None)
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }
}

#[tokio::test]
async fn a_signed_delivery_is_recorded_as_valid_and_answered_200() {
    let t = TestSim::start().await;
    assert_eq!(
        t.set_receiver("orders", json!({ "secret": SECRET }))
            .await
            .status(),
        204
    );
    let at = now();
    let response = t
        .http
        .post(t.url("/__sim/receivers/orders"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer target-token")
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", at.to_string())
        .header("webhook-signature", signature(SECRET, "msg_1", at, EVENT))
        .body(EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({}));

    let deliveries = t.deliveries("orders").await;
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    let delivery = &deliveries[0];
    assert_eq!(delivery["signature"], "valid", "{delivery}");
    assert_eq!(delivery["body"], EVENT);
    assert_eq!(delivery["id"], 1);
    assert!(delivery["at"].as_str().is_some_and(|a| a.ends_with('Z')));
    assert_eq!(delivery["headers"]["webhook-id"], "msg_1");
    assert_eq!(delivery["headers"]["content-type"], "application/json");
    assert_eq!(delivery["headers"]["authorization"], "Bearer [REDACTED]");
    assert!(delivery.get("signatureError").is_none());
    // Another receiver received nothing.
    assert!(t.deliveries("payments").await.is_empty());
    // The delivery is a request received like any other.
    assert_eq!(t.requests("/__sim/receivers/*").await.len(), 1);
}

#[tokio::test]
async fn a_tampered_body_or_a_stale_timestamp_is_invalid() {
    let t = TestSim::start().await;
    t.set_receiver("orders", json!({ "secret": SECRET })).await;
    let at = now();
    let signed = signature(SECRET, "msg_1", at, EVENT);
    let tampered = EVENT.replace("o-1", "o-2");
    assert_eq!(
        t.deliver_signed("orders", at, &signed, &tampered).await,
        200
    );

    let stale = at - 10 * 60;
    let stale_signature = signature(SECRET, "msg_1", stale, EVENT);
    assert_eq!(
        t.deliver_signed("orders", stale, &stale_signature, EVENT)
            .await,
        200
    );
    let ahead = at + 10 * 60;
    let ahead_signature = signature(SECRET, "msg_1", ahead, EVENT);
    assert_eq!(
        t.deliver_signed("orders", ahead, &ahead_signature, EVENT)
            .await,
        200
    );
    // Signed with another secret.
    let other = signature(OTHER_SECRET, "msg_1", at, EVENT);
    assert_eq!(t.deliver_signed("orders", at, &other, EVENT).await, 200);
    // Not signed at all.
    assert_eq!(t.deliver("orders", &[], EVENT).await, 200);

    let deliveries = t.deliveries("orders").await;
    assert_eq!(deliveries.len(), 5);
    for delivery in &deliveries {
        assert_eq!(delivery["signature"], "invalid", "{delivery}");
        assert!(
            delivery["signatureError"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{delivery}"
        );
    }
    assert_eq!(deliveries[0]["body"], tampered, "oldest first");
    assert!(
        deliveries[1]["signatureError"]
            .as_str()
            .unwrap()
            .contains("webhook-timestamp"),
        "{}",
        deliveries[1]
    );
}

#[tokio::test]
async fn one_matching_signature_among_several_is_valid() {
    let t = TestSim::start().await;
    t.set_receiver("orders", json!({ "secret": SECRET })).await;
    let at = now();
    // During a rotation the sender signs with the old and the new secret.
    for signatures in [
        format!(
            "{} {}",
            signature(OTHER_SECRET, "msg_1", at, EVENT),
            signature(SECRET, "msg_1", at, EVENT)
        ),
        format!(
            "v2,AAAA {} v1,bm90LWl0",
            signature(SECRET, "msg_1", at, EVENT)
        ),
    ] {
        assert_eq!(
            t.deliver_signed("orders", at, &signatures, EVENT).await,
            200
        );
    }
    let both_wrong = format!(
        "{} v1,bm90LWl0",
        signature(OTHER_SECRET, "msg_1", at, EVENT)
    );
    t.deliver_signed("orders", at, &both_wrong, EVENT).await;

    let found: Vec<Value> = t
        .deliveries("orders")
        .await
        .iter()
        .map(|d| d["signature"].clone())
        .collect();
    assert_eq!(found, [json!("valid"), json!("valid"), json!("invalid")]);
}

#[tokio::test]
async fn without_a_secret_deliveries_are_unchecked() {
    let t = TestSim::start().await;
    let at = now();
    t.deliver_signed("orders", at, &signature(SECRET, "msg_1", at, EVENT), EVENT)
        .await;
    // Any body, any content type.
    let status = t
        .http
        .post(t.url("/__sim/receivers/orders"))
        .header("content-type", "text/plain")
        .body("plain text")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    // A secret set, then removed.
    t.set_receiver("orders", json!({ "secret": SECRET })).await;
    t.set_receiver("orders", json!({ "secret": null })).await;
    t.deliver("orders", &[], "{}").await;

    let deliveries = t.deliveries("orders").await;
    let found: Vec<&Value> = deliveries.iter().map(|d| &d["signature"]).collect();
    assert_eq!(found, ["unchecked", "unchecked", "unchecked"]);
    assert_eq!(deliveries[1]["body"], "plain text");
    assert_eq!(deliveries[1]["headers"]["content-type"], "text/plain");
}

#[tokio::test]
async fn the_secret_can_be_set_from_rust_and_bad_secrets_are_refused() {
    let t = TestSim::start().await;
    t.sim
        .set_receiver_secret("orders", &SecretString::from(SECRET))
        .expect("a valid secret");
    let at = now();
    t.deliver_signed("orders", at, &signature(SECRET, "msg_1", at, EVENT), EVENT)
        .await;
    assert_eq!(t.deliveries("orders").await[0]["signature"], "valid");

    assert!(
        t.sim
            .set_receiver_secret("orders", &SecretString::from("MfKQ9r8GKYqrTwjU"))
            .is_err()
    );
    for bad in [
        json!({ "secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }),
        json!({ "secret": "whsec_not base64" }),
        json!({ "secret": "whsec_" }),
        json!({ "secret": 12 }),
        json!({ "key": SECRET }),
    ] {
        let response = t.set_receiver("orders", bad.clone()).await;
        let body = assert_error(response, 400, "bad.request").await;
        assert!(!body.to_string().contains("MfKQ9r8"), "{body}");
    }
    // The secret set first is still the one checked.
    t.deliver_signed("orders", at, &signature(SECRET, "msg_1", at, EVENT), EVENT)
        .await;
    assert_eq!(t.deliveries("orders").await[1]["signature"], "valid");
}

#[tokio::test]
async fn faults_apply_to_deliveries_and_not_to_the_control_calls() {
    let t = TestSim::start().await;
    t.fault(json!({ "method": "POST", "path": "/__sim/receivers/orders", "status": 503, "retryAfter": 3 }))
        .await;
    t.fault(json!({ "path": "/__sim/receivers/*", "status": 410 }))
        .await;
    let response = t
        .http
        .post(t.url("/__sim/receivers/orders"))
        .body(EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "3");
    // The control calls are not faulted: the 410 is still armed.
    assert!(
        t.deliveries("orders").await.is_empty(),
        "a faulted delivery is not received"
    );
    assert_eq!(
        t.set_receiver("orders", json!({ "secret": SECRET }))
            .await
            .status(),
        204
    );
    assert_eq!(t.deliver("orders", &[], EVENT).await, 410);
    // Spent: the next one is received.
    assert_eq!(t.deliver("orders", &[], EVENT).await, 200);
    assert_eq!(t.deliveries("orders").await.len(), 1);
    // Every attempt is in the request log.
    assert_eq!(t.requests("/__sim/receivers/orders").await.len(), 3);
}

#[tokio::test]
async fn records_are_bounded_and_long_bodies_are_cut_but_checked_whole() {
    let t = TestSim::start().await;
    t.set_receiver("orders", json!({ "secret": SECRET })).await;
    let at = now();
    let long = format!(r#"{{"pad":"{}"}}"#, "é".repeat(40 * 1024));
    assert!(long.len() > 64 * 1024);
    t.deliver_signed("orders", at, &signature(SECRET, "msg_1", at, &long), &long)
        .await;
    let delivery = &t.deliveries("orders").await[0];
    assert_eq!(delivery["signature"], "valid", "the whole body was checked");
    assert_eq!(delivery["bodyTruncated"], true);
    assert_eq!(delivery["bodySize"], long.len());
    let kept = delivery["body"].as_str().unwrap();
    assert!(kept.len() <= 64 * 1024 && long.starts_with(kept));

    // Bodies at their cap fill the 32 MiB of the records in about 500 deliveries: the oldest
    // go first.
    let body = "x".repeat(64 * 1024);
    let sent = 600;
    for _ in 0..sent {
        assert_eq!(t.deliver("orders", &[], &body).await, 200);
    }
    // Only the ids are read: the listing is 32 MiB.
    #[derive(serde::Deserialize)]
    struct Listed {
        id: u64,
    }
    let listing = t
        .control(Method::GET, "/__sim/receivers/orders", None)
        .await
        .bytes()
        .await
        .unwrap();
    let ids: Vec<u64> = serde_json::from_slice::<Vec<Listed>>(&listing)
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert!((400..sent).contains(&ids.len()), "{} kept", ids.len());
    assert_eq!(*ids.last().unwrap(), 1 + sent as u64, "the newest is kept");
    assert!(ids[0] > 1, "the oldest went first");
    assert!(
        ids.windows(2).all(|w| w[0] + 1 == w[1]),
        "oldest first, none missing"
    );
}

#[tokio::test]
async fn delete_clears_one_receiver_and_reset_clears_all_but_keeps_secrets() {
    let t = TestSim::start().await;
    t.set_receiver("orders", json!({ "secret": SECRET })).await;
    for name in ["orders", "payments"] {
        t.deliver(name, &[], EVENT).await;
    }
    let response = t
        .control(Method::DELETE, "/__sim/receivers/orders", None)
        .await;
    assert_eq!(response.status(), 204);
    assert!(t.deliveries("orders").await.is_empty());
    assert_eq!(t.deliveries("payments").await.len(), 1);

    let at = now();
    t.deliver_signed("orders", at, &signature(SECRET, "msg_1", at, EVENT), EVENT)
        .await;
    assert_eq!(
        t.deliveries("orders").await[0]["signature"],
        "valid",
        "DELETE keeps the secret"
    );

    let response = t.control(Method::POST, "/__sim/reset", None).await;
    assert_eq!(response.status(), 204);
    assert!(t.deliveries("orders").await.is_empty());
    assert!(t.deliveries("payments").await.is_empty());
    t.deliver_signed("orders", at, &signature(SECRET, "msg_1", at, EVENT), EVENT)
        .await;
    assert_eq!(
        t.deliveries("orders").await[0]["signature"],
        "valid",
        "reset keeps the secret"
    );
}
