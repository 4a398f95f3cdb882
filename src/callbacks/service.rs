//! The reservation capability at work: [`Reservations`] takes a place, creates the callback in
//! Genesys, cancels, reads and lists reservations, and applies what Genesys reports about them —
//! every change through one path that commits it with its audit record, its number and its
//! webhook message, then wakes the stream and the delivery engine.
//!
//! # Reserving
//! 1. The body is checked against the queue's calendar at the clock's "now".
//! 2. In one transaction, under the queue's capacity lock, the first requested slot with fewer
//!    than [`limit`](super::ValidReservationRequest::limit) overlapping live reservations gets a
//!    `pending` row (not visible to lists, the stream or subscribers). None free → 409.
//! 3. The callback is created in Genesys (`routingData.queueId`, `callbackNumbers`,
//!    `callbackUserName`, `callbackScheduledTime` = slot start, `data` + `gatewayReservationId`),
//!    retried as the `genesys` upstream's policy says — never while a transaction is open.
//! 4. The outcome is published as version 1: `scheduled` with the conversation, or `failed`
//!    (the place is free again) and the Genesys failure is answered as every upstream failure.
//!
//! Steps 3 and 4 run in a task of the application's tracker: a caller that goes away in the
//! middle (or a request deadline that passes) does not leave the place taken. A process killed
//! between steps 2 and 4 leaves a `pending` row; the sync's sweep ([`Reservations::sweep_pending`])
//! settles such rows once they are older than [`STALE_PENDING`]: `failed`, or — when Genesys
//! reported the conversation meanwhile — the status Genesys gives it.
//!
//! # Genesys reports
//! [`Reservations::apply`] takes a [`CallbackUpdate`] (from the notifications socket, from
//! `POST /v1/genesys/events`, or from a reconciliation) and finds the reservation by conversation
//! id, else by the `gatewayReservationId` attribute. A callback the gateway did not create is
//! [`Applied::Ignored`]. A reservation still `pending` only learns its conversation id (its
//! creating request publishes it). Otherwise the participant state maps onto a status
//! ([`ReservationStatus::after_participant_state`]); a change is published as `updated` (or
//! `canceled`), no change writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::calendar::CallbackQueues;
use super::changes::{audit_record, from_row, record_change, to_row};
use super::error::{CallbacksError, ReservationError};
use super::event::ReservationEventType;
use super::notification::CallbackUpdate;
use super::reservation::{Reservation, ReservationId, millis};
use super::status::{ReservationStatus, TransitionRefused};
use super::stream::StreamHub;
use super::validate::{RESERVED_DATA_KEY, ValidReservationRequest};
use crate::auth::InboundAuth;
use crate::config::Problem;
use crate::delivery::DeliveryEngine;
use crate::genesys::GenesysClient;
use crate::genesys::models::{
    BulkCallbackDisconnectRequest, CallbackDisconnectIdentifier, CreateCallbackCommand, RoutingData,
};
use crate::reload::{Prepared, Reloadable, Staging};
use crate::store::{Page, PageRequest, ReservationFilter, Store};
use crate::telemetry::{Metrics, RequestId};
use crate::upstream::UpstreamRegistry;

/// A `pending` reservation older than this is settled by the sweep: its creating request
/// cannot still be running (the Genesys call's deadline is far shorter).
pub const STALE_PENDING: Duration = Duration::from_secs(300);
/// Reservations read per page by a reconciliation or a sweep.
const WALK_PAGE: u32 = 100;
/// The audit actor of changes made for a portal's request.
const ACTOR_PORTAL: &str = "portal";
/// The audit actor of changes reported by Genesys.
const ACTOR_GENESYS: &str = "genesys";
/// The audit actor of changes the gateway makes on its own (the sweep).
const ACTOR_SYSTEM: &str = "system";

/// Where the capability reads the time: the system clock unless a test injects another.
pub type WallClock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What [`Reservations::apply`] did with a report from Genesys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It is about a reservation the gateway holds (whether or not anything changed).
    Applied,
    /// It is about a callback the gateway did not create, or not about a callback at all.
    Ignored,
}

/// The `outcome` values of `gateway_callback_reservations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Reserved and scheduled in Genesys (201).
    Created,
    /// Genesys refused or stayed unavailable: published as `failed` (502/503/504).
    Failed,
    /// No requested slot had a free place (409).
    CapacityExceeded,
    /// The request broke a rule (400).
    InvalidInput,
    /// Canceled through `DELETE` (200).
    Canceled,
    /// The gateway failed (500).
    Error,
}

impl Outcome {
    const ALL: [Self; 6] = [
        Self::Created,
        Self::Failed,
        Self::CapacityExceeded,
        Self::InvalidInput,
        Self::Canceled,
        Self::Error,
    ];

    const fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Failed => "failed",
            Self::CapacityExceeded => "capacity_exceeded",
            Self::InvalidInput => "invalid_input",
            Self::Canceled => "canceled",
            Self::Error => "error",
        }
    }
}

struct Inner {
    store: Store,
    upstreams: UpstreamRegistry,
    queues: ArcSwap<CallbackQueues>,
    /// Bumped on every swap of `queues` (the sync resubscribes).
    queues_version: watch::Sender<u64>,
    /// `[data_actions.auth]`, the credential of `POST /v1/genesys/events` (live on reload).
    events_auth: ArcSwap<InboundAuth>,
    hub: StreamHub,
    /// Every published change's webhook message is enqueued on it.
    delivery: DeliveryEngine,
    outcomes: [IntCounter; 6],
    clock: WallClock,
    tasks: TaskTracker,
}

/// The callback reservation capability (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Reservations {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reservations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservations")
            .field("queues", &self.inner.queues.load().len())
            .finish_non_exhaustive()
    }
}

/// What [`Reservations::new`] is built from.
pub struct ReservationsParts {
    /// The store.
    pub store: Store,
    /// The process's upstreams (the built-in `genesys` one is used).
    pub upstreams: UpstreamRegistry,
    /// The compiled `[callbacks] queues`.
    pub queues: CallbackQueues,
    /// The credential of `POST /v1/genesys/events` (`[data_actions.auth]`).
    pub events_auth: InboundAuth,
    /// The process's stream hub.
    pub hub: StreamHub,
    /// The delivery engine (each published change is enqueued on it, for webhook subscribers).
    pub delivery: DeliveryEngine,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The application's task tracker (Genesys calls that outlive their request run on it).
    pub tasks: TaskTracker,
    /// The clock (`None`: the system clock).
    pub clock: Option<WallClock>,
}

impl Reservations {
    /// The capability over these parts.
    pub fn new(parts: ReservationsParts) -> Self {
        let ReservationsParts {
            store,
            upstreams,
            queues,
            events_auth,
            hub,
            delivery,
            metrics,
            tasks,
            clock,
        } = parts;
        let outcomes = Outcome::ALL.map(|o| {
            metrics
                .callback_reservations_total
                .with_label_values(&[o.label()])
        });
        Self {
            inner: Arc::new(Inner {
                store,
                upstreams,
                queues: ArcSwap::from_pointee(queues),
                queues_version: watch::Sender::new(0),
                events_auth: ArcSwap::from_pointee(events_auth),
                hub,
                delivery,
                outcomes,
                clock: clock.unwrap_or_else(|| Arc::new(Utc::now)),
                tasks,
            }),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    fn count(&self, outcome: Outcome) {
        let index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.inner.outcomes[index].inc();
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The stream hub.
    pub fn hub(&self) -> &StreamHub {
        &self.inner.hub
    }

    /// The queues in force.
    pub fn queues(&self) -> Arc<CallbackQueues> {
        self.inner.queues.load_full()
    }

    /// Changes whenever the queues are swapped (the sync subscribes to it).
    pub fn queues_changed(&self) -> watch::Receiver<u64> {
        self.inner.queues_version.subscribe()
    }

    /// Swaps the queues (a reload).
    pub fn set_queues(&self, queues: CallbackQueues) {
        self.inner.queues.store(Arc::new(queues));
        self.inner.queues_version.send_modify(|v| *v += 1);
    }

    /// The credential of `POST /v1/genesys/events` in force.
    pub fn events_auth(&self) -> Arc<InboundAuth> {
        self.inner.events_auth.load_full()
    }

    /// A client on the `genesys` upstream in force.
    ///
    /// # Errors
    /// [`ReservationError::NoGenesys`] when the configuration has none (never with a valid one).
    pub fn genesys(&self) -> Result<GenesysClient, ReservationError> {
        GenesysClient::from_upstreams(&self.inner.upstreams.load())
            .ok_or(ReservationError::NoGenesys)
    }

    /// Reserves a callback for a `POST /v1/callbacks` body (see "Reserving"): the reservation
    /// as published (version 1, `scheduled`).
    ///
    /// # Errors
    /// [`CallbacksError`] 400 for a body that breaks a rule, 409 `capacity.exceeded`;
    /// [`ReservationError::Genesys`] when Genesys refused or stayed unavailable (the reservation
    /// is then published `failed`); [`ReservationError::Store`] and the like for the gateway's own
    /// failures.
    pub async fn reserve(&self, body: &[u8]) -> Result<Reservation, ReservationError> {
        let now = self.now();
        let valid = match self.inner.queues.load().validate_json(body, now) {
            Ok(valid) => valid,
            Err(err) => {
                self.count(Outcome::InvalidInput);
                return Err(err.into());
            }
        };
        let pending = match self.take_place(&valid, now).await {
            Ok(pending) => pending,
            Err(err) => {
                self.count(match err {
                    ReservationError::Request(CallbacksError::CapacityExceeded) => {
                        Outcome::CapacityExceeded
                    }
                    _ => Outcome::Error,
                });
                return Err(err);
            }
        };
        // The rest outlives the request: the place must never stay taken by a request that
        // went away.
        let this = self.clone();
        let work = async move { this.schedule(pending).await }.instrument(tracing::Span::current());
        let task = match RequestId::current() {
            Some(id) => self.inner.tasks.spawn(id.scope(work)),
            None => self.inner.tasks.spawn(work),
        };
        let result = match task.await {
            Ok(result) => result,
            Err(err) => Err(ReservationError::Corrupt(format!(
                "the reservation task failed: {err}"
            ))),
        };
        self.count(match &result {
            Ok(_) => Outcome::Created,
            Err(ReservationError::Genesys(_) | ReservationError::NoGenesys) => Outcome::Failed,
            Err(_) => Outcome::Error,
        });
        result
    }

    /// Step 2: the first slot with a free place gets a pending row.
    async fn take_place(
        &self,
        valid: &ValidReservationRequest,
        now: DateTime<Utc>,
    ) -> Result<Reservation, ReservationError> {
        let mut tx = self.inner.store.begin().await?;
        tx.lock_callback_queue(valid.queue_id()).await?;
        for slot in valid.slots() {
            let taken = tx
                .count_overlapping_live(
                    valid.queue_id(),
                    slot.start().timestamp_millis(),
                    slot.end().timestamp_millis(),
                )
                .await?;
            if taken < u64::from(valid.limit()) {
                let reservation = Reservation::pending(ReservationId::new(), valid, *slot, now);
                tx.insert_reservation(&to_row(&reservation)?).await?;
                // The held place is a state change too: audited with it (never published).
                let mut held = crate::store::AuditRecord::now(
                    "reservation.held",
                    ACTOR_PORTAL,
                    ReservationStatus::Pending.as_str(),
                )
                .with_subject(reservation.id.to_string())
                .with_detail(serde_json::json!({"queueId": reservation.queue_id}));
                held.at = now;
                if let Some(id) = crate::telemetry::RequestId::current() {
                    held = held.with_request_id(&*id);
                }
                tx.append_audit(&held).await?;
                tx.commit().await?;
                return Ok(reservation);
            }
        }
        tx.rollback().await?;
        Err(CallbacksError::CapacityExceeded.into())
    }

    /// Steps 3 and 4: the Genesys call, then the first published state.
    async fn schedule(&self, pending: Reservation) -> Result<Reservation, ReservationError> {
        let id = pending.id;
        let created = match self.genesys() {
            Ok(genesys) => genesys
                .create_callback(&create_command(&pending))
                .await
                .map_err(ReservationError::from),
            Err(err) => Err(err),
        };
        match created {
            Ok(created) => {
                let conversation_id = created.conversation.id;
                let identifiers = created.callback_identifiers;
                let now = self.now();
                self.change(id, ACTOR_PORTAL, |r| {
                    r.conversation_id = Some(conversation_id);
                    r.callback_identifiers = identifiers;
                    Ok(r.change_status(ReservationStatus::Scheduled, now)
                        .map_err(CallbacksError::from)?)
                })
                .await
            }
            Err(err) => {
                tracing::warn!(reservation = %id, error = %err,
                    "Genesys did not create the callback; the reservation failed");
                let now = self.now();
                self.change(id, ACTOR_PORTAL, |r| {
                    Ok(r.change_status(ReservationStatus::Failed, now)
                        .map_err(CallbacksError::from)?)
                })
                .await?;
                Err(err)
            }
        }
    }

    /// Applies `change` to the reservation `id` in one transaction (its row locked) and, when
    /// it says what event that is, publishes it through [`record_change`]; then wakes the
    /// stream and the delivery engine. Returns the reservation as it is afterwards.
    async fn change(
        &self,
        id: ReservationId,
        actor: &str,
        change: impl FnOnce(&mut Reservation) -> Result<Option<ReservationEventType>, ReservationError>,
    ) -> Result<Reservation, ReservationError> {
        let mut tx = self.inner.store.begin().await?;
        let row = tx
            .reservation_for_update(&id.to_string())
            .await?
            .ok_or(CallbacksError::NotFound)?;
        let mut reservation = from_row(&row)?;
        let previous = reservation.status;
        let Some(event) = change(&mut reservation)? else {
            tx.rollback().await?;
            return Ok(reservation);
        };
        let audit = audit_record(event, &reservation, previous, actor, reservation.updated_at);
        record_change(
            &mut tx,
            &self.inner.delivery,
            event,
            &mut reservation,
            &audit,
        )
        .await?;
        tx.commit().await?;
        self.inner.hub.wake();
        self.inner.delivery.wake();
        Ok(reservation)
    }

    /// The published reservation `id` (the path segment as sent).
    ///
    /// # Errors
    /// [`CallbacksError::NotFound`] for an id that is not one, or of no published reservation;
    /// [`ReservationError::Store`].
    pub async fn get(&self, id: &str) -> Result<Reservation, ReservationError> {
        let id = ReservationId::parse(id).map_err(CallbacksError::from)?;
        let row = self
            .inner
            .store
            .reservation(&id.to_string())
            .await?
            .filter(|row| row.version > 0)
            .ok_or(CallbacksError::NotFound)?;
        from_row(&row)
    }

    /// Published reservations, newest first.
    ///
    /// # Errors
    /// [`ReservationError::Store`] (an invalid cursor is `StoreError::InvalidCursor`, a 400).
    pub async fn list(
        &self,
        queue_id: Option<String>,
        status: Option<ReservationStatus>,
        page: &PageRequest,
    ) -> Result<Page<Reservation>, ReservationError> {
        let filter = ReservationFilter {
            queue_id,
            status: status.map(|s| s.as_str().to_owned()),
        };
        let rows = self.inner.store.list_reservations(&filter, page).await?;
        let entities = rows
            .entities
            .iter()
            .map(from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            entities,
            next_cursor: rows.next_cursor,
        })
    }

    /// Cancels the reservation `id`: disconnects the callback in Genesys
    /// (`bulk/disconnect`; a conversation Genesys no longer knows counts as disconnected), then
    /// publishes `canceled` and frees the place.
    ///
    /// # Errors
    /// [`CallbacksError::NotFound`]; [`CallbacksError::Refused`] (409 `conflict`) when the
    /// reservation is already `completed`, `canceled` or `failed`; [`ReservationError::Genesys`]
    /// when Genesys refused or stayed unavailable (nothing changed then).
    pub async fn cancel(&self, id: &str) -> Result<Reservation, ReservationError> {
        let result = self.cancel_inner(id).await;
        match &result {
            Ok(_) => self.count(Outcome::Canceled),
            Err(ReservationError::Store(_) | ReservationError::Corrupt(_)) => {
                self.count(Outcome::Error);
            }
            Err(_) => {}
        }
        result
    }

    async fn cancel_inner(&self, id: &str) -> Result<Reservation, ReservationError> {
        let current = self.get(id).await?;
        if current.status.is_final() {
            // Also when already canceled: a second DELETE is a conflict, not a no-op.
            return Err(CallbacksError::from(TransitionRefused {
                from: current.status,
                to: ReservationStatus::Canceled,
            })
            .into());
        }
        if let Some(conversation_id) = &current.conversation_id {
            let request = BulkCallbackDisconnectRequest {
                callback_disconnect_identifiers: vec![CallbackDisconnectIdentifier {
                    conversation_id: conversation_id.clone(),
                    callback_id: callback_id(&current),
                }],
            };
            match self.genesys()?.disconnect_callbacks(&request).await {
                Ok(()) => {}
                Err(err) if err.is_not_found() => {
                    tracing::info!(reservation = %current.id,
                        "Genesys no longer knows the callback; canceling the reservation");
                }
                Err(err) => return Err(err.into()),
            }
        }
        let now = self.now();
        self.change(current.id, ACTOR_PORTAL, |r| {
            if r.status == ReservationStatus::Canceled {
                // Genesys reported the disconnect first: the cancellation is published already.
                return Ok(None);
            }
            Ok(r.change_status(ReservationStatus::Canceled, now)
                .map_err(CallbacksError::from)?)
        })
        .await
    }

    /// Applies one report from Genesys (see "Genesys reports").
    ///
    /// # Errors
    /// [`ReservationError::Store`] and [`ReservationError::Corrupt`]; the report may be applied
    /// again later.
    pub async fn apply(&self, update: &CallbackUpdate) -> Result<Applied, ReservationError> {
        let store = &self.inner.store;
        let mut row = store
            .reservation_by_conversation(&update.conversation_id)
            .await?;
        if row.is_none()
            && let Some(id) = update.reservation_id
        {
            row = store
                .reservation(&id.to_string())
                .await?
                // A reservation id copied into another conversation is not that reservation.
                .filter(|r| r.conversation_id.is_none());
        }
        let Some(row) = row else {
            return Ok(Applied::Ignored);
        };
        let reservation = from_row(&row)?;
        if reservation.status == ReservationStatus::Pending {
            if row.conversation_id.is_none() {
                self.remember_conversation(reservation.id, &update.conversation_id)
                    .await?;
            }
            return Ok(Applied::Applied);
        }
        if reservation
            .status
            .after_participant_state(&update.state, update.history)
            .is_none()
        {
            return Ok(Applied::Applied);
        }
        let now = self.now();
        let (state, history) = (update.state.as_str(), update.history);
        self.change(reservation.id, ACTOR_GENESYS, |r| {
            if r.status == ReservationStatus::Pending {
                return Ok(None);
            }
            match r.status.after_participant_state(state, history) {
                Some(next) => Ok(r.change_status(next, now).map_err(CallbacksError::from)?),
                None => Ok(None),
            }
        })
        .await?;
        Ok(Applied::Applied)
    }

    /// Notes the conversation of a reservation still pending (not a published change).
    async fn remember_conversation(
        &self,
        id: ReservationId,
        conversation_id: &str,
    ) -> Result<(), ReservationError> {
        let mut tx = self.inner.store.begin().await?;
        let Some(row) = tx.reservation_for_update(&id.to_string()).await? else {
            return Ok(());
        };
        let mut reservation = from_row(&row)?;
        if reservation.status != ReservationStatus::Pending || reservation.conversation_id.is_some()
        {
            return Ok(());
        }
        reservation.conversation_id = Some(conversation_id.to_owned());
        tx.update_reservation(&to_row(&reservation)?).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads every live reservation's callback back from Genesys and applies it: what the
    /// sync does after any gap. Returns how many reservations were looked at.
    ///
    /// # Errors
    /// [`ReservationError::Genesys`] when Genesys cannot be read (a conversation it no longer
    /// knows is skipped), [`ReservationError::Store`].
    pub async fn reconcile(&self) -> Result<usize, ReservationError> {
        let genesys = self.genesys()?;
        let mut after = String::new();
        let mut seen = 0;
        loop {
            let rows = self
                .inner
                .store
                .live_reservations_after(&after, WALK_PAGE)
                .await?;
            let Some(last) = rows.last() else { break };
            after.clone_from(&last.id);
            for row in &rows {
                let Some(conversation_id) = &row.conversation_id else {
                    continue;
                };
                seen += 1;
                match genesys.get_conversation(conversation_id).await {
                    Ok(conversation) => {
                        if let Some(update) = CallbackUpdate::from_conversation(&conversation) {
                            self.apply(&update).await?;
                        }
                    }
                    Err(err) if err.is_not_found() => {
                        tracing::warn!(reservation = %row.id,
                            "reconciliation: Genesys no longer knows the callback's conversation");
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            if rows.len() < WALK_PAGE as usize {
                break;
            }
        }
        Ok(seen)
    }

    /// Settles reservations left `pending` for longer than [`STALE_PENDING`] (a process died
    /// while creating them): with a conversation Genesys reported, the status Genesys gives it
    /// now; otherwise `failed`. Returns how many were settled.
    ///
    /// # Errors
    /// [`ReservationError::Genesys`] when a known conversation cannot be read (the row waits
    /// for the next sweep), [`ReservationError::Store`].
    pub async fn sweep_pending(&self) -> Result<usize, ReservationError> {
        let stale = chrono::TimeDelta::from_std(STALE_PENDING).unwrap_or(chrono::TimeDelta::MAX);
        let before = (self.now() - stale).timestamp_millis();
        let rows = self
            .inner
            .store
            .unpublished_reservations_before(before, WALK_PAGE)
            .await?;
        let mut settled = 0;
        for row in rows {
            let id = from_row(&row)?.id;
            let mut next = ReservationStatus::Failed;
            if let Some(conversation_id) = &row.conversation_id {
                match self.genesys()?.get_conversation(conversation_id).await {
                    Ok(conversation) => {
                        if let Some(status) = CallbackUpdate::from_conversation(&conversation)
                            .and_then(|u| {
                                ReservationStatus::Pending
                                    .after_participant_state(&u.state, u.history)
                            })
                        {
                            next = status;
                        }
                    }
                    Err(err) if err.is_not_found() => {}
                    Err(err) => return Err(err.into()),
                }
            }
            let now = self.now();
            let conversation_id = row.conversation_id.clone();
            self.change(id, ACTOR_SYSTEM, |r| {
                if r.status != ReservationStatus::Pending {
                    return Ok(None);
                }
                if next == ReservationStatus::Failed {
                    r.conversation_id = None;
                } else {
                    r.conversation_id = conversation_id;
                }
                Ok(r.change_status(next, now).map_err(CallbacksError::from)?)
            })
            .await?;
            tracing::warn!(reservation = %id, status = %next,
                "a reservation left pending by a creating request that never finished was settled");
            settled += 1;
        }
        Ok(settled)
    }
}

/// The Genesys command creating the callback of `reservation`.
fn create_command(reservation: &Reservation) -> CreateCallbackCommand {
    let mut data: BTreeMap<String, String> = reservation.data.clone();
    data.insert(RESERVED_DATA_KEY.to_owned(), reservation.id.to_string());
    CreateCallbackCommand {
        routing_data: Some(RoutingData {
            queue_id: reservation.queue_id.clone(),
            ..RoutingData::default()
        }),
        callback_user_name: reservation.callback_user_name.clone(),
        callback_numbers: vec![reservation.callback_number.as_str().to_owned()],
        callback_scheduled_time: Some(millis::format(&reservation.slot.start())),
        data,
        ..CreateCallbackCommand::default()
    }
}

/// The callback communication to disconnect: the `ACD` identifier Genesys answered at creation,
/// else the first one.
fn callback_id(reservation: &Reservation) -> String {
    let ids = &reservation.callback_identifiers;
    ids.iter()
        .find(|i| i.kind.eq_ignore_ascii_case("ACD"))
        .or_else(|| ids.first())
        .map(|i| i.id.clone())
        .unwrap_or_default()
}

/// The reload part of callbacks: `[callbacks] queues` and the credential of
/// `POST /v1/genesys/events` (`[data_actions.auth]`) take effect without a restart.
impl Reloadable for Reservations {
    fn name(&self) -> &'static str {
        "callback queues"
    }

    fn prepare(&self, staging: &mut Staging<'_>) -> Result<Box<dyn Prepared>, Vec<Problem>> {
        let settings = staging.settings();
        let queues = CallbackQueues::from_settings(&settings.callbacks)?;
        Ok(Box::new(PreparedQueues {
            reservations: self.clone(),
            queues,
            events_auth: InboundAuth::from_settings(&settings.data_actions.auth),
        }))
    }
}

struct PreparedQueues {
    reservations: Reservations,
    queues: CallbackQueues,
    events_auth: InboundAuth,
}

impl Prepared for PreparedQueues {
    fn report(&self, _report: &mut serde_json::Map<String, serde_json::Value>) {
        // The reload answer's shape is fixed (actions, upstreams, targets, restartRequired):
        // the queues add nothing to it.
    }

    fn apply(self: Box<Self>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let Self {
            reservations,
            queues,
            events_auth,
        } = *self;
        reservations.inner.events_auth.store(Arc::new(events_auth));
        let changed = {
            let running = reservations.inner.queues.load();
            !same_queues(&running, &queues)
        };
        if changed {
            reservations.set_queues(queues);
        }
        Box::pin(std::future::ready(()))
    }
}

/// Whether two queue sets subscribe the same topics and judge requests alike.
fn same_queues(a: &CallbackQueues, b: &CallbackQueues) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|(x, y)| {
            x.id() == y.id()
                && x.name() == y.name()
                && x.timezone() == y.timezone()
                && x.open_hours_text() == y.open_hours_text()
                && x.slot_capacity() == y.slot_capacity()
                && x.max_slot() == y.max_slot()
                && x.booking_horizon() == y.booking_horizon()
        })
}
