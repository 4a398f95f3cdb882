//! genesys-gateway connects Genesys Cloud contact centers to an enterprise's own systems.
//!
//! Architect flows call it as Web Services Data Actions; legacy systems post JWT-signed business
//! events it delivers durably to event targets; web portals reserve callbacks through it and it
//! keeps them in sync with Genesys; subscribers get signed webhooks; Prometheus scrapes it.
//!
//! # Layout
//! - [`app`]: the only module that knows every capability — builds them, the router, the one
//!   middleware stack, the listeners and the shutdown.
//! - [`runtime`]: one single-threaded runtime per core sharing the port.
//! - [`config`]: typed, layered configuration with key-path errors.
//! - [`error`]: the one error body of the HTTP surface and the JSON extractor.
//! - [`telemetry`]: logs, request ids, Prometheus metrics.
//! - [`auth`]: inbound credentials of each surface.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`store`]: SQLite / PostgreSQL state and the audit log.
//! - [`upstream`]: the outbound HTTP stack (auth injection, retry, breaker, SSRF guard).
//! - [`genesys`]: the typed Genesys Cloud client.
//! - [`json`]: JSON mechanisms shared by capabilities (compiled schemas).
//! - [`data_actions`]: the actions Genesys flows call.
//! - [`ingest`]: business events from legacy systems: validation, mapping, idempotency.
//! - [`callbacks`]: callback reservations — requests, queue calendars, statuses, events.
//! - [`admin`]: the operator API.
//! - [`sim`]: the Genesys Cloud simulator.
//!
//! Data flows one way: handler → capability → `store` / `upstream`.

pub mod admin;
pub mod app;
pub mod auth;
pub mod backoff;
pub mod callbacks;
pub mod config;
pub mod data_actions;
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
