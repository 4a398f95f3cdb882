//! Data actions through the HTTP surface, their mapping language, publishing into Genesys, and
//! reloading, in one test binary (each file directly under `tests/` is a binary to link).

#[path = "../common/mod.rs"]
mod common;
mod execute;
mod mapping;
#[allow(dead_code)]
mod mock;
mod operator;
mod publish;
mod reload;
