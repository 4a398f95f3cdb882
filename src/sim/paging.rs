//! The Genesys paging envelope of list endpoints: `{entities, pageSize, pageNumber, total,
//! pageCount, firstUri, selfUri, lastUri, nextUri?, previousUri?}` driven by the `pageSize` and
//! `pageNumber` query parameters.

use serde_json::{Value, json};

use super::error::GenesysError;
use super::extract::QueryPairs;

/// The default page size of Genesys list endpoints.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 25;
/// The largest page size accepted.
pub(crate) const MAX_PAGE_SIZE: usize = 500;

/// A validated page request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    pub size: usize,
    pub number: usize,
}

impl Page {
    /// Reads `pageSize` / `pageNumber`.
    ///
    /// # Errors
    /// 400 `bad.request` when one is not a positive integer or `pageSize` exceeds 500.
    pub fn from_query(query: &QueryPairs) -> Result<Self, GenesysError> {
        let size = parse_positive(query.first("pageSize"), "pageSize", DEFAULT_PAGE_SIZE)?;
        if size > MAX_PAGE_SIZE {
            return Err(GenesysError::bad_request(format!(
                "pageSize must be less than or equal to {MAX_PAGE_SIZE}"
            )));
        }
        let number = parse_positive(query.first("pageNumber"), "pageNumber", 1)?;
        Ok(Self { size, number })
    }

    /// The envelope for `all` (every matching entity, in order) at `path`; `extra` is the
    /// query (without paging) repeated in the URIs, e.g. `"category=x&"`.
    pub fn envelope(&self, all: Vec<Value>, path: &str, extra: &str) -> Value {
        let total = all.len();
        let page_count = total.div_ceil(self.size).max(1);
        let start = (self.number - 1).saturating_mul(self.size);
        let entities: Vec<Value> = all.into_iter().skip(start).take(self.size).collect();
        let uri = |n: usize| format!("{path}?{extra}pageSize={}&pageNumber={n}", self.size);
        let mut body = json!({
            "entities": entities,
            "pageSize": self.size,
            "pageNumber": self.number,
            "total": total,
            "firstUri": uri(1),
            "selfUri": uri(self.number),
            "lastUri": uri(page_count),
            "pageCount": page_count,
        });
        if self.number < page_count {
            body["nextUri"] = Value::String(uri(self.number + 1));
        }
        if self.number > 1 {
            body["previousUri"] = Value::String(uri(self.number - 1));
        }
        body
    }
}

fn parse_positive(raw: Option<&str>, name: &str, default: usize) -> Result<usize, GenesysError> {
    match raw {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(GenesysError::bad_request(format!(
                "Invalid value '{v}' for query parameter {name}: a positive integer is required"
            ))),
        },
    }
}
