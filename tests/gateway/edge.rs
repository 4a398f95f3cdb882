//! The one middleware stack: request ids, the error shape of every
//! edge failure, deadline, body limit, JSON depth, load shedding, panics, metrics labels.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use genesys_gateway::app::middleware_stack;
use genesys_gateway::config::ServerSettings;
use genesys_gateway::error::{ApiError, Json, JsonBytes};
use genesys_gateway::telemetry::Metrics;
use serde_json::{Value, json};

struct Edge {
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Edge {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Order {
    #[serde(rename = "orderId")]
    order_id: String,
    quantity: u32,
}

/// The real stack around test routes, served on 127.0.0.1:0. `/held` waits until `gate` opens.
async fn spawn(server: ServerSettings) -> Edge {
    spawn_gated(server, Arc::new(tokio::sync::Semaphore::new(0))).await
}

async fn spawn_gated(server: ServerSettings, gate: Arc<tokio::sync::Semaphore>) -> Edge {
    let router = Router::new()
        .route(
            "/held",
            get(move || {
                let gate = gate.clone();
                async move {
                    let _permit = gate.acquire().await;
                    "released"
                }
            }),
        )
        .route(
            "/slow/{ms}",
            get(
                |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "done"
                },
            ),
        )
        .route(
            "/panic",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("boom with internal detail");
                }
                "unreachable"
            }),
        )
        .route(
            "/echo",
            post(|JsonBytes(bytes): JsonBytes| async move { bytes.len().to_string() }),
        )
        .route(
            "/orders",
            post(|Json(order): Json<Order>| async move { order.order_id }),
        )
        .route(
            "/items/{id}",
            get(|| async { Err::<String, _>(ApiError::not_found("no such item")) }),
        )
        .fallback(|| async { ApiError::not_found("No resource at this path.") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                genesys_gateway::error::ErrorCode::MethodNotAllowed,
                "method not allowed",
            )
        });
    let metrics = Arc::new(Metrics::new());
    let in_flight = genesys_gateway::app::InFlight::new(server.max_concurrent_requests);
    let app = middleware_stack(router, &server, metrics.clone(), in_flight);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Edge {
        addr,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        metrics,
    }
}

fn server() -> ServerSettings {
    ServerSettings {
        request_timeout_ms: 2_000,
        max_body_bytes: 1024,
        max_concurrent_requests: 64,
        ..ServerSettings::default()
    }
}

#[tokio::test]
async fn request_id_is_echoed_from_either_header_or_generated() {
    let edge = spawn(server()).await;
    let r = edge
        .client
        .get(edge.url("/items/1"))
        .header("X-Request-Id", "req-123")
        .header("ININ-Correlation-Id", "inin-456")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let body = common::assert_error(r, 404, "not.found").await;
    assert_eq!(body["contextId"], "req-123");

    let r = edge
        .client
        .get(edge.url("/items/1"))
        .header("ININ-Correlation-Id", "inin-456")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "inin-456");

    let r = edge.client.get(edge.url("/items/1")).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    let body = common::assert_error(r, 404, "not.found").await;
    assert_eq!(body["contextId"], generated.as_str());
}

#[tokio::test]
async fn unknown_route_and_wrong_method_use_the_error_shape() {
    let edge = spawn(server()).await;
    let r = edge.client.get(edge.url("/nowhere")).send().await.unwrap();
    common::assert_error(r, 404, "not.found").await;
    let r = edge
        .client
        .delete(edge.url("/orders"))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 405, "method.not.allowed").await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_without_internal_text() {
    let edge = spawn(server()).await;
    let r = edge.client.get(edge.url("/panic")).send().await.unwrap();
    let body = common::assert_error(r, 500, "internal.server.error").await;
    assert!(!body.to_string().contains("boom"), "{body}");
    // The server still serves.
    let r = edge.client.get(edge.url("/slow/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_deadline_answers_504() {
    let edge = spawn(ServerSettings {
        request_timeout_ms: 100,
        ..server()
    })
    .await;
    let started = std::time::Instant::now();
    let r = edge
        .client
        .get(edge.url("/slow/5000"))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 504, "request.timeout").await;
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_without_reading_it() {
    let edge = spawn(server()).await;
    // Declare 1 MiB but send only a first chunk, slowly: the answer must come before the rest.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let request = edge
        .client
        .post(edge.url("/echo"))
        .header("content-type", "application/json")
        .header("content-length", (1024 * 1024).to_string())
        .body(body)
        .send();
    tx.send(Ok(bytes::Bytes::from(vec![b' '; 512])))
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("413 arrives while the body is still being sent")
        .unwrap();
    common::assert_error(r, 413, "payload.too.large").await;
    drop(tx);
}

#[tokio::test]
async fn a_streamed_oversized_body_is_cut_at_the_limit() {
    let edge = spawn(server()).await;
    // No Content-Length (chunked): the limit applies while the body is read.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let request = edge
        .client
        .post(edge.url("/echo"))
        .header("content-type", "application/json")
        .body(body)
        .send();
    let sender = tokio::spawn(async move {
        for _ in 0..3 {
            if tx
                .send(Ok(bytes::Bytes::from(vec![b' '; 600])))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Keep the stream open: the server must answer without waiting for its end.
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let r = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("413 arrives before the body ends")
        .unwrap();
    common::assert_error(r, 413, "payload.too.large").await;
    sender.abort();
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn json_bodies_are_checked_at_the_edge() {
    let edge = spawn(server()).await;
    let post = |path: &str, ct: &str, body: String| {
        edge.client
            .post(edge.url(path))
            .header("content-type", ct.to_owned())
            .body(body)
            .send()
    };
    let deep = "[".repeat(51) + &"]".repeat(51);
    common::assert_error(
        post("/echo", "application/json", deep).await.unwrap(),
        400,
        "bad.request",
    )
    .await;
    let ok = "[".repeat(50) + &"]".repeat(50);
    assert_eq!(
        post("/echo", "application/json", ok)
            .await
            .unwrap()
            .status(),
        200
    );
    common::assert_error(
        post("/echo", "text/plain", "{}".into()).await.unwrap(),
        415,
        "unsupported.media.type",
    )
    .await;
    common::assert_error(
        post("/orders", "application/json", "{\"orderId\":".into())
            .await
            .unwrap(),
        400,
        "bad.request",
    )
    .await;
    let body = common::assert_error(
        post(
            "/orders",
            "application/json",
            json!({"quantity": 1}).to_string(),
        )
        .await
        .unwrap(),
        400,
        "invalid.input",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/orderId");
    assert_eq!(body["details"][0]["errorCode"], "required");
    let body = common::assert_error(
        post(
            "/orders",
            "application/json",
            json!({"orderId": "o-1", "quantity": "many"}).to_string(),
        )
        .await
        .unwrap(),
        400,
        "invalid.input",
    )
    .await;
    assert_eq!(body["details"][0]["fieldName"], "/quantity");
}

#[tokio::test]
async fn load_beyond_the_limit_is_shed_with_retry_after() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let edge = Arc::new(
        spawn_gated(
            ServerSettings {
                max_concurrent_requests: 2,
                ..server()
            },
            gate.clone(),
        )
        .await,
    );
    let held: Vec<_> = (0..2)
        .map(|_| {
            let edge = edge.clone();
            tokio::spawn(async move {
                edge.client
                    .get(edge.url("/held"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    // The two held requests occupy the capacity as soon as the server has read them; poll
    // (without timing assumptions) until a third one is shed.
    let mut shed = None;
    for _ in 0..500 {
        let r = edge.client.get(edge.url("/slow/0")).send().await.unwrap();
        if r.status() == 503 {
            shed = Some(r);
            break;
        }
        tokio::task::yield_now().await;
    }
    let r = shed.expect("a third concurrent request is shed");
    assert_eq!(r.headers()["retry-after"], "1");
    common::assert_error(r, 503, "overloaded").await;
    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    // Capacity is released afterwards.
    let r = edge.client.get(edge.url("/slow/0")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn metrics_use_route_templates_never_raw_paths() {
    let edge = spawn(server()).await;
    for id in ["abc-123", "secret-id-999"] {
        edge.client
            .get(edge.url(&format!("/items/{id}")))
            .send()
            .await
            .unwrap();
    }
    edge.client
        .get(edge.url("/no/such/path/42"))
        .send()
        .await
        .unwrap();
    let text = edge.metrics.render();
    assert!(
        text.contains(
            r#"gateway_http_requests_total{method="GET",route="/items/{id}",status="404"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    for raw in ["abc-123", "secret-id-999", "/no/such/path"] {
        assert!(!text.contains(raw), "raw path {raw} leaked into metrics");
    }
    let _: Value = json!(null);
}
