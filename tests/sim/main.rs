//! The simulator's tests, in one binary (each file directly under `tests/` is a binary to
//! link): the core (login, auth, rate limit, faults, request log, paging, fixtures),
//! integrations and data actions, callbacks and notifications, the webhook receivers, and the
//! `genesys-gateway sim` command.
//!
//! `support` is the harness (a simulator on 127.0.0.1:0 and helpers per endpoint); `common` is
//! the gateway tests' harness, shared for its simulator-token helper.

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod core;
mod integrations;
mod notifications;
mod receivers;
mod support;
