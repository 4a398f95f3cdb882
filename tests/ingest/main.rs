//! Black-box tests of the event ingest surface, one module per part of it.

#[path = "../common/mod.rs"]
mod common;
mod auth;
mod events;
mod jwt;
mod postgres;
mod support;
