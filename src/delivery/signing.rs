//! Standard Webhooks signing: the secrets (`whsec_` + base64 of the key), the `webhook-id` of a
//! delivery and the `webhook-signature` header.
//!
//! The signed content is `<webhook-id>.<webhook-timestamp>.<body>` (the body's exact bytes);
//! the signature is `v1,<base64 HMAC-SHA256(key, content)>`. While a rotated-out secret still
//! signs, the header carries both signatures, space-separated (new first), so a consumer that
//! holds either key verifies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a secret made by [`generate_secret`].
const GENERATED_KEY_BYTES: usize = 32;

/// A signing key: the bytes of `whsec_<base64 key>` (never shown, not even in `Debug`).
#[derive(Debug, Clone)]
pub struct SigningKey(SecretSlice<u8>);

impl SigningKey {
    /// Reads `whsec_<base64 key>`; `None` when it is not one.
    pub fn parse(secret: &SecretString) -> Option<Self> {
        let key = STANDARD
            .decode(secret.expose_secret().strip_prefix(SECRET_PREFIX)?)
            .ok()?;
        (!key.is_empty()).then(|| Self(SecretSlice::from(key)))
    }

    /// `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` value for `keys` (the current key first): one `v1,` entry per key,
/// space-separated.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| key.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `webhook-id` of message `message_id` to destination `destination_id`: the same for
/// every attempt and every replay, so a consumer recognises a repeat.
pub fn webhook_id(message_id: &str, destination_id: &str) -> String {
    format!("msg_{message_id}_{destination_id}")
}

/// A fresh secret: `whsec_` + base64 of 32 bytes from the OS-seeded CSPRNG.
pub fn generate_secret() -> SecretString {
    let mut key = [0u8; GENERATED_KEY_BYTES];
    rand::rng().fill_bytes(&mut key);
    let secret = SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)));
    key.fill(0);
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key = SigningKey::parse(&SecretString::from(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ))
        .unwrap();
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_both_keys_new_first() {
        let new = SigningKey::parse(&generate_secret()).unwrap();
        let old = SigningKey::parse(&generate_secret()).unwrap();
        let header = signature_header(&[new.clone(), old.clone()], "msg_1", 10, b"{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(
            parts,
            [new.sign("msg_1", 10, b"{}"), old.sign("msg_1", 10, b"{}")]
        );
    }

    #[test]
    fn secrets_are_whsec_base64_and_parse_back() {
        let secret = generate_secret();
        assert!(secret.expose_secret().starts_with("whsec_"));
        assert!(SigningKey::parse(&secret).is_some());
        assert!(SigningKey::parse(&SecretString::from("nope")).is_none());
        assert!(SigningKey::parse(&SecretString::from("whsec_***")).is_none());
        assert_ne!(
            generate_secret().expose_secret(),
            generate_secret().expose_secret()
        );
    }
}
