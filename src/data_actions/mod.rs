//! Data actions: the surface Genesys Architect flows call.
//!
//! A flow's Web Services Data Action posts its input to `POST /v1/actions/{name}` (or wraps it in
//! the `POST /webhook/data-action` envelope); the gateway validates the input against the
//! action's JSON Schema, maps it onto a request to one upstream, calls the upstream through the
//! shared outbound stack (auth injection, retries, breaker — all in [`crate::upstream`]), maps
//! the answer onto the output and validates that too.
//!
//! # Layout
//! - [`pointer`](mod@pointer): RFC 6901 JSON pointers, parsed once.
//! - [`mapping`]: the mapping language and its compiled plans.
//! - [`action`]: [`DataAction`] and its builder — the one way an action is made, from code or
//!   from `[[actions]]`.
//! - [`registry`]: the [`ActionSet`] being served and the [`ActionRegistry`] that swaps it.
//! - [`execute`]: [`BoundAction`] — an action bound to its upstream — and running it.
//! - [`error`]: [`ActionError`], how an execution fails, and the [`Outcome`] it stands for.
//! - [`outcome`]: execution outcomes and their pre-resolved metric handles.
//! - [`http`]: the routes, their auth, metrics and audit.
//! - [`publish`]: provisioning the actions into Genesys.
//! - [`trial`]: the action test — one execution with a trace of every step.

pub mod action;
pub mod error;
pub mod execute;
pub mod http;
pub mod mapping;
pub mod outcome;
pub mod pointer;
pub mod publish;
pub mod registry;
pub mod trial;

pub use action::{ActionName, DataAction, DataActionBuilder};
pub use error::ActionError;
pub use execute::BoundAction;
pub use http::{DataActionsState, router, write_audit_summaries, write_held_back};
pub use outcome::Outcome;
pub use registry::{ActionChanges, ActionRegistry, ActionSet, check, compile_actions};
