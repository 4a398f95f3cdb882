//! Several gateways on one PostgreSQL database: capacity enforced by the database across them
//! (two in this process, and two gateway processes), and one sync leader — a leader process
//! killed with SIGKILL is replaced within 30 s and no callback event is lost.
//! The database comes from `GATEWAY_TEST_DATABASE_URL`; each test creates its own and says
//! clearly when it is skipped.

use std::time::Duration;

use serde_json::Value;

use crate::common::TestApp;
use crate::common::postgres::PgDatabase;
use crate::support::{KEY, config, request, reserve_at, simulator, slot};

/// A gateway process (the built binary) on a port of its own, killed when dropped.
struct Gateway {
    child: tokio::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the binary with `text` (its `listen` replaced by a free port) and waits until it
    /// answers `/healthz`.
    async fn start(text: &str, http: &reqwest::Client) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        let text = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        std::fs::write(&file, text).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway binary starts");
        let gateway = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let up = http
                .get(gateway.url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return gateway;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway process does not answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, and wait until it is gone.
    async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// 50 concurrent reservations of one slot with 10 places, spread over `urls`: exactly 10
/// created, 40 refused with 409.
async fn fifty_for_ten(http: &reqwest::Client, urls: [String; 2]) {
    let body = request(vec![slot(4, 10, 30)]);
    let answers = futures_util::future::join_all((0..50).map(|i| {
        let url = urls[i % 2].clone();
        let (http, body) = (http.clone(), body.clone());
        async move { reserve_at(&http, &url, &body).await.status().as_u16() }
    }))
    .await;
    assert_eq!(
        answers.iter().filter(|s| **s == 201).count(),
        10,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 409).count(),
        40,
        "{answers:?}"
    );
}

#[tokio::test]
async fn two_gateways_on_one_database_never_overbook() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let sim = simulator().await;
    let text = config(&sim.base_url(), &db.url, 10);
    let a = TestApp::spawn_with(&text).await;
    let b = TestApp::spawn_with(&text).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    fifty_for_ten(&http, [a.url("/v1/callbacks"), b.url("/v1/callbacks")]).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_gateway_processes_on_one_database_never_overbook() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let sim = simulator().await;
    let text = config(&sim.base_url(), &db.url, 10);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let a = Gateway::start(&text, &http).await;
    let b = Gateway::start(&text, &http).await;
    fifty_for_ten(&http, [a.url("/v1/callbacks"), b.url("/v1/callbacks")]).await;
    // The database holds exactly the ten, whichever process is asked.
    let listed: Value = http
        .get(b.url("/v1/callbacks?limit=100"))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scheduled = listed["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "scheduled")
        .count();
    assert_eq!(scheduled, 10, "{listed}");
}

async fn sockets(http: &reqwest::Client, sim: &str) -> Vec<Value> {
    http.get(format!("{sim}/__sim/notifications/sockets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reserves a callback through `gateway`; returns its id and conversation.
async fn reserve(http: &reqwest::Client, gateway: &Gateway, hour: u32) -> (String, String) {
    let r = reserve_at(
        http,
        &gateway.url("/v1/callbacks"),
        &request(vec![slot(5, hour, 30)]),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r: Value = r.json().await.unwrap();
    (
        r["id"].as_str().unwrap().to_owned(),
        r["conversationId"].as_str().unwrap().to_owned(),
    )
}

/// Waits until `gateway` answers `id` with `status` and `version`.
async fn await_state(
    http: &reqwest::Client,
    gateway: &Gateway,
    id: &str,
    status: &str,
    version: u64,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r: Value = http
            .get(gateway.url(&format!("/v1/callbacks/{id}")))
            .header("X-Api-Key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["status"] == status && r["version"] == version {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never {status} v{version}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_thirty_seconds_and_no_event_is_lost() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let sim = simulator().await;
    let base = sim.base_url();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let text = config(&base, &db.url, 10);
    let wait_for_one = |want: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let open = sockets(&http, &base).await;
                if open.len() == 1 {
                    return open[0]["channelId"].as_str().unwrap().to_owned();
                }
                assert!(tokio::time::Instant::now() < deadline, "{want}: {open:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let state = |conversation: &str, state: &str| {
        let (http, base) = (http.clone(), base.clone());
        let (path, body) = (
            format!("{base}/__sim/callbacks/{conversation}/state"),
            serde_json::json!({ "state": state }),
        );
        async move {
            let r = http.post(path).json(&body).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    let mut first = Gateway::start(&text, &http).await;
    let leader_channel = wait_for_one("the first gateway leads").await;
    let second = Gateway::start(&text, &http).await;
    // The second one follows (it tries to lead every 2 s): still one channel, the first one's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open = sockets(&http, &base).await;
    assert_eq!(open.len(), 1, "one leader: {open:?}");
    assert_eq!(open[0]["channelId"], leader_channel.as_str());

    let (a, a_conv) = reserve(&http, &second, 8).await;
    let (b, b_conv) = reserve(&http, &second, 9).await;
    let (c, c_conv) = reserve(&http, &first, 10).await;
    // Applied by the leader, seen through the other process.
    state(&a_conv, "connected").await;
    await_state(&http, &second, &a, "in_progress", 2).await;

    first.kill().await;
    // Driven while no replica leads: only a reconciliation by the next leader can see these.
    state(&a_conv, "disconnected").await;
    state(&b_conv, "connected").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let open = sockets(&http, &base).await;
        if open.len() == 1 && open[0]["channelId"] != leader_channel.as_str() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader within 30 s: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Driven after the takeover: arrives on the new leader's socket.
    state(&c_conv, "connected").await;
    await_state(&http, &second, &a, "completed", 3).await;
    await_state(&http, &second, &b, "in_progress", 2).await;
    await_state(&http, &second, &c, "in_progress", 2).await;
}
