//! The delivery outbox: tables `delivery_messages` (one row per message: the exact bytes sent)
//! and `deliveries` (one row per message × destination).
//!
//! # Claims are leases
//! [`Store::claim_deliveries`] moves due rows to `delivering` with a lease (`lease_until_ms`,
//! and a `lease_token` naming this claim) in one transaction: rows that are `pending` and due,
//! and rows still `delivering` whose lease expired (their worker died), of destinations that
//! may receive them (VERIFIED; a verification also while its destination is
//! PENDING_VERIFICATION), oldest first (`seq`, the acceptance order). On PostgreSQL the rows are
//! picked with `FOR UPDATE SKIP LOCKED`, so replicas claiming at the same moment take
//! different rows and never wait for each other; on SQLite the statement runs on the one
//! writer. Every later write of a claimed row ([`Transaction::finish_delivery`],
//! [`Store::renew_lease`], [`Store::release_lease`]) names the lease token, so a worker whose
//! lease was taken over writes nothing.
//!
//! A claim is a transaction of its own ([`Store::claim_deliveries`]) or part of a larger one
//! ([`Transaction::claim_deliveries`], then [`Store::claimed_deliveries`] after the commit):
//! the delivery engine writes its SQLite claims through the group committer, so that they
//! share the commit of the batch they join.
//!
//! The same statement texts run on both dialects, except the claim. SQLite claims with one
//! statement (the join with the destinations, ordered through the partial index
//! `deliveries_open`). PostgreSQL's planner, when its statistics of `deliveries` are missing or
//! stale (a burst into a new table before autovacuum analyses it, or a server that runs without
//! autovacuum), plans that join as a scan of every open row plus a sort, so that each claim
//! costs time in proportion to the backlog (measured: 28–49 ms at 111 000 open rows, against
//! 2–3 ms for the ordered scan). So on PostgreSQL the claim reads the due open rows alone — a
//! statement whose only plan is the ordered scan of `deliveries_open` that stops after a page —
//! page by page, keeps those of eligible destinations (read first: a handful of rows) until it
//! has enough or the due rows end, and moves them to `delivering` by `seq`: the rows it kept
//! that are still due are locked `FOR UPDATE SKIP LOCKED` in that statement, so that replicas
//! claiming at the same moment take disjoint rows. The claim's statements run with generic
//! plans (`plan_cache_mode`, for the claim only): planned for the actual first page
//! (`seq > 0`) without statistics, even the page query is a scan of every open row plus a sort
//! (24–30 ms at 111 000 open rows), while its generic plan is the ordered scan, with or without
//! statistics (1–2 ms).

use std::collections::{HashMap, HashSet};

use super::page::Cursor;
use super::{
    POSTGRES_ROWS_PER_STATEMENT, Page, PageRequest, Store, StoreError, Transaction,
    TransactionInner, sqlite_statements,
};
use super::{with_pool, with_tx};

/// The list name inside delivery cursors.
const CURSOR_SCOPE: &str = "deliveries";

const INSERT_MESSAGE: &str = "INSERT INTO delivery_messages (id, event_type, idempotency_key, \
     body, created_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING";
const INSERT_DELIVERY: &str = "INSERT INTO deliveries (id, message_id, destination_id, purpose, \
     status, attempts, next_at_ms, last_error, created_ms, updated_ms) \
     VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $6, $6)";
const INSERT_MESSAGES_PREFIX: &str = "INSERT INTO delivery_messages (id, event_type, \
     idempotency_key, body, created_ms) VALUES ";
const INSERT_MESSAGES_ROW: &str = "(?, ?, ?, ?, ?)";
const INSERT_MESSAGES_POSTGRES: &str = "INSERT INTO delivery_messages (id, event_type, \
     idempotency_key, body, created_ms) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[]) \
     ON CONFLICT (id) DO NOTHING";
const INSERT_DELIVERIES_PREFIX: &str = "INSERT INTO deliveries (id, message_id, destination_id, \
     purpose, status, attempts, next_at_ms, last_error, created_ms, updated_ms) VALUES ";
const INSERT_DELIVERIES_ROW: &str = "(?, ?, ?, ?, ?, 0, ?, ?, ?, ?)";
/// Rows go in in array order, so that `seq` (the acceptance order) follows it.
const INSERT_DELIVERIES_POSTGRES: &str = "INSERT INTO deliveries (id, message_id, \
     destination_id, purpose, status, attempts, next_at_ms, last_error, created_ms, updated_ms) \
     SELECT id, m, d, p, s, 0, t, e, t, t FROM UNNEST($1::text[], $2::text[], $3::text[], \
     $4::text[], $5::text[], $6::bigint[], $7::text[]) WITH ORDINALITY AS u(id, m, d, p, s, t, e, n) \
     ORDER BY n";
/// The condition of a due row of `deliveries d` — `pending` and due, or `delivering` with its
/// lease expired; `$1` now — written once for both claims.
macro_rules! due {
    () => {
        "d.status IN ('pending', 'delivering') \
         AND ((d.status = 'pending' AND d.next_at_ms <= $1) \
              OR (d.status = 'delivering' AND d.lease_until_ms < $1))"
    };
}

/// The rows a SQLite claim takes (see the module docs); `$1` now, `$2` the limit.
const CLAIMABLE: &str = concat!(
    "SELECT d.seq FROM deliveries d \
     JOIN delivery_destinations t ON t.id = d.destination_id WHERE ",
    due!(),
    " AND t.deleted_ms IS NULL \
       AND (t.status = 'VERIFIED' \
            OR (d.purpose = 'verification' AND t.status = 'PENDING_VERIFICATION')) \
     ORDER BY d.seq LIMIT $2"
);
const RENEW: &str = "UPDATE deliveries SET lease_until_ms = $3 \
     WHERE id = $1 AND lease_token = $2 AND status = 'delivering'";
const RELEASE: &str = "UPDATE deliveries SET status = 'pending', lease_token = NULL, \
     lease_until_ms = NULL, next_at_ms = $3 \
     WHERE id = $1 AND lease_token = $2 AND status = 'delivering'";
const FINISH: &str = "UPDATE deliveries SET status = $3, attempts = $4, next_at_ms = $5, \
     last_error = $6, delivered_ms = $7, updated_ms = $8, lease_token = NULL, \
     lease_until_ms = NULL WHERE id = $1 AND lease_token = $2 AND status = 'delivering'";
/// A batch of `delivered` outcomes of one claim (one lease token), before the ids; `attempts`
/// counts this attempt (the lease guarantees nobody else changed the row since its claim).
/// `{now}`, `{token}` stand for parameters: sqlx numbers SQLite's anonymous `?` on its own, so
/// a statement's parameters are all `?` or all `$N`. The ids are looked up in their unique
/// index (a row-value `IN` of pairs would scan the table on SQLite).
const FINISH_DELIVERED: &str = "UPDATE deliveries SET status = 'delivered', \
     attempts = attempts + 1, next_at_ms = {now}, last_error = NULL, delivered_ms = {now}, \
     updated_ms = {now}, lease_token = NULL, lease_until_ms = NULL \
     WHERE status = 'delivering' AND lease_token = {token} AND id ";
/// Found through `deliveries_open` (the open rows), not the destination's index (every
/// delivery the destination ever had): `destination_id || ''` keeps the planner off the
/// latter on both stores.
const KILL_OPEN: &str = "UPDATE deliveries SET status = 'dead', last_error = $2, updated_ms = $3, \
     lease_token = NULL, lease_until_ms = NULL \
     WHERE destination_id || '' = $1 AND status IN ('pending', 'delivering') \
       AND status = 'pending' AND purpose = $4";
const REPLAY_ONE: &str = "UPDATE deliveries SET status = 'pending', attempts = 0, next_at_ms = $2, \
     updated_ms = $2 WHERE id = $1 AND status = 'dead' AND purpose = 'event'";
const REPLAY_ALL: &str = "UPDATE deliveries SET status = 'pending', attempts = 0, next_at_ms = $2, \
     updated_ms = $2 WHERE destination_id = $1 AND status = 'dead' AND purpose = 'event'";
const QUEUE_DEPTH: &str = "SELECT COUNT(*) FROM deliveries \
     WHERE status IN ('pending', 'delivering') AND purpose = 'event'";
const OLDEST_DUE: &str = "SELECT MIN(d.next_at_ms) FROM deliveries d \
     JOIN delivery_destinations t ON t.id = d.destination_id \
     WHERE d.status IN ('pending', 'delivering') AND d.status = 'pending' \
       AND d.purpose = 'event' AND d.next_at_ms <= $1 AND t.status = 'VERIFIED'";
/// Open deliveries of destinations that can no longer receive them (a destination that failed
/// or was disabled or deleted on another replica while this one enqueued for it).
const STRANDED: &str = "SELECT d.id, t.status, t.deleted_ms FROM deliveries d \
     JOIN delivery_destinations t ON t.id = d.destination_id \
     WHERE d.status IN ('pending', 'delivering') AND d.status = 'pending' \
       AND (t.status IN ('FAILED', 'DISABLED') OR t.deleted_ms IS NOT NULL) LIMIT 1000";
const KILL_ONE: &str = "UPDATE deliveries SET status = 'dead', last_error = $2, updated_ms = $3 \
     WHERE id = $1 AND status = 'pending'";

/// A message to write once ([`Transaction::insert_message`]).
#[derive(Debug, Clone)]
pub struct MessageRow<'a> {
    /// The message id (text).
    pub id: &'a str,
    /// Its event type.
    pub event_type: &'a str,
    /// Sent as `Idempotency-Key`.
    pub idempotency_key: &'a str,
    /// The exact bytes sent.
    pub body: &'a [u8],
    /// Creation time, epoch milliseconds.
    pub created_ms: i64,
}

/// A delivery to write ([`Transaction::insert_delivery`]).
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    /// The delivery id (text).
    pub id: &'a str,
    /// Its message.
    pub message_id: &'a str,
    /// Its destination.
    pub destination_id: &'a str,
    /// `event` or `verification`.
    pub purpose: &'a str,
    /// `pending`, or `dead` for a destination that cannot receive it.
    pub status: &'a str,
    /// Why it is dead at birth.
    pub last_error: Option<&'a str>,
    /// Creation time (and first due time), epoch milliseconds.
    pub now_ms: i64,
}

/// A claimed delivery with what its attempt needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Acceptance order.
    pub seq: i64,
    /// The delivery id.
    pub id: String,
    /// The message id.
    pub message_id: String,
    /// The destination id.
    pub destination_id: String,
    /// `event` or `verification`.
    pub purpose: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The message's event type.
    pub event_type: String,
    /// The message's idempotency key.
    pub idempotency_key: String,
    /// The exact bytes to send.
    pub body: Vec<u8>,
    /// When the delivery was created, epoch milliseconds.
    pub created_ms: i64,
}

/// The outcome of an attempt, written by [`Transaction::finish_delivery`].
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    /// `delivered`, `pending` (a retry) or `dead`.
    pub status: &'a str,
    /// Attempts made, this one included.
    pub attempts: i64,
    /// When a retry is due, epoch milliseconds.
    pub next_at_ms: i64,
    /// What went wrong (kept when delivered later, for the record).
    pub last_error: Option<&'a str>,
    /// When it was delivered.
    pub delivered_ms: Option<i64>,
    /// Now, epoch milliseconds.
    pub now_ms: i64,
}

/// A delivery as listed, joined with its destination's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// The delivery id.
    pub id: String,
    /// The message id.
    pub message_id: String,
    /// The destination id.
    pub destination_id: String,
    /// The destination's name.
    pub destination_name: String,
    /// `pending` | `delivering` | `delivered` | `dead`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// Creation time, epoch milliseconds.
    pub created_ms: i64,
    /// Delivery time, epoch milliseconds.
    pub delivered_ms: Option<i64>,
    /// When the next attempt is due (pending), epoch milliseconds.
    pub next_at_ms: i64,
}

/// Which deliveries [`Store::list_deliveries`] lists (event deliveries only).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only those in this status.
    pub status: Option<String>,
    /// Only those of this destination.
    pub destination_id: Option<String>,
}

/// What [`Store::queue_stats`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Event deliveries pending or being delivered.
    pub depth: u64,
    /// When the oldest due event delivery became due, epoch milliseconds.
    pub oldest_due_ms: Option<i64>,
}

const LIST_COLUMNS: &str = "d.id, d.message_id, d.destination_id, t.name, d.status, d.attempts, \
     d.last_error, d.created_ms, d.delivered_ms, d.next_at_ms";
type ListRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
    Option<i64>,
    i64,
);

fn list_row(row: ListRow) -> DeliveryRow {
    let (
        id,
        message_id,
        destination_id,
        destination_name,
        status,
        attempts,
        last_error,
        created_ms,
        delivered_ms,
        next_at_ms,
    ) = row;
    DeliveryRow {
        id,
        message_id,
        destination_id,
        destination_name,
        status,
        attempts,
        last_error,
        created_ms,
        delivered_ms,
        next_at_ms,
    }
}

/// The `SELECT` of [`Store::list_deliveries`]; parameters bound in the order status,
/// destination, cursor (created, id), limit.
fn list_sql(status: bool, destination: bool, after: bool) -> String {
    let mut sql = format!(
        "SELECT {LIST_COLUMNS} FROM deliveries d JOIN delivery_destinations t \
         ON t.id = d.destination_id WHERE d.purpose = 'event'"
    );
    let mut param = 0;
    let mut next = || {
        param += 1;
        param
    };
    if status {
        sql.push_str(&format!(" AND d.status = ${}", next()));
    }
    if destination {
        sql.push_str(&format!(" AND d.destination_id = ${}", next()));
    }
    if after {
        let (a, b) = (next(), next());
        sql.push_str(&format!(
            " AND (d.created_ms < ${a} OR (d.created_ms = ${a} AND d.id < ${b}))"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY d.created_ms DESC, d.id DESC LIMIT ${}",
        next()
    ));
    sql
}

/// What a claim answers of each row it moved to `delivering`.
macro_rules! claimed_columns {
    () => {
        " RETURNING seq, id, message_id, destination_id, purpose, attempts, created_ms"
    };
}

/// SQLite's claim statement.
fn claim_sql() -> String {
    format!(
        "UPDATE deliveries SET status = 'delivering', lease_token = $3, lease_until_ms = $4, \
         updated_ms = $1 WHERE seq IN ({CLAIMABLE}){}",
        claimed_columns!()
    )
}

/// The fewest rows a page of PostgreSQL's claim reads: a small claim behind many rows that may
/// not be sent yet reads them in a few round trips, not one per `limit` rows.
const PG_CLAIM_PAGE: usize = 512;

/// Before PostgreSQL's claim: generic plans for the rest of the transaction (restored by
/// [`PG_RESTORE_PLANS`]); answers the setting it replaced.
const PG_GENERIC_PLANS: &str = "SELECT current_setting('plan_cache_mode'), \
     set_config('plan_cache_mode', 'force_generic_plan', true)";
/// After PostgreSQL's claim: the transaction's plan setting as it was (`$1`).
const PG_RESTORE_PLANS: &str = "SELECT set_config('plan_cache_mode', $1, true)";

/// PostgreSQL's claim, step 1: the destinations that may receive something (see the module
/// docs), with their status.
const PG_ELIGIBLE_DESTINATIONS: &str = "SELECT id, status FROM delivery_destinations \
     WHERE deleted_ms IS NULL AND status IN ('VERIFIED', 'PENDING_VERIFICATION')";
/// Step 2, once per page: due open rows after `seq` $2, oldest first, at most $3 (not locked:
/// rows of destinations that may not receive anything yet are passed over, never written).
const PG_DUE_PAGE: &str = concat!(
    "SELECT d.seq, d.destination_id, d.purpose FROM deliveries d WHERE ",
    due!(),
    " AND d.seq > $2 ORDER BY d.seq LIMIT $3"
);

/// Step 3: the kept rows (`seq` = any of $2) that are still due, locked (rows another replica
/// holds are skipped), to `delivering` under lease token $3 until $4.
const PG_CLAIM_ROWS: &str = concat!(
    "UPDATE deliveries SET status = 'delivering', lease_token = $3, lease_until_ms = $4, \
     updated_ms = $1 WHERE seq IN (SELECT d.seq FROM deliveries d WHERE d.seq = ANY($2) AND ",
    due!(),
    " FOR UPDATE SKIP LOCKED)",
    claimed_columns!()
);

type ClaimRow = (i64, String, String, String, String, i64, i64);

/// PostgreSQL's claim, steps 1 and 2 (see the module docs): the `seq` of at most `limit` due
/// rows that may be delivered, oldest first.
async fn postgres_claimable(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<i64>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let destinations: Vec<(String, String)> = sqlx::query_as(PG_ELIGIBLE_DESTINATIONS)
        .fetch_all(&mut **tx)
        .await?;
    if destinations.is_empty() {
        return Ok(Vec::new());
    }
    let verified: HashMap<&str, bool> = destinations
        .iter()
        .map(|(id, status)| (id.as_str(), status == "VERIFIED"))
        .collect();
    let may_receive = |destination: &str, purpose: &str| match verified.get(destination) {
        Some(true) => true,
        Some(false) => purpose == "verification",
        None => false,
    };
    let want = limit as usize;
    let page_len = want.max(PG_CLAIM_PAGE);
    let mut seqs = Vec::with_capacity(want);
    let mut after = 0_i64;
    loop {
        let page: Vec<(i64, String, String)> = sqlx::query_as(PG_DUE_PAGE)
            .bind(now_ms)
            .bind(after)
            .bind(i64::try_from(page_len).unwrap_or(i64::MAX))
            .fetch_all(&mut **tx)
            .await?;
        let whole = page.len() == page_len;
        for (seq, destination, purpose) in &page {
            if seqs.len() < want && may_receive(destination, purpose) {
                seqs.push(*seq);
            }
        }
        match page.last() {
            Some((last, _, _)) if whole && seqs.len() < want => after = *last,
            _ => break,
        }
    }
    Ok(seqs)
}

/// The rows a claim moved to `delivering` ([`Transaction::claim_deliveries`]), before their
/// messages are read ([`Store::claimed_deliveries`]).
#[derive(Debug, Default)]
pub struct Claim(Vec<ClaimRow>);

impl Claim {
    /// How many deliveries were claimed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was claimed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Transaction {
    /// Claims at most `limit` due deliveries for `lease_ms` under `lease_token` (see the module
    /// docs) as part of this transaction: on SQLite a claim written through the group
    /// committer shares its batch's commit instead of taking the one writer for a commit (an
    /// fsync) of its own. Read the claimed deliveries with [`Store::claimed_deliveries`] once
    /// the transaction committed.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn claim_deliveries(
        &mut self,
        now_ms: i64,
        limit: u32,
        lease_token: &str,
        lease_ms: i64,
    ) -> Result<Claim, StoreError> {
        let claimed: Vec<ClaimRow> = match &mut self.inner {
            TransactionInner::Sqlite(tx) => {
                sqlx::query_as(&claim_sql())
                    .bind(now_ms)
                    .bind(i64::from(limit))
                    .bind(lease_token)
                    .bind(now_ms + lease_ms)
                    .fetch_all(&mut **tx)
                    .await?
            }
            TransactionInner::Postgres(tx) => {
                // Generic plans (see the module docs) for the claim's statements only.
                let (previous, _): (String, String) = sqlx::query_as(PG_GENERIC_PLANS)
                    .fetch_one(&mut **tx)
                    .await?;
                let seqs = postgres_claimable(tx, now_ms, limit).await?;
                let claimed = if seqs.is_empty() {
                    Vec::new()
                } else {
                    sqlx::query_as(PG_CLAIM_ROWS)
                        .bind(now_ms)
                        .bind(seqs)
                        .bind(lease_token)
                        .bind(now_ms + lease_ms)
                        .fetch_all(&mut **tx)
                        .await?
                };
                sqlx::query(PG_RESTORE_PLANS)
                    .bind(previous)
                    .execute(&mut **tx)
                    .await?;
                claimed
            }
        };
        Ok(Claim(claimed))
    }

    /// Writes a message (once: a second write of the same id changes nothing).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn insert_message(&mut self, message: &MessageRow<'_>) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::query(INSERT_MESSAGE)
                .bind(message.id)
                .bind(message.event_type)
                .bind(message.idempotency_key)
                .bind(message.body)
                .bind(message.created_ms)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Writes messages (each once, like [`Self::insert_message`]), one statement per few
    /// hundred.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn insert_messages(&mut self, messages: &[MessageRow<'_>]) -> Result<(), StoreError> {
        match &mut self.inner {
            TransactionInner::Sqlite(tx) => {
                for (chunk, sql) in sqlite_statements(
                    messages,
                    INSERT_MESSAGES_PREFIX,
                    INSERT_MESSAGES_ROW,
                    " ON CONFLICT (id) DO NOTHING",
                ) {
                    let mut query = sqlx::query(&sql);
                    for m in chunk {
                        query = query
                            .bind(m.id)
                            .bind(m.event_type)
                            .bind(m.idempotency_key)
                            .bind(m.body)
                            .bind(m.created_ms);
                    }
                    query.execute(&mut **tx).await?;
                }
            }
            TransactionInner::Postgres(tx) => {
                for chunk in messages.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                    sqlx::query(INSERT_MESSAGES_POSTGRES)
                        .bind(chunk.iter().map(|m| m.id).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|m| m.event_type).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|m| m.idempotency_key).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|m| m.body).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|m| m.created_ms).collect::<Vec<_>>())
                        .execute(&mut **tx)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Writes deliveries in their order (which becomes their acceptance order), one statement
    /// per few hundred.
    ///
    /// # Errors
    /// [`StoreError::Database`]; a unique violation when a message already has a delivery to
    /// a destination.
    pub async fn insert_deliveries(
        &mut self,
        deliveries: &[NewDelivery<'_>],
    ) -> Result<(), StoreError> {
        match &mut self.inner {
            TransactionInner::Sqlite(tx) => {
                for (chunk, sql) in sqlite_statements(
                    deliveries,
                    INSERT_DELIVERIES_PREFIX,
                    INSERT_DELIVERIES_ROW,
                    "",
                ) {
                    let mut query = sqlx::query(&sql);
                    for d in chunk {
                        query = query
                            .bind(d.id)
                            .bind(d.message_id)
                            .bind(d.destination_id)
                            .bind(d.purpose)
                            .bind(d.status)
                            .bind(d.now_ms)
                            .bind(d.last_error)
                            .bind(d.now_ms)
                            .bind(d.now_ms);
                    }
                    query.execute(&mut **tx).await?;
                }
            }
            TransactionInner::Postgres(tx) => {
                for chunk in deliveries.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                    sqlx::query(INSERT_DELIVERIES_POSTGRES)
                        .bind(chunk.iter().map(|d| d.id).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|d| d.message_id).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|d| d.destination_id).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|d| d.purpose).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|d| d.status).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|d| d.now_ms).collect::<Vec<_>>())
                        .bind(chunk.iter().map(|d| d.last_error).collect::<Vec<_>>())
                        .execute(&mut **tx)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Writes a delivery.
    ///
    /// # Errors
    /// [`StoreError::Database`]; a unique violation when the message already has a delivery
    /// to that destination.
    pub async fn insert_delivery(&mut self, delivery: &NewDelivery<'_>) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            sqlx::query(INSERT_DELIVERY)
                .bind(delivery.id)
                .bind(delivery.message_id)
                .bind(delivery.destination_id)
                .bind(delivery.purpose)
                .bind(delivery.status)
                .bind(delivery.now_ms)
                .bind(delivery.last_error)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Writes the outcome `delivered` (now) for each `(id, lease_token)` of `claims` whose lease
    /// is still that token's, one statement per few hundred (the common outcome, batched);
    /// answers the ids written. Same effect per delivery as [`Self::finish_delivery`] with
    /// status `delivered`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn finish_delivered(
        &mut self,
        claims: &[(&str, &str)],
        now_ms: i64,
    ) -> Result<HashSet<String>, StoreError> {
        let mut by_token: HashMap<&str, Vec<&str>> = HashMap::new();
        for (id, token) in claims {
            by_token.entry(*token).or_default().push(*id);
        }
        let mut written = HashSet::with_capacity(claims.len());
        for (token, ids) in by_token {
            match &mut self.inner {
                TransactionInner::Sqlite(tx) => {
                    let head = FINISH_DELIVERED
                        .replace("{now}", "?")
                        .replace("{token}", "?")
                        + "IN (";
                    for (chunk, sql) in sqlite_statements(&ids, &head, "?", ") RETURNING id") {
                        let mut query = sqlx::query_scalar(&sql)
                            .bind(now_ms)
                            .bind(now_ms)
                            .bind(now_ms)
                            .bind(token);
                        for id in chunk {
                            query = query.bind(*id);
                        }
                        let ids: Vec<String> = query.fetch_all(&mut **tx).await?;
                        written.extend(ids);
                    }
                }
                TransactionInner::Postgres(tx) => {
                    let sql = FINISH_DELIVERED
                        .replace("{now}", "$1")
                        .replace("{token}", "$2")
                        + "= ANY($3) RETURNING id";
                    for chunk in ids.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                        let ids: Vec<String> = sqlx::query_scalar(&sql)
                            .bind(now_ms)
                            .bind(token)
                            .bind(chunk)
                            .fetch_all(&mut **tx)
                            .await?;
                        written.extend(ids);
                    }
                }
            }
        }
        Ok(written)
    }

    /// Writes the outcome of an attempt of the delivery `id` claimed with `lease_token`;
    /// whether the lease was still this worker's (else nothing is written).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn finish_delivery(
        &mut self,
        id: &str,
        lease_token: &str,
        finish: &Finish<'_>,
    ) -> Result<bool, StoreError> {
        let done = with_tx!(self, |conn| {
            sqlx::query(FINISH)
                .bind(id)
                .bind(lease_token)
                .bind(finish.status)
                .bind(finish.attempts)
                .bind(finish.next_at_ms)
                .bind(finish.last_error)
                .bind(finish.delivered_ms)
                .bind(finish.now_ms)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Makes every pending delivery of `purpose` to `destination_id` dead with `reason`; how
    /// many. (Deliveries being attempted end with their attempt.)
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn kill_pending_deliveries(
        &mut self,
        destination_id: &str,
        purpose: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(with_tx!(self, |conn| {
            sqlx::query(KILL_OPEN)
                .bind(destination_id)
                .bind(reason)
                .bind(now_ms)
                .bind(purpose)
                .execute(conn)
                .await?
                .rows_affected()
        }))
    }

    /// Makes the dead event delivery `id` pending again, due now, with its attempts reset;
    /// whether it was dead.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn replay_delivery(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = with_tx!(self, |conn| {
            sqlx::query(REPLAY_ONE)
                .bind(id)
                .bind(now_ms)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Makes every dead event delivery of `destination_id` pending again; how many.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn replay_dead_deliveries(
        &mut self,
        destination_id: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(with_tx!(self, |conn| {
            sqlx::query(REPLAY_ALL)
                .bind(destination_id)
                .bind(now_ms)
                .execute(conn)
                .await?
                .rows_affected()
        }))
    }

    /// Makes the pending delivery `id` dead with `reason`; whether it was pending.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn kill_delivery(
        &mut self,
        id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = with_tx!(self, |conn| {
            sqlx::query(KILL_ONE)
                .bind(id)
                .bind(reason)
                .bind(now_ms)
                .execute(conn)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }
}

impl Store {
    /// Claims at most `limit` due deliveries for `lease_ms` under `lease_token` (see the module
    /// docs), oldest first, with their messages: the claim is a transaction of its own.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn claim_deliveries(
        &self,
        now_ms: i64,
        limit: u32,
        lease_token: &str,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let mut tx = self.begin().await?;
        let claim = tx
            .claim_deliveries(now_ms, limit, lease_token, lease_ms)
            .await?;
        tx.commit().await?;
        self.claimed_deliveries(claim).await
    }

    /// The deliveries of `claim` (written by [`Transaction::claim_deliveries`] and committed),
    /// oldest first, with their messages.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn claimed_deliveries(
        &self,
        claim: Claim,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let Claim(mut claimed) = claim;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        claimed.sort_by_key(|row| row.0);
        let mut found: Vec<(String, String, String, Vec<u8>)> = Vec::with_capacity(claimed.len());
        match &self.backend {
            super::Backend::Postgres(db) => {
                for rows in claimed.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                    let ids: Vec<&str> = rows.iter().map(|row| row.2.as_str()).collect();
                    let some: Vec<_> = sqlx::query_as(
                        "SELECT id, event_type, idempotency_key, body \
                         FROM delivery_messages WHERE id = ANY($1)",
                    )
                    .bind(ids)
                    .fetch_all(db.pool())
                    .await?;
                    found.extend(some);
                }
            }
            super::Backend::Sqlite(db) => {
                // Anonymous `?` parameters: SQLite's parser is quadratic in numbered ones.
                for (rows, sql) in sqlite_statements(
                    &claimed,
                    "SELECT id, event_type, idempotency_key, body FROM delivery_messages \
                     WHERE id IN (",
                    "?",
                    ")",
                ) {
                    let mut query = sqlx::query_as(&sql);
                    for row in rows {
                        query = query.bind(row.2.as_str());
                    }
                    let some: Vec<_> = query.fetch_all(&db.readers).await?;
                    found.extend(some);
                }
            }
        }
        let messages: HashMap<String, (String, String, Vec<u8>)> = found
            .into_iter()
            .map(|(id, event_type, key, body)| (id, (event_type, key, body)))
            .collect();
        Ok(claimed
            .into_iter()
            .filter_map(
                |(seq, id, message_id, destination_id, purpose, attempts, created_ms)| {
                    // One message may have deliveries to several destinations: each gets
                    // its own copy.
                    let Some((event_type, idempotency_key, body)) =
                        messages.get(&message_id).cloned()
                    else {
                        // Cannot happen while the foreign key holds; if it did, the lease
                        // would keep the delivery for 30 s without an attempt: say so.
                        tracing::warn!(delivery = %id, message = %message_id,
                            "a claimed delivery's message was not found; its lease will expire");
                        return None;
                    };
                    Some(ClaimedDelivery {
                        seq,
                        id,
                        message_id,
                        destination_id,
                        purpose,
                        attempts,
                        event_type,
                        idempotency_key,
                        body,
                        created_ms,
                    })
                },
            )
            .collect())
    }

    /// Extends the lease of the delivery `id` claimed with `lease_token` to `until_ms`;
    /// whether it is still this claim's.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn renew_lease(
        &self,
        id: &str,
        lease_token: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = with_pool!(
            self,
            write | pool | {
                sqlx::query(RENEW)
                    .bind(id)
                    .bind(lease_token)
                    .bind(until_ms)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        );
        Ok(done > 0)
    }

    /// Gives the delivery `id` claimed with `lease_token` back, pending and due at `due_ms`,
    /// its attempt not counted (a worker stopping before the attempt ended).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn release_lease(
        &self,
        id: &str,
        lease_token: &str,
        due_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = with_pool!(
            self,
            write | pool | {
                sqlx::query(RELEASE)
                    .bind(id)
                    .bind(lease_token)
                    .bind(due_ms)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        );
        Ok(done > 0)
    }

    /// The deliveries of message `message_id`, in acceptance order.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn deliveries_of_message(
        &self,
        message_id: &str,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows: Vec<ListRow> = with_pool!(
            self,
            read | pool | {
                sqlx::query_as(&format!(
                    "SELECT {LIST_COLUMNS} FROM deliveries d JOIN delivery_destinations t \
                     ON t.id = d.destination_id WHERE d.message_id = $1 ORDER BY d.seq"
                ))
                .bind(message_id)
                .fetch_all(pool)
                .await?
            }
        );
        Ok(rows.into_iter().map(list_row).collect())
    }

    /// The delivery `id`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let row: Option<ListRow> = with_pool!(
            self,
            read | pool | {
                sqlx::query_as(&format!(
                    "SELECT {LIST_COLUMNS} FROM deliveries d JOIN delivery_destinations t \
                     ON t.id = d.destination_id WHERE d.id = $1"
                ))
                .bind(id)
                .fetch_optional(pool)
                .await?
            }
        );
        Ok(row.map(list_row))
    }

    /// Event deliveries, newest first, keyset-paginated.
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for a cursor this list did not hand out,
    /// [`StoreError::Database`].
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<DeliveryRow>, StoreError> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(CURSOR_SCOPE, c))
            .transpose()?;
        let limit = page.effective_limit();
        let sql = list_sql(
            filter.status.is_some(),
            filter.destination_id.is_some(),
            after.is_some(),
        );
        let mut rows: Vec<ListRow> = with_pool!(
            self,
            read | pool | {
                let mut query = sqlx::query_as(&sql);
                if let Some(status) = &filter.status {
                    query = query.bind(status.as_str());
                }
                if let Some(destination) = &filter.destination_id {
                    query = query.bind(destination.as_str());
                }
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
                    at_ms: last.7,
                    id: last.0.clone(),
                }
                .encode(CURSOR_SCOPE)
            })
        } else {
            None
        };
        Ok(Page {
            entities: rows.into_iter().map(list_row).collect(),
            next_cursor,
        })
    }

    /// The queue depth and the oldest due delivery (event deliveries to VERIFIED destinations).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn queue_stats(&self, now_ms: i64) -> Result<QueueStats, StoreError> {
        let (depth, oldest): (i64, Option<i64>) = with_pool!(
            self,
            read | pool | {
                let depth: i64 = sqlx::query_scalar(QUEUE_DEPTH).fetch_one(pool).await?;
                let oldest: Option<i64> = sqlx::query_scalar(OLDEST_DUE)
                    .bind(now_ms)
                    .fetch_one(pool)
                    .await?;
                (depth, oldest)
            }
        );
        Ok(QueueStats {
            depth: u64::try_from(depth).unwrap_or(0),
            oldest_due_ms: oldest,
        })
    }

    /// Pending deliveries whose destination can no longer receive them, with the
    /// destination's status and whether it is deleted (at most 1000).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn stranded_deliveries(&self) -> Result<Vec<(String, String, bool)>, StoreError> {
        let rows: Vec<(String, String, Option<i64>)> = with_pool!(
            self,
            read | pool | sqlx::query_as(STRANDED).fetch_all(pool).await?
        );
        Ok(rows
            .into_iter()
            .map(|(id, status, deleted)| (id, status, deleted.is_some()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    /// SQLite's plan of `sql` with `binds` (text) bound, one line per step.
    async fn plan(store: &Store, sql: &str, binds: &[&str]) -> String {
        let super::super::Backend::Sqlite(db) = &store.backend else {
            panic!("a SQLite store");
        };
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query.fetch_all(&db.writer).await.expect("plan");
        rows.into_iter()
            .map(|(.., step)| step)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Statements that look for a destination's open or dead deliveries use the indexes that
    /// hold only those (`deliveries_open`, `deliveries_dead`), never a scan of every delivery
    /// the destination ever had.
    #[tokio::test]
    async fn destination_statements_use_the_open_and_dead_indexes_on_sqlite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::connect(&SecretString::from("sqlite://gw.db"), dir.path())
            .await
            .expect("store");
        let kill = plan(&store, KILL_OPEN, &["t", "gone", "1", "event"]).await;
        assert!(kill.contains("deliveries_open"), "{kill}");
        let replay = plan(&store, REPLAY_ALL, &["t", "1"]).await;
        assert!(replay.contains("deliveries_dead"), "{replay}");
        let dead_list = plan(&store, &list_sql(true, true, false), &["dead", "t", "10"]).await;
        assert!(dead_list.contains("deliveries_dead"), "{dead_list}");
        let target_list = plan(&store, &list_sql(false, true, false), &["t", "10"]).await;
        assert!(
            target_list.contains("deliveries_by_destination"),
            "{target_list}"
        );
    }
}
