//! Accepted ingest events: table `ingest_events`, one row per accepted event with what
//! idempotency and `GET /v1/events/{id}` need — its id, the issuer (`iss`) it came from, its
//! idempotency key, the fingerprint of its content, its type and times. The delivered body is
//! not stored here: the delivery engine keeps it in its message row of the same id.
//!
//! # Idempotency, enforced by the database
//! `(iss, idempotency_key)` is unique. [`Transaction::insert_event`] inserts with
//! `ON CONFLICT (iss, idempotency_key) DO NOTHING` and says whether the row went in; when it
//! did not, [`Transaction::event_by_key`] reads the row that holds the key. On PostgreSQL an
//! insert that meets a key another transaction has written but not yet committed waits for that
//! transaction: if it commits, the insert does nothing and the following read (a new snapshot
//! under `READ COMMITTED`) sees the winner's row; if it rolls back, the insert goes in. So two
//! replicas accepting the same event at the same moment end with one row, and the loser learns
//! the winner's id. On SQLite every writing transaction holds the one writer, so there is no
//! race at all. Both dialects run the same statement texts.

use super::{Store, StoreError, Transaction, with_pool, with_tx};

const INSERT: &str = "INSERT INTO ingest_events (id, iss, idempotency_key, fingerprint, \
     event_type, event_time_ms, accepted_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (iss, idempotency_key) DO NOTHING";
const BY_KEY: &str = "SELECT id, fingerprint FROM ingest_events \
     WHERE iss = $1 AND idempotency_key = $2";
const BY_ID: &str = "SELECT id, iss, idempotency_key, fingerprint, event_type, event_time_ms, \
     accepted_ms FROM ingest_events WHERE id = $1 AND iss = $2";

/// One row of `ingest_events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// The event id (a UUID, hyphenated lowercase text).
    pub id: String,
    /// The `iss` claim of the token it was accepted with.
    pub iss: String,
    /// Its idempotency key (unique per `iss`).
    pub idempotency_key: String,
    /// SHA-256 of its canonical content (32 bytes).
    pub fingerprint: Vec<u8>,
    /// Its `eventType`.
    pub event_type: String,
    /// Its `eventTime`, epoch milliseconds.
    pub event_time_ms: i64,
    /// When it was accepted, epoch milliseconds.
    pub accepted_ms: i64,
}

/// The row that already holds an idempotency key: its id and content fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The id of the event accepted under the key.
    pub id: String,
    /// Its fingerprint (32 bytes).
    pub fingerprint: Vec<u8>,
}

const SAVEPOINT: &str = "SAVEPOINT event_batch";
const RELEASE: &str = "RELEASE SAVEPOINT event_batch";
const DISCARD: &str = "ROLLBACK TO SAVEPOINT event_batch; RELEASE SAVEPOINT event_batch";

type Row = (String, String, String, Vec<u8>, String, i64, i64);

fn event_row(
    (id, iss, idempotency_key, fingerprint, event_type, event_time_ms, accepted_ms): Row,
) -> EventRow {
    EventRow {
        id,
        iss,
        idempotency_key,
        fingerprint,
        event_type,
        event_time_ms,
        accepted_ms,
    }
}

impl Transaction {
    /// Opens the savepoint of a batch of events (nested in the group committer's savepoint of
    /// the unit): a batch that turns out to conflict is discarded whole with
    /// [`Self::discard_event_batch`] while its unit still succeeds; [`Self::keep_event_batch`]
    /// keeps it.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the statement fails.
    pub async fn begin_event_batch(&mut self) -> Result<(), StoreError> {
        self.run(SAVEPOINT).await
    }

    /// Keeps what was written since [`Self::begin_event_batch`].
    ///
    /// # Errors
    /// [`StoreError::Database`] when the statement fails.
    pub async fn keep_event_batch(&mut self) -> Result<(), StoreError> {
        self.run(RELEASE).await
    }

    /// Discards what was written since [`Self::begin_event_batch`] (and closes the savepoint).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the statement fails.
    pub async fn discard_event_batch(&mut self) -> Result<(), StoreError> {
        self.run(DISCARD).await
    }

    async fn run(&mut self, sql: &'static str) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::Executor::execute(conn, sql).await?;
        });
        Ok(())
    }

    /// Inserts `row` unless its `(iss, idempotency_key)` is taken (see the module docs);
    /// answers whether it was inserted.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the statement fails (the transaction, or the unit's
    /// savepoint, must then be rolled back).
    pub async fn insert_event(&mut self, row: &EventRow) -> Result<bool, StoreError> {
        let done = with_tx!(self, |conn| {
            sqlx::query(INSERT)
                .bind(row.id.as_str())
                .bind(row.iss.as_str())
                .bind(row.idempotency_key.as_str())
                .bind(row.fingerprint.as_slice())
                .bind(row.event_type.as_str())
                .bind(row.event_time_ms)
                .bind(row.accepted_ms)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// The event that holds `idempotency_key` for `iss`, as this transaction sees it.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the statement fails.
    pub async fn event_by_key(
        &mut self,
        iss: &str,
        idempotency_key: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        let found: Option<(String, Vec<u8>)> = with_tx!(self, |conn| {
            sqlx::query_as(BY_KEY)
                .bind(iss)
                .bind(idempotency_key)
                .fetch_optional(conn)
                .await?
        });
        Ok(found.map(|(id, fingerprint)| StoredKey { id, fingerprint }))
    }
}

impl Store {
    /// The event `id` if it was accepted from `iss` (another issuer's event is `None`, as is an
    /// unknown id).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the store cannot be read.
    pub async fn event(&self, id: &str, iss: &str) -> Result<Option<EventRow>, StoreError> {
        let found: Option<Row> = with_pool!(
            self,
            read | pool | {
                sqlx::query_as(BY_ID)
                    .bind(id)
                    .bind(iss)
                    .fetch_optional(pool)
                    .await?
            }
        );
        Ok(found.map(event_row))
    }
}
