//! The transport: hyper-util's pooled HTTP/1.1 client over rustls, one pool per server thread.
//!
//! A hyper connection is driven by a task on the runtime that opened it; using it from another
//! runtime costs a cross-thread wake-up per request. The server runs one current-thread runtime
//! per core ([`crate::runtime`]), so an [`HttpClient`] holds one pool per server thread and picks
//! it with [`crate::runtime::worker_index`]; callers off the server threads (background tasks,
//! tests) share one more pool.
//!
//! Keep-alive is on, `TCP_NODELAY` is on, idle connections are bounded per host and closed after
//! a while, redirects are never followed, and response bodies are read with a size cap.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::guard::{GuardedConnector, GuardedResolver, NetworkPolicy, RefusedAddress};

type Connector = HttpsConnector<GuardedConnector>;
type HyperClient = Client<Connector, Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest response body read by default (10 MiB); larger answers are an error.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// How an [`HttpClient`] is built.
#[derive(Debug, Clone)]
pub struct HttpClientOptions {
    /// Server threads (one pool each); a caller off the server threads uses one more pool.
    pub threads: usize,
    /// Largest response body; beyond it the call fails with [`TransportError::ResponseTooLarge`].
    pub max_response_bytes: usize,
    /// Idle keep-alive connections kept per host and pool.
    pub max_idle_per_host: usize,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// Longest TCP connect (the attempt timeout bounds it too).
    pub connect_timeout: Duration,
}

impl Default for HttpClientOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_idle_per_host: 64,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A failed HTTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The network policy refused the destination address (SSRF guard).
    #[error(transparent)]
    Refused(RefusedAddress),
    /// No connection could be made; the request was certainly not sent.
    #[error("cannot connect: {0}")]
    Connect(#[source] BoxError),
    /// The exchange did not finish in time (the request may have been processed).
    #[error("timed out")]
    Timeout,
    /// The connection failed after the request may have been sent.
    #[error("connection failed: {0}")]
    Network(#[source] BoxError),
    /// The response body is larger than the client reads.
    #[error("response body larger than {limit} bytes")]
    ResponseTooLarge {
        /// The cap.
        limit: usize,
    },
}

impl TransportError {
    /// Whether the request certainly did not reach the server (safe to retry any method).
    pub fn certainly_not_sent(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Connect(_))
    }

    fn classify(err: hyper_util::client::legacy::Error) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<RefusedAddress>() {
                return Self::Refused(*refused);
            }
            source = e.source();
        }
        if err.is_connect() {
            Self::Connect(Box::new(err))
        } else {
            Self::Network(Box::new(err))
        }
    }
}

/// An HTTP answer, body read whole.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body (empty when there was none).
    pub body: Bytes,
}

/// The outbound transport (see the module docs). Cheap to clone; clones share the pools.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    per_thread: Box<[HyperClient]>,
    shared: HyperClient,
    max_response_bytes: usize,
    policy: Arc<NetworkPolicy>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("policy", &self.inner.policy)
            .field("pools", &(self.inner.per_thread.len() + 1))
            .finish()
    }
}

impl HttpClient {
    /// A client applying `policy` to every connection.
    pub fn new(policy: NetworkPolicy, options: &HttpClientOptions) -> Self {
        let policy = Arc::new(policy);
        let guard = match *policy {
            NetworkPolicy::Trusted => None,
            NetworkPolicy::Guarded { .. } => Some(policy.clone()),
        };
        let tls = tls_config();
        let build = || {
            let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(guard.clone()));
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_keepalive(Some(Duration::from_secs(60)));
            http.set_connect_timeout(Some(options.connect_timeout));
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*tls).clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(GuardedConnector::new(http, guard.clone()));
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(options.idle_timeout)
                .pool_max_idle_per_host(options.max_idle_per_host)
                .build(connector)
        };
        Self {
            inner: Arc::new(Inner {
                per_thread: (0..options.threads.max(1)).map(|_| build()).collect(),
                shared: build(),
                max_response_bytes: options.max_response_bytes,
                policy,
            }),
        }
    }

    /// The network policy of this client.
    pub fn policy(&self) -> &NetworkPolicy {
        &self.inner.policy
    }

    fn pool(&self) -> &HyperClient {
        crate::runtime::worker_index()
            .and_then(|i| self.inner.per_thread.get(i))
            .unwrap_or(&self.inner.shared)
    }

    /// Sends one request and reads the whole answer within `timeout`. Redirects are not
    /// followed: a 3xx is returned like any other status.
    ///
    /// # Errors
    /// [`TransportError`]: refused by the network policy, no connection, timeout, broken
    /// connection, or a body over the size cap.
    pub async fn send(
        &self,
        request: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<UpstreamResponse, TransportError> {
        let request = request.map(Full::new);
        let exchange = async {
            let response = self
                .pool()
                .request(request)
                .await
                .map_err(TransportError::classify)?;
            let (parts, body) = response.into_parts();
            let limit = self.inner.max_response_bytes;
            if let Some(length) = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                && length > limit as u64
            {
                return Err(TransportError::ResponseTooLarge { limit });
            }
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|err| {
                    if err.is::<http_body_util::LengthLimitError>() {
                        TransportError::ResponseTooLarge { limit }
                    } else {
                        TransportError::Network(err)
                    }
                })?
                .to_bytes();
            Ok(UpstreamResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout),
        }
    }
}

/// The TLS client configuration: ring, Mozilla's (webpki) roots, TLS 1.2 and 1.3.
pub(crate) fn tls_config() -> Arc<rustls::ClientConfig> {
    use hyper_rustls::ConfigBuilderExt;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_webpki_roots().with_no_client_auth())
    .unwrap_or_else(|_| {
        rustls::ClientConfig::builder()
            .with_webpki_roots()
            .with_no_client_auth()
    });
    Arc::new(config)
}
