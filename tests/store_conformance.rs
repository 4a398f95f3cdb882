//! Store conformance: one suite of cases (module `cases`), each run against SQLite and against
//! PostgreSQL (`sqlite::<case>` and `postgres::<case>`).
//!
//! PostgreSQL comes from `GATEWAY_TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`): every test creates its own database
//! `gw_test_<uuid>` through it and drops it at the end, even when the test fails. Without the
//! variable the PostgreSQL variants print `skipped: GATEWAY_TEST_DATABASE_URL not set` and
//! pass (`.ci/run` always sets it).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use genesys_gateway::runtime::set_worker_index;
use genesys_gateway::store::{
    AuditEntry, AuditFilter, AuditRecord, AuditRetention, AuditWriter, CommitError, CommitFn,
    CommitOptions, CommitWork, GroupCommitter, PageRequest, Receipt, Store, StoreError, StoreKind,
    StoreOptions, Transaction,
};
use genesys_gateway::telemetry::Metrics;
use secrecy::SecretString;
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const PG_ENV: &str = "GATEWAY_TEST_DATABASE_URL";
const SQLITE_URL: &str = "sqlite://data/gw.db";
/// 2026-11-22T20:00:00.000Z: the base time of records written by the cases.
const T0: i64 = 1_795_377_600_000;
/// How long a case waits (real time, polling) for something a background task does. Generous:
/// the machine is shared, and the database's speed is never what a test asserts.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A freshly created store of one backend, with what is needed to open it again.
struct TestDb {
    store: Store,
    url: SecretString,
    dir: tempfile::TempDir,
    /// Dropped last: drops the PostgreSQL database.
    _pg: Option<PgDatabase>,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = SecretString::from(SQLITE_URL);
        let store = Store::connect(&url, dir.path())
            .await
            .expect("sqlite store");
        Self {
            store,
            url,
            dir,
            _pg: None,
        }
    }

    /// `None` (after printing the skip line) when no PostgreSQL is configured.
    async fn postgres() -> Option<Self> {
        let (pg, url) = PgDatabase::create().await?;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::connect(&url, dir.path())
            .await
            .expect("postgres store");
        Some(Self {
            store,
            url,
            dir,
            _pg: Some(pg),
        })
    }

    /// A second, independent store on the same database.
    async fn connect_again(&self) -> Store {
        Store::connect(&self.url, self.dir.path())
            .await
            .expect("second connect")
    }

    /// A second store on the same database, with these options.
    async fn connect_again_with(&self, options: StoreOptions) -> Store {
        Store::connect_with(&self.url, self.dir.path(), options)
            .await
            .expect("connect with options")
    }

    /// Runs `sql` on a connection of its own, beside the store (schema only tests need).
    async fn execute_directly(&self, sql: &str) {
        use secrecy::ExposeSecret;
        match self.store.kind() {
            StoreKind::Sqlite => {
                let file = self.dir.path().join("data").join("gw.db");
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                        .await
                        .expect("open the file");
                sqlx::query(sql).execute(&mut conn).await.expect(sql);
                conn.close().await.ok();
            }
            StoreKind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(self.url.expose_secret())
                    .await
                    .expect("connect");
                sqlx::query(sql).execute(&mut conn).await.expect(sql);
                conn.close().await.ok();
            }
        }
    }
}

/// A group committer on a test's store, with what stops it.
struct Committer {
    handle: GroupCommitter,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Committer {
    fn spawn(store: &Store) -> Self {
        Self::spawn_with(store, CommitOptions::default())
    }

    fn spawn_with(store: &Store, options: CommitOptions) -> Self {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let handle = GroupCommitter::spawn(store.clone(), options, shutdown.clone(), &tasks);
        Self {
            handle,
            shutdown,
            tasks,
        }
    }

    /// Cancels it and waits until it has ended.
    async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(PATIENCE, self.tasks.wait())
            .await
            .expect("the committer ends when told to");
    }
}

/// A PostgreSQL database of one test, dropped (`WITH (FORCE)`) when this is dropped.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    /// Creates `gw_test_<uuid>`; `None` without `GATEWAY_TEST_DATABASE_URL`.
    async fn create() -> Option<(Self, SecretString)> {
        let Ok(admin_url) = std::env::var(PG_ENV) else {
            // Written to stderr directly: libtest hides `eprintln!` of passing tests, and a
            // skipped PostgreSQL test must be visible in plain `cargo test` output.
            use std::io::Write;
            let test = std::thread::current()
                .name()
                .unwrap_or("a PostgreSQL test")
                .to_owned();
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test} (PostgreSQL): {PG_ENV} not set"
            );
            return None;
        };
        let name = format!("gw_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to GATEWAY_TEST_DATABASE_URL");
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = database_url(&admin_url, &name);
        Some((Self { admin_url, name }, SecretString::from(url)))
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        // Drop may run inside a runtime (or while panicking): use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&sql).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: test database {} not dropped", self.name);
        }
    }
}

/// `admin` with its database replaced by `name` (query parameters kept).
fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(base, query)| (base, Some(query)));
    let authority = base.find("://").expect("a url") + 3;
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut url = format!("{}/{name}", &base[..path]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Writes every case twice: `sqlite::<case>` and `postgres::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = super::TestDb::sqlite().await;
                    super::cases::$case(&db).await;
                    db.store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(db) = super::TestDb::postgres().await else { return };
                    super::cases::$case(&db).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

conformance!(
    connect_and_migrate_twice,
    ping_answers_until_closed,
    rolled_back_audit_is_invisible_committed_is_visible,
    batch_append_writes_every_record_with_its_fields,
    query_is_newest_first_and_filters_by_since_and_kind,
    limit_is_clamped_to_1_and_1000,
    cursor_walk_visits_every_record_once,
    cursor_is_stable_under_concurrent_inserts,
    bad_cursor_is_a_distinct_error,
    writer_makes_records_visible_by_its_periodic_flush,
    writer_flushes_what_is_queued_on_shutdown,
    writer_drops_and_counts_when_its_queue_is_full,
    committer_shares_commits_among_concurrent_units,
    committer_fails_a_unique_violation_alone,
    committer_answers_only_after_the_commit,
    committer_commits_what_was_queued_at_shutdown_then_refuses_at_once,
    audit_flood_never_blocks_while_the_committer_is_jammed,
    prune_deletes_the_oldest_records_in_bounded_steps,
    pruner_deletes_what_is_past_retention_and_keeps_running,
    server_threads_keep_working_when_one_runtime_ends,
    secrets_and_settings_are_kept_and_shared,
    webhook_subscriptions_are_kept_paged_and_shared,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().expect("valid time")
}

/// A record at `T0 + offset_ms` of `kind`, its subject naming it.
fn record(offset_ms: i64, kind: &str, subject: &str) -> AuditRecord {
    AuditRecord {
        at: at(T0 + offset_ms),
        kind: kind.to_owned(),
        actor: "system".to_owned(),
        request_id: None,
        subject: Some(subject.to_owned()),
        outcome: "success".to_owned(),
        detail: serde_json::json!({}),
    }
}

/// Every record matching `filter`, newest first, walked with pages of `limit`.
async fn walk(store: &Store, filter: &AuditFilter, limit: u32) -> Vec<AuditEntry> {
    let mut all = Vec::new();
    let mut page = PageRequest::first(limit);
    loop {
        let answer = store.query_audit(filter, &page).await.expect("query");
        assert!(answer.entities.len() <= limit as usize);
        all.extend(answer.entities);
        match answer.next_cursor {
            Some(cursor) => page = PageRequest::after(limit, cursor),
            None => return all,
        }
    }
}

async fn all_entries(store: &Store) -> Vec<AuditEntry> {
    walk(store, &AuditFilter::default(), 1000).await
}

fn subjects(entries: &[AuditEntry]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e.subject.as_deref().unwrap_or(""))
        .collect()
}

/// Waits (real time, polling) until what `store` lists satisfies `done` or [`PATIENCE`] has
/// passed; returns what it lists then.
async fn wait_for_entries(store: &Store, done: impl Fn(&[AuditEntry]) -> bool) -> Vec<AuditEntry> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let entries = all_entries(store).await;
        if done(&entries) || Instant::now() >= deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A unit appending `record(offset_ms, kind, subject)`; its output is the subject.
fn append_unit(offset_ms: i64, kind: &str, subject: &str) -> impl CommitWork<Output = String> {
    let record = record(offset_ms, kind, subject);
    CommitFn::new(move |tx: &mut Transaction| {
        Box::pin(async move {
            tx.append_audit(&record).await?;
            Ok(record.subject.clone().unwrap_or_default())
        }) as BoxFuture<'_, _>
    })
}

/// Queues a unit that holds its batch open, and waits until the committer runs it: units
/// queued until the returned sender fires (or is dropped) are all taken into the next batch.
async fn hold(committer: &GroupCommitter) -> (oneshot::Sender<()>, Receipt<()>) {
    let (started_tx, started) = oneshot::channel::<()>();
    let (release, release_rx) = oneshot::channel::<()>();
    let gate = CommitFn::new(move |_tx: &mut Transaction| {
        Box::pin(async move {
            let _ = started_tx.send(());
            let _ = release_rx.await;
            Ok(())
        }) as BoxFuture<'_, _>
    });
    let receipt = committer.enqueue(gate).await.expect("gate queued");
    tokio::time::timeout(PATIENCE, started)
        .await
        .expect("the gate's batch starts")
        .expect("gate started");
    (release, receipt)
}

/// A record of `kind` at `at`, its subject naming it.
fn record_at(at: DateTime<Utc>, kind: &str, subject: &str) -> AuditRecord {
    AuditRecord {
        at,
        ..record(0, kind, subject)
    }
}

/// What one server thread (or the background) does in
/// `server_threads_keep_working_when_one_runtime_ends`: `TASKS` concurrent tasks, each a
/// single-statement append, a transaction and a query. Returns the failures.
async fn busy(store: &Store, tag: &str) -> Vec<String> {
    const TASKS: usize = 4;
    let tasks = (0..TASKS).map(|i| async move {
        let one = async {
            store
                .append_audit(&record(0, "test.threads", &format!("{tag}-{i}-a")))
                .await?;
            let mut tx = store.begin().await?;
            tx.append_audit(&record(1, "test.threads", &format!("{tag}-{i}-tx")))
                .await?;
            tx.commit().await?;
            store
                .query_audit(&AuditFilter::default(), &PageRequest::first(10))
                .await?;
            Ok::<_, StoreError>(())
        };
        one.await.map_err(|err| format!("{tag} task {i}: {err}"))
    });
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

mod cases {
    use super::*;

    pub async fn prune_deletes_the_oldest_records_in_bounded_steps(db: &TestDb) {
        let records: Vec<AuditRecord> = (0..10)
            .map(|i| record(i, "test.prune", &format!("r{i}")))
            .collect();
        db.store.append_audit_batch(&records).await.expect("batch");
        // Older than T0 + 6 ms: r0..r5, at most 4 per call, oldest first.
        let before = at(T0 + 6);
        assert_eq!(db.store.prune_audit(before, 4).await.expect("prune"), 4);
        assert_eq!(
            subjects(&all_entries(&db.store).await),
            ["r9", "r8", "r7", "r6", "r5", "r4"]
        );
        assert_eq!(db.store.prune_audit(before, 4).await.expect("prune"), 2);
        assert_eq!(db.store.prune_audit(before, 4).await.expect("prune"), 0);
        assert_eq!(
            subjects(&all_entries(&db.store).await),
            ["r9", "r8", "r7", "r6"]
        );
    }

    /// A tiny retention and interval: what is older than the retention goes (in batches,
    /// pass after pass, including records that age meanwhile), what is younger stays, and the
    /// pruner ends when told to.
    pub async fn pruner_deletes_what_is_past_retention_and_keeps_running(db: &TestDb) {
        let retention = AuditRetention {
            max_age: Duration::from_millis(300),
            interval: Duration::from_millis(20),
            batch_rows: 4,
        };
        let now = Utc::now();
        let minutes = chrono::Duration::minutes;
        let mut records: Vec<AuditRecord> = (0..25)
            .map(|i| record_at(now - minutes(60 + i), "test.retention", &format!("old{i}")))
            .collect();
        // Newer than any cutoff during the test (e.g. another replica's clock is ahead).
        records.extend((0..3).map(|i| {
            record_at(
                now + minutes(60 + i),
                "test.retention",
                &format!("young{i}"),
            )
        }));
        // Young now, past the retention 300 ms later.
        let ageing_at = Utc::now();
        records.push(record_at(ageing_at, "test.retention", "ageing"));
        db.store.append_audit_batch(&records).await.expect("batch");
        let young = ["young2", "young1", "young0"];

        let shutdown = CancellationToken::new();
        let pruner = db.store.spawn_audit_pruner(retention, shutdown.clone());

        let entries = wait_for_entries(&db.store, |entries| entries.len() <= 3).await;
        assert_eq!(
            subjects(&entries),
            young,
            "25 old records in batches of 4, and the ageing one"
        );
        let ageing_for = Utc::now() - ageing_at;
        assert!(
            ageing_for >= chrono::Duration::from_std(retention.max_age).unwrap(),
            "the ageing record was deleted before it was past the retention (after {ageing_for})"
        );

        // A later pass takes what became old since.
        let late: Vec<AuditRecord> = (0..10)
            .map(|i| {
                record_at(
                    Utc::now() - minutes(120),
                    "test.retention",
                    &format!("late{i}"),
                )
            })
            .collect();
        db.store.append_audit_batch(&late).await.expect("batch");
        let entries = wait_for_entries(&db.store, |entries| entries.len() <= 3).await;
        assert_eq!(subjects(&entries), young);

        shutdown.cancel();
        tokio::time::timeout(PATIENCE, pruner)
            .await
            .expect("the pruner stops when told to")
            .expect("pruner task");
    }

    /// Server threads each run a current-thread runtime (as the server does) and use the
    /// store at once; then one thread's runtime ends, after it ran queries, and the others,
    /// and the background runtime, keep working. (PostgreSQL: a connection opened on one
    /// thread's runtime is dead once that runtime ends, and is only served while that runtime
    /// runs, so no other thread may use it.) The threads that go on keep running their
    /// runtimes meanwhile, as server threads do.
    pub async fn server_threads_keep_working_when_one_runtime_ends(db: &TestDb) {
        const THREADS: usize = 3;
        let store = db
            .connect_again_with(StoreOptions {
                threads: THREADS,
                ..StoreOptions::default()
            })
            .await;
        // 1. Thread 0 works alone (so it surely opens connections of its own).
        // 2. Every thread works at once.
        // 3. The others work again while thread 0 idles (its runtime still running, so
        //    whatever it was handing back to a pool is back).
        // 4. Thread 0's runtime ends; the others and the background work again.
        let together = Arc::new(tokio::sync::Barrier::new(THREADS));
        let done = Arc::new(tokio::sync::Barrier::new(THREADS));
        let others_done = Arc::new(tokio::sync::Barrier::new(THREADS));
        let end_thread_0 = CancellationToken::new();
        let thread_0_ended = CancellationToken::new();
        let threads: Vec<_> = (0..THREADS)
            .map(|index| {
                let together = together.clone();
                let done = done.clone();
                let others_done = others_done.clone();
                let end_thread_0 = end_thread_0.clone();
                let thread_0_ended = thread_0_ended.clone();
                let store = store.clone();
                std::thread::spawn(move || {
                    set_worker_index(index);
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(async {
                        let mut failures = Vec::new();
                        if index == 0 {
                            failures.extend(busy(&store, "t0-alone").await);
                        }
                        together.wait().await;
                        failures.extend(busy(&store, &format!("t{index}")).await);
                        done.wait().await;
                        if index == 0 {
                            end_thread_0.cancelled().await;
                            return failures;
                        }
                        failures.extend(busy(&store, &format!("t{index}-again")).await);
                        others_done.wait().await;
                        thread_0_ended.cancelled().await;
                        failures.extend(busy(&store, &format!("t{index}-after")).await);
                        failures
                    })
                    // `runtime` is dropped here.
                })
            })
            .collect();
        others_done.wait().await;
        end_thread_0.cancel();
        let mut threads = threads.into_iter();
        let first = threads.next().expect("thread 0");
        let mut failures = tokio::task::spawn_blocking(move || first.join())
            .await
            .expect("join task")
            .expect("thread 0");
        thread_0_ended.cancel();
        for thread in threads {
            let joined = tokio::task::spawn_blocking(move || thread.join())
                .await
                .expect("join task");
            failures.extend(joined.expect("server thread"));
        }
        failures.extend(busy(&store, "background").await);
        assert!(failures.is_empty(), "{failures:#?}");

        // 4 tasks × 2 records: thread 0 alone, every thread, all but thread 0 twice, the
        // background.
        let written = all_entries(&store).await;
        assert_eq!(written.len(), (1 + THREADS + 2 * (THREADS - 1) + 1) * 8);
        assert!(subjects(&written).contains(&"t2-after-3-tx"));
        store.close().await;
    }

    pub async fn secrets_and_settings_are_kept_and_shared(db: &TestDb) {
        use secrecy::ExposeSecret;
        let other = db.connect_again().await;
        // Two connections (two replicas) asking at once get the same key.
        let (a, b) = tokio::join!(
            db.store.get_or_create_secret("k"),
            other.get_or_create_secret("k")
        );
        let (a, b) = (a.expect("secret"), b.expect("secret"));
        assert_eq!(a.expose_secret(), b.expose_secret());
        let again = db.store.get_or_create_secret("k").await.expect("secret");
        assert_eq!(a.expose_secret(), again.expose_secret());
        let k2 = other.get_or_create_secret("k2").await.expect("secret");
        assert_ne!(a.expose_secret(), k2.expose_secret());

        assert_eq!(db.store.setting("s").await.expect("read"), None);
        db.store.put_setting("s", "{\"a\":1}").await.expect("write");
        other.put_setting("s", "{\"a\":2}").await.expect("replace");
        assert_eq!(
            db.store.setting("s").await.expect("read").as_deref(),
            Some("{\"a\":2}")
        );
        other.close().await;
    }

    pub async fn connect_and_migrate_twice(db: &TestDb) {
        db.store
            .append_audit(&record(0, "test.first", "first"))
            .await
            .expect("append");

        // A second connect runs the migrations again: nothing to do, nothing lost.
        let again = db.connect_again().await;
        assert_eq!(again.kind(), db.store.kind());
        assert_eq!(subjects(&all_entries(&again).await), ["first"]);
        again.close().await;
        let third = db.connect_again().await;
        third.ping().await.expect("third connect answers");
        third.close().await;

        if db.store.kind() == StoreKind::Sqlite {
            // Created with its folder, relative to the base folder, in WAL mode.
            let file = db.dir.path().join("data").join("gw.db");
            assert!(file.is_file(), "{} exists", file.display());
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                .await
                .expect("open the file");
            let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
                .fetch_one(&mut conn)
                .await
                .expect("pragma");
            assert_eq!(mode, "wal");
            conn.close().await.ok();
        } else {
            assert_eq!(db.store.kind(), StoreKind::Postgres);
        }
    }

    pub async fn ping_answers_until_closed(db: &TestDb) {
        db.store.ping().await.expect("ping");
        let other = db.connect_again().await;
        other.ping().await.expect("ping");
        other.close().await;
        assert!(matches!(
            other.ping().await,
            Err(StoreError::Database(sqlx::Error::PoolClosed))
        ));
        db.store
            .ping()
            .await
            .expect("the first store is unaffected");
    }

    pub async fn rolled_back_audit_is_invisible_committed_is_visible(db: &TestDb) {
        let mut tx = db.store.begin().await.expect("begin");
        tx.append_audit(&record(1, "test.tx", "rolled-back"))
            .await
            .expect("append");
        tx.rollback().await.expect("rollback");

        let mut tx = db.store.begin().await.expect("begin");
        tx.append_audit_batch(&[
            record(2, "test.tx", "dropped-1"),
            record(3, "test.tx", "dropped-2"),
        ])
        .await
        .expect("append");
        drop(tx);

        assert!(all_entries(&db.store).await.is_empty());

        let mut tx = db.store.begin().await.expect("begin");
        tx.append_audit(&record(4, "test.tx", "committed"))
            .await
            .expect("append");
        tx.append_audit_batch(&[
            record(5, "test.tx", "committed-batch-1"),
            record(6, "test.tx", "committed-batch-2"),
        ])
        .await
        .expect("append");
        // Not visible to others before the commit.
        let other = db.connect_again().await;
        assert!(all_entries(&other).await.is_empty());
        tx.commit().await.expect("commit");

        assert_eq!(
            subjects(&all_entries(&other).await),
            ["committed-batch-2", "committed-batch-1", "committed"]
        );
        other.close().await;
    }

    pub async fn batch_append_writes_every_record_with_its_fields(db: &TestDb) {
        db.store.append_audit_batch(&[]).await.expect("empty batch");

        let detailed = AuditRecord {
            at: at(T0) + chrono::Duration::microseconds(123_456),
            kind: "action.executed".to_owned(),
            actor: "genesys".to_owned(),
            request_id: Some("req-1".to_owned()),
            subject: Some("fetchUserProfile".to_owned()),
            outcome: "success".to_owned(),
            detail: serde_json::json!({"status": 200, "latencyMs": 12, "nested": {"a": [1, "x"]}}),
        };
        db.store
            .append_audit_batch(std::slice::from_ref(&detailed))
            .await
            .expect("batch of one");

        // More than one multi-row statement holds: several statements in one transaction.
        let many: Vec<AuditRecord> = (0..1234)
            .map(|i| record(1000 + i, "test.batch", &format!("r{i}")))
            .collect();
        db.store.append_audit_batch(&many).await.expect("batch");
        let some: Vec<AuditRecord> = (0..17)
            .map(|i| record(5000 + i, "test.batch", &format!("s{i}")))
            .collect();
        db.store.append_audit_batch(&some).await.expect("batch");

        let entries = all_entries(&db.store).await;
        assert_eq!(entries.len(), 1 + 1234 + 17);
        let expected: Vec<String> = (0..17)
            .rev()
            .map(|i| format!("s{i}"))
            .chain((0..1234).rev().map(|i| format!("r{i}")))
            .chain(["fetchUserProfile".to_owned()])
            .collect();
        assert_eq!(subjects(&entries), expected);
        let ids: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), entries.len(), "ids are unique");

        let stored = entries.last().unwrap();
        assert_eq!(stored.at, "2026-11-22T20:00:00.123Z");
        assert_eq!(stored.kind, "action.executed");
        assert_eq!(stored.actor, "genesys");
        assert_eq!(stored.request_id.as_deref(), Some("req-1"));
        assert_eq!(stored.subject.as_deref(), Some("fetchUserProfile"));
        assert_eq!(stored.outcome, "success");
        assert_eq!(stored.detail, detailed.detail);
        assert!(
            stored.id.parse::<i64>().is_ok(),
            "id {} is a number",
            stored.id
        );

        let json = serde_json::to_value(stored).unwrap();
        assert_eq!(
            json.as_object().unwrap().keys().collect::<Vec<_>>(),
            [
                "actor",
                "at",
                "detail",
                "id",
                "kind",
                "outcome",
                "requestId",
                "subject"
            ]
        );
        let plain = &entries[0];
        assert_eq!(plain.request_id, None);
    }

    pub async fn query_is_newest_first_and_filters_by_since_and_kind(db: &TestDb) {
        // Inserted out of time order; two pairs share a millisecond (the later insert is
        // listed first within a millisecond).
        for (offset, kind, subject) in [
            (30, "event.accepted", "e30"),
            (10, "event.accepted", "e10"),
            (20, "action.executed", "a20"),
            (20, "event.accepted", "e20"),
            (40, "action.executed", "a40"),
            (0, "config.reloaded", "c0"),
            (40, "event.accepted", "e40"),
        ] {
            db.store
                .append_audit(&record(offset, kind, subject))
                .await
                .expect("append");
        }
        let all = all_entries(&db.store).await;
        assert_eq!(
            subjects(&all),
            ["e40", "a40", "e30", "e20", "a20", "e10", "c0"]
        );
        assert_eq!(all[0].at, "2026-11-22T20:00:00.040Z");

        let query = |since: Option<DateTime<Utc>>, kind: Option<&str>| AuditFilter {
            since,
            kind: kind.map(str::to_owned),
        };
        let since_20 = walk(&db.store, &query(Some(at(T0 + 20)), None), 100).await;
        assert_eq!(subjects(&since_20), ["e40", "a40", "e30", "e20", "a20"]);
        // `since` between two stored milliseconds.
        let since_19_5 = at(T0 + 19) + chrono::Duration::microseconds(500);
        let since_mid = walk(&db.store, &query(Some(since_19_5), None), 100).await;
        assert_eq!(subjects(&since_mid), subjects(&since_20));
        let since_later = at(T0 + 20) + chrono::Duration::microseconds(1);
        assert_eq!(
            subjects(&walk(&db.store, &query(Some(since_later), None), 100).await),
            ["e40", "a40", "e30"]
        );
        assert!(
            walk(&db.store, &query(Some(at(T0 + 41)), None), 100)
                .await
                .is_empty()
        );

        let events = walk(&db.store, &query(None, Some("event.accepted")), 2).await;
        assert_eq!(subjects(&events), ["e40", "e30", "e20", "e10"]);
        let both = walk(
            &db.store,
            &query(Some(at(T0 + 20)), Some("action.executed")),
            1,
        )
        .await;
        assert_eq!(subjects(&both), ["a40", "a20"]);
        // Exact kinds only: no prefix, no pattern, no case folding.
        for kind in ["event", "event.%", "EVENT.ACCEPTED", "event.accepted "] {
            assert!(
                walk(&db.store, &query(None, Some(kind)), 100)
                    .await
                    .is_empty(),
                "{kind}"
            );
        }
    }

    pub async fn limit_is_clamped_to_1_and_1000(db: &TestDb) {
        let records: Vec<AuditRecord> = (0..1005)
            .map(|i| record(i, "test.limit", &format!("r{i}")))
            .collect();
        db.store.append_audit_batch(&records).await.expect("batch");
        let filter = AuditFilter::default();

        let one = db
            .store
            .query_audit(&filter, &PageRequest::first(0))
            .await
            .expect("query");
        assert_eq!(subjects(&one.entities), ["r1004"]);
        assert!(one.next_cursor.is_some());

        let clamped = db
            .store
            .query_audit(&filter, &PageRequest::first(5000))
            .await
            .expect("query");
        assert_eq!(clamped.entities.len(), 1000);
        let rest = db
            .store
            .query_audit(
                &filter,
                &PageRequest::after(5000, clamped.next_cursor.expect("more")),
            )
            .await
            .expect("query");
        assert_eq!(subjects(&rest.entities), ["r4", "r3", "r2", "r1", "r0"]);
        assert_eq!(rest.next_cursor, None);

        let exact = db
            .store
            .query_audit(
                &AuditFilter {
                    since: Some(at(T0 + 1000)),
                    kind: None,
                },
                &PageRequest::first(5),
            )
            .await
            .expect("query");
        assert_eq!(exact.entities.len(), 5);
        assert_eq!(exact.next_cursor, None, "no next page when exactly full");
    }

    pub async fn cursor_walk_visits_every_record_once(db: &TestDb) {
        // 50 records, three per millisecond: page boundaries fall inside a millisecond.
        let records: Vec<AuditRecord> = (0..50)
            .map(|i| {
                let kind = if i % 2 == 0 { "test.even" } else { "test.odd" };
                record(i / 3, kind, &format!("r{i}"))
            })
            .collect();
        for chunk in records.chunks(7) {
            db.store.append_audit_batch(chunk).await.expect("batch");
        }
        let expected: Vec<String> = (0..50).rev().map(|i| format!("r{i}")).collect();
        for limit in [1, 2, 3, 7, 49, 50, 51] {
            let walked = walk(&db.store, &AuditFilter::default(), limit).await;
            assert_eq!(subjects(&walked), expected, "limit {limit}");
        }
        let odd = walk(
            &db.store,
            &AuditFilter {
                since: None,
                kind: Some("test.odd".into()),
            },
            4,
        )
        .await;
        let expected_odd: Vec<String> = (0..50)
            .rev()
            .filter(|i| i % 2 == 1)
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(subjects(&odd), expected_odd);
    }

    pub async fn cursor_is_stable_under_concurrent_inserts(db: &TestDb) {
        // 300 records over 100 milliseconds (three per millisecond).
        let existing: Vec<AuditRecord> = (0..300)
            .map(|i| record(i / 3, "test.stable", &format!("old{i}")))
            .collect();
        db.store.append_audit_batch(&existing).await.expect("batch");
        let existing_ids: HashSet<String> = all_entries(&db.store)
            .await
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(existing_ids.len(), 300);

        // Another "replica" inserts from its own thread and connection while we page: newer
        // records, older records, and records in the very millisecond of the cursor.
        let stop = Arc::new(AtomicBool::new(false));
        let inserted = Arc::new(AtomicUsize::new(0));
        let boundary = Arc::new(AtomicI64::new(99));
        let inserter = {
            let (url, dir) = (db.url.clone(), db.dir.path().to_path_buf());
            let (stop, inserted, boundary) = (stop.clone(), inserted.clone(), boundary.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let store = Store::connect(&url, &dir).await.expect("connect");
                    let mut n = 0_i64;
                    while !stop.load(Ordering::Acquire) && n < 400 {
                        let offset = match n % 4 {
                            0 => 200 + n,                          // newer than everything
                            1 => boundary.load(Ordering::Acquire), // the cursor's millisecond
                            2 => (n * 7) % 100,                    // among the old ones
                            _ => -1 - n,                           // older than everything
                        };
                        store
                            .append_audit(&record(offset, "test.stable", &format!("new{n}")))
                            .await
                            .expect("concurrent append");
                        n += 1;
                        inserted.fetch_add(1, Ordering::AcqRel);
                        tokio::task::yield_now().await;
                    }
                    store.close().await;
                })
            })
        };

        let filter = AuditFilter::default();
        let mut seen: Vec<String> = Vec::new();
        let mut page = PageRequest::first(13);
        loop {
            // Let the other writer insert something between every two pages.
            let before = inserted.load(Ordering::Acquire);
            let wait_until = Instant::now() + Duration::from_secs(5);
            while inserted.load(Ordering::Acquire) == before
                && !inserter.is_finished()
                && Instant::now() < wait_until
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let answer = db.store.query_audit(&filter, &page).await.expect("page");
            if let Some(last) = answer.entities.last() {
                let ms = DateTime::parse_from_rfc3339(&last.at)
                    .unwrap()
                    .timestamp_millis();
                boundary.store(ms - T0, Ordering::Release);
            }
            seen.extend(answer.entities.into_iter().map(|e| e.id));
            match answer.next_cursor {
                Some(cursor) => page = PageRequest::after(13, cursor),
                None => break,
            }
        }
        stop.store(true, Ordering::Release);
        inserter.join().expect("inserter thread");
        assert!(
            inserted.load(Ordering::Acquire) >= 20,
            "the other writer really inserted while we paged"
        );

        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no record listed twice");
        for id in &existing_ids {
            assert!(unique.contains(id), "record {id} existed and was skipped");
        }
    }

    pub async fn bad_cursor_is_a_distinct_error(db: &TestDb) {
        db.store
            .append_audit_batch(&[record(0, "t", "a"), record(1, "t", "b")])
            .await
            .expect("batch");
        let filter = AuditFilter::default();
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "garbage!".to_owned(),
            "AAAA".to_owned(),
            b64("audit:1:x"),
            b64("audit::1"),
            b64("deliveries:1795377600000:1"),
        ] {
            let answer = db
                .store
                .query_audit(&filter, &PageRequest::after(1, bad.clone()))
                .await;
            assert!(
                matches!(answer, Err(StoreError::InvalidCursor)),
                "{bad}: {answer:?}"
            );
        }
        assert_eq!(
            StoreError::InvalidCursor.to_string(),
            "the cursor is not valid"
        );
        // A cursor handed out works.
        let first = db
            .store
            .query_audit(&filter, &PageRequest::first(1))
            .await
            .expect("query");
        let second = db
            .store
            .query_audit(&filter, &PageRequest::after(1, first.next_cursor.unwrap()))
            .await
            .expect("query");
        assert_eq!(subjects(&second.entities), ["a"]);
    }

    /// Data-action audit records are "visible within 1 s", the store's part: a few records
    /// (no full batch, no shutdown) become visible through the writer's periodic flush alone,
    /// from any thread. The other part, that the flush takes a record at most
    /// `AuditWriter::FLUSH_INTERVAL` (a quarter of the second) after it was recorded, is
    /// asserted exactly on the writer's paused clock by its unit tests
    /// (`store::audit::tests`); the wall clock of a shared machine only bounds the wait here.
    pub async fn writer_makes_records_visible_by_its_periodic_flush(db: &TestDb) {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let committer = Committer::spawn(&db.store);
        let (writer, join) =
            AuditWriter::spawn(committer.handle.clone(), metrics.clone(), shutdown.clone());

        let from_other_thread = writer.clone();
        std::thread::spawn(move || {
            for i in 0..3 {
                from_other_thread.record(record(i, "action.executed", &format!("w{i}")));
            }
        })
        .join()
        .unwrap();
        writer.record(record(3, "action.executed", "w3"));

        let entries = wait_for_entries(&db.store, |entries| entries.len() >= 4).await;
        assert_eq!(subjects(&entries), ["w3", "w2", "w1", "w0"]);
        assert!(!join.is_finished(), "written while the writer runs on");
        assert_eq!(metrics.audit_records_dropped_total.get(), 0);
        shutdown.cancel();
        join.await.expect("writer task");
        committer.stop().await;
    }

    pub async fn writer_flushes_what_is_queued_on_shutdown(db: &TestDb) {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let committer = Committer::spawn(&db.store);
        let (writer, join) =
            AuditWriter::spawn(committer.handle.clone(), metrics.clone(), shutdown.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Queued between two ticks (and more than one batch), then shut down at once.
        for i in 0..1200 {
            writer.record(record(i, "action.executed", &format!("w{i}")));
        }
        shutdown.cancel();
        join.await.expect("writer task");
        assert_eq!(all_entries(&db.store).await.len(), 1200);
        assert_eq!(metrics.audit_records_dropped_total.get(), 0);

        // Offered after the writer stopped: dropped and counted, never blocking.
        writer.record(record(5000, "action.executed", "late"));
        assert_eq!(metrics.audit_records_dropped_total.get(), 1);
        assert_eq!(all_entries(&db.store).await.len(), 1200);
        // Three batches of at most 500 records, each one unit.
        committer.stop().await;
        assert_eq!(committer.handle.stats().units_committed, 3);
    }

    pub async fn writer_drops_and_counts_when_its_queue_is_full(db: &TestDb) {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let committer = Committer::spawn(&db.store);
        let (writer, join) = AuditWriter::spawn_with_capacity(
            committer.handle.clone(),
            metrics.clone(),
            shutdown.clone(),
            4,
        );
        // No await in between: on this single-threaded test runtime the writer task cannot
        // run, so the queue of 4 fills and 6 records are dropped.
        for i in 0..10 {
            writer.record(record(i, "action.executed", &format!("w{i}")));
        }
        assert_eq!(metrics.audit_records_dropped_total.get(), 6);
        assert!(
            metrics
                .render()
                .contains("gateway_audit_records_dropped_total 6")
        );
        shutdown.cancel();
        join.await.expect("writer task");
        assert_eq!(
            subjects(&all_entries(&db.store).await),
            ["w3", "w2", "w1", "w0"]
        );
        committer.stop().await;
    }

    /// 200 producers at once, each with one single-row unit: every one committed, in far
    /// fewer transactions than units.
    pub async fn committer_shares_commits_among_concurrent_units(db: &TestDb) {
        const UNITS: usize = 200;
        let committer = Committer::spawn(&db.store);
        let answers = futures_util::future::join_all((0..UNITS).map(|i| {
            let handle = &committer.handle;
            async move {
                handle
                    .submit(append_unit(i as i64, "test.group", &format!("g{i}")))
                    .await
            }
        }))
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.expect("committed"), format!("g{i}"));
        }
        assert_eq!(all_entries(&db.store).await.len(), UNITS);
        let stats = committer.handle.stats();
        assert_eq!(stats.units_committed, UNITS as u64);
        assert_eq!((stats.units_failed, stats.batches_failed), (0, 0));
        assert!(
            stats.batches_committed * 10 <= UNITS as u64,
            "{UNITS} units took {} commits",
            stats.batches_committed
        );
        committer.stop().await;
    }

    /// A unit that violates a unique key fails alone, with an error that says so; the other
    /// units of its batch (before and after it) commit. A unit that swallows its failed
    /// statement: on SQLite the statement alone failed and the rest of the unit commits; on
    /// PostgreSQL the failure aborted the transaction, so the unit fails (alone) instead of
    /// taking the batch down or being reported written.
    pub async fn committer_fails_a_unique_violation_alone(db: &TestDb) {
        db.execute_directly(
            "CREATE UNIQUE INDEX test_unique_subject ON audit_log (subject) \
             WHERE kind = 'test.unique'",
        )
        .await;
        let committer = Committer::spawn(&db.store);
        let handle = &committer.handle;
        let (release, gate) = hold(handle).await;
        let mut receipts = Vec::new();
        for subject in ["before", "dup", "dup"] {
            let unit = append_unit(0, "test.unique", subject);
            receipts.push(handle.enqueue(unit).await.expect("queued"));
        }
        let swallows = CommitFn::new(|tx: &mut Transaction| {
            Box::pin(async move {
                let refused = tx.append_audit(&record(0, "test.unique", "dup")).await;
                assert!(refused.is_err(), "a duplicate");
                tx.append_audit(&record(0, "test.unique", "swallowed"))
                    .await?;
                Ok("swallowed".to_owned())
            }) as BoxFuture<'_, _>
        });
        receipts.push(handle.enqueue(swallows).await.expect("queued"));
        let unit = append_unit(0, "test.unique", "after");
        receipts.push(handle.enqueue(unit).await.expect("queued"));
        drop(release);
        gate.await.expect("gate");
        let answers: Vec<Result<String, CommitError>> =
            futures_util::future::join_all(receipts).await;
        assert_eq!(answers[0].as_ref().expect("before"), "before");
        assert_eq!(answers[1].as_ref().expect("first dup"), "dup");
        match &answers[2] {
            Err(CommitError::Write(err)) => assert!(err.is_unique_violation(), "{err:?}"),
            other => panic!("expected a unique violation, got {other:?}"),
        }
        assert_eq!(answers[4].as_ref().expect("after"), "after");
        let entries = all_entries(&db.store).await;
        let mut written = subjects(&entries);
        written.sort_unstable();
        let stats = handle.stats();
        if db.store.kind() == StoreKind::Sqlite {
            assert_eq!(answers[3].as_ref().expect("swallowed"), "swallowed");
            assert_eq!(written, ["after", "before", "dup", "swallowed"]);
            assert_eq!((stats.units_committed, stats.units_failed), (5, 1));
        } else {
            assert!(
                matches!(&answers[3], Err(CommitError::Write(_))),
                "{:?}",
                answers[3]
            );
            assert_eq!(written, ["after", "before", "dup"]);
            assert_eq!((stats.units_committed, stats.units_failed), (4, 2));
        }
        assert_eq!(
            stats.batches_committed, 2,
            "the gate, then the rest together"
        );
        committer.stop().await;
    }

    /// By the time a producer sees its answer, its row is readable through other
    /// connections (another store on the same database).
    pub async fn committer_answers_only_after_the_commit(db: &TestDb) {
        const UNITS: usize = 50;
        let committer = Committer::spawn(&db.store);
        let other = db.connect_again().await;
        let filter = AuditFilter {
            kind: Some("test.visible".to_owned()),
            ..AuditFilter::default()
        };
        let unseen = futures_util::future::join_all((0..UNITS).map(|i| {
            let (handle, other, filter) = (&committer.handle, &other, &filter);
            async move {
                let subject = format!("v{i}");
                handle
                    .submit(append_unit(i as i64, "test.visible", &subject))
                    .await
                    .expect("committed");
                let listed = other
                    .query_audit(filter, &PageRequest::first(1000))
                    .await
                    .expect("query");
                let seen = listed
                    .entities
                    .iter()
                    .any(|e| e.subject.as_deref() == Some(&subject));
                (!seen).then_some(subject)
            }
        }))
        .await;
        let unseen: Vec<String> = unseen.into_iter().flatten().collect();
        assert!(unseen.is_empty(), "answered before readable: {unseen:?}");
        other.close().await;
        committer.stop().await;
    }

    pub async fn committer_commits_what_was_queued_at_shutdown_then_refuses_at_once(db: &TestDb) {
        let committer = Committer::spawn(&db.store);
        let handle = committer.handle.clone();
        let (release, gate) = hold(&handle).await;
        let mut receipts = Vec::new();
        for i in 0..20 {
            let unit = append_unit(i, "test.shutdown", &format!("q{i}"));
            receipts.push(handle.enqueue(unit).await.expect("queued"));
        }
        committer.shutdown.cancel();
        // Refused at once (a single poll), even while the committer is still busy.
        let late = handle
            .submit(append_unit(99, "test.shutdown", "late"))
            .now_or_never();
        assert!(matches!(late, Some(Err(CommitError::Stopped))), "{late:?}");
        drop(release);
        gate.await.expect("gate");
        for receipt in receipts {
            receipt.await.expect("committed during the shutdown");
        }
        committer.stop().await;
        assert_eq!(all_entries(&db.store).await.len(), 20);
        let after = handle
            .submit(append_unit(99, "test.shutdown", "after"))
            .now_or_never();
        assert!(
            matches!(after, Some(Err(CommitError::Stopped))),
            "{after:?}"
        );
        assert_eq!(all_entries(&db.store).await.len(), 20);
    }

    /// The committer is jammed (a batch held open, its queue full): the audit writer's task
    /// waits for room with one batch, its own queue fills, and recording still never waits:
    /// what does not fit is dropped and counted. Once the committer moves again, everything
    /// kept is written.
    pub async fn audit_flood_never_blocks_while_the_committer_is_jammed(db: &TestDb) {
        const CAPACITY: usize = 1000;
        const FLOOD: usize = 20_000;
        let committer = Committer::spawn_with(
            &db.store,
            CommitOptions {
                queue_capacity: 1,
                ..CommitOptions::default()
            },
        );
        let handle = &committer.handle;
        let (release, gate) = hold(handle).await;
        let filler = handle
            .try_enqueue(append_unit(0, "test.filler", "filler"))
            .expect("room for one");
        assert!(matches!(
            handle.try_enqueue(append_unit(0, "test.filler", "no room")),
            Err(CommitError::Full)
        ));
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let (writer, join) = AuditWriter::spawn_with_capacity(
            handle.clone(),
            metrics.clone(),
            shutdown.clone(),
            CAPACITY,
        );
        let started = Instant::now();
        for i in 0..FLOOD {
            writer.record(record(i as i64, "action.executed", &format!("f{i}")));
            if i % 100 == 99 {
                // Let the writer task run: it takes a batch and waits for the committer.
                tokio::task::yield_now().await;
            }
        }
        let flood_took = started.elapsed();
        assert!(
            flood_took < Duration::from_secs(2),
            "{FLOOD} records took {flood_took:?} to record"
        );
        let dropped = metrics.audit_records_dropped_total.get();
        // Kept at most: the writer's queue and the one batch waiting for the committer.
        let kept_at_most = (CAPACITY + AuditWriter::MAX_BATCH) as u64;
        assert!(
            dropped >= FLOOD as u64 - kept_at_most,
            "dropped {dropped} of {FLOOD}"
        );

        drop(release);
        gate.await.expect("gate");
        filler.await.expect("filler");
        shutdown.cancel();
        tokio::time::timeout(PATIENCE, join)
            .await
            .expect("the writer ends")
            .expect("writer task");
        let written = walk(
            &db.store,
            &AuditFilter {
                kind: Some("action.executed".to_owned()),
                ..AuditFilter::default()
            },
            1000,
        )
        .await
        .len() as u64;
        assert_eq!(
            written + metrics.audit_records_dropped_total.get(),
            FLOOD as u64,
            "every record written or counted as dropped"
        );
        assert!(written > 0);
        committer.stop().await;
    }

    /// Webhook subscriptions on both dialects, kept as delivery destinations of kind `webhook`:
    /// pages newest first, the secrets of a rotation in the destination's own fields, a
    /// deletion that another connection (replica) sees.
    pub async fn webhook_subscriptions_are_kept_paged_and_shared(db: &TestDb) {
        use genesys_gateway::config::DeliverySettings;
        use genesys_gateway::delivery::webhooks::{NewWebhook, WebhookError, Webhooks};
        use genesys_gateway::delivery::{DeliveryEngine, EngineParts};
        use genesys_gateway::upstream::NetworkPolicy;
        use secrecy::ExposeSecret;
        let policy = NetworkPolicy::Guarded {
            allow_private: false,
            allow_cidrs: Vec::new(),
        };
        let committer = Committer::spawn(&db.store);
        let here = Webhooks::new(DeliveryEngine::new(EngineParts {
            store: db.store.clone(),
            committer: committer.handle.clone(),
            metrics: Arc::new(Metrics::new()),
            settings: DeliverySettings::default(),
            threads: 1,
        }));
        let other = db.connect_again().await;
        let mut made = Vec::new();
        for i in 0..3 {
            let new = NewWebhook::from_value(
                &serde_json::json!({
                    "url": format!("https://hooks.example.com/{i}"),
                    "eventTypes": ["callback.reservation.*"],
                    "description": format!("number {i}"),
                }),
                &policy,
            )
            .expect("valid");
            made.push(here.create(new).await.expect("create"));
        }
        // Newest first; within one millisecond, by id (descending).
        let mut views: Vec<_> = made.iter().map(|c| c.webhook.clone()).collect();
        views.sort_by(|a, b| {
            (b.created_at.as_str(), b.id.to_string())
                .cmp(&(a.created_at.as_str(), a.id.to_string()))
        });
        let ids: Vec<_> = views.iter().map(|w| w.id).collect();
        let first = here.list(&PageRequest::first(2)).await.expect("list");
        let cursor = first.next_cursor.clone().expect("a second page");
        let second = here
            .list(&PageRequest::after(2, cursor))
            .await
            .expect("list");
        assert!(second.next_cursor.is_none());
        let listed: Vec<_> = first
            .entities
            .iter()
            .chain(&second.entities)
            .map(|w| w.id)
            .collect();
        assert_eq!(listed, ids, "newest first, each once");
        assert!(matches!(
            here.list(&PageRequest::after(2, "nope")).await,
            Err(WebhookError::Store(StoreError::InvalidCursor))
        ));

        // One storage: the destination row of kind `webhook`, seen by the other connection.
        let rows = other.destinations().await.expect("destinations");
        let webhooks: Vec<_> = rows.iter().filter(|r| r.kind == "webhook").collect();
        assert_eq!(webhooks.len(), 3);
        for row in &webhooks {
            assert_eq!(row.origin, "api");
            assert_eq!(row.status, "VERIFIED");
            assert!(row.previous_secret.is_none());
        }
        let original = made
            .iter()
            .find(|c| c.webhook.id == ids[0])
            .expect("made")
            .secret
            .expose_secret()
            .to_owned();
        let rotated = here
            .rotate_secret(&ids[0].to_string())
            .await
            .expect("rotate");
        let row = other
            .destination(&ids[0].to_string())
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(row.secret.expose_secret(), rotated.secret.expose_secret());
        assert_eq!(
            row.previous_secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            Some(original)
        );
        let until = row.previous_secret_until_ms.expect("until") - row.updated_ms;
        assert_eq!(
            until,
            24 * 3600 * 1000,
            "the previous secret signs for 24 h"
        );

        here.delete(&ids[1].to_string()).await.expect("delete");
        assert!(
            other
                .destination(&ids[1].to_string())
                .await
                .expect("read")
                .is_none()
        );
        assert!(matches!(
            here.delete(&ids[1].to_string()).await,
            Err(WebhookError::NotFound)
        ));
        assert_eq!(
            here.list(&PageRequest::first(10))
                .await
                .expect("list")
                .entities
                .len(),
            2
        );
        other.close().await;
        committer.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite only
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_folder_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("data");
    std::fs::write(&blocker, b"a file where the folder should be").unwrap();
    let err = Store::connect(&SecretString::from("sqlite://data/sub/gw.db"), dir.path())
        .await
        .expect_err("data is a file");
    assert!(matches!(err, StoreError::CreateFolder { .. }), "{err:?}");
    assert!(err.to_string().contains("data"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: replicas starting at the same moment
// ---------------------------------------------------------------------------------------------

/// Eight "replicas" (threads with their own runtime) connect to one fresh database at the same
/// instant: all succeed, the migrations ran once, and every replica can write.
#[test]
fn postgres_concurrent_connects_on_a_fresh_database_all_succeed() {
    const REPLICAS: usize = 8;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some((pg, url)) = runtime.block_on(PgDatabase::create()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(REPLICAS));
    let replicas: Vec<_> = (0..REPLICAS)
        .map(|i| {
            let (url, dir, barrier) = (url.clone(), dir.path().to_path_buf(), barrier.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    barrier.wait();
                    let store = Store::connect(&url, &dir).await?;
                    store
                        .append_audit(&record(i as i64, "replica.started", &format!("r{i}")))
                        .await?;
                    store.close().await;
                    Ok::<_, StoreError>(())
                })
            })
        })
        .collect();
    for (i, replica) in replicas.into_iter().enumerate() {
        replica
            .join()
            .expect("replica thread")
            .unwrap_or_else(|err| panic!("replica {i} failed to start: {err}"));
    }

    runtime.block_on(async {
        let store = Store::connect(&url, dir.path()).await.expect("connect");
        assert_eq!(all_entries(&store).await.len(), REPLICAS);
        store.close().await;
        let mut conn = sqlx::PgConnection::connect(secrecy::ExposeSecret::expose_secret(&url))
            .await
            .unwrap();
        let (applied,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
            .unwrap()
            .filter(|f| {
                f.as_ref()
                    .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "sql"))
            })
            .count();
        assert_eq!(
            applied,
            i64::try_from(files).unwrap(),
            "each migration applied once"
        );
        conn.close().await.ok();
    });
    drop(pg);
}

// ---------------------------------------------------------------------------------------------
// The URL's password never shows
// ---------------------------------------------------------------------------------------------

const SECRET: &str = "Sup3r-S3cret-pw";

#[tokio::test]
async fn unusable_urls_are_refused_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("mysql://gw:{SECRET}@127.0.0.1/gw"),
        format!("postgres://gw:{SECRET}@127.0.0.1:notaport/gw"),
        format!("postgres://gw:{SECRET}@127.0.0.1/gw?sslmode={SECRET}"),
    ] {
        let err = Store::connect(&SecretString::from(url.clone()), dir.path())
            .await
            .expect_err(&url);
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{url}: {err:?}");
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(SECRET), "{shown}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_postgres_error_does_not_show_the_password() {
    // Nothing listens on port 1.
    let url = SecretString::from(format!("postgres://gw:{SECRET}@127.0.0.1:1/gw"));
    let err = Store::connect(&url, Path::new("."))
        .await
        .expect_err("port 1 is closed");
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
}

#[tokio::test]
async fn a_connected_store_does_not_show_the_password() {
    let Some((_pg, url)) = PgDatabase::create().await else {
        return;
    };
    let url = secrecy::ExposeSecret::expose_secret(&url);
    // Trust authentication ignores the password; it is in the URL all the same.
    let with_password = match url.split_once("://").and_then(|(s, rest)| {
        let (userinfo, host) = rest.split_once('@')?;
        (!userinfo.contains(':')).then(|| format!("{s}://{userinfo}:{SECRET}@{host}"))
    }) {
        Some(url) => url,
        None => {
            eprintln!("skipped: {PG_ENV} already carries a password or no user");
            return;
        }
    };
    let store = Store::connect(&SecretString::from(with_password), Path::new("."))
        .await
        .expect("connect");
    let shown = format!("{store:?} {:?}", store.begin().await.unwrap());
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("Postgres"), "{shown}");
    store.close().await;
}
