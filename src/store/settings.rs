//! Small named values the gateway keeps for itself: random keys it makes once and then reuses
//! (e.g. the key of the fingerprint of the credential it publishes into Genesys), and small
//! records (JSON text) of what it did elsewhere. Table `gateway_settings`.
//!
//! Nothing here is ever shown by the API. A key is made at random the first time it is asked
//! for and kept: every replica on one database gets the same key (an insert that loses a race
//! keeps the winner's value).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use secrecy::SecretBox;
use secrecy::zeroize::{Zeroize as _, Zeroizing};

use super::{Store, StoreError, with_pool};

/// Length of a key made by [`Store::get_or_create_secret`].
pub const SECRET_LEN: usize = 32;

/// A key made by [`Store::get_or_create_secret`].
pub type SecretKey = SecretBox<[u8; SECRET_LEN]>;

/// The value of `name`, if any.
const SELECT: &str = "SELECT value FROM gateway_settings WHERE name = $1";
/// Keeps an existing value (the first writer wins).
const INSERT_IF_ABSENT: &str = "INSERT INTO gateway_settings (name, value, updated_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING";
/// Writes or replaces the value.
const UPSERT: &str = "INSERT INTO gateway_settings (name, value, updated_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms";

/// Prefix of the names of keys, so that a key and a record never share a name.
const SECRET_PREFIX: &str = "secret:";

impl Store {
    /// The 32-byte random key named `name`: made (from the OS-seeded CSPRNG) and stored the first
    /// time it is asked for, the stored one afterwards — also when several replicas ask at the
    /// same moment.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the store fails, or when the stored value is not a key of
    /// `SECRET_LEN` bytes (it was altered).
    pub async fn get_or_create_secret(&self, name: &str) -> Result<SecretKey, StoreError> {
        let name = format!("{SECRET_PREFIX}{name}");
        let mut fresh = [0u8; SECRET_LEN];
        rand::rng().fill_bytes(&mut fresh);
        let encoded = Zeroizing::new(STANDARD.encode(fresh));
        fresh.zeroize();
        let now = chrono::Utc::now().timestamp_millis();
        let stored: String = with_pool!(
            self,
            write | pool | {
                sqlx::query(INSERT_IF_ABSENT)
                    .bind(&name)
                    .bind(encoded.as_str())
                    .bind(now)
                    .execute(pool)
                    .await?;
                sqlx::query_scalar(SELECT)
                    .bind(&name)
                    .fetch_one(pool)
                    .await?
            }
        );
        let stored = Zeroizing::new(stored);
        let decoded = Zeroizing::new(STANDARD.decode(stored.as_bytes()).unwrap_or_default());
        if decoded.len() != SECRET_LEN {
            return Err(StoreError::Database(sqlx::Error::Decode(
                format!("the stored key `{name}` is not {SECRET_LEN} bytes of base64").into(),
            )));
        }
        Ok(SecretBox::init_with_mut(|key: &mut [u8; SECRET_LEN]| {
            key.copy_from_slice(&decoded);
        }))
    }

    /// The value stored under `name` with [`Store::put_setting`], if any.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the store fails.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(with_pool!(
            self,
            write | pool | {
                sqlx::query_scalar(SELECT)
                    .bind(name)
                    .fetch_optional(pool)
                    .await?
            }
        ))
    }

    /// Stores `value` under `name`, replacing what was there.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the store fails.
    pub async fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        with_pool!(
            self,
            write | pool | {
                sqlx::query(UPSERT)
                    .bind(name)
                    .bind(value)
                    .bind(now)
                    .execute(pool)
                    .await?;
            }
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};

    use super::*;

    async fn sqlite(dir: &std::path::Path) -> Store {
        Store::connect(&SecretString::from("sqlite://gateway.db"), dir)
            .await
            .expect("store")
    }

    #[tokio::test]
    async fn a_secret_is_made_once_and_kept_across_connections() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let a = store.get_or_create_secret("k").await.unwrap();
        let again = store.get_or_create_secret("k").await.unwrap();
        assert_eq!(a.expose_secret(), again.expose_secret());
        let other = store.get_or_create_secret("other").await.unwrap();
        assert_ne!(a.expose_secret(), other.expose_secret());
        assert_ne!(a.expose_secret(), &[0u8; SECRET_LEN]);
        // A key and a record of the same name do not collide.
        assert_eq!(store.setting("k").await.unwrap(), None);
        store.close().await;

        let reopened = sqlite(dir.path()).await;
        let kept = reopened.get_or_create_secret("k").await.unwrap();
        assert_eq!(a.expose_secret(), kept.expose_secret());
        reopened.close().await;
    }

    #[tokio::test]
    async fn concurrent_callers_get_the_same_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let (a, b) = tokio::join!(
            store.get_or_create_secret("k"),
            store.get_or_create_secret("k")
        );
        assert_eq!(a.unwrap().expose_secret(), b.unwrap().expose_secret());
        store.close().await;
    }

    #[tokio::test]
    async fn settings_are_written_replaced_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        assert_eq!(store.setting("a").await.unwrap(), None);
        store.put_setting("a", "{\"x\":1}").await.unwrap();
        assert_eq!(
            store.setting("a").await.unwrap().as_deref(),
            Some("{\"x\":1}")
        );
        store.put_setting("a", "2").await.unwrap();
        assert_eq!(store.setting("a").await.unwrap().as_deref(), Some("2"));
        store.close().await;
    }
}
