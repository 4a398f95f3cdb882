//! Several gateways on one PostgreSQL database: capacity enforced by the database across them,
//! and one sync leader — a leader killed with SIGKILL is replaced within 30 s.
//! The database comes from `GATEWAY_TEST_DATABASE_URL`; each test creates its own and says
//! clearly when it is skipped.

use std::time::Duration;

use serde_json::Value;
use sqlx::Connection as _;

use crate::common::TestApp;
use crate::support::{config, request, reserve_at, simulator, slot};

const PG_ENV: &str = "GATEWAY_TEST_DATABASE_URL";

/// A database of one test, dropped when this is dropped.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var(PG_ENV) else {
            use std::io::Write;
            let test = std::thread::current()
                .name()
                .unwrap_or("a PostgreSQL test")
                .to_owned();
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test} (PostgreSQL): {PG_ENV} not set"
            );
            return None;
        };
        let name = format!("gw_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect");
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
        let authority = base.find("://").expect("a url") + 3;
        let path = base[authority..]
            .find('/')
            .map_or(base.len(), |i| authority + i);
        let mut url = format!("{}/{name}", &base[..path]);
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        Some(Self {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&sql).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
    }
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
    let body = request(vec![slot(4, 10, 30)]);
    let answers = futures_util::future::join_all((0..50).map(|i| {
        let url = if i % 2 == 0 {
            a.url("/v1/callbacks")
        } else {
            b.url("/v1/callbacks")
        };
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
    a.stop().await;
    b.stop().await;
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

#[tokio::test]
async fn a_killed_leader_is_replaced_within_thirty_seconds() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let sim = simulator().await;
    let base = sim.base_url();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, config(&base, &db.url, 10)).unwrap();
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway binary starts")
    };
    let wait_for = |want: &'static str| {
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
    let mut first = spawn();
    let leader_channel = wait_for("the first gateway leads").await;
    let mut second = spawn();
    // The second one follows: still one channel, the first one's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open = sockets(&http, &base).await;
    assert_eq!(open.len(), 1, "one leader: {open:?}");
    assert_eq!(open[0]["channelId"], leader_channel.as_str());
    first.start_kill().unwrap();
    first.wait().await.unwrap();
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
    second.start_kill().unwrap();
    let _ = second.wait().await;
}
