//! `genesys-gateway sim`: starts on the given address, logs it, serves, and stops with status 0
//! on SIGTERM; a bad fixtures file is a configuration error (exit 64).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_genesys-gateway");

/// The first `http://127.0.0.1:<port>` in `line`.
fn url_in(line: &str) -> Option<String> {
    let start = line.find("http://127.0.0.1:")?;
    let url: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.'))
        .collect();
    Some(url)
}

#[tokio::test]
async fn the_sim_command_serves_until_sigterm() {
    let mut child = Command::new(BIN)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit-per-min",
            "5",
            "--heartbeat-s",
            "1",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let url = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| url_in(&line))
    })
    .await
    .unwrap()
    .expect("the address is logged");

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token: serde_json::Value = http
        .post(format!("{url}/oauth/token"))
        .basic_auth("sim-client", Some("sim-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    for _ in 0..5 {
        let response = http
            .get(format!("{url}/api/v2/users/u-1"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = http
        .get(format!("{url}/api/v2/users/u-1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429, "--rate-limit-per-min is applied");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_bad_fixtures_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixtures.json");
    std::fs::write(&path, r#"{"users": [{"id": "x"}]}"#).unwrap();
    let output = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0", "--fixtures"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("users[0].name"), "{stderr}");
}
