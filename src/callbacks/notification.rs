//! What Genesys says about a callback, read from the two shapes it says it in: a notification on
//! `v2.routing.queues.{queueId}.conversations.callbacks` (the WebSocket and
//! `POST /v1/genesys/events`), and a conversation read back with
//! `GET /api/v2/conversations/{id}` (reconciliation).
//!
//! Both come down to a [`CallbackUpdate`]: the conversation, the reservation id the gateway put
//! in the callback's `data` (`gatewayReservationId`, seen as the customer participant's
//! attributes), the customer's callback state and whether the customer was ever connected.

use serde_json::Value;

use super::reservation::ReservationId;
use super::status::ConnectionHistory;
use super::validate::RESERVED_DATA_KEY;
use crate::genesys::NotificationEvent;
use crate::genesys::models::Conversation;

/// The state of one callback as Genesys reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUpdate {
    /// The Genesys conversation.
    pub conversation_id: String,
    /// The reservation the gateway created it for, when the attributes say so.
    pub reservation_id: Option<ReservationId>,
    /// The customer participant's callback state (`scheduled`, `connected`, ...).
    pub state: String,
    /// Whether the customer was ever connected.
    pub history: ConnectionHistory,
}

/// Whether `topic` is a queue's callback topic (`v2.routing.queues.{id}.conversations.callbacks`).
pub fn is_callback_topic(topic: &str) -> bool {
    topic
        .strip_prefix("v2.routing.queues.")
        .and_then(|rest| rest.strip_suffix(".conversations.callbacks"))
        .is_some_and(|queue| !queue.is_empty() && !queue.contains('.'))
}

/// The topic of `queue_id`'s callback changes.
pub fn callback_topic(queue_id: &str) -> String {
    format!("v2.routing.queues.{queue_id}.conversations.callbacks")
}

impl CallbackUpdate {
    /// Reads a notification; `None` when it is not a callback event the gateway can use (another
    /// topic, no conversation id, no customer participant with a state).
    pub fn from_notification(event: &NotificationEvent) -> Option<Self> {
        if !is_callback_topic(&event.topic_name) {
            return None;
        }
        let body = &event.event_body;
        let conversation_id = body.get("id")?.as_str()?.to_owned();
        let customer = body
            .get("participants")?
            .as_array()?
            .iter()
            .find(|p| p.get("purpose").and_then(Value::as_str) == Some("customer"))?;
        let callback = customer
            .get("callbacks")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        let text = |v: Option<&Value>, key: &str| {
            v.and_then(|v| v.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let state = text(Some(customer), "state").or_else(|| text(callback, "state"))?;
        let connected = text(Some(customer), "connectedTime").is_some()
            || text(callback, "connectedTime").is_some();
        let reservation_id = customer
            .get("attributes")
            .and_then(|a| a.get(RESERVED_DATA_KEY))
            .and_then(Value::as_str)
            .and_then(|id| ReservationId::parse(id).ok());
        Some(Self::new(conversation_id, reservation_id, state, connected))
    }

    /// Reads a conversation read back from Genesys; `None` without a customer participant
    /// holding a callback with a state.
    pub fn from_conversation(conversation: &Conversation) -> Option<Self> {
        let customer = conversation
            .participants
            .iter()
            .find(|p| p.purpose.as_deref() == Some("customer"))?;
        let callback = customer.callbacks.first()?;
        let state = callback.state.clone().filter(|s| !s.is_empty())?;
        let connected = customer.connected_time.is_some() || callback.connected_time.is_some();
        let reservation_id = customer
            .attributes
            .get(RESERVED_DATA_KEY)
            .and_then(|id| ReservationId::parse(id).ok());
        Some(Self::new(
            conversation.id.clone(),
            reservation_id,
            state,
            connected,
        ))
    }

    fn new(
        conversation_id: String,
        reservation_id: Option<ReservationId>,
        state: String,
        connected: bool,
    ) -> Self {
        let history = if connected || state.eq_ignore_ascii_case("connected") {
            ConnectionHistory::EverConnected
        } else {
            ConnectionHistory::NeverConnected
        };
        Self {
            conversation_id,
            reservation_id,
            state,
            history,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(topic: &str, body: Value) -> NotificationEvent {
        NotificationEvent {
            topic_name: topic.to_owned(),
            version: Some("2".to_owned()),
            event_body: body,
            metadata: json!({}),
        }
    }

    const TOPIC: &str = "v2.routing.queues.q-1.conversations.callbacks";

    #[test]
    fn topics() {
        assert!(is_callback_topic(TOPIC));
        assert_eq!(callback_topic("q-1"), TOPIC);
        for other in [
            "v2.routing.queues..conversations.callbacks",
            "v2.routing.queues.q.conversations.calls",
            "channel.metadata",
            "v2.routing.queues.a.b.conversations.callbacks",
        ] {
            assert!(!is_callback_topic(other), "{other}");
        }
    }

    #[test]
    fn a_notification_names_the_conversation_the_reservation_and_the_state() {
        let id = ReservationId::new();
        let body = json!({
            "id": "conv-1",
            "participants": [
                {"purpose": "acd", "state": "connected"},
                {"purpose": "customer", "state": "dialing",
                 "attributes": {"gatewayReservationId": id.to_string(), "k": "v"},
                 "callbacks": [{"state": "dialing"}]}
            ]
        });
        let update = CallbackUpdate::from_notification(&event(TOPIC, body)).unwrap();
        assert_eq!(update.conversation_id, "conv-1");
        assert_eq!(update.reservation_id, Some(id));
        assert_eq!(update.state, "dialing");
        assert_eq!(update.history, ConnectionHistory::NeverConnected);
    }

    #[test]
    fn a_connected_time_means_ever_connected() {
        let body = json!({
            "id": "conv-1",
            "participants": [{"purpose": "customer",
                "callbacks": [{"state": "disconnected", "connectedTime": "2027-01-01T00:00:00Z"}]}]
        });
        let update = CallbackUpdate::from_notification(&event(TOPIC, body)).unwrap();
        assert_eq!(update.state, "disconnected");
        assert_eq!(update.history, ConnectionHistory::EverConnected);
        assert_eq!(update.reservation_id, None);
    }

    #[test]
    fn unusable_notifications_are_none() {
        let good =
            json!({"id": "c", "participants": [{"purpose": "customer", "state": "scheduled"}]});
        assert!(CallbackUpdate::from_notification(&event("v2.users.x.presence", good)).is_none());
        for body in [
            json!({}),
            json!({"id": "c"}),
            json!({"id": "c", "participants": [{"purpose": "agent", "state": "connected"}]}),
            json!({"id": "c", "participants": [{"purpose": "customer"}]}),
            json!({"id": 7, "participants": [{"purpose": "customer", "state": "scheduled"}]}),
        ] {
            assert!(
                CallbackUpdate::from_notification(&event(TOPIC, body.clone())).is_none(),
                "{body}"
            );
        }
    }

    #[test]
    fn a_conversation_read_back() {
        let id = ReservationId::new();
        let conversation: Conversation = serde_json::from_value(json!({
            "id": "conv-9",
            "participants": [
                {"id": "p0", "purpose": "acd", "callbacks": [{"id": "x", "state": "connected"}]},
                {"id": "p1", "purpose": "customer", "connectedTime": "2027-01-01T00:00:00Z",
                 "attributes": {"gatewayReservationId": id.to_string()},
                 "callbacks": [{"id": "cb", "state": "disconnected"}]}
            ]
        }))
        .unwrap();
        let update = CallbackUpdate::from_conversation(&conversation).unwrap();
        assert_eq!(update.conversation_id, "conv-9");
        assert_eq!(update.reservation_id, Some(id));
        assert_eq!(update.state, "disconnected");
        assert_eq!(update.history, ConnectionHistory::EverConnected);
    }
}
