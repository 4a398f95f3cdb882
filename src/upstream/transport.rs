//! The transport: HTTP/1.1 over rustls, with keep-alive connections kept per server thread.
//!
//! A hyper connection is driven by a task on the runtime that opened it; using it from another
//! runtime costs a cross-thread wake-up per request. The server runs one current-thread runtime
//! per core ([`crate::runtime`]), so an [`HttpClient`] keeps the idle connections of each server
//! thread apart and picks that thread's with [`crate::runtime::worker_index`]; callers off the
//! server threads (background tasks, tests) share one more set.
//!
//! A call takes the most recently used idle connection to its host (or opens one), sends on it
//! with hyper's connection API, reads the whole answer and puts the connection back: no generic
//! pool in between — no shared map, no checkout future racing a connect, no task spawned per
//! request to wait for the connection to become idle again. A request that a kept connection
//! could not even start to send (it had been closed meanwhile) is sent on another one, as
//! hyper-util's pool does.
//!
//! Keep-alive is on, `TCP_NODELAY` is on, idle connections are bounded per host and thread and
//! closed after `idle_timeout`, redirects are never followed, and response bodies are read with
//! a size cap. Every connection is opened through the [`NetworkPolicy`]'s connector (the SSRF
//! guard).

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::guard::{GuardedConnector, GuardedResolver, NetworkPolicy, RefusedAddress};

type Connector = HttpsConnector<GuardedConnector>;
type Sender = http1::SendRequest<Full<Bytes>>;
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

    /// A connection that could not be opened: refused by the policy (found anywhere in the
    /// error's chain of causes) or a connect failure.
    fn connect(err: BoxError) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<RefusedAddress>() {
                return Self::Refused(*refused);
            }
            source = e.source();
        }
        Self::Connect(err)
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

/// The outbound transport (see the module docs). Cheap to clone; clones share the
/// connections.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    per_thread: Box<[Arc<Connections>]>,
    shared: Arc<Connections>,
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

/// Where a connection goes: what a kept connection is matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    scheme: Scheme,
    authority: Authority,
}

impl Host {
    /// The scheme and authority of an absolute URI.
    fn of(uri: &Uri) -> Option<Self> {
        Some(Self {
            scheme: uri.scheme()?.clone(),
            authority: uri.authority()?.clone(),
        })
    }

    /// The `Host` header.
    fn header(&self) -> Option<HeaderValue> {
        host_header(&self.scheme, &self.authority)
    }
}

/// The `Host` header of a request to `scheme://authority`: the host, and the port unless it is
/// the scheme's default. A caller that sends many requests to one origin can make it once and
/// set it on each request ([`HttpClient::send`] then leaves it as it is).
pub(crate) fn host_header(scheme: &Scheme, authority: &Authority) -> Option<HeaderValue> {
    let secure = *scheme == Scheme::HTTPS;
    match authority.port_u16() {
        Some(443) if secure => HeaderValue::from_str(authority.host()).ok(),
        Some(80) if !secure => HeaderValue::from_str(authority.host()).ok(),
        Some(port) => HeaderValue::from_maybe_shared(format!("{}:{port}", authority.host())).ok(),
        None => HeaderValue::from_str(authority.host()).ok(),
    }
}

/// One idle keep-alive connection.
struct Idle {
    host: Host,
    sender: Sender,
    since: Instant,
}

/// The idle connections of one server thread (or of every caller off the server threads).
struct Connections {
    idle: Mutex<Vec<Idle>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    /// Whether a task closing expired idle connections runs.
    sweeping: Mutex<bool>,
}

impl Connections {
    fn new(options: &HttpClientOptions) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            max_idle_per_host: options.max_idle_per_host,
            idle_timeout: options.idle_timeout,
            sweeping: Mutex::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used live idle connection to `host`; closed and expired ones met on
    /// the way are dropped.
    fn take(&self, host: &Host) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = self.lock();
        while let Some(at) = idle.iter().rposition(|i| i.host == *host) {
            let entry = idle.remove(at);
            if !entry.sender.is_closed()
                && now.saturating_duration_since(entry.since) < self.idle_timeout
            {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next call to `host`, unless `max_idle_per_host` are kept already
    /// (then it is dropped, which closes the connection).
    fn put(self: &Arc<Self>, host: Host, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = self.lock();
            if idle.iter().filter(|i| i.host == host).count() >= self.max_idle_per_host {
                return;
            }
            idle.push(Idle {
                host,
                sender,
                since: Instant::now(),
            });
        }
        self.sweep_later();
    }

    /// Starts (once, on the caller's runtime) the task that closes idle connections once they
    /// have been idle for `idle_timeout`; it ends when no connection is left idle.
    fn sweep_later(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut sweeping = self.sweeping.lock().unwrap_or_else(PoisonError::into_inner);
            if *sweeping {
                return;
            }
            *sweeping = true;
        }
        let flag = Sweeping {
            connections: Arc::downgrade(self),
            armed: true,
        };
        let period = self.idle_timeout.max(Duration::from_millis(10));
        runtime.spawn(async move {
            let mut flag = flag;
            loop {
                tokio::time::sleep(period).await;
                let Some(connections) = flag.connections.upgrade() else {
                    return;
                };
                let now = Instant::now();
                let mut idle = connections.lock();
                idle.retain(|i| {
                    !i.sender.is_closed()
                        && now.saturating_duration_since(i.since) < connections.idle_timeout
                });
                if idle.is_empty() {
                    // Flag and list change under the list's lock: a `put` after this starts a
                    // new sweeper.
                    connections.set_sweeping(false);
                    flag.armed = false;
                    return;
                }
            }
        });
    }

    fn set_sweeping(&self, on: bool) {
        *self.sweeping.lock().unwrap_or_else(PoisonError::into_inner) = on;
    }
}

/// Clears the sweeping flag when the sweeper is dropped without having ended (its runtime shut
/// down), so that the next `put` starts another one.
struct Sweeping {
    connections: Weak<Connections>,
    armed: bool,
}

impl Drop for Sweeping {
    fn drop(&mut self) {
        if self.armed
            && let Some(connections) = self.connections.upgrade()
        {
            connections.set_sweeping(false);
        }
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
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(guard.clone()));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.set_connect_timeout(Some(options.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(GuardedConnector::new(http, guard));
        Self {
            inner: Arc::new(Inner {
                connector,
                per_thread: (0..options.threads.max(1))
                    .map(|_| Connections::new(options))
                    .collect(),
                shared: Connections::new(options),
                max_response_bytes: options.max_response_bytes,
                policy,
            }),
        }
    }

    /// The network policy of this client.
    pub fn policy(&self) -> &NetworkPolicy {
        &self.inner.policy
    }

    fn connections(&self) -> &Arc<Connections> {
        crate::runtime::worker_index()
            .and_then(|i| self.inner.per_thread.get(i))
            .unwrap_or(&self.inner.shared)
    }

    /// Opens a connection to `host` through the policy's connector; its task runs on the
    /// caller's runtime.
    async fn connect(&self, host: &Host) -> Result<Sender, TransportError> {
        let uri = Uri::builder()
            .scheme(host.scheme.clone())
            .authority(host.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|err| TransportError::Connect(Box::new(err)))?;
        let mut connector = self.inner.connector.clone();
        let io = connector
            .ready()
            .await
            .map_err(TransportError::connect)?
            .call(uri)
            .await
            .map_err(TransportError::connect)?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|err| TransportError::Connect(Box::new(err)))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `request` (origin-form URI, `Host` set) on a kept connection to `host`, or a new
    /// one; answers the response and the connection it came on.
    async fn exchange(
        &self,
        host: &Host,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<(http::Response<hyper::body::Incoming>, Sender), TransportError> {
        let connections = self.connections();
        loop {
            let (mut sender, kept) = match connections.take(host) {
                Some(sender) => (sender, true),
                // Boxed: the connect future is large and rarely needed; inline, every call's
                // future would carry (and copy) it.
                None => (Box::pin(self.connect(host)).await?, false),
            };
            if let Err(err) = sender.ready().await {
                if kept {
                    // Closed while idle: the next one.
                    continue;
                }
                return Err(TransportError::Network(Box::new(err)));
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, sender)),
                Err(mut err) => match err.take_message() {
                    // Not even started on a kept connection: certainly not sent, send it again.
                    Some(unsent) if kept => request = unsent,
                    _ => return Err(TransportError::Network(Box::new(err.into_error()))),
                },
            }
        }
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
        let Some(host) = Host::of(request.uri()) else {
            return Err(TransportError::Network(
                "the request URI is not absolute (scheme and host)".into(),
            ));
        };
        let (mut parts, body) = request.into_parts();
        if !parts.headers.contains_key(header::HOST)
            && let Some(value) = host.header()
        {
            parts.headers.insert(header::HOST, value);
        }
        // Origin form on the wire: the path and query only.
        parts.uri = match parts.uri.path_and_query() {
            Some(pq) if pq.as_str() != "/" => {
                let mut origin = http::uri::Parts::default();
                origin.path_and_query = Some(pq.clone());
                Uri::from_parts(origin).unwrap_or_default()
            }
            _ => Uri::default(),
        };
        let request = http::Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let (response, sender) = self.exchange(&host, request).await?;
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
            // Read to its end: the connection can carry the next request.
            self.connections().put(host.clone(), sender);
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
