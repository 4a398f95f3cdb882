//! The reservation as the API answers it, stores it and streams it, with its id and its slot.
//!
//! Every instant is written as RFC 3339 in UTC with milliseconds (`2027-03-15T13:00:00.000Z`);
//! any RFC 3339 offset is accepted when one is read back.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::event::ReservationEventType;
use super::number::CallbackNumber;
use super::status::{ReservationStatus, TransitionRefused};
use super::validate::ValidReservationRequest;
use crate::genesys::models::CallbackIdentifier;

/// The id of a reservation: a UUID (version 7 for new ones, so ids sort by creation time),
/// written in lowercase hyphenated form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationId(uuid::Uuid);

/// A text that is not a reservation id (answer it as 404: no reservation can have that id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a reservation id (a UUID)")]
pub struct InvalidReservationId;

impl ReservationId {
    /// A new id (UUID v7).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Parses an id, e.g. from a URL path.
    ///
    /// # Errors
    /// [`InvalidReservationId`] when the text is not a UUID.
    pub fn parse(text: &str) -> Result<Self, InvalidReservationId> {
        uuid::Uuid::try_parse(text)
            .map(Self)
            .map_err(|_| InvalidReservationId)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReservationId({})", self.0.hyphenated())
    }
}

impl std::str::FromStr for ReservationId {
    type Err = InvalidReservationId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A half-open interval of time `[start, end)` with `start < end`; two slots overlap when they
/// share an instant (`[10:00, 11:00)` and `[11:00, 12:00)` do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// A slot whose end is not after its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a slot must end after it starts")]
pub struct EmptySlot;

impl Slot {
    /// The slot `[start, end)`.
    ///
    /// # Errors
    /// [`EmptySlot`] unless `start < end`.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, EmptySlot> {
        if start < end {
            Ok(Self { start, end })
        } else {
            Err(EmptySlot)
        }
    }

    /// The first instant of the slot.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The first instant after the slot.
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// The real time elapsed from start to end.
    pub fn duration(&self) -> TimeDelta {
        self.end - self.start
    }

    /// Whether the two slots share an instant.
    pub fn overlaps(&self, other: &Slot) -> bool {
        self.start < other.end && other.start < self.end
    }
}

impl Serialize for Slot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SlotWire {
            start: self.start,
            end: self.end,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = SlotWire::deserialize(deserializer)?;
        Slot::new(wire.start, wire.end).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotWire {
    #[serde(with = "millis")]
    start: DateTime<Utc>,
    #[serde(with = "millis")]
    end: DateTime<Utc>,
}

/// A channel Genesys may reach the customer on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// A phone call.
    Voice,
    /// A text message.
    Sms,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Self; 2] = [Self::Voice, Self::Sms];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Voice => "voice",
            Self::Sms => "sms",
        }
    }
}

/// How the customer wants to be reached, as the caller gave it (`channelPreferences`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelPreferences {
    /// The channel to use first (`voice` when the caller did not say).
    pub primary: Channel,
    /// The channel to use when the first fails; never the same as `primary`.
    pub fallback: Option<Channel>,
    /// Whether text messages are allowed; when `false`, neither channel is `sms`.
    pub allow_sms: Option<bool>,
}

/// A callback reservation, as answered by `POST /v1/callbacks`, `GET /v1/callbacks/{id}`, the
/// stream and the webhooks:
///
/// ```json
/// {"id": "0190...", "status": "scheduled", "version": 1, "seq": 42, "queueId": "...",
///  "callbackNumber": "+14155550199", "callbackUserName": "Jane", "reason": null,
///  "slot": {"start": "2027-03-15T13:00:00.000Z", "end": "2027-03-15T13:30:00.000Z"},
///  "conversationId": "...", "callbackIdentifiers": [{"type": "EXTERNAL", "id": "..."}],
///  "channelPreferences": null, "data": {"k": "v"},
///  "createdAt": "2027-03-01T10:00:00.000Z", "updatedAt": "2027-03-01T10:00:00.000Z"}
/// ```
///
/// Absent optional values are written as `null` (`data` as `{}`, `callbackIdentifiers` as `[]`)
/// so the shape never changes. `version` is 0 and `seq` 0 while the reservation is `pending`
/// (never shown to anyone); the first published state has `version` 1, and every later change
/// adds 1. `seq` is the global, strictly increasing sequence number the store gives each
/// committed change (gaps allowed).
///
/// `Debug` leaves out the customer's data (name, reason, `data` values) and masks the number,
/// so a logged reservation does not carry them.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The reservation's id.
    pub id: ReservationId,
    /// Where it is in its life cycle.
    pub status: ReservationStatus,
    /// 1 for the first published state, +1 per change; 0 while `pending`.
    pub version: u32,
    /// The sequence number of the change that produced this state; 0 while `pending`.
    pub seq: u64,
    /// The Genesys queue the callback is routed to.
    pub queue_id: String,
    /// The normalised E.164 number to call.
    pub callback_number: CallbackNumber,
    /// The customer's name, when given.
    pub callback_user_name: Option<String>,
    /// Why the customer wants a callback, when given.
    pub reason: Option<String>,
    /// The slot taken (the first of the request's slots that had a free place).
    pub slot: Slot,
    /// The Genesys conversation of the callback, once Genesys created it.
    pub conversation_id: Option<String>,
    /// The Genesys callback identifiers, once Genesys created the callback.
    pub callback_identifiers: Vec<CallbackIdentifier>,
    /// The caller's channel preferences, when given.
    pub channel_preferences: Option<ChannelPreferences>,
    /// The caller's custom attributes (the gateway adds `gatewayReservationId` only on the way to
    /// Genesys, not here).
    pub data: BTreeMap<String, String>,
    /// When the reservation was made.
    #[serde(with = "millis")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(with = "millis")]
    pub updated_at: DateTime<Utc>,
}

impl Reservation {
    /// The reservation a valid request makes once the capacity step took `slot` for it:
    /// `pending`, version 0, seq 0, no Genesys ids yet. `slot` should be one of
    /// [`ValidReservationRequest::slots`].
    pub fn pending(
        id: ReservationId,
        request: &ValidReservationRequest,
        slot: Slot,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            status: ReservationStatus::Pending,
            version: 0,
            seq: 0,
            queue_id: request.queue_id().to_owned(),
            callback_number: request.callback_number().clone(),
            callback_user_name: request.callback_user_name().map(str::to_owned),
            reason: request.reason().map(str::to_owned),
            slot,
            conversation_id: None,
            callback_identifiers: Vec::new(),
            channel_preferences: request.channel_preferences().copied(),
            data: request.data().clone(),
            created_at: now,
            updated_at: now,
        }
    }

    /// Moves the reservation to `next` (set any other changed field, such as the Genesys ids,
    /// before calling this): on a change, `updated_at` becomes `now`, `version` goes up by one
    /// and the event to publish is returned (see [`ReservationEventType::for_change`]); `seq` is
    /// left to the store, which numbers the change when it commits it.
    ///
    /// `Ok(None)` when the reservation already is in `next` (nothing changes).
    ///
    /// # Errors
    /// [`TransitionRefused`] when the life cycle does not allow the change; the reservation is
    /// left as it was.
    pub fn change_status(
        &mut self,
        next: ReservationStatus,
        now: DateTime<Utc>,
    ) -> Result<Option<ReservationEventType>, TransitionRefused> {
        let previous = self.status;
        if previous.transition(next)?.is_none() {
            return Ok(None);
        }
        self.status = next;
        self.version += 1;
        self.updated_at = now;
        Ok(ReservationEventType::for_change(Some(previous), next))
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("version", &self.version)
            .field("seq", &self.seq)
            .field("queue_id", &self.queue_id)
            .field("callback_number", &self.callback_number)
            .field("slot", &self.slot)
            .field("conversation_id", &self.conversation_id)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

/// RFC 3339 in UTC with milliseconds, as every instant of this capability is written.
pub(super) mod millis {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `2027-03-15T13:00:00.000Z`.
    pub(in crate::callbacks) fn format(at: &DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub(in crate::callbacks) fn serialize<S: Serializer>(
        at: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(at))
    }

    pub(in crate::callbacks) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 3, 15, h, m, 0).unwrap()
    }

    #[test]
    fn reservation_ids_parse_and_print_canonically() {
        let id = ReservationId::new();
        assert_eq!(ReservationId::parse(&id.to_string()), Ok(id));
        let upper = id.to_string().to_uppercase();
        assert_eq!(ReservationId::parse(&upper), Ok(id));
        assert_eq!(ReservationId::parse("nope"), Err(InvalidReservationId));
        assert_eq!(ReservationId::parse(""), Err(InvalidReservationId));
        assert_eq!(id.as_uuid().get_version_num(), 7);
        assert_eq!(
            serde_json::to_value(id).unwrap(),
            json!(id.to_string()),
            "transparent on the wire"
        );
    }

    #[test]
    fn slots_are_half_open() {
        let a = Slot::new(at(10, 0), at(11, 0)).unwrap();
        let b = Slot::new(at(11, 0), at(12, 0)).unwrap();
        let c = Slot::new(at(10, 59), at(11, 1)).unwrap();
        assert!(!a.overlaps(&b) && !b.overlaps(&a));
        assert!(a.overlaps(&c) && c.overlaps(&b));
        assert!(a.overlaps(&a));
        assert_eq!(a.duration(), TimeDelta::hours(1));
        assert_eq!(Slot::new(at(10, 0), at(10, 0)), Err(EmptySlot));
        assert_eq!(Slot::new(at(11, 0), at(10, 0)), Err(EmptySlot));
    }

    #[test]
    fn slots_are_written_in_utc_with_milliseconds() {
        let slot = Slot::new(at(13, 0), at(13, 30)).unwrap();
        let wire = serde_json::to_value(slot).unwrap();
        assert_eq!(
            wire,
            json!({"start": "2027-03-15T13:00:00.000Z", "end": "2027-03-15T13:30:00.000Z"})
        );
        let back: Slot = serde_json::from_value(
            json!({"start": "2027-03-15T09:00:00-04:00", "end": "2027-03-15T13:30:00Z"}),
        )
        .unwrap();
        assert_eq!(back, slot);
        assert!(
            serde_json::from_value::<Slot>(
                json!({"start": "2027-03-15T13:30:00Z", "end": "2027-03-15T13:00:00Z"})
            )
            .is_err()
        );
    }

    fn reservation() -> Reservation {
        Reservation {
            id: ReservationId::parse("01900000-0000-7000-8000-000000000001").unwrap(),
            status: ReservationStatus::Scheduled,
            version: 1,
            seq: 42,
            queue_id: "q-1".to_owned(),
            callback_number: CallbackNumber::parse("+14155550199").unwrap(),
            callback_user_name: Some("Jane".to_owned()),
            reason: None,
            slot: Slot::new(at(13, 0), at(13, 30)).unwrap(),
            conversation_id: Some("conv-1".to_owned()),
            callback_identifiers: vec![CallbackIdentifier {
                kind: "EXTERNAL".to_owned(),
                id: "cb-1".to_owned(),
            }],
            channel_preferences: Some(ChannelPreferences {
                primary: Channel::Voice,
                fallback: Some(Channel::Sms),
                allow_sms: Some(true),
            }),
            data: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            created_at: at(10, 0),
            updated_at: at(10, 0),
        }
    }

    #[test]
    fn the_reservation_shape() {
        let r = reservation();
        let wire = serde_json::to_value(&r).unwrap();
        assert_eq!(
            wire,
            json!({
                "id": "01900000-0000-7000-8000-000000000001",
                "status": "scheduled",
                "version": 1,
                "seq": 42,
                "queueId": "q-1",
                "callbackNumber": "+14155550199",
                "callbackUserName": "Jane",
                "reason": null,
                "slot": {"start": "2027-03-15T13:00:00.000Z", "end": "2027-03-15T13:30:00.000Z"},
                "conversationId": "conv-1",
                "callbackIdentifiers": [{"type": "EXTERNAL", "id": "cb-1"}],
                "channelPreferences": {"primary": "voice", "fallback": "sms", "allowSms": true},
                "data": {"k": "v"},
                "createdAt": "2027-03-15T10:00:00.000Z",
                "updatedAt": "2027-03-15T10:00:00.000Z"
            })
        );
        let back: Reservation = serde_json::from_value(wire).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn debug_leaves_out_the_customer_data() {
        let mut r = reservation();
        r.reason = Some("my secret reason".to_owned());
        let shown = format!("{r:?}");
        assert!(
            shown.contains("Scheduled") && shown.contains("q-1"),
            "{shown}"
        );
        for hidden in ["Jane", "my secret reason", "\"v\"", "4155550199"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
    }

    #[test]
    fn status_changes_bump_the_version_and_name_the_event() {
        let mut r = reservation();
        assert_eq!(
            r.change_status(ReservationStatus::InProgress, at(13, 0)),
            Ok(Some(ReservationEventType::Updated))
        );
        assert_eq!((r.version, r.updated_at), (2, at(13, 0)));
        assert_eq!(
            r.change_status(ReservationStatus::InProgress, at(13, 1)),
            Ok(None)
        );
        assert_eq!((r.version, r.updated_at), (2, at(13, 0)), "no change");
        assert_eq!(
            r.change_status(ReservationStatus::Canceled, at(13, 2)),
            Ok(Some(ReservationEventType::Canceled))
        );
        assert_eq!(r.version, 3);
        let before = r.clone();
        assert!(
            r.change_status(ReservationStatus::Scheduled, at(13, 3))
                .is_err()
        );
        assert_eq!(r, before, "a refused change leaves it as it was");
    }

    #[test]
    fn leaving_pending_is_version_one_and_created() {
        let mut r = reservation();
        r.status = ReservationStatus::Pending;
        r.version = 0;
        assert_eq!(
            r.change_status(ReservationStatus::Failed, at(10, 1)),
            Ok(Some(ReservationEventType::Created))
        );
        assert_eq!(r.version, 1);
    }
}
