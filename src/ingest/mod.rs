//! Event ingest: business events that legacy systems post (JWT-signed), validated, mapped onto
//! the envelope the event targets receive, and named for idempotency.
//!
//! The pure core needs neither a database nor an HTTP server: given a request body, the
//! verified token's issuer and the `Idempotency-Key` header, it refuses the request whole or
//! returns the events to store and deliver. [`service`] stores them (idempotency enforced by
//! the database, one unit of the group committer per request) and hands them to the delivery
//! engine; [`http`] serves `POST /v1/events`, `POST /ingest` and `GET /v1/events/{eventId}`.
//!
//! # Wiring (what a handler does)
//! 1. At load: [`EventPipeline::from_settings`]`(&settings.ingest, &settings.source)`; its
//!    problems are key-path [`Problem`](crate::config::Problem)s like the loader's.
//! 2. Per request, after the JWT is verified and the body read with
//!    [`JsonBytes`](crate::error::JsonBytes) (content type, size, depth):
//!    `let key = IdempotencyKey::from_headers(&headers)?;`
//!    `let events = pipeline.prepare(&body, &token.iss, key)?;` — every [`IngestError`]
//!    converts into the error answer (`?` in a handler returning `ApiError`); count
//!    [`IngestError::reason`] in `gateway_ingest_rejections_total{reason}`.
//! 3. For each [`PreparedEvent`], in one transaction: look its
//!    [`idempotency_key`](PreparedEvent::idempotency_key) up (scoped by issuer). Unknown → make
//!    an [`EventId::new_v7`], store it with the key, the
//!    [`fingerprint`](PreparedEvent::fingerprint) and [`body`](PreparedEvent::body)`(&id)` (the
//!    exact bytes every target receives), and the deliveries to the targets whose `event_types`
//!    match [`event_type`](PreparedEvent::event_type): `"queued"`. Known with the same
//!    fingerprint → `"duplicate"` with the stored id. Known with another fingerprint → 409
//!    `idempotency.conflict` for the whole request.
//!
//! # Layout
//! - [`http`]: the routes and their JWT check.
//! - [`service`]: [`Ingest`]: accepting events for good, reading them back.
//! - [`event`]: [`EventPipeline`], [`PreparedEvent`], [`EventId`], the envelope and the rules
//!   an event must satisfy.
//! - [`timestamp`]: the accepted forms of `timestamp`.
//! - [`idempotency`]: [`IdempotencyKey`] and [`Fingerprint`].
//! - `content`: the strict walk over an event's raw JSON (duplicate keys, validation value,
//!   [`canonical_form`]).
//! - [`error`]: [`IngestError`], [`AcceptError`] and their answers.

mod content;
pub mod error;
pub mod event;
pub mod http;
pub mod idempotency;
pub mod service;
pub mod timestamp;

pub use content::{canonical_form, fingerprint};
pub use error::{AcceptError, IngestError};
pub use event::{EventId, EventPipeline, PreparedEvent, legacy_event_schema, normalize_event_type};
pub use idempotency::{Fingerprint, IDEMPOTENCY_KEY, IdempotencyKey};
pub use service::{EventResult, EventStatus, EventView, Ingest, IngestParts};
