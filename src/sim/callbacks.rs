//! Callbacks and their conversations: `POST /api/v2/conversations/callbacks`
//! (`CreateCallbackCommand` → `CreateCallbackResponse`), `POST
//! /api/v2/conversations/callbacks/bulk/disconnect`, `GET /api/v2/conversations/{id}`,
//! `GET /api/v2/conversations/callbacks/{id}`, and the
//! control `POST /__sim/callbacks/{conversationId}/state`.
//!
//! A callback conversation has a `customer` participant (whose callback communication carries
//! the callback numbers, the scheduled time and the state that changes) and an `acd` participant
//! on the queue, mirroring the customer's state. Every change — creation, state change,
//! disconnect — is published on `v2.routing.queues.{queueId}.conversations.callbacks` in the
//! shape of Genesys' `QueueConversationCallbackEventTopicCallbackConversation`.
//!
//! Events are published while the data lock is held (lock order: `data`, then the hub's), so
//! subscribers see the changes of one conversation in the order they were applied, however many
//! requests change it at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::GenesysError;
use super::extract::GJson;
use super::fixtures::HOME_DIVISION_ID;
use super::state::Sim;

/// Callback communication states Genesys knows (`Callback.state`).
pub(crate) const CALLBACK_STATES: &[&str] = &[
    "alerting",
    "dialing",
    "contacting",
    "offering",
    "connected",
    "disconnected",
    "terminated",
    "scheduled",
    "none",
];

/// One participant's callback communication.
#[derive(Debug, Clone)]
struct Leg {
    participant_id: String,
    communication_id: String,
    state: String,
    initial_state: String,
    start: DateTime<Utc>,
    connected: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    disconnect_type: Option<String>,
}

impl Leg {
    fn new(state: &str, now: DateTime<Utc>) -> Self {
        Self {
            participant_id: uuid::Uuid::new_v4().to_string(),
            communication_id: uuid::Uuid::new_v4().to_string(),
            state: state.to_owned(),
            initial_state: state.to_owned(),
            start: now,
            connected: None,
            end: None,
            disconnect_type: None,
        }
    }

    fn set_state(&mut self, state: &str, now: DateTime<Utc>, disconnect_type: &str) {
        self.state = state.to_owned();
        if state == "connected" && self.connected.is_none() {
            self.connected = Some(now);
        }
        if matches!(state, "disconnected" | "terminated") {
            self.end.get_or_insert(now);
            self.disconnect_type
                .get_or_insert_with(|| disconnect_type.to_owned());
        }
    }
}

/// A callback conversation.
#[derive(Debug, Clone)]
pub(crate) struct CallbackConversation {
    id: String,
    queue_id: String,
    queue_name: String,
    external_id: String,
    customer: Leg,
    acd: Leg,
    callback_numbers: Vec<String>,
    callback_user_name: Option<String>,
    scheduled: Option<DateTime<Utc>>,
    script_id: Option<String>,
    data: BTreeMap<String, String>,
    start: DateTime<Utc>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn put_opt(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v);
    }
}

impl CallbackConversation {
    fn topic(&self) -> String {
        format!(
            "v2.routing.queues.{}.conversations.callbacks",
            self.queue_id
        )
    }

    fn ended(&self) -> bool {
        matches!(self.customer.state.as_str(), "disconnected" | "terminated")
    }

    fn set_state(&mut self, state: &str, disconnect_type: &str) {
        let now = Utc::now();
        self.customer.set_state(state, now, disconnect_type);
        self.acd.set_state(state, now, disconnect_type);
    }

    /// The callback communication of a leg (`Callback` of the REST `Participant`).
    fn callback_json(&self, leg: &Leg) -> Value {
        let mut cb = Map::new();
        cb.insert("state".into(), json!(leg.state));
        cb.insert("initialState".into(), json!(leg.initial_state));
        cb.insert("id".into(), json!(leg.communication_id));
        cb.insert(
            "segments".into(),
            json!([{ "startTime": ts(leg.start), "type": "Scheduled" }]),
        );
        cb.insert("direction".into(), json!("outbound"));
        cb.insert("held".into(), json!(false));
        put_opt(
            &mut cb,
            "disconnectType",
            leg.disconnect_type.as_ref().map(|d| json!(d)),
        );
        cb.insert("callbackNumbers".into(), json!(self.callback_numbers));
        put_opt(
            &mut cb,
            "callbackUserName",
            self.callback_user_name.as_ref().map(|n| json!(n)),
        );
        put_opt(
            &mut cb,
            "scriptId",
            self.script_id.as_ref().map(|s| json!(s)),
        );
        cb.insert("externalCampaign".into(), json!(false));
        cb.insert("skipEnabled".into(), json!(true));
        cb.insert("timeoutSeconds".into(), json!(0));
        put_opt(
            &mut cb,
            "connectedTime",
            leg.connected.map(|t| json!(ts(t))),
        );
        put_opt(&mut cb, "disconnectedTime", leg.end.map(|t| json!(ts(t))));
        put_opt(
            &mut cb,
            "callbackScheduledTime",
            self.scheduled.map(|t| json!(ts(t))),
        );
        cb.insert("provider".into(), json!("PureCloud"));
        cb.insert("afterCallWorkRequired".into(), json!(false));
        Value::Object(cb)
    }

    /// Genesys' `Conversation` (`GET /api/v2/conversations/{id}`).
    pub fn to_conversation(&self) -> Value {
        let participant = |leg: &Leg, purpose: &str| {
            let mut p = Map::new();
            p.insert("id".into(), json!(leg.participant_id));
            p.insert("startTime".into(), json!(ts(leg.start)));
            put_opt(&mut p, "endTime", leg.end.map(|t| json!(ts(t))));
            put_opt(&mut p, "connectedTime", leg.connected.map(|t| json!(ts(t))));
            if purpose == "customer" {
                put_opt(
                    &mut p,
                    "name",
                    self.callback_user_name.as_ref().map(|n| json!(n)),
                );
                put_opt(
                    &mut p,
                    "address",
                    self.callback_numbers.first().map(|n| json!(n)),
                );
            } else {
                p.insert("name".into(), json!(self.queue_name));
            }
            p.insert("queueId".into(), json!(self.queue_id));
            p.insert("queueName".into(), json!(self.queue_name));
            p.insert("purpose".into(), json!(purpose));
            p.insert("wrapupRequired".into(), json!(false));
            p.insert(
                "conversationRoutingData".into(),
                json!({ "queue": { "id": self.queue_id, "selfUri": format!("/api/v2/routing/queues/{}", self.queue_id) }, "priority": 0, "skills": [], "scoredAgents": [] }),
            );
            p.insert(
                "attributes".into(),
                if purpose == "customer" {
                    json!(self.data)
                } else {
                    json!({})
                },
            );
            p.insert("calls".into(), json!([]));
            p.insert("callbacks".into(), json!([self.callback_json(leg)]));
            p.insert("chats".into(), json!([]));
            p.insert("emails".into(), json!([]));
            p.insert("messages".into(), json!([]));
            Value::Object(p)
        };
        let mut c = Map::new();
        c.insert("id".into(), json!(self.id));
        c.insert("startTime".into(), json!(ts(self.start)));
        put_opt(&mut c, "endTime", self.customer.end.map(|t| json!(ts(t))));
        c.insert(
            "participants".into(),
            json!([
                participant(&self.customer, "customer"),
                participant(&self.acd, "acd")
            ]),
        );
        c.insert("recordingState".into(), json!("NONE"));
        c.insert(
            "divisions".into(),
            json!([{ "division": { "id": HOME_DIVISION_ID, "selfUri": format!("/api/v2/authorization/divisions/{HOME_DIVISION_ID}") }, "entities": [] }]),
        );
        c.insert(
            "selfUri".into(),
            json!(format!("/api/v2/conversations/{}", self.id)),
        );
        Value::Object(c)
    }

    /// The notification event body (`QueueConversationCallbackEventTopicCallbackConversation`).
    /// Each participant also carries `callbacks: [{state, id, callbackNumbers,
    /// callbackScheduledTime, scheduledTime, ...}]` for consumers that read the REST shape.
    pub fn to_event(&self) -> Value {
        let participant = |leg: &Leg, purpose: &str| {
            let mut p = Map::new();
            p.insert("id".into(), json!(leg.participant_id));
            if purpose == "customer" {
                put_opt(
                    &mut p,
                    "name",
                    self.callback_user_name.as_ref().map(|n| json!(n)),
                );
                put_opt(
                    &mut p,
                    "address",
                    self.callback_numbers.first().map(|n| json!(n)),
                );
            } else {
                p.insert("name".into(), json!(self.queue_name));
            }
            p.insert("startTime".into(), json!(ts(leg.start)));
            put_opt(&mut p, "connectedTime", leg.connected.map(|t| json!(ts(t))));
            put_opt(&mut p, "endTime", leg.end.map(|t| json!(ts(t))));
            p.insert("purpose".into(), json!(purpose));
            p.insert("state".into(), json!(leg.state));
            p.insert("initialState".into(), json!(leg.initial_state));
            p.insert("direction".into(), json!("outbound"));
            put_opt(
                &mut p,
                "disconnectType",
                leg.disconnect_type.as_ref().map(|d| json!(d)),
            );
            p.insert("held".into(), json!(false));
            p.insert("wrapupRequired".into(), json!(false));
            p.insert(
                "queue".into(),
                json!({ "id": self.queue_id, "name": self.queue_name }),
            );
            p.insert(
                "attributes".into(),
                if purpose == "customer" {
                    json!(self.data)
                } else {
                    json!({})
                },
            );
            p.insert("provider".into(), json!("PureCloud"));
            p.insert(
                "conversationRoutingData".into(),
                json!({ "queue": { "id": self.queue_id }, "priority": 0, "skills": [], "scoredAgents": [] }),
            );
            p.insert("callbackNumbers".into(), json!(self.callback_numbers));
            put_opt(
                &mut p,
                "callbackUserName",
                self.callback_user_name.as_ref().map(|n| json!(n)),
            );
            p.insert("skipEnabled".into(), json!(true));
            p.insert("externalCampaign".into(), json!(false));
            p.insert("timeoutSeconds".into(), json!(0));
            put_opt(
                &mut p,
                "callbackScheduledTime",
                self.scheduled.map(|t| json!(ts(t))),
            );
            let mut cb = self.callback_json(leg);
            if let (Some(t), Value::Object(m)) = (self.scheduled, &mut cb) {
                m.insert("scheduledTime".into(), json!(ts(t)));
            }
            p.insert("callbacks".into(), json!([cb]));
            Value::Object(p)
        };
        json!({
            "id": self.id,
            "participants": [participant(&self.customer, "customer"), participant(&self.acd, "acd")],
            "divisions": [{ "division": { "id": HOME_DIVISION_ID }, "entities": [] }],
        })
    }
}

impl CallbackConversation {
    /// Genesys' `CallbackConversation` (`GET /api/v2/conversations/callbacks/{id}`): the
    /// participants as `CallbackMediaParticipant`s.
    pub fn to_callback_conversation(&self) -> Value {
        let mut body = self.to_event();
        if let Some(participants) = body["participants"].as_array_mut() {
            for p in participants.iter_mut().filter_map(Value::as_object_mut) {
                p.remove("callbacks");
                p.remove("initialState");
                p.insert(
                    "queue".into(),
                    json!({ "id": self.queue_id, "name": self.queue_name, "selfUri": format!("/api/v2/routing/queues/{}", self.queue_id) }),
                );
            }
        }
        body["selfUri"] = json!(format!("/api/v2/conversations/callbacks/{}", self.id));
        body
    }
}

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
    let now = Utc::now();
    let state = if scheduled.is_some_and(|t| t > now) {
        "scheduled"
    } else {
        "alerting"
    };
    let conversation = CallbackConversation {
        id: uuid::Uuid::new_v4().to_string(),
        queue_id,
        queue_name,
        external_id: uuid::Uuid::new_v4().to_string(),
        customer: Leg::new(state, now),
        acd: Leg::new(state, now),
        callback_numbers: numbers,
        callback_user_name: cmd.callback_user_name,
        scheduled,
        script_id: cmd.script_id,
        data,
        start: now,
    };
    let answer = json!({
        "conversation": {
            "id": conversation.id,
            "selfUri": format!("/api/v2/conversations/{}", conversation.id),
        },
        "callbackIdentifiers": [
            { "type": "EXTERNAL", "id": conversation.external_id },
            { "type": "ACD", "id": conversation.acd.communication_id },
        ],
    });
    let mut data = sim.data();
    sim.hub
        .publish(&conversation.topic(), &conversation.to_event());
    data.conversations
        .insert(conversation.id.clone(), conversation);
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
    sim.data()
        .conversations
        .get(&id)
        .map(|c| Json(c.to_conversation()))
        .ok_or_else(|| GenesysError::not_found(format!("Conversation {id} not found")))
}

/// `GET /api/v2/conversations/callbacks/{conversationId}`.
pub(crate) async fn get_callback_conversation(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    sim.data()
        .conversations
        .get(&id)
        .map(|c| Json(c.to_callback_conversation()))
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
