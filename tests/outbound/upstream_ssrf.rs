//! The SSRF guard of the transport: untrusted URLs never reach loopback, private or
//! link-local addresses — neither as IP literals nor through a name resolving there — unless
//! `allow_private_networks` or an `allow_cidrs` entry allows it.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use genesys_gateway::upstream::{HttpClient, HttpClientOptions, NetworkPolicy, TransportError};
use http::StatusCode;

async fn local_server() -> std::net::SocketAddr {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/big", get(|| async { "x".repeat(4096) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn client(policy: NetworkPolicy) -> HttpClient {
    HttpClient::new(policy, &HttpClientOptions::default())
}

fn guarded(allow_private: bool, cidrs: &[&str]) -> NetworkPolicy {
    NetworkPolicy::Guarded {
        allow_private,
        allow_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
    }
}

fn get_request(url: &str) -> http::Request<Bytes> {
    http::Request::get(url).body(Bytes::new()).unwrap()
}

async fn send(client: &HttpClient, url: &str) -> Result<StatusCode, TransportError> {
    client
        .send(get_request(url), Duration::from_secs(3))
        .await
        .map(|r| r.status)
}

#[tokio::test]
async fn guarded_clients_refuse_internal_addresses() {
    let strict = client(guarded(false, &[]));
    for url in [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://127.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "https://192.168.1.1/",
        "http://[fe80::1]/",
    ] {
        let err = send(&strict, url).await.unwrap_err();
        assert!(matches!(err, TransportError::Refused(_)), "{url}: {err:?}");
        assert!(err.certainly_not_sent());
    }
}

#[tokio::test]
async fn names_resolving_to_internal_addresses_are_refused() {
    let addr = local_server().await;
    let strict = client(guarded(false, &[]));
    let err = send(&strict, &format!("http://localhost:{}/", addr.port()))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Refused(_)), "{err:?}");
    let err = send(&strict, &format!("http://{addr}/")).await.unwrap_err();
    assert!(matches!(err, TransportError::Refused(_)), "{err:?}");
}

#[tokio::test]
async fn private_networks_can_be_allowed() {
    let addr = local_server().await;
    let by_name = format!("http://localhost:{}/", addr.port());
    let by_ip = format!("http://{addr}/");

    let allow_all = client(guarded(true, &[]));
    assert_eq!(send(&allow_all, &by_ip).await.unwrap(), StatusCode::OK);
    assert_eq!(send(&allow_all, &by_name).await.unwrap(), StatusCode::OK);

    let allow_loopback = client(guarded(false, &["127.0.0.0/8"]));
    assert_eq!(send(&allow_loopback, &by_ip).await.unwrap(), StatusCode::OK);
    assert_eq!(
        send(&allow_loopback, &by_name).await.unwrap(),
        StatusCode::OK
    );
    let err = send(&allow_loopback, "http://10.0.0.1/").await.unwrap_err();
    assert!(matches!(err, TransportError::Refused(_)), "{err:?}");

    let other_range = client(guarded(false, &["10.0.0.0/8"]));
    let err = send(&other_range, &by_ip).await.unwrap_err();
    assert!(matches!(err, TransportError::Refused(_)), "{err:?}");

    let trusted = client(NetworkPolicy::Trusted);
    assert_eq!(send(&trusted, &by_ip).await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn response_bodies_are_capped() {
    let addr = local_server().await;
    let small = HttpClient::new(
        NetworkPolicy::Trusted,
        &HttpClientOptions {
            max_response_bytes: 1024,
            ..HttpClientOptions::default()
        },
    );
    let err = send(&small, &format!("http://{addr}/big"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::ResponseTooLarge { limit: 1024 }),
        "{err:?}"
    );
    assert_eq!(
        send(&small, &format!("http://{addr}/")).await.unwrap(),
        StatusCode::OK
    );
}
