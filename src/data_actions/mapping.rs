//! The mapping language of `[[actions]]`, compiled once into plans.
//!
//! # Sources
//! A value comes from a [`MappingSource`]:
//! - `"/pointer"` — an RFC 6901 pointer into the source document (the action's input for
//!   `params`, `query`, `headers` and `body`; the upstream's answer for `output`);
//! - `{ from = "/pointer", default = <any JSON>, required = true }` — with a default used when
//!   the pointer finds nothing, and/or a required flag;
//! - `{ value = <literal> }` — a constant.
//!
//! A pointer that finds nothing and has no default is **omitted** (the target, query parameter
//! or header is not written), or, with `required = true`, fails the call: 400 `invalid.input`
//! naming the pointer for the input, 422 `output.invalid` for the upstream's answer. A JSON
//! `null` that is present is a value: it is copied as `null` into bodies and outputs, and counts
//! as missing where a string is needed (params, query, headers).
//!
//! # Targets
//! - `params`: placeholder → pointer, always required. The value must be a string, a number or a
//!   boolean; it is rendered as text and percent-encoded as **one** path segment (everything but
//!   `A-Z a-z 0-9 - . _ ~` is encoded, so `/`, `?`, `#` can never change the URL's shape). Empty,
//!   `.` and `..` are refused (400), since they would change which resource is addressed.
//! - `query`: name → source. Strings, numbers and booleans become one parameter; an array of
//!   them repeats the parameter; `null`, objects and missing values are omitted (objects and
//!   nested arrays fail with 400). Names and values are percent-encoded. Literals and defaults
//!   are checked against these rules at load.
//! - `headers`: name → source; names, literal values and defaults are validated at load (a
//!   default that could never be sent is a load problem, not a 400 blamed on every caller),
//!   values from the input at request time (400 when not a valid header value). Literal values
//!   are marked sensitive.
//! - `body`: target pointer → source, written into a new JSON document (see
//!   [`super::pointer`] for how containers and array indexes are created). Without a `body`
//!   table, POST, PUT and PATCH forward the input bytes exactly as received (never
//!   re-serialised); GET and DELETE send no body.
//! - `output`: target pointer → source into the upstream's answer. Without an `output` table the
//!   upstream's bytes are answered unchanged (an empty answer becomes `{}`; a body that is not
//!   JSON is an upstream error).
//!
//! # Plans
//! Everything is prepared when the action is built: pointers are parsed, the path template is
//! split into literal and placeholder pieces, query names are encoded, header names and literal
//! values are validated. At request time rendering only reads the input and appends to buffers.
//!
//! The plans' `Debug` never shows a literal or a default (see [`Source`]): those may hold
//! credentials interpolated from `${VAR}`.

use std::fmt;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::pointer::{Pointer, PointerError, check_targets};
use crate::config::MappingSource;
use crate::error::ErrorDetail;

/// Everything but RFC 3986 unreserved characters: what a path segment or a query component may
/// carry without changing the URL's shape.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Headers an action may not set: the HTTP client and the upstream stack own them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "authorization",
];

impl MappingSource {
    /// A pointer source (`"/pointer"`).
    pub fn pointer(pointer: impl Into<String>) -> Self {
        Self::Pointer(pointer.into())
    }

    /// A pointer source that fails the call when the pointer finds nothing.
    pub fn required(pointer: impl Into<String>) -> Self {
        Self::From {
            from: pointer.into(),
            default: None,
            required: true,
        }
    }

    /// A pointer source with a default for when the pointer finds nothing.
    pub fn or_default(pointer: impl Into<String>, default: Value) -> Self {
        Self::From {
            from: pointer.into(),
            default: Some(default),
            required: false,
        }
    }

    /// A literal value.
    pub fn literal(value: impl Into<Value>) -> Self {
        Self::Value {
            value: value.into(),
        }
    }
}

impl From<&str> for MappingSource {
    fn from(pointer: &str) -> Self {
        Self::Pointer(pointer.to_owned())
    }
}

impl From<String> for MappingSource {
    fn from(pointer: String) -> Self {
        Self::Pointer(pointer)
    }
}

/// A compiled [`MappingSource`].
///
/// Its `Debug` never shows a literal or a default: either may come from `${VAR}` and hold a
/// credential (`X-Api-Key = { value = "${CRM_KEY}" }`).
#[derive(Clone)]
pub struct Source {
    kind: SourceKind,
}

#[derive(Clone)]
enum SourceKind {
    Pointer {
        pointer: Pointer,
        default: Option<Value>,
        required: bool,
    },
    Literal(Value),
}

/// Stands for a value `Debug` does not show.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SourceKind::Pointer {
                pointer,
                default,
                required,
            } => f
                .debug_struct("Source")
                .field("from", pointer)
                .field("default", &default.as_ref().map(|_| Redacted))
                .field("required", required)
                .finish(),
            SourceKind::Literal(_) => f.debug_tuple("Literal").field(&Redacted).finish(),
        }
    }
}

/// What a source finds in a document.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A value (found, defaulted or literal).
    Found(&'a Value),
    /// Nothing, and the source is optional: the target is omitted.
    Absent,
    /// Nothing, and the source is required: the call fails naming this pointer.
    Missing(&'a Pointer),
}

impl Source {
    /// Compiles a source.
    ///
    /// # Errors
    /// When its pointer is not a valid RFC 6901 pointer for reading.
    pub fn compile(source: &MappingSource) -> Result<Self, PointerError> {
        let kind = match source {
            MappingSource::Pointer(text) => SourceKind::Pointer {
                pointer: Pointer::parse_read(text)?,
                default: None,
                required: false,
            },
            MappingSource::From {
                from,
                default,
                required,
            } => SourceKind::Pointer {
                pointer: Pointer::parse_read(from)?,
                default: default.clone(),
                required: *required,
            },
            MappingSource::Value { value } => SourceKind::Literal(value.clone()),
        };
        Ok(Self { kind })
    }

    /// The literal, when this source is one.
    fn literal(&self) -> Option<&Value> {
        match &self.kind {
            SourceKind::Literal(v) => Some(v),
            SourceKind::Pointer { .. } => None,
        }
    }

    /// The value fixed at load that a lookup may answer — the literal or the default — and
    /// which of the two it is (for load-time messages).
    fn fixed(&self) -> Option<(&'static str, &Value)> {
        match &self.kind {
            SourceKind::Literal(v) => Some(("a literal", v)),
            SourceKind::Pointer {
                default: Some(v), ..
            } => Some(("a default", v)),
            SourceKind::Pointer { default: None, .. } => None,
        }
    }

    /// Looks the source up in `doc`. `null_is_missing` makes a present `null` count as nothing
    /// (where a string is needed).
    pub fn lookup<'a>(&'a self, doc: &'a Value, null_is_missing: NullIs) -> Lookup<'a> {
        match &self.kind {
            SourceKind::Literal(v) => Lookup::Found(v),
            SourceKind::Pointer {
                pointer,
                default,
                required,
            } => {
                let found = pointer
                    .get(doc)
                    .filter(|v| !(null_is_missing == NullIs::Missing && v.is_null()));
                match (found, default) {
                    (Some(v), _) | (None, Some(v)) => Lookup::Found(v),
                    (None, None) if *required => Lookup::Missing(pointer),
                    (None, None) => Lookup::Absent,
                }
            }
        }
    }
}

/// Whether a present JSON `null` counts as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullIs {
    /// `null` is copied as a value (bodies, outputs).
    Value,
    /// `null` counts as nothing (params, query, headers).
    Missing,
}

/// A set of target pointers, each with its source, written into a new document.
#[derive(Debug, Clone, Default)]
pub struct ObjectPlan {
    fields: Vec<(Pointer, Source)>,
}

impl ObjectPlan {
    /// Compiles `target → source` entries. Problems are `(target, message)` pairs.
    ///
    /// # Errors
    /// Every target or source that does not compile, and every pair of conflicting targets.
    pub fn compile<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a MappingSource)>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut fields = Vec::new();
        let mut problems = Vec::new();
        for (target, source) in entries {
            let t = Pointer::parse_object_target(target);
            let s = Source::compile(source);
            match (t, s) {
                (Ok(t), Ok(s)) => fields.push((t, s)),
                (t, s) => {
                    if let Err(e) = t {
                        problems.push((target.to_owned(), e.to_string()));
                    }
                    if let Err(e) = s {
                        problems.push((target.to_owned(), format!("source: {e}")));
                    }
                }
            }
        }
        problems.extend(check_targets(fields.iter().map(|(t, _)| t)));
        if problems.is_empty() {
            Ok(Self { fields })
        } else {
            Err(problems)
        }
    }

    /// How many targets the plan writes.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Builds the document from `source`: `{}` with every target whose source found something.
    ///
    /// # Errors
    /// One `required` detail per required source that found nothing.
    pub fn apply(&self, source: &Value) -> Result<Value, Vec<ErrorDetail>> {
        let mut out = Value::Object(serde_json::Map::with_capacity(self.fields.len()));
        let mut missing = Vec::new();
        for (target, src) in &self.fields {
            match src.lookup(source, NullIs::Value) {
                Lookup::Found(v) => target.set(&mut out, v.clone()),
                Lookup::Absent => {}
                Lookup::Missing(p) => missing.push(required_detail(p)),
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(missing)
        }
    }
}

fn required_detail(pointer: &Pointer) -> ErrorDetail {
    ErrorDetail::new(
        pointer.as_str(),
        "required",
        format!("`{pointer}` is required but missing."),
    )
}

/// One piece of a path template.
#[derive(Debug, Clone)]
enum Piece {
    Literal(Box<str>),
    Param { name: Box<str>, pointer: Pointer },
}

/// A parsed `path` with `{placeholder}`s, before its params are bound.
#[derive(Debug, Clone)]
pub struct PathTemplate {
    pieces: Vec<TemplatePiece>,
}

#[derive(Debug, Clone)]
enum TemplatePiece {
    Literal(String),
    Placeholder(String),
}

impl PathTemplate {
    /// Parses a path such as `/orders/{orderId}/lines?expand=all`.
    ///
    /// # Errors
    /// A message when the template is malformed: it must start with `/`, braces must pair up
    /// around a name of `[A-Za-z0-9_]`, and the literal parts must be valid URI characters.
    pub fn parse(path: &str) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err("must start with /".to_owned());
        }
        if path.contains('#') {
            return Err("must not contain a fragment (#)".to_owned());
        }
        let mut pieces = Vec::new();
        let mut rest = path;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("unmatched `}}` in `{path}`"));
            }
            if open > 0 {
                pieces.push(TemplatePiece::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{path}`"))?;
            let name = &after[..close];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "placeholder `{{{name}}}` must be a name of letters, digits and _"
                ));
            }
            pieces.push(TemplatePiece::Placeholder(name.to_owned()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(TemplatePiece::Literal(rest.to_owned()));
        }
        // The literal parts with every placeholder as `x` must make a valid path and query.
        let mut probe = String::with_capacity(path.len());
        for piece in &pieces {
            match piece {
                TemplatePiece::Literal(l) => probe.push_str(l),
                TemplatePiece::Placeholder(_) => probe.push('x'),
            }
        }
        if probe.parse::<http::uri::PathAndQuery>().is_err() || probe.contains(' ') {
            return Err(format!(
                "`{path}` is not a valid URL path (percent-encode special characters)"
            ));
        }
        Ok(Self { pieces })
    }

    /// The placeholder names, in order (a name may repeat).
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            TemplatePiece::Placeholder(name) => Some(name.as_str()),
            TemplatePiece::Literal(_) => None,
        })
    }
}

/// How a request header's value is produced. A literal is compiled once and marked sensitive
/// (never shown by `Debug`, never indexed by HTTP/2 header compression).
#[derive(Debug, Clone)]
enum HeaderSource {
    Literal(HeaderValue),
    Mapped(Source),
}

/// What to send as the upstream request body.
#[derive(Debug, Clone)]
pub enum BodyPlan {
    /// No body.
    Empty,
    /// The input bytes as received.
    PassThrough,
    /// A new document built from the input.
    Mapped(ObjectPlan),
}

/// The compiled request side of an action: path, query, headers and body.
#[derive(Debug, Clone)]
pub struct RequestPlan {
    pieces: Vec<Piece>,
    /// Bytes of the literal pieces (to size the buffer once).
    literal_len: usize,
    /// Whether the literal path already has a `?`.
    has_query: bool,
    query: Vec<(Box<str>, Source)>,
    headers: Vec<(HeaderName, HeaderSource)>,
    body: BodyPlan,
}

/// A problem found while compiling a request plan: the key path relative to the action
/// (`params.userId`, `query.limit`, `headers.X-Trace`, `path`) and a message.
pub type PlanProblem = (String, String);

/// The parts of an action's request side, as configured.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpec<'a> {
    /// The path template.
    pub path: &'a str,
    /// Placeholder → pointer.
    pub params: &'a [(String, String)],
    /// Query name → source.
    pub query: &'a [(String, MappingSource)],
    /// Header name → source.
    pub headers: &'a [(String, MappingSource)],
    /// Body target → source; `None`: forward the input (methods with a body) or send nothing.
    pub body: Option<&'a [(String, MappingSource)]>,
    /// Whether the method carries a body by default (POST, PUT, PATCH).
    pub method_has_body: bool,
    /// Whether the method may carry a body at all (not GET).
    pub method_allows_body: bool,
}

impl RequestPlan {
    /// Compiles the request side.
    ///
    /// # Errors
    /// Every problem found, each with its key path relative to the action.
    pub fn compile(spec: RequestSpec<'_>) -> Result<Self, Vec<PlanProblem>> {
        let mut problems: Vec<PlanProblem> = Vec::new();

        let mut params = std::collections::HashMap::new();
        for (name, pointer) in spec.params {
            match Pointer::parse_read(pointer) {
                Ok(p) => {
                    params.insert(name.as_str(), p);
                }
                Err(e) => problems.push((key_path("params", name), e.to_string())),
            }
        }
        let mut pieces = Vec::new();
        let mut literal_len = 0;
        let mut has_query = false;
        match PathTemplate::parse(spec.path) {
            Err(message) => problems.push(("path".to_owned(), message)),
            Ok(template) => {
                for piece in template.pieces {
                    match piece {
                        TemplatePiece::Literal(l) => {
                            literal_len += l.len();
                            has_query |= l.contains('?');
                            pieces.push(Piece::Literal(l.into_boxed_str()));
                        }
                        TemplatePiece::Placeholder(name) => {
                            if let Some(p) = params.get(name.as_str()) {
                                pieces.push(Piece::Param {
                                    pointer: p.clone(),
                                    name: name.into_boxed_str(),
                                });
                            } else if !spec.params.iter().any(|(n, _)| *n == name) {
                                problems.push((
                                    "path".to_owned(),
                                    format!("placeholder `{{{name}}}` has no entry in params"),
                                ));
                            }
                        }
                    }
                }
                for (name, _) in spec.params {
                    if !pieces
                        .iter()
                        .any(|p| matches!(p, Piece::Param { name: n, .. } if **n == **name))
                        && params.contains_key(name.as_str())
                    {
                        problems.push((
                            key_path("params", name),
                            format!("the path has no placeholder `{{{name}}}`"),
                        ));
                    }
                }
            }
        }

        let mut query = Vec::new();
        for (name, source) in spec.query {
            if name.is_empty() {
                problems.push((key_path("query", name), "must not be empty".to_owned()));
                continue;
            }
            match Source::compile(source) {
                Ok(s) => {
                    if let Some((what, v)) = s.fixed()
                        && !query_value_ok(v)
                    {
                        problems.push((
                            key_path("query", name),
                            format!("{what} must be a string, number, boolean or an array of them"),
                        ));
                        continue;
                    }
                    let encoded = utf8_percent_encode(name, COMPONENT).to_string();
                    query.push((encoded.into_boxed_str(), s));
                }
                Err(e) => problems.push((key_path("query", name), e.to_string())),
            }
        }

        let mut headers = Vec::new();
        for (name, source) in spec.headers {
            let at = key_path("headers", name);
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                problems.push((at, "is not a valid header name".to_owned()));
                continue;
            };
            if RESERVED_HEADERS.contains(&header.as_str()) {
                problems.push((
                    at,
                    "is set by the gateway or the upstream's auth and cannot be mapped".to_owned(),
                ));
                continue;
            }
            match Source::compile(source) {
                Ok(s) => {
                    let fixed = s
                        .fixed()
                        .map(|(what, v)| (what, header_value(v).ok_or(what)));
                    match (s.literal(), fixed) {
                        (_, Some((_, Err(what)))) => problems.push((
                            at,
                            format!("{what} must be a string, number or boolean valid in a header"),
                        )),
                        (Some(_), Some((_, Ok(mut value)))) => {
                            value.set_sensitive(true);
                            headers.push((header, HeaderSource::Literal(value)));
                        }
                        _ => headers.push((header, HeaderSource::Mapped(s))),
                    }
                }
                Err(e) => problems.push((at, e.to_string())),
            }
        }

        let body = match spec.body {
            None if spec.method_has_body => BodyPlan::PassThrough,
            None => BodyPlan::Empty,
            Some(_) if !spec.method_allows_body => {
                problems.push((
                    "body".to_owned(),
                    "a GET request carries no body; remove [actions.body] or change the method"
                        .to_owned(),
                ));
                BodyPlan::Empty
            }
            Some(entries) => {
                match ObjectPlan::compile(entries.iter().map(|(k, v)| (k.as_str(), v))) {
                    Ok(plan) => BodyPlan::Mapped(plan),
                    Err(ps) => {
                        problems.extend(ps.into_iter().map(|(t, m)| (key_path("body", &t), m)));
                        BodyPlan::Empty
                    }
                }
            }
        };

        if problems.is_empty() {
            Ok(Self {
                pieces,
                literal_len,
                has_query,
                query,
                headers,
                body,
            })
        } else {
            Err(problems)
        }
    }

    /// What the plan sends as a body.
    pub fn body(&self) -> &BodyPlan {
        &self.body
    }

    /// Renders the request for one input.
    ///
    /// `raw_input` is the input exactly as received (forwarded by [`BodyPlan::PassThrough`]).
    ///
    /// # Errors
    /// Every violation found (missing required values, values that cannot be rendered), as
    /// details naming the input pointers: the call is answered 400 `invalid.input`.
    pub fn render(
        &self,
        input: &Value,
        raw_input: &Bytes,
    ) -> Result<RenderedRequest, Vec<ErrorDetail>> {
        let mut details = Vec::new();
        // Set once the rendered path and query outgrow `MAX_PATH_AND_QUERY` (named once, at
        // the value that crossed the limit).
        let mut too_long = false;
        let mut path = String::with_capacity(self.literal_len + 32);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => path.push_str(l),
                Piece::Param { name, pointer } => {
                    match pointer.get(input).filter(|v| !v.is_null()) {
                        None => details.push(required_detail(pointer)),
                        Some(v) => match scalar_text(v) {
                            Some(text) if !matches!(&*text, "" | "." | "..") => {
                                path.extend(utf8_percent_encode(&text, COMPONENT));
                                if path.len() > MAX_PATH_AND_QUERY && !too_long {
                                    too_long = true;
                                    details.push(too_long_detail(pointer.as_str()));
                                }
                            }
                            Some(_) => details.push(ErrorDetail::new(
                                pointer.as_str(),
                                "pattern",
                                format!(
                                    "The value for `{{{name}}}` must not be empty, `.` or `..`."
                                ),
                            )),
                            None => details.push(ErrorDetail::new(
                                pointer.as_str(),
                                "type",
                                format!(
                                    "The value for `{{{name}}}` must be a string, number or \
                                     boolean."
                                ),
                            )),
                        },
                    }
                }
            }
        }
        let mut separator = if self.has_query { '&' } else { '?' };
        for (name, source) in &self.query {
            let value = match source.lookup(input, NullIs::Missing) {
                Lookup::Found(v) => v,
                Lookup::Absent => continue,
                Lookup::Missing(p) => {
                    details.push(required_detail(p));
                    continue;
                }
            };
            let mut push = |text: &str, path: &mut String| {
                path.push(separator);
                separator = '&';
                path.push_str(name);
                path.push('=');
                path.extend(utf8_percent_encode(text, COMPONENT));
            };
            match value {
                Value::Array(items) => {
                    for item in items {
                        if item.is_null() {
                            continue;
                        }
                        match scalar_text(item) {
                            Some(text) => push(&text, &mut path),
                            None => details.push(ErrorDetail::new(
                                pointer_of(source),
                                "type",
                                "Query values must be strings, numbers, booleans or arrays of them.",
                            )),
                        }
                    }
                }
                v => match scalar_text(v) {
                    Some(text) => push(&text, &mut path),
                    None => details.push(ErrorDetail::new(
                        pointer_of(source),
                        "type",
                        "Query values must be strings, numbers, booleans or arrays of them.",
                    )),
                },
            }
            if path.len() > MAX_PATH_AND_QUERY && !too_long {
                too_long = true;
                details.push(too_long_detail(pointer_of(source)));
            }
        }

        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, source) in &self.headers {
            match source {
                HeaderSource::Literal(v) => {
                    headers.append(name.clone(), v.clone());
                }
                HeaderSource::Mapped(s) => match s.lookup(input, NullIs::Missing) {
                    Lookup::Found(v) => match header_value(v) {
                        Some(value) if value.len() > MAX_HEADER_VALUE => {
                            details.push(ErrorDetail::new(
                                pointer_of(s),
                                "maxLength",
                                format!(
                                    "The value for header `{name}` is longer than \
                                     {MAX_HEADER_VALUE} bytes."
                                ),
                            ));
                        }
                        Some(value) => {
                            headers.append(name.clone(), value);
                        }
                        None => details.push(ErrorDetail::new(
                            pointer_of(s),
                            "type",
                            format!(
                                "The value for header `{name}` must be a string, number or \
                                     boolean without control characters."
                            ),
                        )),
                    },
                    Lookup::Absent => {}
                    Lookup::Missing(p) => details.push(required_detail(p)),
                },
            }
        }

        let body = match &self.body {
            BodyPlan::Empty => None,
            BodyPlan::PassThrough => Some(raw_input.clone()),
            BodyPlan::Mapped(plan) => match plan.apply(input) {
                Ok(doc) => Some(Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())),
                Err(missing) => {
                    details.extend(missing);
                    None
                }
            },
        };

        if details.is_empty() {
            Ok(RenderedRequest {
                path_and_query: path,
                headers,
                body,
            })
        } else {
            Err(details)
        }
    }
}

/// The longest path and query (percent-encoded) a rendered request may have: far below what
/// URIs can hold (64 KiB) and what upstream servers commonly accept (8–16 KiB), so that an
/// input can never make a request that cannot be formed.
pub const MAX_PATH_AND_QUERY: usize = 16 * 1024;

/// The longest value a mapped request header may have.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;

/// The input at `pointer` made the request's path and query longer than
/// [`MAX_PATH_AND_QUERY`].
fn too_long_detail(pointer: &str) -> ErrorDetail {
    ErrorDetail::new(
        pointer,
        "maxLength",
        format!(
            "The value makes the upstream request's path and query longer than \
             {MAX_PATH_AND_QUERY} bytes."
        ),
    )
}

fn pointer_of(source: &Source) -> &str {
    match &source.kind {
        SourceKind::Pointer { pointer, .. } => pointer.as_str(),
        SourceKind::Literal(_) => "",
    }
}

/// The request to send, rendered from one input.
#[derive(Debug, Clone)]
pub struct RenderedRequest {
    /// Path (with the template's literal query, if any) and the mapped query.
    pub path_and_query: String,
    /// Mapped headers.
    pub headers: HeaderMap,
    /// The body, if any (always JSON).
    pub body: Option<Bytes>,
}

/// The text of a scalar as it appears in a URL or header: strings as they are, numbers as JSON
/// writes them, booleans as `true`/`false`. `None` for null, arrays and objects.
fn scalar_text(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => {
            let mut out = String::new();
            let _ = write!(out, "{n}");
            Some(Cow::Owned(out))
        }
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A scalar as a header value; `None` when it is not a scalar or not valid in a header.
fn header_value(value: &Value) -> Option<HeaderValue> {
    scalar_text(value).and_then(|t| HeaderValue::from_str(&t).ok())
}

fn query_value_ok(value: &Value) -> bool {
    match value {
        Value::Array(items) => items
            .iter()
            .all(|i| i.is_null() || scalar_text(i).is_some()),
        v => scalar_text(v).is_some(),
    }
}

/// `table.key`, quoting the key when it is not a bare TOML key (`body."/customer/name"`).
pub fn key_path(table: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        format!("{table}.{key}")
    } else {
        format!("{table}.{key:?}")
    }
}

/// The compiled output side of an action.
#[derive(Debug, Clone)]
pub enum OutputPlan {
    /// Answer the upstream's bytes unchanged.
    PassThrough,
    /// Build the output from pointers into the upstream's answer.
    Mapped(ObjectPlan),
}

impl OutputPlan {
    /// Compiles the `output` table (`None`: pass through).
    ///
    /// # Errors
    /// Every problem, each with its key path relative to the action (`output."/id"`).
    pub fn compile(entries: Option<&[(String, MappingSource)]>) -> Result<Self, Vec<PlanProblem>> {
        match entries {
            None => Ok(Self::PassThrough),
            Some(entries) => ObjectPlan::compile(entries.iter().map(|(k, v)| (k.as_str(), v)))
                .map(Self::Mapped)
                .map_err(|ps| {
                    ps.into_iter()
                        .map(|(t, m)| (key_path("output", &t), m))
                        .collect()
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec<'a>(path: &'a str, params: &'a [(String, String)]) -> RequestSpec<'a> {
        RequestSpec {
            path,
            params,
            query: &[],
            headers: &[],
            body: None,
            method_has_body: false,
            method_allows_body: false,
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn path_templates_parse() {
        assert!(PathTemplate::parse("/a/{b}/c{d}.json?x=1").is_ok());
        for bad in [
            "a/{b}", "/a/{b", "/a/b}", "/a/{}", "/a/{b-c}", "/a b", "/a#f",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
        let t = PathTemplate::parse("/u/{id}/x/{id}").unwrap();
        assert_eq!(t.placeholders().collect::<Vec<_>>(), ["id", "id"]);
    }

    #[test]
    fn params_must_match_placeholders() {
        let params = pairs(&[("userId", "/userId"), ("extra", "/x")]);
        let err = RequestPlan::compile(spec("/users/{userId}/{other}", &params)).unwrap_err();
        assert!(err.contains(&(
            "path".to_owned(),
            "placeholder `{other}` has no entry in params".to_owned()
        )));
        assert!(err.iter().any(|(k, _)| k == "params.extra"));
        let bad = pairs(&[("id", "id")]);
        let err = RequestPlan::compile(spec("/u/{id}", &bad)).unwrap_err();
        assert_eq!(err[0].0, "params.id");
    }

    #[test]
    fn params_are_encoded_as_one_segment() {
        let params = pairs(&[("id", "/id")]);
        let plan = RequestPlan::compile(spec("/users/{id}/profile", &params)).unwrap();
        let cases: &[(Value, &str)] = &[
            (json!("u-1"), "/users/u-1/profile"),
            (json!("a/b?c#d e"), "/users/a%2Fb%3Fc%23d%20e/profile"),
            (json!("é~"), "/users/%C3%A9~/profile"),
            (json!(42), "/users/42/profile"),
            (json!(1.5), "/users/1.5/profile"),
            (json!(true), "/users/true/profile"),
            (json!("..."), "/users/.../profile"),
        ];
        for (value, expected) in cases {
            let r = plan.render(&json!({"id": value}), &Bytes::new()).unwrap();
            assert_eq!(r.path_and_query, *expected);
        }
        for bad in [
            json!(""),
            json!("."),
            json!(".."),
            json!(null),
            json!({}),
            json!([1]),
        ] {
            let err = plan.render(&json!({"id": bad}), &Bytes::new()).unwrap_err();
            assert_eq!(err[0].field_name, "/id", "{bad}");
        }
        let err = plan.render(&json!({}), &Bytes::new()).unwrap_err();
        assert_eq!(err[0].error_code, "required");
        assert_eq!(err[0].field_name, "/id");
    }

    #[test]
    fn query_headers_and_body() {
        let query = vec![
            ("q".to_owned(), MappingSource::pointer("/term")),
            (
                "page size".to_owned(),
                MappingSource::or_default("/size", json!(25)),
            ),
            ("tag".to_owned(), MappingSource::pointer("/tags")),
            ("fixed".to_owned(), MappingSource::literal("yes")),
            ("opt".to_owned(), MappingSource::pointer("/nope")),
        ];
        let headers = vec![
            ("X-Tenant".to_owned(), MappingSource::pointer("/tenant")),
            ("X-Static".to_owned(), MappingSource::literal(7)),
        ];
        let body = vec![
            ("/customer/id".to_owned(), MappingSource::required("/id")),
            (
                "/customer/tier".to_owned(),
                MappingSource::or_default("/tier", json!("std")),
            ),
            ("/source".to_owned(), MappingSource::literal("genesys")),
            ("/lines/0".to_owned(), MappingSource::pointer("/first")),
            ("/skipped".to_owned(), MappingSource::pointer("/absent")),
        ];
        let plan = RequestPlan::compile(RequestSpec {
            path: "/search?v=2",
            params: &[],
            query: &query,
            headers: &headers,
            body: Some(&body),
            method_has_body: true,
            method_allows_body: true,
        })
        .unwrap();
        let input = json!({"term": "a&b", "tags": ["x", 1, null], "tenant": "t1", "id": "c-9",
                           "first": {"sku": 1}});
        let r = plan.render(&input, &Bytes::new()).unwrap();
        assert_eq!(
            r.path_and_query,
            "/search?v=2&q=a%26b&page%20size=25&tag=x&tag=1&fixed=yes"
        );
        assert_eq!(r.headers["x-tenant"], "t1");
        assert_eq!(r.headers["x-static"], "7");
        let body: Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"customer": {"id": "c-9", "tier": "std"}, "source": "genesys",
                   "lines": [{"sku": 1}]})
        );
        let err = plan
            .render(&json!({"tenant": "bad\nvalue"}), &Bytes::new())
            .unwrap_err();
        let fields: Vec<_> = err.iter().map(|d| d.field_name.as_str()).collect();
        assert_eq!(fields, ["/tenant", "/id"]);
    }

    #[test]
    fn body_passes_through_or_is_absent() {
        let raw = Bytes::from_static(b"{\"a\":  1}");
        let post = RequestPlan::compile(RequestSpec {
            method_has_body: true,
            method_allows_body: true,
            ..spec("/x", &[])
        })
        .unwrap();
        let r = post.render(&json!({"a": 1}), &raw).unwrap();
        assert_eq!(r.body.unwrap(), raw, "the very bytes, not re-serialised");
        let get = RequestPlan::compile(spec("/x", &[])).unwrap();
        assert!(get.render(&json!({}), &raw).unwrap().body.is_none());
        let body = vec![("/a".to_owned(), MappingSource::pointer("/a"))];
        let err = RequestPlan::compile(RequestSpec {
            body: Some(&body),
            ..spec("/x", &[])
        })
        .unwrap_err();
        assert_eq!(err[0].0, "body");
    }

    #[test]
    fn invalid_headers_and_targets_are_load_problems() {
        let headers = vec![
            ("bad header".to_owned(), MappingSource::pointer("/a")),
            ("Authorization".to_owned(), MappingSource::pointer("/a")),
            ("X-Ok".to_owned(), MappingSource::literal("line\nbreak")),
            ("X-Src".to_owned(), MappingSource::pointer("nope")),
        ];
        let body = vec![
            ("/a".to_owned(), MappingSource::pointer("/a")),
            ("/a/b".to_owned(), MappingSource::pointer("/b")),
        ];
        let err = RequestPlan::compile(RequestSpec {
            headers: &headers,
            body: Some(&body),
            method_has_body: true,
            method_allows_body: true,
            ..spec("/x", &[])
        })
        .unwrap_err();
        let keys: Vec<_> = err.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "headers.\"bad header\"",
                "headers.Authorization",
                "headers.X-Ok",
                "headers.X-Src",
                "body.\"/a/b\""
            ]
        );
    }
}
