//! The Notifications service: channels (`/api/v2/notifications/channels`), their topic
//! subscriptions (at most 1000 topics per channel), and the channel WebSocket at
//! `/channels/{id}` — heartbeat `channel.metadata` messages every `heartbeat`, an answer to
//! `{"message": "ping"}`, the events of subscribed topics, and `v2.system.socket_closing`
//! followed by the close when asked through `/__sim/notifications/socket-closing`.
//!
//! Channels belong to the OAuth client that created them, expire 24 h after creation, and a
//! client keeps at most 20: creating a 21st removes its oldest (closing its sockets), as Genesys
//! does. The channels themselves are held by the hub (`records::hub`); this module serves them
//! and runs each socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::auth::Caller;
use super::error::GenesysError;
use super::extract::GJson;
use super::records::hub::{MAX_TOPICS, Outbound};
use super::server::{Peer, loopback_authority};
use super::state::Sim;

fn ws_base(sim: &Sim, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| loopback_authority(sim.local_addr));
    format!("ws://{host}")
}

/// `POST /api/v2/notifications/channels`.
pub(crate) async fn create_channel(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Json<Value> {
    Json(
        sim.hub
            .create_channel(&caller.client_id, &ws_base(&sim, &headers)),
    )
}

/// `GET /api/v2/notifications/channels`: the caller's live channels.
pub(crate) async fn list_channels(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    Json(json!({ "entities": sim.hub.channels_of(&caller.client_id) }))
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
    subscribe(&sim, &caller, &id, input, |current, added| {
        let mut merged = current.to_vec();
        for t in added {
            if !merged.contains(&t) {
                merged.push(t);
            }
        }
        merged
    })
}

/// `PUT /api/v2/notifications/channels/{channelId}/subscriptions`: replaces the topics.
pub(crate) async fn replace_subscriptions(
    State(sim): State<Arc<Sim>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    GJson(input): GJson<Vec<TopicInput>>,
) -> Result<Json<Value>, GenesysError> {
    subscribe(&sim, &caller, &id, input, |_, given| given)
}

/// Sets the topics of the caller's channel `id` to what `combine` makes of its current topics
/// and the requested ones; answers the listing with states.
fn subscribe(
    sim: &Sim,
    caller: &Caller,
    id: &str,
    input: Vec<TopicInput>,
    combine: impl FnOnce(&[String], Vec<String>) -> Vec<String>,
) -> Result<Json<Value>, GenesysError> {
    let topics = checked_topics(input)?;
    if topics.len() > MAX_TOPICS {
        return Err(too_many_topics());
    }
    sim.hub.with_channel(id, &caller.client_id, |c| {
        let topics = combine(&c.topics, topics);
        if topics.len() > MAX_TOPICS {
            return Err(too_many_topics());
        }
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
    let Some(socket_id) = sim.hub.add_socket(&id, tx, peer.0) else {
        return GenesysError::not_found(format!("Channel {id} not found")).into_response();
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
    let n = sim.hub.announce_closing();
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
    sim.hub.pause_heartbeats(
        (spec.seconds > 0.0).then(|| Instant::now() + Duration::from_secs_f64(spec.seconds)),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /__sim/notifications/sockets`: `[{channelId, connectedAt, remote}]`.
pub(crate) async fn list_sockets(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(Value::Array(sim.hub.sockets()))
}
