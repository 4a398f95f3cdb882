//! The audit log: who did what, when, with which outcome.
//!
//! Two ways in:
//! - **state changes** write their record in the transaction of the change
//!   ([`Transaction::append_audit`], [`Transaction::append_audit_batch`]), so the record exists
//!   exactly when the change does;
//! - **data-action executions** change no state and sit on the hot path: they hand their record
//!   to the [`AuditWriter`], which never blocks the caller and writes batches off the request
//!   path, each batch one unit of the [`GroupCommitter`] (visible within ≈ 50 ms plus one
//!   commit; lost at most in a crash or when its queue overflows, which is counted in
//!   `gateway_audit_records_dropped_total`).
//!
//! One way out: [`Store::query_audit`], newest first, filtered by `since` and `kind`, keyset
//! paginated (see the `page` module).
//!
//! Retention: [`Store::spawn_audit_pruner`] deletes records older than
//! [`AuditRetention::max_age`] every [`AuditRetention::interval`], oldest first, in batches of
//! [`AuditRetention::batch_rows`] rows, each its own short statement (no long lock: on SQLite
//! writers queued for the one writer connection get their turn between two batches; on
//! PostgreSQL a batch locks only its own rows). Without it every data-action execution would
//! grow the table forever.
//!
//! Storage: table `audit_log`, `at` as epoch milliseconds (sub-millisecond parts are dropped),
//! `id` a database-assigned integer that breaks ties within a millisecond, `detail` as JSON
//! text. The same statement texts run on both dialects.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::page::Cursor;
use super::{
    CommitError, CommitWork, GroupCommitter, POSTGRES_ROWS_PER_STATEMENT, Page, PageRequest, Store,
    StoreError, Transaction, sqlite_statements, with_pool, with_tx,
};
use crate::backoff::{Backoff, Jitter};
use crate::telemetry::Metrics;

/// One audit record to write. `detail` must never hold secrets, tokens or payload
/// values.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    /// When it happened (stored to the millisecond).
    pub at: DateTime<Utc>,
    /// What happened, dotted (`event.accepted`, `action.executed`, `config.reloaded`...).
    pub kind: String,
    /// Who did it (`admin`, `issuer:legacy`, `genesys`, `system`...).
    pub actor: String,
    /// The request id, when a request caused it.
    pub request_id: Option<String>,
    /// What it is about (an id or a name).
    pub subject: Option<String>,
    /// `success`, `failure`, or a capability-specific outcome.
    pub outcome: String,
    /// Structured, non-secret detail.
    pub detail: serde_json::Value,
}

impl AuditRecord {
    /// A record of something that happens now, with no request id, no subject and an empty
    /// detail object; add those with the `with_*` methods.
    pub fn now(
        kind: impl Into<String>,
        actor: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        Self {
            at: Utc::now(),
            kind: kind.into(),
            actor: actor.into(),
            request_id: None,
            subject: None,
            outcome: outcome.into(),
            detail: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// The same record caused by request `request_id`.
    #[must_use]
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// The same record about `subject`.
    #[must_use]
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The same record with this (non-secret) detail.
    #[must_use]
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A stored audit record as listed by `GET /admin/v1/audit`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Record id (a number, as a string).
    pub id: String,
    /// RFC 3339 UTC with milliseconds (`2026-11-22T20:04:39.123Z`).
    pub at: String,
    /// See [`AuditRecord::kind`].
    pub kind: String,
    /// See [`AuditRecord::actor`].
    pub actor: String,
    /// See [`AuditRecord::request_id`].
    pub request_id: Option<String>,
    /// See [`AuditRecord::subject`].
    pub subject: Option<String>,
    /// See [`AuditRecord::outcome`].
    pub outcome: String,
    /// See [`AuditRecord::detail`].
    pub detail: serde_json::Value,
}

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only records with `at ≥ since`.
    pub since: Option<DateTime<Utc>>,
    /// Only records of exactly this kind.
    pub kind: Option<String>,
}

/// The list name inside audit cursors.
const CURSOR_SCOPE: &str = "audit";
/// One record (a prepared statement kept in each connection's cache).
const INSERT_ONE: &str = "INSERT INTO audit_log (at_ms, kind, actor, request_id, subject, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// Many records in one PostgreSQL statement: one array per column, so the statement text (and
/// its cached plan) is the same whatever the batch size.
const INSERT_MANY_POSTGRES: &str = "INSERT INTO audit_log (at_ms, kind, actor, request_id, subject, outcome, detail) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])";
const INSERT_PREFIX: &str =
    "INSERT INTO audit_log (at_ms, kind, actor, request_id, subject, outcome, detail) VALUES ";
const INSERT_ROW: &str = "(?, ?, ?, ?, ?, ?, ?)";

/// A row of `audit_log` as selected by [`Store::query_audit`].
type AuditRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
);

/// Binds the seven columns of one record to a `sqlx::query` of either dialect.
macro_rules! bind_record {
    ($query:expr, $record:expr) => {{
        let record: &AuditRecord = $record;
        $query
            .bind(record.at.timestamp_millis())
            .bind(record.kind.as_str())
            .bind(record.actor.as_str())
            .bind(record.request_id.as_deref())
            .bind(record.subject.as_deref())
            .bind(record.outcome.as_str())
            .bind(record.detail.to_string())
    }};
}

/// The `SELECT` of [`Store::query_audit`] for the filters in use; parameters are bound in the
/// order since, kind, cursor (at, id), limit.
fn select_sql(since: bool, kind: bool, after: bool) -> String {
    let mut sql = String::from(
        "SELECT id, at_ms, kind, actor, request_id, subject, outcome, detail FROM audit_log",
    );
    let mut param = 0;
    let mut next = || {
        param += 1;
        param
    };
    let mut conditions = Vec::with_capacity(3);
    if since {
        conditions.push(format!("at_ms >= ${}", next()));
    }
    if kind {
        conditions.push(format!("kind = ${}", next()));
    }
    if after {
        let (at, id) = (next(), next());
        conditions.push(format!("(at_ms, id) < (${at}, ${id})"));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    let _ = write!(sql, " ORDER BY at_ms DESC, id DESC LIMIT ${}", next());
    sql
}

/// `at` in epoch milliseconds, rounded up: records are stored to the millisecond, so
/// `stored ≥ since` holds exactly for `stored_ms ≥ ceil_ms(since)`.
fn ceil_millis(at: DateTime<Utc>) -> i64 {
    let floor = at.timestamp_millis();
    if at.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        floor
    } else {
        floor + 1
    }
}

/// RFC 3339 UTC with milliseconds.
fn render_millis(at_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(at_ms)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn entry(row: AuditRow) -> AuditEntry {
    let (id, at_ms, kind, actor, request_id, subject, outcome, detail) = row;
    AuditEntry {
        id: id.to_string(),
        at: render_millis(at_ms),
        kind,
        actor,
        request_id,
        subject,
        outcome,
        // Only this module writes the column, always from a `serde_json::Value`.
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
    }
}

impl Transaction {
    /// Writes one audit record as part of this transaction (visible once it commits).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the insert fails.
    pub async fn append_audit(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        with_tx!(self, |conn| {
            bind_record!(sqlx::query(INSERT_ONE), record)
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Writes several audit records as part of this transaction in a few statements: on SQLite
    /// multi-row `INSERT`s of at most 500 records ([`sqlite_statements`]), on PostgreSQL one
    /// array per column (`UNNEST`) per 1 000 records.
    ///
    /// # Errors
    /// [`StoreError::Database`] when an insert fails.
    pub async fn append_audit_batch(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        match &mut self.inner {
            super::TransactionInner::Sqlite(tx) => {
                for (chunk, sql) in sqlite_statements(records, INSERT_PREFIX, INSERT_ROW, "") {
                    let mut query = sqlx::query(&sql);
                    for record in chunk {
                        query = bind_record!(query, record);
                    }
                    query.execute(&mut **tx).await?;
                }
            }
            super::TransactionInner::Postgres(tx) => {
                for chunk in records.chunks(POSTGRES_ROWS_PER_STATEMENT) {
                    let mut at = Vec::with_capacity(chunk.len());
                    let mut kind = Vec::with_capacity(chunk.len());
                    let mut actor = Vec::with_capacity(chunk.len());
                    let mut request_id = Vec::with_capacity(chunk.len());
                    let mut subject = Vec::with_capacity(chunk.len());
                    let mut outcome = Vec::with_capacity(chunk.len());
                    let mut detail = Vec::with_capacity(chunk.len());
                    for r in chunk {
                        at.push(r.at.timestamp_millis());
                        kind.push(r.kind.as_str());
                        actor.push(r.actor.as_str());
                        request_id.push(r.request_id.as_deref());
                        subject.push(r.subject.as_deref());
                        outcome.push(r.outcome.as_str());
                        detail.push(r.detail.to_string());
                    }
                    sqlx::query(INSERT_MANY_POSTGRES)
                        .bind(at)
                        .bind(kind)
                        .bind(actor)
                        .bind(request_id)
                        .bind(subject)
                        .bind(outcome)
                        .bind(detail)
                        .execute(&mut **tx)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

impl Store {
    /// Writes one audit record in its own (single-statement) transaction.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the insert fails.
    pub async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        with_pool!(
            self,
            write | pool | {
                bind_record!(sqlx::query(INSERT_ONE), record)
                    .execute(pool)
                    .await?;
            }
        );
        Ok(())
    }

    /// Writes several audit records in one transaction: all or none.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the insert fails; then none was written.
    pub async fn append_audit_batch(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        match records.len() {
            0 => Ok(()),
            1 => self.append_audit(&records[0]).await,
            _ => {
                let mut tx = self.begin().await?;
                tx.append_audit_batch(records).await?;
                tx.commit().await
            }
        }
    }

    /// Lists audit records, newest first (`at` descending, then `id` descending), with
    /// `at ≥ filter.since` and `kind = filter.kind` when given, at most `page.limit` (clamped to
    /// 1..=1000) after `page.cursor`.
    ///
    /// Walking the pages with `next_cursor` shows every record that existed when the walk
    /// began exactly once, whatever is inserted meanwhile.
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for a cursor this list did not hand out (400 at the
    /// edge); [`StoreError::Database`] when the query fails.
    pub async fn query_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        let limit = page.effective_limit();
        let after = match page.cursor.as_deref() {
            Some(text) => {
                let cursor = Cursor::decode(CURSOR_SCOPE, text)?;
                let id: i64 = cursor.id.parse().map_err(|_| StoreError::InvalidCursor)?;
                Some((cursor.at_ms, id))
            }
            None => None,
        };
        let since = filter.since.map(ceil_millis);
        let kind = filter.kind.as_deref();
        let sql = select_sql(since.is_some(), kind.is_some(), after.is_some());
        let mut rows: Vec<AuditRow> = with_pool!(
            self,
            read | pool | {
                let mut query = sqlx::query_as::<_, AuditRow>(&sql);
                if let Some(since) = since {
                    query = query.bind(since);
                }
                if let Some(kind) = kind {
                    query = query.bind(kind);
                }
                if let Some((at_ms, id)) = after {
                    query = query.bind(at_ms).bind(id);
                }
                // One more than asked: tells whether a next page exists.
                query.bind(i64::from(limit) + 1).fetch_all(pool).await?
            }
        );
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|(id, at_ms, ..)| {
                Cursor {
                    at_ms: *at_ms,
                    id: id.to_string(),
                }
                .encode(CURSOR_SCOPE)
            })
        } else {
            None
        };
        Ok(Page {
            entities: rows.into_iter().map(entry).collect(),
            next_cursor,
        })
    }

    /// Deletes audit records older than `before`, at most `max_rows` of them (call repeatedly
    /// to prune a large backlog without one long transaction). Returns how many were deleted.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the delete fails.
    pub async fn prune_audit(
        &self,
        before: DateTime<Utc>,
        max_rows: u32,
    ) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM audit_log WHERE id IN \
            (SELECT id FROM audit_log WHERE at_ms < $1 ORDER BY at_ms, id LIMIT $2)";
        let deleted = with_pool!(
            self,
            write | pool | {
                sqlx::query(SQL)
                    .bind(ceil_millis(before))
                    .bind(i64::from(max_rows))
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        );
        Ok(deleted)
    }

    /// Starts the audit pruner on the current runtime: at once and then every
    /// `retention.interval`, it deletes the records older than `retention.max_age` (as of the
    /// start of that pass), `retention.batch_rows` at a time, until none is left. It stops
    /// when `shutdown` is cancelled, between two batches at the latest. A failing pass is
    /// logged and the next one tries again.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_audit_pruner(
        &self,
        retention: AuditRetention,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(self.audit_pruner(retention, shutdown))
    }

    /// The pruner task of [`Store::spawn_audit_pruner`], to spawn where the caller tracks its
    /// tasks.
    pub fn audit_pruner(
        &self,
        retention: AuditRetention,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        prune_periodically(self.clone(), retention, shutdown)
    }
}

/// How long audit records are kept, and how [`Store::spawn_audit_pruner`] deletes the older
/// ones (`[store] audit_retention_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRetention {
    /// Records older than this are deleted.
    pub max_age: Duration,
    /// The time between two passes (the first pass is at once).
    pub interval: Duration,
    /// Rows deleted per statement (at least 1).
    pub batch_rows: u32,
}

impl AuditRetention {
    /// The default time between two passes.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);
    /// The default rows per delete: a few milliseconds of the SQLite writer.
    pub const DEFAULT_BATCH_ROWS: u32 = 1000;

    /// Keeps records for `max_age`, pruning with the default interval and batch size.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            interval: Self::DEFAULT_INTERVAL,
            batch_rows: Self::DEFAULT_BATCH_ROWS,
        }
    }

    /// From `[store] audit_retention_days`: `None` for 0 (keep forever).
    pub fn from_days(days: u32) -> Option<Self> {
        (days > 0).then(|| Self::new(Duration::from_secs(u64::from(days) * 86_400)))
    }

    /// The oldest time kept by a pass starting at `now` (`None`: older than anything).
    fn cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let max_age = chrono::Duration::from_std(self.max_age).ok()?;
        now.checked_sub_signed(max_age)
    }
}

/// The task behind [`Store::spawn_audit_pruner`].
async fn prune_periodically(store: Store, retention: AuditRetention, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(retention.interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Some(before) = retention.cutoff(Utc::now()) else {
            continue;
        };
        match prune_pass(&store, before, retention.batch_rows.max(1), &shutdown).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, before = %before.to_rfc3339_opts(SecondsFormat::Millis, true),
                    "audit records past their retention deleted");
            }
            Err(err) => {
                tracing::warn!(error = %err, "audit pruning failed; trying again at the next pass");
            }
        }
    }
    tracing::debug!("audit pruner stopped");
}

/// Deletes every record older than `before`, `batch_rows` per statement, stopping early when
/// `shutdown` is cancelled. Returns how many were deleted.
async fn prune_pass(
    store: &Store,
    before: DateTime<Utc>,
    batch_rows: u32,
    shutdown: &CancellationToken,
) -> Result<u64, StoreError> {
    let mut total = 0;
    while !shutdown.is_cancelled() {
        let deleted = store.prune_audit(before, batch_rows).await?;
        total += deleted;
        if deleted < u64::from(batch_rows) {
            break;
        }
        // Let whatever else this runtime runs (the audit writer, other tasks) go first.
        tokio::task::yield_now().await;
    }
    Ok(total)
}

/// Writes audit records off the request path, in batches (data-action executions).
///
/// [`AuditWriter::record`] never blocks and never awaits: it puts the record in a bounded
/// queue (dropping it, counted in `gateway_audit_records_dropped_total`, when the queue is
/// full) and does not even wake the writer task, except once per [`AuditWriter::MAX_BATCH`]
/// records. The task writes what is queued every [`AuditWriter::FLUSH_INTERVAL`], or as soon
/// as [`AuditWriter::MAX_BATCH`] records are waiting, with one multi-row insert per batch,
/// handed to the [`GroupCommitter`] as one unit (so it shares its commit with whatever else
/// is queued there) and awaited; a batch that fails is tried again after a short pause, three
/// attempts in all, then dropped, logged and counted. The queue keeps filling meanwhile, so
/// a slow or stuck store makes records drop, never callers wait.
///
/// When `shutdown` is cancelled (or every `AuditWriter` is dropped) the task stops taking
/// records, writes what is queued and ends; records offered later are dropped and counted.
/// Cancel it once request handlers have drained, so that their records are kept, and before
/// the committer's own shutdown, so that its last batches are committed.
///
/// Cheap to clone and to call from any thread or runtime.
#[derive(Clone)]
pub struct AuditWriter {
    sender: mpsc::Sender<AuditRecord>,
    shared: Arc<WriterShared>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// State shared by the writers and the task.
#[derive(Debug, Default)]
struct WriterShared {
    /// Records offered and not yet taken by the task (incremented before the send, so it
    /// never goes below zero).
    queued: AtomicUsize,
    /// Woken when `queued` reaches a full batch.
    full: Notify,
}

impl AuditWriter {
    /// Records the queue holds by default before dropping (≈ 5 s of a busy gateway's
    /// data-action traffic; a few MiB at most).
    pub const DEFAULT_CAPACITY: usize = 16_384;
    /// The longest a record waits in the queue while the store answers. The audit log promises
    /// visibility within 1 s: waiting takes a small part of that, the rest is the store's (one
    /// multi-row insert). Short on purpose: at 15 000 executions/s a 250 ms interval made
    /// bursts of ~4 000-row inserts that held the second core long enough to push the hot
    /// path's p99 to ≈ 100 ms on a 2-core machine; 50 ms batches keep it in single-digit ms
    /// (BENCHMARKS.md).
    pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
    /// Records per write; a full batch is written at once.
    pub const MAX_BATCH: usize = 500;
    /// Attempts per batch while running (then the batch is dropped, logged and counted).
    const ATTEMPTS: u32 = 3;
    /// The waits before a failed batch is tried again: 100 ms, then 200 ms (the shared
    /// schedule, linear, no jitter: one writer, nobody to spread out from).
    const RETRY: Backoff = Backoff::linear(
        Duration::from_millis(100),
        Duration::from_millis(1000),
        Jitter::None,
    );

    /// Starts the writer task on `tasks` (on the current runtime) with
    /// [`Self::DEFAULT_CAPACITY`], writing through `committer`; it stops when `shutdown` is
    /// cancelled, after writing what is queued.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_on(
        committer: GroupCommitter,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Self {
        let (writer, task) = Self::spawn(committer, metrics, shutdown);
        tasks.spawn(async move {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "audit writer failed");
            }
        });
        writer
    }

    /// Starts the writer task on the current runtime with [`Self::DEFAULT_CAPACITY`], writing
    /// through `committer`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(
        committer: GroupCommitter,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        Self::spawn_with_capacity(committer, metrics, shutdown, Self::DEFAULT_CAPACITY)
    }

    /// Starts the writer task on the current runtime with a queue of `capacity` records (at
    /// least 1), writing through `committer`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_with_capacity(
        committer: GroupCommitter,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        capacity: usize,
    ) -> (Self, JoinHandle<()>) {
        Self::spawn_with_sink(committer, metrics, shutdown, capacity)
    }

    /// [`Self::spawn_with_capacity`] writing to any [`BatchSink`] (unit tests record what
    /// would be written, and when, on a paused clock).
    fn spawn_with_sink<S: BatchSink>(
        sink: S,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        capacity: usize,
    ) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(WriterShared::default());
        let task = WriterTask {
            sink,
            receiver,
            shared: shared.clone(),
            metrics: metrics.clone(),
            batch: Vec::with_capacity(Self::MAX_BATCH),
        };
        let join = tokio::spawn(task.run(shutdown));
        (
            Self {
                sender,
                shared,
                metrics,
            },
            join,
        )
    }

    /// Queues a record for writing. Never blocks, never awaits; when the queue is full or the
    /// writer has stopped, the record is dropped and counted.
    pub fn record(&self, record: AuditRecord) {
        let queued = self.shared.queued.fetch_add(1, Ordering::Relaxed) + 1;
        match self.sender.try_send(record) {
            Ok(()) => {
                if queued == Self::MAX_BATCH {
                    self.shared.full.notify_one();
                }
            }
            Err(_) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.metrics.audit_records_dropped_total.inc();
            }
        }
    }
}

/// Where the writer task puts its batches: the [`GroupCommitter`] (a recording sink in unit
/// tests).
trait BatchSink: Send + 'static {
    /// Writes `records` all or none, durably.
    fn write_batch(
        &self,
        records: Arc<[AuditRecord]>,
    ) -> impl Future<Output = Result<(), CommitError>> + Send;
}

impl BatchSink for GroupCommitter {
    fn write_batch(
        &self,
        records: Arc<[AuditRecord]>,
    ) -> impl Future<Output = Result<(), CommitError>> + Send {
        self.submit(AuditBatch(records))
    }
}

/// One batch of the [`AuditWriter`] as a unit of the [`GroupCommitter`].
struct AuditBatch(Arc<[AuditRecord]>);

impl CommitWork for AuditBatch {
    type Output = ();

    async fn write(self, tx: &mut Transaction) -> Result<(), StoreError> {
        tx.append_audit_batch(&self.0).await
    }
}

/// Data-action records are visible within 1 s of being recorded. The queue wait
/// must leave most of that second to the write.
const _: () = assert!(AuditWriter::FLUSH_INTERVAL.as_millis() * 4 <= 1000);

/// The task behind the [`AuditWriter`]s.
struct WriterTask<S> {
    sink: S,
    receiver: mpsc::Receiver<AuditRecord>,
    shared: Arc<WriterShared>,
    metrics: Arc<Metrics>,
    batch: Vec<AuditRecord>,
}

impl<S: BatchSink> WriterTask<S> {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(AuditWriter::FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                () = self.shared.full.notified() => {}
            }
            if !self.write_queued(AuditWriter::ATTEMPTS).await {
                break;
            }
        }
        // No more records from now on; write what was queued before.
        self.receiver.close();
        self.write_queued(1).await;
        tracing::debug!("audit writer stopped");
    }

    /// Writes everything queued, in batches. Returns `false` once every sender is gone.
    async fn write_queued(&mut self, attempts: u32) -> bool {
        loop {
            let mut open = true;
            while self.batch.len() < AuditWriter::MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(record) => self.batch.push(record),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let taken = self.batch.len();
            if taken == 0 {
                return open;
            }
            self.shared.queued.fetch_sub(taken, Ordering::Relaxed);
            self.write_batch(attempts).await;
            if taken < AuditWriter::MAX_BATCH {
                return open;
            }
        }
    }

    /// Writes the batch (and empties it), trying again after the waits of [`AuditWriter::RETRY`];
    /// drops it (logged, counted) when every attempt failed or the committer has stopped.
    async fn write_batch(&mut self, attempts: u32) {
        let records: Arc<[AuditRecord]> = self.batch.drain(..).collect();
        for attempt in 1..=attempts {
            match self.sink.write_batch(records.clone()).await {
                Ok(()) => return,
                Err(err) if attempt < attempts && !matches!(err, CommitError::Stopped) => {
                    tracing::warn!(error = %err, records = records.len(), attempt,
                        "audit batch not written yet; retrying");
                    tokio::time::sleep(AuditWriter::RETRY.delay(attempt)).await;
                }
                Err(err) => {
                    tracing::error!(error = %err, records = records.len(),
                        "audit batch lost: the store refused it");
                    self.metrics
                        .audit_records_dropped_total
                        .inc_by(records.len() as u64);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn sqlite_batches_use_one_row_of_anonymous_parameters_per_record() {
        let two = super::super::sqlite_multi_row(INSERT_PREFIX, INSERT_ROW, 2, "");
        assert!(
            two.ends_with("VALUES (?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?)"),
            "{two}"
        );
        let full = super::super::sqlite_multi_row(
            INSERT_PREFIX,
            INSERT_ROW,
            super::super::SQLITE_ROWS_PER_STATEMENT,
            "",
        );
        assert_eq!(full.matches('?').count(), 3500);
    }

    #[test]
    fn select_sql_numbers_parameters_in_binding_order() {
        assert_eq!(
            select_sql(false, false, false),
            "SELECT id, at_ms, kind, actor, request_id, subject, outcome, detail FROM audit_log \
             ORDER BY at_ms DESC, id DESC LIMIT $1"
        );
        assert!(select_sql(true, true, true).ends_with(
            "WHERE at_ms >= $1 AND kind = $2 AND (at_ms, id) < ($3, $4) \
                 ORDER BY at_ms DESC, id DESC LIMIT $5"
        ));
        assert!(
            select_sql(false, true, true)
                .contains("WHERE kind = $1 AND (at_ms, id) < ($2, $3) ORDER BY")
        );
    }

    #[test]
    fn since_rounds_up_to_the_stored_millisecond() {
        let exact = Utc.timestamp_millis_opt(1_795_000_000_123).unwrap();
        assert_eq!(ceil_millis(exact), 1_795_000_000_123);
        let later = exact + chrono::Duration::microseconds(1);
        assert_eq!(ceil_millis(later), 1_795_000_000_124);
    }

    #[test]
    fn retention_in_days_zero_keeps_forever() {
        assert_eq!(AuditRetention::from_days(0), None);
        let thirty = AuditRetention::from_days(30).expect("30 days");
        assert_eq!(thirty.max_age, Duration::from_secs(30 * 86_400));
        assert_eq!(thirty.interval, AuditRetention::DEFAULT_INTERVAL);
        assert_eq!(thirty.batch_rows, AuditRetention::DEFAULT_BATCH_ROWS);
        let now = Utc.timestamp_millis_opt(1_795_000_000_000).unwrap();
        assert_eq!(thirty.cutoff(now), Some(now - chrono::Duration::days(30)));
        // Longer than the calendar goes back: nothing is old enough.
        assert_eq!(AuditRetention::new(Duration::MAX).cutoff(now), None);
        assert_eq!(
            AuditRetention::from_days(u32::MAX).and_then(|r| r.cutoff(now)),
            None
        );
    }

    /// What the writer hands over, and when (on the test's paused clock).
    struct Handed {
        at: tokio::time::Instant,
        subjects: Vec<String>,
    }

    /// A [`BatchSink`] that records every batch; the first `failures` writes fail.
    struct RecordingSink {
        handed: mpsc::UnboundedSender<Handed>,
        failures: AtomicUsize,
    }

    impl BatchSink for RecordingSink {
        fn write_batch(
            &self,
            records: Arc<[AuditRecord]>,
        ) -> impl Future<Output = Result<(), CommitError>> + Send {
            let _ = self.handed.send(Handed {
                at: tokio::time::Instant::now(),
                subjects: records.iter().filter_map(|r| r.subject.clone()).collect(),
            });
            let failed = self
                .failures
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            std::future::ready(if failed {
                Err(CommitError::Write(StoreError::Database(
                    sqlx::Error::PoolTimedOut,
                )))
            } else {
                Ok(())
            })
        }
    }

    fn recording_writer(
        failures: usize,
    ) -> (
        AuditWriter,
        JoinHandle<()>,
        mpsc::UnboundedReceiver<Handed>,
        Arc<Metrics>,
        CancellationToken,
    ) {
        let (handed, receiver) = mpsc::unbounded_channel();
        let sink = RecordingSink {
            handed,
            failures: AtomicUsize::new(failures),
        };
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let (writer, join) =
            AuditWriter::spawn_with_sink(sink, metrics.clone(), shutdown.clone(), 10_000);
        (writer, join, receiver, metrics, shutdown)
    }

    fn subject(name: &str) -> AuditRecord {
        AuditRecord::now("action.executed", "genesys", "success").with_subject(name)
    }

    /// "Visible within 1 s", the writer's part: a record is handed to the store at
    /// most [`AuditWriter::FLUSH_INTERVAL`] after it was recorded, wherever between two ticks
    /// it arrives (measured on the writer's own clock, paused: no real time passes).
    #[tokio::test(start_paused = true)]
    async fn a_record_is_handed_to_the_store_within_one_flush_interval() {
        let (writer, join, mut handed, metrics, shutdown) = recording_writer(0);
        // Just after the first tick (immediate, with nothing queued).
        tokio::time::sleep(Duration::from_millis(1)).await;
        let recorded = tokio::time::Instant::now();
        writer.record(subject("a"));
        let batch = handed.recv().await.expect("handed over");
        assert_eq!(batch.subjects, ["a"]);
        assert!(batch.at - recorded <= AuditWriter::FLUSH_INTERVAL);

        // The worst moment: right after a tick took the queue.
        let recorded = tokio::time::Instant::now();
        writer.record(subject("b"));
        writer.record(subject("c"));
        let batch = handed.recv().await.expect("handed over");
        assert_eq!(batch.subjects, ["b", "c"]);
        assert!(batch.at - recorded <= AuditWriter::FLUSH_INTERVAL);
        assert!(batch.at > recorded, "written by the tick, not at once");

        shutdown.cancel();
        join.await.expect("writer task");
        assert!(handed.recv().await.is_none(), "no empty batches");
        assert_eq!(metrics.audit_records_dropped_total.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_is_handed_over_at_once() {
        let (writer, join, mut handed, _metrics, shutdown) = recording_writer(0);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let recorded = tokio::time::Instant::now();
        for i in 0..AuditWriter::MAX_BATCH {
            writer.record(subject(&format!("r{i}")));
        }
        let batch = handed.recv().await.expect("handed over");
        assert_eq!(batch.subjects.len(), AuditWriter::MAX_BATCH);
        assert_eq!(batch.at, recorded, "no wait for the tick");
        shutdown.cancel();
        join.await.expect("writer task");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_is_retried_then_dropped_and_counted() {
        // Fails twice, then succeeds: written on the third attempt, nothing dropped.
        let (writer, join, mut handed, metrics, shutdown) = recording_writer(2);
        writer.record(subject("a"));
        for _ in 0..3 {
            assert_eq!(handed.recv().await.expect("attempt").subjects, ["a"]);
        }
        shutdown.cancel();
        join.await.expect("writer task");
        assert_eq!(metrics.audit_records_dropped_total.get(), 0);

        // Fails every time: dropped after three attempts, counted.
        let (writer, join, mut handed, metrics, shutdown) = recording_writer(usize::MAX);
        writer.record(subject("x"));
        writer.record(subject("y"));
        for _ in 0..3 {
            assert_eq!(handed.recv().await.expect("attempt").subjects, ["x", "y"]);
        }
        writer.record(subject("z"));
        assert_eq!(handed.recv().await.expect("next batch").subjects, ["z"]);
        assert_eq!(metrics.audit_records_dropped_total.get(), 2);
        shutdown.cancel();
        join.await.expect("writer task");
    }

    #[test]
    fn times_render_as_rfc3339_utc_with_milliseconds() {
        assert_eq!(render_millis(1_795_000_000_120), "2026-11-18T11:06:40.120Z");
        assert_eq!(render_millis(0), "1970-01-01T00:00:00.000Z");
    }
}
