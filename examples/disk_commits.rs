//! The disk's own commit limit, for `bench/ingest.sh`: single-row and 100-row commits per second
//! of a SQLite database in WAL mode with `synchronous = FULL` (the gateway's settings), in a
//! given folder (put it on the file system the gateway's database lives on).
//!
//! `cargo run --release --example disk_commits -- <folder> [seconds]` prints one line:
//! `single_row_commits_per_s=<n> hundred_row_commits_per_s=<n> rows_per_s_in_100_row_commits=<n>`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

async fn commits_per_s(
    conn: &mut sqlx::SqliteConnection,
    rows: usize,
    seconds: f64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut commits = 0_u64;
    let payload = "x".repeat(300);
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        let mut tx = conn.begin().await?;
        for _ in 0..rows {
            sqlx::query("INSERT INTO probe (body) VALUES ($1)")
                .bind(payload.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        commits += 1;
    }
    Ok(commits as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let folder = PathBuf::from(args.next().unwrap_or_else(|| ".".to_owned()));
    let seconds: f64 = args.next().map_or(Ok(3.0), |s| s.parse())?;
    let file = folder.join("disk-commits-probe.db");
    let _ = std::fs::remove_file(&file);
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut conn = options.connect().await?;
    sqlx::query("CREATE TABLE probe (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&mut conn)
        .await?;
    let single = commits_per_s(&mut conn, 1, seconds).await?;
    let hundred = commits_per_s(&mut conn, 100, seconds).await?;
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    println!(
        "single_row_commits_per_s={single:.0} hundred_row_commits_per_s={hundred:.0} \
         rows_per_s_in_100_row_commits={:.0}",
        hundred * 100.0
    );
    Ok(())
}
