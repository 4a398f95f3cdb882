//! Reading an event's JSON the strict way, in one walk over the raw text: every object is checked
//! for duplicate keys, a [`Value`] is built for schema validation, and the canonical form is
//! written (into a SHA-256 for the [`Fingerprint`], or into a buffer for [`canonical_form`]).
//!
//! The walk recurses through [`RawValue`]s: each object or array is split into its members as
//! raw text, so every number is seen as written. Nothing here parses JSON by hand; serde_json
//! does all the lexing.
//!
//! # Canonical form
//! No whitespace; object members sorted by key (byte order of the UTF-8 text, after unescaping);
//! keys and strings unescaped, then written the way serde_json writes strings (only `"`, `\` and
//! control characters escaped); numbers exactly as written; `true`, `false`, `null`.
//!
//! # The validation value
//! Numbers are parsed as serde_json parses them (integers as `i64`/`u64`, anything else as the
//! nearest `f64`) — good enough for schema rules. A number beyond `f64`'s range (`1e400`) is
//! validated as `±f64::MAX`; its text is still delivered exactly.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use super::{Fingerprint, IngestError};
use crate::error::escape_pointer;

/// A JSON string, unescaped: borrowed from the input when it holds no escape.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// An object's members in the order written, duplicates kept so that they can be refused.
pub(crate) struct Members<'a>(pub(crate) Vec<(Text<'a>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Where the canonical form goes.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// One event object, read strictly.
pub(crate) struct EventContent<'a> {
    /// The top-level members as written (raw values, borrowed from the body).
    pub(crate) members: Vec<(Text<'a>, &'a RawValue)>,
    /// The event as a value, for schema validation.
    pub(crate) value: Map<String, Value>,
    /// SHA-256 of the canonical form.
    pub(crate) fingerprint: Fingerprint,
}

/// Reads one event object (`raw` must be an object); `pointer` is where it sits in the body
/// (`""` or `/3`), for the duplicate-key error.
///
/// # Errors
/// [`IngestError::DuplicateKey`] anywhere inside, [`IngestError::Malformed`] for a string that
/// is not valid Unicode.
pub(crate) fn read_event<'a>(
    raw: &'a RawValue,
    pointer: &str,
) -> Result<EventContent<'a>, IngestError> {
    let Members(members) = serde_json::from_str(raw.get()).map_err(|_| IngestError::Malformed)?;
    let mut walk = Walk::new(Sha256::new(), pointer);
    let value = walk.object(&members)?;
    Ok(EventContent {
        members,
        value,
        fingerprint: Fingerprint::from_bytes(walk.sink.finalize().into()),
    })
}

/// Checks any JSON value for duplicate keys (and strings that are not valid Unicode) without
/// keeping anything.
///
/// # Errors
/// As [`read_event`].
pub(crate) fn check_value(raw: &RawValue, pointer: &str) -> Result<(), IngestError> {
    struct Discard;
    impl Sink for Discard {
        fn put(&mut self, _: &[u8]) {}
    }
    Walk::new(Discard, pointer).value(raw).map(drop)
}

/// The canonical form of a JSON text (see the module docs): what two texts with the same
/// content have byte for byte in common. Event fingerprints are the SHA-256 of it.
///
/// # Errors
/// [`IngestError::Malformed`] when `json` is not JSON, [`IngestError::DuplicateKey`] when an
/// object repeats a key.
pub fn canonical_form(json: &str) -> Result<String, IngestError> {
    let raw: &RawValue = serde_json::from_str(json).map_err(|_| IngestError::Malformed)?;
    let mut walk = Walk::new(Vec::with_capacity(json.len()), "");
    walk.value(raw)?;
    String::from_utf8(walk.sink).map_err(|_| IngestError::Malformed)
}

/// The fingerprint of a JSON text: SHA-256 of its [`canonical_form`].
///
/// # Errors
/// As [`canonical_form`].
pub fn fingerprint(json: &str) -> Result<Fingerprint, IngestError> {
    let raw: &RawValue = serde_json::from_str(json).map_err(|_| IngestError::Malformed)?;
    let mut walk = Walk::new(Sha256::new(), "");
    walk.value(raw)?;
    Ok(Fingerprint::from_bytes(walk.sink.finalize().into()))
}

/// The recursive walk: writes the canonical form into `sink`, builds the value, tracks the
/// pointer of where it is.
struct Walk<S> {
    sink: S,
    pointer: String,
    scratch: Vec<u8>,
}

impl<S: Sink> Walk<S> {
    fn new(sink: S, pointer: &str) -> Self {
        Self {
            sink,
            pointer: pointer.to_owned(),
            scratch: Vec::new(),
        }
    }

    fn value(&mut self, raw: &RawValue) -> Result<Value, IngestError> {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'{') => {
                let Members(members) =
                    serde_json::from_str(text).map_err(|_| IngestError::Malformed)?;
                self.object(&members).map(Value::Object)
            }
            Some(b'[') => {
                let items: Vec<&RawValue> =
                    serde_json::from_str(text).map_err(|_| IngestError::Malformed)?;
                self.sink.put(b"[");
                let mut values = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    if i > 0 {
                        self.sink.put(b",");
                    }
                    let len = self.pointer.len();
                    self.pointer.push('/');
                    self.pointer.push_str(&i.to_string());
                    values.push(self.value(item)?);
                    self.pointer.truncate(len);
                }
                self.sink.put(b"]");
                Ok(Value::Array(values))
            }
            Some(b'"') => {
                let Text(s) = serde_json::from_str(text).map_err(|_| IngestError::Malformed)?;
                self.string(&s);
                Ok(Value::String(s.into_owned()))
            }
            Some(b't') => {
                self.sink.put(b"true");
                Ok(Value::Bool(true))
            }
            Some(b'f') => {
                self.sink.put(b"false");
                Ok(Value::Bool(false))
            }
            Some(b'n') => {
                self.sink.put(b"null");
                Ok(Value::Null)
            }
            Some(_) => {
                self.sink.put(text.as_bytes());
                Ok(Value::Number(number(text)))
            }
            None => Err(IngestError::Malformed),
        }
    }

    fn object(
        &mut self,
        members: &[(Text<'_>, &RawValue)],
    ) -> Result<Map<String, Value>, IngestError> {
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| members[a].0.cmp(&members[b].0));
        if let Some(pair) = order
            .windows(2)
            .find(|pair| members[pair[0]].0 == members[pair[1]].0)
        {
            let Text(key) = &members[pair[1]].0;
            return Err(IngestError::DuplicateKey {
                pointer: format!("{}/{}", self.pointer, escape_pointer(key)),
            });
        }
        let mut map = Map::new();
        self.sink.put(b"{");
        for (n, &i) in order.iter().enumerate() {
            let (Text(key), raw) = &members[i];
            if n > 0 {
                self.sink.put(b",");
            }
            self.string(key);
            self.sink.put(b":");
            let len = self.pointer.len();
            self.pointer.push('/');
            self.pointer.push_str(&escape_pointer(key));
            let value = self.value(raw)?;
            self.pointer.truncate(len);
            map.insert(key.as_ref().to_owned(), value);
        }
        self.sink.put(b"}");
        Ok(map)
    }

    /// Writes `s` as serde_json writes a string.
    fn string(&mut self, s: &str) {
        self.scratch.clear();
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.scratch, s);
        self.sink.put(&self.scratch);
    }
}

/// A number for validation; beyond `f64`'s range it saturates to `±f64::MAX`.
fn number(text: &str) -> Number {
    text.parse::<Number>().unwrap_or_else(|_| {
        let max = if text.starts_with('-') {
            f64::MIN
        } else {
            f64::MAX
        };
        Number::from_f64(max).unwrap_or_else(|| Number::from(0))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canon(json: &str) -> String {
        canonical_form(json).unwrap()
    }

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        assert_eq!(
            canon(r#" { "b" : [ 1 , { "z":null, "a":true } ], "a" : "x" } "#),
            r#"{"a":"x","b":[1,{"a":true,"z":null}]}"#
        );
        assert_eq!(canon("[]"), "[]");
        assert_eq!(canon("{}"), "{}");
        assert_eq!(canon(" false "), "false");
    }

    #[test]
    fn numbers_keep_their_text() {
        assert_eq!(
            canon(
                r#"{"a":1.0,"b":1,"c":-0,"d":1E+5,"e":1234567890.12345678901,"f":123456789012345678901234567890,"g":1e400}"#
            ),
            r#"{"a":1.0,"b":1,"c":-0,"d":1E+5,"e":1234567890.12345678901,"f":123456789012345678901234567890,"g":1e400}"#
        );
    }

    #[test]
    fn strings_are_unescaped_then_written_one_way() {
        assert_eq!(canon(r#""\u0041\/\u00e9\n""#), "\"A/é\\n\"");
        assert_eq!(canon(r#"{"\u0062":1,"a":2}"#), r#"{"a":2,"b":1}"#);
        assert_eq!(canon(r#""\u001f""#), r#""\u001f""#);
    }

    #[test]
    fn fingerprints_ignore_order_whitespace_and_escapes_but_not_number_text() {
        let f = |s: &str| fingerprint(s).unwrap();
        assert_eq!(f(r#"{"a":1,"b":[2,3]}"#), f("{ \"b\" : [2, 3],\n\"a\":1 }"));
        assert_eq!(f(r#"{"s":"caf\u00e9"}"#), f(r#"{"s":"café"}"#));
        assert_eq!(f(r#"{"s":"A"}"#), f(r#"{"\u0073":"\u0041"}"#));
        assert_ne!(f(r#"{"a":1.0}"#), f(r#"{"a":1}"#));
        assert_ne!(f(r#"{"a":1e2}"#), f(r#"{"a":100}"#));
        assert_ne!(f(r#"{"a":[1,2]}"#), f(r#"{"a":[2,1]}"#));
        assert_ne!(f(r#"{"a":"1"}"#), f(r#"{"a":1}"#));
        assert_ne!(f(r#"{"a":{}}"#), f(r#"{"a":[]}"#));
        // The hash is the SHA-256 of the canonical form.
        let text = r#"{ "b": 2, "a": 1 }"#;
        assert_eq!(
            f(text).as_bytes().as_slice(),
            Sha256::digest(canon(text).as_bytes()).as_slice()
        );
    }

    #[test]
    fn duplicate_keys_are_refused_anywhere_with_their_pointer() {
        let dup = |s: &str| match canonical_form(s) {
            Err(IngestError::DuplicateKey { pointer }) => pointer,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(dup(r#"{"a":1,"a":1}"#), "/a");
        assert_eq!(dup(r#"{"a":1,"\u0061":2}"#), "/a");
        assert_eq!(dup(r#"{"x":[0,{"k/1":1,"k/1":2}]}"#), "/x/1/k~11");
        assert_eq!(dup(r#"[{"t~":{"b":1,"b":2}}]"#), "/0/t~0/b");
        let raw: &RawValue = serde_json::from_str(r#"[1,{"a":{"b":0,"b":0}}]"#).unwrap();
        assert_eq!(
            check_value(raw, "/7"),
            Err(IngestError::DuplicateKey {
                pointer: "/7/1/a/b".into()
            })
        );
    }

    #[test]
    fn invalid_json_is_malformed() {
        for bad in ["", "{", r#"{"a":}"#, r#""\ud800""#, "[1,]", "{} {}"] {
            assert_eq!(canonical_form(bad), Err(IngestError::Malformed), "{bad}");
        }
    }

    #[test]
    fn events_read_into_members_value_and_fingerprint() {
        let text = r#"{"b":1.50,"a":{"n":[1,2.0]},"s":"x\u0041"}"#;
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        let event = read_event(raw, "/0").unwrap();
        let names: Vec<&str> = event.members.iter().map(|(k, _)| k.0.as_ref()).collect();
        assert_eq!(names, ["b", "a", "s"]);
        assert_eq!(event.members[0].1.get(), "1.50");
        assert_eq!(
            Value::Object(event.value),
            json!({"b": 1.5, "a": {"n": [1, 2.0]}, "s": "xA"})
        );
        assert_eq!(event.fingerprint, fingerprint(text).unwrap());
        let raw: &RawValue = serde_json::from_str(r#"{"a":{"b":1,"b":2}}"#).unwrap();
        assert!(matches!(
            read_event(raw, "/4"),
            Err(IngestError::DuplicateKey { pointer }) if pointer == "/4/a/b"
        ));
    }

    #[test]
    fn numbers_beyond_f64_validate_as_the_largest() {
        assert_eq!(number("1e400").as_f64(), Some(f64::MAX));
        assert_eq!(number("-1e400").as_f64(), Some(f64::MIN));
        assert_eq!(number("12").as_u64(), Some(12));
        assert_eq!(number("-3").as_i64(), Some(-3));
        assert_eq!(number("1.5").as_f64(), Some(1.5));
    }
}
