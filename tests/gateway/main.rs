//! The gateway as a whole: configuration, the edge (the one middleware stack), operations
//! endpoints, the admin surface and graceful shutdown, in one test binary.

mod abuse;
mod admin;
#[path = "../common/mod.rs"]
mod common;
mod config;
mod edge;
mod ops;
mod reload;
mod shutdown;
mod webhooks;
