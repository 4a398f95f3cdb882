//! Everything the gateway calls out through: the upstream stack, its SSRF guard, the typed Genesys
//! client and the notifications socket, in one test binary.

#[path = "../common/mod.rs"]
mod common;
mod genesys_client;
mod genesys_notifications;
mod transport;
mod upstream_ssrf;
mod upstream_stack;
