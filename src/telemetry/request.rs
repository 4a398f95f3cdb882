//! The request id: chosen at the edge, carried in a task-local for the request's whole life;
//! and how a request that ends without an answer ended (its deadline passed, or its caller
//! went away), for the code whose futures are dropped.
//!
//! The task-local is also what puts the request on log lines: the edge marks the id with the
//! request's method ([`RequestId::serving`]), and the log formatters write that as the
//! `request` span (`request_id`, `method`) of every line logged while the request is served —
//! nothing is recorded per request until a line is actually written.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use http::HeaderValue;

/// Response/request header carrying the request id.
pub const X_REQUEST_ID: &str = "x-request-id";
/// Genesys' correlation header (accepted inbound, sent on every outbound call).
pub const ININ_CORRELATION_ID: &str = "inin-correlation-id";

/// Longest accepted inbound id; longer (or non-printable) ids are replaced by a new UUID.
const MAX_ID_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: RequestId;
}

thread_local! {
    /// Set while the edge drops a request's future because its deadline passed.
    static DEADLINE_DROP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the drop of a request's future as its deadline passing. Declare it *before* the
/// future (locals drop in reverse order) and [`arm`](Self::arm) it once the deadline passed:
/// destructors that run while the future is dropped see [`deadline_passed`] `true`. Any other
/// drop of a request's future is its caller going away.
#[derive(Debug, Default)]
pub struct DeadlineDrop {
    armed: bool,
}

impl DeadlineDrop {
    /// From now until this marker is dropped, drops on this thread are the deadline's.
    pub fn arm(&mut self) {
        self.armed = true;
        DEADLINE_DROP.with(|d| d.set(true));
    }
}

impl Drop for DeadlineDrop {
    fn drop(&mut self) {
        if self.armed {
            DEADLINE_DROP.with(|d| d.set(false));
        }
    }
}

/// In the destructor of a request's state: `true` when the request is dropped because its
/// deadline passed ([`DeadlineDrop`]), `false` when its caller went away.
pub fn deadline_passed() -> bool {
    DEADLINE_DROP.with(std::cell::Cell::get)
}

/// The correlation id of one request.
#[derive(Clone)]
pub struct RequestId {
    id: Arc<str>,
    /// The method of the request the edge is serving under this id (see [`Self::serving`]).
    method: Option<http::Method>,
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for RequestId {}

impl RequestId {
    fn new(id: &str) -> Self {
        Self {
            id: Arc::from(id),
            method: None,
        }
    }

    /// A new random id (UUID v4).
    pub fn generate() -> Self {
        let mut text = uuid::Uuid::encode_buffer();
        Self::new(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text))
    }

    /// The id the client sent (`X-Request-Id`, else `ININ-Correlation-Id`) when it is a sane
    /// token, else a new one.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        [X_REQUEST_ID, ININ_CORRELATION_ID]
            .iter()
            .filter_map(|name| headers.get(*name))
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .find(|v| {
                !v.is_empty() && v.len() <= MAX_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic())
            })
            .map_or_else(Self::generate, Self::new)
    }

    /// The same id, as the id of a request with `method` being served: log lines written
    /// while it is current show the `request` span (`request_id`, `method`).
    #[must_use]
    pub fn serving(mut self, method: &http::Method) -> Self {
        self.method = Some(method.clone());
        self
    }

    /// The method of the request being served under this id, when the edge set one.
    pub fn method(&self) -> Option<&http::Method> {
        self.method.as_ref()
    }

    /// The id of the request the current task is serving, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with this id as the current request id.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_inbound_ids_in_order() {
        let mut h = http::HeaderMap::new();
        h.insert(ININ_CORRELATION_ID, HeaderValue::from_static("inin-1"));
        assert_eq!(&*RequestId::from_headers(&h), "inin-1");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("req-1"));
        assert_eq!(&*RequestId::from_headers(&h), "req-1");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(&*RequestId::from_headers(&h), "inin-1");
        let generated = RequestId::from_headers(&http::HeaderMap::new());
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
        assert_eq!(generated.len(), 36, "hyphenated");
    }

    #[test]
    fn serving_marks_the_method_and_keeps_the_id() {
        let id = RequestId::from_headers(&http::HeaderMap::new());
        assert_eq!(id.method(), None);
        let serving = id.clone().serving(&http::Method::POST);
        assert_eq!(serving.method(), Some(&http::Method::POST));
        assert_eq!(serving, id, "the same id");
        assert_eq!(&*serving, &*id);
    }
}
