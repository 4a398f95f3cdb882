//! The Notifications service: channels (`/api/v2/notifications/channels`), their topic
//! subscriptions (at most 1000 topics per channel), and the channel WebSocket at
//! `/channels/{id}` — heartbeat `channel.metadata` messages every `heartbeat`, an answer to
//! `{"message": "ping"}`, the events of subscribed topics, and `v2.system.socket_closing`
//! followed by the close when asked through `/__sim/notifications/socket-closing`.
//!
//! Channels belong to the OAuth client that created them, expire 24 h after creation, and a
//! client keeps at most 20: creating a 21st removes its oldest (closing its sockets), as Genesys
//! does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::auth::Caller;
use super::error::GenesysError;
use super::extract::GJson;
use super::server::Peer;
use super::state::{Sim, lock};

/// Topics a channel may hold.
pub(crate) const MAX_TOPICS: usize = 1000;
/// Channels an OAuth client may hold.
const MAX_CHANNELS_PER_CLIENT: usize = 20;
/// Lifetime of a channel.
const CHANNEL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What the hub sends to one socket task.
#[derive(Debug)]
enum Outbound {
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

#[derive(Debug)]
struct Channel {
    id: String,
    owner: String,
    connect_uri: String,
    expires: DateTime<Utc>,
    expires_at: Instant,
    topics: Vec<String>,
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
    inner: Mutex<HubInner>,
    paused_until: Mutex<Option<Instant>>,
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
        let inner = lock(&self.inner);
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

    /// Ends any heartbeat pause.
    pub fn resume_heartbeats(&self) {
        *lock(&self.paused_until) = None;
    }

    fn heartbeats_paused(&self, now: Instant) -> bool {
        lock(&self.paused_until).is_some_and(|until| now < until)
    }

    fn remove_socket(&self, channel_id: &str, socket_id: u64) {
        let mut inner = lock(&self.inner);
        if let Some(channel) = inner.channels.iter_mut().find(|c| c.id == channel_id) {
            channel.sockets.retain(|s| s.id != socket_id);
        }
    }

    /// Runs `f` on the live channel `id` of `owner`.
    fn with_channel<T>(
        &self,
        id: &str,
        owner: &str,
        f: impl FnOnce(&mut Channel) -> Result<T, GenesysError>,
    ) -> Result<T, GenesysError> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let channel = inner
            .channels
            .iter_mut()
            .find(|c| c.id == id && c.owner == owner && c.live(now))
            .ok_or_else(|| GenesysError::not_found(format!("Channel {id} not found")))?;
        f(channel)
    }
}

fn ws_base(sim: &Sim, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| super::loopback_authority(sim.local_addr));
    format!("ws://{host}")
}

/// `POST /api/v2/notifications/channels`.
pub(crate) async fn create_channel(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Json<Value> {
    let id = format!("streaming-0-{}", uuid::Uuid::new_v4().simple());
    let channel = Channel {
        connect_uri: format!("{}/channels/{id}", ws_base(&sim, &headers)),
        id,
        owner: caller.client_id.clone(),
        expires: Utc::now() + CHANNEL_LIFETIME,
        expires_at: Instant::now() + CHANNEL_LIFETIME,
        topics: Vec::new(),
        sockets: Vec::new(),
    };
    let body = channel.to_json();
    let mut inner = lock(&sim.hub.inner);
    let now = Instant::now();
    inner
        .channels
        .retain(|c| c.live(now) || !c.sockets.is_empty());
    let owned = inner
        .channels
        .iter()
        .filter(|c| c.owner == caller.client_id)
        .count();
    if owned >= MAX_CHANNELS_PER_CLIENT
        && let Some(pos) = inner
            .channels
            .iter()
            .position(|c| c.owner == caller.client_id)
    {
        let oldest = inner.channels.remove(pos);
        for socket in oldest.sockets {
            let _ = socket.tx.send(Outbound::Close);
        }
    }
    inner.channels.push(channel);
    Json(body)
}

/// `GET /api/v2/notifications/channels`: the caller's live channels.
pub(crate) async fn list_channels(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let now = Instant::now();
    let inner = lock(&sim.hub.inner);
    let entities: Vec<Value> = inner
        .channels
        .iter()
        .filter(|c| c.owner == caller.client_id && c.live(now))
        .map(Channel::to_json)
        .collect();
    Json(json!({ "entities": entities }))
}

/// `HEAD /api/v2/notifications/channels/{channelId}`: 200 while the channel lives, else 404.
pub(crate) async fn head_channel(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, GenesysError> {
    sim.hub
        .with_channel(&id, &caller.client_id, |_| Ok(StatusCode::OK))
}

/// A topic in a subscription request: `{"id": "<topic>"}` (Genesys' `ChannelTopic`) or a bare
/// string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TopicInput {
    Object { id: String },
    Name(String),
}

impl TopicInput {
    fn into_name(self) -> String {
        match self {
            Self::Object { id } | Self::Name(id) => id,
        }
    }
}

fn topic_listing(topics: &[String], with_state: bool) -> Value {
    let entities: Vec<Value> = topics
        .iter()
        .map(|t| {
            if with_state {
                json!({ "id": t, "state": "Permitted" })
            } else {
                json!({ "id": t })
            }
        })
        .collect();
    json!({ "entities": entities })
}

fn checked_topics(input: Vec<TopicInput>) -> Result<Vec<String>, GenesysError> {
    let mut topics: Vec<String> = Vec::with_capacity(input.len());
    for topic in input.into_iter().map(TopicInput::into_name) {
        if topic.trim().is_empty() {
            return Err(GenesysError::bad_request("A topic id must not be empty"));
        }
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    Ok(topics)
}

fn too_many_topics() -> GenesysError {
    GenesysError::bad_request(format!(
        "A channel can subscribe to at most {MAX_TOPICS} topics"
    ))
    .with_detail_code("notification.channel.topics.limit")
}

/// `GET /api/v2/notifications/channels/{channelId}/subscriptions`.
pub(crate) async fn get_subscriptions(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    sim.hub.with_channel(&id, &caller.client_id, |c| {
        Ok(Json(topic_listing(&c.topics, false)))
    })
}

/// `POST /api/v2/notifications/channels/{channelId}/subscriptions`: adds topics.
pub(crate) async fn add_subscriptions(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    GJson(input): GJson<Vec<TopicInput>>,
) -> Result<Json<Value>, GenesysError> {
    let topics = checked_topics(input)?;
    sim.hub.with_channel(&id, &caller.client_id, |c| {
        let mut merged = c.topics.clone();
        for t in topics {
            if !merged.contains(&t) {
                merged.push(t);
            }
        }
        if merged.len() > MAX_TOPICS {
            return Err(too_many_topics());
        }
        c.topics = merged;
        Ok(Json(topic_listing(&c.topics, true)))
    })
}

/// `PUT /api/v2/notifications/channels/{channelId}/subscriptions`: replaces the topics.
pub(crate) async fn replace_subscriptions(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    GJson(input): GJson<Vec<TopicInput>>,
) -> Result<Json<Value>, GenesysError> {
    let topics = checked_topics(input)?;
    if topics.len() > MAX_TOPICS {
        return Err(too_many_topics());
    }
    sim.hub.with_channel(&id, &caller.client_id, |c| {
        c.topics = topics;
        Ok(Json(topic_listing(&c.topics, true)))
    })
}

/// `DELETE /api/v2/notifications/channels/{channelId}/subscriptions`.
pub(crate) async fn delete_subscriptions(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, GenesysError> {
    sim.hub.with_channel(&id, &caller.client_id, |c| {
        c.topics.clear();
        Ok(StatusCode::NO_CONTENT)
    })
}

/// `GET /channels/{channelId}`: the channel WebSocket.
pub(crate) async fn socket(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    Extension(peer): Extension<Peer>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return GenesysError::bad_request(rejection.body_text()).into_response();
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let socket_id = {
        let now = Instant::now();
        let mut inner = lock(&sim.hub.inner);
        inner.next_socket += 1;
        let socket_id = inner.next_socket;
        let Some(channel) = inner
            .channels
            .iter_mut()
            .find(|c| c.id == id && c.live(now))
        else {
            return GenesysError::not_found(format!("Channel {id} not found")).into_response();
        };
        channel.sockets.push(SocketHandle {
            id: socket_id,
            tx,
            connected_at: Utc::now(),
            remote: peer.0,
        });
        socket_id
    };
    let sim_for_failure = sim.clone();
    let channel_for_failure = id.clone();
    upgrade
        .on_failed_upgrade(move |_| {
            sim_for_failure
                .hub
                .remove_socket(&channel_for_failure, socket_id)
        })
        .on_upgrade(move |ws| run_socket(sim, id, socket_id, ws, rx))
}

fn metadata_message(message: &str) -> String {
    json!({ "topicName": "channel.metadata", "eventBody": { "message": message } }).to_string()
}

async fn run_socket(
    sim: Arc<Sim>,
    channel_id: String,
    socket_id: u64,
    mut ws: WebSocket,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
) {
    let mut heartbeat = tokio::time::interval_at(Instant::now() + sim.heartbeat, sim.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut close_at: Option<Instant> = None;
    loop {
        let closing = async {
            match close_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sim.shutdown.cancelled() => {
                let _ = ws.send(close_message(1001, "server shutting down")).await;
                break;
            }
            () = closing => {
                let _ = ws.send(close_message(1000, "socket closing")).await;
                break;
            }
            _ = heartbeat.tick() => {
                if !sim.hub.heartbeats_paused(Instant::now())
                    && ws.send(Message::Text(metadata_message("WebSocket Heartbeat").into())).await.is_err()
                {
                    break;
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Text(text)) => {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Closing) => {
                    let message = json!({
                        "topicName": "v2.system.socket_closing",
                        "version": "2",
                        "eventBody": { "message": "Socket is closing. Reconnect to the channel to continue receiving notifications." },
                        "metadata": { "CorrelationId": uuid::Uuid::new_v4().to_string() },
                    });
                    if ws.send(Message::Text(message.to_string().into())).await.is_err() {
                        break;
                    }
                    close_at.get_or_insert(Instant::now() + sim.socket_closing_delay);
                }
                Some(Outbound::Close) | None => {
                    let _ = ws.send(close_message(1000, "channel removed")).await;
                    break;
                }
            },
            incoming = ws.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let is_ping = serde_json::from_str::<Value>(text.as_str())
                        .is_ok_and(|v| v.get("message").and_then(Value::as_str) == Some("ping"));
                    if is_ping && ws.send(Message::Text(metadata_message("pong").into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    sim.hub.remove_socket(&channel_id, socket_id);
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// `POST /__sim/notifications/socket-closing`: `v2.system.socket_closing` on every open socket,
/// each closed `socket_closing_delay` later. Answers `{"sockets": n}`.
pub(crate) async fn socket_closing(State(sim): State<Arc<Sim>>) -> (StatusCode, Json<Value>) {
    let inner = lock(&sim.hub.inner);
    let mut n = 0;
    for socket in inner.channels.iter().flat_map(|c| c.sockets.iter()) {
        if socket.tx.send(Outbound::Closing).is_ok() {
            n += 1;
        }
    }
    (StatusCode::ACCEPTED, Json(json!({ "sockets": n })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PauseSpec {
    seconds: f64,
}

/// `POST /__sim/notifications/pause {"seconds": N}`: no heartbeats for N seconds (0 resumes).
pub(crate) async fn pause(
    State(sim): State<Arc<Sim>>,
    GJson(spec): GJson<PauseSpec>,
) -> Result<StatusCode, GenesysError> {
    if !spec.seconds.is_finite() || spec.seconds < 0.0 || spec.seconds > 86_400.0 {
        return Err(GenesysError::bad_request(
            "seconds must be between 0 and 86400",
        ));
    }
    *lock(&sim.hub.paused_until) =
        (spec.seconds > 0.0).then(|| Instant::now() + Duration::from_secs_f64(spec.seconds));
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /__sim/notifications/sockets`: `[{channelId, connectedAt, remote}]`.
pub(crate) async fn list_sockets(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let inner = lock(&sim.hub.inner);
    let sockets: Vec<Value> = inner
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
        .collect();
    Json(Value::Array(sockets))
}
