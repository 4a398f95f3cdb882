//! The body of `POST /v1/callbacks` and its shape: which fields exist, which are required, what
//! JSON type each has. The rules about values (number format, slot times, bounds) are in
//! [`super::validate`].
//!
//! Shape rules:
//! - The body is a JSON object; a key repeated anywhere in it is refused (400 `bad.request`).
//! - Required: `callbackNumber` (string), `queueId` (string), `timeSlots` (array of
//!   `{"start", "end"}` objects, both RFC 3339 date-times with an offset).
//! - Optional: `callbackUserName`, `reason` (strings), `channelPreferences` (object of optional
//!   `primary` and `fallback` — `voice` or `sms` — and `allowSms`, a boolean; `primary` defaults
//!   to `voice`), `concurrencyLimit` (integer), `data` (object of string values). `null` is the
//!   same as leaving an optional field out.
//! - Any other field, at any level, is refused and named (`/callbackNumbr`,
//!   `/timeSlots/0/begin`): a misspelt optional field is never silently ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::error::CallbacksError;
use super::reservation::{Channel, ChannelPreferences};
use super::validate::{Details, code};
use crate::error::escape_pointer;

/// The fields of the body, in the order problems are reported.
pub const FIELDS: [&str; 8] = [
    "callbackNumber",
    "callbackUserName",
    "queueId",
    "reason",
    "timeSlots",
    "channelPreferences",
    "concurrencyLimit",
    "data",
];

/// A reservation request as the caller sent it, of the right shape but not yet checked against
/// the rules and the queue's calendar (see [`CallbackQueues::validate`](super::CallbackQueues::validate)).
///
/// Serializes to the body the endpoint takes, so clients and tests can build one. `Debug` leaves
/// out the customer's data (number, name, reason, `data` values).
#[derive(Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationRequest {
    /// The number to call, as written (separators are stripped when it is validated).
    pub callback_number: String,
    /// The customer's name.
    pub callback_user_name: Option<String>,
    /// The Genesys queue id.
    pub queue_id: String,
    /// Why the customer wants a callback.
    pub reason: Option<String>,
    /// Acceptable slots, in order of preference.
    pub time_slots: Vec<SlotRequest>,
    /// How the customer wants to be reached.
    pub channel_preferences: Option<ChannelPreferences>,
    /// At most this many reservations overlapping the slot (including this one).
    pub concurrency_limit: Option<i64>,
    /// Custom attributes passed to Genesys (absent is the same as empty).
    pub data: BTreeMap<String, String>,
}

impl std::fmt::Debug for ReservationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReservationRequest")
            .field("queue_id", &self.queue_id)
            .field("time_slots", &self.time_slots)
            .field("channel_preferences", &self.channel_preferences)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One acceptable slot as requested: `{"start", "end"}`, RFC 3339 with an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlotRequest {
    /// First instant.
    pub start: DateTime<FixedOffset>,
    /// First instant after the slot.
    pub end: DateTime<FixedOffset>,
}

impl ReservationRequest {
    /// Parses a body: JSON syntax and repeated keys first, then the shape.
    ///
    /// # Errors
    /// [`CallbacksError::MalformedJson`] or [`CallbacksError::DuplicateKey`] (400 `bad.request`),
    /// or [`CallbacksError::Invalid`] (400 `invalid.input`) with every shape problem.
    pub fn from_json(body: &[u8]) -> Result<Self, CallbacksError> {
        Self::from_value(parse_strict(body)?).map_err(CallbacksError::invalid)
    }

    /// Reads the shape from a parsed body.
    ///
    /// # Errors
    /// Every shape problem, each at its JSON pointer.
    pub fn from_value(body: Value) -> Result<Self, Vec<crate::error::ErrorDetail>> {
        let mut details = Details::default();
        let draft = Draft::read(body, &mut details);
        match draft.into_request() {
            Some(request) if details.is_empty() => Ok(request),
            _ => Err(details.into_vec()),
        }
    }
}

/// Parses JSON, refusing a key repeated in any object (the gateway's rule on every surface: no
/// last-one-wins).
///
/// # Errors
/// [`CallbacksError::DuplicateKey`] or [`CallbacksError::MalformedJson`].
pub(super) fn parse_strict(body: &[u8]) -> Result<Value, CallbacksError> {
    match serde_json::from_slice::<Strict>(body) {
        Ok(Strict(value)) => Ok(value),
        Err(err) if err.is_data() => Err(CallbacksError::DuplicateKey(
            err.to_string()
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_owned(),
        )),
        Err(_) => Err(CallbacksError::MalformedJson),
    }
}

/// A JSON value that refuses repeated object keys while it is parsed.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key `{key}` appears twice in one object"
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The body read field by field: what has the right type is kept, what does not is a problem
/// (and `None` here, so the rules skip it).
#[derive(Debug, Default)]
pub(super) struct Draft {
    pub(super) callback_number: Option<String>,
    pub(super) callback_user_name: Option<String>,
    pub(super) queue_id: Option<String>,
    pub(super) reason: Option<String>,
    /// Each slot, `None` where it has the wrong shape.
    pub(super) time_slots: Option<Vec<Option<SlotRequest>>>,
    pub(super) channel_preferences: Option<ChannelPreferences>,
    pub(super) concurrency_limit: Option<i64>,
    /// How many keys `data` has, string-valued or not.
    pub(super) data_count: usize,
    /// The string-valued entries of `data`.
    pub(super) data: Option<BTreeMap<String, String>>,
}

impl Draft {
    /// Reads every field, recording each shape problem.
    pub(super) fn read(body: Value, details: &mut Details) -> Self {
        let mut draft = Self::default();
        let Value::Object(mut object) = body else {
            details.push("", code::TYPE, "the body must be a JSON object");
            return draft;
        };
        let mut take = |name: &str| match object.remove(name) {
            None | Some(Value::Null) => None,
            Some(value) => Some(value),
        };
        match take("callbackNumber") {
            Some(v) => draft.callback_number = string(v, "/callbackNumber", details),
            None => details.required("/callbackNumber"),
        }
        if let Some(v) = take("callbackUserName") {
            draft.callback_user_name = string(v, "/callbackUserName", details);
        }
        match take("queueId") {
            Some(v) => draft.queue_id = string(v, "/queueId", details),
            None => details.required("/queueId"),
        }
        if let Some(v) = take("reason") {
            draft.reason = string(v, "/reason", details);
        }
        match take("timeSlots") {
            Some(Value::Array(items)) => {
                let slots = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| slot(item, i, details))
                    .collect();
                draft.time_slots = Some(slots);
            }
            Some(_) => details.push("/timeSlots", code::TYPE, "must be an array of slots"),
            None => details.required("/timeSlots"),
        }
        if let Some(v) = take("channelPreferences") {
            draft.channel_preferences = preferences(v, details);
        }
        if let Some(v) = take("concurrencyLimit") {
            draft.concurrency_limit = integer(&v);
            if draft.concurrency_limit.is_none() {
                details.push("/concurrencyLimit", code::TYPE, "must be an integer");
            }
        }
        if let Some(v) = take("data") {
            match v {
                Value::Object(entries) => {
                    draft.data_count = entries.len();
                    let mut data = BTreeMap::new();
                    for (key, value) in entries {
                        let at = format!("/data/{}", escape_pointer(&key));
                        if let Some(value) = string(value, &at, details) {
                            data.insert(key, value);
                        }
                    }
                    draft.data = Some(data);
                }
                _ => details.push("/data", code::TYPE, "must be an object of string values"),
            }
        }
        unknown_fields(object.keys(), "", &FIELDS, details);
        draft
    }

    /// The typed request, when every required field is there with the right shape.
    fn into_request(self) -> Option<ReservationRequest> {
        Some(ReservationRequest {
            callback_number: self.callback_number?,
            callback_user_name: self.callback_user_name,
            queue_id: self.queue_id?,
            reason: self.reason,
            time_slots: self.time_slots?.into_iter().collect::<Option<_>>()?,
            channel_preferences: self.channel_preferences,
            concurrency_limit: self.concurrency_limit,
            data: self.data.unwrap_or_default(),
        })
    }
}

impl From<&ReservationRequest> for Draft {
    fn from(request: &ReservationRequest) -> Self {
        Self {
            callback_number: Some(request.callback_number.clone()),
            callback_user_name: request.callback_user_name.clone(),
            queue_id: Some(request.queue_id.clone()),
            reason: request.reason.clone(),
            time_slots: Some(request.time_slots.iter().copied().map(Some).collect()),
            channel_preferences: request.channel_preferences,
            concurrency_limit: request.concurrency_limit,
            data_count: request.data.len(),
            data: Some(request.data.clone()),
        }
    }
}

fn string(value: Value, at: &str, details: &mut Details) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        _ => {
            details.push(at, code::TYPE, "must be a string");
            None
        }
    }
}

/// An integer, also when written with a zero fraction (`10.0`); out-of-range values saturate
/// (the range rule then refuses them).
fn integer(value: &Value) -> Option<i64> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(i) = n.as_i64() {
        Some(i)
    } else if n.as_u64().is_some() {
        Some(i64::MAX)
    } else {
        // `as` saturates: the value is only compared with the range.
        n.as_f64()
            .filter(|f| f.is_finite() && f.fract() == 0.0)
            .map(|f| f as i64)
    }
}

fn slot(item: Value, i: usize, details: &mut Details) -> Option<SlotRequest> {
    let at = format!("/timeSlots/{i}");
    let Value::Object(mut object) = item else {
        details.push(
            &at,
            code::TYPE,
            "must be an object {\"start\": RFC 3339, \"end\": RFC 3339}",
        );
        return None;
    };
    let mut instant = |name: &str| {
        let pointer = format!("{at}/{name}");
        match object.remove(name) {
            None | Some(Value::Null) => {
                details.required(&pointer);
                None
            }
            Some(Value::String(text)) => match DateTime::parse_from_rfc3339(&text) {
                Ok(instant) => Some(instant),
                Err(_) => {
                    details.push(
                        &pointer,
                        code::FORMAT,
                        "must be an RFC 3339 date-time with an offset, like 2027-03-15T09:00:00-04:00",
                    );
                    None
                }
            },
            Some(_) => {
                details.push(&pointer, code::TYPE, "must be an RFC 3339 date-time string");
                None
            }
        }
    };
    let start = instant("start");
    let end = instant("end");
    unknown_fields(object.keys(), &at, &["start", "end"], details);
    Some(SlotRequest {
        start: start?,
        end: end?,
    })
}

fn preferences(value: Value, details: &mut Details) -> Option<ChannelPreferences> {
    const AT: &str = "/channelPreferences";
    let Value::Object(mut object) = value else {
        details.push(AT, code::TYPE, "must be an object");
        return None;
    };
    let mut ok = true;
    let mut channel = |name: &str| match object.remove(name) {
        None | Some(Value::Null) => None,
        Some(value) => {
            let found = match &value {
                Value::String(s) => Channel::ALL.into_iter().find(|c| c.as_str() == s),
                _ => None,
            };
            if found.is_none() {
                ok = false;
                details.push(
                    &format!("{AT}/{name}"),
                    code::ENUM,
                    "must be \"voice\" or \"sms\"",
                );
            }
            found
        }
    };
    let primary = channel("primary");
    let fallback = channel("fallback");
    let allow_sms = match object.remove("allowSms") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(b),
        Some(_) => {
            ok = false;
            details.push(&format!("{AT}/allowSms"), code::TYPE, "must be a boolean");
            None
        }
    };
    let before = details.len();
    unknown_fields(
        object.keys(),
        AT,
        &["primary", "fallback", "allowSms"],
        details,
    );
    (ok && details.len() == before).then_some(ChannelPreferences {
        primary: primary.unwrap_or(Channel::Voice),
        fallback,
        allow_sms,
    })
}

fn unknown_fields<'a>(
    keys: impl Iterator<Item = &'a String>,
    at: &str,
    known: &[&str],
    details: &mut Details,
) {
    for key in keys {
        details.push(
            &format!("{at}/{}", escape_pointer(key)),
            code::UNKNOWN_FIELD,
            format!(
                "unknown field `{key}`; the fields here are {}",
                known.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shape(body: Value) -> Result<ReservationRequest, Vec<(String, String)>> {
        ReservationRequest::from_value(body).map_err(|details| {
            details
                .into_iter()
                .map(|d| (d.field_name, d.error_code))
                .collect()
        })
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn minimal() -> Value {
        json!({
            "callbackNumber": "+14155550199",
            "queueId": "q",
            "timeSlots": [{"start": "2027-03-15T09:00:00-04:00", "end": "2027-03-15T09:30:00-04:00"}]
        })
    }

    #[test]
    fn a_minimal_body() {
        let request = shape(minimal()).unwrap();
        assert_eq!(request.callback_number, "+14155550199");
        assert_eq!(request.queue_id, "q");
        assert_eq!(request.time_slots.len(), 1);
        assert_eq!(
            request.time_slots[0].start.to_rfc3339(),
            "2027-03-15T09:00:00-04:00"
        );
        assert_eq!(request.callback_user_name, None);
        assert_eq!(request.channel_preferences, None);
        assert!(request.data.is_empty());
    }

    #[test]
    fn a_full_body_round_trips() {
        let body = json!({
            "callbackNumber": "+1 (415) 555-0199",
            "callbackUserName": "Jane",
            "queueId": "q",
            "reason": "billing",
            "timeSlots": [
                {"start": "2027-03-15T09:00:00-04:00", "end": "2027-03-15T09:30:00-04:00"},
                {"start": "2027-03-15T14:00:00Z", "end": "2027-03-15T14:30:00Z"}
            ],
            "channelPreferences": {"primary": "voice", "fallback": "sms", "allowSms": true},
            "concurrencyLimit": 10,
            "data": {"k": "v"}
        });
        let request = shape(body.clone()).unwrap();
        assert_eq!(
            request.channel_preferences,
            Some(ChannelPreferences {
                primary: Channel::Voice,
                fallback: Some(Channel::Sms),
                allow_sms: Some(true)
            })
        );
        assert_eq!(request.concurrency_limit, Some(10));
        let again = shape(serde_json::to_value(&request).unwrap()).unwrap();
        assert_eq!(again, request);
    }

    #[test]
    fn required_fields() {
        assert_eq!(
            shape(json!({})).unwrap_err(),
            pairs(&[
                ("/callbackNumber", "required"),
                ("/queueId", "required"),
                ("/timeSlots", "required"),
            ])
        );
        let mut body = minimal();
        body["callbackNumber"] = Value::Null;
        assert_eq!(
            shape(body).unwrap_err(),
            pairs(&[("/callbackNumber", "required")])
        );
    }

    #[test]
    fn null_is_absent_for_optional_fields() {
        let mut body = minimal();
        for field in [
            "callbackUserName",
            "reason",
            "channelPreferences",
            "concurrencyLimit",
            "data",
        ] {
            body[field] = Value::Null;
        }
        assert!(shape(body).is_ok());
    }

    #[test]
    fn an_unknown_field_is_refused_and_named() {
        let mut body = minimal();
        body["callbackUsername"] = json!("Jane");
        body["timeSlots"][0]["begin"] = json!("x");
        body["channelPreferences"] = json!({"primary": "voice", "allowSMS": true});
        let details = ReservationRequest::from_value(body).unwrap_err();
        let found: Vec<_> = details
            .iter()
            .map(|d| (d.field_name.as_str(), d.error_code.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("/timeSlots/0/begin", "additionalProperties"),
                ("/channelPreferences/allowSMS", "additionalProperties"),
                ("/callbackUsername", "additionalProperties"),
            ]
        );
        assert!(details[2].message.contains("`callbackUsername`"));
        assert!(details[2].message.contains("callbackUserName"));
    }

    #[test]
    fn wrong_types_are_each_named() {
        let body = json!({
            "callbackNumber": 14155550199u64,
            "callbackUserName": ["Jane"],
            "queueId": "q",
            "timeSlots": [
                "2027-03-15T09:00:00Z",
                {"start": 1, "end": "tomorrow"},
                {"start": "2027-03-15T09:00:00", "end": "2027-03-15T09:30:00Z"}
            ],
            "channelPreferences": {"primary": "carrier-pigeon", "allowSms": "yes"},
            "concurrencyLimit": "10",
            "data": {"k": 1, "ok": "v", "n": null}
        });
        assert_eq!(
            shape(body).unwrap_err(),
            pairs(&[
                ("/callbackNumber", "type"),
                ("/callbackUserName", "type"),
                ("/timeSlots/0", "type"),
                ("/timeSlots/1/start", "type"),
                ("/timeSlots/1/end", "format"),
                ("/timeSlots/2/start", "format"),
                ("/channelPreferences/primary", "enum"),
                ("/channelPreferences/allowSms", "type"),
                ("/concurrencyLimit", "type"),
                ("/data/k", "type"),
                ("/data/n", "type"),
            ])
        );
    }

    #[test]
    fn data_values_must_be_strings() {
        let mut body = minimal();
        body["data"] = json!({"k": 1});
        assert_eq!(shape(body).unwrap_err(), pairs(&[("/data/k", "type")]));
        let mut body = minimal();
        body["data"] = json!({"a/b": true});
        assert_eq!(shape(body).unwrap_err(), pairs(&[("/data/a~1b", "type")]));
        let mut body = minimal();
        body["data"] = json!(["k", "v"]);
        assert_eq!(shape(body).unwrap_err(), pairs(&[("/data", "type")]));
    }

    #[test]
    fn integers() {
        assert_eq!(integer(&json!(10)), Some(10));
        assert_eq!(integer(&json!(10.0)), Some(10));
        assert_eq!(integer(&json!(-3)), Some(-3));
        assert_eq!(integer(&json!(u64::MAX)), Some(i64::MAX));
        assert_eq!(integer(&json!(1e300)), Some(i64::MAX));
        assert_eq!(integer(&json!(10.5)), None);
        assert_eq!(integer(&json!("10")), None);
    }

    #[test]
    fn the_body_must_be_an_object() {
        assert_eq!(shape(json!([])).unwrap_err(), pairs(&[("", "type")]));
    }

    #[test]
    fn repeated_keys_and_bad_json_are_bad_requests() {
        let err = ReservationRequest::from_json(
            br#"{"callbackNumber": "+14155550199", "queueId": "a", "queueId": "b", "timeSlots": []}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, CallbacksError::DuplicateKey(m) if m.contains("`queueId`")),
            "{err:?}"
        );
        let err = ReservationRequest::from_json(br#"{"data": {"k": "1", "k": "2"}}"#).unwrap_err();
        assert!(matches!(err, CallbacksError::DuplicateKey(_)), "{err:?}");
        let err = ReservationRequest::from_json(br#"{"callbackNumber": "#).unwrap_err();
        assert!(matches!(err, CallbacksError::MalformedJson), "{err:?}");
        let err = ReservationRequest::from_json(b"{} {}").unwrap_err();
        assert!(matches!(err, CallbacksError::MalformedJson), "{err:?}");
    }

    #[test]
    fn strict_parsing_keeps_every_value() {
        let text = br#"{"a": [1, -2, 3.5, true, null, "s\u00e9"], "b": {"c": {}}}"#;
        let strict = parse_strict(text).unwrap();
        let plain: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(strict, plain);
    }
}
