//! Data actions: the surface Genesys Architect flows call (SPEC §3.2).
//!
//! A flow's Web Services Data Action posts its input to `POST /v1/actions/{name}` (or wraps it in
//! the `POST /webhook/data-action` envelope); the gateway validates the input against the
//! action's JSON Schema, maps it onto a request to one upstream, calls the upstream through the
//! shared outbound stack (auth injection, retries, breaker — all in [`crate::upstream`]), maps
//! the answer onto the output and validates that too.
//!
//! # Layout
//! - [`pointer`]: RFC 6901 JSON pointers, parsed once.
//! - [`mapping`]: the mapping language and its compiled plans.
//! - [`schema`]: compiled JSON Schemas and their violations as error details.
//! - [`action`]: [`DataAction`] and its builder — the one way an action is made, from code or
//!   from `[[actions]]`.

pub mod action;
pub mod mapping;
pub mod pointer;
pub mod schema;

pub use action::{ActionName, DataAction, DataActionBuilder};
