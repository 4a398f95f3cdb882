//! A PostgreSQL database of one test, for the tests that need PostgreSQL: created from
//! `GATEWAY_TEST_DATABASE_URL` and dropped with the value; without the variable the test says
//! clearly that it was skipped.

use sqlx::Connection as _;

pub const PG_ENV: &str = "GATEWAY_TEST_DATABASE_URL";

/// A database of one test, dropped when this is dropped.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// The URL of the test's own database.
    pub url: String,
}

impl PgDatabase {
    /// Creates the database, or `None` (with a line on stderr) when PostgreSQL is not configured.
    pub async fn create() -> Option<Self> {
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
