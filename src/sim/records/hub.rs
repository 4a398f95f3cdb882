//! The notification hub: channels (owned by the OAuth client that created them, live 24 h, at
//! most 20 per client — a 21st removes its client's oldest, as Genesys does), their topic
//! subscriptions, their open sockets, and the heartbeat pause.
//!
//! The hub only registers sockets and hands them [`Outbound`] messages; the socket tasks
//! themselves (heartbeat, ping, close) belong to the notifications handlers.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::sim::error::GenesysError;
use crate::sim::lock::Lock;

/// Topics a channel may hold.
pub(crate) const MAX_TOPICS: usize = 1000;
/// Channels an OAuth client may hold.
const MAX_CHANNELS_PER_CLIENT: usize = 20;
/// Lifetime of a channel.
const CHANNEL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What the hub sends to one socket task.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A text frame.
    Text(String),
    /// Send `v2.system.socket_closing`, close after the configured delay.
    Closing,
    /// Close now (channel removed, simulator stopping).
    Close,
}

#[derive(Debug)]
struct SocketHandle {
    id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
    connected_at: DateTime<Utc>,
    remote: SocketAddr,
}

/// A notification channel.
#[derive(Debug)]
pub(crate) struct Channel {
    id: String,
    owner: String,
    connect_uri: String,
    expires: DateTime<Utc>,
    expires_at: Instant,
    /// The subscribed topics, each once, in the order subscribed.
    pub topics: Vec<String>,
    sockets: Vec<SocketHandle>,
}

impl Channel {
    fn to_json(&self) -> Value {
        json!({
            "connectUri": self.connect_uri,
            "id": self.id,
            "expires": self.expires.to_rfc3339_opts(SecondsFormat::Millis, true),
        })
    }

    fn live(&self, now: Instant) -> bool {
        self.expires_at > now
    }
}

#[derive(Debug, Default)]
struct HubInner {
    channels: Vec<Channel>,
    next_socket: u64,
}

/// Channels, subscriptions and open sockets.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    inner: Lock<HubInner>,
    paused_until: Lock<Option<Instant>>,
}

impl Hub {
    /// Sends an event on `topic` to every socket of every channel subscribed to it; returns the
    /// number of sockets reached.
    pub fn publish(&self, topic: &str, event_body: &Value) -> usize {
        let message = json!({
            "topicName": topic,
            "version": "2",
            "eventBody": event_body,
            "metadata": { "CorrelationId": uuid::Uuid::new_v4().to_string() },
        })
        .to_string();
        let now = Instant::now();
        let inner = self.inner.lock();
        let mut reached = 0;
        for channel in inner
            .channels
            .iter()
            .filter(|c| c.live(now) && c.topics.iter().any(|t| t == topic))
        {
            for socket in &channel.sockets {
                if socket.tx.send(Outbound::Text(message.clone())).is_ok() {
                    reached += 1;
                }
            }
        }
        reached
    }

    /// A new channel of `owner` whose socket is at `{ws_base}/channels/{id}`, as Genesys'
    /// `Channel`. Expired channels without sockets are forgotten; when `owner` already holds its
    /// maximum, its oldest channel is removed and its sockets closed.
    pub fn create_channel(&self, owner: &str, ws_base: &str) -> Value {
        let id = format!("streaming-0-{}", uuid::Uuid::new_v4().simple());
        let channel = Channel {
            connect_uri: format!("{ws_base}/channels/{id}"),
            id,
            owner: owner.to_owned(),
            expires: Utc::now() + CHANNEL_LIFETIME,
            expires_at: Instant::now() + CHANNEL_LIFETIME,
            topics: Vec::new(),
            sockets: Vec::new(),
        };
        let body = channel.to_json();
        let mut inner = self.inner.lock();
        let now = Instant::now();
        inner
            .channels
            .retain(|c| c.live(now) || !c.sockets.is_empty());
        let owned = inner.channels.iter().filter(|c| c.owner == owner).count();
        if owned >= MAX_CHANNELS_PER_CLIENT
            && let Some(pos) = inner.channels.iter().position(|c| c.owner == owner)
        {
            let oldest = inner.channels.remove(pos);
            for socket in oldest.sockets {
                let _ = socket.tx.send(Outbound::Close);
            }
        }
        inner.channels.push(channel);
        body
    }

    /// The live channels of `owner`, as Genesys' `Channel`s.
    pub fn channels_of(&self, owner: &str) -> Vec<Value> {
        let now = Instant::now();
        self.inner
            .lock()
            .channels
            .iter()
            .filter(|c| c.owner == owner && c.live(now))
            .map(Channel::to_json)
            .collect()
    }

    /// Runs `f` on the live channel `id` of `owner`.
    ///
    /// # Errors
    /// 404 when `owner` has no such live channel; else what `f` answers.
    pub fn with_channel<T>(
        &self,
        id: &str,
        owner: &str,
        f: impl FnOnce(&mut Channel) -> Result<T, GenesysError>,
    ) -> Result<T, GenesysError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let channel = inner
            .channels
            .iter_mut()
            .find(|c| c.id == id && c.owner == owner && c.live(now))
            .ok_or_else(|| GenesysError::not_found(format!("Channel {id} not found")))?;
        f(channel)
    }

    /// Registers a socket of the live channel `channel_id` (whoever owns it) that `tx` feeds;
    /// `None` when there is no such channel.
    pub fn add_socket(
        &self,
        channel_id: &str,
        tx: mpsc::UnboundedSender<Outbound>,
        remote: SocketAddr,
    ) -> Option<u64> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.next_socket += 1;
        let socket_id = inner.next_socket;
        let channel = inner
            .channels
            .iter_mut()
            .find(|c| c.id == channel_id && c.live(now))?;
        channel.sockets.push(SocketHandle {
            id: socket_id,
            tx,
            connected_at: Utc::now(),
            remote,
        });
        Some(socket_id)
    }

    /// Forgets a socket (it closed).
    pub fn remove_socket(&self, channel_id: &str, socket_id: u64) {
        let mut inner = self.inner.lock();
        if let Some(channel) = inner.channels.iter_mut().find(|c| c.id == channel_id) {
            channel.sockets.retain(|s| s.id != socket_id);
        }
    }

    /// Tells every open socket to announce `v2.system.socket_closing` and close; returns the
    /// number of sockets told.
    pub fn announce_closing(&self) -> usize {
        let inner = self.inner.lock();
        let mut told = 0;
        for socket in inner.channels.iter().flat_map(|c| c.sockets.iter()) {
            if socket.tx.send(Outbound::Closing).is_ok() {
                told += 1;
            }
        }
        told
    }

    /// The open sockets: `[{channelId, connectedAt, remote}]`.
    pub fn sockets(&self) -> Vec<Value> {
        let inner = self.inner.lock();
        inner
            .channels
            .iter()
            .flat_map(|c| {
                c.sockets.iter().filter(|s| !s.tx.is_closed()).map(|s| {
                    json!({
                        "channelId": c.id,
                        "connectedAt": s.connected_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                        "remote": s.remote.to_string(),
                    })
                })
            })
            .collect()
    }

    /// Stops heartbeats until `until` (`None` resumes them).
    pub fn pause_heartbeats(&self, until: Option<Instant>) {
        *self.paused_until.lock() = until;
    }

    /// Ends any heartbeat pause.
    pub fn resume_heartbeats(&self) {
        self.pause_heartbeats(None);
    }

    /// Whether heartbeats are paused at `now`.
    pub fn heartbeats_paused(&self, now: Instant) -> bool {
        self.paused_until.lock().is_some_and(|until| now < until)
    }
}
