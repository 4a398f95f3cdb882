//! Logs: JSON lines carrying the request id; secrets never logged.
//! Its own test binary: it installs the process-wide log subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::TestApp;
use genesys_gateway::config::LogFormat;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const SECRETS: [&str; 2] = [
    "admin-secret-token-0123456789",
    "portal-key-should-not-leak",
];

#[tokio::test]
async fn logs_are_json_with_request_ids_and_no_secrets() {
    let captured = Captured::default();
    genesys_gateway::telemetry::init_with_writer(LogFormat::Json, "debug", captured.clone())
        .expect("first subscriber of this test binary");

    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
io_threads = 1
[store]
url = "sqlite://data/gw.db"
[genesys]
simulate = true
[admin.auth]
type = "bearer"
tokens = ["{admin}"]
[callbacks]
auth = {{ type = "header", name = "X-Api-Key", value = "{portal}" }}
"#,
        admin = SECRETS[0],
        portal = SECRETS[1],
    );
    let app = TestApp::spawn_with(&config).await;
    // A right and a wrong admin call, with request ids we can find in the logs.
    app.client
        .get(app.url("/admin/v1/audit"))
        .bearer_auth(SECRETS[0])
        .header("X-Request-Id", "req-log-ok")
        .send()
        .await
        .unwrap();
    app.client
        .get(app.url("/admin/v1/audit"))
        .bearer_auth(format!("{}-wrong", SECRETS[0]))
        .header("X-Request-Id", "req-log-wrong")
        .send()
        .await
        .unwrap();
    app.stop().await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!text.is_empty(), "something was logged");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    for id in ["req-log-ok", "req-log-wrong"] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("\"request_id\":\"{id}\""))),
            "no log line carries {id}:\n{text}"
        );
    }
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{secret} appears in the logs:\n{text}"
        );
    }
}
