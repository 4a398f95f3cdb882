//! Opening the database named by `[store] url`: URL parsing (the password never leaves the
//! [`SecretString`]), pool and PRAGMA settings (on PostgreSQL one pool per server thread and
//! the background pool, see the `store` module docs), and the embedded migrations.
//!
//! # Migrations
//! `migrations/sqlite/NNNN_<topic>.sql` and `migrations/postgres/NNNN_<topic>.sql` are embedded
//! in the binary with `include_str!` and registered in [`SQLITE_MIGRATIONS`] /
//! [`POSTGRES_MIGRATIONS`] (a unit test fails when a file is not registered). They are run by
//! sqlx's `Migrator` exactly as `sqlx::migrate!` would (same versions, descriptions and
//! checksums, so either can take over a database the other migrated); the macro itself needs
//! sqlx's `macros` feature, which would build sqlx's drivers and the bundled SQLite a second
//! time for the proc macro.
//!
//! On PostgreSQL, sqlx's migrator takes `pg_advisory_lock(<id derived from the database
//! name>)` before it even creates `_sqlx_migrations` and releases it at the end (sqlx-postgres
//! 0.8.6, `migrate.rs`, `Migrate::lock`), so replicas starting at the same moment migrate one
//! after the other and the later ones find nothing to do. On a failed migration sqlx does not
//! unlock; the pool is closed then, which ends the session and with it the lock.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Backend, PostgresDb, SqliteDb, StoreError, StoreOptions};

/// One embedded migration file.
#[derive(Debug)]
struct EmbeddedMigration {
    /// The `NNNN` of the file name.
    version: i64,
    /// The `<topic>` of the file name, underscores as spaces (what `sqlx::migrate!` records).
    description: &'static str,
    /// The file's text.
    sql: &'static str,
}

/// The SQLite migrations, in order.
const SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "audit log",
        sql: include_str!("../../migrations/sqlite/0001_audit_log.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "gateway settings",
        sql: include_str!("../../migrations/sqlite/0002_gateway_settings.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "reservations",
        sql: include_str!("../../migrations/sqlite/0004_reservations.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "delivery",
        sql: include_str!("../../migrations/sqlite/0005_delivery.sql"),
    },
    EmbeddedMigration {
        version: 6,
        description: "events",
        sql: include_str!("../../migrations/sqlite/0006_events.sql"),
    },
    EmbeddedMigration {
        version: 7,
        description: "change retention",
        sql: include_str!("../../migrations/sqlite/0007_change_retention.sql"),
    },
    EmbeddedMigration {
        version: 8,
        description: "delivery indexes",
        sql: include_str!("../../migrations/sqlite/0008_delivery_indexes.sql"),
    },
];

/// The PostgreSQL migrations, in order.
const POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "audit log",
        sql: include_str!("../../migrations/postgres/0001_audit_log.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "gateway settings",
        sql: include_str!("../../migrations/postgres/0002_gateway_settings.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "reservations",
        sql: include_str!("../../migrations/postgres/0004_reservations.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "delivery",
        sql: include_str!("../../migrations/postgres/0005_delivery.sql"),
    },
    EmbeddedMigration {
        version: 6,
        description: "events",
        sql: include_str!("../../migrations/postgres/0006_events.sql"),
    },
    EmbeddedMigration {
        version: 7,
        description: "change retention",
        sql: include_str!("../../migrations/postgres/0007_change_retention.sql"),
    },
    EmbeddedMigration {
        version: 8,
        description: "delivery indexes",
        sql: include_str!("../../migrations/postgres/0008_delivery_indexes.sql"),
    },
];

/// A list of embedded migrations as a sqlx migration source.
#[derive(Debug)]
struct Embedded(&'static [EmbeddedMigration]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>>
    {
        let migrations = self
            .0
            .iter()
            .map(|m| {
                Migration::new(
                    m.version,
                    Cow::Borrowed(m.description),
                    MigrationType::Simple,
                    Cow::Borrowed(m.sql),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

/// SQLite: the busy timeout of every connection.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The writer's page cache (a negative `cache_size` counts KiB): 32 MiB, against SQLite's
/// 2 MiB, so that the pages the writer keeps touching under load (the open deliveries and the
/// indexes events, deliveries and audit records are appended to) stay in memory instead of
/// being read back from the operating system's cache on every statement. It fills only as
/// the database is used; readers keep the default.
const SQLITE_WRITER_CACHE_KIB: i64 = -32 * 1024;
/// The writer's own WAL checkpoint threshold, in pages (SQLite's default is 1 000): a
/// backstop only. [`checkpoint_periodically`] checkpoints from a reader connection, on that
/// connection's thread, long before the WAL reaches it, so that the writer does not spend its
/// time copying pages back into the database between commits.
const SQLITE_WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;
/// How often the background checkpoint runs.
const SQLITE_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The writer's prepared-statement cache (sqlx keeps 100 by default): every multi-row
/// statement kind keeps up to 67 texts prepared (see `sqlite_chunks`), beside the product's
/// one-row statements, and an evicted text is parsed and compiled again on its next use.
const SQLITE_WRITER_STATEMENTS: usize = 512;
/// SQLite: how long a writer waits for the one writer connection.
const SQLITE_WRITER_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLite: reader connections (WAL lets them read beside the writer).
const SQLITE_READERS: u32 = 4;
/// Bounds connecting and waiting for a pooled connection (sqlx has no separate TCP connect
/// timeout: establishing a connection happens inside the acquire).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL: an idle connection is closed after this long.
const POSTGRES_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// PostgreSQL: a connection is replaced after this long (spreads load after a failover).
const POSTGRES_MAX_LIFETIME: Duration = Duration::from_secs(1800);
/// PostgreSQL session settings sent at connect: server-side TCP keepalive, so that the server
/// notices a vanished replica within ≈ 10 s + 3 × 2 s and ends its session (releasing its
/// advisory locks and its transaction). sqlx 0.8 exposes no client-side socket keepalive.
const POSTGRES_SESSION_OPTIONS: [(&str, &str); 3] = [
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "2"),
    ("tcp_keepalives_count", "3"),
];

/// Which database the URL names.
enum StoreUrl<'a> {
    /// The path after `sqlite:` / `sqlite://`.
    Sqlite(&'a str),
    /// A `postgres://` / `postgresql://` URL.
    Postgres(&'a str),
}

impl<'a> StoreUrl<'a> {
    fn parse(url: &'a str) -> Result<Self, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(StoreError::InvalidUrl(
                    "a sqlite url needs a file path, e.g. sqlite://data/gateway.db".into(),
                ));
            }
            if path.contains('?') || path.starts_with(":memory:") {
                return Err(StoreError::InvalidUrl(
                    "a sqlite url is a plain file path: no parameters, no in-memory database"
                        .into(),
                ));
            }
            Ok(Self::Sqlite(path))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url))
        } else {
            Err(StoreError::InvalidUrl(
                "must start with sqlite:, postgres:// or postgresql://".into(),
            ))
        }
    }
}

/// Opens the database named by `url` and migrates it.
pub(super) async fn open(
    url: &SecretString,
    base_dir: &Path,
    options: &StoreOptions,
) -> Result<Backend, StoreError> {
    match StoreUrl::parse(url.expose_secret())? {
        StoreUrl::Sqlite(path) => open_sqlite(&base_dir.join(path)).await,
        StoreUrl::Postgres(url) => open_postgres(url, options).await,
    }
}

async fn open_sqlite(path: &Path) -> Result<Backend, StoreError> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|source| StoreError::CreateFolder {
            path: folder.to_path_buf(),
            source,
        })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    // The writer first: it creates the file, switches it to WAL and migrates it.
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .acquire_timeout(SQLITE_WRITER_ACQUIRE_TIMEOUT)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .connect_with(
            options
                .clone()
                .statement_cache_capacity(SQLITE_WRITER_STATEMENTS)
                .pragma("cache_size", SQLITE_WRITER_CACHE_KIB.to_string())
                // Statement journals and savepoint journals (every multi-row insert and
                // every merged ingest unit keeps one) in memory, not written to a temporary
                // file: they are only needed until the statement or the transaction ends.
                .pragma("temp_store", "MEMORY")
                .pragma(
                    "wal_autocheckpoint",
                    SQLITE_WRITER_AUTOCHECKPOINT_PAGES.to_string(),
                ),
        )
        .await?;
    if let Err(err) = migrate(SQLITE_MIGRATIONS, &writer).await {
        writer.close().await;
        return Err(err);
    }
    let readers = SqlitePoolOptions::new()
        .max_connections(SQLITE_READERS)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_with(options)
        .await;
    let readers = match readers {
        Ok(readers) => readers,
        Err(err) => {
            writer.close().await;
            return Err(err.into());
        }
    };
    tracing::info!(path = %path.display(), "store: SQLite opened and migrated");
    Ok(Backend::Sqlite(SqliteDb { writer, readers }))
}

async fn open_postgres(url: &str, store_options: &StoreOptions) -> Result<Backend, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|err| StoreError::InvalidUrl(redact(&err.to_string(), url)))?;
    let options = if options.get_application_name().is_none() {
        options.application_name("genesys-gateway")
    } else {
        options
    };
    let options = options.options(POSTGRES_SESSION_OPTIONS);
    let host = options.get_host().to_owned();
    let database = options.get_database().map(str::to_owned);
    // Idle connections are not pinged before use: that would cost a round trip on every
    // acquire of the hot paths; a connection broken meanwhile fails its one statement and is
    // discarded by the pool. No pool keeps connections open (`min_connections(0)`): sqlx would
    // open them from a maintenance task on this runtime, not on the thread that uses them.
    let size = store_options.connections_per_pool();
    let pool_options = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(POSTGRES_IDLE_TIMEOUT)
        .max_lifetime(POSTGRES_MAX_LIFETIME)
        .test_before_acquire(false);
    // The background pool connects now (an unreachable database fails the start, the one
    // connection it opens belongs to this runtime, where background tasks run) and migrates.
    let background = pool_options.clone().connect_with(options.clone()).await?;
    if let Err(err) = migrate(POSTGRES_MIGRATIONS, &background).await {
        // Ends the sessions, so an advisory lock left by the failed run is released too.
        background.close().await;
        return Err(err);
    }
    // The server threads' pools open nothing now: each connection is opened by the first
    // query of its thread that needs one, on that thread's runtime.
    let pools: Vec<sqlx::PgPool> = (0..store_options.pools() - 1)
        .map(|_| pool_options.clone().connect_lazy_with(options.clone()))
        .chain([background])
        .collect();
    tracing::info!(%host, database = database.as_deref().unwrap_or(""),
        pools = pools.len(), connections_per_pool = size,
        "store: PostgreSQL connected and migrated");
    Ok(Backend::Postgres(PostgresDb {
        pools: pools.into(),
    }))
}

/// Runs the embedded migrations through sqlx's migrator (locking on PostgreSQL, see the
/// module docs).
async fn migrate<'a, A>(migrations: &'static [EmbeddedMigration], pool: A) -> Result<(), StoreError>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    let migrator = Migrator::new(Embedded(migrations)).await?;
    migrator.run(pool).await?;
    Ok(())
}

/// `message` with the URL's password (raw and percent-decoded) and the URL itself removed.
fn redact(message: &str, url: &str) -> String {
    let mut out = message.replace(url, "[REDACTED]");
    if let Some(password) = password_of(url) {
        let decoded = percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned();
        for secret in [password.to_owned(), decoded] {
            if !secret.is_empty() {
                out = out.replace(&secret, "[REDACTED]");
            }
        }
    }
    out
}

/// The password part of `scheme://user:password@host/...`, if any.
fn password_of(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, password)| password)
}

/// The SQLite background checkpoint: every [`SQLITE_CHECKPOINT_EVERY`], a `PASSIVE` checkpoint
/// on a reader connection (it copies what the WAL holds back into the database beside the
/// writer, never blocking it or the readers; the WAL restarts from its beginning at the next
/// commit once everything was copied). Ends with `shutdown`; closing the store checkpoints
/// what is left.
pub(super) async fn checkpoint_periodically(
    readers: sqlx::SqlitePool,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(SQLITE_CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&readers)
            .await
        {
            Ok(_) => failing = false,
            // Once per run of failures: the writer's own checkpoint is the backstop.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "the background WAL checkpoint failed; trying again");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The background checkpoint copies committed WAL frames into the database file: without
    /// it, a few hundred rows stay in the `-wal` file (far below the writer's own threshold).
    #[tokio::test]
    async fn the_background_checkpoint_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.db");
        let store = crate::store::Store {
            backend: open_sqlite(&path).await.unwrap(),
        };
        let before = std::fs::metadata(&path).unwrap().len();
        let records: Vec<_> = (0..500)
            .map(|i| {
                crate::store::AuditRecord::now("test.row", "system", "ok")
                    .with_subject(format!("subject-{i}"))
                    .with_detail(serde_json::json!({ "filler": "x".repeat(200) }))
            })
            .collect();
        let mut tx = store.begin().await.unwrap();
        tx.append_audit_batch(&records).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            before,
            "the commit is in the WAL only"
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(store.maintenance(stop.clone()));
        let mut grown = false;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if std::fs::metadata(&path).unwrap().len() > before {
                grown = true;
                break;
            }
        }
        stop.cancel();
        task.await.unwrap();
        assert!(grown, "the database file took the checkpointed pages");
    }

    /// The files of `migrations/<dialect>/`, sorted.
    fn migration_files(dialect: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("migrations folder")
            .map(|entry| entry.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        files
    }

    /// Every file in `migrations/<dialect>/` is registered, in order, with the version and
    /// description its name gives and its exact text.
    fn assert_registered(dialect: &str, registered: &[EmbeddedMigration]) {
        let files = migration_files(dialect);
        assert_eq!(
            files.len(),
            registered.len(),
            "every file in migrations/{dialect}/ must be listed in connect.rs"
        );
        for (file, migration) in files.iter().zip(registered) {
            let name = file.file_stem().unwrap().to_str().unwrap();
            let (version, description) = name.split_once('_').expect("NNNN_topic.sql");
            assert_eq!(migration.version, version.parse::<i64>().unwrap(), "{name}");
            assert_eq!(
                migration.description,
                description.replace('_', " "),
                "{name}"
            );
            assert_eq!(
                migration.sql,
                std::fs::read_to_string(file).unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn every_migration_file_is_registered() {
        assert_registered("sqlite", SQLITE_MIGRATIONS);
        assert_registered("postgres", POSTGRES_MIGRATIONS);
    }

    #[test]
    fn both_dialects_have_the_same_versions() {
        let versions = |m: &[EmbeddedMigration]| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE_MIGRATIONS), versions(POSTGRES_MIGRATIONS));
    }

    #[test]
    fn urls_are_recognised() {
        assert!(matches!(
            StoreUrl::parse("sqlite://data/gw.db"),
            Ok(StoreUrl::Sqlite("data/gw.db"))
        ));
        assert!(matches!(
            StoreUrl::parse("sqlite:data/gw.db"),
            Ok(StoreUrl::Sqlite("data/gw.db"))
        ));
        assert!(matches!(
            StoreUrl::parse("sqlite:///var/lib/gw.db"),
            Ok(StoreUrl::Sqlite("/var/lib/gw.db"))
        ));
        assert!(matches!(
            StoreUrl::parse("postgresql://u:p@h/db"),
            Ok(StoreUrl::Postgres(_))
        ));
        for bad in [
            "mysql://u:p@h/db",
            "sqlite:",
            "sqlite::memory:",
            "sqlite://x.db?mode=ro",
        ] {
            assert!(
                matches!(StoreUrl::parse(bad), Err(StoreError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn redaction_removes_the_password_in_every_spelling() {
        let url = "postgres://gw:p%40ss-w0rd@db.example.com:5432/gw";
        assert_eq!(password_of(url), Some("p%40ss-w0rd"));
        let message = format!("bad thing near p@ss-w0rd and p%40ss-w0rd in {url}");
        let redacted = redact(&message, url);
        assert!(!redacted.contains("ss-w0rd"), "{redacted}");
        assert_eq!(password_of("postgres://gw@db/gw"), None);
        assert_eq!(password_of("postgres://db/gw"), None);
        assert_eq!(password_of("postgres://a:b@db/x@y"), Some("b"));
    }
}
