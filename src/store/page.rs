//! Paging shared by every list of the store: [`PageRequest`] in, [`Page`] out, and the opaque
//! keyset [`Cursor`] between them.
//!
//! Lists are keyset-paginated on `(time, id)` in descending order: a page asks for rows
//! strictly "below" the last row of the previous page. Unlike `OFFSET`, that never shows a row
//! twice and never skips a row that existed when the walk began, however many rows are
//! inserted meanwhile, and it costs one index seek per page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::StoreError;

/// A page request: at most `limit` entries after `cursor`.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// 1..=1000; values outside are clamped by the store.
    pub limit: u32,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// Entries per page when the caller does not say.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// The largest page; larger requests are clamped to it.
    pub const MAX_LIMIT: u32 = 1000;

    /// The first page of `limit` entries.
    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    /// The page after the one that answered `next_cursor`, of `limit` entries.
    pub fn after(limit: u32, next_cursor: impl Into<String>) -> Self {
        Self {
            limit,
            cursor: Some(next_cursor.into()),
        }
    }

    /// `limit` clamped to `1..=MAX_LIMIT`.
    pub fn effective_limit(&self) -> u32 {
        self.limit.clamp(1, Self::MAX_LIMIT)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(Self::DEFAULT_LIMIT)
    }
}

/// One page of a list.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The entries.
    pub entities: Vec<T>,
    /// Cursor of the next page, `None` on the last one.
    pub next_cursor: Option<String>,
}

/// The position of the last row of a page in a list ordered by `(at_ms DESC, id DESC)`.
///
/// On the wire it is base64url (no padding) of `<scope>:<at_ms>:<id>`; the scope names the
/// list so that a cursor of one list is refused by another. Its content is not a contract:
/// clients pass it back unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The row's time, epoch milliseconds.
    pub(crate) at_ms: i64,
    /// The row's id (its text form).
    pub(crate) id: String,
}

impl Cursor {
    /// The opaque text of this cursor for the list `scope`.
    pub(crate) fn encode(&self, scope: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{scope}:{}:{}", self.at_ms, self.id))
    }

    /// Reads a cursor handed out by [`Cursor::encode`] for the list `scope`.
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for anything else.
    pub(crate) fn decode(scope: &str, text: &str) -> Result<Self, StoreError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| StoreError::InvalidCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
        let rest = text
            .strip_prefix(scope)
            .and_then(|rest| rest.strip_prefix(':'))
            .ok_or(StoreError::InvalidCursor)?;
        let (at_ms, id) = rest.split_once(':').ok_or(StoreError::InvalidCursor)?;
        let at_ms = at_ms.parse().map_err(|_| StoreError::InvalidCursor)?;
        if id.is_empty() {
            return Err(StoreError::InvalidCursor);
        }
        Ok(Self {
            at_ms,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_in_its_own_list_only() {
        let cursor = Cursor {
            at_ms: 1_795_000_000_123,
            id: "42".into(),
        };
        let text = cursor.encode("audit");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "url-safe: {text}"
        );
        assert_eq!(Cursor::decode("audit", &text).unwrap(), cursor);
        assert!(matches!(
            Cursor::decode("deliveries", &text),
            Err(StoreError::InvalidCursor)
        ));
    }

    #[test]
    fn garbage_is_an_invalid_cursor() {
        for bad in [
            "",
            "!!!",
            "not base64 at all",
            &URL_SAFE_NO_PAD.encode("audit:x:1"),
            &URL_SAFE_NO_PAD.encode("audit:1"),
            &URL_SAFE_NO_PAD.encode("audit:1:"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert!(
                matches!(Cursor::decode("audit", bad), Err(StoreError::InvalidCursor)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(PageRequest::first(0).effective_limit(), 1);
        assert_eq!(PageRequest::first(5000).effective_limit(), 1000);
        assert_eq!(PageRequest::default().effective_limit(), 100);
    }
}
