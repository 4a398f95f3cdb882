//! The Genesys Cloud simulator: one listener that plays the login service
//! (`POST /oauth/token`), the Platform API (`/api/v2/...`) and the notifications streaming
//! service (`ws://.../channels/{id}`) closely enough that the official SDKs and the gateway
//! cannot tell it from Genesys Cloud for the endpoints it plays (listed below), plus a control API under
//! `/__sim` to inject faults, read the requests received and drive callback state.
//!
//! It stands alone in the crate: it imports no capability, no `app`, no `upstream`, and renders
//! Genesys' own error shapes (`{message, code, status, messageParams, contextId, details,
//! errors}`; OAuth errors as `{error, description, error_description}`).
//!
//! # Behaviour worth knowing
//! - Tokens: opaque, valid `token_lifetime`; none → 401 `authentication.required`, unknown →
//!   401 `bad.credentials`, expired → 401 `credentials.expired`.
//! - Rate limit: per token, a **sliding** 60 s window of `rate_limit_per_min` requests (0 = no
//!   limit); beyond it 429 `too.many.requests` with `Retry-After` = whole seconds until the
//!   oldest counted request leaves the window. Responses carry `inin-ratelimit-count`,
//!   `inin-ratelimit-allowed` and `inin-ratelimit-reset`.
//! - Every response carries `inin-correlation-id` (the inbound one, else a new UUID), which is
//!   also the `contextId` of error bodies.
//! - Callback conversations have a `customer` participant (whose state the control API moves)
//!   and an `acd` participant mirroring it; each change is published on
//!   `v2.routing.queues.{queueId}.conversations.callbacks`.
//! - It protects nothing: `/__sim` has no auth, the client credentials are public, and the
//!   action executor calls any `http://` URL. [`Simulator::start`] logs a warning when it binds
//!   anything but a loopback address.
//! - Data actions (`custom_-_<uuid>` ids) really call their `requestUrlTemplate` (plain
//!   `http://`), with the integration's Basic credential; `GET` shows an action's `config` only
//!   with `includeConfig=true` and its schemas only with `expand=contract`; `PATCH` and
//!   `PUT .../config/current` require the current `version`; a contract changes only through
//!   the action's draft (`POST/GET/PATCH/DELETE .../actions/{id}/draft`, then
//!   `POST .../draft/publish`, which keeps the id); contract schemas keep only the top-level
//!   fields of `JsonSchemaDocument`. Templates may nest references 32
//!   levels deep and render at most 64 MiB; beyond, execution fails with `ACTION.PROCESSING`.
//!
//! # Control API (`/__sim`, no auth, JSON)
//! - `POST /__sim/faults` `{"method", "path" (glob), "status" (0 = drop the connection, absent =
//!   only delay), "retryAfter", "delayMs", "count" (default 1), "body"}` → 201; `GET` lists the
//!   armed ones; `DELETE` clears them. Faults apply to every path outside `/__sim`, the login
//!   and the WebSocket handshake included, and to the deliveries to receivers (below).
//! - `GET /__sim/requests?path=<glob>&method=<M>` → `[{method, path, query, headers, body, at}]`
//!   of the same requests, oldest first (`authorization` shown as `<scheme> [REDACTED]`, secret-looking body fields
//!   redacted); `DELETE` clears. Bounded: the last 10,000 requests within 32 MiB in all (the
//!   oldest go first), each body cut at 64 KiB — a cut body is the text of its beginning and its
//!   entry adds `"bodyTruncated": true, "bodySize": <bytes received>`.
//! - `POST /__sim/callbacks/{conversationId}/state {"state": "connected"}` → the conversation;
//!   publishes the event.
//! - `POST /__sim/notifications/socket-closing` → 202 `{"sockets": n}`; each open socket gets
//!   `v2.system.socket_closing` and is closed `socket_closing_delay` later.
//! - `POST /__sim/notifications/pause {"seconds": N}` → 204; no heartbeat for N s (0 resumes).
//! - `GET /__sim/notifications/sockets` → `[{channelId, connectedAt, remote}]`.
//! - Webhook receivers, for a delivery target that needs no network (the sandbox's example
//!   target): `POST /__sim/receivers/{name}` (any body, any content type) records
//!   `{id, at, headers, body, signature}` and answers 200 `{}` — `id` a sequence number, `headers`
//!   all of them (`authorization` redacted as in the request log), `body` the text received, and
//!   `signature` the Standard Webhooks check (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, several
//!   space-separated during a rotation; compared in constant time): `valid` when one matches the receiver's secret and the
//!   timestamp is within 5 minutes, `invalid` otherwise (with `signatureError` saying why),
//!   `unchecked` when the receiver has no secret. These deliveries are requests received like
//!   the API's: they are in `/__sim/requests` and armed faults apply to them (a fault answering
//!   503 or 410 answers instead of the receiver, which then records nothing).
//!   `PUT /__sim/receivers/{name}` `{"secret": "whsec_<base64 key>"}` → 204 sets the secret
//!   (`null` removes it; also [`Simulator::set_receiver_secret`]); `GET` → the deliveries, oldest
//!   first, bounded like the request log (the last 10,000 of all receivers within 32 MiB, each
//!   body cut at 64 KiB, marked as in the request log); `DELETE` → 204 forgets them (the secret
//!   stays).
//! - `POST /__sim/reset` → 204: no conversations, integrations, credentials, actions, faults,
//!   recorded requests, receiver deliveries, rate-limit counts or heartbeat pause; issued
//!   tokens, notification channels (subscriptions, open sockets) and receiver secrets are kept.
//!
//! # Layout
//! The modules form a tree, each importing only those below it. At the bottom, the leaves:
//! `error`, `extract`, `paging`, `velocity`, `fixtures`, `options`, `lock` and `server` (accept
//! loop: HTTP/1 + upgrades, connection kill switch); then `records` (what the simulator holds:
//! request log, faults, receivers, conversations, integration records, notification hub), then
//! `state` (the shared state built from them). Above, the handlers: `control` (correlation id,
//! recording and faults, `/__sim`), `auth` (login, bearer check, rate limit), `directory`
//! (users, queues), `callbacks`, `notifications` (channels, subscriptions, WebSocket),
//! `execution` (execute/test) and `integrations` (types, integrations, credentials, actions).
//!
//! # Locks
//! Plain mutexes, never held across an await; the one nesting is the conversation data, then
//! the notification hub (callback events are published under the data lock so that each
//! conversation's events go out in the order its changes were applied).

mod auth;
mod callbacks;
mod control;
mod directory;
mod error;
mod execution;
mod extract;
mod fixtures;
mod integrations;
mod lock;
mod notifications;
mod options;
mod paging;
mod records;
mod server;
mod state;
mod velocity;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use fixtures::{ClientFixture, Fixtures, FixturesError, SIM_CLIENT_ID, SIM_CLIENT_SECRET};
pub use options::SimOptions;
pub use records::receivers::ReceiverSecretError;

use error::GenesysError;
use records::receivers::WebhookSecret;
use server::loopback_authority;
use state::Sim;

/// A running simulator.
pub struct Simulator {
    addr: SocketAddr,
    sim: Arc<Sim>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    accept: tokio::task::JoinHandle<()>,
}

impl Simulator {
    /// Binds `listen` (port 0 picks a free port) and serves on the current runtime. Binding
    /// anything but a loopback address logs a warning: the simulator has no protection at all.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(listen: SocketAddr, options: SimOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        if !loopback_only(addr) {
            tracing::warn!(
                %addr,
                "The Genesys Cloud simulator listens on a NON-LOOPBACK address: anyone who can \
                 reach it can use its unauthenticated /__sim control API, log in with its public \
                 client credentials ({SIM_CLIENT_ID} / {SIM_CLIENT_SECRET}) and make its data \
                 action executor call any http:// URL. Bind 127.0.0.1 unless that is intended."
            );
        }
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let sim = Arc::new(Sim::new(options, addr, shutdown.clone()));
        let accept = tokio::spawn(server::serve(
            listener,
            router(sim.clone()),
            shutdown.clone(),
            tasks.clone(),
        ));
        Ok(Self {
            addr,
            sim,
            shutdown,
            tasks,
            accept,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (the loopback address when bound to an unspecified one): the
    /// base of both the login and the API paths.
    pub fn base_url(&self) -> String {
        format!("http://{}", loopback_authority(self.addr))
    }

    /// Registers the secret the receiver `name` (`/__sim/receivers/{name}`) checks delivery
    /// signatures with, as `PUT /__sim/receivers/{name}` does — for a gateway that points a
    /// target at its own simulator.
    ///
    /// # Errors
    /// When `secret` is not `whsec_` followed by the standard base64 of a non-empty key.
    pub fn set_receiver_secret(
        &self,
        name: &str,
        secret: &SecretString,
    ) -> Result<(), ReceiverSecretError> {
        let secret = WebhookSecret::parse(secret.expose_secret())?;
        self.sim.receivers.lock().set_secret(name, Some(secret));
        Ok(())
    }

    /// Stops accepting, closes every connection and WebSocket, and waits (at most 5 s) for
    /// the connection tasks to end.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let _ = (&mut self.accept).await;
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The state holds issued tokens: only the address is shown.
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Whether `addr` is reachable from this machine only.
fn loopback_only(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

fn router(sim: Arc<Sim>) -> Router {
    let api = Router::new()
        .route("/api/v2/users", get(directory::list_users))
        .route("/api/v2/users/{userId}", get(directory::get_user))
        .route("/api/v2/routing/queues", get(directory::list_queues))
        .route(
            "/api/v2/routing/queues/{queueId}",
            get(directory::get_queue),
        )
        .route("/api/v2/conversations/callbacks", post(callbacks::create))
        .route(
            "/api/v2/conversations/callbacks/bulk/disconnect",
            post(callbacks::bulk_disconnect),
        )
        .route(
            "/api/v2/conversations/callbacks/{conversationId}",
            get(callbacks::get_callback_conversation),
        )
        .route(
            "/api/v2/conversations/{conversationId}",
            get(callbacks::get_conversation),
        )
        .route(
            "/api/v2/notifications/channels",
            post(notifications::create_channel).get(notifications::list_channels),
        )
        .route(
            "/api/v2/notifications/channels/{channelId}",
            axum::routing::head(notifications::head_channel),
        )
        .route(
            "/api/v2/notifications/channels/{channelId}/subscriptions",
            get(notifications::get_subscriptions)
                .post(notifications::add_subscriptions)
                .put(notifications::replace_subscriptions)
                .delete(notifications::delete_subscriptions),
        )
        .merge(integrations::router())
        .route_layer(from_fn_with_state(sim.clone(), auth::require_token));

    let control = Router::new()
        .route(
            "/__sim/faults",
            post(control::add_fault)
                .get(control::list_faults)
                .delete(control::clear_faults),
        )
        .route(
            "/__sim/requests",
            get(control::list_requests).delete(control::clear_requests),
        )
        .route(
            "/__sim/callbacks/{conversationId}/state",
            post(callbacks::change_state),
        )
        .route(
            "/__sim/notifications/socket-closing",
            post(notifications::socket_closing),
        )
        .route("/__sim/notifications/pause", post(notifications::pause))
        .route(
            "/__sim/notifications/sockets",
            get(notifications::list_sockets),
        )
        .route(
            "/__sim/receivers/{name}",
            post(control::receive)
                .put(control::set_receiver)
                .get(control::list_deliveries)
                .delete(control::clear_deliveries),
        )
        .route("/__sim/reset", post(control::reset));

    Router::new()
        .route("/oauth/token", post(auth::token))
        .route("/channels/{channelId}", get(notifications::socket))
        .merge(api)
        .merge(control)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(sim.clone(), control::record_and_fault))
        .layer(from_fn(control::correlation))
        .with_state(sim)
}

async fn not_found() -> impl IntoResponse {
    GenesysError::not_found("HTTP 404 Not Found")
}

async fn method_not_allowed() -> impl IntoResponse {
    GenesysError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method.not.allowed",
        "HTTP 405 Method Not Allowed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_count_as_loopback() {
        for addr in [
            "127.0.0.1:9100",
            "127.1.2.3:0",
            "[::1]:9100",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(loopback_only(addr.parse().unwrap()), "{addr}");
        }
        for addr in [
            "0.0.0.0:9100",
            "[::]:0",
            "192.168.1.10:9100",
            "[::ffff:10.0.0.1]:1",
        ] {
            assert!(!loopback_only(addr.parse().unwrap()), "{addr}");
        }
    }
}
