//! From one ingest request body to the events to store and deliver: validation against the event
//! schema, mapping onto the delivered envelope, idempotency keys and fingerprints.
//!
//! [`EventPipeline`] is built once from `[ingest]` (the schema compiled, the envelope's constant
//! parts pre-rendered) and [`EventPipeline::prepare`] does everything about a body that needs
//! no database: it either refuses the whole request ([`IngestError`]) or returns one
//! [`PreparedEvent`] per event, in input order.
//!
//! # The envelope
//! ```json
//! {"eventId":"<uuid>","eventType":"custom.<vendor>.<category>.<type>",
//!  "eventTime":"2024-05-01T10:30:00.000Z","source":{"system":"...","version":"..."},
//!  "data":{...}}
//! ```
//! - `<type>` is the event's `event_type` with ASCII letters lowercased, every run of other
//!   characters (anything outside `[a-z0-9]`, non-ASCII letters included) replaced by one `_`,
//!   and leading/trailing `_` removed ([`normalize_event_type`]).
//! - `eventTime` is the event's `timestamp` (see [`super::timestamp`]).
//! - `data` holds every member of the event except `event_type` and `timestamp`, in the order
//!   written, each value **byte for byte as received** (so every number keeps its exact text),
//!   then `"original_type"` = the event's `event_type`. A member the event itself calls
//!   `original_type` is replaced by that one.
//!
//! # What an event must satisfy
//! The event schema (the built-in [`legacy_event_schema`] or `[ingest] event_schema`), and,
//! whatever that schema says, what the mapping needs: an object with an `event_type` string that
//! normalises to a non-empty type, a readable `timestamp`, and — when its key is derived — a
//! `transaction_id` string. Problems are reported per event at JSON pointers into the body
//! (`/2/timestamp` in a batch, `/timestamp` for a single event), all of them at once.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::content::{self, EventContent, Text};
use super::error::MAX_DETAILS;
use super::timestamp::{format_event_time, parse_timestamp};
use super::{Fingerprint, IdempotencyKey, IngestError};
use crate::config::{ConfigSource, IngestSettings, Problem, SchemaSource};
use crate::error::ErrorDetail;
use crate::json::Schema;

/// The member naming the kind of event.
const EVENT_TYPE: &str = "event_type";
/// The member saying when it happened.
const TIMESTAMP: &str = "timestamp";
/// The member the derived idempotency key comes from.
const TRANSACTION_ID: &str = "transaction_id";
/// The member of `data` that carries `event_type` as sent.
const ORIGINAL_TYPE: &str = "original_type";

/// The built-in LegacyEvent schema: `transaction_id` (string, 1–128 characters), `event_type`
/// (string) and `timestamp` (string or integer) required; `amount` a number, `currency` three
/// uppercase letters; any other member allowed.
pub fn legacy_event_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "LegacyEvent",
        "type": "object",
        "required": [TRANSACTION_ID, EVENT_TYPE, TIMESTAMP],
        "properties": {
            TRANSACTION_ID: {"type": "string", "minLength": 1, "maxLength": 128},
            EVENT_TYPE: {"type": "string"},
            TIMESTAMP: {"type": ["string", "integer"]},
            "amount": {"type": "number"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
        },
        "additionalProperties": true
    })
}

/// `event_type` as the last part of `eventType`: ASCII letters lowercased, every run of
/// characters outside `[a-z0-9]` made one `_`, no `_` at either end. `None` when nothing is
/// left (`"!!"`, `"__"`, `""`, `"日本"`).
pub fn normalize_event_type(event_type: &str) -> Option<String> {
    let mut out = String::with_capacity(event_type.len());
    let mut gap = false;
    for c in event_type.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The id of an accepted event (`eventId`): a UUID, v7 when the gateway makes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Uuid);

impl EventId {
    /// A new id, UUID v7 (time-ordered, so ids sort roughly by acceptance).
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    /// An id from its text (the hyphenated form, as the gateway shows it).
    ///
    /// # Errors
    /// When `text` is not a UUID.
    pub fn parse(text: &str) -> Result<Self, uuid::Error> {
        Uuid::try_parse(text).map(Self)
    }

    /// The UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl From<Uuid> for EventId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl FromStr for EventId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0.hyphenated())
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One event of a request, validated and mapped, waiting for its id.
///
/// It owns everything (nothing borrows the request body), so it can be moved into a store
/// task. The caller looks the [`idempotency_key`](Self::idempotency_key) up: when the event is
/// new it assigns an [`EventId`] and takes the delivery body from [`body`](Self::body); when the
/// key is known it compares [`fingerprint`](Self::fingerprint)s (equal: a duplicate, answered
/// with the stored id; different: `idempotency.conflict`).
///
/// `Debug` shows neither the body nor any value of the event.
#[derive(Clone)]
pub struct PreparedEvent {
    /// Position in the request (0 for a single event).
    pub index: usize,
    /// The `Idempotency-Key` header, or the key derived from the issuer and `transaction_id`.
    pub idempotency_key: IdempotencyKey,
    /// SHA-256 of the event's canonical form (see [`canonical_form`](super::canonical_form)).
    pub fingerprint: Fingerprint,
    /// `eventType`: `custom.<vendor>.<category>.<type>` (what target `event_types` globs match).
    pub event_type: String,
    /// `eventTime`, to the millisecond.
    pub event_time: DateTime<Utc>,
    /// The event's `transaction_id` when it is a string (always with the built-in schema).
    pub transaction_id: Option<String>,
    /// The envelope after the `eventId` member: `,"eventType":...,"data":{...}}`.
    envelope_tail: Bytes,
}

impl PreparedEvent {
    /// The exact delivery body for the id `id`:
    /// `{"eventId":"<id>","eventType":...,"eventTime":...,"source":{...},"data":{...}}`.
    /// One allocation and two copies.
    pub fn body(&self, id: &EventId) -> Bytes {
        const HEAD: &[u8] = b"{\"eventId\":\"";
        let mut uuid = Uuid::encode_buffer();
        let id = id.0.hyphenated().encode_lower(&mut uuid);
        let mut out = Vec::with_capacity(HEAD.len() + id.len() + 1 + self.envelope_tail.len());
        out.extend_from_slice(HEAD);
        out.extend_from_slice(id.as_bytes());
        out.push(b'"');
        out.extend_from_slice(&self.envelope_tail);
        Bytes::from(out)
    }

    /// The body without its leading `{"eventId":"<id>"`, for a store that keeps the id and the
    /// rest apart (`body(id)` = `{"eventId":"<id>"` + this).
    pub fn envelope_tail(&self) -> &Bytes {
        &self.envelope_tail
    }
}

impl fmt::Debug for PreparedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedEvent")
            .field("index", &self.index)
            .field("idempotency_key", &self.idempotency_key)
            .field("fingerprint", &self.fingerprint)
            .field("event_type", &self.event_type)
            .field("event_time", &self.event_time)
            .finish_non_exhaustive()
    }
}

/// Validates and maps ingest request bodies; built once from `[ingest]`, cheap to clone.
#[derive(Clone)]
pub struct EventPipeline {
    inner: Arc<Pipeline>,
}

struct Pipeline {
    schema: Schema,
    /// `custom.<vendor>.<category>.`
    type_prefix: String,
    /// `,"source":{"system":...,"version":...},"data":{` (pre-rendered).
    source_and_data: String,
    max_batch: usize,
}

impl fmt::Debug for EventPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventPipeline")
            .field("type_prefix", &self.inner.type_prefix)
            .field("max_batch", &self.inner.max_batch)
            .finish_non_exhaustive()
    }
}

impl EventPipeline {
    /// Compiles `[ingest]`: loads and compiles the event schema (the file is relative to the
    /// config folder; without one the built-in [`legacy_event_schema`]) and pre-renders the
    /// constant parts of the envelope. `settings` is expected to have passed the configuration
    /// checks (`vendor`/`category` in `[a-z0-9_]+`, `max_batch` ≥ 1).
    ///
    /// # Errors
    /// A problem at `ingest.event_schema` when the file cannot be read, is not JSON or is not a
    /// valid, self-contained JSON Schema.
    pub fn from_settings(
        settings: &IngestSettings,
        source: &ConfigSource,
    ) -> Result<Self, Vec<Problem>> {
        let document = match &settings.event_schema {
            None => legacy_event_schema(),
            Some(path) => Schema::load(&SchemaSource::File(path.clone()), source)
                .map_err(|message| vec![Problem::new("ingest.event_schema", message)])?,
        };
        let schema = Schema::compile(document)
            .map_err(|message| vec![Problem::new("ingest.event_schema", message)])?;
        let source_object = json!({
            "system": settings.source.system,
            "version": settings.source.version,
        });
        Ok(Self {
            inner: Arc::new(Pipeline {
                schema,
                type_prefix: format!("custom.{}.{}.", settings.vendor, settings.category),
                source_and_data: format!(",\"source\":{source_object},\"data\":{{"),
                max_batch: settings.max_batch.max(1),
            }),
        })
    }

    /// The largest batch accepted (`[ingest] max_batch`).
    pub fn max_batch(&self) -> usize {
        self.inner.max_batch
    }

    /// The compiled event schema (for documentation such as the OpenAPI document).
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// Validates and maps a request body: one event object or an array of them.
    ///
    /// `body` is the JSON as received (depth already bounded by the JSON body extractor); `iss`
    /// the verified token's issuer claim; `header_key` the request's `Idempotency-Key`
    /// ([`IdempotencyKey::from_headers`]). On success there is one [`PreparedEvent`] per event,
    /// in input order.
    ///
    /// # Errors
    /// In this order: [`IngestError::Malformed`]; for an array [`IngestError::EmptyBatch`],
    /// [`IngestError::BatchTooLarge`], [`IngestError::KeyWithBatch`];
    /// [`IngestError::DuplicateKey`] when any object anywhere repeats a key; else
    /// [`IngestError::Invalid`] with every problem of every event.
    pub fn prepare(
        &self,
        body: &[u8],
        iss: &str,
        header_key: Option<IdempotencyKey>,
    ) -> Result<Vec<PreparedEvent>, IngestError> {
        let text = std::str::from_utf8(body).map_err(|_| IngestError::Malformed)?;
        let raw: &RawValue = serde_json::from_str(text).map_err(|_| IngestError::Malformed)?;
        let mut details = Vec::new();
        let mut invalid = 0;
        let mut events = Vec::new();
        if raw.get().starts_with('[') {
            let items: Vec<&RawValue> =
                serde_json::from_str(raw.get()).map_err(|_| IngestError::Malformed)?;
            if items.is_empty() {
                return Err(IngestError::EmptyBatch);
            }
            if items.len() > self.inner.max_batch {
                return Err(IngestError::BatchTooLarge {
                    count: items.len(),
                    max: self.inner.max_batch,
                });
            }
            if header_key.is_some() {
                return Err(IngestError::KeyWithBatch);
            }
            events.reserve_exact(items.len());
            let mut base = String::new();
            for (index, item) in items.iter().enumerate() {
                base.clear();
                base.push('/');
                base.push_str(&index.to_string());
                match self.prepare_one(index, item, &base, iss, None, &mut details)? {
                    Some(event) => events.push(event),
                    None => invalid += 1,
                }
            }
        } else {
            match self.prepare_one(0, raw, "", iss, header_key, &mut details)? {
                Some(event) => events.push(event),
                None => invalid += 1,
            }
        }
        if invalid > 0 {
            let total = events.len() + invalid;
            return Err(IngestError::Invalid {
                total,
                invalid,
                details,
            });
        }
        Ok(events)
    }

    /// One event at `base` (`""` or `/<index>`): `Ok(None)` when it has problems (pushed to
    /// `details`), `Err` when the whole request must be refused.
    fn prepare_one(
        &self,
        index: usize,
        raw: &RawValue,
        base: &str,
        iss: &str,
        header_key: Option<IdempotencyKey>,
        details: &mut Vec<ErrorDetail>,
    ) -> Result<Option<PreparedEvent>, IngestError> {
        if !raw.get().starts_with('{') {
            content::check_value(raw, base)?;
            let message = if base.is_empty() {
                "The body must be an event object or an array of event objects."
            } else {
                "An event must be a JSON object."
            };
            details.push(ErrorDetail::new(base, "type", message));
            return Ok(None);
        }
        let EventContent {
            members,
            value,
            fingerprint,
        } = content::read_event(raw, base)?;
        let value = Value::Object(value);
        let mut problems = Problems::new(details, base);
        problems.schema(&self.inner.schema, &value);

        let member = |name: &str| {
            members
                .iter()
                .find(|(Text(k), _)| k == name)
                .map(|(_, v)| *v)
        };
        let string = |name: &str| value.get(name).and_then(Value::as_str);

        let event_type = match (member(EVENT_TYPE), string(EVENT_TYPE)) {
            (Some(raw), Some(sent)) => match normalize_event_type(sent) {
                Some(normalized) => Some((raw, normalized)),
                None => {
                    problems.add(
                        EVENT_TYPE,
                        "format",
                        "event_type must contain a letter or digit (a-z, 0-9)",
                    );
                    None
                }
            },
            (Some(_), None) => {
                problems.add(EVENT_TYPE, "type", "event_type must be a string");
                None
            }
            (None, _) => {
                problems.add(EVENT_TYPE, "required", "event_type is a required property");
                None
            }
        };

        let event_time = match member(TIMESTAMP).map(|raw| parse_timestamp(raw.get())) {
            Some(Ok(time)) => Some(time),
            Some(Err(err)) => {
                problems.add(TIMESTAMP, err.code(), err.message());
                None
            }
            None => {
                problems.add(TIMESTAMP, "required", "timestamp is a required property");
                None
            }
        };

        let transaction_id = string(TRANSACTION_ID).map(str::to_owned);
        let idempotency_key = match (header_key, &transaction_id) {
            (Some(key), _) => Some(key),
            (None, Some(id)) => Some(IdempotencyKey::derive(iss, id)),
            (None, None) => {
                if member(TRANSACTION_ID).is_some() {
                    problems.add(TRANSACTION_ID, "type", "transaction_id must be a string");
                } else {
                    problems.add(
                        TRANSACTION_ID,
                        "required",
                        "transaction_id is a required property (or send an Idempotency-Key \
                         header with a single event)",
                    );
                }
                None
            }
        };

        let (Some((raw_type, normalized)), Some(event_time), Some(idempotency_key)) =
            (event_type, event_time, idempotency_key)
        else {
            return Ok(None);
        };
        if problems.any() {
            return Ok(None);
        }

        let event_type = format!("{}{normalized}", self.inner.type_prefix);
        let envelope_tail = self.envelope_tail(&event_type, event_time, &members, raw_type, raw);
        Ok(Some(PreparedEvent {
            index,
            idempotency_key,
            fingerprint,
            event_type,
            event_time,
            transaction_id,
            envelope_tail,
        }))
    }

    /// `,"eventType":...,"eventTime":...,"source":{...},"data":{...}}`.
    fn envelope_tail(
        &self,
        event_type: &str,
        event_time: DateTime<Utc>,
        members: &[(Text<'_>, &RawValue)],
        raw_type: &RawValue,
        raw_event: &RawValue,
    ) -> Bytes {
        let mut out = Vec::with_capacity(raw_event.get().len() + 160);
        out.extend_from_slice(b",\"eventType\":");
        write_string(&mut out, event_type);
        out.extend_from_slice(b",\"eventTime\":\"");
        out.extend_from_slice(format_event_time(event_time).as_bytes());
        out.push(b'"');
        out.extend_from_slice(self.inner.source_and_data.as_bytes());
        for (Text(key), value) in members {
            if matches!(key.as_ref(), EVENT_TYPE | TIMESTAMP | ORIGINAL_TYPE) {
                continue;
            }
            write_string(&mut out, key);
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
            out.push(b',');
        }
        write_string(&mut out, ORIGINAL_TYPE);
        out.push(b':');
        out.extend_from_slice(raw_type.get().as_bytes());
        out.extend_from_slice(b"}}");
        Bytes::from(out)
    }
}

/// Writes `s` as a JSON string.
fn write_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The problems of one event, added to the request's `details` (at most [`MAX_DETAILS`] in
/// all): the schema's first, then the mapping's — a mapping problem at a pointer the schema
/// already reported is not repeated.
struct Problems<'a> {
    details: &'a mut Vec<ErrorDetail>,
    /// Where this event's details start.
    first: usize,
    base: &'a str,
    /// Whether the event has a problem (listed or past the bound).
    found: bool,
}

impl<'a> Problems<'a> {
    fn new(details: &'a mut Vec<ErrorDetail>, base: &'a str) -> Self {
        Self {
            first: details.len(),
            details,
            base,
            found: false,
        }
    }

    fn schema(&mut self, schema: &Schema, event: &Value) {
        if self.details.len() >= MAX_DETAILS {
            // Nothing more is listed: only whether the event is valid matters (no error built).
            self.found |= !schema.is_valid(event);
            return;
        }
        for detail in schema.violations(event) {
            self.found = true;
            self.push(ErrorDetail {
                field_name: format!("{}{}", self.base, detail.field_name),
                ..detail
            });
        }
    }

    fn add(&mut self, member: &str, code: &str, message: &str) {
        self.found = true;
        let pointer = format!("{}/{member}", self.base);
        if !self.details[self.first..]
            .iter()
            .any(|d| d.field_name == pointer)
        {
            self.push(ErrorDetail::new(pointer, code, message));
        }
    }

    fn push(&mut self, detail: ErrorDetail) {
        if self.details.len() < MAX_DETAILS {
            self.details.push(detail);
        }
    }

    fn any(&self) -> bool {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;

    const ISS: &str = "legacy-ordering";

    fn settings() -> IngestSettings {
        IngestSettings::default()
    }

    fn pipeline() -> EventPipeline {
        EventPipeline::from_settings(&settings(), &ConfigSource::default()).unwrap()
    }

    fn prepare(body: &str) -> Result<Vec<PreparedEvent>, IngestError> {
        pipeline().prepare(body.as_bytes(), ISS, None)
    }

    fn one(body: &str) -> PreparedEvent {
        let mut events = prepare(body).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    /// The delivered body as text, with a fixed id.
    fn delivered(event: &PreparedEvent) -> String {
        let id = EventId::parse("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap();
        String::from_utf8(event.body(&id).to_vec()).unwrap()
    }

    /// `(fieldName, errorCode)` of every detail.
    fn problems(body: &str) -> Vec<(String, String)> {
        problems_of(prepare(body))
    }

    fn problems_of(result: Result<Vec<PreparedEvent>, IngestError>) -> Vec<(String, String)> {
        match result {
            Err(IngestError::Invalid { details, .. }) => details
                .into_iter()
                .map(|d| (d.field_name, d.error_code))
                .collect(),
            other => panic!("expected invalid events, got {other:?}"),
        }
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
            .collect()
    }

    const OK: &str =
        r#""transaction_id":"TX-1","event_type":"Order Created","timestamp":1714566600"#;

    #[test]
    fn a_single_event_becomes_the_exact_envelope() {
        let event = one(
            r#"{"transaction_id":"TX-1","event_type":"Order Created!!","timestamp":"2024-05-01T12:30:00+02:00","amount":1234567890.12345678901,"currency":"EUR"}"#,
        );
        assert_eq!(event.index, 0);
        assert_eq!(event.event_type, "custom.legacy.orders.order_created");
        assert_eq!(
            format_event_time(event.event_time),
            "2024-05-01T10:30:00.000Z"
        );
        assert_eq!(event.transaction_id.as_deref(), Some("TX-1"));
        assert_eq!(event.idempotency_key, IdempotencyKey::derive(ISS, "TX-1"));
        assert_eq!(
            delivered(&event),
            concat!(
                r#"{"eventId":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","#,
                r#""eventType":"custom.legacy.orders.order_created","#,
                r#""eventTime":"2024-05-01T10:30:00.000Z","#,
                r#""source":{"system":"legacy-ordering-platform","version":"1.0.0"},"#,
                r#""data":{"transaction_id":"TX-1","amount":1234567890.12345678901,"currency":"EUR","original_type":"Order Created!!"}}"#
            )
        );
        let tail = event.envelope_tail().clone();
        let id = EventId::new_v7();
        let body = event.body(&id);
        assert_eq!(&body[body.len() - tail.len()..], &tail[..]);
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["eventId"], id.to_string());
        assert_eq!(id.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn vendor_category_and_source_come_from_the_settings() {
        let mut s = settings();
        s.vendor = "acme".into();
        s.category = "payments".into();
        s.source.system = "core \"banking\"".into();
        s.source.version = "2.1.0".into();
        let p = EventPipeline::from_settings(&s, &ConfigSource::default()).unwrap();
        let event = p
            .prepare(format!("{{{OK}}}").as_bytes(), ISS, None)
            .unwrap()
            .remove(0);
        assert_eq!(event.event_type, "custom.acme.payments.order_created");
        let body: Value = serde_json::from_str(&delivered(&event)).unwrap();
        assert_eq!(
            body["source"],
            json!({"system": "core \"banking\"", "version": "2.1.0"})
        );
    }

    #[test]
    fn data_is_every_member_but_type_and_time_plus_original_type() {
        let event = one(
            r#"{ "z" : 1 , "event_type" : "A\u0042" , "transaction_id":"t", "timestamp":"1714566600", "original_type":"forged", "nested" : { "k" : [ 1 , 2 ] } }"#,
        );
        let body = delivered(&event);
        let data = &body[body.find(r#""data":"#).unwrap()..];
        // Values byte for byte as received (inner whitespace included); the event's own
        // `original_type` is replaced; `original_type` is the type as sent.
        assert_eq!(
            data,
            r#""data":{"z":1,"transaction_id":"t","nested":{ "k" : [ 1 , 2 ] },"original_type":"A\u0042"}}"#
        );
        assert_eq!(event.event_type, "custom.legacy.orders.ab");
    }

    #[test]
    fn every_number_keeps_its_text() {
        let numbers = [
            "1234567890.12345678901",
            "-0",
            "0",
            "1.0",
            "1.50",
            "1e400",
            "-1E-7",
            "2.5E+10",
            "123456789012345678901234567890",
            "-9223372036854775809",
            "18446744073709551616",
            "0.1000000000000000055511151231257827",
        ];
        let list = numbers.join(",");
        let body = format!(
            r#"{{{OK},"amount":{},"list":[{list}],"deep":{{"a":[{{"b":{}}}]}}}}"#,
            numbers[0], numbers[1]
        );
        let out = delivered(&one(&body));
        assert!(
            out.contains(&format!(r#""amount":{}"#, numbers[0])),
            "{out}"
        );
        assert!(out.contains(&format!(r#""list":[{list}]"#)), "{out}");
        assert!(out.contains(r#""deep":{"a":[{"b":-0}]}"#), "{out}");
    }

    #[test]
    fn event_types_are_normalised() {
        for (sent, expected) in [
            ("Order Created!!", Some("order_created")),
            ("__x__", Some("x")),
            ("ORDER", Some("order")),
            ("order.created/v2", Some("order_created_v2")),
            ("a  -- b", Some("a_b")),
            ("Crème Brûlée", Some("cr_me_br_l_e")),
            ("注文 created", Some("created")),
            ("Ｏrder", Some("rder")),
            ("x1_2", Some("x1_2")),
            ("!!", None),
            ("__", None),
            ("", None),
            ("日本", None),
        ] {
            assert_eq!(normalize_event_type(sent).as_deref(), expected, "{sent}");
        }
        assert_eq!(
            problems(r#"{"transaction_id":"t","event_type":"!!","timestamp":1}"#),
            pairs(&[("/event_type", "format")])
        );
    }

    #[test]
    fn the_built_in_schema_rules_one_by_one() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                r#"{"event_type":"a","timestamp":1}"#,
                &[("/transaction_id", "required")],
            ),
            (
                r#"{"transaction_id":"","event_type":"a","timestamp":1}"#,
                &[("/transaction_id", "minLength")],
            ),
            (
                r#"{"transaction_id":7,"event_type":"a","timestamp":1}"#,
                &[("/transaction_id", "type")],
            ),
            (
                r#"{"transaction_id":"t","timestamp":1}"#,
                &[("/event_type", "required")],
            ),
            (
                r#"{"transaction_id":"t","event_type":["a"],"timestamp":1}"#,
                &[("/event_type", "type")],
            ),
            (
                r#"{"transaction_id":"t","event_type":"a"}"#,
                &[("/timestamp", "required")],
            ),
            (
                r#"{"transaction_id":"t","event_type":"a","timestamp":true}"#,
                &[("/timestamp", "type")],
            ),
            (
                r#"{"transaction_id":"t","event_type":"a","timestamp":1.5}"#,
                &[("/timestamp", "type")],
            ),
            (
                r#"{"transaction_id":"t","event_type":"a","timestamp":1,"amount":"12.50"}"#,
                &[("/amount", "type")],
            ),
            (
                r#"{"transaction_id":"t","event_type":"a","timestamp":1,"currency":"eur"}"#,
                &[("/currency", "pattern")],
            ),
            (
                r#"{"transaction_id":"t","event_type":"a","timestamp":1,"currency":"EURO"}"#,
                &[("/currency", "pattern")],
            ),
            (
                r#"{"transaction_id":"t","event_type":"a","timestamp":1,"currency":"EU"}"#,
                &[("/currency", "pattern")],
            ),
            (
                r#"{"transaction_id":"t","event_type":"a","timestamp":1,"currency":840}"#,
                &[("/currency", "type")],
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(problems(body), pairs(expected), "{body}");
        }
        let long = "é".repeat(128);
        let ok = format!(
            r#"{{"transaction_id":"{long}","event_type":"a","timestamp":1,"amount":-0.5,"currency":"USD","other":{{"x":null}}}}"#
        );
        assert_eq!(one(&ok).transaction_id.as_deref(), Some(long.as_str()));
        let too_long = format!(r#"{{"transaction_id":"{long}x","event_type":"a","timestamp":1}}"#);
        assert_eq!(
            problems(&too_long),
            pairs(&[("/transaction_id", "maxLength")])
        );
        // All of one event's problems at once.
        let mut all = problems(r#"{"amount":"x","currency":"usd"}"#);
        all.sort();
        assert_eq!(
            all,
            pairs(&[
                ("/amount", "type"),
                ("/currency", "pattern"),
                ("/event_type", "required"),
                ("/timestamp", "required"),
                ("/transaction_id", "required"),
            ])
        );
    }

    #[test]
    fn unreadable_timestamps_are_errors_at_their_pointer() {
        for (ts, code) in [
            (r#""yesterday""#, "format"),
            (r#""2024-05-01T12:30:00""#, "format"),
            ("1714566600.0", "format"),
            ("-5", "range"),
            ("253402300800000", "range"),
            (r#""99999999999999999999""#, "range"),
        ] {
            let body = format!(r#"{{"transaction_id":"t","event_type":"a","timestamp":{ts}}}"#);
            assert_eq!(problems(&body), pairs(&[("/timestamp", code)]), "{ts}");
        }
    }

    #[test]
    fn batch_problems_name_the_index_and_are_all_returned() {
        let body = format!(
            r#"[{{{OK}}},{{{OK},"currency":"x"}},{{"transaction_id":"t","event_type":"a","timestamp":"soon"}},{{{OK}}},[1],"x"]"#
        );
        let err = prepare(&body).unwrap_err();
        let IngestError::Invalid {
            total,
            invalid,
            ref details,
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!((total, invalid), (6, 4));
        let found: Vec<(&str, &str)> = details
            .iter()
            .map(|d| (d.field_name.as_str(), d.error_code.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("/1/currency", "pattern"),
                ("/2/timestamp", "format"),
                ("/4", "type"),
                ("/5", "type")
            ]
        );
    }

    #[test]
    fn a_valid_batch_gives_one_event_per_element_in_order() {
        let body = (0..3)
            .map(|i| {
                format!(r#"{{"transaction_id":"TX-{i}","event_type":"Paid","timestamp":{i}}}"#)
            })
            .collect::<Vec<_>>()
            .join(",");
        let events = prepare(&format!("[{body}]")).unwrap();
        assert_eq!(events.len(), 3);
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event.index, i);
            assert_eq!(
                event.idempotency_key,
                IdempotencyKey::derive(ISS, &format!("TX-{i}"))
            );
            assert_eq!(event.event_time.timestamp(), i as i64);
            assert_eq!(event.event_type, "custom.legacy.orders.paid");
        }
        assert_ne!(events[0].fingerprint, events[1].fingerprint);
    }

    #[test]
    fn batch_size_rules() {
        assert_eq!(prepare("[]").unwrap_err(), IngestError::EmptyBatch);
        assert_eq!(prepare(" [ ] ").unwrap_err(), IngestError::EmptyBatch);
        let mut s = settings();
        s.max_batch = 2;
        let p = EventPipeline::from_settings(&s, &ConfigSource::default()).unwrap();
        assert_eq!(p.max_batch(), 2);
        let two = format!("[{{{OK}}},{{{OK}}}]");
        assert_eq!(p.prepare(two.as_bytes(), ISS, None).unwrap().len(), 2);
        let three = format!("[{{{OK}}},{{{OK}}},{{{OK}}}]");
        assert_eq!(
            p.prepare(three.as_bytes(), ISS, None).unwrap_err(),
            IngestError::BatchTooLarge { count: 3, max: 2 }
        );
    }

    #[test]
    fn the_header_key_names_a_single_event_only() {
        let key = IdempotencyKey::parse("client-key-1").unwrap();
        let single = format!("{{{OK}}}");
        let event = pipeline()
            .prepare(single.as_bytes(), ISS, Some(key.clone()))
            .unwrap()
            .remove(0);
        assert_eq!(event.idempotency_key, key);
        let derived = one(&single);
        assert_eq!(derived.idempotency_key, IdempotencyKey::derive(ISS, "TX-1"));
        assert_eq!(derived.fingerprint, event.fingerprint);
        let batch = format!("[{single}]");
        assert_eq!(
            pipeline()
                .prepare(batch.as_bytes(), ISS, Some(key))
                .unwrap_err(),
            IngestError::KeyWithBatch
        );
        // Another issuer, another derived key.
        let other = pipeline()
            .prepare(single.as_bytes(), "other", None)
            .unwrap()
            .remove(0);
        assert_ne!(other.idempotency_key, derived.idempotency_key);
    }

    #[test]
    fn same_content_same_fingerprint() {
        let a = one(r#"{"transaction_id":"t","event_type":"a","timestamp":1,"amount":1.0}"#);
        let b = one(
            "{ \"amount\" : 1.0,\n \"timestamp\":1, \"event_type\":\"\\u0061\", \"transaction_id\":\"t\" }",
        );
        let c = one(r#"{"transaction_id":"t","event_type":"a","timestamp":1,"amount":1}"#);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.idempotency_key, c.idempotency_key);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(
            a.fingerprint,
            super::super::fingerprint(
                r#"{"amount":1.0,"event_type":"a","timestamp":1,"transaction_id":"t"}"#
            )
            .unwrap()
        );
    }

    #[test]
    fn duplicate_keys_anywhere_refuse_the_request() {
        let dup = |body: &str| match prepare(body) {
            Err(IngestError::DuplicateKey { pointer }) => pointer,
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(
            dup(r#"{"transaction_id":"a","transaction_id":"b","event_type":"a","timestamp":1}"#),
            "/transaction_id"
        );
        assert_eq!(
            dup(&format!(
                r#"[{{{OK}}},{{{OK},"x":{{"y":[{{"k":1,"k":1}}]}}}}]"#
            )),
            "/1/x/y/0/k"
        );
        // Also inside an element that is not an event at all, and before any other problem.
        assert_eq!(dup(r#"[{"bad":true},[{"k":1,"k":2}]]"#), "/1/0/k");
    }

    #[test]
    fn bodies_that_are_not_json_or_not_events() {
        for bad in ["", "{", "{}{}", "[1,]", r#"{"a":"\ud800"}"#] {
            assert_eq!(prepare(bad).unwrap_err(), IngestError::Malformed, "{bad}");
        }
        assert_eq!(
            pipeline()
                .prepare(b"{\"a\":\"\xff\"}", ISS, None)
                .unwrap_err(),
            IngestError::Malformed
        );
        for body in ["42", r#""event""#, "null", "true"] {
            assert_eq!(problems(body), pairs(&[("", "type")]), "{body}");
        }
    }

    #[test]
    fn a_schema_file_from_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schemas")).unwrap();
        std::fs::write(
            dir.path().join("schemas/event.json"),
            r#"{"type":"object","required":["orderId"],"properties":{"orderId":{"type":"string","pattern":"^O-"}}}"#,
        )
        .unwrap();
        let source = ConfigSource {
            file: dir.path().join("gateway.toml"),
            base_dir: dir.path().to_path_buf(),
        };
        let mut s = settings();
        s.event_schema = Some(PathBuf::from("schemas/event.json"));
        let p = EventPipeline::from_settings(&s, &source).unwrap();
        assert_eq!(p.schema().document()["required"], json!(["orderId"]));
        let ok = r#"{"orderId":"O-1","event_type":"x","timestamp":"1714566600000"}"#;
        let key = IdempotencyKey::parse("k").unwrap();
        let event = p.prepare(ok.as_bytes(), ISS, Some(key)).unwrap().remove(0);
        assert_eq!(event.transaction_id, None);
        assert_eq!(
            format_event_time(event.event_time),
            "2024-05-01T12:30:00.000Z"
        );
        // The schema's rules and the mapping's needs, at once.
        let mut found = problems_of(p.prepare(br#"{"orderId":"X-1","event_type":7}"#, ISS, None));
        found.sort();
        assert_eq!(
            found,
            pairs(&[
                ("/event_type", "type"),
                ("/orderId", "pattern"),
                ("/timestamp", "required"),
                ("/transaction_id", "required"),
            ])
        );
        assert_eq!(
            problems_of(p.prepare(
                br#"{"orderId":"O-1","event_type":"x","timestamp":1,"transaction_id":5}"#,
                ISS,
                None
            )),
            pairs(&[("/transaction_id", "type")])
        );
    }

    #[test]
    fn schema_file_problems_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.json"), r#"{"type":12}"#).unwrap();
        std::fs::write(dir.path().join("text.json"), "not json").unwrap();
        let source = ConfigSource {
            file: dir.path().join("gateway.toml"),
            base_dir: dir.path().to_path_buf(),
        };
        for file in ["bad.json", "text.json", "missing.json"] {
            let mut s = settings();
            s.event_schema = Some(PathBuf::from(file));
            let problems = EventPipeline::from_settings(&s, &source).unwrap_err();
            assert_eq!(problems.len(), 1, "{file}");
            assert_eq!(problems[0].path, "ingest.event_schema", "{file}");
        }
    }

    #[test]
    fn details_are_bounded_but_every_invalid_event_is_counted() {
        let mut s = settings();
        s.max_batch = 2000;
        let p = EventPipeline::from_settings(&s, &ConfigSource::default()).unwrap();
        let body = format!("[{}]", vec!["{}"; 1500].join(","));
        match p.prepare(body.as_bytes(), ISS, None) {
            Err(IngestError::Invalid {
                total,
                invalid,
                details,
            }) => {
                assert_eq!((total, invalid), (1500, 1500));
                assert_eq!(details.len(), MAX_DETAILS);
                assert_eq!(details[0].field_name, "/0/transaction_id");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_shows_no_value() {
        let event = one(
            r#"{"transaction_id":"secret-tx","event_type":"a","timestamp":1,"card":"4111111111111111"}"#,
        );
        let text = format!("{event:?}");
        assert!(
            !text.contains("4111") && !text.contains("secret-tx"),
            "{text}"
        );
        assert!(text.contains("custom.legacy.orders.a"));
    }

    #[test]
    fn event_ids_parse_and_print() {
        let id = EventId::new_v7();
        assert_eq!(EventId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        assert!(EventId::parse("not-a-uuid").is_err());
        assert_eq!(serde_json::to_value(id).unwrap(), json!(id.to_string()));
    }

    /// A JSON value whose numbers are written in every way the grammar allows.
    fn json_value() -> impl Strategy<Value = String> {
        let number = "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?";
        let leaf = prop_oneof![
            number.prop_map(|n| n),
            "[a-z ]{0,8}".prop_map(|s| format!("\"{s}\"")),
            Just("true".to_owned()),
            Just("null".to_owned()),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|items| format!("[ {} ]", items.join(" , "))),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..6).prop_map(|m| {
                    let members: Vec<String> = m
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\" : {v}"))
                        .collect();
                    format!("{{ {} }}", members.join(" , "))
                }),
            ]
        })
    }

    /// Every number token of a JSON text, in order (strings in these texts hold no digits).
    fn number_tokens(json: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        let mut in_string = false;
        for c in json.chars() {
            if c == '"' {
                in_string = !in_string;
            }
            if !in_string && (c.is_ascii_digit() || "+-.eE".contains(c)) {
                current.push(c);
            } else if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    }

    proptest! {
        #[test]
        fn random_events_keep_every_number_text(
            fields in prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..8),
        ) {
            let extra: String = fields.iter().map(|(k, v)| format!(",\"f_{k}\":{v}")).collect();
            let body = format!(r#"{{"transaction_id":"t","event_type":"x","timestamp":"1714566600"{extra}}}"#);
            let event = one(&body);
            let out = delivered(&event);
            let data = &out[out.find(r#""data":"#).unwrap()..];
            prop_assert_eq!(number_tokens(data), number_tokens(&extra));
            // The delivered body is JSON (numbers beyond f64 included), `original_type` last;
            // the canonical form is JSON with the same content.
            prop_assert!(serde_json::from_str::<&RawValue>(&out).is_ok());
            prop_assert!(data.ends_with(r#""original_type":"x"}}"#));
            let canonical = super::super::canonical_form(&body).unwrap();
            prop_assert_eq!(super::super::fingerprint(&canonical).unwrap(), event.fingerprint);
        }
    }
}
