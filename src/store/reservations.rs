//! Callback reservations and their published changes: tables `callback_reservations`,
//! `callback_reservation_changes` and the counter row that numbers the changes; plus the two
//! PostgreSQL sessions the reservation sync needs beside the pools — the leader lock and the
//! change listener.
//!
//! The store holds plain rows ([`ReservationRow`], [`ChangeRow`]): the reservation itself is
//! JSON text (`body`) written and read by the callbacks capability; the columns beside it are
//! what the capacity check, the lists and the sync look rows up by.
//!
//! # Capacity, atomically
//! [`Transaction::lock_callback_queue`] serialises the capacity step of one queue: on
//! PostgreSQL a transaction-scoped advisory lock on the queue id (`pg_advisory_xact_lock`, held
//! until commit or rollback, across replicas), on SQLite nothing (every writing transaction
//! already holds the one writer, `BEGIN IMMEDIATE`). Under it,
//! [`Transaction::count_overlapping_live`] counts the live rows of the queue whose slot overlaps
//! (half-open intervals) and the caller inserts its row or gives up: two transactions can never
//! both see the last place free.
//!
//! # Changes in commit order
//! [`Transaction::next_change_seq`] increments the counter row `callback_reservation_changes`
//! of `gateway_sequences`. On PostgreSQL the row stays locked until the transaction ends, so a
//! second transaction taking a number waits for the first to commit: numbers are handed out in
//! commit order, and once change `n` is visible every change numbered below it that was
//! committed at all is visible too (a rolled-back number is a gap, never a late arrival). On
//! SQLite there is one writer. Take the number last, just before the change row is written and
//! the transaction commits, so that the lock is held briefly. [`Transaction::insert_change`]
//! writes the change row and, on PostgreSQL, `pg_notify`s the channel [`CHANGES_CHANNEL`] with
//! the number (delivered at commit, to every replica's [`ChangeListener`]).
//!
//! # Retention
//! [`Store::prune_changes`] deletes the oldest changes in `seq` order, a batch per
//! transaction, and raises the counter row `callback_reservation_changes_pruned` to the last
//! number deleted in the same transaction ([`Store::changes_pruned_through`]). A reader that
//! reads a page of changes and then that number knows whether anything after its cursor is
//! gone (migration 0007).
//!
//! # Leadership
//! [`Store::leader_session`] is a [`LeaderSession`]: on PostgreSQL a session-level advisory
//! lock (`pg_try_advisory_lock`) held on a dedicated connection — not a pooled one, which the
//! pool could recycle — with tight server-side TCP keepalives (5 s idle, then 2 s × 3 probes),
//! so that the lock of a replica whose host vanished is released by the server within about
//! 11 s; a process that dies while its host lives closes its socket and the lock goes at once.
//! The holder proves every few seconds that the session still answers
//! ([`LeaderSession::confirm`]) and stands down at once when it does not. On SQLite (one
//! replica) the session always leads.

use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};

use super::page::Cursor;
use super::{Backend, Page, PageRequest, Store, StoreError, Transaction, TransactionInner};
use super::{with_pool, with_tx};

/// The PostgreSQL `LISTEN`/`NOTIFY` channel of published reservation changes; the payload is
/// the change's `seq` in decimal.
pub const CHANGES_CHANNEL: &str = "gateway_reservation_changes";

/// The list name inside reservation cursors.
const CURSOR_SCOPE: &str = "reservations";
/// The first key of the advisory locks of the capacity step (the second is the queue id's
/// hash), so that they never collide with other advisory locks of the database.
const QUEUE_LOCK_NAMESPACE: i32 = 0x4342; // "CB"

const COLUMNS: &str = "id, queue_id, status, live, slot_start_ms, slot_end_ms, conversation_id, \
     version, seq, created_ms, updated_ms, body";

const LOCK_QUEUE_POSTGRES: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";
const COUNT_OVERLAPPING: &str = "SELECT COUNT(*) FROM callback_reservations \
     WHERE queue_id = $1 AND live = 1 AND slot_start_ms < $3 AND slot_end_ms > $2";
const INSERT: &str = "INSERT INTO callback_reservations (id, queue_id, status, live, \
     slot_start_ms, slot_end_ms, conversation_id, version, seq, created_ms, updated_ms, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
const UPDATE: &str = "UPDATE callback_reservations SET status = $2, live = $3, \
     conversation_id = $4, version = $5, seq = $6, updated_ms = $7, body = $8 WHERE id = $1";
const NEXT_SEQ: &str = "UPDATE gateway_sequences SET value = value + 1 \
     WHERE name = 'callback_reservation_changes' RETURNING value";
const INSERT_CHANGE: &str = "INSERT INTO callback_reservation_changes \
     (seq, reservation_id, event_type, at_ms, body) VALUES ($1, $2, $3, $4, $5)";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";
const CHANGES_AFTER: &str = "SELECT seq, reservation_id, event_type, at_ms, body \
     FROM callback_reservation_changes WHERE seq > $1 ORDER BY seq LIMIT $2";
const LAST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM callback_reservation_changes";
const PRUNED_THROUGH: &str = "SELECT COALESCE(MAX(value), 0) FROM gateway_sequences \
     WHERE name = 'callback_reservation_changes_pruned'";
const OLDEST_CHANGES: &str = "SELECT seq, at_ms FROM callback_reservation_changes \
     ORDER BY seq LIMIT $1";
const DELETE_CHANGES_THROUGH: &str = "DELETE FROM callback_reservation_changes WHERE seq <= $1";
const SET_PRUNED_THROUGH: &str = "UPDATE gateway_sequences SET value = $1 \
     WHERE name = 'callback_reservation_changes_pruned' AND value < $1";

/// Server-side keepalive of the leader session: a vanished peer is noticed after about
/// 5 + 3 × 2 = 11 s (the pools use 10 + 3 × 2 s).
const LEADER_SESSION_OPTIONS: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "5"),
    ("tcp_keepalives_interval", "2"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];
/// Longest wait for the leader session's statements (connect, lock, confirm).
const LEADER_STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);

/// One row of `callback_reservations`. `body` is the reservation as JSON text; the other
/// fields are its indexed facts, written by the caller consistently with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRow {
    /// The reservation id (text).
    pub id: String,
    /// The queue it holds a place in.
    pub queue_id: String,
    /// Its status name.
    pub status: String,
    /// Whether it holds a place in its slot (counted by the capacity check).
    pub live: bool,
    /// Slot start, epoch milliseconds.
    pub slot_start_ms: i64,
    /// Slot end (exclusive), epoch milliseconds.
    pub slot_end_ms: i64,
    /// The Genesys conversation, once known (unique).
    pub conversation_id: Option<String>,
    /// 0 while unpublished (lists and look-ups by conversation skip it), then 1, 2...
    pub version: i64,
    /// The `seq` of the change that produced this state (0 while unpublished).
    pub seq: i64,
    /// Creation time, epoch milliseconds (lists are ordered by it, newest first).
    pub created_ms: i64,
    /// Last change, epoch milliseconds.
    pub updated_ms: i64,
    /// The reservation, JSON text.
    pub body: String,
}

/// One published change (a row of `callback_reservation_changes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    /// Its number in commit order (from [`Transaction::next_change_seq`]).
    pub seq: i64,
    /// The reservation it changed.
    pub reservation_id: String,
    /// What kind of change (`callback.reservation.created`...).
    pub event_type: String,
    /// When, epoch milliseconds.
    pub at_ms: i64,
    /// The reservation after the change, JSON text.
    pub body: String,
}

/// Which reservations [`Store::list_reservations`] lists (published ones only).
#[derive(Debug, Clone, Default)]
pub struct ReservationFilter {
    /// Only this queue's.
    pub queue_id: Option<String>,
    /// Only those in this status.
    pub status: Option<String>,
}

type Row = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    String,
);

fn from_row(row: Row) -> ReservationRow {
    let (
        id,
        queue_id,
        status,
        live,
        slot_start_ms,
        slot_end_ms,
        conversation_id,
        version,
        seq,
        created_ms,
        updated_ms,
        body,
    ) = row;
    ReservationRow {
        id,
        queue_id,
        status,
        live: live != 0,
        slot_start_ms,
        slot_end_ms,
        conversation_id,
        version,
        seq,
        created_ms,
        updated_ms,
        body,
    }
}

fn select(condition: &str) -> String {
    format!("SELECT {COLUMNS} FROM callback_reservations WHERE {condition}")
}

/// The `SELECT` of [`Store::list_reservations`] for the filters in use; parameters are bound in
/// the order queue, status, cursor (created, id), limit.
fn list_sql(queue: bool, status: bool, after: bool) -> String {
    let mut sql = select("version > 0");
    let mut param = 0;
    let mut next = || {
        param += 1;
        param
    };
    if queue {
        sql.push_str(&format!(" AND queue_id = ${}", next()));
    }
    if status {
        sql.push_str(&format!(" AND status = ${}", next()));
    }
    if after {
        let (a, b) = (next(), next());
        sql.push_str(&format!(
            " AND (created_ms < ${a} OR (created_ms = ${a} AND id < ${b}))"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY created_ms DESC, id DESC LIMIT ${}",
        next()
    ));
    sql
}

impl Transaction {
    /// Serialises the capacity step of `queue_id` until this transaction ends (see the module
    /// docs); a no-op on SQLite.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn lock_callback_queue(&mut self, queue_id: &str) -> Result<(), StoreError> {
        if let TransactionInner::Postgres(tx) = &mut self.inner {
            sqlx::query(LOCK_QUEUE_POSTGRES)
                .bind(QUEUE_LOCK_NAMESPACE)
                .bind(queue_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// How many live reservations of `queue_id` overlap `[start_ms, end_ms)`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn count_overlapping_live(
        &mut self,
        queue_id: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<u64, StoreError> {
        let count: i64 = with_tx!(self, |conn| {
            sqlx::query_scalar(COUNT_OVERLAPPING)
                .bind(queue_id)
                .bind(start_ms)
                .bind(end_ms)
                .fetch_one(conn)
                .await?
        });
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Inserts a reservation.
    ///
    /// # Errors
    /// [`StoreError::Database`] (a unique violation when the id or the conversation exists).
    pub async fn insert_reservation(&mut self, row: &ReservationRow) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::query(INSERT)
                .bind(&row.id)
                .bind(&row.queue_id)
                .bind(&row.status)
                .bind(i64::from(row.live))
                .bind(row.slot_start_ms)
                .bind(row.slot_end_ms)
                .bind(row.conversation_id.as_deref())
                .bind(row.version)
                .bind(row.seq)
                .bind(row.created_ms)
                .bind(row.updated_ms)
                .bind(&row.body)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// The reservation `id`, locked until this transaction ends (PostgreSQL `FOR UPDATE`; on
    /// SQLite the transaction holds the writer already).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn reservation_for_update(
        &mut self,
        id: &str,
    ) -> Result<Option<ReservationRow>, StoreError> {
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

    /// Writes a reservation's new state (every column but its id, queue, slot and creation
    /// time, which never change).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn update_reservation(&mut self, row: &ReservationRow) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::query(UPDATE)
                .bind(&row.id)
                .bind(&row.status)
                .bind(i64::from(row.live))
                .bind(row.conversation_id.as_deref())
                .bind(row.version)
                .bind(row.seq)
                .bind(row.updated_ms)
                .bind(&row.body)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// The number of the next published change, in commit order (see the module docs: call it
    /// last in the transaction).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn next_change_seq(&mut self) -> Result<i64, StoreError> {
        Ok(with_tx!(self, |conn| {
            sqlx::query_scalar(NEXT_SEQ).fetch_one(conn).await?
        }))
    }

    /// Writes a published change; on PostgreSQL also notifies [`CHANGES_CHANNEL`] (at commit).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn insert_change(&mut self, change: &ChangeRow) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::query(INSERT_CHANGE)
                .bind(change.seq)
                .bind(&change.reservation_id)
                .bind(&change.event_type)
                .bind(change.at_ms)
                .bind(&change.body)
                .execute(&mut *conn)
                .await?;
        });
        if let TransactionInner::Postgres(tx) = &mut self.inner {
            sqlx::query(NOTIFY)
                .bind(CHANGES_CHANNEL)
                .bind(change.seq.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// The reservation `id`, published or not.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn reservation(&self, id: &str) -> Result<Option<ReservationRow>, StoreError> {
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

    /// The reservation whose Genesys conversation is `conversation_id`, if any.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn reservation_by_conversation(
        &self,
        conversation_id: &str,
    ) -> Result<Option<ReservationRow>, StoreError> {
        let row: Option<Row> = with_pool!(
            self,
            read | pool | {
                sqlx::query_as(&select("conversation_id = $1"))
                    .bind(conversation_id)
                    .fetch_optional(pool)
                    .await?
            }
        );
        Ok(row.map(from_row))
    }

    /// Published reservations, newest first, keyset-paginated on `(created, id)`.
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for a cursor this list did not hand out,
    /// [`StoreError::Database`].
    pub async fn list_reservations(
        &self,
        filter: &ReservationFilter,
        page: &PageRequest,
    ) -> Result<Page<ReservationRow>, StoreError> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(CURSOR_SCOPE, c))
            .transpose()?;
        let limit = page.effective_limit();
        let sql = list_sql(
            filter.queue_id.is_some(),
            filter.status.is_some(),
            after.is_some(),
        );
        let rows: Vec<Row> = with_pool!(
            self,
            read | pool | {
                let mut query = sqlx::query_as(&sql);
                if let Some(queue) = &filter.queue_id {
                    query = query.bind(queue);
                }
                if let Some(status) = &filter.status {
                    query = query.bind(status);
                }
                if let Some(after) = &after {
                    query = query.bind(after.at_ms).bind(after.id.clone());
                }
                query.bind(i64::from(limit) + 1).fetch_all(pool).await?
            }
        );
        let mut entities: Vec<ReservationRow> = rows.into_iter().map(from_row).collect();
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

    /// Live, published reservations that have a Genesys conversation, by id, after `after_id`
    /// (`""` for the first): what a reconciliation walks.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn live_reservations_after(
        &self,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<ReservationRow>, StoreError> {
        let rows: Vec<Row> = with_pool!(
            self,
            read | pool | {
                sqlx::query_as(&format!(
                    "{} ORDER BY id LIMIT $2",
                    select("live = 1 AND version > 0 AND conversation_id IS NOT NULL AND id > $1")
                ))
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
            }
        );
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Unpublished reservations (version 0) created before `before_ms`, oldest first: places
    /// held by a creating request that never finished.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn unpublished_reservations_before(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReservationRow>, StoreError> {
        let rows: Vec<Row> = with_pool!(
            self,
            read | pool | {
                sqlx::query_as(&format!(
                    "{} ORDER BY created_ms LIMIT $2",
                    select("version = 0 AND created_ms < $1")
                ))
                .bind(before_ms)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
            }
        );
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Published changes with a `seq` above `after`, in order, at most `limit`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn changes_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        let rows: Vec<(i64, String, String, i64, String)> = with_pool!(
            self,
            read | pool | {
                sqlx::query_as(CHANGES_AFTER)
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?
            }
        );
        Ok(rows
            .into_iter()
            .map(|(seq, reservation_id, event_type, at_ms, body)| ChangeRow {
                seq,
                reservation_id,
                event_type,
                at_ms,
                body,
            })
            .collect())
    }

    /// The highest committed change `seq` (0 when there is none).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn last_change_seq(&self) -> Result<i64, StoreError> {
        Ok(with_pool!(
            self,
            read | pool | sqlx::query_scalar(LAST_SEQ).fetch_one(pool).await?
        ))
    }

    /// The highest change `seq` deleted by [`Store::prune_changes`] (0 when none was): every
    /// change numbered above it that was committed is still stored.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn changes_pruned_through(&self) -> Result<i64, StoreError> {
        Ok(with_pool!(
            self,
            read | pool | sqlx::query_scalar(PRUNED_THROUGH).fetch_one(pool).await?
        ))
    }

    /// Deletes the oldest published changes, at most `batch` of them, in `seq` order: the
    /// leading run of those written before `before_ms` or numbered more than `keep_rows` below
    /// the last one. Raises [`Store::changes_pruned_through`] to the last number deleted, in
    /// the same transaction. Returns how many were deleted (fewer than `batch`: nothing older
    /// is left).
    ///
    /// # Errors
    /// [`StoreError::Database`]; nothing is deleted.
    pub async fn prune_changes(
        &self,
        before_ms: i64,
        keep_rows: u64,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let (last, oldest): (i64, Vec<(i64, i64)>) = with_tx!(tx, |conn| {
            let last: i64 = sqlx::query_scalar(LAST_SEQ).fetch_one(&mut *conn).await?;
            let oldest = sqlx::query_as(OLDEST_CHANGES)
                .bind(i64::from(batch.max(1)))
                .fetch_all(&mut *conn)
                .await?;
            (last, oldest)
        });
        let keep_from = last.saturating_sub(i64::try_from(keep_rows).unwrap_or(i64::MAX));
        let prunable = oldest
            .iter()
            .take_while(|(seq, at_ms)| *at_ms < before_ms || *seq <= keep_from)
            .count();
        let Some(&(through, _)) = prunable.checked_sub(1).and_then(|i| oldest.get(i)) else {
            return Ok(0);
        };
        with_tx!(tx, |conn| {
            sqlx::query(DELETE_CHANGES_THROUGH)
                .bind(through)
                .execute(&mut *conn)
                .await?;
            sqlx::query(SET_PRUNED_THROUGH)
                .bind(through)
                .execute(&mut *conn)
                .await?;
        });
        tx.commit().await?;
        Ok(prunable as u64)
    }

    /// A listener of [`CHANGES_CHANNEL`] on a connection of its own (PostgreSQL); `None` on
    /// SQLite, where every change is made by this process. Open it on the runtime that will
    /// read it.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the connection or the `LISTEN` fails.
    pub async fn change_listener(&self) -> Result<Option<ChangeListener>, StoreError> {
        let Backend::Postgres(db) = &self.backend else {
            return Ok(None);
        };
        let options = (*background_pool(db).connect_options()).clone();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(LEADER_STATEMENT_TIMEOUT)
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(Some(ChangeListener { listener, pool }))
    }

    /// The session through which this replica leads the work identified by `key` (see the
    /// module docs); it holds nothing until [`LeaderSession::try_acquire`] succeeds.
    pub fn leader_session(&self, key: i64) -> LeaderSession {
        let backend = match &self.backend {
            Backend::Sqlite(_) => LeaderBackend::Sole { held: false },
            Backend::Postgres(db) => LeaderBackend::Postgres {
                options: Box::new(
                    (*background_pool(db).connect_options())
                        .clone()
                        .options(LEADER_SESSION_OPTIONS),
                ),
                conn: None,
            },
        };
        LeaderSession { key, backend }
    }
}

fn background_pool(db: &super::PostgresDb) -> &sqlx::PgPool {
    db.pools.last().expect("the background pool")
}

/// Notifications of changes committed by any replica (PostgreSQL `LISTEN`).
pub struct ChangeListener {
    listener: PgListener,
    pool: sqlx::PgPool,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener").finish_non_exhaustive()
    }
}

impl ChangeListener {
    /// The `seq` of the next change notified; `Ok(None)` when the connection was lost
    /// (notifications sent meanwhile are lost: read the store again) — the next call
    /// reconnects.
    ///
    /// # Errors
    /// [`StoreError::Database`] when reconnecting fails.
    pub async fn next(&mut self) -> Result<Option<i64>, StoreError> {
        match self.listener.try_recv().await? {
            Some(notification) => Ok(Some(notification.payload().parse().unwrap_or(0))),
            None => Ok(None),
        }
    }

    /// Ends the listening session.
    pub async fn close(self) {
        drop(self.listener);
        self.pool.close().await;
    }
}

/// A replica's claim to lead one piece of work (see the module docs).
pub struct LeaderSession {
    key: i64,
    backend: LeaderBackend,
}

enum LeaderBackend {
    Sole {
        held: bool,
    },
    Postgres {
        options: Box<PgConnectOptions>,
        /// The session holding the lock, once acquired.
        conn: Option<PgConnection>,
    },
}

impl std::fmt::Debug for LeaderSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderSession")
            .field("key", &self.key)
            .field("held", &self.is_held())
            .finish()
    }
}

impl LeaderSession {
    /// Whether this session holds the lead.
    pub fn is_held(&self) -> bool {
        match &self.backend {
            LeaderBackend::Sole { held } => *held,
            LeaderBackend::Postgres { conn, .. } => conn.is_some(),
        }
    }

    /// Tries to take the lead: `Ok(true)` when this session holds it (also when it already
    /// did), `Ok(false)` when another replica does.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database cannot be reached (within 3 s).
    pub async fn try_acquire(&mut self) -> Result<bool, StoreError> {
        let key = self.key;
        match &mut self.backend {
            LeaderBackend::Sole { held } => {
                *held = true;
                Ok(true)
            }
            LeaderBackend::Postgres { conn: Some(_), .. } => Ok(true),
            LeaderBackend::Postgres { options, conn } => {
                let attempt = async {
                    let mut session = PgConnection::connect_with(options).await?;
                    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(key)
                        .fetch_one(&mut session)
                        .await?;
                    Ok::<_, sqlx::Error>((session, got))
                };
                let (session, got) = tokio::time::timeout(LEADER_STATEMENT_TIMEOUT, attempt)
                    .await
                    .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))??;
                if got {
                    *conn = Some(session);
                } else {
                    let _ = session.close().await;
                }
                Ok(got)
            }
        }
    }

    /// Proves that the lead is still held (the session answers within 3 s).
    ///
    /// # Errors
    /// [`StoreError::Database`] when it does not: the lead is lost (the session is dropped, so
    /// the server releases the lock if it still held it) and [`LeaderSession::is_held`] is false.
    pub async fn confirm(&mut self) -> Result<(), StoreError> {
        let LeaderBackend::Postgres { conn, .. } = &mut self.backend else {
            return Ok(());
        };
        let Some(session) = conn.as_mut() else {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        };
        let ping = tokio::time::timeout(LEADER_STATEMENT_TIMEOUT, session.ping()).await;
        match ping {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                *conn = None;
                Err(err.into())
            }
            Err(_) => {
                *conn = None;
                Err(StoreError::Database(sqlx::Error::PoolTimedOut))
            }
        }
    }

    /// Gives the lead up (closing the session releases the lock).
    pub async fn release(&mut self) {
        match &mut self.backend {
            LeaderBackend::Sole { held } => *held = false,
            LeaderBackend::Postgres { conn, .. } => {
                if let Some(session) = conn.take() {
                    let _ = tokio::time::timeout(LEADER_STATEMENT_TIMEOUT, session.close()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    async fn sqlite(dir: &std::path::Path) -> Store {
        Store::connect(&SecretString::from("sqlite://gateway.db"), dir)
            .await
            .expect("store")
    }

    fn row(id: &str, start: i64, end: i64) -> ReservationRow {
        ReservationRow {
            id: id.to_owned(),
            queue_id: "q".to_owned(),
            status: "pending".to_owned(),
            live: true,
            slot_start_ms: start,
            slot_end_ms: end,
            conversation_id: None,
            version: 0,
            seq: 0,
            created_ms: start,
            updated_ms: start,
            body: "{}".to_owned(),
        }
    }

    #[tokio::test]
    async fn overlapping_live_rows_are_counted_on_half_open_slots() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let mut tx = store.begin().await.unwrap();
        tx.lock_callback_queue("q").await.unwrap();
        tx.insert_reservation(&row("a", 100, 200)).await.unwrap();
        tx.insert_reservation(&row("b", 150, 250)).await.unwrap();
        let mut dead = row("c", 100, 200);
        dead.live = false;
        tx.insert_reservation(&dead).await.unwrap();
        assert_eq!(tx.count_overlapping_live("q", 100, 200).await.unwrap(), 2);
        assert_eq!(tx.count_overlapping_live("q", 200, 300).await.unwrap(), 1);
        assert_eq!(tx.count_overlapping_live("q", 250, 300).await.unwrap(), 0);
        assert_eq!(tx.count_overlapping_live("q", 0, 100).await.unwrap(), 0);
        assert_eq!(
            tx.count_overlapping_live("other", 100, 200).await.unwrap(),
            0
        );
        tx.commit().await.unwrap();
        store.close().await;
    }

    #[tokio::test]
    async fn changes_are_numbered_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        assert_eq!(store.last_change_seq().await.unwrap(), 0);
        let mut tx = store.begin().await.unwrap();
        let mut a = row("a", 1, 2);
        tx.insert_reservation(&a).await.unwrap();
        let seq = tx.next_change_seq().await.unwrap();
        assert_eq!(seq, 1);
        a.version = 1;
        a.seq = seq;
        a.status = "scheduled".to_owned();
        a.conversation_id = Some("conv".to_owned());
        tx.update_reservation(&a).await.unwrap();
        tx.insert_change(&ChangeRow {
            seq,
            reservation_id: "a".to_owned(),
            event_type: "created".to_owned(),
            at_ms: 5,
            body: "{\"v\":1}".to_owned(),
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        // A rolled-back number is a gap.
        let mut tx = store.begin().await.unwrap();
        assert_eq!(tx.next_change_seq().await.unwrap(), 2);
        tx.rollback().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let seq = tx.next_change_seq().await.unwrap();
        assert_eq!(
            seq, 2,
            "the rolled-back increment is gone with its transaction"
        );
        tx.insert_change(&ChangeRow {
            seq,
            reservation_id: "a".to_owned(),
            event_type: "updated".to_owned(),
            at_ms: 6,
            body: "{\"v\":2}".to_owned(),
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let changes = store.changes_after(0, 10).await.unwrap();
        assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(store.changes_after(1, 10).await.unwrap().len(), 1);
        assert_eq!(store.last_change_seq().await.unwrap(), 2);
        let found = store.reservation_by_conversation("conv").await.unwrap();
        assert_eq!(found.unwrap().version, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn lists_skip_unpublished_rows_and_page_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let mut tx = store.begin().await.unwrap();
        for i in 0..5 {
            let mut r = row(&format!("r{i}"), i, i + 1);
            r.version = 1;
            r.status = if i % 2 == 0 { "scheduled" } else { "failed" }.to_owned();
            tx.insert_reservation(&r).await.unwrap();
        }
        tx.insert_reservation(&row("pending", 9, 10)).await.unwrap();
        tx.commit().await.unwrap();
        let first = store
            .list_reservations(&ReservationFilter::default(), &PageRequest::first(3))
            .await
            .unwrap();
        let ids: Vec<_> = first.entities.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r4", "r3", "r2"]);
        let second = store
            .list_reservations(
                &ReservationFilter::default(),
                &PageRequest::after(3, first.next_cursor.unwrap()),
            )
            .await
            .unwrap();
        let ids: Vec<_> = second.entities.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r0"]);
        assert!(second.next_cursor.is_none());
        let failed = store
            .list_reservations(
                &ReservationFilter {
                    queue_id: Some("q".into()),
                    status: Some("failed".into()),
                },
                &PageRequest::default(),
            )
            .await
            .unwrap();
        assert_eq!(failed.entities.len(), 2);
        assert!(matches!(
            store
                .list_reservations(
                    &ReservationFilter::default(),
                    &PageRequest::after(3, "garbage")
                )
                .await,
            Err(StoreError::InvalidCursor)
        ));
        let stale = store
            .unpublished_reservations_before(100, 10)
            .await
            .unwrap();
        assert_eq!(stale.len(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn on_sqlite_the_one_replica_leads() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let mut lead = store.leader_session(1);
        assert!(!lead.is_held());
        assert!(lead.try_acquire().await.unwrap());
        lead.confirm().await.unwrap();
        assert!(lead.is_held());
        lead.release().await;
        assert!(!lead.is_held());
        assert!(store.change_listener().await.unwrap().is_none());
        store.close().await;
    }
}
