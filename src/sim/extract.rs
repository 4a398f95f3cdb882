//! Request extractors that fail the way Genesys does: a JSON body extractor answering 400
//! `bad.request` in the `ErrorBody` shape, and the raw query as ordered pairs (Genesys repeats
//! parameters such as `id=a&id=b`).
//!
//! The JSON extractor deliberately repeats the gateway's own (`crate::error::Json`): the
//! simulator stands alone and must not import the product, and it rejects with Genesys' error
//! shape, not the gateway's.

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::GenesysError;

/// A JSON body; rejections are 400 `bad.request` in the Genesys shape.
#[derive(Debug)]
pub(crate) struct GJson<T>(pub T);

impl<T, S> FromRequest<S> for GJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = GenesysError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|err| GenesysError::malformed(err.body_text()))?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(body)
            .map(GJson)
            .map_err(GenesysError::malformed)
    }
}

/// The query string as ordered `(name, value)` pairs.
#[derive(Debug, Default)]
pub(crate) struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The first value of `name`.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`; comma-separated values are split.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// A boolean parameter (`true`/`false`), `default` when absent.
    ///
    /// # Errors
    /// 400 when the value is not a boolean.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, GenesysError> {
        match self.first(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(GenesysError::bad_request(format!(
                "Invalid value '{v}' for query parameter {name}"
            ))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = parts
            .uri
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self(pairs))
    }
}
