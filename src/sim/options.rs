//! How a simulator behaves: token lifetime, rate limit, heartbeat, socket-closing delay and the
//! fixtures, with Genesys Cloud's own values as defaults.

use std::time::Duration;

use super::fixtures::Fixtures;

/// How a simulator behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Lifetime of issued access tokens (`expires_in`). Default 86400 s.
    pub token_lifetime: Duration,
    /// Requests per token per sliding minute before 429; 0 disables the limit. Default 300.
    pub rate_limit_per_min: u32,
    /// Interval of the WebSocket heartbeat. Default 30 s.
    pub heartbeat: Duration,
    /// Delay between `v2.system.socket_closing` and the close. Default 5 s.
    pub socket_closing_delay: Duration,
    /// Clients, users and queues. Default: [`Fixtures::builtin`].
    pub fixtures: Fixtures,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(86_400),
            rate_limit_per_min: 300,
            heartbeat: Duration::from_secs(30),
            socket_closing_delay: Duration::from_secs(5),
            fixtures: Fixtures::builtin(),
        }
    }
}
