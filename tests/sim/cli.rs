//! `genesys-gateway sim`: starts on the given address, logs it, serves, and stops with status 0
//! on SIGTERM; warns loudly when it listens beyond loopback; a bad fixtures file is a
//! configuration error (exit 64).
//!
//! Every child process is held by a [`Child`] guard that kills it when dropped (a failing test
//! leaks no simulator), and every wait for it is bounded (a hang is a failure, not a stuck run).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_genesys-gateway");
/// How long the binary gets to log its address or to exit.
const WITHIN: Duration = Duration::from_secs(30);

/// A child process, killed and reaped when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    fn spawn(command: &mut Command) -> Self {
        Self(command.spawn().expect("the binary starts"))
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// The exit status, waiting at most `within` (then panics; the guard kills the process).
    async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The lines of its stdout, read by a thread until EOF.
    fn stdout_lines(&mut self) -> mpsc::Receiver<String> {
        let stdout = self.0.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }
}

/// The lines up to the first one holding `http://127.0.0.1:<port>`, and that URL.
fn until_url(lines: &mpsc::Receiver<String>) -> (Vec<String>, String) {
    let deadline = Instant::now() + WITHIN;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|err| panic!("no address logged ({err}); got {seen:#?}"));
        if let Some(url) = url_in(&line) {
            seen.push(line);
            return (seen, url);
        }
        seen.push(line);
    }
}

/// The first `http://127.0.0.1:<port>` in `line`.
fn url_in(line: &str) -> Option<String> {
    let start = line.find("http://127.0.0.1:")?;
    let url: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.'))
        .collect();
    Some(url)
}

fn sim(listen: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["sim", "--listen", listen])
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_sim_command_serves_until_sigterm() {
    let mut child = Child::spawn(&mut sim(
        "127.0.0.1:0",
        &["--rate-limit-per-min", "5", "--heartbeat-s", "1"],
    ));
    let lines = child.stdout_lines();
    let (logged, url) = until_url(&lines);
    assert!(
        !logged.iter().any(|l| l.contains("NON-LOOPBACK")),
        "{logged:#?}"
    );

    let http = client();
    let token = crate::common::sim_token(&http, &url).await;
    for _ in 0..5 {
        let response = http
            .get(format!("{url}/api/v2/users/u-1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = http
        .get(format!("{url}/api/v2/users/u-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429, "--rate-limit-per-min is applied");

    child.terminate();
    let exit = child.exit_within(WITHIN).await;
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn listening_beyond_loopback_is_warned_about() {
    let mut child = Child::spawn(&mut sim("0.0.0.0:0", &[]));
    let lines = child.stdout_lines();
    let (logged, url) = until_url(&lines);
    let warning = logged
        .iter()
        .find(|l| l.contains("NON-LOOPBACK"))
        .unwrap_or_else(|| panic!("no warning in {logged:#?}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("0.0.0.0:"), "{warning}");
    assert!(warning.contains("/__sim"), "{warning}");

    // It serves all the same (the login answers 200).
    crate::common::sim_token(&client(), &url).await;
    child.terminate();
    assert!(child.exit_within(WITHIN).await.success());
}

#[tokio::test]
async fn a_bad_fixtures_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixtures.json");
    std::fs::write(&path, r#"{"users": [{"id": "x"}]}"#).unwrap();
    let mut child = Child::spawn(
        Command::new(BIN)
            .args(["sim", "--listen", "127.0.0.1:0", "--fixtures"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let exit = child.exit_within(WITHIN).await;
    assert_eq!(exit.code(), Some(64));
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("users[0].name"), "{stderr}");
}
