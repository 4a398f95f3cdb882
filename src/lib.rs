//! genesys-gateway connects Genesys Cloud contact centers to an enterprise's own systems.
//!
//! Architect flows call it as Web Services Data Actions; legacy systems post JWT-signed business
//! events it delivers durably to event targets; web portals reserve callbacks through it and it
//! keeps them in sync with Genesys; subscribers get signed webhooks; Prometheus scrapes it.
//!
//! # Architecture
//! One process, three layers. Data flows one way: handler → capability → `store` / `upstream`,
//! never back up.
//!
//! **The application** — [`app`] is the only module that knows every capability: it builds them
//! from the settings, assembles the router behind the one middleware stack ([`app`]'s edge:
//! request id, span, metrics, panics, deadline, body limit, load shedding, the one log line of a
//! failed request), binds the listeners (one single-threaded runtime per core, [`runtime`]),
//! registers every reloadable part, owns every background task and drains them at shutdown.
//!
//! **Capabilities** — each in its folder, with its routes, its error enum and its outcomes:
//! - [`data_actions`]: the actions Genesys flows call;
//! - [`ingest`]: business events from legacy systems (validation, mapping, idempotency);
//! - [`callbacks`]: callback reservations (requests, queue calendars, statuses, events);
//! - [`delivery`]: the durable delivery engine (outbox, leased claims, retries, Standard
//!   Webhooks signing, dead letters) and the delivery targets;
//! - [`admin`]: the operator API — thin handlers that call the capabilities;
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.
//!
//! **Process-wide mechanisms** — shared by every capability, knowing none of them:
//! - [`reload`]: configuration reloads — the file is read and validated, then every registered
//!   [`reload::Reloadable`] part prepares the new settings and all apply together, or none;
//! - [`upstream`]: the outbound HTTP stack (auth injection, retry, breaker, SSRF guard), the
//!   classification of an attempt's result, and the live upstream registry;
//! - [`genesys`]: the typed Genesys Cloud client and the built-in `genesys` upstream (regions,
//!   endpoints, credentials), built on `upstream`;
//! - [`store`]: SQLite / PostgreSQL state, the audit log, the group committer;
//! - [`auth`]: inbound credentials of each surface (shared secrets, bearer tokens, JWTs);
//! - [`config`]: typed, layered configuration with key-path errors, and which keys are live;
//! - [`error`]: the one error body of the HTTP surface, the JSON and query extractors;
//! - [`json`]: JSON mechanisms shared by capabilities (compiled schemas);
//! - [`telemetry`]: logs (and the flood rule), request ids, Prometheus metrics;
//! - [`health`]: what "ready" means — the checks `/readyz` runs;
//! - [`backoff`]: the one retry schedule.
//!
//! [`sim`], the Genesys Cloud simulator, stands alone: it imports nothing of the gateway.
//!
//! # Who may use whom
//! - `app` may use everything; nothing uses `app`.
//! - A capability uses the process-wide mechanisms, never another capability (`admin` is the
//!   exception: it calls into the capabilities it fronts).
//! - `upstream` is generic: it knows neither `genesys` nor any capability or capability
//!   section; `genesys` builds on it. The upstream set is swapped whole on reload and taken by
//!   every caller from the registry, never owned by a capability.
//! - `store` knows no capability and makes no outbound calls; capabilities write their state,
//!   audit records and outbox rows through it, in one transaction.
//! - `config`, `backoff` and `runtime` are leaves; `error` and `telemetry` use only each other,
//!   `config` and `json::strict` (the one strict reading of JSON bodies).
//! - [`delivery`] is the one engine every producer uses (ingest, targets, webhook
//!   subscriptions): it imports no producer; they hand it messages inside their transactions.

pub mod admin;
pub mod app;
pub mod auth;
pub mod backoff;
pub mod callbacks;
pub mod config;
pub mod data_actions;
pub mod delivery;
pub mod error;
pub mod genesys;
pub mod health;
pub mod ingest;
pub mod json;
pub mod ops;
pub mod reload;
pub mod runtime;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod upstream;
