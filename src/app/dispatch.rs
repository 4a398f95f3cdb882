//! The service each connection is served by: the hot data-action routes dispatched from a
//! prepared table, everything else through the router.
//!
//! `POST /v1/actions/{name}` and `POST /webhook/data-action` are what Genesys flows call, many
//! times a second; they go straight to their handlers through the same edge (request id,
//! metrics under the same route template, panic capture, deadline, body limit, load
//! shedding), without the router's per-request work: no route lookup, no boxed route clones,
//! no method router, no extractor machinery. Everything else — those paths with another
//! method, or with a path the route would not match — goes to the router, which answers
//! exactly as before (404, 405, …).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::Method;
use percent_encoding::percent_decode_str;
use tower::{Service, ServiceExt};

use super::edge::EdgeLayer;
use crate::data_actions::DataActionsState;
use crate::data_actions::http::{serve_action, serve_envelope};

/// The route template of `POST /v1/actions/{name}` (as the router names it).
const ACTION_ROUTE: &str = "/v1/actions/{name}";
/// What precedes the action's name in its path.
const ACTION_PREFIX: &str = "/v1/actions/";
/// The route of `POST /webhook/data-action`.
const ENVELOPE_ROUTE: &str = "/webhook/data-action";

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The service of every connection (see the module docs). Cheap to clone.
#[derive(Clone)]
pub(super) struct Dispatch {
    router: Router,
    edge: EdgeLayer,
    actions: Arc<DataActionsState>,
}

impl Dispatch {
    /// Dispatches the hot routes to the data actions of `actions` through `edge` (the edge the
    /// router's routes have), everything else to `router`.
    pub(super) fn new(router: Router, edge: EdgeLayer, actions: DataActionsState) -> Self {
        Self {
            router,
            edge,
            actions: Arc::new(actions),
        }
    }
}

/// A hot route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hot {
    /// `POST /v1/actions/{name}`.
    Action,
    /// `POST /webhook/data-action`.
    Envelope,
}

impl Hot {
    /// The hot route `method` and `path` are, if any: exactly what the router would match to
    /// those handlers (one non-empty path segment for the name).
    fn of(method: &Method, path: &str) -> Option<Self> {
        if *method != Method::POST {
            return None;
        }
        if path == ENVELOPE_ROUTE {
            return Some(Self::Envelope);
        }
        let name = path.strip_prefix(ACTION_PREFIX)?;
        (!name.is_empty() && !name.contains('/')).then_some(Self::Action)
    }

    fn route(self) -> &'static str {
        match self {
            Self::Action => ACTION_ROUTE,
            Self::Envelope => ENVELOPE_ROUTE,
        }
    }
}

impl<B> Service<http::Request<B>> for Dispatch
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> BoxFuture {
        let req = req.map(Body::new);
        match Hot::of(req.method(), req.uri().path()) {
            Some(hot) => {
                let handler = HotHandler {
                    actions: self.actions.clone(),
                    hot,
                };
                let edge = self.edge.clone();
                // The edge's future is made inside the box (a future made outside and moved in
                // is copied whole: kilobytes per request).
                Box::pin(async move { Ok(edge.serve(handler, hot.route(), req).await) })
            }
            None => Box::pin(self.router.clone().oneshot(req)),
        }
    }
}

/// The handler of a hot route, as the edge's inner service.
#[derive(Clone)]
struct HotHandler {
    actions: Arc<DataActionsState>,
    hot: Hot,
}

impl Service<Request> for HotHandler {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> BoxFuture {
        let actions = self.actions.clone();
        match self.hot {
            Hot::Envelope => Box::pin(async move { Ok(serve_envelope(&actions, req).await) }),
            Hot::Action => Box::pin(async move {
                // As the router's `Path` extractor: the segment percent-decoded; one that is
                // not UTF-8 then names no action.
                let uri = req.uri().clone();
                let segment = uri.path().strip_prefix(ACTION_PREFIX).unwrap_or_default();
                let name = percent_decode_str(segment).decode_utf8().ok();
                Ok(serve_action(&actions, name.as_deref(), req).await)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_routes_match_is_hot() {
        let post = Method::POST;
        assert_eq!(Hot::of(&post, "/v1/actions/getOrder"), Some(Hot::Action));
        assert_eq!(Hot::of(&post, "/v1/actions/a%2Fb"), Some(Hot::Action));
        assert_eq!(Hot::of(&post, "/webhook/data-action"), Some(Hot::Envelope));
        for path in [
            "/v1/actions/",
            "/v1/actions",
            "/v1/actions/a/b",
            "/v1/actions/a/",
            "/webhook/data-action/",
            "/v1/actionsx/a",
            "/admin/v1/actions/a",
        ] {
            assert_eq!(Hot::of(&post, path), None, "{path}");
        }
        assert_eq!(Hot::of(&Method::GET, "/v1/actions/getOrder"), None);
        assert_eq!(Hot::of(&Method::PUT, "/webhook/data-action"), None);
        assert_eq!(Hot::Action.route(), "/v1/actions/{name}");
    }
}
