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
//! - one file per topic holding that topic's SQL for both dialects side by side: `audit.rs`
//!   now (the audit log and the [`AuditWriter`]); later `events.rs`, `deliveries.rs`,
//!   `targets.rs`, `reservations.rs`. A topic adds `impl Store { ... }` and
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
//! - PostgreSQL uses one pool per replica. Migrations are serialised across replicas starting
//!   at the same moment by sqlx's migrator, which holds `pg_advisory_lock` (keyed on the
//!   database name) around the whole run (verified in sqlx-postgres 0.8.6, `migrate.rs`).
//! - "Store durably, then acknowledge" (STYLE rule 8): a capability opens
//!   [`Store::begin`], writes its state change, its audit record
//!   ([`Transaction::append_audit`]) and its outbox rows, then commits before answering.
//!   Never await a network call (Genesys, an upstream) while holding a [`Transaction`]: on
//!   SQLite it holds the one writer, on PostgreSQL row locks and a pooled connection.
//! - SQLite commits cost an fsync each (≈ 3 500/s on the development machine, see
//!   PERF-NOTES): high-rate writers share commits. The [`AuditWriter`] batches audit records of
//!   data actions; ingest is expected to do the same for single-event requests (group commit:
//!   many requests' rows in one transaction of the writer connection, each acknowledged after
//!   that commit).
//!
//! # Secrets
//! The store URL may hold a password. It is only ever held as a [`SecretString`], parsed here,
//! and never appears in a [`StoreError`], a log line or a `Debug` output.

mod audit;
mod connect;
mod page;

use std::path::Path;

use secrecy::SecretString;

pub use audit::{AuditEntry, AuditFilter, AuditRecord, AuditWriter};
pub use page::{Page, PageRequest};

/// Runs `$body` once per backend with `$pool` bound to that backend's pool (`&SqlitePool` or
/// `&PgPool`): `write` picks the SQLite writer, `read` the SQLite readers; PostgreSQL has one
/// pool for both.
macro_rules! with_pool {
    ($store:expr, write |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite(db) => {
                let $pool = &db.writer;
                $body
            }
            $crate::store::Backend::Postgres(db) => {
                let $pool = &db.pool;
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
                let $pool = &db.pool;
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

/// PostgreSQL: one pool.
#[derive(Clone)]
struct PostgresDb {
    pool: sqlx::PgPool,
}

impl Store {
    /// Connects and runs the embedded migrations.
    ///
    /// `sqlite://data/gateway.db` (or `sqlite:data/gateway.db`) is relative to `base_dir` (the
    /// config file's folder) and is created with its folder on first run; `sqlite:///abs/x.db`
    /// is absolute. `postgres://user:pass@host:port/db` (or `postgresql://`) opens a pool; any
    /// number of replicas may connect at once, migrations run one after the other.
    ///
    /// # Errors
    /// [`StoreError::InvalidUrl`] for an unusable URL, [`StoreError::CreateFolder`] when the
    /// SQLite folder cannot be made, [`StoreError::Database`] when the database cannot be
    /// opened, [`StoreError::Migrate`] when migrations fail.
    pub async fn connect(url: &SecretString, base_dir: &Path) -> Result<Self, StoreError> {
        let backend = connect::open(url, base_dir).await?;
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
    /// promptly and call no other writing method of the store while holding it.
    ///
    /// # Errors
    /// [`StoreError::Database`] when no connection can be had or `BEGIN` fails.
    pub async fn begin(&self) -> Result<Transaction, StoreError> {
        let inner = match &self.backend {
            Backend::Sqlite(db) => {
                TransactionInner::Sqlite(db.writer.begin_with("BEGIN IMMEDIATE").await?)
            }
            Backend::Postgres(db) => TransactionInner::Postgres(db.pool.begin().await?),
        };
        Ok(Transaction { inner })
    }

    /// Closes every connection; later calls fail with [`StoreError::Database`].
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.readers.close().await;
                db.writer.close().await;
            }
            Backend::Postgres(db) => db.pool.close().await,
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
    async fn futures_are_send(store: Store, mut tx: Transaction, record: AuditRecord) {
        assert_send(&store.begin());
        assert_send(&store.ping());
        assert_send(&store.append_audit(&record));
        assert_send(&store.append_audit_batch(std::slice::from_ref(&record)));
        assert_send(&store.query_audit(&AuditFilter::default(), &PageRequest::default()));
        assert_send(&store.prune_audit(record.at, 1));
        assert_send(&tx.append_audit(&record));
        assert_send(&tx.append_audit_batch(std::slice::from_ref(&record)));
        assert_send(&tx);
        assert_send(&tx.commit());
    }

    #[test]
    fn handles_are_shareable() {
        assert_send_sync::<Store>();
        assert_send_sync::<AuditWriter>();
    }
}
