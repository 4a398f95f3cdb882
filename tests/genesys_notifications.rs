//! The notifications WebSocket client against the simulator: events, the heartbeat watchdog,
//! the seamless switch on `v2.system.socket_closing` without losing events, cancellation and
//! its metrics.

use std::sync::Arc;
use std::time::Duration;

use genesys_gateway::config::Settings;
use genesys_gateway::genesys::models::{CreateCallbackCommand, RoutingData};
use genesys_gateway::genesys::{
    GenesysClient, NotificationItem, NotificationsClient, NotificationsOptions,
};
use genesys_gateway::sim::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, SimOptions, Simulator};
use genesys_gateway::telemetry::Metrics;
use genesys_gateway::upstream::{GenesysEndpoints, Upstreams};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::mpsc;
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
    /// A simulator with a 200 ms heartbeat and a 1 s socket-closing delay, and a running
    /// notifications client with a 1 s watchdog.
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_sim(addr: std::net::SocketAddr) -> Simulator {
        Simulator::start(
            addr,
            SimOptions {
                heartbeat: Duration::from_millis(200),
                socket_closing_delay: Duration::from_secs(1),
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
        let upstreams = Upstreams::build(&settings, &endpoints, metrics.clone()).unwrap();
        let genesys = GenesysClient::from_upstreams(&upstreams).unwrap();
        let mut options = NotificationsOptions::with_heartbeat_timeout(Duration::from_secs(1));
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
    let mut env = Env::start().await;
    assert_eq!(
        env.next().await,
        NotificationItem::Reconnected { gap: true }
    );
    // Pings keep being answered: only heartbeats stop, as on a stuck channel.
    env.control("/__sim/notifications/pause", json!({ "seconds": 1.5 }))
        .await;
    let (item, _) = env
        .until(|i| matches!(i, NotificationItem::Reconnected { .. }))
        .await;
    assert_eq!(item, NotificationItem::Reconnected { gap: true });
    assert!(env.reconnects("heartbeat") >= 1);

    // Events flow on the new socket.
    let id = env.create_callback().await;
    env.until(|i| state_of(i, &id).is_some()).await;
    assert_eq!(env.metrics.notifications_connected.get(), 1);
    assert_eq!(env.open_sockets().await, 1);
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
