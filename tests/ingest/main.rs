//! Black-box tests of the event ingest surface, one module per part of it.

mod auth;
#[path = "../common/mod.rs"]
mod common;
mod events;
mod jwt;
mod postgres;
mod support;
mod token;
