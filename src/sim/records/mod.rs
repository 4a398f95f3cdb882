//! What the simulator holds, as plain data with its behaviour: the request log and the armed
//! faults, the receivers' secrets and deliveries, the callback conversations, the integration
//! records, and the notification hub.
//!
//! These modules sit at the bottom of the simulator: they import no handler and not the shared
//! state (which is built from them), only the simulator's leaf modules (errors, extractors,
//! fixtures, the lock). Handlers take them from the state and serve them.

pub(crate) mod bounded_log;
pub(crate) mod conversations;
pub(crate) mod faults;
pub(crate) mod hub;
pub(crate) mod integrations;
pub(crate) mod receivers;
pub(crate) mod requests;
