//! The strict reading of a JSON body that every surface shares: the text must be JSON, and no
//! object may write a key twice (RFC 8259 leaves duplicates to the reader; the gateway refuses
//! them everywhere rather than keep the first or the last, so a body means one thing to the
//! gateway, to a schema and to whatever it is forwarded to).
//!
//! [`check`] makes one pass over the text with serde_json's lexer and keeps nothing but the
//! keys of the objects being read (borrowed from the text when they hold no escape), in one
//! stack shared by the whole walk. Small objects are checked pairwise, large ones sorted, so an
//! object with many keys costs `n log n`, not `n²`.
//!
//! A number beyond `f64`'s range (`1e400`) is valid JSON that serde_json's value reader
//! refuses; such a text (and any text the fast pass refuses) is judged again by a walk over raw
//! values, which accepts every number as written.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Why a text is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictError {
    /// Not JSON.
    Syntax,
    /// An object writes the key at `pointer` (RFC 6901) a second time.
    DuplicateKey {
        /// The pointer of the repeated key, e.g. `/customer/id`.
        pointer: String,
    },
}

/// Objects with at most this many keys are checked pairwise.
const PAIRWISE_MAX: usize = 16;

/// Checks that `bytes` is one JSON text with no duplicated object key.
///
/// # Errors
/// [`StrictError::Syntax`] or [`StrictError::DuplicateKey`] (the first found).
pub fn check(bytes: &[u8]) -> Result<(), StrictError> {
    let mut walk = Walk::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fast = Seed { walk: &mut walk }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match fast {
        Ok(()) => Ok(()),
        Err(_) if walk.duplicate.is_some() => Err(walk.duplicate_error()),
        Err(_) => check_raw(bytes),
    }
}

/// The slow judge (see the module docs): the same rules over raw values.
fn check_raw(bytes: &[u8]) -> Result<(), StrictError> {
    let text = std::str::from_utf8(bytes).map_err(|_| StrictError::Syntax)?;
    let raw: &RawValue = serde_json::from_str(text).map_err(|_| StrictError::Syntax)?;
    let mut segments = Vec::new();
    match raw_value(raw, &mut segments) {
        Ok(()) => Ok(()),
        Err(RawError::Syntax) => Err(StrictError::Syntax),
        Err(RawError::Duplicate) => Err(StrictError::DuplicateKey {
            pointer: pointer(&segments),
        }),
    }
}

enum RawError {
    Syntax,
    /// `segments` holds the path to the key, innermost first.
    Duplicate,
}

fn raw_value(raw: &RawValue, segments: &mut Vec<String>) -> Result<(), RawError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            let members: RawMembers<'_> =
                serde_json::from_str(text).map_err(|_| RawError::Syntax)?;
            let mut keys: Vec<Cow<'_, str>> = members.0.iter().map(|(k, _)| k.clone()).collect();
            if let Some(dup) = first_duplicate(&mut keys) {
                segments.push(dup.into_owned());
                return Err(RawError::Duplicate);
            }
            for (key, value) in &members.0 {
                raw_value(value, segments).inspect_err(|_| segments.push(key.to_string()))?;
            }
            Ok(())
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| RawError::Syntax)?;
            for (i, item) in items.into_iter().enumerate() {
                raw_value(item, segments).inspect_err(|_| segments.push(i.to_string()))?;
            }
            Ok(())
        }
        Some(b'"') => serde_json::from_str::<de::IgnoredAny>(text)
            .map(drop)
            .map_err(|_| RawError::Syntax),
        // Numbers, `true`, `false`, `null`: the raw reader validated them.
        Some(_) => Ok(()),
        None => Err(RawError::Syntax),
    }
}

/// An object's members as written, duplicates kept.
struct RawMembers<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> de::Deserialize<'de> for RawMembers<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(RawMembers(members))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The first key of `keys` written twice (reorders `keys` when it is long).
fn first_duplicate<'a>(keys: &mut [Cow<'a, str>]) -> Option<Cow<'a, str>> {
    if keys.len() <= PAIRWISE_MAX {
        for (i, key) in keys.iter().enumerate().skip(1) {
            if keys[..i].contains(key) {
                return Some(key.clone());
            }
        }
        return None;
    }
    keys.sort_unstable();
    keys.windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[1].clone())
}

/// RFC 6901 pointer of `segments` (innermost first).
fn pointer(segments: &[String]) -> String {
    let mut out = String::new();
    for segment in segments.iter().rev() {
        out.push('/');
        out.push_str(&crate::error::escape_pointer(segment));
    }
    out
}

/// An object key, borrowed from the text when it holds no escape.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> de::Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// The fast pass's state: the keys of the objects open now (a stack), and, once a duplicate is
/// found, the path to it (innermost first).
#[derive(Default)]
struct Walk<'de> {
    keys: Vec<Cow<'de, str>>,
    duplicate: Option<Vec<String>>,
}

impl Walk<'_> {
    fn duplicate_error(&self) -> StrictError {
        StrictError::DuplicateKey {
            pointer: pointer(self.duplicate.as_deref().unwrap_or_default()),
        }
    }
}

/// Reads one value of the fast pass.
struct Seed<'w, 'de> {
    walk: &'w mut Walk<'de>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            match seq.next_element_seed(Seed {
                walk: &mut *self.walk,
            }) {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(err) => {
                    if let Some(path) = &mut self.walk.duplicate {
                        path.push(index.to_string());
                    }
                    return Err(err);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let start = self.walk.keys.len();
        while let Some(Key(key)) = map.next_key()? {
            let at = self.walk.keys.len();
            self.walk.keys.push(key);
            if let Err(err) = map.next_value_seed(Seed {
                walk: &mut *self.walk,
            }) {
                if let Some(path) = &mut self.walk.duplicate {
                    path.push(self.walk.keys[at].to_string());
                }
                return Err(err);
            }
            // The value's own keys are popped: this object's keys are on top again.
            self.walk.keys.truncate(at + 1);
        }
        if let Some(dup) = first_duplicate(&mut self.walk.keys[start..]) {
            self.walk.duplicate = Some(vec![dup.into_owned()]);
            return Err(de::Error::custom("duplicate key"));
        }
        self.walk.keys.truncate(start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(text: &str) -> String {
        match check(text.as_bytes()) {
            Err(StrictError::DuplicateKey { pointer }) => pointer,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn valid_json_passes() {
        for text in [
            r#"{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}"#,
            "[]",
            "1",
            r#""x""#,
            r#"{"a\u0062":1,"ab2":2}"#,
            "{\"n\": 1e400, \"m\": -1e400}",
            "  {\"a\": null}  ",
        ] {
            assert_eq!(check(text.as_bytes()), Ok(()), "{text}");
        }
    }

    #[test]
    fn duplicates_are_found_anywhere_with_their_pointer() {
        assert_eq!(dup(r#"{"a":1,"a":2}"#), "/a");
        assert_eq!(dup(r#"{"x":{"b":1,"c":{},"b":2}}"#), "/x/b");
        assert_eq!(dup(r#"[0,{"k":[1,{"q":1,"q":1}]}]"#), "/1/k/1/q");
        assert_eq!(dup(r#"{"a/b":{"~":1,"~":1}}"#), "/a~1b/~0");
        // Escaped and plain spellings of one key are the same key.
        assert_eq!(dup(r#"{"ab":1,"a\u0062":2}"#), "/ab");
        // The slow judge finds them too.
        assert_eq!(dup(r#"{"n":1e400,"o":{"p":1,"p":2}}"#), "/o/p");
    }

    #[test]
    fn large_objects_are_sorted_not_compared_pairwise() {
        let mut text = String::from("{");
        for i in 0..5000 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k4321\":0}");
        assert_eq!(dup(&text), "/k4321");
        let ok = text.replace(",\"k4321\":0}", "}");
        assert_eq!(check(ok.as_bytes()), Ok(()));
    }

    #[test]
    fn not_json_is_a_syntax_error() {
        for text in ["{", "{\"a\":1}x", "", "{\"a\" 1}", "[1,]", "\"\\ud800\""] {
            let got = check(text.as_bytes());
            if text == "\"\\ud800\"" {
                // A lone surrogate: refused or not, never a duplicate.
                assert!(!matches!(got, Err(StrictError::DuplicateKey { .. })));
                continue;
            }
            assert_eq!(got, Err(StrictError::Syntax), "{text}");
        }
    }
}
