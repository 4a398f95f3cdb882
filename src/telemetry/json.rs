//! The JSON log line (`[telemetry] log_format = "json"`): one object per event with typed
//! fields, and the spans it happened in listed once.
//!
//! ```json
//! {"timestamp":"2026-01-01T10:00:00.123456Z","level":"WARN","target":"genesys_gateway::app",
//!  "message":"data action failed","status":502,"upstream_status":404,"attempts":1,
//!  "spans":[{"name":"request","request_id":"…","method":"POST"}]}
//! ```
//!
//! - Numbers and booleans are JSON numbers and booleans, strings are strings. A field recorded
//!   with `?` whose `Debug` text is a JSON array or object (a `Vec<String>`, a
//!   `serde_json::Value` shown through [`AsJson`]) is embedded as that array or object, so that
//!   `restart_required = ?keys` is `["server.listen"]`, not a string holding it.
//! - `spans` lists the spans in scope, outermost first, each with its `name` and its fields
//!   (typed the same way). The request id is on the request span, so every line of a request
//!   carries it: that span is written from the request's task-local id (see
//!   `RequestId::serving`), not recorded per request. There is no second copy of the innermost
//!   span.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::RequestId;

/// The event format of JSON lines (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JsonLines;

/// The field format of spans in JSON lines: a JSON object of typed fields.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JsonSpanFields;

/// Shows a `serde::Serialize` value as compact JSON through `Debug` (and `Display`): recorded
/// with `?` or `%` in a log event, a JSON line embeds it as JSON, a text line shows its JSON
/// text.
pub struct AsJson<'a, T: serde::Serialize + ?Sized>(pub &'a T);

impl<T: serde::Serialize + ?Sized> fmt::Debug for AsJson<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self.0).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl<T: serde::Serialize + ?Sized> fmt::Display for AsJson<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Collects fields as typed JSON values, in the order recorded (a field recorded again
/// replaces its value).
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn put(&mut self, name: &str, value: Value) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    fn into_map(self) -> Map<String, Value> {
        self.0.into_iter().collect()
    }
}

/// The `request` span of the request being served, when there is one: `request_id` and
/// `method`, typed as span fields recorded with `%` are.
fn request_span() -> Option<Value> {
    let id = RequestId::current()?;
    let method = id.method()?;
    let mut fields = Map::new();
    fields.insert("name".to_owned(), "request".into());
    fields.insert("request_id".to_owned(), debug_value(id.to_string()));
    fields.insert("method".to_owned(), debug_value(method.to_string()));
    Some(Value::Object(fields))
}

/// The JSON value of a field recorded through `Debug`: an embedded array or object when its
/// text is one, the text otherwise.
fn debug_value(text: String) -> Value {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('[') || trimmed.starts_with('{'))
        && let Ok(value @ (Value::Array(_) | Value::Object(_))) =
            serde_json::from_str::<Value>(&text)
    {
        return value;
    }
    Value::String(text)
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), value.into());
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value = i64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field.name(), value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value = u64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field.name(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // The message is text whatever it looks like.
        let value = if field.name() == "message" {
            Value::String(text)
        } else {
            debug_value(text)
        };
        self.put(field.name(), value);
    }
}

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut found = Fields::default();
        fields.record(&mut found);
        write!(writer, "{}", Value::Object(found.into_map()))
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut found = Fields::default();
        if !current.fields.is_empty()
            && let Ok(Value::Object(before)) = serde_json::from_str::<Value>(&current.fields)
        {
            found.0.extend(before);
        }
        fields.record(&mut found);
        current.fields = Value::Object(found.into_map()).to_string();
        Ok(())
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
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
        let meta = event.metadata();
        let mut line = Fields::default();
        line.put(
            "timestamp",
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.put("level", meta.level().as_str().into());
        line.put("target", meta.target().into());
        event.record(&mut line);
        // The request being served (see `RequestId::serving`) is the outermost span.
        let mut spans: Vec<Value> = request_span().into_iter().collect();
        if let Some(scope) = ctx.event_scope() {
            spans.extend(scope.from_root().map(|span| {
                let mut fields = Map::new();
                fields.insert("name".to_owned(), span.name().into());
                let extensions = span.extensions();
                if let Some(formatted) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(recorded)) =
                        serde_json::from_str::<Value>(&formatted.fields)
                {
                    fields.extend(recorded);
                }
                Value::Object(fields)
            }));
        }
        if !spans.is_empty() {
            line.put("spans", Value::Array(spans));
        }
        // Keys in the order put: timestamp, level, target, the event's fields, spans.
        writer.write_char('{')?;
        for (i, (name, value)) in line.0.iter().enumerate() {
            if i > 0 {
                writer.write_char(',')?;
            }
            write!(writer, "{}:{}", Value::String(name.clone()), value)?;
        }
        writer.write_str("}\n")
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

    fn lines(f: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn fields_are_typed_and_spans_listed_once() {
        let found = lines(|| {
            let request = tracing::info_span!("request", request_id = "r-1", method = "POST");
            let _entered = request.enter();
            let inner = tracing::info_span!("call", upstream = "crm", attempt = 2_u32);
            let _inner = inner.enter();
            let keys = vec!["server.listen".to_owned(), "store.url".to_owned()];
            let report = serde_json::json!({"actions": 2, "added": ["a"]});
            tracing::warn!(
                status = 502_u16,
                upstream_status = Some(404_u16),
                missing = None::<u16>,
                ratio = 0.5,
                ok = false,
                restart_required = ?keys,
                report = %AsJson(&report),
                shown = ?"quoted",
                "data action failed {}",
                7
            );
        });
        assert_eq!(found.len(), 1);
        let line = &found[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "data action failed 7");
        assert_eq!(line["status"], 502);
        assert_eq!(line["upstream_status"], 404);
        assert!(line.get("missing").is_none());
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["ok"], false);
        assert_eq!(
            line["restart_required"],
            serde_json::json!(["server.listen", "store.url"])
        );
        assert_eq!(
            line["report"],
            serde_json::json!({"actions": 2, "added": ["a"]})
        );
        assert_eq!(line["shown"], "\"quoted\"");
        assert!(line.get("span").is_none(), "one span representation");
        assert_eq!(
            line["spans"],
            serde_json::json!([
                {"name": "request", "request_id": "r-1", "method": "POST"},
                {"name": "call", "upstream": "crm", "attempt": 2}
            ])
        );
        assert!(chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn the_request_being_served_is_the_outermost_span() {
        let line = |recorded: bool| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let found = lines(|| {
                rt.block_on(async {
                    if recorded {
                        // What a span recorded per request wrote.
                        let span =
                            tracing::info_span!("request", request_id = %"r-9", method = %"GET");
                        let _entered = span.enter();
                        let inner = tracing::info_span!("call", upstream = "crm");
                        let _inner = inner.enter();
                        tracing::warn!(status = 502_u16, "failed");
                    } else {
                        let mut headers = http::HeaderMap::new();
                        headers.insert("x-request-id", http::HeaderValue::from_static("r-9"));
                        let id = RequestId::from_headers(&headers).serving(&http::Method::GET);
                        id.scope(async {
                            let inner = tracing::info_span!("call", upstream = "crm");
                            let _inner = inner.enter();
                            tracing::warn!(status = 502_u16, "failed");
                        })
                        .await;
                    }
                });
            });
            let mut line = found.into_iter().next().unwrap();
            line.as_object_mut().unwrap().remove("timestamp");
            line
        };
        let from_task_local = line(false);
        assert_eq!(from_task_local, line(true));
        assert_eq!(
            from_task_local["spans"],
            serde_json::json!([
                {"name": "request", "request_id": "r-9", "method": "GET"},
                {"name": "call", "upstream": "crm"}
            ])
        );
        // An id no edge marked as served (a background task's) is no span.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let found = lines(|| {
            rt.block_on(RequestId::generate().scope(async { tracing::info!("background") }));
        });
        assert!(found[0].get("spans").is_none());
    }

    #[test]
    fn fields_recorded_later_on_a_span_are_merged() {
        let found = lines(|| {
            let span = tracing::info_span!(
                "request",
                request_id = "r-2",
                status = tracing::field::Empty
            );
            let _entered = span.enter();
            span.record("status", 200_u16);
            tracing::info!("done");
        });
        assert_eq!(
            found[0]["spans"],
            serde_json::json!([{"name": "request", "request_id": "r-2", "status": 200}])
        );
        assert!(found[0].get("status").is_none());
    }

    #[test]
    fn debug_text_that_is_not_json_stays_text() {
        assert_eq!(debug_value("[1, 2]".into()), serde_json::json!([1, 2]));
        assert_eq!(
            debug_value("Foo { a: 1 }".into()),
            Value::String("Foo { a: 1 }".into())
        );
        assert_eq!(
            debug_value("[unclosed".into()),
            Value::String("[unclosed".into())
        );
        assert_eq!(debug_value("42".into()), Value::String("42".into()));
    }
}
