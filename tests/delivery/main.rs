//! The durable delivery engine against local targets (axum servers on loopback): retries and
//! their backoff, `Retry-After`, dead letters and replay, 410, verification, signing, restart;
//! the targets admin API with its whole validation matrix; the sandbox's simulator receiver;
//! the claim statements on both databases; PostgreSQL replicas; webhook subscriptions end to end.

mod claims;
#[path = "../common/mod.rs"]
mod common;
mod engine;
mod postgres;
mod sandbox;
mod support;
mod targets;
mod webhooks;
