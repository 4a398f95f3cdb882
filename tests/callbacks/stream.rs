//! The stream: JSON and MessagePack clients see the same changes; a client resuming with
//! `since` while changes keep coming sees every `seq` once, in order.

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Env, KEY, WAIT, request, slot};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(env: &Env, query: &str) -> Socket {
    let url = env
        .app
        .url(&format!("/v1/callbacks/stream{query}"))
        .replace("http://", "ws://");
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Api-Key", KEY.parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame")
            .unwrap()
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Binary(data) => return rmp_serde::from_slice(&data).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn json_and_msgpack_clients_see_the_same_changes() {
    let env = Env::start(10).await;
    let mut text = connect(&env, "").await;
    let mut binary = connect(&env, "?format=msgpack").await;
    // Registration happens once the socket is served: give both a change to wait for.
    let mut seen = Vec::new();
    for hour in [8, 9] {
        let r: Value = env
            .reserve(&request(vec![slot(2, hour, 30)]))
            .await
            .json()
            .await
            .unwrap();
        seen.push(r["id"].clone());
    }
    for _ in 0..2 {
        let a = next_frame(&mut text).await;
        let b = next_frame(&mut binary).await;
        assert_eq!(a, b);
        assert_eq!(a["type"], "callback.reservation.created");
        assert!(seen.contains(&a["reservation"]["id"]));
    }
    env.app.stop().await;
}

#[tokio::test]
async fn resuming_with_since_sees_every_seq_once_in_order() {
    let env = Env::start(50).await;
    let first: Value = env
        .reserve(&request(vec![slot(2, 8, 30)]))
        .await
        .json()
        .await
        .unwrap();
    let since = first["seq"].as_u64().unwrap();
    for hour in 9..12 {
        env.reserve(&request(vec![slot(2, hour, 30)])).await;
    }
    let mut socket = connect(&env, &format!("?since={since}")).await;
    let writer = {
        let (http, url) = (env.http.clone(), env.app.url("/v1/callbacks"));
        tokio::spawn(async move {
            for hour in 12..18 {
                crate::support::reserve_at(&http, &url, &request(vec![slot(2, hour, 30)])).await;
            }
        })
    };
    let mut seqs = Vec::new();
    while seqs.len() < 9 {
        let frame = next_frame(&mut socket).await;
        seqs.push(frame["seq"].as_u64().unwrap());
    }
    writer.await.unwrap();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(seqs[0] > since);
    let all: Value = env
        .get("/v1/callbacks?limit=100")
        .await
        .json()
        .await
        .unwrap();
    let mut stored: Vec<u64> = all["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .filter(|s| *s > since)
        .collect();
    stored.sort_unstable();
    assert_eq!(seqs, stored);
    // An ack is accepted; anything else closes with 1007.
    use futures_util::SinkExt;
    socket
        .send(Message::text(json!({"ack": seqs[8]}).to_string()))
        .await
        .unwrap();
    socket.send(Message::text("hello")).await.unwrap();
    let closed = loop {
        match tokio::time::timeout(WAIT, socket.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(u16::from(closed.unwrap().code), 1007);
    env.app.stop().await;
}
