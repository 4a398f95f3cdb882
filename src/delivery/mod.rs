//! The durable delivery engine: every outbound event of the gateway (ingested business events,
//! target verification events, `gateway.target.updated`, reservation changes) is handed
//! to it as an [`OutboundMessage`] inside the producer's own transaction, and delivered at
//! least once to every destination whose event types match.
//!
//! # Layout
//! - this file: the engine's handle [`DeliveryEngine`] (enqueue, wake, queue depth, the
//!   deliveries of a message, the destination cache);
//! - `destination.rs`: destinations (targets and webhook subscriptions) as stored and as
//!   compiled for sending; retry policies;
//! - `signing.rs`: Standard Webhooks secrets, `webhook-id`, `webhook-signature`;
//! - `worker.rs`: the dispatcher (leased claims, per-destination acceptance order, the
//!   attempt and its outcome) and the sweeper;
//! - `targets.rs`: the targets capability — validation, the admin operations, declarative
//!   targets and their reload part, verification, health probes, `gateway.target.updated`;
//! - `webhooks.rs`: webhook subscriptions — destinations of kind `webhook` made through the
//!   admin API (validation, secrets and their rotation, the `{"type", "timestamp", "data"}`
//!   message the gateway's own events carry);
//! - `error.rs`: [`TargetError`], how the targets surface fails.
//!
//! # How a message travels
//! 1. A producer calls [`DeliveryEngine::enqueue`] inside its transaction: the message is
//!    written once (`delivery_messages`, the exact body bytes) and one delivery per matching
//!    destination (`deliveries`): `pending` for a VERIFIED or PENDING_VERIFICATION target,
//!    `dead` at once ("target disabled" / "target failed verification") for a DISABLED or
//!    FAILED one. The producer commits, then calls [`DeliveryEngine::wake`].
//! 2. The dispatcher claims due deliveries in acceptance order with a 30 s lease (renewed every
//!    10 s while the attempt runs): what the free slots of `[delivery] workers` can start, plus
//!    a read-ahead of about a quarter second of attempts at the recent rate (one claim is one
//!    write, so at thousands of deliveries a second claims stay few); it starts their attempts
//!    in that order as slots free, and gives back what has not started within 10 s. Only
//!    destinations that are VERIFIED receive deliveries; a delivery waiting for a retry is
//!    simply not due, so it never holds back later ones.
//! 3. An attempt POSTs the body with `Content-Type: application/json`, `Idempotency-Key`,
//!    `webhook-id` (`msg_<message>_<destination>`, the same on every attempt), `webhook-
//!    timestamp`, `webhook-signature`, the destination's auth and headers. 2xx → `delivered`;
//!    408/429/5xx/connection failures → retried per the destination's policy (a longer
//!    `Retry-After` replaces the wait; capped at 1 h); other 4xx, a refused address or
//!    exhausted retries → `dead` with the reason; 410 → `dead`, the target DISABLED and its
//!    pending deliveries `dead` ("target disabled").
//! 4. An attempt's outcome is queued for the settlement, which frees its worker slot; the
//!    settlement writes every queued outcome (and its audit record) as one unit of the
//!    [`GroupCommitter`] — the `delivered` ones with one statement — guarded by the lease: a
//!    worker whose lease was taken over writes nothing. A crash before that commit leaves the
//!    delivery `delivering` until its lease expires, and it is attempted again.
//! 5. The sweeper (every second) refreshes the destination cache (changes made by other
//!    replicas), the queue depth and lag, makes deliveries stranded at a failed, disabled or
//!    deleted destination dead, and wakes the dispatcher, so nothing due stays unclaimed — also
//!    deliveries whose worker died (their lease expired) and everything pending after a restart.
//!
//! Nothing is lost to a crash: a delivery is `pending` or `delivering` until an outcome is
//! committed; a process killed mid-attempt leaves a lease that expires and is taken again (the
//! consumer may see that attempt twice, with the same `webhook-id`).
//!
//! This module imports neither `ingest` nor `callbacks`: they hand it messages.

mod destination;
mod error;
pub mod signing;
pub mod targets;
pub mod webhooks;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use destination::{
    DestinationKind, MAX_RETRY_WAIT, Origin, RetryPolicy, TargetAuth, TargetConfig, TargetStatus,
};
pub use error::TargetError;

use destination::Destination;

use crate::config::DeliverySettings;
use crate::store::{
    AuditRecord, DeliveryRow, GroupCommitter, MessageRow, NewDelivery, Store, StoreError,
    Transaction,
};
use crate::telemetry::Metrics;
use crate::upstream::{HttpClient, HttpClientOptions, NetworkPolicy};

/// One message to deliver: the exact JSON body sent to every matching destination.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The message's id (an ingested event's `eventId`).
    pub id: Uuid,
    /// Matched against each destination's `event_types` globs.
    pub event_type: String,
    /// Sent as `Idempotency-Key`.
    pub idempotency_key: String,
    /// The exact bytes sent (never re-serialised: numbers keep their text).
    pub body: Bytes,
}

/// A delivery's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DeliveryId(pub Uuid);

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// An attempt is running (leased).
    Delivering,
    /// The destination answered 2xx.
    Delivered,
    /// Given up (the reason is its `lastError`); delivered again only when replayed.
    Dead,
}

impl DeliveryStatus {
    /// The stored (and shown) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivering => "delivering",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// Reads a name (`pending`, `delivering`, `delivered`, `dead`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "delivering" => Some(Self::Delivering),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// The delivery id.
    pub id: DeliveryId,
    /// The message (event) it delivers.
    pub event_id: Uuid,
    /// Its destination's id.
    pub target_id: String,
    /// Its destination's name.
    pub target_name: String,
    /// `pending` | `delivering` | `delivered` | `dead`.
    pub status: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// What went wrong last (the reason of a dead delivery).
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When the destination took it.
    pub delivered_at: Option<DateTime<Utc>>,
}

impl DeliveryView {
    /// The view of a stored row.
    pub fn of_row(row: DeliveryRow) -> Self {
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        Self {
            id: DeliveryId(Uuid::parse_str(&row.id).unwrap_or_default()),
            event_id: Uuid::parse_str(&row.message_id).unwrap_or_default(),
            target_id: row.destination_id,
            target_name: row.destination_name,
            status: DeliveryStatus::parse(&row.status)
                .unwrap_or(DeliveryStatus::Pending)
                .as_str(),
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            last_error: row.last_error,
            created_at: at(row.created_ms),
            delivered_at: row.delivered_ms.map(at),
        }
    }
}

/// What the delivery purpose column says.
pub(crate) mod purpose {
    /// A message to a destination.
    pub const EVENT: &str = "event";
    /// The verification message of a target.
    pub const VERIFICATION: &str = "verification";
}

/// The compiled destinations, by id.
#[derive(Default)]
pub(crate) struct DestinationSet {
    pub(crate) by_id: HashMap<String, Arc<Destination>>,
}

/// What the engine is built from.
pub struct EngineParts {
    /// The store.
    pub store: Store,
    /// Where outcomes are written.
    pub committer: GroupCommitter,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `[delivery]`.
    pub settings: DeliverySettings,
    /// Server threads (the HTTP clients keep a pool per thread).
    pub threads: usize,
}

/// The engine's handle (cheap to clone; lives in the app state).
#[derive(Clone)]
pub struct DeliveryEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeliveryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryEngine")
            .field("workers", &self.inner.workers)
            .field("queue_depth", &self.queue_depth())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) committer: GroupCommitter,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) destinations: ArcSwap<DestinationSet>,
    /// Serialises cache refreshes.
    refresh: tokio::sync::Mutex<()>,
    pub(crate) notify: Notify,
    /// Pending + delivering as last counted by the sweeper.
    counted: AtomicU64,
    /// Deliveries enqueued since that count.
    enqueued: AtomicU64,
    /// Declarative destinations (operator-trusted URLs).
    pub(crate) trusted: HttpClient,
    /// Destinations that came through the API (SSRF guard).
    pub(crate) guarded: HttpClient,
    pub(crate) policy: NetworkPolicy,
    pub(crate) workers: usize,
    /// One permit per worker: an attempt holds one until its outcome is queued.
    pub(crate) slots: Arc<Semaphore>,
    /// Where attempts queue their outcomes for the settlement.
    pub(crate) settle: mpsc::Sender<worker::Outcome>,
    /// The settlement's end of that queue, until [`DeliveryEngine::spawn`] starts it.
    settle_queue: std::sync::Mutex<Option<mpsc::Receiver<worker::Outcome>>>,
}

impl DeliveryEngine {
    /// The engine over `parts` (not running yet: see [`DeliveryEngine::spawn`]).
    pub fn new(parts: EngineParts) -> Self {
        let policy = NetworkPolicy::Guarded {
            allow_private: parts.settings.allow_private_networks,
            allow_cidrs: parts.settings.allow_cidrs.clone(),
        };
        let options = HttpClientOptions {
            threads: parts.threads,
            max_response_bytes: 1024 * 1024,
            ..HttpClientOptions::default()
        };
        let workers = parts.settings.workers.max(1);
        let (settle, settle_queue) = mpsc::channel(worker::SETTLE_QUEUE);
        Self {
            inner: Arc::new(Inner {
                store: parts.store,
                committer: parts.committer,
                metrics: parts.metrics,
                destinations: ArcSwap::from_pointee(DestinationSet::default()),
                refresh: tokio::sync::Mutex::new(()),
                notify: Notify::new(),
                counted: AtomicU64::new(0),
                enqueued: AtomicU64::new(0),
                trusted: HttpClient::new(NetworkPolicy::Trusted, &options),
                guarded: HttpClient::new(policy.clone(), &options),
                policy,
                workers,
                slots: Arc::new(Semaphore::new(workers)),
                settle,
                settle_queue: std::sync::Mutex::new(Some(settle_queue)),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Starts the dispatcher, the settlement of outcomes and the sweeper on `tasks`; they stop
    /// on `shutdown` (attempts in flight give their deliveries back, due at once; outcomes
    /// already decided are written). Once: a second call starts nothing.
    pub fn spawn(&self, tasks: &TaskTracker, shutdown: CancellationToken) {
        let queue = self
            .inner
            .settle_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(queue) = queue else {
            return;
        };
        tasks.spawn(worker::settle_outcomes(
            self.clone(),
            queue,
            shutdown.clone(),
        ));
        tasks.spawn(worker::dispatch(
            self.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(worker::sweep(self.clone(), shutdown));
    }

    /// Writes `message` and one delivery per matching destination inside `tx`; the caller commits.
    ///
    /// # Errors
    /// When the store refuses a write.
    pub async fn enqueue(
        &self,
        tx: &mut Transaction,
        message: &OutboundMessage,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        self.enqueue_matching(tx, message, None).await
    }

    /// Like [`DeliveryEngine::enqueue`], to destinations of `kind` only (the gateway's own
    /// events, e.g. `gateway.target.updated`, go to webhook subscriptions, never to targets).
    ///
    /// # Errors
    /// When the store refuses a write.
    pub async fn enqueue_for(
        &self,
        tx: &mut Transaction,
        message: &OutboundMessage,
        kind: DestinationKind,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        self.enqueue_matching(tx, message, Some(kind)).await
    }

    /// Like [`DeliveryEngine::enqueue_for`] for many messages at once (a batch of events): the
    /// messages and their deliveries are written with one statement per few hundred rows, the
    /// deliveries in the order of `messages`. Answers the deliveries of each message, in order.
    ///
    /// # Errors
    /// When the store refuses a write.
    pub async fn enqueue_all_for(
        &self,
        tx: &mut Transaction,
        messages: &[OutboundMessage],
        kind: DestinationKind,
    ) -> Result<Vec<Vec<DeliveryId>>, StoreError> {
        self.enqueue_many(tx, messages, Some(kind)).await
    }

    async fn enqueue_matching(
        &self,
        tx: &mut Transaction,
        message: &OutboundMessage,
        kind: Option<DestinationKind>,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        let mut ids = self
            .enqueue_many(tx, std::slice::from_ref(message), kind)
            .await?;
        Ok(ids.pop().unwrap_or_default())
    }

    async fn enqueue_many(
        &self,
        tx: &mut Transaction,
        messages: &[OutboundMessage],
        kind: Option<DestinationKind>,
    ) -> Result<Vec<Vec<DeliveryId>>, StoreError> {
        let set = self.inner.destinations.load();
        let mut candidates: Vec<&Arc<Destination>> = set
            .by_id
            .values()
            .filter(|d| kind.is_none_or(|k| d.kind == k))
            .collect();
        candidates.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        let now_ms = Utc::now().timestamp_millis();
        let message_ids: Vec<String> = messages.iter().map(|m| m.id.to_string()).collect();
        // Per message, its destinations with a delivery id each, in the order written.
        let mut planned: Vec<Vec<(&Arc<Destination>, Uuid, String)>> =
            Vec::with_capacity(messages.len());
        for message in messages {
            planned.push(
                candidates
                    .iter()
                    .filter(|d| d.takes(&message.event_type))
                    .map(|d| {
                        let id = Uuid::now_v7();
                        (*d, id, id.to_string())
                    })
                    .collect(),
            );
        }
        let rows: Vec<MessageRow<'_>> = messages
            .iter()
            .zip(&message_ids)
            .zip(&planned)
            .filter(|(_, destinations)| !destinations.is_empty())
            .map(|((message, id), _)| MessageRow {
                id,
                event_type: &message.event_type,
                idempotency_key: &message.idempotency_key,
                body: &message.body,
                created_ms: now_ms,
            })
            .collect();
        if rows.is_empty() {
            return Ok(vec![Vec::new(); messages.len()]);
        }
        tx.insert_messages(&rows).await?;
        let dead_reason = |destination: &Destination| match destination.status {
            TargetStatus::Verified | TargetStatus::PendingVerification => None,
            TargetStatus::Failed => Some("target failed verification"),
            TargetStatus::Disabled => Some("target disabled"),
        };
        let mut deliveries = Vec::new();
        let mut dead = Vec::new();
        let mut pending = 0;
        for (message_id, destinations) in message_ids.iter().zip(&planned) {
            for (destination, _, id_text) in destinations {
                let reason = dead_reason(destination);
                deliveries.push(NewDelivery {
                    id: id_text,
                    message_id,
                    destination_id: &destination.id,
                    purpose: purpose::EVENT,
                    status: if reason.is_some() {
                        DeliveryStatus::Dead.as_str()
                    } else {
                        DeliveryStatus::Pending.as_str()
                    },
                    last_error: reason,
                    now_ms,
                });
                match reason {
                    Some(reason) => {
                        dead.push(dead_record(id_text, message_id, destination, 0, reason));
                        self.inner
                            .metrics
                            .deliveries_total
                            .with_label_values(&[destination.name.as_str(), "dead"])
                            .inc();
                    }
                    None => pending += 1,
                }
            }
        }
        tx.insert_deliveries(&deliveries).await?;
        if !dead.is_empty() {
            tx.append_audit_batch(&dead).await?;
        }
        self.inner.enqueued.fetch_add(pending, Ordering::Relaxed);
        Ok(planned
            .into_iter()
            .map(|destinations| {
                destinations
                    .into_iter()
                    .map(|(_, id, _)| DeliveryId(id))
                    .collect()
            })
            .collect())
    }

    /// Wakes the workers; call after the commit that enqueued.
    pub fn wake(&self) {
        self.inner.notify.notify_one();
    }

    /// Deliveries pending or being delivered (no query per call: the sweeper's last count plus
    /// what this process enqueued since).
    pub fn queue_depth(&self) -> u64 {
        self.inner.counted.load(Ordering::Relaxed) + self.inner.enqueued.load(Ordering::Relaxed)
    }

    pub(crate) fn set_counted_depth(&self, depth: u64) {
        self.inner.enqueued.store(0, Ordering::Relaxed);
        self.inner.counted.store(depth, Ordering::Relaxed);
    }

    /// The deliveries of one message.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn of_message(&self, id: Uuid) -> Result<Vec<DeliveryView>, StoreError> {
        let rows = self
            .inner
            .store
            .deliveries_of_message(&id.to_string())
            .await?;
        Ok(rows.into_iter().map(DeliveryView::of_row).collect())
    }

    /// Reads every destination from the store again and recompiles those that changed
    /// (called after every local change, and every second by the sweeper for the changes of
    /// other replicas).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn refresh_destinations(&self) -> Result<(), StoreError> {
        let _one = self.inner.refresh.lock().await;
        let rows = self.inner.store.destinations().await?;
        let old = self.inner.destinations.load_full();
        let mut by_id = HashMap::with_capacity(rows.len());
        for row in rows {
            let previous = old.by_id.get(&row.id);
            if let Some(previous) = previous
                && previous.updated_ms == row.updated_ms
                && previous.fingerprint == row.config_hash
                && previous.status.as_str() == row.status
            {
                by_id.insert(row.id.clone(), previous.clone());
                continue;
            }
            match Destination::compile(
                &row,
                previous.map(|p| p.as_ref()),
                &self.inner.trusted,
                &self.inner.guarded,
                &self.inner.metrics,
            ) {
                Some(compiled) => {
                    by_id.insert(row.id.clone(), Arc::new(compiled));
                }
                None => tracing::error!(
                    destination = %row.name,
                    "a stored delivery destination cannot be used (its configuration is unreadable); skipped"
                ),
            }
        }
        self.inner
            .destinations
            .store(Arc::new(DestinationSet { by_id }));
        Ok(())
    }

    pub(crate) fn destination(&self, id: &str) -> Option<Arc<Destination>> {
        self.inner.destinations.load().by_id.get(id).cloned()
    }

    /// The network policy applied to destinations that came through the API.
    pub fn network_policy(&self) -> &NetworkPolicy {
        &self.inner.policy
    }

    /// The store the engine writes to.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// The audit record of a delivery that is dead.
pub(crate) fn dead_record(
    delivery_id: &str,
    message_id: &str,
    destination: &Destination,
    attempts: i64,
    reason: &str,
) -> AuditRecord {
    AuditRecord::now("delivery.dead", "system", "dead")
        .with_subject(delivery_id)
        .with_detail(serde_json::json!({
            "eventId": message_id,
            "targetId": destination.id,
            "targetName": destination.name,
            "attempts": attempts,
            "reason": reason,
        }))
}
