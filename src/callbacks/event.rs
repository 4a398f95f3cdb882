//! What a reservation change is called when it is published, and the two envelopes it travels
//! in: the stream frame `{"seq", "type", "reservation"}` and the webhook payload
//! `{"type", "timestamp", "data"}`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::reservation::{Reservation, millis};
use super::status::ReservationStatus;

/// The type of a published reservation change, the same on the stream and to webhook
/// subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReservationEventType {
    /// `callback.reservation.created`: the first published state (version 1), whether the
    /// reservation is then `scheduled` or `failed`.
    #[serde(rename = "callback.reservation.created")]
    Created,
    /// `callback.reservation.updated`: any later change but a cancellation.
    #[serde(rename = "callback.reservation.updated")]
    Updated,
    /// `callback.reservation.canceled`: the reservation became `canceled`.
    #[serde(rename = "callback.reservation.canceled")]
    Canceled,
}

impl ReservationEventType {
    /// Every event type.
    pub const ALL: [Self; 3] = [Self::Created, Self::Updated, Self::Canceled];

    /// The wire name (`callback.reservation.created`...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "callback.reservation.created",
            Self::Updated => "callback.reservation.updated",
            Self::Canceled => "callback.reservation.canceled",
        }
    }

    /// The event a change to `current` publishes, `previous` being the status before it (`None`
    /// for a reservation that did not exist).
    ///
    /// - `None` when `current` is `pending`: pending is never published.
    /// - `Created` when nothing was published before (`previous` is `None` or `pending`).
    /// - `Canceled` when `current` is `canceled`, `Updated` otherwise.
    ///
    /// Call it only for an actual change; it does not judge whether the change is allowed (see
    /// [`ReservationStatus::can_become`]).
    pub fn for_change(
        previous: Option<ReservationStatus>,
        current: ReservationStatus,
    ) -> Option<Self> {
        if !current.is_published() {
            None
        } else if previous.is_none_or(|p| !p.is_published()) {
            Some(Self::Created)
        } else if current == ReservationStatus::Canceled {
            Some(Self::Canceled)
        } else {
            Some(Self::Updated)
        }
    }
}

impl fmt::Display for ReservationEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a reservation event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reservation event type")]
pub struct UnknownEventType;

impl FromStr for ReservationEventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(UnknownEventType)
    }
}

/// One frame of `GET /v1/callbacks/stream`: `{"seq", "type", "reservation"}`. `seq` is the
/// reservation's own `seq` (the change's place in commit order), so a consumer resumes with
/// `?since=<the last seq it handled>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMessage {
    /// The sequence number of the change.
    pub seq: u64,
    /// What kind of change it is.
    #[serde(rename = "type")]
    pub event_type: ReservationEventType,
    /// The reservation after the change.
    pub reservation: Reservation,
}

impl StreamMessage {
    /// The frame for a committed change (its `seq` is taken from the reservation).
    pub fn new(event_type: ReservationEventType, reservation: Reservation) -> Self {
        Self {
            seq: reservation.seq,
            event_type,
            reservation,
        }
    }
}

/// The body delivered to webhook subscribers: `{"type", "timestamp", "data"}`, `timestamp`
/// being when the change happened (RFC 3339 UTC with milliseconds) and `data` the reservation
/// after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// What kind of change it is.
    #[serde(rename = "type")]
    pub event_type: ReservationEventType,
    /// When it happened.
    #[serde(with = "millis")]
    pub timestamp: DateTime<Utc>,
    /// The reservation after the change.
    pub data: Reservation,
}

impl WebhookPayload {
    /// The payload for a committed change; the timestamp is the reservation's `updatedAt`.
    pub fn new(event_type: ReservationEventType, reservation: Reservation) -> Self {
        Self {
            event_type,
            timestamp: reservation.updated_at,
            data: reservation,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use serde_json::json;

    use super::ReservationStatus::{Canceled, Completed, Failed, InProgress, Pending, Scheduled};
    use super::*;
    use crate::callbacks::{CallbackNumber, ReservationId, Slot};

    #[test]
    fn which_change_publishes_what() {
        use ReservationEventType::{Canceled as C, Created, Updated};
        let table = [
            (None, Pending, None),
            (None, Scheduled, Some(Created)),
            (None, Failed, Some(Created)),
            (Some(Pending), Scheduled, Some(Created)),
            (Some(Pending), Failed, Some(Created)),
            (Some(Pending), Canceled, Some(Created)),
            (Some(Scheduled), InProgress, Some(Updated)),
            (Some(InProgress), Completed, Some(Updated)),
            (Some(InProgress), Scheduled, Some(Updated)),
            (Some(Scheduled), Canceled, Some(C)),
            (Some(InProgress), Canceled, Some(C)),
        ];
        for (previous, current, expected) in table {
            assert_eq!(
                ReservationEventType::for_change(previous, current),
                expected,
                "{previous:?} -> {current}"
            );
        }
    }

    #[test]
    fn event_type_names() {
        for t in ReservationEventType::ALL {
            assert_eq!(t.as_str().parse::<ReservationEventType>(), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        assert_eq!(
            ReservationEventType::Canceled.to_string(),
            "callback.reservation.canceled"
        );
        assert!(
            "callback.reservation.*"
                .parse::<ReservationEventType>()
                .is_err()
        );
    }

    fn reservation() -> Reservation {
        let at = |m| Utc.with_ymd_and_hms(2027, 3, 15, 13, m, 0).unwrap();
        Reservation {
            id: ReservationId::parse("01900000-0000-7000-8000-000000000001").unwrap(),
            status: Scheduled,
            version: 1,
            seq: 7,
            queue_id: "q-1".to_owned(),
            callback_number: CallbackNumber::parse("+14155550199").unwrap(),
            callback_user_name: None,
            reason: None,
            slot: Slot::new(at(30), at(45)).unwrap(),
            conversation_id: None,
            callback_identifiers: Vec::new(),
            channel_preferences: None,
            data: BTreeMap::new(),
            created_at: at(0),
            updated_at: at(5),
        }
    }

    #[test]
    fn stream_frame_shape() {
        let frame = StreamMessage::new(ReservationEventType::Created, reservation());
        let wire = serde_json::to_value(&frame).unwrap();
        assert_eq!(wire["seq"], json!(7));
        assert_eq!(wire["type"], json!("callback.reservation.created"));
        assert_eq!(
            wire["reservation"]["id"],
            json!(reservation().id.to_string())
        );
        assert_eq!(wire.as_object().unwrap().len(), 3);
        assert_eq!(
            serde_json::from_value::<StreamMessage>(wire).unwrap(),
            frame
        );
    }

    #[test]
    fn the_delivered_message_is_the_webhook_payload() {
        let reservation = reservation();
        let message = crate::delivery::webhooks::webhook_message(
            ReservationEventType::Canceled.as_str(),
            &reservation,
            reservation.updated_at,
        )
        .unwrap();
        assert_eq!(message.event_type, "callback.reservation.canceled");
        assert_eq!(
            serde_json::from_slice::<WebhookPayload>(&message.body).unwrap(),
            WebhookPayload::new(ReservationEventType::Canceled, reservation)
        );
    }

    #[test]
    fn webhook_payload_shape() {
        let payload = WebhookPayload::new(ReservationEventType::Updated, reservation());
        let wire = serde_json::to_value(&payload).unwrap();
        assert_eq!(wire["type"], json!("callback.reservation.updated"));
        assert_eq!(wire["timestamp"], json!("2027-03-15T13:05:00.000Z"));
        assert_eq!(wire["data"]["queueId"], json!("q-1"));
        assert_eq!(wire.as_object().unwrap().len(), 3);
        assert_eq!(
            serde_json::from_value::<WebhookPayload>(wire).unwrap(),
            payload
        );
    }
}
