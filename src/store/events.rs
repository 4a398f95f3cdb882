//! Accepted ingest events: table `ingest_events`, one row per accepted event with what
//! idempotency and `GET /v1/events/{id}` need — its id, the issuer (`iss`) it came from, its
//! idempotency key, the fingerprint of its content, its type and times. The delivered body is
//! not stored here: the delivery engine keeps it in its message row of the same id.
//!
//! # Idempotency, enforced by the database
//! `(iss, idempotency_key)` is unique. [`Transaction::insert_events`] inserts with
//! `ON CONFLICT (iss, idempotency_key) DO NOTHING` and says which rows went in; for the others
//! [`Transaction::events_by_keys`] reads the rows that hold their keys. On PostgreSQL an
//! insert that meets a key another transaction has written but not yet committed waits for that
//! transaction: if it commits, the insert does nothing and the following read (a new snapshot
//! under `READ COMMITTED`) sees the winner's row; if it rolls back, the insert goes in. So two
//! replicas accepting the same event at the same moment end with one row, and the loser learns
//! the winner's id. On SQLite every writing transaction holds the one writer, so there is no
//! race at all. A batch is one multi-row statement on SQLite and one array per column on
//! PostgreSQL, with the same effect row by row.

use std::collections::{HashMap, HashSet};

use super::{
    POSTGRES_ROWS_PER_STATEMENT, Store, StoreError, Transaction, TransactionInner,
    sqlite_statements, with_pool, with_tx,
};

const INSERT_MANY_PREFIX: &str = "INSERT INTO ingest_events (id, iss, idempotency_key, \
     fingerprint, event_type, event_time_ms, accepted_ms) VALUES ";
const INSERT_MANY_ROW: &str = "(?, ?, ?, ?, ?, ?, ?)";
const INSERT_MANY_SUFFIX: &str = " ON CONFLICT (iss, idempotency_key) DO NOTHING RETURNING id";
/// Rows go in in array order (`ORDINALITY`), like SQLite's `VALUES`: of two rows with one key
/// in a batch, the first is the one inserted.
const INSERT_MANY_POSTGRES: &str = "INSERT INTO ingest_events (id, iss, idempotency_key, \
     fingerprint, event_type, event_time_ms, accepted_ms) \
     SELECT id, iss, k, f, t, e, a FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], \
     $5::text[], $6::bigint[], $7::bigint[]) WITH ORDINALITY AS u(id, iss, k, f, t, e, a, n) \
     ORDER BY n ON CONFLICT (iss, idempotency_key) DO NOTHING RETURNING id";
const BY_KEYS_PREFIX: &str = "SELECT idempotency_key, id, fingerprint FROM ingest_events \
     WHERE iss = ? AND idempotency_key IN (";
const BY_KEYS_POSTGRES: &str = "SELECT idempotency_key, id, fingerprint FROM ingest_events \
     WHERE iss = $1 AND idempotency_key = ANY($2)";
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

    /// Inserts `rows` (one statement per few hundred rows), each unless its
    /// `(iss, idempotency_key)` is taken, by an earlier row of `rows` too (see the module
    /// docs); answers the ids of the rows that went in.
    ///
    /// # Errors
    /// [`StoreError::Database`] when a statement fails (the transaction, or the unit's
    /// savepoint, must then be rolled back).
    pub async fn insert_events(
        &mut self,
        rows: &[EventRow],
    ) -> Result<HashSet<String>, StoreError> {
        let mut inserted = HashSet::with_capacity(rows.len());
        match &mut self.inner {
            TransactionInner::Sqlite(tx) => {
                for (chunk, sql) in sqlite_statements(
                    rows,
                    INSERT_MANY_PREFIX,
                    INSERT_MANY_ROW,
                    INSERT_MANY_SUFFIX,
                ) {
                    let mut query = sqlx::query_scalar(&sql);
                    for row in chunk {
                        query = query
                            .bind(row.id.as_str())
                            .bind(row.iss.as_str())
                            .bind(row.idempotency_key.as_str())
                            .bind(row.fingerprint.as_slice())
                            .bind(row.event_type.as_str())
                            .bind(row.event_time_ms)
                            .bind(row.accepted_ms);
                    }
                    let ids: Vec<String> = query.fetch_all(&mut **tx).await?;
                    inserted.extend(ids);
                }
            }
            TransactionInner::Postgres(tx) => {
                for chunk in rows.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                    let column = |f: fn(&EventRow) -> &str| chunk.iter().map(f).collect::<Vec<_>>();
                    let ids: Vec<String> = sqlx::query_scalar(INSERT_MANY_POSTGRES)
                        .bind(column(|r| r.id.as_str()))
                        .bind(column(|r| r.iss.as_str()))
                        .bind(column(|r| r.idempotency_key.as_str()))
                        .bind(
                            chunk
                                .iter()
                                .map(|r| r.fingerprint.as_slice())
                                .collect::<Vec<_>>(),
                        )
                        .bind(column(|r| r.event_type.as_str()))
                        .bind(chunk.iter().map(|r| r.event_time_ms).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|r| r.accepted_ms).collect::<Vec<_>>())
                        .fetch_all(&mut **tx)
                        .await?;
                    inserted.extend(ids);
                }
            }
        }
        Ok(inserted)
    }

    /// The events that hold `keys` for `iss`, as this transaction sees them, by key.
    ///
    /// # Errors
    /// [`StoreError::Database`] when a statement fails.
    pub async fn events_by_keys(
        &mut self,
        iss: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, StoredKey>, StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        let mut add = |rows: Vec<(String, String, Vec<u8>)>| {
            for (key, id, fingerprint) in rows {
                found.insert(key, StoredKey { id, fingerprint });
            }
        };
        match &mut self.inner {
            TransactionInner::Sqlite(tx) => {
                for (chunk, sql) in sqlite_statements(keys, BY_KEYS_PREFIX, "?", ")") {
                    let mut query = sqlx::query_as(&sql).bind(iss);
                    for key in chunk {
                        query = query.bind(*key);
                    }
                    add(query.fetch_all(&mut **tx).await?);
                }
            }
            TransactionInner::Postgres(tx) => {
                for chunk in keys.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                    let rows = sqlx::query_as(BY_KEYS_POSTGRES)
                        .bind(iss)
                        .bind(chunk)
                        .fetch_all(&mut **tx)
                        .await?;
                    add(rows);
                }
            }
        }
        Ok(found)
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
