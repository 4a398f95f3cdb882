//! RFC 6901 JSON pointers, parsed once when an action is registered.
//!
//! A [`Pointer`] holds its reference tokens already unescaped (`~1` → `/`, `~0` → `~`) and, for
//! tokens that are canonical array indexes (`0`, `7`, `42`; never `07`), the index as a number,
//! so that reading and writing at request time do no parsing at all.
//!
//! # Reading
//! [`Pointer::get`] follows the tokens: on an object a token is a member name, on an array it
//! must be a canonical index inside the array. `-` ("past the last element") never finds
//! anything, and is refused by [`Pointer::parse_read`] at load time.
//!
//! # Writing (mapping targets)
//! [`Pointer::set`] writes a value into a document under construction, creating what is missing
//! on the way:
//! - a missing container is created as an **array** when the token that descends into it is an
//!   index or `-`, and as an **object** otherwise (`/items/0/id` creates `{"items":[{"id":…}]}`);
//! - an index past the end of an array pads the gap with `null` (so the order in which targets
//!   are written never changes the result);
//! - `-` appends, and is only allowed as the last token of a target;
//! - in a mapped body or output ([`Pointer::parse_object_target`]) the document is an object,
//!   so the first token is always a member name (`/0` writes `{"0": …}`).
//!
//! Targets are checked against each other at load ([`check_targets`]): none may be a prefix of
//! another and a container may not be addressed both by index and by name, so at request time
//! a write never meets a value of the wrong kind.

use std::fmt;

use serde_json::{Map, Value};

/// Largest array index a target may write (bounds the padding a target can cause).
pub const MAX_TARGET_INDEX: usize = 1024;

/// One reference token of a pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    /// The unescaped member name (also the text of an index).
    key: Box<str>,
    /// What the token means on an array.
    index: Index,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    /// A canonical non-negative integer.
    At(usize),
    /// `-`: past the last element.
    End,
    /// Not usable on an array.
    None,
}

/// A parsed RFC 6901 JSON pointer. `""` is the whole document.
#[derive(Clone, PartialEq, Eq)]
pub struct Pointer {
    text: Box<str>,
    tokens: Box<[Token]>,
}

/// Why a pointer could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    #[error("a JSON pointer must be empty or start with `/` (got `{0}`)")]
    NoLeadingSlash(String),
    /// `~` must be followed by `0` or `1`.
    #[error("`~` must be followed by 0 or 1 in a JSON pointer (`{0}`)")]
    BadEscape(String),
    /// `-` names no element when reading.
    #[error("`-` names no existing element and cannot be read (`{0}`)")]
    DashInRead(String),
    /// `-` is only allowed as the last token of a target.
    #[error("`-` (append) is only allowed as the last token of a target (`{0}`)")]
    DashNotLast(String),
    /// An index in a target is too large.
    #[error("array index above {MAX_TARGET_INDEX} in a target (`{0}`)")]
    IndexTooLarge(String),
}

impl Pointer {
    /// Parses a pointer used to read (`-` refused).
    ///
    /// # Errors
    /// When the text is not an RFC 6901 pointer or contains a `-` token.
    pub fn parse_read(text: &str) -> Result<Self, PointerError> {
        let pointer = Self::parse(text)?;
        if pointer.tokens.iter().any(|t| t.index == Index::End) {
            return Err(PointerError::DashInRead(text.to_owned()));
        }
        Ok(pointer)
    }

    /// Parses a pointer used as a write target (`-` only last, indexes ≤ [`MAX_TARGET_INDEX`]).
    ///
    /// # Errors
    /// When the text is not an RFC 6901 pointer or breaks the target rules.
    pub fn parse_target(text: &str) -> Result<Self, PointerError> {
        let pointer = Self::parse(text)?;
        pointer.check_target(text)?;
        Ok(pointer)
    }

    /// Parses a write target inside a document that is always an object (a mapped output or
    /// body): like [`Self::parse_target`], except that the first token is always a member
    /// name, even when it looks like an index or `-` (`/0` writes `{"0": …}`, never `[…]`).
    ///
    /// # Errors
    /// As [`Self::parse_target`].
    pub fn parse_object_target(text: &str) -> Result<Self, PointerError> {
        let mut pointer = Self::parse(text)?;
        if let Some(first) = pointer.tokens.first_mut() {
            first.index = Index::None;
        }
        pointer.check_target(text)?;
        Ok(pointer)
    }

    fn check_target(&self, text: &str) -> Result<(), PointerError> {
        let last = self.tokens.len().saturating_sub(1);
        for (i, token) in self.tokens.iter().enumerate() {
            match token.index {
                Index::End if i != last => return Err(PointerError::DashNotLast(text.to_owned())),
                Index::At(n) if n > MAX_TARGET_INDEX => {
                    return Err(PointerError::IndexTooLarge(text.to_owned()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn parse(text: &str) -> Result<Self, PointerError> {
        if text.is_empty() {
            return Ok(Self::root());
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash(text.to_owned()));
        };
        let tokens = rest
            .split('/')
            .map(|raw| {
                let key = unescape(raw).ok_or_else(|| PointerError::BadEscape(text.to_owned()))?;
                let index = if key == "-" {
                    Index::End
                } else {
                    canonical_index(&key).map_or(Index::None, Index::At)
                };
                Ok(Token {
                    key: key.into_boxed_str(),
                    index,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.into(),
            tokens: tokens.into_boxed_slice(),
        })
    }

    /// The pointer to the whole document (`""`).
    pub fn root() -> Self {
        Self {
            text: "".into(),
            tokens: Box::new([]),
        }
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is the whole document.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The value this pointer names in `doc`, if any.
    pub fn get<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        let mut current = doc;
        for token in self.tokens.iter() {
            current = match current {
                Value::Object(map) => map.get(&*token.key)?,
                Value::Array(items) => match token.index {
                    Index::At(i) => items.get(i)?,
                    Index::End | Index::None => return None,
                },
                _ => return None,
            };
        }
        Some(current)
    }

    /// Writes `value` at this pointer in `doc`, creating missing containers (see the module
    /// docs). A value of the wrong kind met on the way is replaced; [`check_targets`] makes that
    /// impossible for the targets of one mapping.
    pub fn set(&self, doc: &mut Value, value: Value) {
        let Some((last, parents)) = self.tokens.split_last() else {
            *doc = value;
            return;
        };
        let mut current = doc;
        for (i, token) in parents.iter().enumerate() {
            let next = &self.tokens[i + 1];
            let child = child_slot(current, token);
            if !container_fits(child, next) {
                *child = empty_container(next);
            }
            current = child;
        }
        *child_slot(current, last) = value;
    }
}

/// The slot `token` names inside `container`, created (as `null`) when missing. `container`
/// must already have the kind the token needs; a value of another kind is replaced first.
fn child_slot<'v>(container: &'v mut Value, token: &Token) -> &'v mut Value {
    if !container_fits(container, token) {
        *container = empty_container(token);
    }
    match container {
        Value::Array(items) => {
            let at = match token.index {
                Index::At(i) => i,
                Index::End | Index::None => items.len(),
            };
            if items.len() <= at {
                items.resize(at + 1, Value::Null);
            }
            &mut items[at]
        }
        Value::Object(map) => map.entry(&*token.key).or_insert(Value::Null),
        // `container_fits` guarantees an array or an object.
        other => other,
    }
}

fn wants_array(token: &Token) -> bool {
    !matches!(token.index, Index::None)
}

fn container_fits(value: &Value, token: &Token) -> bool {
    match value {
        Value::Array(_) => wants_array(token),
        Value::Object(_) => !wants_array(token),
        _ => false,
    }
}

fn empty_container(token: &Token) -> Value {
    if wants_array(token) {
        Value::Array(Vec::new())
    } else {
        Value::Object(Map::new())
    }
}

impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pointer({:?})", &*self.text)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn unescape(raw: &str) -> Option<String> {
    if !raw.contains('~') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `0` or a digit string without a leading zero that fits a `usize`.
fn canonical_index(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    token.parse().ok()
}

/// Checks the targets of one mapping against each other. Returns `(target, message)` for each
/// target that conflicts with an earlier one: a target that is a prefix of another (one would
/// overwrite the other), or a container addressed both by index and by member name.
pub fn check_targets<'p>(targets: impl IntoIterator<Item = &'p Pointer>) -> Vec<(String, String)> {
    let targets: Vec<&Pointer> = targets.into_iter().collect();
    let mut problems = Vec::new();
    for (j, b) in targets.iter().enumerate() {
        for a in &targets[..j] {
            let common = a
                .tokens
                .iter()
                .zip(b.tokens.iter())
                .take_while(|(x, y)| x.key == y.key)
                .count();
            if common == a.tokens.len() || common == b.tokens.len() {
                problems.push((
                    b.as_str().to_owned(),
                    format!(
                        "overlaps the target `{}` (one would overwrite the other)",
                        a.as_str()
                    ),
                ));
            } else if (a.tokens[common].index == Index::End)
                != (b.tokens[common].index == Index::End)
                && wants_array(&a.tokens[common])
                && wants_array(&b.tokens[common])
            {
                problems.push((
                    b.as_str().to_owned(),
                    format!(
                        "mixes `-` (append) and an array index with `{}` in one array",
                        a.as_str()
                    ),
                ));
            } else if wants_array(&a.tokens[common]) != wants_array(&b.tokens[common]) {
                problems.push((
                    b.as_str().to_owned(),
                    format!(
                        "addresses the container at `{}` by {} while `{}` does by {}",
                        prefix_text(&b.tokens[..common]),
                        kind_word(&b.tokens[common]),
                        a.as_str(),
                        kind_word(&a.tokens[common]),
                    ),
                ));
            }
        }
    }
    problems
}

fn kind_word(token: &Token) -> &'static str {
    if wants_array(token) {
        "array index"
    } else {
        "member name"
    }
}

fn prefix_text(tokens: &[Token]) -> String {
    let mut out = String::new();
    for t in tokens {
        out.push('/');
        out.push_str(&crate::error::escape_pointer(&t.key));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_follow_rfc6901() {
        let doc = json!({
            "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4,
            "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8, "07": 9
        });
        let cases: &[(&str, Value)] = &[
            ("", doc.clone()),
            ("/foo", json!(["bar", "baz"])),
            ("/foo/0", json!("bar")),
            ("/", json!(0)),
            ("/a~1b", json!(1)),
            ("/c%d", json!(2)),
            ("/e^f", json!(3)),
            ("/g|h", json!(4)),
            ("/i\\j", json!(5)),
            ("/k\"l", json!(6)),
            ("/ ", json!(7)),
            ("/m~0n", json!(8)),
            ("/07", json!(9)),
        ];
        for (text, expected) in cases {
            let p = Pointer::parse_read(text).unwrap();
            assert_eq!(p.get(&doc), Some(expected), "{text}");
        }
        for missing in [
            "/foo/2",
            "/foo/01",
            "/foo/x",
            "/nope",
            "/foo/0/deeper",
            "/a~1b/x",
        ] {
            assert_eq!(
                Pointer::parse_read(missing).unwrap().get(&doc),
                None,
                "{missing}"
            );
        }
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            Pointer::parse_read("foo"),
            Err(PointerError::NoLeadingSlash(_))
        ));
        assert!(matches!(
            Pointer::parse_read("/a~2"),
            Err(PointerError::BadEscape(_))
        ));
        assert!(matches!(
            Pointer::parse_read("/a~"),
            Err(PointerError::BadEscape(_))
        ));
        assert!(matches!(
            Pointer::parse_read("/a/-"),
            Err(PointerError::DashInRead(_))
        ));
        assert!(matches!(
            Pointer::parse_target("/a/-/b"),
            Err(PointerError::DashNotLast(_))
        ));
        assert!(matches!(
            Pointer::parse_target("/a/5000"),
            Err(PointerError::IndexTooLarge(_))
        ));
        assert!(Pointer::parse_target("/a/-").is_ok());
        // `~01` is `~1` literally, not `/`.
        let p = Pointer::parse_read("/~01").unwrap();
        assert_eq!(p.get(&json!({"~1": true})), Some(&json!(true)));
    }

    #[test]
    fn writes_create_what_is_missing() {
        let mut doc = Value::Null;
        for (target, value) in [
            ("/customer/name", json!("Ann")),
            ("/customer/ids/1", json!("b")),
            ("/customer/ids/0", json!("a")),
            ("/tags/-", json!("vip")),
            ("/a~1b", json!(1)),
            ("/m~0n/x", json!(2)),
            ("/gap/2", json!(true)),
        ] {
            Pointer::parse_target(target).unwrap().set(&mut doc, value);
        }
        assert_eq!(
            doc,
            json!({
                "customer": {"name": "Ann", "ids": ["a", "b"]},
                "tags": ["vip"],
                "a/b": 1,
                "m~n": {"x": 2},
                "gap": [null, null, true]
            })
        );
        let mut whole = json!({"old": 1});
        Pointer::root().set(&mut whole, json!([1]));
        assert_eq!(whole, json!([1]));
    }

    #[test]
    fn object_targets_name_a_member_first() {
        let mut doc = Value::Object(Map::new());
        for (target, value) in [("/0", json!("a")), ("/-", json!("b")), ("/1/0", json!("c"))] {
            Pointer::parse_object_target(target)
                .unwrap()
                .set(&mut doc, value);
        }
        assert_eq!(doc, json!({"0": "a", "-": "b", "1": ["c"]}));
        assert!(Pointer::parse_object_target("/a/-/b").is_err());
        assert!(Pointer::parse_object_target("/a/5000").is_err());
        assert!(Pointer::parse_object_target("/5000").is_ok());
    }

    #[test]
    fn conflicting_targets_are_found() {
        let parse = |t: &[&str]| -> Vec<Pointer> {
            t.iter()
                .map(|t| Pointer::parse_target(t).unwrap())
                .collect()
        };
        assert!(check_targets(&parse(&["/a/b", "/a/c", "/d/0", "/d/1"])).is_empty());
        let p = check_targets(&parse(&["/a", "/a/b"]));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "/a/b");
        assert_eq!(check_targets(&parse(&["", "/x"])).len(), 1);
        assert_eq!(check_targets(&parse(&["/a/0", "/a/name"])).len(), 1);
        assert_eq!(check_targets(&parse(&["/a/-", "/a/x"])).len(), 1);
        assert_eq!(check_targets(&parse(&["/a/-", "/a/0"])).len(), 1);
    }
}
