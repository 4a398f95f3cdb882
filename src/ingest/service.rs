//! Accepting events for good: the part of ingest that talks to the store and hands events to
//! the delivery engine.
//!
//! [`Ingest`] holds what the handlers need (the [`JwtVerifier`], the [`EventPipeline`], the
//! process's [`GroupCommitter`], the [`DeliveryEngine`]). [`Ingest::accept`] takes a verified
//! token and a request body and answers one [`EventResult`] per event, in input order, only
//! once everything it wrote is committed.
//!
//! # Concurrent requests, one unit of the group committer
//! Requests that arrive while a unit is being written wait together, and the next unit takes
//! them all (at most 2 000 events): one unit of the process's [`GroupCommitter`] writes the
//! events of many requests, so that they share statements as well as the commit (on SQLite one
//! fsync, and a few statements, for dozens of requests: every sqlx statement on SQLite is a
//! round trip to its connection's thread). The flush runs in a task of its own while requests
//! wait, and ends when none does. In the unit, inside a savepoint, with one statement per kind
//! of row for all of its requests:
//! 1. insert the `ingest_events` rows, each under a new [`EventId`] unless its idempotency key
//!    is taken for its issuer (the database enforces it, also between two events of the unit;
//!    see [`crate::store`]'s `events` topic);
//! 2. read the rows that hold the keys that were taken; for each event in order, one not
//!    inserted with the same fingerprint is a `duplicate` answered with that row's id (nothing
//!    enqueued); another fingerprint is a conflict, and that whole request is refused (409);
//! 3. hand the inserted events to [`DeliveryEngine::enqueue_all_for`] targets (the message
//!    rows and one delivery per matching target, in the same transaction), and write one
//!    `event.accepted` audit record each — `queued`.
//!
//! When a request conflicts, the unit rolls back to its savepoint and writes its requests one
//! by one in arrival order, each in a savepoint of its own, so that every request is answered
//! as if it had been alone: the conflicting one with 409 and nothing kept, the others as they
//! would have been. The answers come after the commit; the workers are woken
//! ([`DeliveryEngine::wake`]) only then.
//!
//! A request whose client goes away after its unit was queued is committed all the same: a
//! retry of it is a `duplicate` with the same ids.
//!
//! # Backpressure
//! Before a body is even parsed: when the delivery engine reports more pending + delivering
//! deliveries than `[ingest] max_queue_depth`, the request is refused with 503 `overloaded`
//! and `Retry-After`, so that a consumer that cannot keep up slows producers down instead of
//! filling the disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use http::HeaderMap;
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::error::AcceptError;
use super::event::{EventId, EventPipeline, PreparedEvent};
use super::idempotency::IdempotencyKey;
use super::timestamp::format_event_time;
use crate::auth::jwt::{JwtVerifier, VerifiedToken};
use crate::delivery::{DeliveryEngine, DestinationKind, OutboundMessage};
use crate::store::{
    AuditRecord, CommitError, CommitWork, EventRow, GroupCommitter, Store, StoreError, Transaction,
};
use crate::telemetry::{Metrics, RequestId};

/// The audit kind of an accepted event.
pub const EVENT_ACCEPTED: &str = "event.accepted";

/// What an accepted event became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// New: stored and handed to the delivery engine.
    Queued,
    /// A repeat of an event accepted before (same key, same content): answered with that
    /// event's id, not enqueued again.
    Duplicate,
}

impl EventStatus {
    /// The `outcome` label of `gateway_ingest_events_total`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Duplicate => "duplicate",
        }
    }
}

/// One entry of the 202 answer's `results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventResult {
    /// The event's id (the original one for a duplicate).
    pub event_id: EventId,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// `queued` or `duplicate`.
    pub status: EventStatus,
}

/// An accepted event as `GET /v1/events/{eventId}` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// Its id.
    pub event_id: EventId,
    /// Its `eventType`.
    pub event_type: String,
    /// Its `eventTime` (RFC 3339 UTC, milliseconds).
    pub event_time: String,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// When it was accepted (RFC 3339 UTC, milliseconds).
    pub accepted_at: String,
    /// One entry per target it is delivered to.
    pub deliveries: Vec<EventDelivery>,
}

/// One delivery of an event, as [`EventView`] lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDelivery {
    /// The delivery's id.
    pub id: String,
    /// The target's id.
    pub target_id: String,
    /// The target's name.
    pub target_name: String,
    /// `pending`, `delivering`, `delivered` or `dead`.
    pub status: &'static str,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When it was delivered (RFC 3339 UTC, milliseconds).
    pub delivered_at: Option<String>,
}

/// What [`Ingest::new`] is built from.
#[derive(Debug, Clone)]
pub struct IngestParts {
    /// The verifier of `[ingest] auth`'s issuers.
    pub verifier: JwtVerifier,
    /// The compiled `[ingest]` rules.
    pub pipeline: EventPipeline,
    /// Where events are read from.
    pub store: Store,
    /// The process's group committer (events are written through it).
    pub committer: GroupCommitter,
    /// Where accepted events go.
    pub delivery: DeliveryEngine,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// `[ingest] max_queue_depth`.
    pub max_queue_depth: u64,
}

/// The ingest capability (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingest {
    inner: Arc<IngestParts>,
    merger: Arc<Mutex<Merger>>,
}

impl Ingest {
    /// The capability over these parts.
    pub fn new(parts: IngestParts) -> Self {
        Self {
            inner: Arc::new(parts),
            merger: Arc::default(),
        }
    }

    /// Verifies the one bearer token of a request; a refusal is counted in
    /// `gateway_ingest_rejections_total{reason}`.
    ///
    /// # Errors
    /// [`AcceptError::Unauthorized`] with the reason.
    pub async fn authenticate(
        &self,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Result<VerifiedToken, AcceptError> {
        self.inner
            .verifier
            .verify_head(uri, headers)
            .await
            .map_err(|rejection| self.rejected(AcceptError::Unauthorized(rejection)))
    }

    /// Counts a refused request under its reason and hands the error back.
    pub fn rejected(&self, err: AcceptError) -> AcceptError {
        if let Some(reason) = err.reason() {
            self.inner
                .metrics
                .ingest_rejections_total
                .with_label_values(&[reason])
                .inc();
        }
        err
    }

    /// Accepts the events of `body` sent with `token` (and the request's `headers`, for
    /// `Idempotency-Key`): one result per event, in input order, once committed.
    ///
    /// # Errors
    /// [`AcceptError::Overloaded`] over `max_queue_depth`; [`AcceptError::Body`] for a body
    /// that cannot be accepted; [`AcceptError::Conflict`] when an event reuses a key with
    /// other content (nothing is accepted then); [`AcceptError::Unavailable`] while shutting
    /// down; [`AcceptError::Store`] when the store fails. Every refusal is counted.
    pub async fn accept(
        &self,
        token: &VerifiedToken,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<EventResult>, AcceptError> {
        self.try_accept(token, headers, body)
            .await
            .map_err(|err| self.rejected(err))
    }

    async fn try_accept(
        &self,
        token: &VerifiedToken,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<EventResult>, AcceptError> {
        let parts = &*self.inner;
        if parts.delivery.queue_depth() > parts.max_queue_depth {
            return Err(AcceptError::Overloaded);
        }
        let key = IdempotencyKey::from_headers(headers)?;
        let events = parts.pipeline.prepare(body, &token.iss, key)?;
        let batch = body_is_array(body);
        let request = Request {
            iss: token.iss.to_string(),
            actor: format!("issuer:{}", token.issuer),
            request_id: RequestId::current().map(|id| id.to_string()),
            events,
        };
        match self.merged(request).await? {
            // Counted, and the engine woken, where the unit committed (`flush`).
            Accepted::Results(results) => Ok(results),
            Accepted::Conflict { index } => Err(AcceptError::Conflict { index, batch }),
        }
    }

    /// The event `id` as its issuer sees it, with its deliveries.
    ///
    /// # Errors
    /// [`AcceptError::NotFound`] for an id that is not a UUID, unknown, or accepted from
    /// another issuer; [`AcceptError::Store`] when the store fails.
    pub async fn event(&self, token: &VerifiedToken, id: &str) -> Result<EventView, AcceptError> {
        let id = EventId::parse(id).map_err(|_| AcceptError::NotFound)?;
        let row = self
            .inner
            .store
            .event(&id.to_string(), &token.iss)
            .await?
            .ok_or(AcceptError::NotFound)?;
        let deliveries = self
            .inner
            .delivery
            .of_message(*id.as_uuid())
            .await?
            .into_iter()
            .map(|d| EventDelivery {
                id: d.id.0.to_string(),
                target_id: d.target_id,
                target_name: d.target_name,
                status: d.status,
                attempts: d.attempts,
                last_error: d.last_error,
                delivered_at: d.delivered_at.map(format_event_time),
            })
            .collect();
        Ok(EventView {
            event_id: id,
            event_type: row.event_type,
            event_time: format_millis(row.event_time_ms),
            idempotency_key: row.idempotency_key,
            accepted_at: format_millis(row.accepted_ms),
            deliveries,
        })
    }
}

/// Whether a body (already accepted by the pipeline) is an array of events.
fn body_is_array(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'[')
}

fn format_millis(ms: i64) -> String {
    let time: DateTime<Utc> = Utc
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH);
    format_event_time(time)
}

/// What the unit of a request answers.
enum Accepted {
    /// Everything written (or found): one result per event.
    Results(Vec<EventResult>),
    /// The event at `index` conflicts; nothing of the request was kept.
    Conflict { index: usize },
}

/// One request's events, as the merger holds them.
struct Request {
    iss: String,
    actor: String,
    request_id: Option<String>,
    events: Vec<PreparedEvent>,
}

/// A request waiting for the next merged unit, and where its answer goes.
struct Waiting {
    request: Request,
    reply: oneshot::Sender<Result<Accepted, AcceptError>>,
}

/// The requests waiting for a unit, and whether a flush is running.
#[derive(Default)]
struct Merger {
    waiting: Vec<Waiting>,
    flushing: bool,
}

impl std::fmt::Debug for Merger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merger")
            .field("waiting", &self.waiting.len())
            .field("flushing", &self.flushing)
            .finish()
    }
}

/// The most events one merged unit takes (further requests wait for the next one).
const MAX_MERGED_EVENTS: usize = 2000;

impl Ingest {
    /// Hands `request` to the merger and waits for its answer (see "Concurrent requests, one
    /// unit" in the module docs).
    async fn merged(&self, request: Request) -> Result<Accepted, AcceptError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut merger = self.merger();
            merger.waiting.push(Waiting { request, reply });
            !std::mem::replace(&mut merger.flushing, true)
        };
        if start {
            // A task of its own: a request that goes away must not take the flush with it.
            tokio::spawn(self.clone().flush());
        }
        answer.await.unwrap_or(Err(AcceptError::Unavailable))
    }

    fn merger(&self) -> std::sync::MutexGuard<'_, Merger> {
        self.merger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts what a unit stored and wakes the delivery engine for it. Here rather than in
    /// the request, so that events committed for a client that went away before its answer
    /// (they are owned now, and will be delivered) are counted too.
    fn committed(&self, answers: &[Accepted]) {
        let (mut queued, mut duplicates) = (0_u64, 0_u64);
        for answer in answers {
            if let Accepted::Results(results) = answer {
                for result in results {
                    if result.status == EventStatus::Queued {
                        queued += 1;
                    } else {
                        duplicates += 1;
                    }
                }
            }
        }
        if queued > 0 {
            self.inner.delivery.wake();
        }
        let counter = &self.inner.metrics.ingest_events_total;
        counter
            .with_label_values(&[EventStatus::Queued.label()])
            .inc_by(queued);
        counter
            .with_label_values(&[EventStatus::Duplicate.label()])
            .inc_by(duplicates);
    }

    /// Writes what waits, one merged unit after the other, until nothing does.
    async fn flush(self) {
        loop {
            let taken = {
                let mut merger = self.merger();
                let mut events = 0;
                let count = merger
                    .waiting
                    .iter()
                    .take_while(|w| {
                        let take =
                            events == 0 || events + w.request.events.len() <= MAX_MERGED_EVENTS;
                        events += w.request.events.len();
                        take
                    })
                    .count();
                if count == 0 {
                    merger.flushing = false;
                    return;
                }
                merger.waiting.drain(..count).collect::<Vec<_>>()
            };
            let (requests, replies): (Vec<Request>, Vec<_>) =
                taken.into_iter().map(|w| (w.request, w.reply)).unzip();
            let unit = AcceptUnit {
                requests,
                delivery: self.inner.delivery.clone(),
            };
            match self.inner.committer.submit(unit).await {
                Ok(answers) => {
                    self.committed(&answers);
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(err) => {
                    let unavailable = matches!(err, CommitError::Stopped | CommitError::Full);
                    for reply in replies {
                        let _ = reply.send(Err(if unavailable {
                            AcceptError::Unavailable
                        } else {
                            AcceptError::Store(err.to_string())
                        }));
                    }
                }
            }
        }
    }
}

/// The writes of the requests of one merged unit (see "Concurrent requests, one unit").
struct AcceptUnit {
    requests: Vec<Request>,
    delivery: DeliveryEngine,
}

impl CommitWork for AcceptUnit {
    type Output = Vec<Accepted>;

    async fn write(self, tx: &mut Transaction) -> Result<Vec<Accepted>, StoreError> {
        match write_requests(tx, &self.delivery, &self.requests).await? {
            Ok(answers) => Ok(answers),
            // One request conflicts: nothing was kept; each request alone, in order, so that
            // the others are accepted as if they had come one after the other.
            Err(_) if self.requests.len() > 1 => {
                let mut answers = Vec::with_capacity(self.requests.len());
                for request in &self.requests {
                    let one = std::slice::from_ref(request);
                    answers.push(match write_requests(tx, &self.delivery, one).await? {
                        Ok(mut answer) => answer.pop().unwrap_or(Accepted::Results(Vec::new())),
                        Err(index) => Accepted::Conflict { index },
                    });
                }
                Ok(answers)
            }
            Err(index) => Ok(vec![Accepted::Conflict { index }]),
        }
    }
}

/// Writes the events of `requests` with one statement per kind of row: each request's
/// answer, in order; or, when an event of one of them reuses a key with other content, that
/// event's index in its request, with nothing of `requests` kept.
async fn write_requests(
    tx: &mut Transaction,
    delivery: &DeliveryEngine,
    requests: &[Request],
) -> Result<Result<Vec<Accepted>, usize>, StoreError> {
    tx.begin_event_batch().await?;
    let now = Utc::now();
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for request in requests {
        for event in &request.events {
            let id = EventId::new_v7();
            rows.push(EventRow {
                id: id.to_string(),
                iss: request.iss.clone(),
                idempotency_key: event.idempotency_key.as_str().to_owned(),
                fingerprint: event.fingerprint.as_bytes().to_vec(),
                event_type: event.event_type.clone(),
                event_time_ms: event.event_time.timestamp_millis(),
                accepted_ms: now.timestamp_millis(),
            });
            ids.push(id);
        }
    }
    let inserted = tx.insert_events(&rows).await?;
    // Keys that were taken (by an earlier request, another replica, or an earlier event of
    // these requests): the rows that hold them decide.
    let mut taken: HashMap<&str, Vec<&str>> = HashMap::new();
    for row in rows.iter().filter(|row| !inserted.contains(&row.id)) {
        taken
            .entry(row.iss.as_str())
            .or_default()
            .push(row.idempotency_key.as_str());
    }
    let mut stored = HashMap::with_capacity(taken.len());
    for (iss, keys) in taken {
        stored.insert(iss, tx.events_by_keys(iss, &keys).await?);
    }
    let mut answers = Vec::with_capacity(requests.len());
    let mut messages = Vec::with_capacity(inserted.len());
    // Per message: the actor and request id of its audit record.
    let mut origins = Vec::with_capacity(inserted.len());
    let mut at = 0;
    for request in requests {
        let mut results = Vec::with_capacity(request.events.len());
        for event in &request.events {
            let (id, row) = (&ids[at], &rows[at]);
            at += 1;
            let key = event.idempotency_key.as_str();
            if inserted.contains(&row.id) {
                messages.push(OutboundMessage {
                    id: *id.as_uuid(),
                    event_type: event.event_type.clone(),
                    idempotency_key: key.to_owned(),
                    body: event.body(id),
                });
                origins.push((request.actor.as_str(), request.request_id.as_deref()));
                results.push(EventResult {
                    event_id: *id,
                    idempotency_key: key.to_owned(),
                    status: EventStatus::Queued,
                });
                continue;
            }
            let holder = stored
                .get(request.iss.as_str())
                .and_then(|found| found.get(key))
                .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
            if holder.fingerprint.as_slice() != event.fingerprint.as_bytes() {
                tx.discard_event_batch().await?;
                return Ok(Err(event.index));
            }
            let original = EventId::parse(&holder.id)
                .map_err(|err| StoreError::Database(sqlx::Error::Decode(Box::new(err))))?;
            results.push(EventResult {
                event_id: original,
                idempotency_key: key.to_owned(),
                status: EventStatus::Duplicate,
            });
        }
        answers.push(Accepted::Results(results));
    }
    if !messages.is_empty() {
        let deliveries = delivery
            .enqueue_all_for(tx, &messages, DestinationKind::Target)
            .await?;
        let records: Vec<AuditRecord> = messages
            .iter()
            .zip(&deliveries)
            .zip(&origins)
            .map(|((message, deliveries), (actor, request_id))| {
                let mut record = AuditRecord::now(EVENT_ACCEPTED, *actor, "queued")
                    .with_subject(message.id.to_string())
                    .with_detail(json!({
                        "eventType": message.event_type,
                        "idempotencyKey": message.idempotency_key,
                        "deliveries": deliveries.len(),
                    }));
                record.at = now;
                if let Some(request_id) = request_id {
                    record = record.with_request_id(*request_id);
                }
                record
            })
            .collect();
        tx.append_audit_batch(&records).await?;
    }
    tx.keep_event_batch().await?;
    Ok(Ok(answers))
}
