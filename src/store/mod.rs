//! Durable state: the [`Store`] over SQLite (one replica) or PostgreSQL (several replicas).
//!
//! The rest of the gateway codes against [`Store`] and [`Transaction`] only; which database runs
//! underneath is chosen by the `[store] url` scheme (`sqlite:` or `postgres://`/`postgresql://`)
//! and never leaks out of this module.
//!
//! # Layout
//! - this file: [`Store`], [`Transaction`], [`StoreError`], the backend enum and the dispatch
//!   macros every topic file uses;
//! - `connect.rs`: opening the databases (URL parsing with the password kept secret, pool and
//!   PRAGMA settings, migrations serialised across replicas);
//! - `page.rs`: [`PageRequest`], [`Page`] and the opaque keyset cursor shared by every list;
//! - `commit.rs`: the [`GroupCommitter`], through which high-rate producers share commits
//!   (see "Durability and concurrency");
//! - one file per topic holding that topic's SQL for both dialects side by side: `audit.rs`
//!   (the audit log and the [`AuditWriter`]), `reservations.rs` (callback reservations, their
//!   numbered changes, the leader lock and the change listener), `deliveries.rs` (the delivery
//!   outbox: messages, deliveries, leased claims), `targets.rs` (delivery destinations and
//!   their shared verification state), `events.rs` (accepted ingest events and their
//!   idempotency keys); `settings.rs` keeps small named values of the gateway's
//!   own (random keys, fingerprints). A topic adds `impl Store { ... }` and
//!   `impl Transaction { ... }` blocks in its own file and its tables in
//!   `migrations/{sqlite,postgres}/NNNN_<topic>.sql`.
//!
//! Keeping a topic's SQL in one file (rather than a `sqlite.rs` and a `postgres.rs` holding
//! every topic) puts both dialects of one statement next to each other: most statements are one
//! shared text (`$1`-style placeholders work on both, times are `BIGINT` epoch milliseconds, ids
//! and JSON are plain integers and text), and where the dialects differ (`FOR UPDATE SKIP
//! LOCKED`, `LISTEN/NOTIFY`, upserts) the difference is visible in one place.
//!
//! # Dispatch
//! Static, no `dyn`: [`Store`] holds an internal enum of the two sqlx pools and [`Transaction`]
//! an enum of the two sqlx transactions. The crate-internal macros `with_pool!` and `with_tx!`
//! expand one body of code once per backend, so a statement written once runs on either.
//! Queries use the runtime `sqlx::query*` functions (no database at build time).
//!
//! # Durability and concurrency
//! - SQLite runs in WAL mode with `synchronous = FULL`, foreign keys on and a busy timeout.
//!   Every write goes through one dedicated writer connection (SQLite has one writer at a time
//!   anyway): writers queue in the pool in FIFO order instead of spinning in the busy handler,
//!   and a transaction can never fail to upgrade from reading to writing. Writing
//!   transactions start with `BEGIN IMMEDIATE`. Reads use a separate pool of readers, which WAL
//!   lets run beside the writer. Consequence: a task holding a [`Transaction`] must not call
//!   another writing method of the [`Store`] before it commits or drops it (it would wait for
//!   itself until the acquire timeout).
//! - PostgreSQL: one pool per server thread plus one for background tasks (see "PostgreSQL
//!   connections and runtimes" below). Migrations are serialised across replicas starting
//!   at the same moment by sqlx's migrator, which holds `pg_advisory_lock` (keyed on the
//!   database name) around the whole run (verified in sqlx-postgres 0.8.6, `migrate.rs`).
//! - "Store durably, then acknowledge": a capability opens [`Store::begin`], writes its state
//!   change, its audit record ([`Transaction::append_audit`]) and its outbox rows, then
//!   commits before answering. Never await a network call (Genesys, an upstream) while
//!   holding a [`Transaction`]: on SQLite it holds the one writer, on PostgreSQL row locks and
//!   a pooled connection.
//! - Group commit. A SQLite commit costs an fsync (≈ 3 500 single-row commits/s on a small
//!   machine, against ≈ 99 000 rows/s in 100-row commits), so producers that write at a high
//!   rate do not each open a transaction: they hand their writes, as units of work
//!   ([`CommitWork`]), to the one [`GroupCommitter`] of the process. Its task takes every unit
//!   queued (up to a bound) into one transaction of the writer connection, runs each in a
//!   savepoint of its own (a unit that fails, e.g. on a unique key, is rolled back alone and
//!   gets its own error while the others commit), commits once and only then answers every
//!   producer: an answer means durable. It waits for nothing to fill a batch: while one commit
//!   is in flight the next units queue, and the next batch takes them all, so at low load a
//!   producer waits one commit and under load the commits per second stay what the disk
//!   allows while the rows per commit grow. Its queue is bounded (producers wait for room under
//!   their own deadline) and a stopped committer refuses at once. The [`AuditWriter`] writes
//!   its batches of data-action audit records as units of it; event ingest is to hand it
//!   each accepted event as one. On PostgreSQL it runs on the background pool, with at most 64
//!   units per transaction (see the `commit` module docs).
//! - Shutdown order: producers first (request handlers drain, then the [`AuditWriter`] writes
//!   what it holds through the committer), the [`GroupCommitter`] last (it commits what was
//!   queued), then [`Store::close`].
//!
//! # PostgreSQL connections and runtimes
//! The server runs one current-thread tokio runtime per core (`crate::runtime`). A sqlx
//! PostgreSQL connection is a tokio socket, registered on the reactor of the runtime that
//! opened it, and only that runtime's thread polls the reactor: a query from another thread
//! on that connection waits until that thread gets round to it (a busy thread delays every
//! other thread's queries), and once that runtime ends the connection is dead. With a single
//! shared pool any connection could end up on any thread. So the store keeps one pool per
//! server thread and one for everything else:
//!
//! - [`Store::connect_with`] is told the number of server threads ([`StoreOptions::threads`])
//!   and makes `threads + 1` pools, each of `max(2, max_connections / (threads + 1))`
//!   connections, all opened lazily (`min_connections(0)`): a connection is opened by the
//!   first query that needs it, on the runtime of the thread that makes it.
//! - Every call picks its pool with [`crate::runtime::worker_index`]: server thread `i` uses
//!   pool `i`, any other thread (the background tasks' runtime, tests, tools) the background
//!   pool. So a connection is only ever used on the runtime that opened it. The background
//!   pool is the one [`Store::connect_with`] opens eagerly (to report an unreachable database
//!   at once) and migrates with; its connections live on the caller's runtime, which is where
//!   background tasks run. A worker index beyond `threads` (a misconfigured caller) falls back
//!   to the background pool.
//! - A [`Transaction`] holds one connection of the pool of the thread that began it: use it
//!   on that thread (a task on a current-thread runtime never moves, so handlers do).
//! - sqlx hands a connection back to its pool from a task spawned on the runtime of the
//!   thread that used it (after a `ping` round trip, sqlx-core 0.8.6 `pool/connection.rs`):
//!   with a pool per thread that is the connection's own runtime too.
//! - sqlx's idle reaper of each pool runs on the runtime that called
//!   [`Store::connect_with`]; it only closes idle connections, which is harmless from another
//!   runtime (a failing close just drops the connection). [`Store::close`] closes every pool;
//!   call it while the server runtimes are still alive so that their connections end cleanly.
//!
//! SQLite needs none of this: sqlx runs each SQLite connection on a thread of its own and
//! talks to it over channels, so no database socket belongs to any runtime. (The one writer
//! connection is still handed back to its pool by a task on the runtime of the thread that
//! used it, so a server thread that is slow to run its tasks delays the next writer a little.)
//!
//! # Secrets
//! The store URL may hold a password. It is only ever held as a [`SecretString`], parsed here,
//! and never appears in a [`StoreError`], a log line or a `Debug` output.

mod audit;
mod commit;
mod connect;
mod deliveries;
mod events;
mod page;
mod reservations;
mod settings;
mod targets;

use std::path::Path;
use std::sync::Arc;

use secrecy::SecretString;

use crate::runtime;

pub use audit::{AuditEntry, AuditFilter, AuditRecord, AuditRetention, AuditWriter};
pub use commit::{
    CommitError, CommitFn, CommitOptions, CommitStats, CommitWork, GroupCommitter,
    POSTGRES_MAX_BATCH, Receipt,
};
pub use deliveries::{
    Claim, ClaimedDelivery, DeliveryFilter, DeliveryRow, Finish, MessageRow, NewDelivery,
    QueueStats,
};
pub use events::{EventRow, StoredKey};
pub use page::{Page, PageRequest};
pub use reservations::{
    CHANGES_CHANNEL, ChangeListener, ChangeRow, LeaderSession, ReservationFilter, ReservationRow,
};
pub use targets::DestinationRow;

/// Runs `$body` once per backend with `$pool` bound to that backend's pool (`&SqlitePool` or
/// `&PgPool`): `write` picks the SQLite writer, `read` the SQLite readers; on PostgreSQL both
/// pick the calling thread's pool (see "PostgreSQL connections and runtimes").
macro_rules! with_pool {
    ($store:expr, write |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite(db) => {
                let $pool = &db.writer;
                $body
            }
            $crate::store::Backend::Postgres(db) => {
                let $pool = db.pool();
                $body
            }
        }
    };
    ($store:expr, read |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite(db) => {
                let $pool = &db.readers;
                $body
            }
            $crate::store::Backend::Postgres(db) => {
                let $pool = db.pool();
                $body
            }
        }
    };
}

/// Runs `$body` once per backend with `$conn` bound to the transaction's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`, both sqlx executors).
macro_rules! with_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut $tx.inner {
            $crate::store::TransactionInner::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::store::TransactionInner::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

pub(crate) use {with_pool, with_tx};

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Embedded SQLite (one replica).
    Sqlite,
    /// PostgreSQL (several replicas).
    Postgres,
}

/// Store failures. Messages never contain the database URL or its password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store URL is not usable (the message names the problem, never the URL).
    #[error("invalid store url: {0}")]
    InvalidUrl(String),
    /// The SQLite file or its folder cannot be created.
    #[error("cannot create the database folder {path}: {source}")]
    CreateFolder {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A page cursor that this store did not hand out (or that was altered). The admin API
    /// answers it with 400 `bad.request`.
    #[error("the cursor is not valid")]
    InvalidCursor,
}

impl StoreError {
    /// Whether the database refused a write because it would duplicate a unique key (on both
    /// backends): how a producer tells "already there" from a failure.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(err)) if err.is_unique_violation())
    }
}

/// The gateway's durable state. Cheap to clone (pools are reference-counted); `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately not the pools' options: nothing here may ever print the URL.
        f.debug_struct("Store")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// The two databases (static dispatch).
#[derive(Clone)]
enum Backend {
    Sqlite(SqliteDb),
    Postgres(PostgresDb),
}

/// SQLite: one writer connection, several readers (WAL lets them run beside the writer).
#[derive(Clone)]
struct SqliteDb {
    writer: sqlx::SqlitePool,
    readers: sqlx::SqlitePool,
}

/// PostgreSQL: one pool per server thread, then the background pool (see "PostgreSQL
/// connections and runtimes").
#[derive(Clone)]
struct PostgresDb {
    /// `pools[i]` serves server thread `i`; the last one serves every other thread.
    pools: Arc<[sqlx::PgPool]>,
}

impl PostgresDb {
    /// The pool of the calling thread.
    fn pool(&self) -> &sqlx::PgPool {
        &self.pools[pool_slot(runtime::worker_index(), self.pools.len())]
    }
}

/// The index of the pool serving `worker` among `pools` pools (the last is the background
/// pool).
/// Rows per multi-row SQLite statement (at most 10 parameters a row: far below SQLite's 32 766).
pub(crate) const SQLITE_ROWS_PER_STATEMENT: usize = 500;
/// Rows per PostgreSQL statement of one array per column (`UNNEST`).
pub(crate) const POSTGRES_ROWS_PER_STATEMENT: usize = 1000;

/// `{prefix}{row}, {row}, … {suffix}` with `rows` copies of `row` (SQLite multi-row `INSERT`s).
/// `row` uses anonymous `?` parameters: numbered `$N` parameters make SQLite's prepare
/// quadratic in their count. One statement per batch matters: every sqlx SQLite statement is
/// a round trip to the connection's worker thread. Statements take their texts from
/// [`sqlite_statements`], which only makes texts of the sizes of [`sqlite_chunks`].
fn sqlite_multi_row(prefix: &str, row: &str, rows: usize, suffix: &str) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * (row.len() + 2) + suffix.len());
    sql.push_str(prefix);
    for n in 0..rows {
        if n > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql.push_str(suffix);
    sql
}

/// Rows up to which a multi-row SQLite statement takes the rest of a batch in one chunk of its
/// exact size (see [`sqlite_chunks`]).
pub(crate) const SQLITE_EXACT_ROWS: usize = 64;

/// The chunks a multi-row SQLite statement takes `rows` in: as many of
/// [`SQLITE_ROWS_PER_STATEMENT`] rows as there are; then, while more than
/// [`SQLITE_EXACT_ROWS`] are left, the largest power of two that fits; then the rest in one
/// chunk (100 rows: 64 + 36; 37 rows: 37). Every statement kind thus has at most 67 texts
/// (500, 256, 128, and 1 to 64 rows), each prepared once and kept in the connection's
/// statement cache: with one text per batch size, not kept, every batch's statements were
/// parsed and compiled anew, which cost the writer more than executing them. The exact sizes
/// up to 64 keep the rows of merged single-event requests (a few dozen) in one statement: each
/// statement is a round trip to the connection's thread, and splitting them into powers of two
/// made those commits slower.
fn sqlite_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = if rest.len() >= SQLITE_ROWS_PER_STATEMENT {
            SQLITE_ROWS_PER_STATEMENT
        } else if rest.len() <= SQLITE_EXACT_ROWS {
            rest.len()
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// The multi-row SQLite statements that write or read `rows`: each chunk of [`sqlite_chunks`]
/// with its text `{prefix}{row}, {row}, … {suffix}` ([`sqlite_multi_row`]). Run each text as a
/// prepared statement (persistent, sqlx's default): the texts repeat, so they are prepared once.
pub(crate) fn sqlite_statements<'r, T>(
    rows: &'r [T],
    prefix: &'r str,
    row: &'r str,
    suffix: &'r str,
) -> impl Iterator<Item = (&'r [T], String)> + 'r {
    sqlite_chunks(rows)
        .map(move |chunk| (chunk, sqlite_multi_row(prefix, row, chunk.len(), suffix)))
}

fn pool_slot(worker: Option<usize>, pools: usize) -> usize {
    let background = pools - 1;
    worker.filter(|&i| i < background).unwrap_or(background)
}

/// How the process that opens a [`Store`] uses it. Build it with
/// `StoreOptions { threads, ..StoreOptions::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many server threads (each its own runtime, marked with
    /// [`crate::runtime::set_worker_index`]) call the store: `[server] io_threads` as given by
    /// `ServerSettings::io_thread_count`. 0 counts as 1. Default 1.
    pub threads: usize,
    /// PostgreSQL: the connections this replica should open at most, shared out over the
    /// `threads + 1` pools; each pool gets at least 2, so many threads may exceed it. Default
    /// 10 (the server's default `max_connections` of 100 leaves room for several replicas and
    /// operators). Ignored by SQLite.
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            max_connections: 10,
        }
    }
}

impl StoreOptions {
    /// The number of PostgreSQL pools: one per server thread and the background pool.
    fn pools(&self) -> usize {
        self.threads.max(1) + 1
    }

    /// The size of each PostgreSQL pool: `max(2, max_connections / pools)`.
    fn connections_per_pool(&self) -> u32 {
        let pools = u32::try_from(self.pools()).unwrap_or(u32::MAX);
        (self.max_connections / pools).max(2)
    }
}

impl Store {
    /// Connects for one server thread ([`StoreOptions::default`]) and runs the embedded
    /// migrations; see [`Store::connect_with`].
    ///
    /// # Errors
    /// As [`Store::connect_with`].
    pub async fn connect(url: &SecretString, base_dir: &Path) -> Result<Self, StoreError> {
        Self::connect_with(url, base_dir, StoreOptions::default()).await
    }

    /// Connects and runs the embedded migrations.
    ///
    /// `sqlite://data/gateway.db` (or `sqlite:data/gateway.db`) is relative to `base_dir` (the
    /// config file's folder) and is created with its folder on first run; `sqlite:///abs/x.db`
    /// is absolute. `postgres://user:pass@host:port/db` (or `postgresql://`) opens one pool
    /// per server thread of `options` plus one for background tasks (see the module docs); any
    /// number of replicas may connect at once, migrations run one after the other.
    ///
    /// Call it on the runtime that will run the background tasks: the background pool's
    /// connections belong to it.
    ///
    /// # Errors
    /// [`StoreError::InvalidUrl`] for an unusable URL, [`StoreError::CreateFolder`] when the
    /// SQLite folder cannot be made, [`StoreError::Database`] when the database cannot be
    /// opened, [`StoreError::Migrate`] when migrations fail.
    pub async fn connect_with(
        url: &SecretString,
        base_dir: &Path,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let backend = connect::open(url, base_dir, &options).await?;
        Ok(Self { backend })
    }

    /// Which database this is.
    pub fn kind(&self) -> StoreKind {
        match self.backend {
            Backend::Sqlite(_) => StoreKind::Sqlite,
            Backend::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// Checks that the database answers (`SELECT 1`).
    ///
    /// # Errors
    /// [`StoreError::Database`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(
            self,
            read | pool | {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        );
        Ok(())
    }

    /// Begins a writing transaction. Write the state change, its audit record and its outbox
    /// rows through it, then [`Transaction::commit`]; dropping it uncommitted rolls back.
    ///
    /// On SQLite this takes the one writer connection (`BEGIN IMMEDIATE`): commit or drop it
    /// promptly and call no other writing method of the store while holding it. On PostgreSQL
    /// it takes a connection of the calling thread's pool: use the transaction on that thread.
    ///
    /// # Errors
    /// [`StoreError::Database`] when no connection can be had or `BEGIN` fails.
    pub async fn begin(&self) -> Result<Transaction, StoreError> {
        let inner = match &self.backend {
            Backend::Sqlite(db) => {
                TransactionInner::Sqlite(db.writer.begin_with("BEGIN IMMEDIATE").await?)
            }
            Backend::Postgres(db) => TransactionInner::Postgres(db.pool().begin().await?),
        };
        Ok(Transaction { inner })
    }

    /// The store's own background work until `shutdown`: on SQLite the WAL checkpoint, off
    /// the writer's thread; nothing on PostgreSQL.
    pub fn maintenance(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let readers = match &self.backend {
            Backend::Sqlite(db) => Some(db.readers.clone()),
            Backend::Postgres(_) => None,
        };
        async move {
            if let Some(readers) = readers {
                connect::checkpoint_periodically(readers, shutdown).await;
            }
        }
    }

    /// Closes every connection (waiting for those in use to come back); later calls fail with
    /// [`StoreError::Database`].
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.readers.close().await;
                db.writer.close().await;
            }
            Backend::Postgres(db) => {
                futures_util::future::join_all(db.pools.iter().map(sqlx::PgPool::close)).await;
            }
        }
    }
}

/// An open writing transaction on the [`Store`]. Dropping it without [`Transaction::commit`]
/// rolls it back.
pub struct Transaction {
    inner: TransactionInner,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// The two sqlx transactions (static dispatch).
enum TransactionInner {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Transaction {
    /// Which database this transaction runs on.
    pub fn kind(&self) -> StoreKind {
        match self.inner {
            TransactionInner::Sqlite(_) => StoreKind::Sqlite,
            TransactionInner::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// Makes everything written through this transaction durable (on SQLite: fsynced).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the commit fails; nothing was written then.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self.inner {
            TransactionInner::Sqlite(tx) => tx.commit().await?,
            TransactionInner::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Discards everything written through this transaction (dropping it does the same).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the connection failed; nothing was written then either.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.inner {
            TransactionInner::Sqlite(tx) => tx.rollback().await?,
            TransactionInner::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync + Clone>() {}

    /// Compiles only if what handlers and background tasks await is `Send` (never called).
    #[allow(dead_code)]
    async fn futures_are_send(
        store: Store,
        mut tx: Transaction,
        record: AuditRecord,
        committer: GroupCommitter,
    ) {
        assert_send(&store.begin());
        assert_send(&store.ping());
        assert_send(&store.append_audit(&record));
        assert_send(&store.append_audit_batch(std::slice::from_ref(&record)));
        assert_send(&store.query_audit(&AuditFilter::default(), &PageRequest::default()));
        assert_send(&store.prune_audit(record.at, 1));
        assert_send(&tx.append_audit(&record));
        assert_send(&tx.append_audit_batch(std::slice::from_ref(&record)));
        let unit = || {
            let record = record.clone();
            CommitFn::new(move |tx: &mut Transaction| {
                Box::pin(async move { tx.append_audit(&record).await })
                    as futures_util::future::BoxFuture<'_, _>
            })
        };
        assert_send(&committer.submit(unit()));
        assert_send(&committer.enqueue(unit()));
        assert_send(&tx);
        assert_send(&tx.commit());
    }

    #[test]
    fn sqlite_chunks_take_full_statements_then_powers_of_two_then_the_rest() {
        let sizes = |n: usize| {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = sqlite_chunks(&rows).collect();
            // In order, nothing lost or repeated.
            assert_eq!(chunks.concat(), rows, "{n} rows");
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(37), [37]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(100), [64, 36]);
        assert_eq!(sizes(200), [128, 64, 8]);
        assert_eq!(sizes(500), [500]);
        assert_eq!(sizes(1300), [500, 500, 256, 44]);
        // Whatever the count, a statement kind has at most 67 texts.
        let mut texts = std::collections::HashSet::new();
        for n in 0..=2 * SQLITE_ROWS_PER_STATEMENT + 1 {
            texts.extend(sizes(n));
        }
        let mut texts: Vec<usize> = texts.into_iter().collect();
        texts.sort_unstable();
        let expected: Vec<usize> = (1..=SQLITE_EXACT_ROWS).chain([128, 256, 500]).collect();
        assert_eq!(texts, expected);
    }

    #[test]
    fn server_threads_have_their_own_pool_and_everything_else_the_last() {
        // Three server threads: pools 0, 1, 2 and the background pool 3.
        assert_eq!(pool_slot(Some(0), 4), 0);
        assert_eq!(pool_slot(Some(2), 4), 2);
        assert_eq!(pool_slot(None, 4), 3);
        assert_eq!(pool_slot(Some(3), 4), 3, "beyond the threads: background");
        assert_eq!(pool_slot(Some(99), 4), 3);
        assert_eq!(
            pool_slot(Some(0), 1),
            0,
            "no server pool at all: background"
        );
    }

    #[test]
    fn pools_share_the_connections_with_at_least_two_each() {
        let options = |threads| StoreOptions {
            threads,
            ..StoreOptions::default()
        };
        assert_eq!(options(1).pools(), 2);
        assert_eq!(options(1).connections_per_pool(), 5);
        assert_eq!(options(0).pools(), 2, "0 threads counts as 1");
        assert_eq!(options(2).connections_per_pool(), 3);
        assert_eq!(options(4).connections_per_pool(), 2);
        assert_eq!(options(16).connections_per_pool(), 2);
        let big = StoreOptions {
            threads: 3,
            max_connections: 40,
        };
        assert_eq!(big.connections_per_pool(), 10);
    }

    #[test]
    fn handles_are_shareable() {
        assert_send_sync::<Store>();
        assert_send_sync::<AuditWriter>();
        assert_send_sync::<GroupCommitter>();
    }
}
