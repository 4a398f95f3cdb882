//! The engine at work: the dispatcher (leased claims in acceptance order, one attempt per free
//! worker slot), the attempt itself, the outcome written through the group committer, and the
//! sweeper.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::destination::{Destination, DestinationAuth, DestinationKind, Origin, TargetStatus};
use super::signing::{signature_header, webhook_id};
use super::{DeliveryEngine, DeliveryStatus, dead_record, purpose, targets};
use crate::backoff::{Backoff, Jitter};
use crate::store::{AuditRecord, ClaimedDelivery, CommitFn, Finish, StoreKind, Transaction};
use crate::upstream::{
    HttpClient, RetryableStatuses, TransportError, UpstreamResponse, classify_answer,
    classify_transport,
};

/// How long a claim holds a delivery.
pub(crate) const LEASE: Duration = Duration::from_secs(30);
/// How often a running attempt renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// The longest the dispatcher sleeps without looking for due deliveries.
const POLL: Duration = Duration::from_secs(1);
/// How often the sweeper runs.
const SWEEP: Duration = Duration::from_secs(1);
/// The longest one attempt may take.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest one verification attempt may take.
const VERIFICATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of a verification before the target is FAILED.
pub(crate) const VERIFICATION_ATTEMPTS: i64 = 5;
/// Waits between verification attempts: 1, 2, 4, 8 s (±20 %), so that five attempts of at
/// most 5 s each end within 60 s.
const VERIFICATION_BACKOFF: Backoff = Backoff::exponential(
    Duration::from_secs(1),
    Duration::from_secs(8),
    Jitter::Proportional(0.2),
);
const USER_AGENT: &str = concat!("genesys-gateway/", env!("CARGO_PKG_VERSION"));

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The most deliveries one claim takes (the dispatcher's read-ahead).
const MAX_CLAIM: usize = 4096;
/// A claimed delivery not started within this long of its claim is given back rather than
/// attempted: its 30 s lease must outlast the wait and the attempt's first renewal, 10 s in.
const START_WITHIN: Duration = Duration::from_secs(10);
/// Outcomes one settlement writes at most (one unit of the group committer).
const MAX_SETTLE: usize = 4096;
/// Outcomes waiting for the settlement; a full queue holds the attempts' worker slots, so
/// that the dispatcher slows down with the store.
pub(crate) const SETTLE_QUEUE: usize = 16_384;

/// A claimed delivery waiting for a worker slot.
struct Ready {
    delivery: ClaimedDelivery,
    token: Arc<str>,
    claimed_at: Instant,
}

/// Attempts started over the last second: the read-ahead of the next claim.
struct StartRate {
    since: Instant,
    count: usize,
    last: usize,
}

impl StartRate {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            count: 0,
            last: 0,
        }
    }

    fn started(&mut self) {
        self.count += 1;
    }

    /// Roughly the attempts a second takes at the recent rate. (No floor: at a low rate, a
    /// slow target's deliveries claimed ahead would wait for the busy slots past
    /// [`START_WITHIN`] and be given back, a write each; a second of read-ahead outlasts a
    /// claim's latency, so the rate does not shrink by itself.)
    fn read_ahead(&mut self) -> usize {
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.last = self.count;
            self.count = 0;
            self.since = Instant::now();
        }
        self.last.max(self.count)
    }
}

/// The dispatcher: claims due deliveries and starts their attempts in acceptance order, one per
/// free worker slot; sleeps until woken, a second passes, or a slot frees.
///
/// A claim takes what the free slots can start plus a read-ahead of about a second of attempts
/// at the recent rate (at most [`MAX_CLAIM`]): a claim is a write, and at thousands of
/// deliveries a second one claim per free slot would spend the store's writes on claims. The
/// read-ahead must outlast the claim's own latency: while ingest keeps the store's writer busy
/// a claim waits for a whole batch of its writes, and with a quarter second of read-ahead
/// (and 512 at most) the claims' latency, not the target, capped delivery at ≈ 4 000/s beside
/// a full ingest load. What is claimed waits in order for a slot; the next claim
/// runs while the attempts of the last one do, once fewer than half of it wait; what has not
/// started within [`START_WITHIN`] is given back.
pub(crate) async fn dispatch(
    engine: DeliveryEngine,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let slots = engine.inner().slots.clone();
    let store = engine.inner().store.clone();
    let mut ready: VecDeque<Ready> = VecDeque::new();
    let mut rate = StartRate::new();
    // Whether the last claim found everything it asked for (more may be due).
    let mut more_due = true;
    // The claim in flight, with the size it asked for.
    let mut claiming: Option<(BoxFuture<'static, ClaimResult>, usize)> = None;
    let mut last_claim = 1;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        while let Some(front) = ready.front() {
            if front.claimed_at.elapsed() > START_WITHIN {
                let stale = ready.pop_front().expect("front exists");
                let _ = store
                    .release_lease(&stale.delivery.id, &stale.token, now_ms())
                    .await;
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            let next = ready.pop_front().expect("front exists");
            rate.started();
            tasks.spawn(attempt(
                engine.clone(),
                next.delivery,
                next.token.to_string(),
                permit,
                shutdown.clone(),
            ));
        }
        if claiming.is_none() && more_due && ready.len() * 2 < last_claim {
            let free = slots.available_permits();
            let limit = (free + rate.read_ahead()).clamp(1, MAX_CLAIM);
            last_claim = limit;
            let engine = engine.clone();
            let claim: BoxFuture<'static, ClaimResult> = Box::pin(async move {
                let token: Arc<str> = Uuid::new_v4().to_string().into();
                let claimed = claim(&engine, limit, &token).await;
                (claimed, token)
            });
            claiming = Some((claim, limit));
        }
        let idle = ready.is_empty() && claiming.is_none();
        tokio::select! {
            () = shutdown.cancelled() => break,
            (claimed, token) = async { (&mut claiming.as_mut().expect("claim in flight").0).await },
                if claiming.is_some() =>
            {
                let (_, limit) = claiming.take().expect("claim in flight");
                match claimed {
                    Ok(claimed) => {
                        more_due = claimed.len() >= limit;
                        let claimed_at = Instant::now();
                        ready.extend(claimed.into_iter().map(|delivery| Ready {
                            delivery,
                            token: token.clone(),
                            claimed_at,
                        }));
                    }
                    Err(err) => {
                        more_due = false;
                        tracing::warn!(error = %err, "claiming deliveries failed; trying again");
                    }
                }
            }
            permit = slots.clone().acquire_owned(), if !ready.is_empty() => drop(permit),
            () = engine.inner().notify.notified(), if idle => more_due = true,
            () = tokio::time::sleep(POLL), if idle => more_due = true,
        }
    }
    // A claim in flight is finished, so that its deliveries are given back too.
    if let Some((claim, _)) = claiming
        && let (Ok(claimed), token) = claim.await
    {
        let claimed_at = Instant::now();
        ready.extend(claimed.into_iter().map(|delivery| Ready {
            delivery,
            token: token.clone(),
            claimed_at,
        }));
    }
    // Claimed but not started: given back, due at once.
    for left in ready {
        let _ = store
            .release_lease(&left.delivery.id, &left.token, now_ms())
            .await;
    }
}

/// What a claim in flight comes to, with its lease token.
type ClaimResult = (anyhow::Result<Vec<ClaimedDelivery>>, Arc<str>);

/// Claims at most `limit` due deliveries under `token`. On SQLite the claim is a unit of the
/// group committer: it joins the batch of ingest units and settlements being written and
/// shares its commit, instead of holding the one writer for a commit (an fsync) of its own
/// between two batches. On PostgreSQL it is a transaction of its own on any pooled connection,
/// so that replicas claim beside each other (`SKIP LOCKED`) and the committer's connection
/// stays with the writes it groups.
async fn claim(
    engine: &DeliveryEngine,
    limit: usize,
    token: &Arc<str>,
) -> anyhow::Result<Vec<ClaimedDelivery>> {
    let store = &engine.inner().store;
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    if matches!(store.kind(), StoreKind::Postgres) {
        return Ok(store
            .claim_deliveries(now_ms(), limit, token, millis(LEASE))
            .await?);
    }
    let unit_token = token.clone();
    let unit = CommitFn::new(move |tx: &mut Transaction| {
        Box::pin(async move {
            tx.claim_deliveries(now_ms(), limit, &unit_token, millis(LEASE))
                .await
        }) as BoxFuture<'_, _>
    });
    let claimed = engine.inner().committer.submit(unit).await?;
    Ok(store.claimed_deliveries(claimed).await?)
}

/// The sweeper: every second, the destination cache, the queue depth and lag, stranded
/// deliveries, and a wake-up for the dispatcher when anything is due.
pub(crate) async fn sweep(engine: DeliveryEngine, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(err) = engine.refresh_destinations().await {
            tracing::warn!(error = %err, "reading the delivery destinations failed");
        }
        let now = now_ms();
        match engine.inner().store.queue_stats(now).await {
            Ok(stats) => {
                engine.set_counted_depth(stats.depth);
                let metrics = &engine.inner().metrics;
                metrics
                    .delivery_queue_depth
                    .set(i64::try_from(stats.depth).unwrap_or(i64::MAX));
                let lag = stats
                    .oldest_due_ms
                    .map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0);
                metrics.delivery_lag_seconds.set(lag);
                if stats.oldest_due_ms.is_some() {
                    engine.wake();
                }
            }
            Err(err) => tracing::warn!(error = %err, "measuring the delivery queue failed"),
        }
        if let Err(err) = bury_stranded(&engine).await {
            tracing::warn!(error = %err, "burying stranded deliveries failed");
        }
    }
}

/// Pending deliveries of a destination that failed, was disabled or deleted (on another
/// replica while this one enqueued for it, say) become dead, with an audit record each.
async fn bury_stranded(engine: &DeliveryEngine) -> anyhow::Result<()> {
    let stranded = engine.inner().store.stranded_deliveries().await?;
    if stranded.is_empty() {
        return Ok(());
    }
    let unit = CommitFn::new(move |tx: &mut Transaction| {
        Box::pin(async move {
            let now = now_ms();
            for (id, status, deleted) in &stranded {
                let reason = if *deleted {
                    "target deleted"
                } else if TargetStatus::parse(status) == TargetStatus::Disabled {
                    "target disabled"
                } else {
                    "target failed verification"
                };
                if tx.kill_delivery(id, reason, now).await? {
                    tx.append_audit(
                        &AuditRecord::now("delivery.dead", "system", "dead")
                            .with_subject(id.clone())
                            .with_detail(serde_json::json!({ "reason": reason })),
                    )
                    .await?;
                }
            }
            Ok(())
        }) as BoxFuture<'_, _>
    });
    let () = engine.inner().committer.submit(unit).await?;
    Ok(())
}

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// 2xx.
    Delivered(StatusCode),
    /// Anything else.
    Failed(Failure),
}

/// A failed attempt.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What went wrong, for `lastError` (never a credential or the answer's body).
    pub(crate) error: String,
    /// Whether another attempt may succeed.
    pub(crate) retryable: bool,
    /// The wait the destination asked for.
    pub(crate) retry_after: Option<Duration>,
    /// The destination answered 410 Gone.
    pub(crate) gone: bool,
    /// The status it answered, if it answered.
    pub(crate) status: Option<StatusCode>,
}

impl Failure {
    fn of_answer(response: &UpstreamResponse) -> Self {
        let status = response.status;
        let verdict = classify_answer(
            status,
            &response.headers,
            RetryableStatuses::TransientAndServerErrors,
        );
        let reason = status.canonical_reason().unwrap_or("");
        Self {
            error: format!("HTTP {} {reason}", status.as_u16())
                .trim_end()
                .to_owned(),
            retryable: verdict.retry.is_some(),
            retry_after: verdict.retry_after,
            gone: status == StatusCode::GONE,
            status: Some(status),
        }
    }

    fn of_transport(err: &TransportError) -> Self {
        let verdict = classify_transport(err);
        Self {
            error: match err {
                TransportError::Refused(refused) => refused.to_string(),
                TransportError::Timeout => "the attempt timed out".to_owned(),
                TransportError::Connect(_) => "cannot connect to the target".to_owned(),
                TransportError::Network(_) => "the connection failed".to_owned(),
                TransportError::ResponseTooLarge { limit } => {
                    format!("the answer is larger than {limit} bytes")
                }
            },
            retryable: verdict.retry.is_some(),
            retry_after: None,
            gone: false,
            status: None,
        }
    }

    fn fatal(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            retryable: false,
            retry_after: None,
            gone: false,
            status: None,
        }
    }
}

/// Sends one signed delivery of `body` (message `message_id`) to `destination` and reads the
/// answer within `timeout`.
pub(crate) async fn send(
    engine: &DeliveryEngine,
    destination: &Destination,
    message_id: &str,
    idempotency_key: &str,
    body: Bytes,
    timeout: Duration,
) -> Attempt {
    let deadline = Instant::now() + timeout;
    let request = match signed_request(destination, message_id, idempotency_key, body) {
        Ok(request) => request,
        Err(failure) => return Attempt::Failed(failure),
    };
    let mut request = request;
    match destination.auth.as_ref() {
        DestinationAuth::None => {}
        DestinationAuth::Static(value) => {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, value.clone());
        }
        DestinationAuth::OAuth(source) => match source.authorization(deadline).await {
            Ok(value) => {
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
            Err(err) => {
                return Attempt::Failed(Failure {
                    error: format!("no token from the target's token endpoint: {err}"),
                    retryable: true,
                    retry_after: None,
                    gone: false,
                    status: None,
                });
            }
        },
    }
    let http: &HttpClient = match destination.origin {
        Origin::Config => &engine.inner().trusted,
        Origin::Api => &engine.inner().guarded,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match http.send(request, left).await {
        Ok(response) if response.status.is_success() => Attempt::Delivered(response.status),
        Ok(response) => Attempt::Failed(Failure::of_answer(&response)),
        Err(err) => Attempt::Failed(Failure::of_transport(&err)),
    }
}

/// The request of one delivery: the body, its headers and its signature (auth is added by the
/// caller).
pub(crate) fn signed_request(
    destination: &Destination,
    message_id: &str,
    idempotency_key: &str,
    body: Bytes,
) -> Result<http::Request<Bytes>, Failure> {
    let now = Utc::now();
    let id = webhook_id(message_id, &destination.id);
    let timestamp = now.timestamp();
    let signature = signature_header(
        destination.signing_keys(now.timestamp_millis()),
        &id,
        timestamp,
        &body,
    );
    let mut request = http::Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = destination.endpoint.clone();
    let headers = request.headers_mut();
    headers.clone_from(&destination.headers);
    let value = |text: &str| {
        HeaderValue::from_str(text)
            .map_err(|_| Failure::fatal("a header value of the delivery cannot be sent"))
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    headers.insert(
        HeaderName::from_static("idempotency-key"),
        value(idempotency_key)?,
    );
    headers.insert(HeaderName::from_static("webhook-id"), value(&id)?);
    headers.insert(
        HeaderName::from_static("webhook-timestamp"),
        value(&timestamp.to_string())?,
    );
    headers.insert(
        HeaderName::from_static("webhook-signature"),
        value(&signature)?,
    );
    Ok(request)
}

/// One attempt of a claimed delivery, its lease renewed while it runs, its outcome written.
async fn attempt(
    engine: DeliveryEngine,
    mut claimed: ClaimedDelivery,
    token: String,
    slot: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let store = engine.inner().store.clone();
    let destination = match engine.destination(&claimed.destination_id) {
        Some(d) => Some(d),
        None => {
            let _ = engine.refresh_destinations().await;
            engine.destination(&claimed.destination_id)
        }
    };
    let Some(destination) = destination else {
        // Deleted meanwhile: the sweeper buries it once the lease is given back.
        let _ = store.release_lease(&claimed.id, &token, now_ms()).await;
        return;
    };
    let timeout = if claimed.purpose == purpose::VERIFICATION {
        VERIFICATION_TIMEOUT
    } else {
        ATTEMPT_TIMEOUT
    };
    let renew = async {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match store
                .renew_lease(&claimed.id, &token, now_ms() + millis(LEASE))
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => tracing::warn!(error = %err, "renewing a delivery lease failed"),
            }
        }
    };
    // The body is not needed once sent: moved, not copied.
    let body = Bytes::from(std::mem::take(&mut claimed.body));
    let sent = send(
        &engine,
        &destination,
        &claimed.message_id,
        &claimed.idempotency_key,
        body,
        timeout,
    );
    let outcome = tokio::select! {
        () = shutdown.cancelled() => {
            // Given back, due at once: the next process (or replica) attempts it again.
            let _ = store.release_lease(&claimed.id, &token, now_ms()).await;
            return;
        }
        () = renew => {
            tracing::warn!(delivery = %claimed.id, "a delivery lease was lost during its attempt; its outcome is left to the new holder");
            return;
        }
        outcome = sent => outcome,
    };
    settle(engine, destination, claimed, token, outcome, slot).await;
}

/// What an attempt's outcome makes of the delivery.
enum Decision {
    Delivered,
    Retry {
        wait: Duration,
        error: String,
    },
    Dead {
        reason: String,
    },
    /// 410 Gone: dead, and the target DISABLED.
    Gone {
        reason: String,
    },
    /// A verification succeeded.
    Verified,
    /// A verification gave up.
    VerificationFailed {
        reason: String,
    },
}

fn decide(claimed: &ClaimedDelivery, destination: &Destination, outcome: Attempt) -> Decision {
    let attempts = claimed.attempts + 1;
    if claimed.purpose == purpose::VERIFICATION {
        return match outcome {
            Attempt::Delivered(_) => Decision::Verified,
            Attempt::Failed(f) if attempts < VERIFICATION_ATTEMPTS => Decision::Retry {
                wait: VERIFICATION_BACKOFF.delay(u32::try_from(attempts).unwrap_or(u32::MAX)),
                error: f.error,
            },
            Attempt::Failed(f) => Decision::VerificationFailed {
                reason: format!("{} (after {attempts} attempts)", f.error),
            },
        };
    }
    match outcome {
        Attempt::Delivered(_) => Decision::Delivered,
        // A target that answers 410 is disabled; a webhook subscription has no verification to
        // bring it back, so only this delivery ends (a subscriber leaves by being deleted).
        Attempt::Failed(f) if f.gone && destination.kind == DestinationKind::Target => {
            Decision::Gone {
                reason: format!("{}: target disabled", f.error),
            }
        }
        Attempt::Failed(f) if f.retryable => {
            let policy = destination.config.retry_policy;
            if attempts <= i64::from(policy.max_retries) {
                Decision::Retry {
                    wait: policy.wait(u32::try_from(attempts).unwrap_or(u32::MAX), f.retry_after),
                    error: f.error,
                }
            } else {
                Decision::Dead {
                    reason: format!("{} (retries exhausted after {attempts} attempts)", f.error),
                }
            }
        }
        Attempt::Failed(f) => Decision::Dead { reason: f.error },
    }
}

/// An attempt's outcome, decided, waiting to be written by the settlement.
pub(crate) struct Outcome {
    destination: Arc<Destination>,
    claimed: ClaimedDelivery,
    token: String,
    decision: Decision,
}

/// Decides what an attempt's outcome makes of the delivery and queues it for the settlement;
/// the worker slot is free once it is queued.
async fn settle(
    engine: DeliveryEngine,
    destination: Arc<Destination>,
    claimed: ClaimedDelivery,
    token: String,
    outcome: Attempt,
    slot: OwnedSemaphorePermit,
) {
    let decision = decide(&claimed, &destination, outcome);
    let queued = engine
        .inner()
        .settle
        .send(Outcome {
            destination,
            claimed,
            token,
            decision,
        })
        .await;
    drop(slot);
    if queued.is_err() {
        // Only after the shutdown: the lease expires and the delivery is attempted again.
        tracing::warn!("a delivery outcome came after the shutdown: it is attempted again later");
    }
}

/// The settlement: writes the queued outcomes, as many as are waiting (at most
/// [`MAX_SETTLE`]), as one unit of the group committer — the `delivered` ones with one
/// statement and one audit insert, the others one by one — then counts them and refreshes
/// the destinations when a target's status changed. On `shutdown` it waits for the attempts
/// still running (every worker slot back: each has queued its outcome or given its delivery
/// back), writes what is queued and ends.
pub(crate) async fn settle_outcomes(
    engine: DeliveryEngine,
    mut outcomes: mpsc::Receiver<Outcome>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_SETTLE);
    let slots = engine.inner().slots.clone();
    let workers = u32::try_from(engine.inner().workers).unwrap_or(u32::MAX);
    let mut closing = false;
    loop {
        tokio::select! {
            received = outcomes.recv_many(&mut batch, MAX_SETTLE) => {
                if received == 0 {
                    return;
                }
                write_outcomes(&engine, std::mem::replace(&mut batch, Vec::with_capacity(MAX_SETTLE))).await;
            }
            () = shutdown.cancelled(), if !closing => closing = true,
            // Outcomes keep being written meanwhile: an attempt waiting for room in the queue
            // holds its slot.
            all = slots.acquire_many(workers), if closing => {
                let _all = all;
                outcomes.close();
                while outcomes.recv_many(&mut batch, MAX_SETTLE).await > 0 {
                    write_outcomes(&engine, std::mem::replace(&mut batch, Vec::with_capacity(MAX_SETTLE))).await;
                }
                return;
            }
        }
    }
}

async fn write_outcomes(engine: &DeliveryEngine, outcomes: Vec<Outcome>) {
    let unit_engine = engine.clone();
    let unit = CommitFn::new(move |tx: &mut Transaction| {
        Box::pin(async move {
            let now = now_ms();
            let delivered: Vec<(&str, &str)> = outcomes
                .iter()
                .filter(|o| matches!(o.decision, Decision::Delivered))
                .map(|o| (o.claimed.id.as_str(), o.token.as_str()))
                .collect();
            let delivered = if delivered.is_empty() {
                HashSet::new()
            } else {
                tx.finish_delivered(&delivered, now).await?
            };
            let mut written = Vec::with_capacity(outcomes.len());
            let mut records = Vec::new();
            for o in &outcomes {
                if matches!(o.decision, Decision::Delivered) {
                    let done = delivered.contains(&o.claimed.id);
                    if done {
                        records.push(
                            AuditRecord::now("delivery.delivered", "system", "delivered")
                                .with_subject(o.claimed.id.clone())
                                .with_detail(serde_json::json!({
                                    "eventId": o.claimed.message_id,
                                    "targetId": o.destination.id,
                                    "targetName": o.destination.name,
                                    "attempts": o.claimed.attempts + 1,
                                })),
                        );
                    }
                    written.push(done);
                } else {
                    written.push(
                        write_outcome(
                            tx,
                            &unit_engine,
                            &o.destination,
                            &o.claimed,
                            &o.token,
                            &o.decision,
                        )
                        .await?,
                    );
                }
            }
            if !records.is_empty() {
                tx.append_audit_batch(&records).await?;
            }
            Ok((outcomes, written))
        }) as BoxFuture<'_, _>
    });
    let (outcomes, written): (Vec<Outcome>, Vec<bool>) =
        match engine.inner().committer.submit(unit).await {
            Ok(done) => done,
            Err(err) => {
                // The leases expire and the deliveries are attempted again.
                tracing::error!(error = %err, "writing delivery outcomes failed");
                return;
            }
        };
    let mut status_changed = false;
    for (o, written) in outcomes.iter().zip(written) {
        if !written {
            tracing::warn!("a delivery's lease was taken over before its outcome was written");
            continue;
        }
        let label = match &o.decision {
            Decision::Delivered => Some("delivered"),
            Decision::Retry { .. } => (o.claimed.purpose == purpose::EVENT).then_some("retry"),
            Decision::Dead { .. } | Decision::Gone { .. } => Some("dead"),
            Decision::Verified | Decision::VerificationFailed { .. } => None,
        };
        if let Some(label) = label {
            engine
                .inner()
                .metrics
                .deliveries_total
                .with_label_values(&[o.destination.name.as_str(), label])
                .inc();
        }
        status_changed |= matches!(
            o.decision,
            Decision::Gone { .. } | Decision::Verified | Decision::VerificationFailed { .. }
        );
    }
    if status_changed {
        if let Err(err) = engine.refresh_destinations().await {
            tracing::warn!(error = %err, "reading the delivery destinations failed");
        }
        engine.wake();
    }
}

async fn write_outcome(
    tx: &mut Transaction,
    engine: &DeliveryEngine,
    destination: &Destination,
    claimed: &ClaimedDelivery,
    token: &str,
    decision: &Decision,
) -> Result<bool, crate::store::StoreError> {
    let now = now_ms();
    let attempts = claimed.attempts + 1;
    let (status, next_at, error, delivered) = match decision {
        Decision::Delivered | Decision::Verified => {
            (DeliveryStatus::Delivered, now, None, Some(now))
        }
        Decision::Retry { wait, error } => (
            DeliveryStatus::Pending,
            now + millis(*wait),
            Some(error.as_str()),
            None,
        ),
        Decision::Dead { reason }
        | Decision::Gone { reason }
        | Decision::VerificationFailed { reason } => {
            (DeliveryStatus::Dead, now, Some(reason.as_str()), None)
        }
    };
    let written = tx
        .finish_delivery(
            &claimed.id,
            token,
            &Finish {
                status: status.as_str(),
                attempts,
                next_at_ms: next_at,
                last_error: error,
                delivered_ms: delivered,
                now_ms: now,
            },
        )
        .await?;
    if !written {
        return Ok(false);
    }
    match decision {
        Decision::Delivered => {
            tx.append_audit(
                &AuditRecord::now("delivery.delivered", "system", "delivered")
                    .with_subject(claimed.id.clone())
                    .with_detail(serde_json::json!({
                        "eventId": claimed.message_id,
                        "targetId": destination.id,
                        "targetName": destination.name,
                        "attempts": attempts,
                    })),
            )
            .await?;
        }
        Decision::Retry { .. } => {}
        Decision::Dead { reason } => {
            tx.append_audit(&dead_record(
                &claimed.id,
                &claimed.message_id,
                destination,
                attempts,
                reason,
            ))
            .await?;
        }
        Decision::Gone { reason } => {
            tx.append_audit(&dead_record(
                &claimed.id,
                &claimed.message_id,
                destination,
                attempts,
                reason,
            ))
            .await?;
            targets::disable(tx, engine, destination, "the target answered 410 Gone", now).await?;
        }
        Decision::Verified => {
            targets::settle_verification(
                tx,
                engine,
                destination,
                &claimed.message_id,
                TargetStatus::Verified,
                None,
                now,
            )
            .await?;
        }
        Decision::VerificationFailed { reason } => {
            targets::settle_verification(
                tx,
                engine,
                destination,
                &claimed.message_id,
                TargetStatus::Failed,
                Some(reason),
                now,
            )
            .await?;
        }
    }
    Ok(true)
}
