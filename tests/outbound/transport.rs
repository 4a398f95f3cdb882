//! The transport's keep-alive connections: reused call after call, a connection the upstream
//! closed while idle replaced without failing the call, idle ones closed after `idle_timeout`,
//! and the request on the wire in origin form with its `Host`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use genesys_gateway::upstream::{HttpClient, HttpClientOptions, NetworkPolicy};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Connections a test server accepted and saw end.
#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed: AtomicUsize,
}

/// A keep-alive HTTP/1.1 server answering `200 ok` (the request line and `Host` echoed in
/// the body) that closes each connection after `answers_per_connection` answers.
async fn server(answers_per_connection: usize) -> (std::net::SocketAddr, Arc<Counts>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let seen = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            seen.opened.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut answered = 0;
                while answered < answers_per_connection {
                    let mut chunk = [0_u8; 4096];
                    let Ok(n) = tcp.read(&mut chunk).await else {
                        break;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        let host = head
                            .lines()
                            .find_map(|l| l.strip_prefix("host: "))
                            .unwrap_or("-")
                            .to_owned();
                        let body = format!("{line}|{host}");
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                        answered += 1;
                    }
                }
                drop(tcp);
                seen.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

fn client(idle_timeout: Duration) -> HttpClient {
    HttpClient::new(
        NetworkPolicy::Trusted,
        &HttpClientOptions {
            idle_timeout,
            ..HttpClientOptions::default()
        },
    )
}

async fn get(client: &HttpClient, url: &str) -> (StatusCode, String) {
    let request = http::Request::get(url).body(Bytes::new()).unwrap();
    let response = client
        .send(request, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    (
        response.status,
        String::from_utf8(response.body.to_vec()).unwrap(),
    )
}

/// Waits (bounded) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_connection_carries_call_after_call_in_origin_form_with_its_host() {
    let (addr, counts) = server(usize::MAX).await;
    let client = client(Duration::from_secs(30));
    for i in 0..5 {
        let (status, body) = get(&client, &format!("http://{addr}/users/{i}?x=1")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("GET /users/{i}?x=1 HTTP/1.1|{addr}"));
    }
    let (_, body) = get(&client, &format!("http://{addr}")).await;
    assert_eq!(
        body,
        format!("GET / HTTP/1.1|{addr}"),
        "an empty path is `/`"
    );
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1, "kept alive");
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced_without_failing_the_call() {
    let (addr, counts) = server(1).await;
    let client = client(Duration::from_secs(30));
    let url = format!("http://{addr}/a");
    for round in 1..=3 {
        assert_eq!(get(&client, &url).await.0, StatusCode::OK, "call {round}");
        // The server closes after each answer; the next call must not fail on the dead one.
        eventually("the server closed the connection", || {
            counts.closed.load(Ordering::SeqCst) == round
        })
        .await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(counts.opened.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (addr, counts) = server(usize::MAX).await;
    let client = client(Duration::from_millis(200));
    assert_eq!(
        get(&client, &format!("http://{addr}/a")).await.0,
        StatusCode::OK
    );
    eventually("the idle connection was closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    // A later call opens a new one.
    assert_eq!(
        get(&client, &format!("http://{addr}/b")).await.0,
        StatusCode::OK
    );
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_calls_use_several_connections_and_keep_them() {
    let (addr, counts) = server(usize::MAX).await;
    let client = client(Duration::from_secs(30));
    let url = format!("http://{addr}/c");
    let calls: Vec<_> = (0..4).map(|_| get(&client, &url)).collect();
    for (status, _) in futures_util::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK);
    }
    let opened = counts.opened.load(Ordering::SeqCst);
    assert!((1..=4).contains(&opened), "{opened}");
    // Kept: the same number of calls again opens nothing new.
    let calls: Vec<_> = (0..opened).map(|_| get(&client, &url)).collect();
    futures_util::future::join_all(calls).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), opened);
}
