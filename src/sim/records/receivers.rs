//! Webhook receivers: named endpoints (`POST /__sim/receivers/{name}`) that record what is
//! delivered to them and check its Standard Webhooks signature, so that the sandbox can show an
//! event delivered end to end without any network.
//!
//! A delivery is signed when it carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`
//! entries (several during a secret rotation; entries of other versions are ignored). With a
//! secret registered for the receiver, a delivery is `valid` when one `v1` entry matches
//! (compared in constant time) and its timestamp is within [`TOLERANCE`] of the simulator's
//! clock, else `invalid` (the record says why); without a secret it is `unchecked`.
//!
//! The records are bounded like the request log — the last [`MAX_RECORDED`] deliveries within
//! [`MAX_RECORDED_BYTES`] for all receivers together, each body cut at
//! [`MAX_RECORDED_BODY`](super::requests::MAX_RECORDED_BODY) —
//! and hold the body as text, unredacted (it is what was signed), with the headers as the
//! request log shows them (`authorization` redacted to its scheme).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use super::bounded_log::{BoundedLog, Weighed};
use super::requests::{
    MAX_RECORDED, MAX_RECORDED_BYTES, headers_weight, recorded_headers, text_prefix,
};

/// How far a delivery's `webhook-timestamp` may be from the simulator's clock.
pub(crate) const TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// What a delivery costs on top of its texts, in the byte bound.
const DELIVERY_OVERHEAD: usize = 128;
/// The prefix of a Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";

/// Why a text is not a receiver secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiverSecretError {
    /// The text does not start with `whsec_`.
    #[error("a receiver secret starts with whsec_")]
    Prefix,
    /// What follows `whsec_` is not base64 of a key.
    #[error("a receiver secret is whsec_ followed by the base64 of a non-empty key")]
    Key,
}

/// A Standard Webhooks secret: the key of `whsec_<base64 key>` (never shown, not even in
/// `Debug`).
#[derive(Debug)]
pub(crate) struct WebhookSecret(SecretSlice<u8>);

impl WebhookSecret {
    /// Reads `whsec_<base64 key>`.
    ///
    /// # Errors
    /// When the prefix is missing or the rest is not standard base64 of at least one byte.
    pub fn parse(text: &str) -> Result<Self, ReceiverSecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(ReceiverSecretError::Prefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| ReceiverSecretError::Key)?;
        if key.is_empty() {
            return Err(ReceiverSecretError::Key);
        }
        Ok(Self(SecretSlice::from(key)))
    }

    /// The signature of `<id>.<timestamp>.<body>`.
    fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

/// What the check of a delivery's signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signature {
    /// A `v1` signature matches and the timestamp is recent.
    Valid,
    /// The delivery is not signed with the receiver's secret; why.
    Invalid(String),
    /// The receiver has no secret.
    Unchecked,
}

impl Signature {
    /// Checks the Standard Webhooks signature of a delivery with `headers` and `body` against
    /// `secret`, at `now`.
    pub fn check(
        secret: Option<&WebhookSecret>,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Self {
        let Some(secret) = secret else {
            return Self::Unchecked;
        };
        let header = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let id = header("webhook-id");
        if id.is_empty() {
            return Self::Invalid("no webhook-id header".to_owned());
        }
        let timestamp = header("webhook-timestamp");
        let Ok(seconds) = timestamp.parse::<i64>() else {
            return Self::Invalid("webhook-timestamp is not Unix seconds".to_owned());
        };
        let off = now.timestamp().abs_diff(seconds);
        if off > TOLERANCE.as_secs() {
            return Self::Invalid(format!(
                "webhook-timestamp is {off} s away from the receiver's clock (at most {} s)",
                TOLERANCE.as_secs()
            ));
        }
        let signatures = header("webhook-signature");
        let candidates: Vec<Vec<u8>> = signatures
            .split_ascii_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .collect();
        if candidates.is_empty() {
            return Self::Invalid("no v1 signature in webhook-signature".to_owned());
        }
        let expected = secret.sign(&id, &timestamp, body);
        let matched = candidates.iter().fold(Choice::from(0), |found, candidate| {
            found | expected.as_slice().ct_eq(candidate.as_slice())
        });
        if bool::from(matched) {
            Self::Valid
        } else {
            Self::Invalid("no signature matches the receiver's secret".to_owned())
        }
    }

    fn as_str(&self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid(_) => "invalid",
            Self::Unchecked => "unchecked",
        }
    }
}

/// One delivery received.
#[derive(Debug)]
struct Delivery {
    id: u64,
    receiver: String,
    at: String,
    headers: Map<String, Value>,
    body: String,
    /// The size of the body received, when `body` holds only its beginning.
    truncated_from: Option<usize>,
    signature: Signature,
}

impl Delivery {
    fn to_json(&self) -> Value {
        let mut entry = json!({
            "id": self.id,
            "at": self.at,
            "headers": self.headers,
            "body": self.body,
            "signature": self.signature.as_str(),
        });
        if let Signature::Invalid(why) = &self.signature {
            entry["signatureError"] = json!(why);
        }
        if let Some(size) = self.truncated_from {
            entry["bodyTruncated"] = json!(true);
            entry["bodySize"] = json!(size);
        }
        entry
    }
}

impl Weighed for Delivery {
    fn weight(&self) -> usize {
        DELIVERY_OVERHEAD
            + self.receiver.len()
            + self.at.len()
            + headers_weight(&self.headers)
            + self.body.len()
    }
}

/// The receivers: their secrets, and the deliveries they received.
#[derive(Debug)]
pub(crate) struct Receivers {
    secrets: HashMap<String, Arc<WebhookSecret>>,
    deliveries: BoundedLog<Delivery>,
    last_id: u64,
}

impl Default for Receivers {
    fn default() -> Self {
        Self::with_bounds(MAX_RECORDED, MAX_RECORDED_BYTES)
    }
}

impl Receivers {
    fn with_bounds(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            secrets: HashMap::new(),
            deliveries: BoundedLog::new(max_entries, max_bytes),
            last_id: 0,
        }
    }

    /// Registers the secret `name` checks signatures with (`None`: it stops checking).
    pub fn set_secret(&mut self, name: &str, secret: Option<WebhookSecret>) {
        match secret {
            Some(secret) => self.secrets.insert(name.to_owned(), Arc::new(secret)),
            None => self.secrets.remove(name),
        };
    }

    /// The secret of `name`, to check a delivery with outside the lock.
    pub fn secret(&self, name: &str) -> Option<Arc<WebhookSecret>> {
        self.secrets.get(name).cloned()
    }

    /// Records a delivery to `name` received `at`, whose signature check found `signature`.
    pub fn record(
        &mut self,
        name: &str,
        headers: &HeaderMap,
        body: &[u8],
        signature: Signature,
        at: DateTime<Utc>,
    ) {
        self.last_id += 1;
        let (text, truncated_from) = text_prefix(body);
        self.deliveries.push(Delivery {
            id: self.last_id,
            receiver: name.to_owned(),
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            headers: recorded_headers(headers),
            body: text,
            truncated_from,
            signature,
        });
    }

    /// The deliveries `name` received, oldest first.
    pub fn deliveries(&self, name: &str) -> Vec<Value> {
        self.deliveries
            .iter()
            .filter(|d| d.receiver == name)
            .map(Delivery::to_json)
            .collect()
    }

    /// Forgets the deliveries `name` received (its secret stays).
    pub fn clear(&mut self, name: &str) {
        self.deliveries.retain(|d| d.receiver != name);
    }

    /// Forgets every delivery (the secrets stay).
    pub fn clear_all(&mut self) {
        self.deliveries.clear();
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn signed(secret: &str, id: &str, timestamp: i64, body: &str) -> HeaderMap {
        let key = WebhookSecret::parse(secret).unwrap();
        let signature = STANDARD.encode(key.sign(id, &timestamp.to_string(), body.as_bytes()));
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(&format!("v1,{signature}")).unwrap(),
        );
        headers
    }

    fn check(headers: &HeaderMap, body: &str, now: DateTime<Utc>) -> Signature {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        Signature::check(Some(&secret), headers, body.as_bytes(), now)
    }

    #[test]
    fn the_standard_webhooks_example_signature_is_valid() {
        // The example of the Standard Webhooks specification.
        let mut headers = HeaderMap::new();
        headers.insert(
            "webhook-id",
            HeaderValue::from_static("msg_p5jXN8AQM9LWM0D4loKWxJek"),
        );
        headers.insert("webhook-timestamp", HeaderValue::from_static("1614265330"));
        headers.insert(
            "webhook-signature",
            HeaderValue::from_static("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        );
        let body = r#"{"test": 2432232314}"#;
        let at = DateTime::from_timestamp(1_614_265_330, 0).unwrap();
        assert_eq!(check(&headers, body, at), Signature::Valid);
    }

    #[test]
    fn timestamps_beyond_the_tolerance_are_invalid_on_either_side() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t = now.timestamp();
        for (at, valid) in [
            (t - 300, true),
            (t + 300, true),
            (t - 301, false),
            (t + 301, false),
        ] {
            let headers = signed(SECRET, "msg_1", at, "{}");
            let found = check(&headers, "{}", now);
            assert_eq!(found == Signature::Valid, valid, "{at}: {found:?}");
        }
        let mut headers = signed(SECRET, "msg_1", t, "{}");
        headers.insert("webhook-timestamp", HeaderValue::from_static("soon"));
        assert!(matches!(check(&headers, "{}", now), Signature::Invalid(_)));
    }

    #[test]
    fn missing_headers_and_other_versions_are_invalid() {
        let now = Utc::now();
        let headers = signed(SECRET, "msg_1", now.timestamp(), "{}");
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let mut without = headers.clone();
            without.remove(name);
            assert!(
                matches!(check(&without, "{}", now), Signature::Invalid(_)),
                "{name}"
            );
        }
        let mut v2 = headers.clone();
        let value = v2["webhook-signature"]
            .to_str()
            .unwrap()
            .replace("v1,", "v2,");
        v2.insert("webhook-signature", HeaderValue::from_str(&value).unwrap());
        assert!(matches!(check(&v2, "{}", now), Signature::Invalid(_)));
    }

    #[test]
    fn secrets_need_the_prefix_and_a_base64_key() {
        assert!(WebhookSecret::parse(SECRET).is_ok());
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            ReceiverSecretError::Prefix
        );
        for bad in ["whsec_", "whsec_not base64!", "whsec_====="] {
            assert_eq!(
                WebhookSecret::parse(bad).unwrap_err(),
                ReceiverSecretError::Key,
                "{bad}"
            );
        }
        let secret = WebhookSecret::parse(SECRET).unwrap();
        assert!(!format!("{secret:?}").contains("MfKQ"));
    }

    #[test]
    fn deliveries_are_bounded_for_all_receivers_together_and_cleared_per_receiver() {
        let mut receivers = Receivers::with_bounds(3, usize::MAX);
        for (i, name) in ["a", "b", "a", "b"].into_iter().enumerate() {
            receivers.record(
                name,
                &HeaderMap::new(),
                format!("{i}").as_bytes(),
                Signature::Unchecked,
                Utc::now(),
            );
        }
        let bodies = |r: &Receivers, name| -> Vec<Value> {
            r.deliveries(name)
                .iter()
                .map(|d| d["body"].clone())
                .collect()
        };
        assert_eq!(bodies(&receivers, "a"), [json!("2")]);
        assert_eq!(bodies(&receivers, "b"), [json!("1"), json!("3")]);
        receivers.clear("b");
        assert!(receivers.deliveries("b").is_empty());
        assert_eq!(receivers.deliveries("a").len(), 1);
        assert_eq!(receivers.deliveries("a")[0]["id"], 3);
    }
}
