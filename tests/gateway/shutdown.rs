//! Graceful shutdown through the real application: readiness turns 503, new work
//! is refused, the request in flight completes, the listener closes; connection limits and the
//! header-read timeout; `serve` exits 0 on SIGTERM.

use crate::common;

use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::TestApp;
use tokio::sync::{Semaphore, mpsc};

/// An upstream whose `/slow` answers only when `gate` gets a permit; `arrived` hears each call.
async fn gated_upstream() -> (String, Arc<Semaphore>, mpsc::UnboundedReceiver<()>) {
    let gate = Arc::new(Semaphore::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let g = gate.clone();
    let router = Router::new().route(
        "/slow",
        get(move || {
            let gate = g.clone();
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                let _permit = gate.acquire().await;
                axum::Json(serde_json::json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, gate, rx)
}

fn config(upstream: &str, extra_server: &str) -> String {
    common::base_config().replace(
        "shutdown_grace_ms = 5000",
        &format!("shutdown_grace_ms = 5000\n{extra_server}"),
    ) + &format!(
        r#"
[upstreams.slow]
base_url = "{upstream}"
timeout_ms = 20000

[[actions]]
name = "slow"
upstream = "slow"
method = "GET"
path = "/slow"
timeout_ms = 20000
"#
    )
}

/// A client that opens a new connection for every request.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn call_action(app: &TestApp) -> impl Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    fresh_client()
        .post(app.url("/v1/actions/slow"))
        .json(&serde_json::json!({}))
        .send()
}

#[tokio::test]
async fn a_request_in_flight_completes_while_readiness_is_503_and_new_work_is_refused() {
    let (upstream, gate, mut arrived) = gated_upstream().await;
    let app = TestApp::spawn_with(&config(&upstream, "")).await;
    let addr = app.addr;

    let in_flight = tokio::spawn(call_action(&app));
    arrived
        .recv()
        .await
        .expect("the request reached the upstream");

    app.begin_shutdown();
    // Readiness turns 503 during the drain, on a new connection.
    let mut ready = None;
    for _ in 0..200 {
        let r = fresh_client().get(app.url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            ready = Some(r);
            break;
        }
        tokio::task::yield_now().await;
    }
    let body: serde_json::Value = ready.expect("/readyz turns 503").json().await.unwrap();
    assert!(
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "shutdown" && c["ok"] == false),
        "{body}"
    );
    // New work is refused while the request in flight finishes.
    let refused = call_action(&app).await.unwrap();
    assert_eq!(refused.headers()["connection"], "close");
    common::assert_error(refused, 503, "overloaded").await;

    gate.add_permits(1);
    let done = in_flight.await.unwrap().unwrap();
    assert_eq!(done.status(), 200, "the request in flight completes");
    app.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed once drained"
    );
}

#[tokio::test]
async fn during_the_shutdown_delay_new_work_is_still_served() {
    let (upstream, gate, mut arrived) = gated_upstream().await;
    let app = TestApp::spawn_with(&config(&upstream, "shutdown_delay_ms = 1000")).await;
    app.begin_shutdown();
    let r = fresh_client().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let call = tokio::spawn(call_action(&app));
    arrived.recv().await.expect("served during the delay");
    gate.add_permits(1);
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let app = TestApp::spawn_with(&config("http://127.0.0.1:9", "max_connections = 2")).await;
    let addr = app.addr;
    let held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // Give the server threads time to account for both (bounded poll on the third).
    let mut closed = false;
    for _ in 0..100 {
        let mut third = std::net::TcpStream::connect(addr).unwrap();
        third
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = [0u8; 64];
        match third.read(&mut buf) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(closed, "a third connection is closed without an answer");
    drop(held);
    // Capacity comes back once they are gone.
    let mut served = false;
    for _ in 0..100 {
        if let Ok(r) = fresh_client().get(app.url("/healthz")).send().await
            && r.status() == 200
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
    app.stop().await;
}

#[tokio::test]
async fn headers_must_arrive_within_the_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(&config(
        "http://127.0.0.1:9",
        "header_read_timeout_ms = 300",
    ))
    .await;
    // Incomplete headers: the server closes the connection without answering.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest))
        .await
        .expect("the server closed the connection instead of waiting for the headers")
        .ok();
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "no answer to incomplete headers"
    );
    // An idle keep-alive connection is closed too.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await
        .expect("an idle connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    app.stop().await;
}

#[test]
fn serve_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, common::base_config()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["serve", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .env_remove("GATEWAY_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id());
    // Wait for the "gateway listening addr=…" line.
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("the gateway logs its address").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::spawn(move || for _ in lines {});
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::mem::forget(guard);
    assert_eq!(exit.code(), Some(0), "exit status 0 after a graceful drain");
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}
