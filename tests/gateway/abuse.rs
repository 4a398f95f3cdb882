//! The edge under abuse and overload, through the real listener: one test per way a client (or
//! an unlucky operator) could take the gateway down or flood its disk. Attack traffic comes
//! from 127.0.0.2, so that per-address limits can be told apart from the legitimate client on
//! 127.0.0.1; it is bounded in count and time.

use crate::common;

use std::io::{BufRead, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::any;
use common::{ADMIN_TOKEN, TestApp};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];

/// An upstream whose every path answers only when `gate` gets a permit; `arrived` hears each
/// call; `calls` counts them.
async fn gated_upstream() -> (String, Arc<Semaphore>, mpsc::UnboundedReceiver<()>) {
    let gate = Arc::new(Semaphore::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let g = gate.clone();
    let router = Router::new().fallback(any(move || {
        let gate = g.clone();
        let tx = tx.clone();
        async move {
            let _ = tx.send(());
            let _permit = gate.acquire().await;
            axum::Json(json!({"ok": true}))
        }
    }));
    (serve(router).await, gate, rx)
}

/// An upstream that counts its calls and answers `status`.
async fn counting_upstream(status: u16) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let router = Router::new().fallback(any(move || {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            (
                http::StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({"id": "u-1"})),
            )
        }
    }));
    (serve(router).await, calls)
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// `base_config` with `server` lines added and an action `slow` (GET `/users/{userId}` on
/// `upstream`).
fn config(upstream: &str, server: &str, extra: &str) -> String {
    common::base_config().replace(
        "shutdown_grace_ms = 5000",
        &format!("shutdown_grace_ms = 5000\n{server}"),
    ) + &format!(
        r#"
[upstreams.slow]
base_url = "{upstream}"
timeout_ms = 20000
retry = {{ max_attempts = 1, base_delay_ms = 10, max_delay_ms = 50 }}

[[actions]]
name = "slow"
upstream = "slow"
method = "GET"
path = "/users/{{userId}}"
timeout_ms = 20000
[actions.params]
userId = "/userId"
[actions.headers]
X-Note = "/note"
{extra}
"#
    )
}

/// A client that opens a new connection for every request, from `ip`.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

fn fresh_client() -> reqwest::Client {
    client_from([127, 0, 0, 1])
}

/// A raw TCP connection to `addr` from `ip`.
async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server closes `conn` within `wait` (EOF or reset), reading and dropping what it
/// sends.
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Everything `conn` sends until the server closes it (at most `wait`).
async fn read_all(conn: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, conn.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn metrics_text(app: &TestApp) -> String {
    fresh_client()
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `name{labels}` (labels as written, in order), 0 when absent.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every audit record of `kind` (all pages).
async fn audit(app: &TestApp, kind: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("/admin/v1/audit?kind={kind}&limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.admin_get(&url).await.json().await.unwrap();
        out.extend(page["entities"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

// 1. Health goes dark under load.
#[tokio::test]
async fn operations_endpoints_answer_while_every_request_slot_is_stalled() {
    let (upstream, gate, mut arrived) = gated_upstream().await;
    let app = TestApp::spawn_with(&config(&upstream, "max_concurrent_requests = 4", "")).await;
    let stalled: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(
                fresh_client()
                    .post(app.url("/v1/actions/slow"))
                    .json(&json!({"userId": "u-1"}))
                    .send(),
            )
        })
        .collect();
    for _ in 0..4 {
        arrived.recv().await.expect("a call reached the upstream");
    }
    // Every slot is taken: new work is shed...
    let shed = fresh_client()
        .post(app.url("/v1/actions/slow"))
        .json(&json!({"userId": "u-1"}))
        .send()
        .await
        .unwrap();
    common::assert_error(shed, 503, "overloaded").await;
    // ... but health, readiness and metrics answer.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = fresh_client().get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} under load");
    }
    gate.add_permits(4);
    for call in stalled {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    app.stop().await;
}

// 2. A 500 from input.
#[tokio::test]
async fn input_that_cannot_form_the_upstream_request_is_a_400_naming_its_pointer() {
    let (upstream, calls) = counting_upstream(200).await;
    let app = TestApp::spawn_with(&config(&upstream, "", "")).await;
    let call = |body: Value| {
        fresh_client()
            .post(app.url("/v1/actions/slow"))
            .json(&body)
            .send()
    };
    // The path the finding used: a 65,521-character segment.
    let long = "a".repeat(65_521);
    let body = common::assert_error(
        call(json!({"userId": long})).await.unwrap(),
        400,
        "invalid.input",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/userId", "{body}");
    assert_eq!(body["details"][0]["errorCode"], "maxLength", "{body}");
    // Characters that percent-encode to three bytes each cross the limit sooner.
    let encoded = "é".repeat(3000);
    let body = common::assert_error(
        call(json!({"userId": encoded})).await.unwrap(),
        400,
        "invalid.input",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/userId", "{body}");
    // A mapped header too long for a request.
    let body = common::assert_error(
        call(json!({"userId": "u-1", "note": "n".repeat(9000)}))
            .await
            .unwrap(),
        400,
        "invalid.input",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/note", "{body}");
    assert_eq!(body["details"][0]["errorCode"], "maxLength", "{body}");
    // A header value that is not encodable.
    let body = common::assert_error(
        call(json!({"userId": "u-1", "note": "a\r\nb"}))
            .await
            .unwrap(),
        400,
        "invalid.input",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/note", "{body}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    // A long but formable one still goes through.
    let ok = call(json!({"userId": "a".repeat(8000), "note": "n".repeat(4000)}))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

// 3. Admin token guessing is free.
#[tokio::test]
async fn failed_admin_authentication_is_throttled_per_address() {
    let app = TestApp::spawn_with(
        &common::base_config()
            .replace(
                "type = \"bearer\"",
                "max_failed_auth_per_min = 5\n[admin.auth]\ntype = \"bearer\"",
            )
            .replace("[admin.auth]\nmax_failed", "[admin]\nmax_failed"),
    )
    .await;
    let attacker = client_from(ATTACKER);
    let guess = |token: &'static str| {
        attacker
            .get(app.url("/admin/v1/actions"))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..5 {
        common::assert_error(guess("guess").await.unwrap(), 401, "invalid.token").await;
    }
    let throttled = guess("guess").await.unwrap();
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    common::assert_error(throttled, 429, "too.many.requests").await;
    // The right token from the throttled address does not get in either: guessing stops.
    common::assert_error(guess(ADMIN_TOKEN).await.unwrap(), 429, "too.many.requests").await;
    // Every admin route is behind the same throttle.
    let audit = attacker
        .get(app.url("/admin/v1/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    common::assert_error(audit, 429, "too.many.requests").await;
    // The legitimate client on another address is served.
    let ok = fresh_client()
        .get(app.url("/admin/v1/actions"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

// 5. One client takes every slot.
#[tokio::test]
async fn one_address_cannot_take_every_connection_slot() {
    let app = TestApp::spawn_with(&config(
        "http://127.0.0.1:9",
        "max_connections_per_client = 8\nheader_read_timeout_ms = 30000",
        "",
    ))
    .await;
    // Nine slow-header connections from the attacker: eight are held, one is closed at once.
    let mut held = Vec::new();
    for _ in 0..9 {
        let mut conn = connect_from(ATTACKER, app.addr).await;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(conn);
    }
    let mut closed = 0;
    for conn in &mut held {
        if closed_within(conn, Duration::from_millis(500)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 1,
        "the attacker's connection beyond the limit is closed"
    );
    // The legitimate client is served meanwhile.
    let r = fresh_client()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A slot given back is the attacker's again.
    held.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client_from(ATTACKER).get(app.url("/healthz")).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "slots are given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

// 6. No header cap.
#[tokio::test]
async fn headers_beyond_the_cap_are_a_431_in_the_error_shape() {
    let app = TestApp::spawn_with(&config(
        "http://127.0.0.1:9",
        "max_header_bytes = 16384",
        "",
    ))
    .await;
    // Under the cap: served.
    let r = fresh_client()
        .get(app.url("/healthz"))
        .header("x-big", "v".repeat(12_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Over the cap in one header: 431 in the error shape.
    let r = client_from(ATTACKER)
        .get(app.url("/healthz"))
        .header("x-big", "v".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["connection"], "close");
    let body = common::assert_error(r, 431, "headers.too.large").await;
    assert!(
        body["message"].as_str().unwrap().contains("16384"),
        "{body}"
    );
    // Many small headers together count too; and a head that never ends is cut at the cap,
    // before its end arrives (the memory held is bounded by the cap).
    let mut conn = connect_from(ATTACKER, app.addr).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for i in 0..400 {
        let line = format!("x-h{i}: {}\r\n", "v".repeat(50));
        if conn.write_all(line.as_bytes()).await.is_err() {
            break;
        }
    }
    let answer = read_all(&mut conn, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        answer.contains("\"code\":\"headers.too.large\""),
        "{answer}"
    );
    // The body of a request does not count against its headers.
    let r = fresh_client()
        .post(app.url("/v1/actions/unknown"))
        .json(&json!({"pad": "p".repeat(100_000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

// 7. Shutdown waits on nothing.
#[tokio::test]
async fn shutdown_does_not_wait_on_a_connection_that_sent_half_a_request() {
    let app = TestApp::spawn_with(
        &config("http://127.0.0.1:9", "", "")
            .replace("shutdown_grace_ms = 5000", "shutdown_grace_ms = 20000"),
    )
    .await;
    let mut half = connect_from(ATTACKER, app.addr).await;
    half.write_all(b"POST /v1/actions/slow HTTP/1.1\r\nHost: x\r\nContent-Type: app")
        .await
        .unwrap();
    let mut idle = connect_from(ATTACKER, app.addr).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let started = Instant::now();
    app.stop().await;
    // Far below the 20 s grace: nothing was in flight.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the shutdown waited on connections with nothing in flight ({:?})",
        started.elapsed()
    );
    assert!(closed_within(&mut half, Duration::from_secs(1)).await);
    assert!(closed_within(&mut idle, Duration::from_secs(1)).await);
}

// 8. A hang-up is called a timeout.
#[tokio::test]
async fn a_caller_that_hangs_up_is_canceled_not_a_timeout() {
    let (upstream, gate, mut arrived) = gated_upstream().await;
    let app = TestApp::spawn_with(&config(&upstream, "", "")).await;
    let mut conn = connect_from([127, 0, 0, 1], app.addr).await;
    let body = br#"{"userId":"u-1"}"#;
    let request = format!(
        "POST /v1/actions/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    arrived.recv().await.expect("the call reached the upstream");
    drop(conn);
    // Counted as canceled (never as a timeout), audited with status 499.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics_text(&app).await;
        if sample(
            &text,
            r#"gateway_action_executions_total{action="slow",outcome="canceled"}"#,
        ) == 1.0
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the hang-up was not counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        sample(
            &text,
            r#"gateway_action_executions_total{action="slow",outcome="timeout"}"#
        ),
        0.0
    );
    let http_499 = text
        .lines()
        .any(|l| l.starts_with("gateway_http_requests_total{") && l.contains("status=\"499\""));
    assert!(http_499, "the HTTP request is counted too (499):\n{text}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        let records = audit(&app, "action.executed").await;
        if let Some(r) = records.into_iter().find(|r| r["subject"] == "slow") {
            break r;
        }
        assert!(Instant::now() < deadline, "no audit record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record["outcome"], "canceled", "{record}");
    assert_eq!(record["detail"]["status"], 499, "{record}");
    gate.add_permits(1);
    app.stop().await;
}

// 9. Two JSON rules.
#[tokio::test]
async fn duplicate_keys_are_refused_on_every_surface() {
    let (upstream, calls) = counting_upstream(200).await;
    let app = TestApp::spawn_with(&config(&upstream, "", "")).await;
    let post = |path: &str, body: &'static str, admin: bool| {
        let mut r = fresh_client()
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(body);
        if admin {
            r = r.bearer_auth(ADMIN_TOKEN);
        }
        r.send()
    };
    let cases = [
        (
            "/v1/actions/slow",
            r#"{"userId":"a","userId":"b"}"#,
            false,
            "/userId",
        ),
        (
            "/v1/actions/slow",
            r#"{"userId":"a","x":{"k":1,"k":2}}"#,
            false,
            "/x/k",
        ),
        (
            "/webhook/data-action",
            r#"{"requestId":"r","action":"slow","data":{"userId":"a","userId":"b"}}"#,
            false,
            "/data/userId",
        ),
        (
            "/webhook/data-action",
            r#"{"requestId":"r","action":"slow","action":"slow","data":{}}"#,
            false,
            "/action",
        ),
        (
            "/admin/v1/actions/slow/test",
            r#"{"userId":"a","userId":"b"}"#,
            true,
            "/userId",
        ),
    ];
    for (path, body, admin, pointer) in cases {
        let answer =
            common::assert_error(post(path, body, admin).await.unwrap(), 400, "bad.request").await;
        assert_eq!(
            answer["details"][0]["fieldName"], pointer,
            "{path} {body}: {answer}"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    // The same bodies without the duplicate are served.
    let ok = post("/v1/actions/slow", r#"{"userId":"a"}"#, false)
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

/// A gateway process of the binary; killed when dropped.
struct Process {
    child: std::process::Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Sends SIGTERM and waits (at most 30 s) for the exit.
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "the gateway did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn gateway_binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"));
    command.env("RUST_LOG", "info").env_remove("GATEWAY_CONFIG");
    command
}

/// Starts the binary with `config` in `dir`, its log going to `dir/gateway.log`; returns it
/// once it logs its address.
fn start_gateway(dir: &std::path::Path, config: &str) -> (Process, SocketAddr) {
    let file = dir.join("gateway.toml");
    std::fs::write(&file, config).unwrap();
    let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
    let child = gateway_binary()
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let process = Process { child };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.trim_matches('"').parse().ok())
        {
            return (process, addr);
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn store_bytes(dir: &std::path::Path) -> u64 {
    ["gateway.db", "gateway.db-wal", "gateway.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join("data").join(f)).ok())
        .map(|m| m.len())
        .sum()
}

// 4. Floods flood the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_flood_of_rejected_calls_grows_log_and_store_by_little() {
    let (upstream, _calls) = counting_upstream(500).await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::base_config()
        + &format!(
            r#"
[audit]
execution_records_per_s = 100

[upstreams.down]
base_url = "{upstream}"
timeout_ms = 2000
retry = {{ max_attempts = 1, base_delay_ms = 10, max_delay_ms = 50 }}
circuit_breaker = {{ failure_threshold = 1, open_ms = 600000 }}

[[actions]]
name = "down"
upstream = "down"
method = "GET"
path = "/down"
"#
        );
    let (gateway, addr) = start_gateway(dir.path(), &config);
    let url = format!("http://{addr}/v1/actions/down");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // The first call opens the breaker.
    let first = client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(first.status(), 502);
    // Let the startup's own writes settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store_before = store_bytes(dir.path());
    let log_before = std::fs::metadata(dir.path().join("gateway.log"))
        .unwrap()
        .len();

    // Ten seconds of calls, every one rejected by the open breaker; a few admin guesses too.
    let until = Instant::now() + Duration::from_secs(10);
    let made = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            let made = made.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    let r = client.post(&url).json(&json!({})).send().await.unwrap();
                    assert_eq!(r.status(), 503);
                    made.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let attacker = client_from(ATTACKER);
    for _ in 0..50 {
        let r = attacker
            .get(format!("http://{addr}/admin/v1/actions"))
            .bearer_auth("secret-guess-0000")
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 401 | 429));
    }
    for w in workers {
        w.await.unwrap();
    }
    let made = made.load(Ordering::Relaxed) as u64;
    assert!(made > 1000, "a flood: {made} calls");

    // Every call is in the audit log: individually or in a summary's count.
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (individual, summarized, summaries) = loop {
        let mut individual = 0u64;
        let mut summarized = 0u64;
        let mut summaries = 0u64;
        let mut cursor: Option<String> = None;
        loop {
            let mut u = format!("http://{addr}/admin/v1/audit?kind=action.executed&limit=1000");
            if let Some(c) = &cursor {
                u.push_str(&format!("&cursor={c}"));
            }
            let page: Value = admin
                .get(u)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for r in page["entities"].as_array().unwrap() {
                if r["outcome"] != "circuit_open" {
                    continue;
                }
                if r["detail"]["summary"] == true {
                    summaries += 1;
                    summarized += r["detail"]["count"].as_u64().unwrap();
                } else {
                    individual += 1;
                }
            }
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        if individual + summarized >= made || Instant::now() > deadline {
            break (individual, summarized, summaries);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(individual + summarized, made, "every call is accounted for");
    assert!(summaries >= 1, "summary records stand for the flood");
    assert!(
        individual <= 100 * 12,
        "at most the budget per second: {individual}"
    );

    let status = gateway.terminate();
    assert!(status.success(), "{status:?}");
    let log_growth = std::fs::metadata(dir.path().join("gateway.log"))
        .unwrap()
        .len()
        - log_before;
    let store_growth = store_bytes(dir.path()).saturating_sub(store_before);
    eprintln!(
        "flood: {made} calls; log +{log_growth} B; store +{store_growth} B; \
         {individual} records + {summaries} summaries"
    );
    assert!(log_growth < 2 * 1024 * 1024, "log grew by {log_growth} B");
    assert!(
        store_growth < 4 * 1024 * 1024,
        "store grew by {store_growth} B"
    );
    // Failed admin authentication is logged at WARN with the address, never the token.
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("authentication failed")
            && l.contains("127.0.0.2")),
        "{log}"
    );
    assert!(!log.contains("secret-guess-0000"));
    // The breaker's rejections were logged, once per second at most, with counts suppressed.
    let rejections = log.lines().filter(|l| l.contains("circuit_open")).count();
    assert!((1..=15).contains(&rejections), "{rejections} lines");
    assert!(log.contains("suppressed"), "{log}");
}

// 10. Two processes, one port, silently.
#[test]
fn a_second_gateway_on_a_served_address_exits_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (first, addr) = start_gateway(dir.path(), &common::base_config());
    let second_dir = tempfile::tempdir().unwrap();
    let file = second_dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        common::base_config().replace("127.0.0.1:0", &addr.to_string()),
    )
    .unwrap();
    let output = gateway_binary()
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{addr} is already in use")),
        "{stderr}"
    );
    // The first one still serves, alone.
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(
        &mut conn,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(first.terminate().success());
}

/// A SIGHUP while the gateway is still starting is a reload request, never its end.
#[test]
fn a_sighup_during_startup_does_not_end_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, common::base_config()).unwrap();
    let mut child = gateway_binary()
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    // The first log line is written once the process runs its main; the store and the
    // simulator are not up yet.
    let _ = lines.next();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status();
    let process = Process { child };
    let started = lines.any(|l| l.is_ok_and(|l| l.contains("addr=")));
    std::thread::spawn(move || for _ in lines {});
    assert!(started, "the gateway started despite the SIGHUP");
    assert!(process.terminate().success());
}
