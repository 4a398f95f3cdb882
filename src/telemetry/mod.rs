//! Logs, request correlation and Prometheus metrics.
//!
//! - [`init`] installs the process-wide `tracing` subscriber: JSON lines (typed fields, the
//!   spans in scope listed once; see [`AsJson`] and the `json` module) or text per
//!   `[telemetry] log_format`, filtered by `RUST_LOG` (default `info`).
//! - [`RequestId`] is the correlation id of the request being served: it is on the
//!   request's span of every log line (written by the formatters from the request's
//!   task-local, see [`RequestId::serving`]), on the response, in error bodies as `contextId`, in
//!   audit records and on outbound calls as `ININ-Correlation-Id`.
//! - [`Metrics`] owns the registry and every metric family the gateway exports.
//!
//! Nothing here ever records a secret, a token or a payload: spans carry ids, routes and
//! statuses only, and metric labels only bounded values (route templates, names, outcomes).

mod flood;
mod json;
mod metrics;
mod request;
mod text;

pub use flood::FloodGate;
pub use json::AsJson;
pub use metrics::{Metrics, RouteLabel};
pub use request::{DeadlineDrop, ININ_CORRELATION_ID, RequestId, X_REQUEST_ID, deadline_passed};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber writing to stdout.
///
/// # Errors
/// When a global subscriber is already installed.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    init_with_writer(format, "info", std::io::stdout)
}

/// Installs the global subscriber writing to `writer` with `default_filter` when `RUST_LOG` is
/// not set (tests capture logs this way).
///
/// # Errors
/// When a global subscriber is already installed.
pub fn init_with_writer<W>(format: LogFormat, default_filter: &str, writer: W) -> anyhow::Result<()>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    let result = match format {
        LogFormat::Json => builder
            .fmt_fields(json::JsonSpanFields)
            .event_format(json::JsonLines)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(false)
            .event_format(text::TextLines::default())
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// The levels of the events logged while `f` runs (for tests of log levels).
#[cfg(test)]
pub(crate) fn levels_logged(f: impl FnOnce()) -> Vec<tracing::Level> {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    struct Levels(Arc<Mutex<Vec<tracing::Level>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Levels {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0.lock().unwrap().push(*event.metadata().level());
        }
    }
    let levels = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Levels(levels.clone()));
    tracing::subscriber::with_default(subscriber, f);
    std::mem::take(&mut *levels.lock().unwrap())
}
