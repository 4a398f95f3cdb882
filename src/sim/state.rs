//! The simulator's shared state: options, fixtures, issued tokens and their rate-limit windows,
//! the control state (faults, request log, receivers) and the mutable Genesys data
//! (conversations, integrations, credentials, actions and their drafts, notification channels).
//!
//! Everything sits behind plain mutexes held for a few map operations, never across an await:
//! the simulator is a test double, not a hot path. The one nesting is `data` → the hub's
//! channels (callback events are published under the data lock, to keep their order); nothing
//! takes `data` while holding a hub lock.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::MutexGuard;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fixtures::Fixtures;
use super::lock::Lock;
use super::options::SimOptions;
use super::records::conversations::CallbackConversation;
use super::records::faults::Faults;
use super::records::hub::Hub;
use super::records::integrations::{ActionRecord, CredentialRecord, IntegrationRecord};
use super::records::receivers::Receivers;
use super::records::requests::RequestLog;

/// The rate-limit window: Genesys counts requests per token per minute.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// An issued access token.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub client_id: String,
    pub expires_at: Instant,
}

/// The mutable Genesys data, reset by `POST /__sim/reset`.
#[derive(Debug, Default)]
pub(crate) struct Data {
    pub conversations: HashMap<String, CallbackConversation>,
    pub integrations: Vec<IntegrationRecord>,
    pub credentials: Vec<CredentialRecord>,
    pub actions: Vec<ActionRecord>,
    /// Drafts of published actions (at most one per action, with the action's id).
    pub drafts: Vec<ActionRecord>,
}

/// The shared state of one simulator.
pub(crate) struct Sim {
    pub token_lifetime: Duration,
    pub rate_limit_per_min: u32,
    pub heartbeat: Duration,
    pub socket_closing_delay: Duration,
    pub fixtures: Fixtures,
    pub local_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub http: Client<HttpConnector, Full<Bytes>>,
    pub tokens: Lock<HashMap<String, Token>>,
    pub rate: Lock<HashMap<String, VecDeque<Instant>>>,
    pub faults: Lock<Faults>,
    pub requests: Lock<RequestLog>,
    pub receivers: Lock<Receivers>,
    pub data: Lock<Data>,
    pub hub: Hub,
}

impl Sim {
    pub fn new(options: SimOptions, local_addr: SocketAddr, shutdown: CancellationToken) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        Self {
            token_lifetime: options.token_lifetime,
            rate_limit_per_min: options.rate_limit_per_min,
            heartbeat: options.heartbeat,
            socket_closing_delay: options.socket_closing_delay,
            fixtures: options.fixtures,
            local_addr,
            shutdown,
            http: Client::builder(TokioExecutor::new()).build(connector),
            tokens: Lock::default(),
            rate: Lock::default(),
            faults: Lock::default(),
            requests: Lock::default(),
            receivers: Lock::default(),
            data: Lock::default(),
            hub: Hub::default(),
        }
    }

    /// The data lock.
    pub fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock()
    }

    /// Counts one request of `token` in its sliding one-minute window.
    ///
    /// # Errors
    /// The whole seconds to wait when the token used its `rate_limit_per_min` requests in the
    /// last 60 s.
    pub fn take_rate(&self, token: &str, now: Instant) -> Result<RateState, u64> {
        let limit = self.rate_limit_per_min as usize;
        let mut rate = self.rate.lock();
        let window = rate.entry(token.to_owned()).or_default();
        while window.front().is_some_and(|t| *t + RATE_WINDOW <= now) {
            window.pop_front();
        }
        let reset = |w: &VecDeque<Instant>| {
            w.front()
                .map(|t| ceil_secs((*t + RATE_WINDOW).saturating_duration_since(now)))
                .unwrap_or(RATE_WINDOW.as_secs())
        };
        if limit > 0 && window.len() >= limit {
            return Err(reset(window).max(1));
        }
        window.push_back(now);
        Ok(RateState {
            count: window.len(),
            allowed: limit,
            reset_s: reset(window),
        })
    }
}

/// Where a token stands in its rate-limit window after a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateState {
    pub count: usize,
    pub allowed: usize,
    pub reset_s: u64,
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
