//! How a reservation is kept in the store, and the one place where every published change is
//! written: [`record_change`].
//!
//! A reservation is stored as its API shape (JSON text) beside the facts the store queries
//! (queue, status, whether it holds a place, slot, conversation, version, seq, times).
//!
//! # The seam
//! [`record_change`] runs inside the transaction of the change, after the caller locked the
//! reservation's row and changed it ([`Reservation::change_status`]). It writes the audit record,
//! numbers the change (the next `seq`, in commit order), stores the reservation's new state and
//! the change row the stream replays from, and hands the delivery engine the webhook message of
//! the change (`{"type", "timestamp", "data"}`: the event type, the reservation's `updatedAt`,
//! the reservation — the shape of [`WebhookPayload`](super::WebhookPayload)), which the engine
//! routes to every matching webhook subscription. Everything that must happen exactly when a
//! change is committed belongs here, in the same transaction.
//!
//! # Retention
//! The change rows exist for the stream's `since` replay, not as history (the audit log is
//! that): [`run_change_pruner`] deletes those older than [`ChangeRetention::max_age`] (7 days)
//! or more than [`ChangeRetention::max_rows`] (1,000,000) behind the last one, oldest first, in
//! batches, every [`ChangeRetention::interval`]. A stream resuming from before what is kept is
//! told to read the reservations again (see [`super::stream`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::error::ReservationError;
use super::event::{ReservationEventType, StreamMessage};
use super::reservation::Reservation;
use crate::delivery::webhooks::webhook_message;
use crate::delivery::{DeliveryEngine, DestinationKind};
use crate::store::{AuditRecord, ChangeRow, ReservationRow, Store, StoreError, Transaction};

/// The row that stores `reservation`.
///
/// # Errors
/// [`ReservationError::Corrupt`] if it cannot be written as JSON (never for a valid one).
pub fn to_row(reservation: &Reservation) -> Result<ReservationRow, ReservationError> {
    let body = serde_json::to_string(reservation)
        .map_err(|err| ReservationError::Corrupt(err.to_string()))?;
    Ok(ReservationRow {
        id: reservation.id.to_string(),
        queue_id: reservation.queue_id.clone(),
        status: reservation.status.as_str().to_owned(),
        live: reservation.status.is_live(),
        slot_start_ms: reservation.slot.start().timestamp_millis(),
        slot_end_ms: reservation.slot.end().timestamp_millis(),
        conversation_id: reservation.conversation_id.clone(),
        version: i64::from(reservation.version),
        seq: i64::try_from(reservation.seq).unwrap_or(i64::MAX),
        created_ms: reservation.created_at.timestamp_millis(),
        updated_ms: reservation.updated_at.timestamp_millis(),
        body,
    })
}

/// The reservation a row stores.
///
/// # Errors
/// [`ReservationError::Corrupt`] when its JSON is not a reservation.
pub fn from_row(row: &ReservationRow) -> Result<Reservation, ReservationError> {
    serde_json::from_str(&row.body)
        .map_err(|err| ReservationError::Corrupt(format!("reservation {}: {err}", row.id)))
}

/// The stream frame of a stored change.
///
/// # Errors
/// [`ReservationError::Corrupt`] when the row is not a change this gateway wrote.
pub fn frame_of(change: &ChangeRow) -> Result<StreamMessage, ReservationError> {
    let event_type = change
        .event_type
        .parse::<ReservationEventType>()
        .map_err(|_| ReservationError::Corrupt(format!("change {}: event type", change.seq)))?;
    let reservation: Reservation = serde_json::from_str(&change.body)
        .map_err(|err| ReservationError::Corrupt(format!("change {}: {err}", change.seq)))?;
    Ok(StreamMessage {
        seq: u64::try_from(change.seq).unwrap_or(0),
        event_type,
        reservation,
    })
}

/// The audit `kind` of a published change (`reservation.created`, `reservation.updated`,
/// `reservation.canceled`).
pub fn audit_kind(event: ReservationEventType) -> &'static str {
    match event {
        ReservationEventType::Created => "reservation.created",
        ReservationEventType::Updated => "reservation.updated",
        ReservationEventType::Canceled => "reservation.canceled",
    }
}

/// The audit record of a change of `reservation` (already changed) by `actor`: the subject is
/// the reservation id, the outcome its new status; the detail holds the queue, the version and
/// the previous status — never the customer's data.
pub fn audit_record(
    event: ReservationEventType,
    reservation: &Reservation,
    previous: super::ReservationStatus,
    actor: &str,
    at: DateTime<Utc>,
) -> AuditRecord {
    let mut record = AuditRecord::now(audit_kind(event), actor, reservation.status.as_str())
        .with_subject(reservation.id.to_string())
        .with_detail(serde_json::json!({
            "queueId": reservation.queue_id,
            "version": reservation.version,
            "previousStatus": previous.as_str(),
            "conversationId": reservation.conversation_id,
        }));
    record.at = at;
    if let Some(id) = crate::telemetry::RequestId::current() {
        record = record.with_request_id(&*id);
    }
    record
}

/// Commits a published change of `reservation` inside `tx` (see "The seam"): writes `audit`,
/// takes the next `seq` (set on `reservation`), stores the reservation's new state and the
/// change row, and enqueues the change's webhook message on `delivery`. The caller commits
/// `tx`, then wakes the stream and `delivery`.
///
/// # Errors
/// [`ReservationError::Store`]; the caller drops the transaction (nothing is written).
pub async fn record_change(
    tx: &mut Transaction,
    delivery: &DeliveryEngine,
    event: ReservationEventType,
    reservation: &mut Reservation,
    audit: &AuditRecord,
) -> Result<ChangeRow, ReservationError> {
    tx.append_audit(audit).await?;
    // Taken last: the counter row stays locked until commit (see the store's docs).
    let seq = tx.next_change_seq().await?;
    reservation.seq = u64::try_from(seq).map_err(|_| {
        ReservationError::Store(StoreError::Database(sqlx::Error::Decode(
            "negative change number".into(),
        )))
    })?;
    let row = to_row(reservation)?;
    tx.update_reservation(&row).await?;
    let change = ChangeRow {
        seq,
        reservation_id: row.id,
        event_type: event.as_str().to_owned(),
        at_ms: reservation.updated_at.timestamp_millis(),
        body: row.body,
    };
    tx.insert_change(&change).await?;
    // After the number is taken: subscribers get the reservation as the API and the stream
    // show it, `seq` included (the counter row stays locked for these few more rows).
    let message = webhook_message(event.as_str(), &*reservation, reservation.updated_at)
        .map_err(|err| ReservationError::Corrupt(format!("webhook message: {err}")))?;
    delivery
        .enqueue_for(tx, &message, DestinationKind::Webhook)
        .await?;
    Ok(change)
}

/// How long published changes are kept for the stream's replay (see "Retention").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRetention {
    /// Changes older than this are deleted.
    pub max_age: Duration,
    /// At most this many of the latest changes are kept.
    pub max_rows: u64,
    /// The time between two passes (the first pass is at once).
    pub interval: Duration,
    /// Changes deleted per transaction (at least 1).
    pub batch_rows: u32,
}

impl Default for ChangeRetention {
    /// 7 days, 1,000,000 changes, a pass every 10 minutes, 1000 per transaction.
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 86_400),
            max_rows: 1_000_000,
            interval: Duration::from_secs(600),
            batch_rows: 1000,
        }
    }
}

/// One pruning pass as of `now`: deletes every change past `retention`, a batch per
/// transaction, until none is left or `cancel` fires. Returns how many were deleted.
///
/// # Errors
/// [`StoreError`] of a batch (the batches before it stay deleted).
pub async fn prune_changes(
    store: &Store,
    retention: &ChangeRetention,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<u64, StoreError> {
    let max_age = chrono::Duration::from_std(retention.max_age).unwrap_or(chrono::Duration::MAX);
    let before_ms = now
        .checked_sub_signed(max_age)
        .map_or(i64::MIN, |t| t.timestamp_millis());
    let batch = retention.batch_rows.max(1);
    let mut total = 0;
    while !cancel.is_cancelled() {
        let deleted = store
            .prune_changes(before_ms, retention.max_rows, batch)
            .await?;
        total += deleted;
        if deleted < u64::from(batch) {
            break;
        }
        // Let the writers of this runtime go first between two batches.
        tokio::task::yield_now().await;
    }
    Ok(total)
}

/// The background task deleting the changes past `retention` (see "Retention"), every
/// `retention.interval` until `cancel` fires. Every replica may run it: passes of several
/// replicas delete the same oldest rows, never a kept one.
pub async fn run_change_pruner(
    store: Store,
    retention: ChangeRetention,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(retention.interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        match prune_changes(&store, &retention, Utc::now(), &cancel).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, "reservation changes past their retention deleted")
            }
            Err(err) => {
                tracing::warn!(error = %err, "pruning reservation changes failed; trying again at the next pass");
            }
        }
    }
}
