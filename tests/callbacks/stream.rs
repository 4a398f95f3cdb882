//! The stream: JSON and MessagePack clients see the same changes; a client resuming with
//! `since` while changes keep coming sees every `seq` once, in order (from the hub's memory and
//! from the store after a restart); a client that stops reading is closed with 1008 and its
//! stream ends; the shutdown is not held by such a client; a `since` older than the changes
//! kept is told to resynchronise.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;

use crate::support::{Env, KEY, WAIT, large_request, request, reserve_at, slot};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn stream_request(
    env: &Env,
    query: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = env
        .app
        .url(&format!("/v1/callbacks/stream{query}"))
        .replace("http://", "ws://");
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Api-Key", KEY.parse().unwrap());
    request
}

async fn connect(env: &Env, query: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(stream_request(env, query))
        .await
        .unwrap();
    socket
}

/// A stream client whose socket takes in little (4 KiB receive buffer): once it stops reading,
/// the gateway's writes block after a few large frames.
async fn connect_small(env: &Env, query: &str) -> Socket {
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(env.app.addr).await.unwrap();
    let (socket, _) = tokio_tungstenite::client_async(
        stream_request(env, query),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    socket
}

/// Reads (skipping change frames) until the gateway's close frame.
async fn close_frame(socket: &mut Socket) -> CloseFrame {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a close frame in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => {}
            other => panic!("the stream ended without a close frame: {other:?}"),
        }
    }
}

/// Reads until the connection ends (after the close handshake): the gateway dropped it.
async fn connection_end(socket: &mut Socket) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the gateway ends the connection")
        {
            None | Some(Err(_)) => return,
            Some(Ok(_)) => {}
        }
    }
}

/// Reserves large callbacks, one after the other, in fresh slots until `stop`.
fn keep_reserving(env: &Env, stop: CancellationToken) -> tokio::task::JoinHandle<usize> {
    let (http, url) = (env.http.clone(), env.app.url("/v1/callbacks"));
    tokio::spawn(async move {
        let mut created = 0;
        'all: for day in 1..29 {
            for hour in 0..24 {
                if stop.is_cancelled() {
                    break 'all;
                }
                let r = reserve_at(&http, &url, &large_request(vec![slot(day, hour, 30)])).await;
                assert_eq!(r.status(), 201, "{:?}", r.text().await);
                created += 1;
            }
        }
        created
    })
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

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1008_and_its_stream_ends() {
    let env = Env::start(50).await;
    let mut stalled = connect_small(&env, "").await;
    let mut reader = connect(&env, "").await;
    env.await_stream_clients(2, WAIT).await;
    let stop = CancellationToken::new();
    let writer = keep_reserving(&env, stop.clone());
    // The client reads nothing: the gateway's writes block, and within the stall limit (plus
    // the time to fill the buffers) the client is no longer served.
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while let Some(Ok(message)) = reader.next().await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                seqs.push(frame["seq"].as_u64().unwrap());
            }
        }
        seqs
    });
    env.await_stream_clients(1, Duration::from_secs(60)).await;
    stop.cancel();
    let created = writer.await.unwrap();
    // It reads again at once: what was buffered, then the 1008 close naming where to resume.
    let frame = close_frame(&mut stalled).await;
    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    assert!(
        frame.reason.as_str().contains("resume with since="),
        "{frame:?}"
    );
    // The gateway ended that stream: the connection is closed after the handshake.
    connection_end(&mut stalled).await;
    // The reading client was not affected: it saw every change, in order.
    env.app.stop().await;
    let seqs = reading.await.unwrap();
    assert_eq!(seqs.len(), created, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn the_shutdown_is_not_held_by_a_client_that_does_not_read() {
    // A long grace: a stream task that lingered would hold the shutdown for all of it.
    let env = Env::start_on("sqlite://data/gateway.db", 50, |text| {
        text.replace("shutdown_grace_ms = 5000", "shutdown_grace_ms = 30000")
    })
    .await;
    let mut stalled = connect_small(&env, "").await;
    env.await_stream_clients(1, WAIT).await;
    for hour in 0..8 {
        let r = env.reserve(&large_request(vec![slot(2, hour, 30)])).await;
        assert_eq!(r.status(), 201);
    }
    let started = tokio::time::Instant::now();
    env.app.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "the shutdown waited {took:?} for a client that does not read"
    );
    // What was buffered, then the end of the connection (the close frame may not have fit).
    connection_end(&mut stalled).await;
}

#[tokio::test]
async fn a_reading_client_is_closed_with_1001_at_shutdown() {
    let env = Env::start(10).await;
    let mut socket = connect(&env, "").await;
    env.await_stream_clients(1, WAIT).await;
    env.app.stop().await;
    let frame = close_frame(&mut socket).await;
    assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
}

#[tokio::test]
async fn after_a_restart_since_replays_from_the_store_and_a_pruned_cursor_is_told_to_resync() {
    use genesys_gateway::callbacks::changes::{ChangeRetention, prune_changes};
    use genesys_gateway::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
    let env = Env::start_on(&url, 50, |text| text).await;
    let mut seqs = Vec::new();
    for hour in 0..6 {
        let r: Value = env
            .reserve(&request(vec![slot(3, hour, 30)]))
            .await
            .json()
            .await
            .unwrap();
        seqs.push(r["seq"].as_u64().unwrap());
    }
    env.app.stop().await;

    // Keep only the changes numbered at most 3 below the last one.
    let store = Store::connect(&secrecy::SecretString::from(url.clone()), dir.path())
        .await
        .unwrap();
    let retention = ChangeRetention {
        max_rows: 3,
        ..ChangeRetention::default()
    };
    let cancel = CancellationToken::new();
    let last = seqs[5];
    let gone: Vec<u64> = seqs.iter().copied().filter(|s| *s <= last - 3).collect();
    assert!(!gone.is_empty());
    let deleted = prune_changes(&store, &retention, chrono::Utc::now(), &cancel)
        .await
        .unwrap();
    assert_eq!(deleted, gone.len() as u64);
    let pruned = *gone.last().unwrap();
    assert_eq!(store.changes_pruned_through().await.unwrap(), pruned as i64);
    assert_eq!(
        prune_changes(&store, &retention, chrono::Utc::now(), &cancel)
            .await
            .unwrap(),
        0,
        "nothing more to prune"
    );
    store.close().await;

    // A fresh gateway on the same store: its hub holds nothing, so `since` replays from the
    // store.
    let env = Env::start_on(&url, 50, |text| text).await;
    let mut old = connect(&env, &format!("?since={}", seqs[0])).await;
    let frame = close_frame(&mut old).await;
    assert_eq!(u16::from(frame.code), 4410, "{frame:?}");
    let reason = frame.reason.as_str();
    assert!(reason.contains("GET /v1/callbacks"), "{reason}");
    let resume: u64 = reason.rsplit("since=").next().unwrap().parse().unwrap();
    assert_eq!(resume, last, "{reason}");

    let mut socket = connect(&env, &format!("?since={pruned}")).await;
    let writer = {
        let (http, url) = (env.http.clone(), env.app.url("/v1/callbacks"));
        tokio::spawn(async move {
            for hour in 6..12 {
                let r = reserve_at(&http, &url, &request(vec![slot(3, hour, 30)])).await;
                assert_eq!(r.status(), 201);
            }
        })
    };
    let kept = seqs.iter().filter(|s| **s > pruned).count();
    let mut seen = Vec::new();
    while seen.len() < kept + 6 {
        let frame = next_frame(&mut socket).await;
        seen.push(frame["seq"].as_u64().unwrap());
    }
    writer.await.unwrap();
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
        .filter(|s| *s > pruned)
        .collect();
    stored.sort_unstable();
    assert_eq!(seen, stored, "every kept and new change once, in order");
    env.app.stop().await;

    // By age: eight days later every change is past the 7 days kept, whatever their number.
    let store = Store::connect(&secrecy::SecretString::from(url.clone()), dir.path())
        .await
        .unwrap();
    let later = chrono::Utc::now() + chrono::TimeDelta::days(8);
    let by_age = ChangeRetention::default();
    assert_eq!(
        prune_changes(&store, &by_age, chrono::Utc::now(), &cancel)
            .await
            .unwrap(),
        0,
        "nothing is 7 days old yet"
    );
    let deleted = prune_changes(&store, &by_age, later, &cancel)
        .await
        .unwrap();
    assert_eq!(deleted, stored.len() as u64);
    assert_eq!(
        store.changes_pruned_through().await.unwrap(),
        *stored.last().unwrap() as i64
    );
    assert!(store.changes_after(0, 10).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_during_the_replay_is_closed_with_1008() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
    let env = Env::start_on(&url, 50, |text| text).await;
    // About 6 MB of changes: more than the socket buffers between the gateway and a client.
    for day in 1..6 {
        for hour in 0..24 {
            let r = env.reserve(&large_request(vec![slot(day, hour, 30)])).await;
            assert_eq!(r.status(), 201);
        }
    }
    env.app.stop().await;
    // A fresh gateway: the replay comes from the store, and no new change arrives.
    let env = Env::start_on(&url, 50, |text| text).await;
    let mut stalled = connect_small(&env, "?since=0").await;
    env.await_stream_clients(1, WAIT).await;
    env.await_stream_clients(0, Duration::from_secs(30)).await;
    let frame = close_frame(&mut stalled).await;
    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    assert!(
        frame.reason.as_str().contains("resume with since="),
        "{frame:?}"
    );
    connection_end(&mut stalled).await;
    env.app.stop().await;
}
