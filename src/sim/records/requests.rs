//! The request log: every request received but the control calls (so the deliveries to the
//! receivers too), as received — method,
//! path, query, headers with `authorization` redacted to its scheme, and the body with
//! secret-looking fields redacted.
//!
//! The log is bounded, because the simulator also runs inside the sandbox gateway for days and
//! records requests before any auth check: it keeps the last [`MAX_RECORDED`] requests and at
//! most [`MAX_RECORDED_BYTES`] in all (the oldest entries go first), and of each body at most
//! [`MAX_RECORDED_BODY`] bytes — a longer body is kept as the text of its beginning, with
//! `"bodyTruncated": true` and `"bodySize"` (the bytes received) in the entry. Bodies are stored
//! as text (JSON re-serialized after redaction) and parsed back when listed.

use chrono::{SecondsFormat, Utc};
use http::header;
use http::request::Parts;
use serde_json::{Map, Value, json};
use wildmatch::WildMatch;

use super::bounded_log::{BoundedLog, Weighed};

/// Requests the log keeps; older ones are dropped (a sandbox may run for days).
pub(crate) const MAX_RECORDED: usize = 10_000;
/// Bytes of one request body the log keeps; a longer body is cut (`bodyTruncated`).
pub(crate) const MAX_RECORDED_BODY: usize = 64 * 1024;
/// Bytes the whole log keeps (bodies, headers, paths, queries); older entries are dropped.
pub(crate) const MAX_RECORDED_BYTES: usize = 32 * 1024 * 1024;
/// What an entry and each of its headers cost on top of their text, in the byte count.
const ENTRY_OVERHEAD: usize = 128;
const HEADER_OVERHEAD: usize = 32;

/// A recorded body, kept as text (a parsed `Value` can take many times its text's size).
#[derive(Debug, Clone, PartialEq, Eq)]
enum RecordedBody {
    /// No body.
    Empty,
    /// A JSON body, redacted and re-serialized.
    Json(String),
    /// Any other body (or the beginning of a truncated one), redacted.
    Text(String),
}

impl RecordedBody {
    fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::Json(text) | Self::Text(text) => text.len(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Empty => Value::Null,
            Self::Json(text) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
            Self::Text(text) => Value::String(text.clone()),
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct RecordedRequest {
    method: String,
    path: String,
    query: String,
    headers: Map<String, Value>,
    body: RecordedBody,
    /// The size of the body received, when `body` holds only its beginning.
    truncated_from: Option<usize>,
    at: String,
}

impl RecordedRequest {
    /// The entry of a request with these head `parts` and this body, received now.
    pub fn new(parts: &Parts, bytes: &[u8]) -> Self {
        let (body, truncated_from) = recorded_body(bytes);
        Self {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: recorded_headers(&parts.headers),
            body,
            truncated_from,
            at: now_text(),
        }
    }

    /// Whether the request's path matches `glob` (when given) and its method is `method` (when
    /// given, upper case).
    pub fn matches(&self, glob: Option<&WildMatch>, method: Option<&str>) -> bool {
        glob.is_none_or(|g| g.matches(&self.path)) && method.is_none_or(|m| m == self.method)
    }

    /// The entry as listed by `GET /__sim/requests`.
    pub fn to_json(&self) -> Value {
        let mut entry = json!({
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body.to_json(),
            "at": self.at,
        });
        if let Some(size) = self.truncated_from {
            entry["bodyTruncated"] = json!(true);
            entry["bodySize"] = json!(size);
        }
        entry
    }
}

impl Weighed for RecordedRequest {
    /// What the entry counts for in [`MAX_RECORDED_BYTES`].
    fn weight(&self) -> usize {
        ENTRY_OVERHEAD
            + self.method.len()
            + self.path.len()
            + self.query.len()
            + self.at.len()
            + headers_weight(&self.headers)
            + self.body.len()
    }
}

/// What recorded headers count for in a log's byte bound.
pub(crate) fn headers_weight(headers: &Map<String, Value>) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.len() + value.as_str().map_or(0, str::len) + HEADER_OVERHEAD)
        .sum()
}

/// The request log: the last requests received, bounded in count and in bytes.
pub(crate) type RequestLog = BoundedLog<RecordedRequest>;

impl Default for RequestLog {
    fn default() -> Self {
        Self::new(MAX_RECORDED, MAX_RECORDED_BYTES)
    }
}

/// The current time as recorded (`2026-01-01T00:00:00.000Z`).
fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The headers as recorded: each name once, its values joined with `, `, `authorization`
/// shown as `<scheme> [REDACTED]`.
pub(crate) fn recorded_headers(headers: &http::HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
                if name == header::AUTHORIZATION {
                    match text.split_once(' ') {
                        Some((scheme, _)) => format!("{scheme} [REDACTED]"),
                        None => "[REDACTED]".to_owned(),
                    }
                } else {
                    text
                }
            })
            .collect();
        out.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    out
}

/// Whether a body field holds a secret (`client_secret`, `password`, ...).
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("secret") || key.contains("password")
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if secret_key(key) && !v.is_null() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

const REDACTED: &str = "[REDACTED]";

/// The body to record and, when it is longer than [`MAX_RECORDED_BODY`], the size received:
/// JSON when it is JSON, else text — the beginning of the body when it is too long; either way
/// with secret-looking fields (JSON keys or form fields containing `secret` or `password`)
/// redacted.
fn recorded_body(bytes: &[u8]) -> (RecordedBody, Option<usize>) {
    if bytes.is_empty() {
        return (RecordedBody::Empty, None);
    }
    if bytes.len() <= MAX_RECORDED_BODY
        && let Ok(mut value) = serde_json::from_slice::<Value>(bytes)
    {
        redact(&mut value);
        let mut text = value.to_string();
        // Redaction and escapes may make it longer than what was received.
        if text.len() <= MAX_RECORDED_BODY {
            return (RecordedBody::Json(text), None);
        }
        cut(&mut text);
        return (RecordedBody::Text(text), Some(bytes.len()));
    }
    let (kept, truncated_from) = if bytes.len() > MAX_RECORDED_BODY {
        (utf8_prefix(&bytes[..MAX_RECORDED_BODY]), Some(bytes.len()))
    } else {
        (bytes, None)
    };
    let text = String::from_utf8_lossy(kept);
    let mut redacted = if text.trim_start().starts_with(['{', '[']) {
        redact_json_text(&text)
    } else {
        redact_form(&text)
    };
    if redacted.len() > MAX_RECORDED_BODY {
        cut(&mut redacted);
        return (RecordedBody::Text(redacted), Some(bytes.len()));
    }
    (RecordedBody::Text(redacted), truncated_from)
}

/// Cuts `text` to at most [`MAX_RECORDED_BODY`] bytes, on a char boundary.
fn cut(text: &mut String) {
    let mut end = MAX_RECORDED_BODY.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// `bytes` without a UTF-8 sequence cut at its end.
fn utf8_prefix(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Err(err) if err.error_len().is_none() => &bytes[..err.valid_up_to()],
        _ => bytes,
    }
}

/// A form body with its secret-looking fields redacted (as is when it has none).
fn redact_form(text: &str) -> String {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !pairs.iter().any(|(k, _)| secret_key(k)) {
        return text.to_owned();
    }
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| {
            (
                k.as_str(),
                if secret_key(k) { REDACTED } else { v.as_str() },
            )
        }))
        .finish()
}

/// JSON text that may be cut short or malformed, with the value of every secret-looking member
/// (`"<key>": <value>`, `null` kept) replaced by `"[REDACTED]"` — up to the end of the text when
/// it ends inside that value.
fn redact_json_text(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let end = string_end(b, i);
        let colon = skip_json_whitespace(b, end);
        if end < b.len() && b.get(colon) == Some(&b':') && secret_key(&text[i + 1..end - 1]) {
            let value = skip_json_whitespace(b, colon + 1);
            if !text[value..].starts_with("null") {
                let value_end = json_value_end(b, value);
                out.push_str(&text[copied..value]);
                out.push('"');
                out.push_str(REDACTED);
                out.push('"');
                copied = value_end;
                i = value_end;
                continue;
            }
        }
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Just past the string starting with the `"` at `start`, or the end of `b` when unterminated.
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn skip_json_whitespace(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// Just past the JSON value starting at `start` (a string, an object or array with everything
/// in it, or a scalar), or the end of `b` when it is cut short.
fn json_value_end(b: &[u8], start: usize) -> usize {
    match b.get(start) {
        None => b.len(),
        Some(b'"') => string_end(b, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = start;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = string_end(b, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            b.len()
        }
        Some(_) => {
            let mut i = start;
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']') && !b[i].is_ascii_whitespace()
            {
                i += 1;
            }
            i
        }
    }
}

/// The beginning of a body as text, at most [`MAX_RECORDED_BODY`] bytes (invalid UTF-8
/// replaced), and the size received when it was cut.
pub(crate) fn text_prefix(bytes: &[u8]) -> (String, Option<usize>) {
    if bytes.len() <= MAX_RECORDED_BODY {
        return (String::from_utf8_lossy(bytes).into_owned(), None);
    }
    let mut text = String::from_utf8_lossy(utf8_prefix(&bytes[..MAX_RECORDED_BODY])).into_owned();
    // Replacement characters may make it longer than the bytes it stands for.
    cut(&mut text);
    (text, Some(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, body: &[u8]) -> RecordedRequest {
        let (body, truncated_from) = recorded_body(body);
        RecordedRequest {
            method: "POST".to_owned(),
            path: path.to_owned(),
            query: String::new(),
            headers: Map::new(),
            body,
            truncated_from,
            at: "2026-01-01T00:00:00.000Z".to_owned(),
        }
    }

    fn paths(log: &RequestLog) -> Vec<&str> {
        log.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn the_log_drops_its_oldest_entries_beyond_its_count_or_its_bytes() {
        let mut log = RequestLog::new(3, usize::MAX);
        for path in ["/1", "/2", "/3", "/4"] {
            log.push(entry(path, b""));
        }
        assert_eq!(paths(&log), ["/2", "/3", "/4"]);

        let one = entry("/a", &[b'x'; 1000]).weight();
        let mut log = RequestLog::new(100, 3 * one);
        for path in ["/a", "/b", "/c", "/d"] {
            log.push(entry(path, &[b'x'; 1000]));
        }
        assert_eq!(paths(&log), ["/b", "/c", "/d"]);
        assert_eq!(log.bytes(), 3 * one);
        // A larger entry pushes out as many as it needs.
        log.push(entry("/big", &[b'x'; 2000]));
        assert_eq!(paths(&log), ["/d", "/big"]);
        assert!(log.bytes() <= 3 * one);
        log.clear();
        assert_eq!(log.bytes(), 0);
        assert!(paths(&log).is_empty());
    }

    #[test]
    fn the_default_log_stays_within_its_byte_bound_with_bodies_at_their_cap() {
        let mut log = RequestLog::default();
        let body = vec![b'x'; 16 * 1024 * 1024];
        for i in 0..(MAX_RECORDED_BYTES / MAX_RECORDED_BODY + 10) {
            log.push(entry(&format!("/{i}"), &body));
        }
        assert!(log.bytes() <= MAX_RECORDED_BYTES);
        assert_eq!(
            log.bytes(),
            log.iter().map(RecordedRequest::weight).sum::<usize>()
        );
        assert!(log.len() < MAX_RECORDED_BYTES / MAX_RECORDED_BODY);
        let last = log.iter().last().unwrap();
        assert_eq!(last.body.len(), MAX_RECORDED_BODY);
        assert_eq!(last.truncated_from, Some(body.len()));
    }

    #[test]
    fn a_long_body_keeps_its_beginning_with_its_secrets_redacted() {
        let pad = "é".repeat(MAX_RECORDED_BODY);
        let body = format!(r#"{{"user": "u", "client_secret": "s3cr3t", "pad": "{pad}"}}"#);
        let (kept, truncated_from) = recorded_body(body.as_bytes());
        assert_eq!(truncated_from, Some(body.len()));
        let RecordedBody::Text(text) = kept else {
            panic!("{kept:?}")
        };
        assert!(text.len() <= MAX_RECORDED_BODY);
        assert!(text.starts_with(r#"{"user": "u", "client_secret": "[REDACTED]", "pad": "éé"#));
        assert!(!text.contains("s3cr3t"));

        // Cut inside a secret value: nothing of it is kept.
        let body = format!(r#"{{"password": "{}"}}"#, "p".repeat(2 * MAX_RECORDED_BODY));
        let (kept, _) = recorded_body(body.as_bytes());
        assert_eq!(
            kept,
            RecordedBody::Text(r#"{"password": "[REDACTED]""#.to_owned())
        );

        // A long form body.
        let body = format!("client_secret=s3cr3t&pad={}", "x".repeat(MAX_RECORDED_BODY));
        let (kept, truncated_from) = recorded_body(body.as_bytes());
        assert_eq!(truncated_from, Some(body.len()));
        let RecordedBody::Text(text) = kept else {
            panic!("{kept:?}")
        };
        assert!(
            text.starts_with("client_secret=%5BREDACTED%5D&pad=xxx"),
            "{text}"
        );
    }

    #[test]
    fn json_that_redaction_makes_longer_than_the_cap_is_cut_too() {
        let members: Vec<String> = (0..4000).map(|i| format!(r#""secret{i}":0"#)).collect();
        let body = format!("{{{}}}", members.join(","));
        assert!(body.len() <= MAX_RECORDED_BODY);
        let (kept, truncated_from) = recorded_body(body.as_bytes());
        assert_eq!(truncated_from, Some(body.len()));
        let RecordedBody::Text(text) = kept else {
            panic!("{kept:?}")
        };
        assert!(text.len() <= MAX_RECORDED_BODY);
        assert!(
            text.starts_with(r#"{"secret0":"[REDACTED]","#),
            "{}",
            &text[..40]
        );
    }

    #[test]
    fn secret_members_of_json_text_are_redacted_whatever_their_value() {
        let cases = [
            (
                r#"{"a": {"Password" : {"x": [1, "}"]}, "b": 2}, "secretKey": 12, "n": null}"#,
                r#"{"a": {"Password" : "[REDACTED]", "b": 2}, "secretKey": "[REDACTED]", "n": null}"#,
            ),
            (
                r#"[{"secret": null, "k\"secret": "v", "x": "secret"}]"#,
                r#"[{"secret": null, "k\"secret": "[REDACTED]", "x": "secret"}]"#,
            ),
            (r#"{"secret": tru"#, r#"{"secret": "[REDACTED]""#),
            (r#"{"secret":"#, r#"{"secret":"[REDACTED]""#),
            (r#"{"secr"#, r#"{"secr"#),
        ];
        for (text, redacted) in cases {
            assert_eq!(redact_json_text(text), redacted, "{text}");
        }
        // Malformed JSON within the cap is redacted as JSON text too.
        let (kept, truncated_from) = recorded_body(br#"{"client_secret": "s", "#);
        assert_eq!(truncated_from, None);
        assert_eq!(
            kept,
            RecordedBody::Text(r#"{"client_secret": "[REDACTED]", "#.to_owned())
        );
    }
}
