//! The group committer: one background task that writes the rows of many concurrent producers
//! in one transaction, so that they share one commit (on SQLite one fsync) instead of paying
//! one each.
//!
//! # How a unit of work travels
//! A producer hands the [`GroupCommitter`] a unit of work: a [`CommitWork`] (or a closure
//! wrapped in [`CommitFn`]) that writes its rows through a `&mut` [`Transaction`] and returns
//! a value. The unit waits in a bounded queue; the committer task takes every unit queued (at
//! most [`CommitOptions::max_batch`]) into one transaction, runs each inside a savepoint of its
//! own (`SAVEPOINT unit` … `RELEASE SAVEPOINT unit`), commits once and then answers every
//! producer of the batch. So:
//!
//! - a producer's answer comes only after the transaction holding its rows committed: a
//!   successful answer means the rows are durable and readable by every connection;
//! - a unit whose writes fail (e.g. a unique-key violation that the producer turns into
//!   "duplicate") is rolled back to its savepoint alone and answered with its own error
//!   ([`CommitError::Write`]); the other units of its batch commit. A unit that panics is
//!   rolled back alike ([`CommitError::Panicked`]) and the committer goes on;
//! - when the batch's transaction cannot begin or commit, every unit of it that had not failed
//!   on its own is answered with that error ([`CommitError::Commit`]) and nothing of the batch
//!   was written;
//! - there is no artificial delay: while one commit is in flight the next units queue, and the
//!   next batch takes them all (the classic group commit). At low load a batch is one unit and
//!   a producer waits one commit; under load the batches grow and the commits per second stay
//!   what the disk allows.
//!
//! Units run one after the other in queue order, on the one connection of the batch: a unit
//! sees what the units before it in its batch wrote.
//!
//! # What a unit may do
//! Only write (and read) through the transaction it is given, and return. It must not await
//! anything else (a network call, a lock, another store method): the whole batch, and on
//! SQLite every writer of the gateway, waits for it. On SQLite calling a writing method of the
//! [`Store`] from a unit waits for the writer connection the batch holds, until the acquire
//! timeout. A failing statement must be returned as the unit's error, not swallowed: on
//! PostgreSQL a failed statement aborts the transaction up to the unit's savepoint (the
//! committer then fails the unit when it releases the savepoint).
//!
//! # Cancel safety
//! [`GroupCommitter::submit`] and [`GroupCommitter::enqueue`] first wait for room in the
//! queue; a producer that goes away while waiting (its future dropped, e.g. by its deadline)
//! leaves nothing behind: the unit never runs. Once queued, a unit runs and commits whether or
//! not anyone waits for its answer (a dropped [`Receipt`] only means nobody hears of it; a
//! failure nobody hears of is logged). A producer that cannot tell the two apart (it gave up
//! at some moment) must make its units idempotent; ingest does, by event id.
//!
//! # Shutdown
//! The committer stops when its `shutdown` token is cancelled (or when every handle is
//! dropped): it stops taking new units (submitting then fails at once with
//! [`CommitError::Stopped`]), commits what was queued, and ends. Cancel it after every
//! producer has stopped (the audit writer writes its last records through it).
//!
//! # Batch size on PostgreSQL
//! Every savepoint that writes gets a subtransaction id, and PostgreSQL keeps at most 64 of
//! them per transaction in shared memory; beyond that, every snapshot taken by any session
//! while the transaction runs has to consult the subtransaction log, which slows the whole
//! server. So on PostgreSQL a batch holds at most [`POSTGRES_MAX_BATCH`] units whatever
//! [`CommitOptions::max_batch`] says. PostgreSQL groups concurrent commits of different
//! connections by itself as well; the committer still saves one round trip and one WAL flush
//! per unit.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Store, StoreError, StoreKind, Transaction, with_tx};

/// The most units one PostgreSQL batch holds (see "Batch size on PostgreSQL" in the module
/// docs).
pub const POSTGRES_MAX_BATCH: usize = 64;

/// Opens the savepoint of the batch's first unit.
const SAVEPOINT: &str = "SAVEPOINT unit";
/// Keeps what a unit wrote and opens the savepoint of the next one, in one round trip.
const RELEASE_AND_NEXT: &str = "RELEASE SAVEPOINT unit; SAVEPOINT unit";
/// Keeps what the batch's last unit wrote.
const RELEASE: &str = "RELEASE SAVEPOINT unit";
/// Discards what a unit wrote (and makes a PostgreSQL transaction usable again after a failed
/// statement). The savepoint stays open, ready for the next unit.
const ROLLBACK: &str = "ROLLBACK TO SAVEPOINT unit";

/// A unit of work for the [`GroupCommitter`]: writes its rows through the batch's transaction
/// and returns a value, which its producer receives once the transaction committed.
///
/// Read "What a unit may do" in the module docs: write through `tx` only, await nothing else,
/// return every failing statement's error.
pub trait CommitWork: Send + 'static {
    /// What the producer receives after the commit.
    type Output: Send + 'static;

    /// Writes the unit's rows as part of `tx` (inside the unit's own savepoint).
    ///
    /// # Errors
    /// Any [`StoreError`]: the unit's writes are rolled back and its producer receives the
    /// error as [`CommitError::Write`]; the rest of the batch is not affected.
    fn write(
        self,
        tx: &mut Transaction,
    ) -> impl Future<Output = Result<Self::Output, StoreError>> + Send;
}

/// A closure as a [`CommitWork`]:
/// `CommitFn::new(move |tx| Box::pin(async move { tx.append_audit(&record).await }))`.
pub struct CommitFn<F>(F);

impl<F> CommitFn<F> {
    /// Wraps `write`, which is called once with the batch's transaction.
    pub fn new<T>(write: F) -> Self
    where
        F: for<'t> FnOnce(&'t mut Transaction) -> BoxFuture<'t, Result<T, StoreError>>,
    {
        Self(write)
    }
}

impl<F> std::fmt::Debug for CommitFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitFn").finish_non_exhaustive()
    }
}

impl<F, T> CommitWork for CommitFn<F>
where
    F: for<'t> FnOnce(&'t mut Transaction) -> BoxFuture<'t, Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    type Output = T;

    fn write(self, tx: &mut Transaction) -> impl Future<Output = Result<T, StoreError>> + Send {
        (self.0)(tx)
    }
}

/// Why a unit was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The committer has stopped (or is stopping): the unit was not taken.
    #[error("the group committer has stopped")]
    Stopped,
    /// [`GroupCommitter::try_enqueue`] found the queue full: the unit was not taken.
    #[error("the group committer's queue is full")]
    Full,
    /// The unit's own writes failed; they were rolled back, the rest of its batch was not
    /// affected. Test for a duplicate with [`StoreError::is_unique_violation`].
    #[error("the unit's writes failed: {0}")]
    Write(#[source] StoreError),
    /// The unit panicked; its writes were rolled back, the rest of its batch was not affected.
    #[error("the unit panicked")]
    Panicked,
    /// The transaction of the unit's batch could not begin, go on or commit: nothing of the
    /// unit was written (unless the connection broke during the commit itself, when the
    /// database may have committed without saying so). Shared by every unit of the batch.
    #[error("the batch could not be committed: {0}")]
    Commit(#[source] Arc<StoreError>),
    /// The committer ended (its runtime stopped, or it panicked) before answering: whether the
    /// unit was committed is unknown.
    #[error("the group committer ended before answering")]
    Lost,
}

/// How a [`GroupCommitter`] queues and batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOptions {
    /// Units the queue holds (at least 1); [`GroupCommitter::submit`] waits for room beyond.
    /// Default 4 096.
    pub queue_capacity: usize,
    /// Units per transaction at most (at least 1); on PostgreSQL never more than
    /// [`POSTGRES_MAX_BATCH`]. Default 512: on SQLite a 512-row commit costs little more than a
    /// 1-row one, and a batch holds the one writer connection for a few milliseconds at most.
    pub max_batch: usize,
}

impl CommitOptions {
    /// The default queue capacity.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
    /// The default batch bound.
    pub const DEFAULT_MAX_BATCH: usize = 512;

    /// The batch bound on `kind`.
    fn batch_limit(&self, kind: StoreKind) -> usize {
        let limit = self.max_batch.max(1);
        match kind {
            StoreKind::Sqlite => limit,
            StoreKind::Postgres => limit.min(POSTGRES_MAX_BATCH),
        }
    }
}

impl Default for CommitOptions {
    fn default() -> Self {
        Self {
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            max_batch: Self::DEFAULT_MAX_BATCH,
        }
    }
}

/// What a [`GroupCommitter`] has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Units whose writes were committed.
    pub units_committed: u64,
    /// Units answered with an error (their own, or their batch's).
    pub units_failed: u64,
    /// Transactions committed (each holding one or more units).
    pub batches_committed: u64,
    /// Transactions that could not begin, go on or commit.
    pub batches_failed: u64,
}

/// The answer of one queued unit, to be awaited (or dropped: the unit runs all the same).
///
/// Resolves once the unit's batch ended: `Ok` with the unit's output after the commit, or the
/// unit's [`CommitError`].
#[derive(Debug)]
pub struct Receipt<T> {
    answer: oneshot::Receiver<Result<T, CommitError>>,
}

impl<T> Future for Receipt<T> {
    type Output = Result<T, CommitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(CommitError::Lost)))
    }
}

/// Hands units of work to the group committer task (see the module docs). Cheap to clone and
/// to use from any thread or runtime; the task ends when its shutdown token is cancelled or
/// every handle is dropped.
#[derive(Clone)]
pub struct GroupCommitter {
    sender: mpsc::Sender<Box<dyn Queued>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter")
            .field("queued", &self.queued())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What the handles and the task share.
#[derive(Debug)]
struct Shared {
    shutdown: CancellationToken,
    units_committed: AtomicU64,
    units_failed: AtomicU64,
    batches_committed: AtomicU64,
    batches_failed: AtomicU64,
}

impl GroupCommitter {
    /// Starts the committer task on `tasks` (on the current runtime) writing to `store`.
    ///
    /// Call it on the runtime of the background tasks: on PostgreSQL the task's transactions
    /// then come from the store's background pool, whose connections belong to that runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(
        store: Store,
        options: CommitOptions,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            shutdown,
            units_committed: AtomicU64::new(0),
            units_failed: AtomicU64::new(0),
            batches_committed: AtomicU64::new(0),
            batches_failed: AtomicU64::new(0),
        });
        let task = CommitterTask {
            max_batch: options.batch_limit(store.kind()),
            store,
            receiver,
            shared: shared.clone(),
        };
        tasks.spawn(task.run());
        Self { sender, shared }
    }

    /// Queues `work` (waiting for room while the queue is full) and waits for its answer,
    /// which comes once its batch committed.
    ///
    /// Bound the wait with a deadline of your own. Cancel safety: see the module docs (a unit
    /// dropped while waiting for room never runs; a queued unit runs and commits anyway).
    ///
    /// # Errors
    /// [`CommitError::Stopped`] at once when the committer has stopped; otherwise the unit's
    /// answer (see [`CommitError`]).
    pub async fn submit<W: CommitWork>(&self, work: W) -> Result<W::Output, CommitError> {
        self.enqueue(work).await?.await
    }

    /// Queues `work`, waiting for room while the queue is full, and returns its [`Receipt`]
    /// without waiting for the answer: await the receipt for it, or drop it (fire and forget:
    /// the unit runs all the same).
    ///
    /// # Errors
    /// [`CommitError::Stopped`] at once when the committer has stopped (also while waiting
    /// for room).
    pub async fn enqueue<W: CommitWork>(&self, work: W) -> Result<Receipt<W::Output>, CommitError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(CommitError::Stopped);
        }
        let permit = self
            .sender
            .reserve()
            .await
            .map_err(|_| CommitError::Stopped)?;
        let (unit, receipt) = Unit::queued(work);
        permit.send(unit);
        Ok(receipt)
    }

    /// Queues `work` if there is room now, never waiting; see [`Self::enqueue`].
    ///
    /// # Errors
    /// [`CommitError::Full`] when the queue is full, [`CommitError::Stopped`] when the
    /// committer has stopped; the unit was not taken either way.
    pub fn try_enqueue<W: CommitWork>(&self, work: W) -> Result<Receipt<W::Output>, CommitError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(CommitError::Stopped);
        }
        let permit = self.sender.try_reserve().map_err(|err| match err {
            mpsc::error::TrySendError::Full(()) => CommitError::Full,
            mpsc::error::TrySendError::Closed(()) => CommitError::Stopped,
        })?;
        let (unit, receipt) = Unit::queued(work);
        permit.send(unit);
        Ok(receipt)
    }

    /// Units queued and not yet taken into a batch.
    pub fn queued(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// What the committer has done so far.
    pub fn stats(&self) -> CommitStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CommitStats {
            units_committed: load(&self.shared.units_committed),
            units_failed: load(&self.shared.units_failed),
            batches_committed: load(&self.shared.batches_committed),
            batches_failed: load(&self.shared.batches_failed),
        }
    }
}

/// A queued unit with its output type erased, as the task handles it.
trait Queued: Send {
    /// Runs the unit's writes (once) as part of `tx`, keeping its output for the answer.
    fn write<'a>(&'a mut self, tx: &'a mut Transaction) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether nobody waits for the answer any more.
    fn is_abandoned(&self) -> bool;

    /// Answers the producer: `Ok` sends the kept output.
    fn answer(self: Box<Self>, result: Result<(), CommitError>);
}

/// A queued [`CommitWork`] and where its answer goes.
struct Unit<W: CommitWork> {
    work: Option<W>,
    output: Option<W::Output>,
    reply: oneshot::Sender<Result<W::Output, CommitError>>,
}

impl<W: CommitWork> Unit<W> {
    /// The unit to queue and the receipt its producer keeps.
    fn queued(work: W) -> (Box<dyn Queued>, Receipt<W::Output>) {
        let (reply, answer) = oneshot::channel();
        let unit = Self {
            work: Some(work),
            output: None,
            reply,
        };
        (Box::new(unit), Receipt { answer })
    }
}

impl<W: CommitWork> Queued for Unit<W> {
    fn write<'a>(&'a mut self, tx: &'a mut Transaction) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if let Some(work) = self.work.take() {
                self.output = Some(work.write(tx).await?);
            }
            Ok(())
        })
    }

    fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn answer(self: Box<Self>, result: Result<(), CommitError>) {
        let Self { output, reply, .. } = *self;
        let answer = result.and_then(|()| output.ok_or(CommitError::Lost));
        // Nobody listening is fine: the unit ran all the same.
        let _ = reply.send(answer);
    }
}

/// How a batch's transaction ended.
enum Ending {
    /// Committed: the units that did not fail on their own are durable.
    Committed,
    /// It could not begin, go on or commit: nothing was written.
    Failed(Arc<StoreError>),
}

/// The task behind the [`GroupCommitter`]s.
struct CommitterTask {
    store: Store,
    receiver: mpsc::Receiver<Box<dyn Queued>>,
    shared: Arc<Shared>,
    max_batch: usize,
}

impl CommitterTask {
    async fn run(mut self) {
        let mut batch: Vec<Box<dyn Queued>> = Vec::with_capacity(self.max_batch);
        loop {
            let taken = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => break,
                taken = self.receiver.recv_many(&mut batch, self.max_batch) => taken,
            };
            if taken == 0 {
                // Every handle is gone and the queue is empty.
                break;
            }
            self.commit(&mut batch).await;
        }
        // No new units from now on (submitting fails at once); commit what was queued.
        self.receiver.close();
        while self.receiver.recv_many(&mut batch, self.max_batch).await > 0 {
            self.commit(&mut batch).await;
        }
        tracing::debug!("group committer stopped");
    }

    /// Writes and commits `batch` in one transaction, answers every unit and empties it.
    async fn commit(&self, batch: &mut Vec<Box<dyn Queued>>) {
        let mut own_errors: Vec<Option<CommitError>> = Vec::with_capacity(batch.len());
        let ending = match self.write(batch, &mut own_errors).await {
            Ok(()) => Ending::Committed,
            Err(err) => Ending::Failed(Arc::new(err)),
        };
        let units = batch.len();
        own_errors.resize_with(units, || None);
        let (mut committed, mut failed) = (0_u64, 0_u64);
        for (unit, own_error) in batch.drain(..).zip(own_errors) {
            let result = match (own_error, &ending) {
                (Some(err), _) => Err(err),
                (None, Ending::Committed) => Ok(()),
                (None, Ending::Failed(err)) => Err(CommitError::Commit(err.clone())),
            };
            match &result {
                Ok(()) => committed += 1,
                Err(err) => {
                    failed += 1;
                    if unit.is_abandoned() {
                        tracing::warn!(error = %err,
                            "a unit of the group committer failed and nobody waits for it");
                    }
                }
            }
            unit.answer(result);
        }
        let stats = &self.shared;
        stats
            .units_committed
            .fetch_add(committed, Ordering::Relaxed);
        stats.units_failed.fetch_add(failed, Ordering::Relaxed);
        match ending {
            Ending::Committed => stats.batches_committed.fetch_add(1, Ordering::Relaxed),
            Ending::Failed(err) => {
                tracing::debug!(error = %err, units, "group commit failed");
                stats.batches_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// Runs every unit of `batch` in its savepoint of one transaction and commits it. Pushes
    /// each unit's own failure (or `None`) onto `own_errors`, in order, for the units it ran.
    ///
    /// One savepoint name serves every unit: each unit starts with it open; a unit that
    /// succeeded releases it and opens the next one in one round trip, a unit that failed is
    /// rolled back to it, which leaves it open. So a unit costs one round trip besides its
    /// own statements.
    ///
    /// # Errors
    /// When the transaction cannot begin, a savepoint cannot be opened or rolled back to, or
    /// the commit fails: the transaction is rolled back then.
    async fn write(
        &self,
        batch: &mut [Box<dyn Queued>],
        own_errors: &mut Vec<Option<CommitError>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        execute(&mut tx, SAVEPOINT).await?;
        let last = batch.len().saturating_sub(1);
        for (index, unit) in batch.iter_mut().enumerate() {
            let written = match AssertUnwindSafe(unit.write(&mut tx)).catch_unwind().await {
                Ok(Ok(())) => {
                    let keep = if index == last {
                        RELEASE
                    } else {
                        RELEASE_AND_NEXT
                    };
                    // A failed release means the unit left its savepoint unusable (e.g. it
                    // swallowed a failed statement on PostgreSQL): its writes cannot be
                    // trusted. (Should the release succeed and the next savepoint fail, the
                    // rollback below fails too, and with it the whole batch.)
                    execute(&mut tx, keep).await.map_err(CommitError::Write)
                }
                Ok(Err(err)) => Err(CommitError::Write(err)),
                Err(_) => {
                    tracing::error!("a unit of the group committer panicked; rolled back");
                    Err(CommitError::Panicked)
                }
            };
            match written {
                Ok(()) => own_errors.push(None),
                Err(err) => {
                    own_errors.push(Some(err));
                    execute(&mut tx, ROLLBACK).await?;
                }
            }
        }
        // A savepoint still open (the last unit failed) is committed empty with the rest.
        tx.commit().await
    }
}

/// Runs `sql` (one or more statements without parameters, in one round trip: PostgreSQL's
/// simple query protocol, SQLite's statement list) as part of `tx`.
async fn execute(tx: &mut Transaction, sql: &'static str) -> Result<(), StoreError> {
    with_tx!(tx, |conn| {
        sqlx::Executor::execute(conn, sql).await?;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::store::{AuditFilter, AuditRecord, PageRequest, with_pool};

    /// Bounds every wait of these tests (a hang is a failure, not a stuck test run).
    const PATIENCE: Duration = Duration::from_secs(10);

    async fn within<F: Future>(what: &str, future: F) -> F::Output {
        tokio::time::timeout(PATIENCE, future)
            .await
            .unwrap_or_else(|_| panic!("{what} took longer than {PATIENCE:?}"))
    }

    /// A fresh SQLite store in its own folder (kept alive by the returned guard).
    async fn sqlite() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::connect(&SecretString::from("sqlite://gw.db"), dir.path())
            .await
            .expect("store");
        (store, dir)
    }

    struct Running {
        committer: GroupCommitter,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    }

    impl Running {
        fn spawn(store: &Store, options: CommitOptions) -> Self {
            let shutdown = CancellationToken::new();
            let tasks = TaskTracker::new();
            let committer = GroupCommitter::spawn(store.clone(), options, shutdown.clone(), &tasks);
            Self {
                committer,
                shutdown,
                tasks,
            }
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.tasks.close();
            within("the committer's shutdown", self.tasks.wait()).await;
        }
    }

    /// Runs `sql` in a transaction of its own (test tables).
    async fn setup(store: &Store, sql: &'static str) {
        let mut tx = store.begin().await.expect("begin");
        execute(&mut tx, sql).await.expect("setup");
        tx.commit().await.expect("commit");
    }

    /// A unit appending an audit record with this subject; its output is the subject.
    fn append(subject: &str) -> impl CommitWork<Output = String> {
        let subject = subject.to_owned();
        CommitFn::new(move |tx: &mut Transaction| {
            Box::pin(async move {
                let record = AuditRecord::now("test.commit", "system", "success")
                    .with_subject(subject.clone());
                tx.append_audit(&record).await?;
                Ok(subject)
            }) as BoxFuture<'_, _>
        })
    }

    /// A unit that holds its batch open until `release` fires, after saying so on `started`.
    fn gate(
        started: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    ) -> impl CommitWork<Output = ()> {
        CommitFn::new(move |_tx: &mut Transaction| {
            Box::pin(async move {
                let _ = started.send(());
                let _ = release.await;
                Ok(())
            }) as BoxFuture<'_, _>
        })
    }

    /// Starts a gate unit and waits until the committer runs it: units queued until the
    /// returned sender fires (or is dropped) form the next batch.
    async fn hold(committer: &GroupCommitter) -> (oneshot::Sender<()>, Receipt<()>) {
        let (started_tx, started) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        let receipt = committer
            .enqueue(gate(started_tx, release_rx))
            .await
            .expect("gate queued");
        within("the gate's batch to start", started)
            .await
            .expect("gate started");
        (release, receipt)
    }

    async fn subjects(store: &Store) -> Vec<String> {
        let page = store
            .query_audit(&AuditFilter::default(), &PageRequest::first(1000))
            .await
            .expect("query");
        let mut subjects: Vec<String> = page
            .entities
            .into_iter()
            .filter_map(|entry| entry.subject)
            .collect();
        subjects.sort();
        subjects
    }

    #[tokio::test]
    async fn units_queued_during_a_commit_form_the_next_batch_up_to_its_bound() {
        let (store, _dir) = sqlite().await;
        let running = Running::spawn(
            &store,
            CommitOptions {
                max_batch: 4,
                ..CommitOptions::default()
            },
        );
        let committer = &running.committer;
        let (release, gate) = hold(committer).await;
        let mut receipts = Vec::new();
        for i in 0..10 {
            let receipt = committer.enqueue(append(&format!("u{i}"))).await;
            receipts.push(receipt.expect("queued"));
        }
        assert_eq!(committer.queued(), 10);
        assert_eq!(
            committer.stats().batches_committed,
            0,
            "the gate holds the first"
        );
        release.send(()).expect("release");
        within("the gate", gate).await.expect("gate committed");
        for (i, receipt) in receipts.into_iter().enumerate() {
            assert_eq!(
                within("a unit", receipt).await.expect("committed"),
                format!("u{i}")
            );
        }
        // The gate alone, then 10 units in batches of at most 4.
        assert_eq!(
            committer.stats(),
            CommitStats {
                units_committed: 11,
                units_failed: 0,
                batches_committed: 4,
                batches_failed: 0,
            }
        );
        assert_eq!(subjects(&store).await.len(), 10);
        running.stop().await;
    }

    #[tokio::test]
    async fn a_failing_or_panicking_unit_is_rolled_back_alone() {
        let (store, _dir) = sqlite().await;
        setup(&store, "CREATE TABLE test_keys (k TEXT PRIMARY KEY) STRICT").await;
        let running = Running::spawn(&store, CommitOptions::default());
        let committer = &running.committer;
        let insert_key = |key: &'static str| {
            CommitFn::new(move |tx: &mut Transaction| {
                Box::pin(async move {
                    with_tx!(tx, |conn| {
                        sqlx::query("INSERT INTO test_keys (k) VALUES ($1)")
                            .bind(key)
                            .execute(conn)
                            .await?;
                    });
                    Ok(key)
                }) as BoxFuture<'_, _>
            })
        };
        // Writes a row, then fails: the row must go with it.
        let write_then_fail = CommitFn::new(|tx: &mut Transaction| {
            Box::pin(async move {
                let record =
                    AuditRecord::now("test.commit", "system", "success").with_subject("undone");
                tx.append_audit(&record).await?;
                Err::<(), _>(StoreError::InvalidCursor)
            }) as BoxFuture<'_, _>
        });
        let panics = CommitFn::new(|tx: &mut Transaction| {
            Box::pin(async move {
                let record =
                    AuditRecord::now("test.commit", "system", "success").with_subject("panicked");
                tx.append_audit(&record).await?;
                if record.subject.is_some() {
                    panic!("a unit with a bug");
                }
                Ok(())
            }) as BoxFuture<'_, Result<(), StoreError>>
        });

        let (release, gate) = hold(committer).await;
        let first = committer.enqueue(insert_key("a")).await.expect("queued");
        let duplicate = committer.enqueue(insert_key("a")).await.expect("queued");
        let failing = committer.enqueue(write_then_fail).await.expect("queued");
        let panicking = committer.enqueue(panics).await.expect("queued");
        let after = committer.enqueue(insert_key("b")).await.expect("queued");
        let appended = committer.enqueue(append("kept")).await.expect("queued");
        drop(release);
        within("the gate", gate).await.expect("gate");

        assert_eq!(first.await.expect("first"), "a");
        match duplicate.await {
            Err(CommitError::Write(err)) => assert!(err.is_unique_violation(), "{err:?}"),
            other => panic!("expected a unique violation, got {other:?}"),
        }
        assert!(matches!(
            failing.await,
            Err(CommitError::Write(StoreError::InvalidCursor))
        ));
        assert!(matches!(panicking.await, Err(CommitError::Panicked)));
        assert_eq!(after.await.expect("after"), "b");
        assert_eq!(appended.await.expect("appended"), "kept");

        let keys: Vec<String> = with_pool!(
            store,
            read | pool | {
                sqlx::query_scalar("SELECT k FROM test_keys ORDER BY k")
                    .fetch_all(pool)
                    .await
                    .expect("keys")
            }
        );
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(subjects(&store).await, ["kept"]);
        let stats = committer.stats();
        assert_eq!((stats.units_committed, stats.units_failed), (4, 3));
        assert_eq!(
            stats.batches_committed, 2,
            "the gate, then one batch for the rest"
        );
        running.stop().await;
    }

    /// A deferred foreign key is checked at `COMMIT`: the commit fails, and every unit of the
    /// batch hears of it; the committer goes on with the next batch.
    #[tokio::test]
    async fn a_failed_commit_answers_every_unit_of_the_batch_and_the_next_batch_commits() {
        let (store, _dir) = sqlite().await;
        setup(
            &store,
            "CREATE TABLE test_parent (id INTEGER PRIMARY KEY) STRICT; \
             CREATE TABLE test_child (parent INTEGER NOT NULL \
             REFERENCES test_parent (id) DEFERRABLE INITIALLY DEFERRED) STRICT",
        )
        .await;
        let running = Running::spawn(&store, CommitOptions::default());
        let committer = &running.committer;
        let orphan = CommitFn::new(|tx: &mut Transaction| {
            Box::pin(
                async move { execute(tx, "INSERT INTO test_child (parent) VALUES (42)").await },
            ) as BoxFuture<'_, _>
        });
        let (release, gate) = hold(committer).await;
        let a = committer.enqueue(append("a")).await.expect("queued");
        let orphan = committer.enqueue(orphan).await.expect("queued");
        let b = committer.enqueue(append("b")).await.expect("queued");
        drop(release);
        within("the gate", gate).await.expect("gate");
        for receipt in [a, b] {
            assert!(matches!(receipt.await, Err(CommitError::Commit(_))));
        }
        match orphan.await {
            Err(CommitError::Commit(err)) => {
                assert!(err.to_string().contains("FOREIGN KEY"), "{err}")
            }
            other => panic!("expected the commit's error, got {other:?}"),
        }
        assert!(subjects(&store).await.is_empty(), "nothing of the batch");

        assert_eq!(committer.submit(append("c")).await.expect("next"), "c");
        assert_eq!(subjects(&store).await, ["c"]);
        assert_eq!(
            committer.stats(),
            CommitStats {
                units_committed: 2,
                units_failed: 3,
                batches_committed: 2,
                batches_failed: 1,
            }
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn shutdown_commits_what_was_queued_then_refuses_at_once() {
        let (store, _dir) = sqlite().await;
        let running = Running::spawn(&store, CommitOptions::default());
        let committer = running.committer.clone();
        let (release, gate) = hold(&committer).await;
        let mut receipts = Vec::new();
        for i in 0..5 {
            receipts.push(
                committer
                    .enqueue(append(&format!("q{i}")))
                    .await
                    .expect("queued"),
            );
        }
        running.shutdown.cancel();
        assert!(matches!(
            committer.submit(append("late")).await,
            Err(CommitError::Stopped)
        ));
        assert!(matches!(
            committer.try_enqueue(append("late")),
            Err(CommitError::Stopped)
        ));
        drop(release);
        gate.await.expect("gate");
        for receipt in receipts {
            receipt.await.expect("committed at shutdown");
        }
        running.tasks.close();
        within("the committer to end", running.tasks.wait()).await;
        assert_eq!(subjects(&store).await, ["q0", "q1", "q2", "q3", "q4"]);
        assert!(matches!(
            committer.enqueue(append("later")).await,
            Err(CommitError::Stopped)
        ));
    }

    #[tokio::test]
    async fn a_full_queue_makes_submit_wait_and_try_enqueue_refuse() {
        let (store, _dir) = sqlite().await;
        let running = Running::spawn(
            &store,
            CommitOptions {
                queue_capacity: 2,
                ..CommitOptions::default()
            },
        );
        let committer = running.committer.clone();
        let (release, gate) = hold(&committer).await;
        let queued = [
            committer.try_enqueue(append("a")).expect("room"),
            committer.try_enqueue(append("b")).expect("room"),
        ];
        assert!(matches!(
            committer.try_enqueue(append("refused")),
            Err(CommitError::Full)
        ));
        let waiting = tokio::spawn({
            let committer = committer.clone();
            async move { committer.submit(append("c")).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "submit waits for room");
        drop(release);
        gate.await.expect("gate");
        for receipt in queued {
            receipt.await.expect("committed");
        }
        assert_eq!(
            within("the waiting submit", waiting)
                .await
                .expect("task")
                .expect("c"),
            "c"
        );
        assert_eq!(subjects(&store).await, ["a", "b", "c"]);
        running.stop().await;
    }

    /// Once queued, a unit runs and commits even though its producer went away (a dropped
    /// receipt, an aborted `submit`); a `submit` dropped while waiting for room leaves nothing.
    #[tokio::test]
    async fn a_queued_unit_commits_without_its_producer() {
        let (store, _dir) = sqlite().await;
        let running = Running::spawn(
            &store,
            CommitOptions {
                queue_capacity: 2,
                ..CommitOptions::default()
            },
        );
        let committer = running.committer.clone();
        let (release, gate) = hold(&committer).await;
        drop(
            committer
                .enqueue(append("dropped receipt"))
                .await
                .expect("queued"),
        );
        let aborted = tokio::spawn({
            let committer = committer.clone();
            async move { committer.submit(append("aborted submit")).await }
        });
        while committer.queued() < 2 {
            tokio::task::yield_now().await;
        }
        aborted.abort();
        // The queue is full: this one waits for room (polled once) and is given up.
        let given_up = committer.submit(append("never queued")).now_or_never();
        assert!(given_up.is_none(), "it waits for room");
        assert!(aborted.await.expect_err("aborted").is_cancelled());
        drop(release);
        gate.await.expect("gate");
        // Answered after the two abandoned units: they have been committed by then.
        committer.submit(append("last")).await.expect("last");
        assert_eq!(
            subjects(&store).await,
            ["aborted submit", "dropped receipt", "last"]
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn the_committer_ends_when_every_handle_is_dropped() {
        let (store, _dir) = sqlite().await;
        let running = Running::spawn(&store, CommitOptions::default());
        running.committer.submit(append("a")).await.expect("a");
        drop(running.committer);
        running.tasks.close();
        within("the committer to end", running.tasks.wait()).await;
        assert!(!running.shutdown.is_cancelled());
    }

    #[test]
    fn postgres_batches_stay_within_the_subtransaction_cache() {
        let options = CommitOptions::default();
        assert_eq!(options.batch_limit(StoreKind::Sqlite), 512);
        assert_eq!(options.batch_limit(StoreKind::Postgres), POSTGRES_MAX_BATCH);
        let small = CommitOptions {
            max_batch: 0,
            ..options
        };
        assert_eq!(small.batch_limit(StoreKind::Sqlite), 1);
        assert_eq!(small.batch_limit(StoreKind::Postgres), 1);
    }
}
