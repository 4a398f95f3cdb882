//! Callbacks and their conversations: `POST /api/v2/conversations/callbacks`
//! (`CreateCallbackCommand` → `CreateCallbackResponse`), `POST
//! /api/v2/conversations/callbacks/bulk/disconnect`, `GET /api/v2/conversations/{id}`,
//! `GET /api/v2/conversations/callbacks/{id}`, and the
//! control `POST /__sim/callbacks/{conversationId}/state`.
//!
//! Every change — creation, state change, disconnect — is published on
//! `v2.routing.queues.{queueId}.conversations.callbacks` in the shape of Genesys'
//! `QueueConversationCallbackEventTopicCallbackConversation` (the conversation itself, and its
//! shapes, are in `records::conversations`).
//!
//! Events are published while the data lock is held (lock order: `data`, then the hub's), so
//! subscribers see the changes of one conversation in the order they were applied, however many
//! requests change it at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::GenesysError;
use super::extract::GJson;
use super::records::conversations::{CALLBACK_STATES, CallbackConversation, NewCallback};
use super::state::Sim;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoutingData {
    queue_id: Option<String>,
}

/// `CreateCallbackCommand`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateCallbackCommand {
    script_id: Option<String>,
    queue_id: Option<String>,
    routing_data: Option<RoutingData>,
    callback_user_name: Option<String>,
    callback_numbers: Option<Vec<String>>,
    callback_scheduled_time: Option<String>,
    data: Option<Map<String, Value>>,
}

fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .map(|n| n.and_utc())
}

/// `POST /api/v2/conversations/callbacks`.
pub(crate) async fn create(
    State(sim): State<Arc<Sim>>,
    GJson(cmd): GJson<CreateCallbackCommand>,
) -> Result<Json<Value>, GenesysError> {
    let queue_id = cmd
        .routing_data
        .and_then(|r| r.queue_id)
        .or(cmd.queue_id)
        .filter(|q| !q.is_empty())
        .ok_or_else(|| {
            GenesysError::bad_request("A queue is required: set routingData.queueId")
                .with_detail_code("invalid.value")
        })?;
    let queue = sim.fixtures.queue(&queue_id).ok_or_else(|| {
        GenesysError::bad_request(format!("The queue {queue_id} does not exist"))
            .with_detail_code("invalid.value")
    })?;
    let queue_name = queue["name"].as_str().unwrap_or_default().to_owned();
    let numbers: Vec<String> = cmd
        .callback_numbers
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.trim().to_owned())
        .collect();
    if numbers.is_empty() || numbers.iter().any(String::is_empty) {
        return Err(
            GenesysError::bad_request("At least one callback number is required")
                .with_detail_code("invalid.value"),
        );
    }
    let scheduled = match cmd.callback_scheduled_time.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(parse_time(raw).ok_or_else(|| {
            GenesysError::bad_request(format!(
                "callbackScheduledTime '{raw}' is not an ISO-8601 date-time (yyyy-MM-ddTHH:mm:ss.SSSZ)"
            ))
        })?),
    };
    let mut data = BTreeMap::new();
    for (key, value) in cmd.data.unwrap_or_default() {
        match value {
            Value::String(s) => {
                data.insert(key, s);
            }
            _ => {
                return Err(GenesysError::bad_request(format!(
                    "data.{key} must be a string"
                )));
            }
        }
    }
    let conversation = CallbackConversation::new(NewCallback {
        queue_id,
        queue_name,
        callback_numbers: numbers,
        callback_user_name: cmd.callback_user_name,
        scheduled,
        script_id: cmd.script_id,
        data,
    });
    let answer = conversation.created();
    let mut data = sim.data();
    sim.hub
        .publish(&conversation.topic(), &conversation.to_event());
    data.conversations
        .insert(conversation.id().to_owned(), conversation);
    Ok(Json(answer))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DisconnectIdentifier {
    conversation_id: String,
    #[serde(rename = "callbackId")]
    _callback_id: Option<String>,
}

/// `BulkCallbackDisconnectRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BulkDisconnect {
    callback_disconnect_identifiers: Option<Vec<DisconnectIdentifier>>,
}

/// `POST /api/v2/conversations/callbacks/bulk/disconnect`: 202; each known, live conversation
/// is disconnected (`disconnectType: "client"`) and its event published.
pub(crate) async fn bulk_disconnect(
    State(sim): State<Arc<Sim>>,
    GJson(body): GJson<BulkDisconnect>,
) -> Result<StatusCode, GenesysError> {
    let ids = body
        .callback_disconnect_identifiers
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| {
            GenesysError::bad_request("callbackDisconnectIdentifiers must not be empty")
                .with_detail_code("invalid.value")
        })?;
    let mut data = sim.data();
    for ident in ids {
        if let Some(conv) = data.conversations.get_mut(&ident.conversation_id)
            && !conv.ended()
        {
            conv.set_state("disconnected", "client");
            sim.hub.publish(&conv.topic(), &conv.to_event());
        }
    }
    Ok(StatusCode::ACCEPTED)
}

/// `GET /api/v2/conversations/{conversationId}`.
pub(crate) async fn get_conversation(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    show(&sim, &id, CallbackConversation::to_conversation)
}

/// `GET /api/v2/conversations/callbacks/{conversationId}`.
pub(crate) async fn get_callback_conversation(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    show(&sim, &id, CallbackConversation::to_callback_conversation)
}

/// The conversation `id` in the shape `render` gives it, or 404.
fn show(
    sim: &Sim,
    id: &str,
    render: fn(&CallbackConversation) -> Value,
) -> Result<Json<Value>, GenesysError> {
    sim.data()
        .conversations
        .get(id)
        .map(|c| Json(render(c)))
        .ok_or_else(|| GenesysError::not_found(format!("Conversation {id} not found")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateChange {
    state: String,
}

/// `POST /__sim/callbacks/{conversationId}/state {"state": "connected"}`: moves the customer's
/// callback to that state, publishes the event, answers the conversation.
pub(crate) async fn change_state(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(change): GJson<StateChange>,
) -> Result<Response, GenesysError> {
    let state = change.state.to_ascii_lowercase();
    if !CALLBACK_STATES.contains(&state.as_str()) {
        return Err(GenesysError::bad_request(format!(
            "state must be one of {}",
            CALLBACK_STATES.join(", ")
        )));
    }
    let (reached, conversation) = {
        let mut data = sim.data();
        let conv = data
            .conversations
            .get_mut(&id)
            .ok_or_else(|| GenesysError::not_found(format!("Conversation {id} not found")))?;
        conv.set_state(&state, "endpoint");
        // Still under the data lock: events of one conversation go out in the order applied.
        let reached = sim.hub.publish(&conv.topic(), &conv.to_event());
        (reached, conv.to_conversation())
    };
    let mut response = Json(conversation).into_response();
    response
        .headers_mut()
        .insert("x-sim-notified-sockets", http::HeaderValue::from(reached));
    Ok(response)
}
