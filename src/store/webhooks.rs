//! Webhook subscriptions: table `webhook_subscriptions` and the counter row
//! `webhook_subscriptions` of `gateway_sequences` that every change bumps.
//!
//! The store holds plain rows ([`WebhookRow`]); what a subscription means (globs, URL rules,
//! secrets) belongs to the delivery capability. Signing secrets are kept as written (deliveries
//! are signed with them, so they cannot be hashed) and only ever handled as [`SecretString`].
//!
//! # Seeing other replicas' changes
//! Each replica keeps the subscriptions in memory to route events without a query.
//! [`Transaction::bump_webhooks_version`] increments the counter inside the transaction of every
//! change; a replica reads [`Store::webhooks_version`] (one indexed row) every few seconds and
//! reloads [`Store::all_webhooks`] when it moved.

use secrecy::{ExposeSecret, SecretString};

use super::page::Cursor;
use super::{Page, PageRequest, Store, StoreError, Transaction, TransactionInner};
use super::{with_pool, with_tx};

/// The list name inside webhook cursors.
const CURSOR_SCOPE: &str = "webhooks";

const COLUMNS: &str = "id, url, event_types, description, secret, previous_secret, \
     previous_expires_ms, created_ms, updated_ms";
const INSERT: &str = "INSERT INTO webhook_subscriptions (id, url, event_types, description, \
     secret, previous_secret, previous_expires_ms, created_ms, updated_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const DELETE: &str = "DELETE FROM webhook_subscriptions WHERE id = $1";
const UPDATE_SECRETS: &str = "UPDATE webhook_subscriptions SET secret = $2, previous_secret = $3, \
     previous_expires_ms = $4, updated_ms = $5 WHERE id = $1";
const BUMP: &str = "UPDATE gateway_sequences SET value = value + 1 \
     WHERE name = 'webhook_subscriptions' RETURNING value";
const VERSION: &str = "SELECT value FROM gateway_sequences WHERE name = 'webhook_subscriptions'";

/// One row of `webhook_subscriptions`.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    /// The subscription id (text).
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Event type globs, JSON array text.
    pub event_types: String,
    /// Free text of the operator's.
    pub description: String,
    /// The current signing secret (`whsec_...`).
    pub secret: SecretString,
    /// The secret replaced by the last rotation, while it still signs.
    pub previous_secret: Option<SecretString>,
    /// Until when `previous_secret` signs (epoch milliseconds, exclusive).
    pub previous_expires_ms: Option<i64>,
    /// Creation time, epoch milliseconds (lists are ordered by it, newest first).
    pub created_ms: i64,
    /// Last change, epoch milliseconds.
    pub updated_ms: i64,
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    i64,
    i64,
);

fn from_row(row: Row) -> WebhookRow {
    let (
        id,
        url,
        event_types,
        description,
        secret,
        previous_secret,
        previous_expires_ms,
        created_ms,
        updated_ms,
    ) = row;
    WebhookRow {
        id,
        url,
        event_types,
        description,
        secret: SecretString::from(secret),
        previous_secret: previous_secret.map(SecretString::from),
        previous_expires_ms,
        created_ms,
        updated_ms,
    }
}

fn select(condition: &str) -> String {
    format!("SELECT {COLUMNS} FROM webhook_subscriptions WHERE {condition}")
}

impl Transaction {
    /// Inserts a subscription.
    ///
    /// # Errors
    /// [`StoreError::Database`] (a unique violation when the id exists).
    pub async fn insert_webhook(&mut self, row: &WebhookRow) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::query(INSERT)
                .bind(&row.id)
                .bind(&row.url)
                .bind(&row.event_types)
                .bind(&row.description)
                .bind(row.secret.expose_secret())
                .bind(row.previous_secret.as_ref().map(|s| s.expose_secret()))
                .bind(row.previous_expires_ms)
                .bind(row.created_ms)
                .bind(row.updated_ms)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// The subscription `id`, locked until this transaction ends (PostgreSQL `FOR UPDATE`; on
    /// SQLite the transaction holds the writer already).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn webhook_for_update(&mut self, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        let row: Option<Row> = match &mut self.inner {
            TransactionInner::Sqlite(tx) => {
                sqlx::query_as(&select("id = $1"))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            TransactionInner::Postgres(tx) => {
                sqlx::query_as(&format!("{} FOR UPDATE", select("id = $1")))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
            }
        };
        Ok(row.map(from_row))
    }

    /// Writes a subscription's secrets (after a rotation).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn update_webhook_secrets(&mut self, row: &WebhookRow) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::query(UPDATE_SECRETS)
                .bind(&row.id)
                .bind(row.secret.expose_secret())
                .bind(row.previous_secret.as_ref().map(|s| s.expose_secret()))
                .bind(row.previous_expires_ms)
                .bind(row.updated_ms)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Deletes the subscription `id`; whether there was one.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn delete_webhook(&mut self, id: &str) -> Result<bool, StoreError> {
        let affected = with_tx!(self, |conn| {
            sqlx::query(DELETE)
                .bind(id)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(affected > 0)
    }

    /// Increments the subscriptions' change counter (see the module docs); its new value.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn bump_webhooks_version(&mut self) -> Result<i64, StoreError> {
        Ok(with_tx!(self, |conn| {
            sqlx::query_scalar(BUMP).fetch_one(conn).await?
        }))
    }
}

impl Store {
    /// The subscription `id`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        let row: Option<Row> = with_pool!(
            self,
            read | pool | {
                sqlx::query_as(&select("id = $1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?
            }
        );
        Ok(row.map(from_row))
    }

    /// Subscriptions, newest first, keyset-paginated on `(created, id)`.
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for a cursor this list did not hand out,
    /// [`StoreError::Database`].
    pub async fn list_webhooks(&self, page: &PageRequest) -> Result<Page<WebhookRow>, StoreError> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(CURSOR_SCOPE, c))
            .transpose()?;
        let limit = page.effective_limit();
        let rows: Vec<Row> = with_pool!(
            self,
            read | pool | {
                match &after {
                    Some(after) => {
                        sqlx::query_as(&format!(
                            "{} ORDER BY created_ms DESC, id DESC LIMIT $3",
                            select("created_ms < $1 OR (created_ms = $1 AND id < $2)")
                        ))
                        .bind(after.at_ms)
                        .bind(after.id.clone())
                        .bind(i64::from(limit) + 1)
                        .fetch_all(pool)
                        .await?
                    }
                    None => {
                        sqlx::query_as(&format!(
                            "{} ORDER BY created_ms DESC, id DESC LIMIT $1",
                            select("1 = 1")
                        ))
                        .bind(i64::from(limit) + 1)
                        .fetch_all(pool)
                        .await?
                    }
                }
            }
        );
        let mut entities: Vec<WebhookRow> = rows.into_iter().map(from_row).collect();
        let next_cursor = if entities.len() > limit as usize {
            entities.truncate(limit as usize);
            entities.last().map(|last| {
                Cursor {
                    at_ms: last.created_ms,
                    id: last.id.clone(),
                }
                .encode(CURSOR_SCOPE)
            })
        } else {
            None
        };
        Ok(Page {
            entities,
            next_cursor,
        })
    }

    /// Every subscription with the change counter read just before them (in one read
    /// transaction): a change committed after the counter was read moves it past the value
    /// returned, so the caller reloads once more rather than missing it.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn all_webhooks(&self) -> Result<(i64, Vec<WebhookRow>), StoreError> {
        let (version, rows): (i64, Vec<Row>) = with_pool!(
            self,
            read | pool | {
                let mut tx = pool.begin().await?;
                let version: i64 = sqlx::query_scalar(VERSION).fetch_one(&mut *tx).await?;
                let rows: Vec<Row> = sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM webhook_subscriptions ORDER BY created_ms, id"
                ))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                (version, rows)
            }
        );
        Ok((version, rows.into_iter().map(from_row).collect()))
    }

    /// The subscriptions' change counter (see the module docs).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn webhooks_version(&self) -> Result<i64, StoreError> {
        let version: i64 = with_pool!(
            self,
            read | pool | sqlx::query_scalar(VERSION).fetch_one(pool).await?
        );
        Ok(version)
    }
}
