//! Callback reservations through the HTTP surface, against the simulator: validation,
//! capacity, the Genesys interplay (request log, faults), the sync from Genesys and the stream.

#[path = "../common/mod.rs"]
mod common;
mod postgres;
mod reserve;
mod stream;
mod support;
mod sync;
