//! Idempotency of ingested events: the key that names an event, and the fingerprint that tells
//! whether a repeat carries the same content.
//!
//! # The key
//! - A single-event request may name its event with an `Idempotency-Key` header
//!   ([`IdempotencyKey::from_headers`]): 1 to [`MAX_KEY_LEN`] visible ASCII characters (`!` to
//!   `~`, no spaces), sent once. A batch may not carry the header.
//! - Otherwise each event's key is derived ([`IdempotencyKey::derive`]): the lowercase hex
//!   SHA-256 of `iss + ":" + transaction_id`, `iss` being the verified token's issuer claim.
//!
//! A header key is the sender's own name and does not include the issuer, so whoever stores keys
//! should scope them by issuer (two legacy systems may both send `order-1`).
//!
//! # The fingerprint
//! "Same content" means the parsed JSON is equal with object key order ignored and numbers
//! compared by their text (`1.0` ≠ `1`, `1e2` ≠ `100`); strings compare by their characters, so
//! `"\u0041"` equals `"A"`. [`Fingerprint`] is the SHA-256 of the canonical form that makes those
//! equal texts byte-equal (see [`canonical_form`](super::canonical_form)).

use std::fmt;

use sha2::{Digest, Sha256};

use super::IngestError;

/// The request header naming a single event.
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// Longest `Idempotency-Key` header value accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The key under which an event is accepted once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// A key as a client sends it in the `Idempotency-Key` header.
    ///
    /// # Errors
    /// [`IngestError::InvalidKey`] when `value` is empty, longer than [`MAX_KEY_LEN`] or holds a
    /// character outside visible ASCII (`!` to `~`).
    pub fn parse(value: &str) -> Result<Self, IngestError> {
        if value.is_empty() {
            return Err(IngestError::InvalidKey("it is empty"));
        }
        if value.len() > MAX_KEY_LEN {
            return Err(IngestError::InvalidKey("it is longer than 255 characters"));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IngestError::InvalidKey(
                "it may only hold visible ASCII characters (no spaces)",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The `Idempotency-Key` header of a request, if it has one.
    ///
    /// # Errors
    /// [`IngestError::InvalidKey`] when the header is sent more than once or its value breaks
    /// the rules of [`IdempotencyKey::parse`].
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Option<Self>, IngestError> {
        let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(IngestError::InvalidKey("it is sent more than once"));
        }
        let text = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            IngestError::InvalidKey("it may only hold visible ASCII characters (no spaces)")
        })?;
        Self::parse(text).map(Some)
    }

    /// The key of an event that came without a header: the lowercase hex SHA-256 of
    /// `iss:transaction_id`.
    pub fn derive(iss: &str, transaction_id: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(iss.as_bytes());
        hash.update(b":");
        hash.update(transaction_id.as_bytes());
        Self(format!("{:x}", hash.finalize()))
    }

    /// The key as text (what the answer shows as `idempotencyKey`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of an event's canonical form: equal for events with the same content.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// A fingerprint from its 32 bytes (as a store gives them back).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes (what a store keeps).
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        format!("{self}")
    }
}

impl From<[u8; 32]> for Fingerprint {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    #[test]
    fn derived_keys_are_sha256_of_issuer_and_transaction() {
        let key = IdempotencyKey::derive("legacy-ordering", "TX-1");
        // printf 'legacy-ordering:TX-1' | sha256sum
        assert_eq!(
            key.as_str(),
            "deab47951b32ba0c747ab75bec0566b7f0c2a70be35c057fb2188aa1ffa16e97"
        );
        assert_eq!(key.as_str().len(), 64);
        assert!(key.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(key, IdempotencyKey::derive("other-issuer", "TX-1"));
        assert_ne!(key, IdempotencyKey::derive("legacy-ordering", "TX-2"));
    }

    #[test]
    fn header_keys_are_bounded_and_visible_ascii() {
        assert_eq!(
            IdempotencyKey::parse("order-1").unwrap().as_str(),
            "order-1"
        );
        let longest = "k".repeat(MAX_KEY_LEN);
        assert!(IdempotencyKey::parse(&longest).is_ok());
        for bad in ["", "has space", "tab\t", "é", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert!(
                matches!(IdempotencyKey::parse(bad), Err(IngestError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_header_is_optional_single_and_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&headers), Ok(None));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("abc-123"));
        assert_eq!(
            IdempotencyKey::from_headers(&headers)
                .unwrap()
                .unwrap()
                .as_str(),
            "abc-123"
        );
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("other"));
        assert!(matches!(
            IdempotencyKey::from_headers(&headers),
            Err(IngestError::InvalidKey(_))
        ));
        let mut headers = HeaderMap::new();
        headers.insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(IdempotencyKey::from_headers(&headers).is_err());
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(""));
        assert!(IdempotencyKey::from_headers(&headers).is_err());
    }

    #[test]
    fn fingerprints_print_as_hex() {
        let f = Fingerprint::from_bytes([0xab; 32]);
        assert_eq!(f.to_hex(), "ab".repeat(32));
        assert_eq!(Fingerprint::from(*f.as_bytes()), f);
        assert!(format!("{f:?}").starts_with("Fingerprint(abab"));
    }
}
