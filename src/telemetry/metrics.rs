//! The Prometheus registry and every metric family the gateway exposes.
//!
//! One [`Metrics`] per process, shared by `Arc`; families are registered once here so names,
//! help texts and label sets live in one place. Labels only ever carry bounded values.
//!
//! Hot path: the children of the per-request HTTP families are resolved once per thread, route,
//! method and status and then reached from a thread-local table, most recent route first (no
//! label hashing, no lock or reference count shared across server threads); the data-action and upstream families are resolved once per
//! action and upstream where those are built.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets (seconds): fine below a millisecond for the data-action hot path, up to the
/// 60 s Genesys limit.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Route label for requests that matched no route (never the raw path).
pub struct RouteLabel;

impl RouteLabel {
    /// Requests that matched no route.
    pub const UNMATCHED: &'static str = "unmatched";
}

/// Every metric family of the gateway.
#[allow(missing_docs)]
pub struct Metrics {
    /// Tells this registry's cached children from another's (several apps in one process).
    id: u64,
    registry: Registry,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub action_executions_total: IntCounterVec,
    pub action_duration_seconds: HistogramVec,
    pub upstream_requests_total: IntCounterVec,
    pub upstream_retries_total: IntCounterVec,
    pub circuit_breaker_state: IntGaugeVec,
    pub oauth_token_fetches_total: IntCounterVec,
    pub ingest_events_total: IntCounterVec,
    pub ingest_rejections_total: IntCounterVec,
    pub deliveries_total: IntCounterVec,
    pub delivery_queue_depth: IntGauge,
    pub delivery_lag_seconds: Gauge,
    pub callback_reservations_total: IntCounterVec,
    pub notifications_connected: IntGauge,
    pub notifications_reconnects_total: IntCounterVec,
    pub stream_clients: IntGauge,
    pub audit_records_dropped_total: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every family registered, plus the standard `process_*` metrics.
    ///
    /// # Panics
    /// Never in practice: names and label sets are static and registered once.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let metrics = Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            http_requests_total: counter(
                "gateway_http_requests_total",
                "HTTP requests served, by route template, method and status.",
                &["route", "method", "status"],
            ),
            http_request_duration_seconds: histogram(
                "gateway_http_request_duration_seconds",
                "Time to serve an HTTP request, by route template and method.",
                &["route", "method"],
            ),
            action_executions_total: counter(
                "gateway_action_executions_total",
                "Data action executions, by action and outcome.",
                &["action", "outcome"],
            ),
            action_duration_seconds: histogram(
                "gateway_action_duration_seconds",
                "Data action execution time, by action.",
                &["action"],
            ),
            upstream_requests_total: counter(
                "gateway_upstream_requests_total",
                "Attempts sent to upstreams, by upstream and status (or error kind).",
                &["upstream", "status"],
            ),
            upstream_retries_total: counter(
                "gateway_upstream_retries_total",
                "Retries of upstream calls, by upstream and reason.",
                &["upstream", "reason"],
            ),
            circuit_breaker_state: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "gateway_circuit_breaker_state",
                        "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
                    ),
                    &["upstream"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            oauth_token_fetches_total: counter(
                "gateway_oauth_token_fetches_total",
                "OAuth2 token fetches, by upstream and result.",
                &["upstream", "result"],
            ),
            ingest_events_total: counter(
                "gateway_ingest_events_total",
                "Ingested events, by outcome.",
                &["outcome"],
            ),
            ingest_rejections_total: counter(
                "gateway_ingest_rejections_total",
                "Rejected ingest requests, by reason.",
                &["reason"],
            ),
            deliveries_total: counter(
                "gateway_deliveries_total",
                "Delivery attempts, by target and outcome.",
                &["target", "outcome"],
            ),
            delivery_queue_depth: gauge(
                "gateway_delivery_queue_depth",
                "Deliveries pending or in flight.",
            ),
            delivery_lag_seconds: {
                let g = Gauge::new(
                    "gateway_delivery_lag_seconds",
                    "Age of the oldest due delivery, in seconds.",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            callback_reservations_total: counter(
                "gateway_callback_reservations_total",
                "Callback reservation requests, by outcome.",
                &["outcome"],
            ),
            notifications_connected: gauge(
                "gateway_notifications_connected",
                "1 while this replica holds an open Genesys notifications socket.",
            ),
            notifications_reconnects_total: counter(
                "gateway_notifications_reconnects_total",
                "Reconnections of the Genesys notifications socket, by reason.",
                &["reason"],
            ),
            stream_clients: gauge(
                "gateway_stream_clients",
                "Connected callback stream clients.",
            ),
            audit_records_dropped_total: {
                let c = IntCounter::new(
                    "gateway_audit_records_dropped_total",
                    "Batched audit records dropped because the writer could not keep up.",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(c.clone()))
                    .expect("unique metric");
                c
            },
            registry,
        };
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            // A second registration (several apps in one test process) is harmless to skip.
            let _ = metrics.registry.register(Box::new(process));
        }
        metrics
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        let encoder = TextEncoder::new();
        if let Err(err) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Records one served HTTP request: `gateway_http_requests_total` and
    /// `gateway_http_request_duration_seconds` by route template (`None`: no route matched —
    /// never the raw path), method and status.
    pub fn observe_http(
        &self,
        route: Option<&str>,
        method: &http::Method,
        status: http::StatusCode,
        elapsed: std::time::Duration,
    ) {
        let route = route.unwrap_or(RouteLabel::UNMATCHED);
        let method = method_label(method);
        HTTP_HANDLES.with(|cache| {
            let mut cache = cache.borrow_mut();
            let handles = cache.route(self.id, route);
            handles.count(self, route, method, status).inc();
            handles
                .duration(self, route, method)
                .observe(elapsed.as_secs_f64());
        });
        // A failure's cause is logged once by the edge, under the flood rule (its `ErrorLog`);
        // a second, unthrottled line here would say less and flood the disk under load.
        tracing::debug!(status = status.as_u16(), route, "request served");
    }
}

thread_local! {
    /// The HTTP metric children used on this thread, per registry (its `id`) and route
    /// label: resolved by `with_label_values` once, then reached without hashing label values
    /// or taking the family's lock (shared by every server thread) on each request.
    static HTTP_HANDLES: RefCell<HttpHandles> = const { RefCell::new(HttpHandles(Vec::new())) };
}

/// The route labels met on one thread, each with its children, the last one used first: a
/// request to the route before it costs one comparison (no hashing).
struct HttpHandles(Vec<(u64, Box<str>, RouteHandles)>);

impl HttpHandles {
    /// The children of `route` in registry `registry`, moved to the front.
    fn route(&mut self, registry: u64, route: &str) -> &mut RouteHandles {
        let found = self
            .0
            .iter()
            .position(|(r, name, _)| *r == registry && **name == *route);
        let index = match found {
            Some(index) => index,
            None => {
                self.0
                    .push((registry, route.into(), RouteHandles::default()));
                self.0.len() - 1
            }
        };
        if index > 0 {
            self.0.swap(0, index);
        }
        &mut self.0[0].2
    }
}

/// The children of one route label: by method and status (a handful each).
#[derive(Default)]
struct RouteHandles {
    counts: Vec<(&'static str, u16, IntCounter)>,
    durations: Vec<(&'static str, Histogram)>,
}

impl RouteHandles {
    fn count(
        &mut self,
        metrics: &Metrics,
        route: &str,
        method: &'static str,
        status: http::StatusCode,
    ) -> &IntCounter {
        let code = status.as_u16();
        let index = match self
            .counts
            .iter()
            .position(|(m, s, _)| *m == method && *s == code)
        {
            Some(index) => index,
            None => {
                let counter = metrics.http_requests_total.with_label_values(&[
                    route,
                    method,
                    status.as_str(),
                ]);
                self.counts.push((method, code, counter));
                self.counts.len() - 1
            }
        };
        &self.counts[index].2
    }

    fn duration(&mut self, metrics: &Metrics, route: &str, method: &'static str) -> &Histogram {
        let index = match self.durations.iter().position(|(m, _)| *m == method) {
            Some(index) => index,
            None => {
                let histogram = metrics
                    .http_request_duration_seconds
                    .with_label_values(&[route, method]);
                self.durations.push((method, histogram));
                self.durations.len() - 1
            }
        };
        &self.durations[index].1
    }
}

/// Methods as a bounded label set.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
