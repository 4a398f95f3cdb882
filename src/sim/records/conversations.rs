//! Callback conversations and the shapes Genesys shows them in: the REST `Conversation`, the
//! `CallbackConversation` and the notification event
//! (`QueueConversationCallbackEventTopicCallbackConversation`).
//!
//! A callback conversation has a `customer` participant (whose callback communication carries
//! the callback numbers, the scheduled time and the state that changes) and an `acd` participant
//! on the queue, mirroring the customer's state.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::sim::fixtures::HOME_DIVISION_ID;

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

/// A callback to create: a `CreateCallbackCommand` once checked.
#[derive(Debug)]
pub(crate) struct NewCallback {
    /// The queue's id.
    pub queue_id: String,
    /// The queue's name.
    pub queue_name: String,
    /// The numbers to call back, at least one.
    pub callback_numbers: Vec<String>,
    /// The customer's name.
    pub callback_user_name: Option<String>,
    /// When to call back; `None` is as soon as possible.
    pub scheduled: Option<DateTime<Utc>>,
    /// The script to show the agent.
    pub script_id: Option<String>,
    /// The customer participant's attributes.
    pub data: BTreeMap<String, String>,
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
    /// A new conversation for `callback`: `scheduled` when its time is still to come, else
    /// `alerting`.
    pub fn new(callback: NewCallback) -> Self {
        let now = Utc::now();
        let state = if callback.scheduled.is_some_and(|t| t > now) {
            "scheduled"
        } else {
            "alerting"
        };
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            queue_id: callback.queue_id,
            queue_name: callback.queue_name,
            external_id: uuid::Uuid::new_v4().to_string(),
            customer: Leg::new(state, now),
            acd: Leg::new(state, now),
            callback_numbers: callback.callback_numbers,
            callback_user_name: callback.callback_user_name,
            scheduled: callback.scheduled,
            script_id: callback.script_id,
            data: callback.data,
            start: now,
        }
    }

    /// The conversation's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The topic its events are published on.
    pub fn topic(&self) -> String {
        format!(
            "v2.routing.queues.{}.conversations.callbacks",
            self.queue_id
        )
    }

    /// Whether the customer's callback is over.
    pub fn ended(&self) -> bool {
        matches!(self.customer.state.as_str(), "disconnected" | "terminated")
    }

    /// Moves both participants to `state`; `disconnect_type` is kept when it ends them.
    pub fn set_state(&mut self, state: &str, disconnect_type: &str) {
        let now = Utc::now();
        self.customer.set_state(state, now, disconnect_type);
        self.acd.set_state(state, now, disconnect_type);
    }

    /// Genesys' `CreateCallbackResponse`.
    pub fn created(&self) -> Value {
        json!({
            "conversation": {
                "id": self.id,
                "selfUri": format!("/api/v2/conversations/{}", self.id),
            },
            "callbackIdentifiers": [
                { "type": "EXTERNAL", "id": self.external_id },
                { "type": "ACD", "id": self.acd.communication_id },
            ],
        })
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

    /// The members every shape of a participant has: id, name (the customer's name or the
    /// queue's), address (the customer's first number), times, purpose, `wrapupRequired`,
    /// routing data and attributes (the customer's data).
    fn participant_base(&self, leg: &Leg, purpose: &str, queue: Value) -> Map<String, Value> {
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
        p.insert("wrapupRequired".into(), json!(false));
        p.insert(
            "conversationRoutingData".into(),
            json!({ "queue": queue, "priority": 0, "skills": [], "scoredAgents": [] }),
        );
        p.insert(
            "attributes".into(),
            if purpose == "customer" {
                json!(self.data)
            } else {
                json!({})
            },
        );
        p
    }

    /// Genesys' `Conversation` (`GET /api/v2/conversations/{id}`).
    pub fn to_conversation(&self) -> Value {
        let participant = |leg: &Leg, purpose: &str| {
            let queue = json!({ "id": self.queue_id, "selfUri": format!("/api/v2/routing/queues/{}", self.queue_id) });
            let mut p = self.participant_base(leg, purpose, queue);
            p.insert("queueId".into(), json!(self.queue_id));
            p.insert("queueName".into(), json!(self.queue_name));
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
            let mut p = self.participant_base(leg, purpose, json!({ "id": self.queue_id }));
            p.insert("state".into(), json!(leg.state));
            p.insert("initialState".into(), json!(leg.initial_state));
            p.insert("direction".into(), json!("outbound"));
            put_opt(
                &mut p,
                "disconnectType",
                leg.disconnect_type.as_ref().map(|d| json!(d)),
            );
            p.insert("held".into(), json!(false));
            p.insert(
                "queue".into(),
                json!({ "id": self.queue_id, "name": self.queue_name }),
            );
            p.insert("provider".into(), json!("PureCloud"));
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
