//! The Genesys notifications WebSocket client.
//!
//! [`NotificationsClient::run`] keeps one socket open on a channel subscribed to the given
//! topics and sends what arrives to an mpsc channel as [`NotificationItem`]s:
//!
//! - every time a socket is (re)opened, before any of its events: `Reconnected { gap }`, where
//!   `gap` is true when events may have been missed since the previous socket (the first
//!   connection, and any reconnection after a lost socket) — the consumer reconciles then — and
//!   false after a seamless switch;
//! - every topic event as `Event(NotificationEvent)`; heartbeats, pongs and
//!   `v2.system.socket_closing` are handled here and not forwarded.
//!
//! Liveness: a watchdog reconnects when no heartbeat or event arrived for
//! `heartbeat_timeout` (pongs do not count: they prove the TCP path, not the channel); a
//! `{"message":"ping"}` is sent every `ping_interval` so a dead connection fails its write.
//! Reconnections reuse the channel when it still exists (its subscriptions live on the channel)
//! and back off exponentially with jitter (a random wait between half and all of a ceiling that
//! doubles from `reconnect_base` up to `reconnect_max`): after a socket that could not be opened,
//! after a socket lost to an error, and after any socket that never proved healthy. A socket
//! proves healthy by delivering a heartbeat or an event, or by staying up for
//! `heartbeat_timeout`; only then does the backoff start again from `reconnect_base` — a server
//! that accepts sockets and closes them at once is retried ever more slowly, not in a loop (each
//! turn costs API calls from the client's rate limit). A socket silent past the watchdog is
//! replaced at once.
//!
//! Seamless switch — on `v2.system.socket_closing` and `renew_before` ahead of the channel's
//! 24 h expiry: a new channel is created, subscribed and connected while the old socket is
//! still open; then the old socket is closed and drained (its remaining events are forwarded
//! first), and reading continues on the new one. An event published during the overlap can
//! arrive twice (once per socket); none is lost.
//!
//! Metrics: `gateway_notifications_connected` (1 while a socket is open) and
//! `gateway_notifications_reconnects_total{reason}` with `heartbeat`, `socket_closing`, `error`,
//! `expiry`. The task stops on its `CancellationToken` — promptly in every step: opening a
//! socket, switching, and waiting for a slow consumer — or when the receiver is dropped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use prometheus::{IntCounter, IntGauge};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::models::{Channel, ChannelTopic};
use super::{GenesysClient, GenesysError};
use crate::backoff::{Backoff, Jitter};
use crate::config::GenesysSettings;
use crate::telemetry::Metrics;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const PING: &str = r#"{"message":"ping"}"#;
const METADATA_TOPIC: &str = "channel.metadata";
const SOCKET_CLOSING_TOPIC: &str = "v2.system.socket_closing";
/// Lifetime assumed for a channel whose `expires` is missing or unreadable.
const DEFAULT_CHANNEL_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Wait before retrying a failed seamless switch while the old socket still serves.
const SWITCH_RETRY: Duration = Duration::from_secs(30);
/// Longest wait for the close handshake when the client is cancelled.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// One notification as Genesys sends it: `{"topicName", "version", "eventBody", "metadata"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationEvent {
    /// The topic (`v2.routing.queues.{id}.conversations.callbacks`).
    pub topic_name: String,
    /// Schema version of the event body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The event.
    #[serde(default)]
    pub event_body: Value,
    /// Metadata (`CorrelationId`).
    #[serde(default)]
    pub metadata: Value,
}

/// What the client sends to its consumer.
#[derive(Debug, Clone, PartialEq)]
pub enum NotificationItem {
    /// A socket was (re)opened; `gap`: events may have been missed since the previous one.
    Reconnected {
        /// Reconcile when true.
        gap: bool,
    },
    /// A topic event.
    Event(NotificationEvent),
}

/// Timing of the notifications client.
#[derive(Debug, Clone)]
pub struct NotificationsOptions {
    /// No heartbeat or event for this long → reconnect.
    pub heartbeat_timeout: Duration,
    /// Interval of the client's pings.
    pub ping_interval: Duration,
    /// How long before the channel's expiry it is replaced.
    pub renew_before: Duration,
    /// First reconnection backoff ceiling.
    pub reconnect_base: Duration,
    /// Largest reconnection backoff ceiling.
    pub reconnect_max: Duration,
    /// Longest wait for the WebSocket handshake and for each channel call.
    pub connect_timeout: Duration,
    /// Longest time spent draining the old socket during a switch.
    pub drain_timeout: Duration,
}

impl NotificationsOptions {
    /// From `[genesys]` (`notifications_heartbeat_timeout_s`), other values at their defaults.
    pub fn from_settings(g: &GenesysSettings) -> Self {
        Self::with_heartbeat_timeout(Duration::from_secs(g.notifications_heartbeat_timeout_s))
    }

    /// Defaults around a heartbeat timeout: ping every third of it (at most 30 s), renew one
    /// hour before expiry, back off from 500 ms to 30 s.
    pub fn with_heartbeat_timeout(heartbeat_timeout: Duration) -> Self {
        Self {
            heartbeat_timeout,
            ping_interval: (heartbeat_timeout / 3)
                .clamp(Duration::from_millis(100), Duration::from_secs(30)),
            renew_before: Duration::from_secs(3600),
            reconnect_base: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a socket is replaced (the `reason` label of the reconnect counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Heartbeat,
    SocketClosing,
    Error,
    Expiry,
}

impl Reason {
    const ALL: [Self; 4] = [
        Self::Heartbeat,
        Self::SocketClosing,
        Self::Error,
        Self::Expiry,
    ];

    const fn label(self) -> &'static str {
        match self {
            Self::Heartbeat => "heartbeat",
            Self::SocketClosing => "socket_closing",
            Self::Error => "error",
            Self::Expiry => "expiry",
        }
    }
}

/// Why a session's pump stopped.
enum End {
    Cancelled,
    ConsumerGone,
    Lost(Reason),
}

/// What a text frame is.
enum Incoming {
    Heartbeat,
    Pong,
    SocketClosing,
    Event(NotificationEvent),
    Unreadable,
}

fn classify(text: &str) -> Incoming {
    let Ok(event) = serde_json::from_str::<NotificationEvent>(text) else {
        return Incoming::Unreadable;
    };
    match event.topic_name.as_str() {
        METADATA_TOPIC => {
            if event.event_body.get("message").and_then(Value::as_str) == Some("pong") {
                Incoming::Pong
            } else {
                Incoming::Heartbeat
            }
        }
        SOCKET_CLOSING_TOPIC => Incoming::SocketClosing,
        _ => Incoming::Event(event),
    }
}

/// One open socket on one channel.
struct Session {
    channel: Channel,
    socket: Socket,
    renew_at: Instant,
    opened_at: Instant,
    /// It delivered a heartbeat or an event (or replaced a socket that served until then).
    proven: bool,
}

impl Session {
    /// Whether the socket proved the channel works (see the module docs).
    fn healthy(&self, heartbeat_timeout: Duration) -> bool {
        self.proven || self.opened_at.elapsed() >= heartbeat_timeout
    }
}

/// Sends `item` to the consumer, unless `cancel` fires first.
async fn deliver(
    tx: &mpsc::Sender<NotificationItem>,
    item: NotificationItem,
    cancel: &CancellationToken,
) -> Result<(), End> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(End::Cancelled),
        sent = tx.send(item) => sent.map_err(|_| End::ConsumerGone),
    }
}

/// The notifications WebSocket client (see the module docs).
pub struct NotificationsClient {
    genesys: GenesysClient,
    topics: Vec<ChannelTopic>,
    options: NotificationsOptions,
    connected: IntGauge,
    reconnects: [IntCounter; 4],
}

impl std::fmt::Debug for NotificationsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationsClient")
            .field("topics", &self.topics.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl NotificationsClient {
    /// A client subscribing `topics` through `genesys`.
    pub fn new(
        genesys: GenesysClient,
        topics: Vec<String>,
        options: NotificationsOptions,
        metrics: &Metrics,
    ) -> Self {
        Self {
            genesys: genesys.with_timeout(options.connect_timeout),
            topics: topics.into_iter().map(ChannelTopic::new).collect(),
            options,
            connected: metrics.notifications_connected.clone(),
            reconnects: Reason::ALL.map(|r| {
                metrics
                    .notifications_reconnects_total
                    .with_label_values(&[r.label()])
            }),
        }
    }

    /// Spawns [`NotificationsClient::run`] on the current runtime with a channel of `capacity`
    /// items; returns the receiving end and the task.
    pub fn spawn(
        self,
        capacity: usize,
        cancel: CancellationToken,
    ) -> (
        mpsc::Receiver<NotificationItem>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(self.run(tx, cancel));
        (rx, task)
    }

    /// Keeps a socket open and forwards what arrives to `tx` until `cancel` fires or the
    /// receiver is dropped.
    pub async fn run(self, tx: mpsc::Sender<NotificationItem>, cancel: CancellationToken) {
        let mut gap = true;
        // Consecutive failures (sockets not opened, lost, or never healthy) since the last
        // healthy socket: the backoff grows with them.
        let mut failures: u32 = 0;
        let mut reuse: Option<Channel> = None;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let opened = tokio::select! {
                () = cancel.cancelled() => break,
                opened = self.open(reuse.take()) => opened,
            };
            let mut session = match opened {
                Ok(session) => session,
                Err(err) => {
                    if let OpenError::Socket { channel, .. } = &err {
                        reuse = Some((**channel).clone());
                    }
                    failures = failures.saturating_add(1);
                    let wait = self.backoff(failures);
                    tracing::warn!(error = %err, attempt = failures, wait_ms = wait.as_millis() as u64,
                        "cannot open the Genesys notifications socket");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            self.connected.set(1);
            tracing::info!(channel = %session.channel.id, gap, "Genesys notifications socket open");
            let end = match deliver(&tx, NotificationItem::Reconnected { gap }, &cancel).await {
                Ok(()) => self.pump(&mut session, &tx, &cancel).await,
                Err(end) => end,
            };
            match end {
                End::Cancelled => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.socket.close(None)).await;
                    break;
                }
                End::ConsumerGone => break,
                End::Lost(reason) => {
                    self.connected.set(0);
                    self.count(reason);
                    gap = true;
                    let healthy = session.healthy(self.options.heartbeat_timeout);
                    if healthy {
                        failures = 0;
                    }
                    let channel = session.channel;
                    if healthy && reason != Reason::Error {
                        tracing::warn!(
                            channel = %channel.id,
                            reason = reason.label(),
                            "Genesys notifications socket lost; reconnecting"
                        );
                        reuse = Some(channel);
                        continue;
                    }
                    failures = failures.saturating_add(1);
                    let wait = self.backoff(failures);
                    tracing::warn!(
                        channel = %channel.id,
                        reason = reason.label(),
                        healthy,
                        attempt = failures,
                        wait_ms = wait.as_millis() as u64,
                        "Genesys notifications socket lost; reconnecting after a backoff"
                    );
                    reuse = Some(channel);
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        self.connected.set(0);
    }

    fn count(&self, reason: Reason) {
        let index = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.reconnects[index].inc();
    }

    fn backoff(&self, failures: u32) -> Duration {
        Backoff::exponential(
            self.options.reconnect_base,
            self.options.reconnect_max,
            Jitter::Half,
        )
        .delay(failures)
    }

    /// Opens a socket: on `reuse` when that channel still exists, else on a new, subscribed
    /// channel. A channel that was set up but whose socket failed comes back in the error, to be
    /// reused by the next attempt (channels are limited per client).
    async fn open(&self, reuse: Option<Channel>) -> Result<Session, OpenError> {
        let channel = match reuse {
            Some(channel) if self.genesys.channel_exists(&channel.id).await? => channel,
            _ => {
                let channel = self.genesys.create_channel().await?;
                if !self.topics.is_empty() {
                    self.genesys
                        .replace_subscriptions(&channel.id, &self.topics)
                        .await?;
                }
                channel
            }
        };
        match self.connect(&channel).await {
            Ok(socket) => {
                let opened_at = Instant::now();
                let renew_at = opened_at + self.time_to_renew(&channel);
                Ok(Session {
                    channel,
                    socket,
                    renew_at,
                    opened_at,
                    proven: false,
                })
            }
            Err(reason) => Err(OpenError::Socket {
                reason,
                channel: Box::new(channel),
            }),
        }
    }

    async fn connect(&self, channel: &Channel) -> Result<Socket, String> {
        let request = channel
            .connect_uri
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let connector = tokio_tungstenite::Connector::Rustls(crate::upstream::tls_config());
        let (socket, _) = tokio::time::timeout(
            self.options.connect_timeout,
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector)),
        )
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        Ok(socket)
    }

    fn time_to_renew(&self, channel: &Channel) -> Duration {
        let lifetime = channel
            .expires
            .as_deref()
            .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
            .map_or(DEFAULT_CHANNEL_LIFETIME, |expires| {
                (expires.with_timezone(&Utc) - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
            });
        lifetime
            .saturating_sub(self.options.renew_before)
            .max(Duration::from_secs(1))
    }

    /// Reads the session until it is lost, cancelled or the consumer is gone; performs the
    /// seamless switches. Every wait here also watches `cancel`.
    async fn pump(
        &self,
        session: &mut Session,
        tx: &mpsc::Sender<NotificationItem>,
        cancel: &CancellationToken,
    ) -> End {
        let period = self.options.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = Instant::now();
        loop {
            let watchdog = last_seen + self.options.heartbeat_timeout;
            let mut switch = None;
            tokio::select! {
                biased;
                () = cancel.cancelled() => return End::Cancelled,
                frame = session.socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => match classify(text.as_str()) {
                        Incoming::Pong => {}
                        Incoming::Unreadable => last_seen = Instant::now(),
                        Incoming::Heartbeat => {
                            session.proven = true;
                            last_seen = Instant::now();
                        }
                        Incoming::SocketClosing => {
                            session.proven = true;
                            last_seen = Instant::now();
                            switch = Some(Reason::SocketClosing);
                        }
                        Incoming::Event(event) => {
                            session.proven = true;
                            if let Err(end) = deliver(tx, NotificationItem::Event(event), cancel).await {
                                return end;
                            }
                            last_seen = Instant::now();
                        }
                    },
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return End::Lost(Reason::Error),
                    Some(Ok(_)) => {}
                },
                () = tokio::time::sleep_until(watchdog) => return End::Lost(Reason::Heartbeat),
                _ = ping.tick() => {
                    if session.socket.send(Message::text(PING)).await.is_err() {
                        return End::Lost(Reason::Error);
                    }
                }
                () = tokio::time::sleep_until(session.renew_at) => switch = Some(Reason::Expiry),
            }
            if let Some(reason) = switch {
                // A switch can take several channel calls and a handshake: cancellation must
                // not wait for it.
                let switched = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return End::Cancelled,
                    switched = self.switch(session, tx, reason) => switched,
                };
                match switched {
                    Ok(()) => {
                        // The old socket served until it was replaced on purpose.
                        session.proven = true;
                        last_seen = Instant::now();
                        ping.reset();
                    }
                    Err(SwitchError::ConsumerGone) => return End::ConsumerGone,
                    Err(SwitchError::Open(err)) => {
                        tracing::warn!(error = %err, reason = reason.label(),
                            "cannot switch the Genesys notifications socket; keeping the current one");
                        session.renew_at = Instant::now() + SWITCH_RETRY;
                    }
                }
            }
        }
    }

    /// Replaces the session's socket by one on a new channel without losing events: the new
    /// socket is subscribed and open before the old one is closed and drained.
    async fn switch(
        &self,
        session: &mut Session,
        tx: &mpsc::Sender<NotificationItem>,
        reason: Reason,
    ) -> Result<(), SwitchError> {
        let fresh = self.open(None).await.map_err(SwitchError::Open)?;
        let mut old = std::mem::replace(session, fresh);
        self.count(reason);
        tracing::info!(
            old = %old.channel.id,
            new = %session.channel.id,
            reason = reason.label(),
            "switching the Genesys notifications socket"
        );
        let mut gap = old.socket.close(None).await.is_err();
        let drain_until = Instant::now() + self.options.drain_timeout;
        loop {
            match tokio::time::timeout_at(drain_until, old.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    if let Incoming::Event(event) = classify(text.as_str())
                        && tx.send(NotificationItem::Event(event)).await.is_err()
                    {
                        return Err(SwitchError::ConsumerGone);
                    }
                }
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => break,
                Ok(Some(Ok(_))) => {}
                Err(_) => {
                    gap = true;
                    break;
                }
            }
        }
        tx.send(NotificationItem::Reconnected { gap })
            .await
            .map_err(|_| SwitchError::ConsumerGone)
    }
}

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("channel call failed: {0}")]
    Genesys(#[from] GenesysError),
    #[error("WebSocket failed: {reason}")]
    Socket {
        reason: String,
        /// The channel it was opened on (reusable).
        channel: Box<Channel>,
    },
}

enum SwitchError {
    Open(OpenError),
    ConsumerGone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_frames() {
        assert!(matches!(
            classify(
                r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#
            ),
            Incoming::Heartbeat
        ));
        assert!(matches!(
            classify(r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#),
            Incoming::Pong
        ));
        assert!(matches!(
            classify(r#"{"topicName":"v2.system.socket_closing","eventBody":{}}"#),
            Incoming::SocketClosing
        ));
        let Incoming::Event(event) = classify(
            r#"{"topicName":"v2.routing.queues.q.conversations.callbacks","version":"2","eventBody":{"id":"c"},"metadata":{"CorrelationId":"x"}}"#,
        ) else {
            panic!("an event")
        };
        assert_eq!(event.event_body["id"], "c");
        assert_eq!(event.version.as_deref(), Some("2"));
        assert!(matches!(classify("not json"), Incoming::Unreadable));
    }

    #[test]
    fn options_follow_the_heartbeat_timeout() {
        let o = NotificationsOptions::with_heartbeat_timeout(Duration::from_secs(35));
        assert_eq!(o.ping_interval, Duration::from_secs(35) / 3);
        let o = NotificationsOptions::with_heartbeat_timeout(Duration::from_secs(600));
        assert_eq!(o.ping_interval, Duration::from_secs(30));
    }
}
