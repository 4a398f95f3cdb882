//! Delivery destinations (table `delivery_destinations`): delivery targets — declarative ones
//! written from the configuration, and those made through the admin API — and webhook
//! subscriptions. The store holds plain rows ([`DestinationRow`]); the configuration is JSON
//! text written and read by the delivery capability.
//!
//! The verification state lives here, so every replica sees the same one: `status`,
//! `status_reason` and `verification_id` (the verification whose outcome counts). A status
//! change is conditional on that id ([`Transaction::settle_verification`]) so that the outcome
//! of a superseded verification never overwrites a newer state.
//!
//! Deleting is a soft delete (`deleted_ms`): deliveries keep naming the row.

use secrecy::{ExposeSecret, SecretString};

use super::page::Cursor;
use super::{Page, PageRequest, Store, StoreError, Transaction, with_pool, with_tx};

/// The list name inside destination cursors.
const CURSOR_SCOPE: &str = "destinations";

const COLUMNS: &str = "id, kind, origin, name, config, config_hash, secret, previous_secret, \
     previous_secret_until_ms, status, status_reason, verification_id, created_ms, updated_ms";
const INSERT: &str = "INSERT INTO delivery_destinations (id, kind, origin, name, config, \
     config_hash, secret, previous_secret, previous_secret_until_ms, status, status_reason, \
     verification_id, created_ms, updated_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
const UPDATE: &str = "UPDATE delivery_destinations SET name = $2, config = $3, config_hash = $4, \
     secret = $5, previous_secret = $6, previous_secret_until_ms = $7, status = $8, \
     status_reason = $9, verification_id = $10, updated_ms = $11, deleted_ms = NULL \
     WHERE id = $1";
const SET_STATUS: &str = "UPDATE delivery_destinations SET status = $2, status_reason = $3, \
     verification_id = $4, updated_ms = $5 WHERE id = $1 AND deleted_ms IS NULL";
const SETTLE: &str = "UPDATE delivery_destinations SET status = $3, status_reason = $4, \
     updated_ms = $5 WHERE id = $1 AND verification_id = $2 AND deleted_ms IS NULL \
     AND status = 'PENDING_VERIFICATION'";
const DELETE: &str = "UPDATE delivery_destinations SET deleted_ms = $2, updated_ms = $2 \
     WHERE id = $1 AND deleted_ms IS NULL";

/// One destination (a row of `delivery_destinations`).
#[derive(Debug, Clone)]
pub struct DestinationRow {
    /// Its id (text; a UUID).
    pub id: String,
    /// `target` or `webhook`.
    pub kind: String,
    /// `config` (declarative) or `api`.
    pub origin: String,
    /// Unique among the live destinations of its kind.
    pub name: String,
    /// The configuration as JSON text (holds credentials: never shown as is).
    pub config: SecretString,
    /// Fingerprint of the configuration and the secret.
    pub config_hash: String,
    /// The signing secret (`whsec_...`).
    pub secret: SecretString,
    /// The secret before the last rotation, still signing until `previous_secret_until_ms`.
    pub previous_secret: Option<SecretString>,
    /// Until when the previous secret signs too, epoch milliseconds.
    pub previous_secret_until_ms: Option<i64>,
    /// `PENDING_VERIFICATION` | `VERIFIED` | `FAILED` | `DISABLED`.
    pub status: String,
    /// Why it is FAILED or DISABLED.
    pub status_reason: Option<String>,
    /// The verification message whose outcome counts.
    pub verification_id: Option<String>,
    /// Creation time, epoch milliseconds.
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
    String,
    String,
    Option<String>,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

fn from_row(row: Row) -> DestinationRow {
    let (
        id,
        kind,
        origin,
        name,
        config,
        config_hash,
        secret,
        previous_secret,
        previous_secret_until_ms,
        status,
        status_reason,
        verification_id,
        created_ms,
        updated_ms,
    ) = row;
    DestinationRow {
        id,
        kind,
        origin,
        name,
        config: SecretString::from(config),
        config_hash,
        secret: SecretString::from(secret),
        previous_secret: previous_secret.map(SecretString::from),
        previous_secret_until_ms,
        status,
        status_reason,
        verification_id,
        created_ms,
        updated_ms,
    }
}

impl Transaction {
    /// Inserts a destination.
    ///
    /// # Errors
    /// [`StoreError::Database`]; a unique violation when a live destination of its kind has
    /// the name (or the id exists).
    pub async fn insert_destination(&mut self, row: &DestinationRow) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::query(INSERT)
                .bind(&row.id)
                .bind(&row.kind)
                .bind(&row.origin)
                .bind(&row.name)
                .bind(row.config.expose_secret())
                .bind(&row.config_hash)
                .bind(row.secret.expose_secret())
                .bind(row.previous_secret.as_ref().map(|s| s.expose_secret()))
                .bind(row.previous_secret_until_ms)
                .bind(&row.status)
                .bind(row.status_reason.as_deref())
                .bind(row.verification_id.as_deref())
                .bind(row.created_ms)
                .bind(row.updated_ms)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Writes a destination's new state (every column but id, kind, origin and creation
    /// time); a deleted row comes back to life.
    ///
    /// # Errors
    /// [`StoreError::Database`]; a unique violation when the new name is taken.
    pub async fn update_destination(&mut self, row: &DestinationRow) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::query(UPDATE)
                .bind(&row.id)
                .bind(&row.name)
                .bind(row.config.expose_secret())
                .bind(&row.config_hash)
                .bind(row.secret.expose_secret())
                .bind(row.previous_secret.as_ref().map(|s| s.expose_secret()))
                .bind(row.previous_secret_until_ms)
                .bind(&row.status)
                .bind(row.status_reason.as_deref())
                .bind(row.verification_id.as_deref())
                .bind(row.updated_ms)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// The live destination `id`, read inside this transaction (on PostgreSQL locked until it
    /// ends, `FOR UPDATE`; on SQLite the transaction holds the writer already).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn destination_for_update(
        &mut self,
        id: &str,
    ) -> Result<Option<DestinationRow>, StoreError> {
        let row: Option<Row> = match &mut self.inner {
            super::TransactionInner::Sqlite(tx) => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM delivery_destinations WHERE id = $1 AND deleted_ms IS NULL"
                ))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
            }
            super::TransactionInner::Postgres(tx) => {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM delivery_destinations WHERE id = $1 AND deleted_ms IS NULL FOR UPDATE"
                ))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
            }
        };
        Ok(row.map(from_row))
    }

    /// Sets a live destination's status, reason and current verification; whether it exists.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn set_destination_status(
        &mut self,
        id: &str,
        status: &str,
        reason: Option<&str>,
        verification_id: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = with_tx!(self, |conn| {
            sqlx::query(SET_STATUS)
                .bind(id)
                .bind(status)
                .bind(reason)
                .bind(verification_id)
                .bind(now_ms)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Ends the verification `verification_id` of destination `id` with `status` (and a
    /// reason) — only if it is still the current one and the destination still waits for it;
    /// whether it did.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn settle_verification(
        &mut self,
        id: &str,
        verification_id: &str,
        status: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = with_tx!(self, |conn| {
            sqlx::query(SETTLE)
                .bind(id)
                .bind(verification_id)
                .bind(status)
                .bind(reason)
                .bind(now_ms)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Deletes (softly) the live destination `id`; whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn delete_destination(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = with_tx!(self, |conn| {
            sqlx::query(DELETE)
                .bind(id)
                .bind(now_ms)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }
}

impl Store {
    /// Every live destination, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn destinations(&self) -> Result<Vec<DestinationRow>, StoreError> {
        let rows: Vec<Row> = with_pool!(
            self,
            read | pool | {
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM delivery_destinations WHERE deleted_ms IS NULL \
                     ORDER BY created_ms, id"
                ))
                .fetch_all(pool)
                .await?
            }
        );
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// The live destination `id`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn destination(&self, id: &str) -> Result<Option<DestinationRow>, StoreError> {
        let row: Option<Row> = with_pool!(
            self,
            read | pool
                | {
                    sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM delivery_destinations WHERE id = $1 AND deleted_ms IS NULL"
                ))
                .bind(id)
                .fetch_optional(pool)
                .await?
                }
        );
        Ok(row.map(from_row))
    }

    /// Every destination of `kind` and `origin` (declarative targets: `target`, `config`),
    /// each with whether it is deleted (so that a target put back into the configuration gets
    /// its row, and its id, again).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn destinations_of_origin(
        &self,
        kind: &str,
        origin: &str,
    ) -> Result<Vec<(DestinationRow, bool)>, StoreError> {
        let mut all = Vec::new();
        for (condition, deleted) in [
            ("deleted_ms IS NULL", false),
            ("deleted_ms IS NOT NULL", true),
        ] {
            let sql = format!(
                "SELECT {COLUMNS} FROM delivery_destinations \
                 WHERE kind = $1 AND origin = $2 AND {condition}"
            );
            let rows: Vec<Row> = with_pool!(
                self,
                read | pool | {
                    sqlx::query_as(&sql)
                        .bind(kind)
                        .bind(origin)
                        .fetch_all(pool)
                        .await?
                }
            );
            all.extend(rows.into_iter().map(|row| (from_row(row), deleted)));
        }
        Ok(all)
    }

    /// The live destinations of `kind`, newest first, keyset-paginated.
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for a cursor this list did not hand out,
    /// [`StoreError::Database`].
    pub async fn list_destinations(
        &self,
        kind: &str,
        page: &PageRequest,
    ) -> Result<Page<DestinationRow>, StoreError> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(CURSOR_SCOPE, c))
            .transpose()?;
        let limit = page.effective_limit();
        let sql = if after.is_some() {
            format!(
                "SELECT {COLUMNS} FROM delivery_destinations WHERE deleted_ms IS NULL AND kind = $1 \
                 AND (created_ms < $2 OR (created_ms = $2 AND id < $3)) \
                 ORDER BY created_ms DESC, id DESC LIMIT $4"
            )
        } else {
            format!(
                "SELECT {COLUMNS} FROM delivery_destinations WHERE deleted_ms IS NULL AND kind = $1 \
                 ORDER BY created_ms DESC, id DESC LIMIT $2"
            )
        };
        let mut rows: Vec<Row> = with_pool!(
            self,
            read | pool | {
                let mut query = sqlx::query_as(&sql).bind(kind);
                if let Some(after) = &after {
                    query = query.bind(after.at_ms).bind(after.id.as_str());
                }
                query.bind(i64::from(limit) + 1).fetch_all(pool).await?
            }
        );
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|last| {
                Cursor {
                    at_ms: last.12,
                    id: last.0.clone(),
                }
                .encode(CURSOR_SCOPE)
            })
        } else {
            None
        };
        Ok(Page {
            entities: rows.into_iter().map(from_row).collect(),
            next_cursor,
        })
    }
}
