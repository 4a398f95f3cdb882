//! The rules a reservation request must follow, checked against its queue's calendar and an
//! instant "now" that the caller passes in (validation never reads the clock).
//!
//! Every problem is reported, each once, at the JSON pointer of the offending value; the
//! `errorCode` of each detail is one of [`code`]. Slot rules (real elapsed time unless said):
//! - `end > start` (else `order` at `/timeSlots/i/end`; the slot's other rules about its length
//!   and open hours are then skipped);
//! - the slot lasts at most the queue's `max_slot_minutes` (`maxDuration` at `.../end`);
//! - it starts strictly after now (`past` at `.../start`: a slot starting now is refused) and
//!   at most `booking_horizon_days` × 24 h after now (`horizon` at `.../start`: exactly at the
//!   horizon is accepted);
//! - it lies inside one open-hours entry, read on the queue's wall clock (`openHours` at
//!   `/timeSlots/i`; the rule is in [`super::calendar`]).
//!
//! Instants are kept to the millisecond (finer digits are dropped before the rules run), which is
//! the precision the reservation is stored and answered with.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};

use super::calendar::{CallbackQueue, CallbackQueues};
use super::error::CallbacksError;
use super::number::CallbackNumber;
use super::request::{Draft, ReservationRequest, SlotRequest};
use super::reservation::{Channel, ChannelPreferences, Slot};
use crate::error::{ErrorDetail, escape_pointer};

/// The `errorCode` values of the details (JSON Schema keyword names where one fits).
pub mod code {
    /// A required field is missing (or `null`).
    pub const REQUIRED: &str = "required";
    /// A value has the wrong JSON type (or the body is not an object).
    pub const TYPE: &str = "type";
    /// A field that does not exist (`fieldName` is its pointer).
    pub const UNKNOWN_FIELD: &str = "additionalProperties";
    /// A malformed E.164 number or RFC 3339 date-time.
    pub const FORMAT: &str = "format";
    /// A channel that is neither `voice` nor `sms`.
    pub const ENUM: &str = "enum";
    /// Contradictory channel preferences.
    pub const CHANNELS: &str = "channels";
    /// A string shorter than allowed (an empty name, reason or `data` key).
    pub const MIN_LENGTH: &str = "minLength";
    /// A string longer than allowed.
    pub const MAX_LENGTH: &str = "maxLength";
    /// No slot.
    pub const MIN_ITEMS: &str = "minItems";
    /// More than 10 slots.
    pub const MAX_ITEMS: &str = "maxItems";
    /// More `data` keys than allowed.
    pub const MAX_PROPERTIES: &str = "maxProperties";
    /// A number below its range.
    pub const MINIMUM: &str = "minimum";
    /// A number above its range.
    pub const MAXIMUM: &str = "maximum";
    /// A `data` key the gateway sets itself (`gatewayReservationId`).
    pub const RESERVED: &str = "reserved";
    /// No queue with this id takes reservations.
    pub const UNKNOWN_QUEUE: &str = "unknownQueue";
    /// A slot whose end is not after its start.
    pub const ORDER: &str = "order";
    /// A slot longer than the queue's `max_slot_minutes`.
    pub const MAX_DURATION: &str = "maxDuration";
    /// A slot that does not start after now.
    pub const PAST: &str = "past";
    /// A slot starting beyond the queue's booking horizon.
    pub const HORIZON: &str = "horizon";
    /// A slot outside the queue's open hours.
    pub const OPEN_HOURS: &str = "openHours";
}

/// Longest `callbackUserName`, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Most keys in `data` (beyond it, the entries' own rules are not checked).
pub const MAX_DATA_ENTRIES: usize = 50;
/// Longest `data` key, in characters (keys are 1 character at least).
pub const MAX_DATA_KEY_CHARS: usize = 100;
/// Longest `data` value, in characters (values may be empty).
pub const MAX_DATA_VALUE_CHARS: usize = 1000;
/// The `data` key the gateway adds on the way to Genesys; callers may not set it.
pub const RESERVED_DATA_KEY: &str = "gatewayReservationId";
/// Most slots in one request (beyond it, the slots' own rules are not checked).
pub const MAX_TIME_SLOTS: usize = 10;
/// The range of `concurrencyLimit`.
pub const CONCURRENCY_LIMIT: std::ops::RangeInclusive<i64> = 1..=50;
/// At most this many details are answered (the rest of a pathological body is not listed).
pub const MAX_DETAILS: usize = 100;

/// A reservation request that follows every rule: what the capacity step and the Genesys call
/// need, normalised. `Debug` leaves out the customer's data and masks the number.
#[derive(Clone, PartialEq)]
pub struct ValidReservationRequest {
    callback_number: CallbackNumber,
    callback_user_name: Option<String>,
    queue_id: String,
    reason: Option<String>,
    slots: Vec<Slot>,
    channel_preferences: Option<ChannelPreferences>,
    concurrency_limit: Option<u32>,
    limit: u32,
    data: BTreeMap<String, String>,
}

impl ValidReservationRequest {
    /// The normalised E.164 number.
    pub fn callback_number(&self) -> &CallbackNumber {
        &self.callback_number
    }

    /// The customer's name, if given.
    pub fn callback_user_name(&self) -> Option<&str> {
        self.callback_user_name.as_deref()
    }

    /// The (configured) queue id.
    pub fn queue_id(&self) -> &str {
        &self.queue_id
    }

    /// The reason, if given.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The acceptable slots in the order given (1 to 10): the capacity step takes the first
    /// that has a free place.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The channel preferences, if given.
    pub fn channel_preferences(&self) -> Option<&ChannelPreferences> {
        self.channel_preferences.as_ref()
    }

    /// The caller's `concurrencyLimit`, if given (1..=50).
    pub fn concurrency_limit(&self) -> Option<u32> {
        self.concurrency_limit
    }

    /// How many live reservations may overlap a slot for this request to take it:
    /// `min(slot_capacity, concurrencyLimit)` (the queue's capacity when no limit is given). The
    /// request takes a slot when fewer than this many live reservations overlap it.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The custom attributes (never holding [`RESERVED_DATA_KEY`]).
    pub fn data(&self) -> &BTreeMap<String, String> {
        &self.data
    }
}

impl std::fmt::Debug for ValidReservationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidReservationRequest")
            .field("callback_number", &self.callback_number)
            .field("queue_id", &self.queue_id)
            .field("slots", &self.slots)
            .field("limit", &self.limit)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CallbackQueues {
    /// Checks a parsed request against the rules and its queue's calendar, at `now`.
    ///
    /// # Errors
    /// Every problem, each at its JSON pointer (answer them as 400 `invalid.input`, e.g. with
    /// [`CallbacksError::invalid`]).
    pub fn validate(
        &self,
        request: &ReservationRequest,
        now: DateTime<Utc>,
    ) -> Result<ValidReservationRequest, Vec<ErrorDetail>> {
        let mut details = Details::default();
        let valid = self.rules(&Draft::from(request), now, &mut details);
        match valid {
            Some(valid) if details.is_empty() => Ok(valid),
            _ => Err(details.into_vec()),
        }
    }

    /// Parses a `POST /v1/callbacks` body and checks it, at `now`: shape problems and rule
    /// problems are listed together (a wrong type in one field does not hide a rule broken by
    /// another).
    ///
    /// # Errors
    /// [`CallbacksError::MalformedJson`] / [`CallbacksError::DuplicateKey`] (400 `bad.request`),
    /// [`CallbacksError::Invalid`] with every problem (400 `invalid.input`).
    pub fn validate_json(
        &self,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<ValidReservationRequest, CallbacksError> {
        let value = super::request::parse_strict(body)?;
        let mut details = Details::default();
        let draft = Draft::read(value, &mut details);
        let valid = self.rules(&draft, now, &mut details);
        match valid {
            Some(valid) if details.is_empty() => Ok(valid),
            _ => Err(CallbacksError::invalid(details.into_vec())),
        }
    }

    /// Checks every rule on what the draft holds; `Some` when nothing it holds breaks a rule
    /// and every required part is there.
    fn rules(
        &self,
        draft: &Draft,
        now: DateTime<Utc>,
        details: &mut Details,
    ) -> Option<ValidReservationRequest> {
        let before = details.len();
        let number = draft
            .callback_number
            .as_deref()
            .and_then(|text| match CallbackNumber::parse(text) {
                Ok(number) => Some(number),
                Err(err) => {
                    details.push("/callbackNumber", code::FORMAT, err.to_string());
                    None
                }
            });
        if let Some(name) = &draft.callback_user_name {
            text_length(name, "/callbackUserName", MAX_NAME_CHARS, details);
        }
        let queue = draft.queue_id.as_deref().and_then(|id| {
            let queue = self.get(id);
            if queue.is_none() {
                details.push(
                    "/queueId",
                    code::UNKNOWN_QUEUE,
                    "no callback queue with this id is configured",
                );
            }
            queue
        });
        if let Some(reason) = &draft.reason {
            text_length(reason, "/reason", MAX_REASON_CHARS, details);
        }
        let slots = draft
            .time_slots
            .as_ref()
            .and_then(|slots| slot_rules(slots, queue, now, details));
        if let Some(preferences) = &draft.channel_preferences {
            channel_rules(preferences, details);
        }
        let concurrency_limit = match draft.concurrency_limit {
            Some(limit) if limit < *CONCURRENCY_LIMIT.start() => {
                details.push(
                    "/concurrencyLimit",
                    code::MINIMUM,
                    "must be between 1 and 50",
                );
                None
            }
            Some(limit) if limit > *CONCURRENCY_LIMIT.end() => {
                details.push(
                    "/concurrencyLimit",
                    code::MAXIMUM,
                    "must be between 1 and 50",
                );
                None
            }
            Some(limit) => u32::try_from(limit).ok(),
            None => None,
        };
        if let Some(data) = &draft.data {
            data_rules(draft.data_count, data, details);
        }
        let queue = queue?;
        let slot_capacity = queue.slot_capacity();
        let valid = ValidReservationRequest {
            callback_number: number?,
            callback_user_name: draft.callback_user_name.clone(),
            queue_id: queue.id().to_owned(),
            reason: draft.reason.clone(),
            slots: slots?,
            channel_preferences: draft.channel_preferences,
            concurrency_limit,
            limit: concurrency_limit.map_or(slot_capacity, |l| l.min(slot_capacity)),
            data: draft.data.clone().unwrap_or_default(),
        };
        (details.len() == before).then_some(valid)
    }
}

fn text_length(text: &str, at: &str, max: usize, details: &mut Details) {
    let chars = text.chars().count();
    if chars == 0 {
        details.push(
            at,
            code::MIN_LENGTH,
            "must not be empty (leave the field out instead)",
        );
    } else if chars > max {
        details.push(
            at,
            code::MAX_LENGTH,
            format!("must be at most {max} characters"),
        );
    }
}

/// The slot rules; `Some` with the slots (in UTC, in the order given) when all of them hold.
fn slot_rules(
    slots: &[Option<SlotRequest>],
    queue: Option<&CallbackQueue>,
    now: DateTime<Utc>,
    details: &mut Details,
) -> Option<Vec<Slot>> {
    let count = slots.len();
    if count == 0 {
        details.push("/timeSlots", code::MIN_ITEMS, "must list at least one slot");
        return None;
    }
    if count > MAX_TIME_SLOTS {
        details.push(
            "/timeSlots",
            code::MAX_ITEMS,
            format!("must list at most {MAX_TIME_SLOTS} slots"),
        );
        return None;
    }
    let before = details.len();
    let mut valid = Vec::with_capacity(slots.len());
    for (i, requested) in slots.iter().enumerate() {
        let Some(requested) = requested else {
            continue;
        };
        let at = format!("/timeSlots/{i}");
        let start = requested.start.to_utc().trunc_subsecs(3);
        let end = requested.end.to_utc().trunc_subsecs(3);
        if start <= now {
            details.push(&format!("{at}/start"), code::PAST, "must be in the future");
        } else if let Some(queue) = queue {
            let horizon = queue.booking_horizon();
            if now
                .checked_add_signed(horizon)
                .is_some_and(|last| start > last)
            {
                details.push(
                    &format!("{at}/start"),
                    code::HORIZON,
                    format!("must be at most {} days from now", horizon.num_days()),
                );
            }
        }
        let Ok(slot) = Slot::new(start, end) else {
            details.push(&format!("{at}/end"), code::ORDER, "must be after start");
            continue;
        };
        if let Some(queue) = queue {
            if slot.duration() > queue.max_slot() {
                details.push(
                    &format!("{at}/end"),
                    code::MAX_DURATION,
                    format!(
                        "the slot lasts longer than the queue's {} minutes",
                        queue.max_slot().num_minutes()
                    ),
                );
            }
            if !queue.is_open_during(&slot) {
                details.push(
                    &at,
                    code::OPEN_HOURS,
                    format!(
                        "must lie inside one entry of the queue's open hours ({}, {} time)",
                        queue.open_hours_text(),
                        queue.timezone().name()
                    ),
                );
            }
        }
        valid.push(slot);
    }
    (details.len() == before && valid.len() == slots.len()).then_some(valid)
}

fn channel_rules(preferences: &ChannelPreferences, details: &mut Details) {
    if preferences.fallback == Some(preferences.primary) {
        details.push(
            "/channelPreferences/fallback",
            code::CHANNELS,
            "must differ from primary",
        );
    }
    if preferences.allow_sms == Some(false) {
        if preferences.primary == Channel::Sms {
            details.push(
                "/channelPreferences/primary",
                code::CHANNELS,
                "is sms, but allowSms is false",
            );
        }
        if preferences.fallback == Some(Channel::Sms) {
            details.push(
                "/channelPreferences/fallback",
                code::CHANNELS,
                "is sms, but allowSms is false",
            );
        }
    }
}

fn data_rules(count: usize, data: &BTreeMap<String, String>, details: &mut Details) {
    if count > MAX_DATA_ENTRIES {
        details.push(
            "/data",
            code::MAX_PROPERTIES,
            format!("must have at most {MAX_DATA_ENTRIES} keys"),
        );
        return;
    }
    for (key, value) in data {
        let at = format!("/data/{}", escape_pointer(key));
        let key_chars = key.chars().count();
        if key == RESERVED_DATA_KEY {
            details.push(
                &at,
                code::RESERVED,
                format!("`{RESERVED_DATA_KEY}` is set by the gateway"),
            );
        } else if key_chars == 0 {
            details.push(&at, code::MIN_LENGTH, "keys must not be empty");
        } else if key_chars > MAX_DATA_KEY_CHARS {
            details.push(
                &at,
                code::MAX_LENGTH,
                format!("keys must be at most {MAX_DATA_KEY_CHARS} characters"),
            );
        }
        if value.chars().count() > MAX_DATA_VALUE_CHARS {
            details.push(
                &at,
                code::MAX_LENGTH,
                format!("values must be at most {MAX_DATA_VALUE_CHARS} characters"),
            );
        }
    }
}

/// The details collected so far, at most [`MAX_DETAILS`].
#[derive(Debug, Default)]
pub(super) struct Details {
    list: Vec<ErrorDetail>,
    dropped: usize,
}

impl Details {
    pub(super) fn push(&mut self, at: &str, error_code: &str, message: impl Into<String>) {
        if self.list.len() < MAX_DETAILS {
            self.list.push(ErrorDetail::new(at, error_code, message));
        } else {
            self.dropped += 1;
        }
    }

    pub(super) fn required(&mut self, at: &str) {
        self.push(at, code::REQUIRED, "is required");
    }

    /// How many problems were found (listed or not).
    pub(super) fn len(&self) -> usize {
        self.list.len() + self.dropped
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn into_vec(self) -> Vec<ErrorDetail> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use serde_json::{Value, json};

    use super::*;
    use crate::config::{CallbackQueueSettings, CallbacksSettings};

    /// Monday 2027-03-01 08:00 EST.
    const NOW: &str = "2027-03-01T13:00:00Z";

    fn queue(id: &str, timezone: &str, open_hours: &[&str]) -> CallbackQueueSettings {
        CallbackQueueSettings {
            id: id.to_owned(),
            name: id.to_owned(),
            timezone: timezone.to_owned(),
            open_hours: open_hours.iter().map(|s| (*s).to_owned()).collect(),
            slot_capacity: 10,
            max_slot_minutes: 60,
            booking_horizon_days: 30,
        }
    }

    fn queues() -> CallbackQueues {
        CallbackQueues::from_settings(&CallbacksSettings {
            queues: vec![
                queue(
                    "support",
                    "America/New_York",
                    &["mon-fri 08:00-20:00", "sat 09:00-13:00"],
                ),
                queue(
                    "night",
                    "America/New_York",
                    &["sun 01:00-04:00", "mon 20:00-24:00", "tue 00:00-02:00"],
                ),
                queue("india", "Asia/Kolkata", &["mon-fri 09:00-17:30"]),
            ],
            ..CallbacksSettings::default()
        })
        .unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn body(queue_id: &str, slots: &[(&str, &str)]) -> Value {
        json!({
            "callbackNumber": "+14155550199",
            "queueId": queue_id,
            "timeSlots": slots
                .iter()
                .map(|(start, end)| json!({"start": start, "end": end}))
                .collect::<Vec<_>>(),
        })
    }

    /// Validates at `now`; the problems as (pointer, code).
    fn check_at(body: &Value, now: &str) -> Result<ValidReservationRequest, Vec<(String, String)>> {
        let bytes = serde_json::to_vec(body).unwrap();
        queues()
            .validate_json(&bytes, utc(now))
            .map_err(|err| match err {
                CallbacksError::Invalid(details) => details
                    .into_iter()
                    .map(|d| (d.field_name, d.error_code))
                    .collect(),
                other => panic!("not a validation error: {other:?}"),
            })
    }

    fn check(body: &Value) -> Result<ValidReservationRequest, Vec<(String, String)>> {
        check_at(body, NOW)
    }

    fn problems(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    /// Tuesday 2027-03-02 10:00-10:30 EST.
    const OPEN: (&str, &str) = ("2027-03-02T10:00:00-05:00", "2027-03-02T10:30:00-05:00");

    #[test]
    fn a_valid_request_is_normalised() {
        let mut b = body(
            "support",
            &[OPEN, ("2027-03-02T16:00:00Z", "2027-03-02T16:45:00Z")],
        );
        b["callbackNumber"] = json!("+1 (415) 555-0199");
        b["callbackUserName"] = json!("Jane");
        b["data"] = json!({"k": "v"});
        b["channelPreferences"] = json!({"primary": "voice", "fallback": "sms", "allowSms": true});
        let valid = check(&b).unwrap();
        assert_eq!(valid.callback_number().as_str(), "+14155550199");
        assert_eq!(valid.queue_id(), "support");
        assert_eq!(valid.callback_user_name(), Some("Jane"));
        assert_eq!(valid.reason(), None);
        let slots: Vec<_> = valid.slots().iter().map(|s| (s.start(), s.end())).collect();
        assert_eq!(
            slots,
            [
                (utc("2027-03-02T15:00:00Z"), utc("2027-03-02T15:30:00Z")),
                (utc("2027-03-02T16:00:00Z"), utc("2027-03-02T16:45:00Z")),
            ],
            "in UTC, in the order given"
        );
        assert_eq!(valid.limit(), 10, "the queue's capacity");
        assert_eq!(valid.concurrency_limit(), None);
        assert_eq!(valid.data().get("k").map(String::as_str), Some("v"));
        assert_eq!(
            valid.channel_preferences().map(|p| p.fallback),
            Some(Some(Channel::Sms))
        );
    }

    #[test]
    fn the_typed_request_is_checked_by_the_same_rules() {
        let request = ReservationRequest::from_value(body("support", &[OPEN])).unwrap();
        let valid = queues().validate(&request, utc(NOW)).unwrap();
        assert_eq!(valid.slots().len(), 1);
        let mut bad = request.clone();
        bad.callback_number = "+0123".to_owned();
        bad.time_slots = vec![request.time_slots[0]; 11];
        let from_json = ReservationRequest::from_value(serde_json::to_value(&bad).unwrap())
            .expect("the shape is right; the count is a rule");
        assert_eq!(from_json.time_slots.len(), 11);
        let details = queues().validate(&bad, utc(NOW)).unwrap_err();
        let found: Vec<_> = details
            .iter()
            .map(|d| (d.field_name.as_str(), d.error_code.as_str()))
            .collect();
        assert_eq!(
            found,
            [("/callbackNumber", "format"), ("/timeSlots", "maxItems")]
        );
    }

    #[test]
    fn spring_forward_inside_open_hours() {
        // 2027-03-14, America/New_York: 01:30 EST to 03:30 EDT is one real hour, read 01:30-03:30
        // on the wall, inside "sun 01:00-04:00" and within max_slot_minutes = 60.
        let valid = check(&body(
            "night",
            &[("2027-03-14T01:30:00-05:00", "2027-03-14T03:30:00-04:00")],
        ))
        .unwrap();
        assert_eq!(valid.slots()[0].duration(), TimeDelta::hours(1));
    }

    #[test]
    fn spring_forward_outside_open_hours() {
        // 03:30 EDT to 04:30 EDT ends after "sun 01:00-04:00" closes.
        assert_eq!(
            check(&body(
                "night",
                &[("2027-03-14T03:30:00-04:00", "2027-03-14T04:30:00-04:00")]
            ))
            .unwrap_err(),
            problems(&[("/timeSlots/0", "openHours")])
        );
        // 06:30Z + 60 min reads 03:30 EDT at the end: a queue closing at 03:00 refuses it, although
        // 01:30 + 60 min would be 02:30 on a clock that did not jump.
        let q = CallbackQueues::from_settings(&CallbacksSettings {
            queues: vec![queue("early", "America/New_York", &["sun 00:00-03:00"])],
            ..CallbacksSettings::default()
        })
        .unwrap();
        let details = q
            .validate(
                &ReservationRequest::from_value(body(
                    "early",
                    &[("2027-03-14T06:30:00Z", "2027-03-14T07:30:00Z")],
                ))
                .unwrap(),
                utc(NOW),
            )
            .unwrap_err();
        assert_eq!(details[0].field_name, "/timeSlots/0");
        assert_eq!(details[0].error_code, "openHours");
        assert!(details[0].message.contains("sun 00:00-03:00"));
        assert!(details[0].message.contains("America/New_York"));
    }

    #[test]
    fn fall_back_day() {
        let now = "2027-11-01T12:00:00Z";
        // 2027-11-07: 01:30 EDT to 01:30 EST is one real hour, reading 01:00-02:00 on the wall.
        let valid = check_at(
            &body(
                "night",
                &[("2027-11-07T01:30:00-04:00", "2027-11-07T01:30:00-05:00")],
            ),
            now,
        )
        .unwrap();
        assert_eq!(valid.slots()[0].duration(), TimeDelta::hours(1));
        // 00:30 EDT to 01:30 EST is two real hours though the wall clock moved one.
        assert_eq!(
            check_at(
                &body(
                    "night",
                    &[("2027-11-07T00:30:00-04:00", "2027-11-07T01:30:00-05:00")]
                ),
                now
            )
            .unwrap_err(),
            problems(&[
                ("/timeSlots/0/end", "maxDuration"),
                ("/timeSlots/0", "openHours"),
            ])
        );
        // Ordinary hours on that day, in EST.
        assert!(
            check_at(
                &body(
                    "night",
                    &[("2027-11-07T03:00:00-05:00", "2027-11-07T04:00:00-05:00")]
                ),
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn a_slot_crossing_closing_time() {
        assert_eq!(
            check(&body(
                "support",
                &[("2027-03-02T19:30:00-05:00", "2027-03-02T20:30:00-05:00")]
            ))
            .unwrap_err(),
            problems(&[("/timeSlots/0", "openHours")])
        );
        // Ending exactly at closing time is inside.
        assert!(
            check(&body(
                "support",
                &[("2027-03-02T19:00:00-05:00", "2027-03-02T20:00:00-05:00")]
            ))
            .is_ok()
        );
    }

    #[test]
    fn a_slot_crossing_midnight() {
        // Monday 20:00-24:00 and Tuesday 00:00-02:00 are both open, but no one entry holds it.
        assert_eq!(
            check(&body(
                "night",
                &[("2027-03-01T23:30:00-05:00", "2027-03-02T00:30:00-05:00")]
            ))
            .unwrap_err(),
            problems(&[("/timeSlots/0", "openHours")])
        );
    }

    #[test]
    fn a_slot_ending_exactly_at_24_00() {
        assert!(
            check(&body(
                "night",
                &[("2027-03-01T23:00:00-05:00", "2027-03-02T00:00:00-05:00")]
            ))
            .is_ok()
        );
    }

    #[test]
    fn a_slot_in_the_past_by_one_second() {
        // NOW is 08:00 EST on Monday, opening time.
        assert_eq!(
            check(&body(
                "support",
                &[("2027-03-01T12:59:59Z", "2027-03-01T13:30:00Z")]
            ))
            .unwrap_err(),
            problems(&[
                ("/timeSlots/0/start", "past"),
                ("/timeSlots/0", "openHours")
            ])
        );
        assert_eq!(
            check(&body(
                "support",
                &[("2027-03-01T13:00:00Z", "2027-03-01T13:30:00Z")]
            ))
            .unwrap_err(),
            problems(&[("/timeSlots/0/start", "past")]),
            "starting now is not in the future"
        );
        assert!(
            check(&body(
                "support",
                &[("2027-03-01T13:00:01Z", "2027-03-01T13:30:00Z")]
            ))
            .is_ok()
        );
    }

    #[test]
    fn the_booking_horizon() {
        // NOW + 30 days = 2027-03-31T13:00:00Z, Wednesday 09:00 EDT.
        assert!(
            check(&body(
                "support",
                &[("2027-03-31T13:00:00Z", "2027-03-31T13:30:00Z")]
            ))
            .is_ok(),
            "exactly at the horizon"
        );
        assert_eq!(
            check(&body(
                "support",
                &[("2027-03-31T13:00:01Z", "2027-03-31T13:30:00Z")]
            ))
            .unwrap_err(),
            problems(&[("/timeSlots/0/start", "horizon")]),
            "one second beyond"
        );
    }

    #[test]
    fn slot_length() {
        assert!(
            check(&body(
                "support",
                &[("2027-03-02T10:00:00-05:00", "2027-03-02T11:00:00-05:00")]
            ))
            .is_ok(),
            "exactly max_slot_minutes"
        );
        assert_eq!(
            check(&body(
                "support",
                &[("2027-03-02T10:00:00-05:00", "2027-03-02T11:01:00-05:00")]
            ))
            .unwrap_err(),
            problems(&[("/timeSlots/0/end", "maxDuration")]),
            "one minute more"
        );
    }

    #[test]
    fn the_end_must_follow_the_start() {
        for end in ["2027-03-02T10:00:00-05:00", "2027-03-02T09:30:00-05:00"] {
            assert_eq!(
                check(&body("support", &[("2027-03-02T10:00:00-05:00", end)])).unwrap_err(),
                problems(&[("/timeSlots/0/end", "order")]),
                "{end}"
            );
        }
    }

    #[test]
    fn callback_numbers() {
        let with = |number: &str| {
            let mut b = body("support", &[OPEN]);
            b["callbackNumber"] = json!(number);
            check(&b).map(|v| v.callback_number().to_string())
        };
        assert_eq!(with("+1 (415) 555-0199"), Ok("+14155550199".to_owned()));
        assert_eq!(with("+44.20.7946.0018"), Ok("+442079460018".to_owned()));
        let refused = problems(&[("/callbackNumber", "format")]);
        for bad in [
            "+04155550199",
            "+123456",
            "+1234567890123456",
            "+1 415 CALL NOW",
            "4155550199",
        ] {
            assert_eq!(with(bad), Err(refused.clone()), "{bad}");
        }
    }

    #[test]
    fn slot_count() {
        assert_eq!(
            check(&body("support", &[])).unwrap_err(),
            problems(&[("/timeSlots", "minItems")])
        );
        assert_eq!(
            check(&body("support", &[OPEN; 11])).unwrap_err(),
            problems(&[("/timeSlots", "maxItems")])
        );
        assert_eq!(
            check(&body("support", &[OPEN; 10])).unwrap().slots().len(),
            10
        );
    }

    #[test]
    fn concurrency_limit() {
        let with = |limit: Value| {
            let mut b = body("support", &[OPEN]);
            b["concurrencyLimit"] = limit;
            check(&b).map(|v| (v.concurrency_limit(), v.limit()))
        };
        assert_eq!(
            with(json!(0)),
            Err(problems(&[("/concurrencyLimit", "minimum")]))
        );
        assert_eq!(with(json!(1)), Ok((Some(1), 1)));
        assert_eq!(with(json!(3)), Ok((Some(3), 3)), "below the capacity of 10");
        assert_eq!(
            with(json!(50)),
            Ok((Some(50), 10)),
            "capped by the capacity"
        );
        assert_eq!(
            with(json!(51)),
            Err(problems(&[("/concurrencyLimit", "maximum")]))
        );
        assert_eq!(
            with(json!(-1)),
            Err(problems(&[("/concurrencyLimit", "minimum")]))
        );
        assert_eq!(
            with(json!(2.5)),
            Err(problems(&[("/concurrencyLimit", "type")]))
        );
    }

    #[test]
    fn data_with_a_number_value() {
        let mut b = body("support", &[OPEN]);
        b["data"] = json!({"k": 1, "ok": "v"});
        assert_eq!(check(&b).unwrap_err(), problems(&[("/data/k", "type")]));
    }

    #[test]
    fn data_bounds() {
        let mut b = body("support", &[OPEN]);
        b["data"] = json!({
            "gatewayReservationId": "x",
            "": "empty key",
            "k".repeat(101): "v",
            "long": "v".repeat(1001),
            "k".repeat(100): "v".repeat(1000),
        });
        assert_eq!(
            check(&b).unwrap_err(),
            problems(&[
                ("/data/", "minLength"),
                ("/data/gatewayReservationId", "reserved"),
                (&format!("/data/{}", "k".repeat(101)), "maxLength"),
                ("/data/long", "maxLength"),
            ])
        );
        let mut b = body("support", &[OPEN]);
        let mut many: serde_json::Map<_, _> =
            (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
        many.insert(RESERVED_DATA_KEY.to_owned(), json!("x"));
        b["data"] = Value::Object(many);
        assert_eq!(
            check(&b).unwrap_err(),
            problems(&[("/data", "maxProperties")]),
            "beyond the bound, the entries' own rules are not checked"
        );
        let mut b = body("support", &[OPEN]);
        let fifty: serde_json::Map<_, _> = (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
        b["data"] = Value::Object(fifty);
        assert_eq!(check(&b).unwrap().data().len(), 50);
    }

    #[test]
    fn an_unknown_field() {
        let mut b = body("support", &[OPEN]);
        b["concurencyLimit"] = json!(5);
        assert_eq!(
            check(&b).unwrap_err(),
            problems(&[("/concurencyLimit", "additionalProperties")])
        );
    }

    #[test]
    fn an_unknown_queue() {
        // The rules that need no queue still run.
        assert_eq!(
            check(&body(
                "nope",
                &[OPEN, ("2027-02-01T10:00:00Z", "2027-02-01T09:00:00Z")]
            ))
            .unwrap_err(),
            problems(&[
                ("/queueId", "unknownQueue"),
                ("/timeSlots/1/start", "past"),
                ("/timeSlots/1/end", "order"),
            ])
        );
    }

    #[test]
    fn half_hour_offsets() {
        // Asia/Kolkata is UTC+05:30: 09:00-17:30 IST is 03:30Z-12:00Z.
        assert!(
            check(&body(
                "india",
                &[("2027-03-02T03:30:00Z", "2027-03-02T04:30:00Z")]
            ))
            .is_ok()
        );
        assert!(
            check(&body(
                "india",
                &[("2027-03-02T16:30:00+05:30", "2027-03-02T17:30:00+05:30")]
            ))
            .is_ok()
        );
        assert_eq!(
            check(&body(
                "india",
                &[("2027-03-02T03:00:00Z", "2027-03-02T04:00:00Z")]
            ))
            .unwrap_err(),
            problems(&[("/timeSlots/0", "openHours")])
        );
        assert_eq!(
            check(&body(
                "india",
                &[("2027-03-02T11:30:00Z", "2027-03-02T12:30:00Z")]
            ))
            .unwrap_err(),
            problems(&[("/timeSlots/0", "openHours")])
        );
    }

    #[test]
    fn every_problem_at_once() {
        let b = json!({
            "callbackNumber": "+0",
            "queueId": "support",
            "reason": "",
            "timeSlots": [
                OPEN.0,
                {"start": "2027-03-02T10:00:00-05:00", "end": "2027-03-02T12:00:00-05:00"},
                {"start": "2027-03-06T12:00:00-05:00", "end": "2027-03-06T13:30:00-05:00"}
            ],
            "channelPreferences": {"primary": "sms", "fallback": "sms", "allowSms": false},
            "concurrencyLimit": 0,
            "data": {"k": 1},
            "extra": true
        });
        assert_eq!(
            check(&b).unwrap_err(),
            problems(&[
                // shape
                ("/timeSlots/0", "type"),
                ("/data/k", "type"),
                ("/extra", "additionalProperties"),
                // rules
                ("/callbackNumber", "format"),
                ("/reason", "minLength"),
                ("/timeSlots/1/end", "maxDuration"),
                ("/timeSlots/2/end", "maxDuration"),
                ("/timeSlots/2", "openHours"),
                ("/channelPreferences/fallback", "channels"),
                ("/channelPreferences/primary", "channels"),
                ("/channelPreferences/fallback", "channels"),
                ("/concurrencyLimit", "minimum"),
            ])
        );
    }

    #[test]
    fn names_and_reasons() {
        let with = |field: &str, value: String| {
            let mut b = body("support", &[OPEN]);
            b[field] = json!(value);
            check(&b).err()
        };
        assert_eq!(with("callbackUserName", "J".repeat(200)), None);
        assert_eq!(
            with("callbackUserName", "J".repeat(201)),
            Some(problems(&[("/callbackUserName", "maxLength")]))
        );
        assert_eq!(
            with("callbackUserName", String::new()),
            Some(problems(&[("/callbackUserName", "minLength")]))
        );
        assert_eq!(
            with("reason", "é".repeat(1000)),
            None,
            "characters, not bytes"
        );
        assert_eq!(
            with("reason", "r".repeat(1001)),
            Some(problems(&[("/reason", "maxLength")]))
        );
    }

    #[test]
    fn channel_preferences() {
        let with = |prefs: Value| {
            let mut b = body("support", &[OPEN]);
            b["channelPreferences"] = prefs;
            check(&b).map(|v| v.channel_preferences().copied())
        };
        assert_eq!(
            with(json!({})),
            Ok(Some(ChannelPreferences {
                primary: Channel::Voice,
                fallback: None,
                allow_sms: None
            }))
        );
        assert!(with(json!({"primary": "sms", "fallback": "voice"})).is_ok());
        assert_eq!(
            with(json!({"primary": "voice", "fallback": "sms", "allowSms": false})),
            Err(problems(&[("/channelPreferences/fallback", "channels")]))
        );
        assert_eq!(
            with(json!({"primary": "email"})),
            Err(problems(&[("/channelPreferences/primary", "enum")]))
        );
    }

    #[test]
    fn instants_are_kept_to_the_millisecond() {
        let valid = check(&body(
            "support",
            &[(
                "2027-03-02T10:00:00.123456789-05:00",
                "2027-03-02T10:30:00.9999-05:00",
            )],
        ))
        .unwrap();
        assert_eq!(valid.slots()[0].start(), utc("2027-03-02T15:00:00.123Z"));
        assert_eq!(valid.slots()[0].end(), utc("2027-03-02T15:30:00.999Z"));
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        let q = queues();
        assert_eq!(
            q.validate_json(b"{\"queueId\": 1,", utc(NOW)),
            Err(CallbacksError::MalformedJson)
        );
        assert!(matches!(
            q.validate_json(br#"{"queueId": "a", "queueId": "a"}"#, utc(NOW)),
            Err(CallbacksError::DuplicateKey(_))
        ));
    }

    #[test]
    fn details_are_bounded() {
        let mut b = body("support", &[OPEN]);
        for i in 0..150 {
            b[format!("x{i}")] = json!(1);
        }
        let details = check(&b).unwrap_err();
        assert_eq!(details.len(), MAX_DETAILS);
    }

    #[test]
    fn a_valid_request_becomes_a_pending_reservation() {
        use crate::callbacks::{Reservation, ReservationId, ReservationStatus};
        let mut b = body("support", &[OPEN]);
        b["data"] = json!({"k": "v"});
        let valid = check(&b).unwrap();
        let id = ReservationId::new();
        let r = Reservation::pending(id, &valid, valid.slots()[0], utc(NOW));
        assert_eq!(r.status, ReservationStatus::Pending);
        assert_eq!((r.version, r.seq), (0, 0));
        assert_eq!(r.callback_number.as_str(), "+14155550199");
        assert_eq!(r.queue_id, "support");
        assert_eq!(r.slot, valid.slots()[0]);
        assert_eq!(r.data, *valid.data());
        assert_eq!((r.created_at, r.updated_at), (utc(NOW), utc(NOW)));
        assert!(r.conversation_id.is_none() && r.callback_identifiers.is_empty());
    }
}
