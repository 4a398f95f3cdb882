//! The text log line (`[telemetry] log_format = "text"`): `tracing-subscriber`'s full format,
//! with the request being served shown as its outermost span.
//!
//! ```text
//! 2026-01-01T10:00:00.123456Z  WARN request{request_id=… method=POST}: genesys_gateway::app: data action failed status=502
//! ```
//!
//! The request span is written from the request's task-local id (see `RequestId::serving`)
//! rather than recorded per request, so a request that logs nothing costs nothing here.

use std::fmt::{self, Write as _};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{Format, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use super::RequestId;

/// The event format of text lines (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct TextLines {
    inner: Format,
}

impl Default for TextLines {
    fn default() -> Self {
        Self {
            inner: Format::default().with_target(true).with_ansi(false),
        }
    }
}

/// The padded level as the full format writes it.
fn level_text(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::TRACE => "TRACE",
        tracing::Level::DEBUG => "DEBUG",
        tracing::Level::INFO => " INFO",
        tracing::Level::WARN => " WARN",
        tracing::Level::ERROR => "ERROR",
    }
}

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((id, method)) =
            RequestId::current().and_then(|id| id.method().cloned().map(|m| (id, m)))
        else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        // `<timestamp> <level> <spans: each `name{fields}:`, then a space><target>: …`: the
        // request span goes first among the spans.
        let level = format!(" {} ", level_text(*event.metadata().level()));
        let Some(at) = line.find(&level).map(|i| i + level.len()) else {
            return writer.write_str(&line);
        };
        let other_spans = ctx
            .event_scope()
            .is_some_and(|scope| scope.from_root().next().is_some());
        let mut span = String::with_capacity(64);
        write!(span, "request{{request_id={id} method={method}}}:")?;
        if !other_spans {
            span.push(' ');
        }
        line.insert_str(at, &span);
        writer.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs through the stock full format, or through [`TextLines`] (run inside a
    /// current-thread runtime).
    fn logged<F>(text_lines: bool, f: impl FnOnce() -> F) -> String
    where
        F: Future<Output = ()>,
    {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_target(true)
            .with_ansi(false);
        let dispatch = if text_lines {
            tracing::Dispatch::new(builder.event_format(TextLines::default()).finish())
        } else {
            tracing::Dispatch::new(builder.finish())
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tracing::dispatcher::with_default(&dispatch, || rt.block_on(f()));
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    /// A line without its timestamp.
    fn untimed(line: &str) -> &str {
        line.split_once(' ').map_or(line, |(_, rest)| rest)
    }

    #[test]
    fn the_request_is_written_as_the_span_it_used_to_be() {
        // Reference: a real span recorded per request, in the stock full format.
        let with_span = logged(false, || async {
            let span = tracing::info_span!("request", request_id = %"r-1", method = %"POST");
            let _entered = span.enter();
            tracing::warn!(status = 502_u16, "data action failed");
            let inner = tracing::info_span!("call", upstream = "crm");
            let _inner = inner.enter();
            tracing::info!("inner");
        });
        let from_task_local = logged(true, || async {
            let id = RequestId::from_headers(&{
                let mut h = http::HeaderMap::new();
                h.insert("x-request-id", http::HeaderValue::from_static("r-1"));
                h
            })
            .serving(&http::Method::POST);
            id.scope(async {
                tracing::warn!(status = 502_u16, "data action failed");
                let inner = tracing::info_span!("call", upstream = "crm");
                let _inner = inner.enter();
                tracing::info!("inner");
            })
            .await;
        });
        let expected: Vec<&str> = with_span.lines().map(untimed).collect();
        let found: Vec<&str> = from_task_local.lines().map(untimed).collect();
        assert_eq!(found, expected);
        assert_eq!(
            found[0],
            " WARN request{request_id=r-1 method=POST}: genesys_gateway::telemetry::text::tests: data action failed status=502"
        );
    }

    #[test]
    fn lines_outside_a_request_are_the_stock_format() {
        let stock = logged(false, || async {
            tracing::info!(a = 1, "outside");
            // An id that no edge marked as being served is no request span.
            RequestId::generate()
                .scope(async { tracing::info!("unmarked") })
                .await;
        });
        let ours = logged(true, || async {
            tracing::info!(a = 1, "outside");
            RequestId::generate()
                .scope(async { tracing::info!("unmarked") })
                .await;
        });
        let stock: Vec<&str> = stock.lines().map(untimed).collect();
        let ours: Vec<&str> = ours.lines().map(untimed).collect();
        assert_eq!(ours, stock);
        assert_eq!(stock.len(), 2);
    }
}
