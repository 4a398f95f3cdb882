//! The notifications WebSocket client against the simulator: events, the heartbeat watchdog,
//! the seamless switch on `v2.system.socket_closing` without losing events, cancellation and
//! its metrics; and against a small fake Genesys whose sockets misbehave on purpose (closed at
//! once, a handshake never answered), on a paused clock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use genesys_gateway::config::Settings;
use genesys_gateway::genesys::GenesysEndpoints;
use genesys_gateway::genesys::models::{CreateCallbackCommand, RoutingData};
use genesys_gateway::genesys::{
    GenesysClient, NotificationItem, NotificationsClient, NotificationsOptions,
};
use genesys_gateway::sim::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, SimOptions, Simulator};
use genesys_gateway::telemetry::Metrics;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SUPPORT: &str = "a3b1f7c2-0000-4000-8000-000000000001";
const WAIT: Duration = Duration::from_secs(15);

fn topic() -> String {
    format!("v2.routing.queues.{SUPPORT}.conversations.callbacks")
}

struct Env {
    sim: Option<Simulator>,
    base: String,
    genesys: GenesysClient,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    rx: mpsc::Receiver<NotificationItem>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Env {
    /// A simulator with a 200 ms heartbeat and a 10 s socket-closing delay, and a running
    /// notifications client with a 30 s watchdog (tests of the watchdog shorten it): a loaded
    /// machine must not make a test see reconnections it did not cause.
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_sim(addr: std::net::SocketAddr) -> Simulator {
        Simulator::start(
            addr,
            SimOptions {
                heartbeat: Duration::from_millis(200),
                socket_closing_delay: Duration::from_secs(10),
                ..SimOptions::default()
            },
        )
        .await
        .unwrap()
    }

    async fn start_with(tune: impl FnOnce(&mut NotificationsOptions)) -> Self {
        let sim = Self::start_sim("127.0.0.1:0".parse().unwrap()).await;
        let mut settings = Settings::default();
        settings.server.io_threads = 1;
        settings.genesys.client_id = Some(SIM_CLIENT_ID.to_owned());
        settings.genesys.client_secret = Some(SecretString::from(SIM_CLIENT_SECRET));
        let endpoints = GenesysEndpoints {
            api_url: sim.base_url(),
            login_url: sim.base_url(),
        };
        let metrics = Arc::new(Metrics::new());
        let upstreams =
            genesys_gateway::genesys::build_upstreams(&settings, &endpoints, metrics.clone())
                .unwrap();
        let genesys = GenesysClient::from_upstreams(&upstreams).unwrap();
        let mut options = NotificationsOptions::with_heartbeat_timeout(Duration::from_secs(30));
        options.reconnect_base = Duration::from_millis(50);
        options.reconnect_max = Duration::from_millis(200);
        tune(&mut options);
        let cancel = CancellationToken::new();
        let (rx, task) =
            NotificationsClient::new(genesys.clone(), vec![topic()], options, &metrics)
                .spawn(64, cancel.clone());
        Self {
            base: sim.base_url(),
            sim: Some(sim),
            genesys,
            metrics,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            rx,
            cancel,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn control(&self, path: &str, body: Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    async fn open_sockets(&self) -> usize {
        let sockets: Vec<Value> = self
            .http
            .get(self.url("/__sim/notifications/sockets"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sockets.len()
    }

    async fn create_callback(&self) -> String {
        self.genesys
            .create_callback(&CreateCallbackCommand {
                routing_data: Some(RoutingData {
                    queue_id: SUPPORT.to_owned(),
                    ..RoutingData::default()
                }),
                callback_numbers: vec!["+14155550199".to_owned()],
                callback_scheduled_time: Some("2099-01-01T10:00:00.000Z".to_owned()),
                ..CreateCallbackCommand::default()
            })
            .await
            .unwrap()
            .conversation
            .id
    }

    async fn set_state(&self, conversation: &str, state: &str) {
        self.control(
            &format!("/__sim/callbacks/{conversation}/state"),
            json!({ "state": state }),
        )
        .await;
    }

    /// The next item.
    async fn next(&mut self) -> NotificationItem {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("an item in time")
            .expect("the client runs")
    }

    /// Items until one matches; returns it and what came before it.
    async fn until(
        &mut self,
        what: impl Fn(&NotificationItem) -> bool,
    ) -> (NotificationItem, Vec<NotificationItem>) {
        let mut before = Vec::new();
        loop {
            let item = self.next().await;
            if what(&item) {
                return (item, before);
            }
            before.push(item);
        }
    }

    /// Stops the simulator (every socket and channel is gone) and starts a fresh one on the same
    /// address.
    async fn restart_sim(&mut self) {
        let sim = self.sim.take().unwrap();
        let addr = sim.local_addr();
        sim.shutdown().await;
        self.sim = Some(Self::start_sim(addr).await);
    }

    fn reconnects(&self, reason: &str) -> u64 {
        self.metrics
            .notifications_reconnects_total
            .with_label_values(&[reason])
            .get()
    }
}

/// The customer participant's state in a callback event about `conversation`.
fn state_of(item: &NotificationItem, conversation: &str) -> Option<String> {
    let NotificationItem::Event(event) = item else {
        return None;
    };
    if event.event_body["id"] != conversation {
        return None;
    }
    event.event_body["participants"]
        .as_array()?
        .iter()
        .find(|p| p["purpose"] == "customer")
        .and_then(|p| p["state"].as_str())
        .map(str::to_owned)
}

#[tokio::test]
async fn forwards_callback_events_after_a_gap_signal() {
    let mut env = Env::start().await;
    assert_eq!(
        env.next().await,
        NotificationItem::Reconnected { gap: true }
    );
    assert_eq!(env.metrics.notifications_connected.get(), 1);

    let id = env.create_callback().await;
    let NotificationItem::Event(event) = env.next().await else {
        panic!("an event")
    };
    assert_eq!(event.topic_name, topic());
    assert_eq!(event.event_body["id"], id.as_str());
    env.set_state(&id, "connected").await;
    let (item, _) = env.until(|i| state_of(i, &id).is_some()).await;
    assert_eq!(state_of(&item, &id).as_deref(), Some("connected"));

    env.cancel.cancel();
    tokio::time::timeout(WAIT, env.task).await.unwrap().unwrap();
    assert_eq!(env.metrics.notifications_connected.get(), 0);
}

#[tokio::test]
async fn reconnects_after_heartbeat_silence() {
    let mut env = Env::start_with(|o| {
        *o = NotificationsOptions {
            reconnect_base: o.reconnect_base,
            reconnect_max: o.reconnect_max,
            ..NotificationsOptions::with_heartbeat_timeout(Duration::from_secs(3))
        }
    })
    .await;
    assert_eq!(
        env.next().await,
        NotificationItem::Reconnected { gap: true }
    );
    // Pings keep being answered: only heartbeats stop, as on a stuck channel. They stay off
    // until the watchdog has acted, however slow the machine.
    env.control("/__sim/notifications/pause", json!({ "seconds": 600 }))
        .await;
    let (item, _) = env
        .until(|i| matches!(i, NotificationItem::Reconnected { .. }))
        .await;
    assert_eq!(item, NotificationItem::Reconnected { gap: true });
    assert!(env.reconnects("heartbeat") >= 1);
    env.control("/__sim/notifications/pause", json!({ "seconds": 0 }))
        .await;

    // Events flow on the new socket.
    let id = env.create_callback().await;
    env.until(|i| state_of(i, &id).is_some()).await;
    assert_eq!(env.metrics.notifications_connected.get(), 1);
    tokio::time::timeout(WAIT, async {
        while env.open_sockets().await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the silent socket is gone");
}

#[tokio::test]
async fn switches_sockets_on_socket_closing_without_losing_events() {
    let mut env = Env::start().await;
    assert_eq!(
        env.next().await,
        NotificationItem::Reconnected { gap: true }
    );
    let id = env.create_callback().await;
    env.until(|i| state_of(i, &id).as_deref() == Some("scheduled"))
        .await;

    // Changes made while the client switches sockets.
    env.control("/__sim/notifications/socket-closing", json!({}))
        .await;
    let states = ["alerting", "contacting", "offering", "connected"];
    for state in states {
        env.set_state(&id, state).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (item, before) = env
        .until(|i| matches!(i, NotificationItem::Reconnected { .. }))
        .await;
    assert_eq!(item, NotificationItem::Reconnected { gap: false });
    assert_eq!(env.reconnects("socket_closing"), 1);

    // The old socket has closed, the new one serves; a change after the switch arrives too.
    env.set_state(&id, "disconnected").await;
    let (_, after) = env
        .until(|i| state_of(i, &id).as_deref() == Some("disconnected"))
        .await;
    let seen: Vec<String> = before
        .iter()
        .chain(after.iter())
        .filter_map(|i| state_of(i, &id))
        .collect();
    for state in states {
        assert!(
            seen.iter().any(|s| s == state),
            "{state} missing from {seen:?}"
        );
    }
    assert_eq!(env.reconnects("heartbeat"), 0);
    assert_eq!(env.reconnects("error"), 0);
    tokio::time::timeout(WAIT, async {
        while env.open_sockets().await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the old socket is gone");
    assert_eq!(env.metrics.notifications_connected.get(), 1);
}

#[tokio::test]
async fn stops_when_the_consumer_goes_away() {
    let mut env = Env::start().await;
    assert_eq!(
        env.next().await,
        NotificationItem::Reconnected { gap: true }
    );
    drop(std::mem::replace(&mut env.rx, mpsc::channel(1).1));
    env.create_callback().await;
    tokio::time::timeout(WAIT, &mut env.task)
        .await
        .expect("the task ends when its event cannot be delivered")
        .unwrap();
    assert_eq!(env.metrics.notifications_connected.get(), 0);
}

#[tokio::test]
async fn reconnects_on_a_new_channel_after_losing_the_socket() {
    let mut env = Env::start().await;
    assert_eq!(
        env.next().await,
        NotificationItem::Reconnected { gap: true }
    );
    env.restart_sim().await;
    let (item, _) = env
        .until(|i| matches!(i, NotificationItem::Reconnected { .. }))
        .await;
    assert_eq!(item, NotificationItem::Reconnected { gap: true });
    assert_eq!(env.reconnects("error"), 1);
    // The old channel is unknown to the new simulator: a new one was created and subscribed
    // (with a new token, after the old one was refused).
    let id = env.create_callback().await;
    env.until(|i| state_of(i, &id).is_some()).await;
}

#[tokio::test]
async fn renews_the_channel_before_it_expires() {
    // Renewing "24 h before expiry" makes the 24 h channel due for renewal after a second.
    let mut env = Env::start_with(|o| o.renew_before = Duration::from_secs(24 * 3600)).await;
    assert_eq!(
        env.next().await,
        NotificationItem::Reconnected { gap: true }
    );
    let (item, _) = env
        .until(|i| matches!(i, NotificationItem::Reconnected { .. }))
        .await;
    assert_eq!(item, NotificationItem::Reconnected { gap: false });
    assert!(env.reconnects("expiry") >= 1);
    let id = env.create_callback().await;
    env.until(|i| state_of(i, &id).is_some()).await;
}

// ---------------------------------------------------------------------------------------------
// A fake Genesys whose notification sockets misbehave on purpose. Its tests run on a paused
// clock: waits pass at once when everything is idle, and "promptly" means "before any timer".

/// What the socket of a channel does.
#[derive(Clone)]
enum Play {
    /// Accepts the WebSocket, then closes it at once.
    CloseAtOnce,
    /// Accepts, sends these text frames, then reads until the client closes.
    Send(Vec<String>),
    /// Never answers the handshake.
    NeverAnswer,
}

struct Fake {
    addr: std::net::SocketAddr,
    /// What the sockets of the next channels do, in order; the last one repeats.
    plays: Mutex<VecDeque<Play>>,
    channels: Mutex<HashMap<String, Play>>,
    created: AtomicUsize,
    /// When each WebSocket handshake request arrived (on the paused clock).
    handshakes: watch::Sender<Vec<Instant>>,
}

impl Fake {
    async fn start(plays: impl IntoIterator<Item = Play>) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            plays: Mutex::new(plays.into_iter().collect()),
            channels: Mutex::new(HashMap::new()),
            created: AtomicUsize::new(0),
            handshakes: watch::channel(Vec::new()).0,
        });
        let app = Router::new()
            .route("/oauth/token", post(fake_token))
            .route("/api/v2/notifications/channels", post(fake_create_channel))
            .route("/api/v2/notifications/channels/{id}", get(fake_channel))
            .route(
                "/api/v2/notifications/channels/{id}/subscriptions",
                put(fake_subscriptions),
            )
            .route("/channels/{id}", get(fake_socket))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// A notifications client on this fake (watchdog 1 h: nothing here waits for it).
    fn client(
        &self,
        tune: impl FnOnce(&mut NotificationsOptions),
    ) -> (NotificationsClient, Arc<Metrics>) {
        let mut settings = Settings::default();
        settings.server.io_threads = 1;
        settings.genesys.client_id = Some("client".to_owned());
        settings.genesys.client_secret = Some(SecretString::from("secret"));
        let base = format!("http://{}", self.addr);
        let endpoints = GenesysEndpoints {
            api_url: base.clone(),
            login_url: base,
        };
        let metrics = Arc::new(Metrics::new());
        let upstreams =
            genesys_gateway::genesys::build_upstreams(&settings, &endpoints, metrics.clone())
                .unwrap();
        let genesys = GenesysClient::from_upstreams(&upstreams).unwrap();
        let mut options = NotificationsOptions::with_heartbeat_timeout(Duration::from_secs(3600));
        tune(&mut options);
        let client = NotificationsClient::new(genesys, vec![topic()], options, &metrics);
        (client, metrics)
    }

    /// Waits until `n` handshakes have arrived; returns their times.
    async fn handshakes(&self, n: usize) -> Vec<Instant> {
        let mut rx = self.handshakes.subscribe();
        rx.wait_for(|h| h.len() >= n).await.unwrap().clone()
    }
}

async fn fake_token() -> Response {
    axum::Json(json!({"access_token": "t", "token_type": "bearer", "expires_in": 86400}))
        .into_response()
}

async fn fake_create_channel(State(fake): State<Arc<Fake>>) -> Response {
    let n = fake.created.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("c-{n}");
    let play = {
        let mut plays = fake.plays.lock().unwrap();
        if plays.len() > 1 {
            plays.pop_front().unwrap()
        } else {
            plays.front().cloned().unwrap()
        }
    };
    fake.channels.lock().unwrap().insert(id.clone(), play);
    axum::Json(json!({"connectUri": format!("ws://{}/channels/{id}", fake.addr), "id": id}))
        .into_response()
}

/// `HEAD` (and `GET`) of a channel: whether it exists.
async fn fake_channel(State(fake): State<Arc<Fake>>, Path(id): Path<String>) -> StatusCode {
    if fake.channels.lock().unwrap().contains_key(&id) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn fake_subscriptions() -> Response {
    axum::Json(json!({"entities": [{"id": topic()}]})).into_response()
}

async fn fake_socket(
    State(fake): State<Arc<Fake>>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    fake.handshakes.send_modify(|h| h.push(Instant::now()));
    let play = fake.channels.lock().unwrap().get(&id).cloned();
    match play {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Play::NeverAnswer) => std::future::pending().await,
        Some(Play::CloseAtOnce) => upgrade.on_upgrade(|mut socket| async move {
            let _ = socket.send(Message::Close(None)).await;
        }),
        Some(Play::Send(frames)) => upgrade.on_upgrade(|mut socket| async move {
            for frame in frames {
                if socket.send(Message::Text(frame.into())).await.is_err() {
                    return;
                }
            }
            while let Some(Ok(message)) = socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    return;
                }
            }
        }),
    }
}

fn event_frame(id: &str) -> String {
    json!({"topicName": topic(), "eventBody": {"id": id}}).to_string()
}

#[tokio::test(start_paused = true)]
async fn a_socket_closed_at_once_is_reopened_with_growing_backoff() {
    let fake = Fake::start([Play::CloseAtOnce]).await;
    let (client, metrics) = fake.client(|o| {
        o.reconnect_base = Duration::from_secs(1);
        o.reconnect_max = Duration::from_secs(600);
    });
    let cancel = CancellationToken::new();
    let (mut rx, task) = client.spawn(64, cancel.clone());
    tokio::spawn(async move { while rx.recv().await.is_some() {} });

    let at = fake.handshakes(6).await;
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        // Full jitter over [ceiling/2, ceiling], the ceiling doubling from 1 s.
        let floor = Duration::from_millis(500) * (1 << i);
        assert!(
            *gap >= floor,
            "gap {i} is {gap:?}, below {floor:?}: {gaps:?}"
        );
    }
    assert!(
        metrics
            .notifications_reconnects_total
            .with_label_values(&["error"])
            .get()
            >= 5
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("stops when cancelled")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancelling_during_a_switch_whose_handshake_hangs_stops_at_once() {
    let closing = json!({"topicName": "v2.system.socket_closing", "eventBody": {}}).to_string();
    let fake = Fake::start([Play::Send(vec![closing]), Play::NeverAnswer]).await;
    let (client, metrics) = fake.client(|_| {});
    let cancel = CancellationToken::new();
    let (mut rx, task) = client.spawn(64, cancel.clone());
    assert_eq!(
        rx.recv().await,
        Some(NotificationItem::Reconnected { gap: true })
    );
    // The switch's new socket is stuck in its handshake.
    fake.handshakes(2).await;
    tokio::time::sleep(Duration::from_millis(1)).await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("run returns without waiting for the handshake timeout")
        .unwrap();
    assert_eq!(metrics.notifications_connected.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_while_the_consumer_does_not_read_stops_at_once() {
    let fake = Fake::start([Play::Send(vec![event_frame("a"), event_frame("b")])]).await;
    let (client, metrics) = fake.client(|_| {});
    let cancel = CancellationToken::new();
    // Room for one item: the gap signal fills it, the first event waits for room.
    let (rx, task) = client.spawn(1, cancel.clone());
    fake.handshakes(1).await;
    tokio::time::sleep(Duration::from_millis(1)).await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("run returns while its consumer is stalled")
        .unwrap();
    assert_eq!(metrics.notifications_connected.get(), 0);
    drop(rx);
}
