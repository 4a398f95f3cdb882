//! Callback reservations: web and mobile portals reserve a Genesys callback in a time window.
//!
//! This module owns everything about a reservation that needs no database, no HTTP server and
//! no Genesys call — the request and its rules, each queue's calendar, the reservation model, its
//! life cycle, and the events a change publishes. The handlers, the store (which enforces
//! capacity), the Genesys sync and the stream are built on top of it.
//!
//! # Layout
//! - [`request`]: the `POST /v1/callbacks` body and its shape (required and optional fields,
//!   unknown fields refused, repeated keys refused).
//! - [`validate`]: the rules, checked against the queue's calendar at a given "now", and the
//!   [`ValidReservationRequest`] they produce.
//! - [`calendar`]: [`CallbackQueues`], each queue's time zone, open hours, capacity, longest
//!   slot and booking horizon, compiled once from `[callbacks]`; the open-hours rule.
//! - [`number`]: [`CallbackNumber`], the E.164 number.
//! - [`reservation`]: [`Reservation`] as answered and stored, [`ReservationId`], [`Slot`].
//! - [`status`]: [`ReservationStatus`], its allowed changes, and the Genesys participant states.
//! - [`event`]: [`ReservationEventType`], the stream frame and the webhook payload.
//! - [`error`](mod@error): [`CallbacksError`] and its answers, [`ReservationError`] for
//!   operations that reach the store or Genesys.
//! - [`service`]: [`service::Reservations`], the capability at work (reserve, cancel, read,
//!   apply Genesys reports, reconcile, settle stale pending places) and its reload part.
//! - [`changes`]: the stored form and [`changes::record_change`], the one place every published
//!   change is committed (where webhook deliveries are to be enqueued); the retention of the
//!   change rows ([`changes::run_change_pruner`]).
//! - [`notification`]: what Genesys says about a callback ([`notification::CallbackUpdate`]).
//! - [`sync`]: the leader-elected notifications task ([`sync::run_sync`]).
//! - [`stream`]: `GET /v1/callbacks/stream` and the per-process fan-out hub.
//! - [`http`]: the routes ([`http::router`]).
//!
//! # The request
//! `{"callbackNumber", "callbackUserName", "queueId", "reason", "timeSlots": [{"start", "end"}],
//! "channelPreferences": {"primary", "fallback", "allowSms"}, "concurrencyLimit", "data"}`.
//! `callbackNumber`, `queueId` and `timeSlots` are required; the rest is optional (`null` counts
//! as absent). A field that does not exist, at any level, is refused by name. Every problem —
//! wrong type, missing field, broken rule — is answered at once, one `details` entry each
//! (`fieldName` is a JSON pointer such as `/timeSlots/1/end` or `/data/k`; `errorCode` is one of
//! [`validate::code`]; at most [`validate::MAX_DETAILS`] are listed).
//!
//! | field | rule |
//! |---|---|
//! | `callbackNumber` | E.164 after removing spaces, `-`, `.`, `(`, `)`: `^\+[1-9][0-9]{6,14}$`; the normalised form is kept |
//! | `queueId` | a configured queue |
//! | `timeSlots` | 1 to 10 slots, each `end > start`, at most `max_slot_minutes` long, starting strictly after now and at most `booking_horizon_days` after now, inside one open-hours entry of the queue on its wall clock |
//! | `concurrencyLimit` | an integer, 1 to 50 |
//! | `data` | string values; at most 50 keys; keys 1 to 100 characters, values at most 1000; not `gatewayReservationId` (the gateway sets it) |
//! | `callbackUserName` | 1 to 200 characters |
//! | `reason` | 1 to 1000 characters |
//! | `channelPreferences` | `primary` and `fallback` are `voice` or `sms` and differ; neither is `sms` when `allowSms` is `false`; `primary` defaults to `voice` |
//!
//! Slot instants are RFC 3339 with an offset, kept to the millisecond. Length, horizon and "the
//! future" are real elapsed time; open hours are read on the queue's wall clock, DST included
//! (see [`calendar`] for the exact rule).
//!
//! # Wiring
//! - At load: `CallbackQueues::from_settings(&settings.callbacks)` (problems carry
//!   `callbacks.queues[i]...` key paths); share it (`Arc`) in the app state, swap it on reload.
//! - `POST /v1/callbacks`: take the body as checked bytes (`crate::error::JsonBytes`: content
//!   type, size, depth), then `queues.validate_json(&bytes, now)?` with `now` from the app's
//!   clock. With the [`ValidReservationRequest`], the store takes the first of
//!   [`slots`](ValidReservationRequest::slots) where fewer than
//!   [`limit`](ValidReservationRequest::limit) live reservations
//!   ([`ReservationStatus::is_live`]) of the queue overlap it ([`Slot::overlaps`]), atomically,
//!   inserting [`Reservation::pending`] — or answers [`CallbacksError::CapacityExceeded`]. After
//!   the Genesys call, set `conversation_id` / `callback_identifiers` and call
//!   [`Reservation::change_status`] (`scheduled`, or `failed`); it bumps `version` and returns
//!   the event to publish; the store gives the change its `seq` in the same transaction and
//!   publishes [`StreamMessage::new`] / [`WebhookPayload::new`].
//! - `GET/DELETE /v1/callbacks/{id}`: [`ReservationId::parse`] (a bad id is
//!   [`CallbacksError::NotFound`]); a refused change converts into 409 `conflict`.
//! - Sync: for each participant event, [`ReservationStatus::after_participant_state`] with the
//!   participant's [`ConnectionHistory`] gives the new status or `None` (no change).
//! - Errors: [`CallbacksError`] converts into [`crate::error::ApiError`] and is an
//!   `IntoResponse`.

pub mod calendar;
pub mod changes;
pub mod error;
pub mod event;
pub mod http;
pub mod notification;
pub mod number;
pub mod request;
pub mod reservation;
pub mod service;
pub mod status;
pub mod stream;
pub mod sync;
pub mod validate;

pub use calendar::{CallbackQueue, CallbackQueues};
pub use error::{CallbacksError, ReservationError};
pub use event::{ReservationEventType, StreamMessage, WebhookPayload};
pub use number::{CallbackNumber, InvalidNumber};
pub use request::{ReservationRequest, SlotRequest};
pub use reservation::{
    Channel, ChannelPreferences, EmptySlot, InvalidReservationId, Reservation, ReservationId, Slot,
};
pub use status::{
    ConnectionHistory, ReservationStatus, TransitionRefused, UnknownStatus,
    status_for_participant_state,
};
pub use validate::ValidReservationRequest;
