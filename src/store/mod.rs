//! Durable state: the [`Store`] over SQLite (one replica) or PostgreSQL (several replicas).
//!
//! SKELETON — the store engineer replaces this file's body; the public API below is the seam the
//! rest of the gateway codes against.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Embedded SQLite (one replica).
    Sqlite,
    /// PostgreSQL (several replicas).
    Postgres,
}

/// Store failures. Messages never contain the database URL or its password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store URL is not usable.
    #[error("invalid store url: {0}")]
    InvalidUrl(String),
}

/// The gateway's durable state.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Store {
    /// Connects (creating a SQLite file and its folder on first run, relative to `base_dir`) and
    /// runs migrations.
    ///
    /// # Errors
    /// When the database cannot be opened or migrated.
    pub async fn connect(url: &SecretString, base_dir: &Path) -> Result<Self, StoreError> {
        let url = url.expose_secret();
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
            let path = base_dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::InvalidUrl(format!("cannot create folder: {e}")))?;
            }
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(std::time::Duration::from_secs(5));
            let pool = sqlx::SqlitePool::connect_with(options).await?;
            Ok(Self {
                backend: Backend::Sqlite(pool),
            })
        } else {
            let pool = sqlx::PgPool::connect(url).await?;
            Ok(Self {
                backend: Backend::Postgres(pool),
            })
        }
    }

    /// Which database this is.
    pub fn kind(&self) -> StoreKind {
        match self.backend {
            Backend::Sqlite(_) => StoreKind::Sqlite,
            Backend::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
            Backend::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
        }
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// One audit record to write (SPEC §3.6). `detail` must never hold secrets, tokens or payload
/// values.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    /// When it happened.
    pub at: chrono::DateTime<chrono::Utc>,
    /// What happened, dotted (`event.accepted`, `action.executed`, `config.reloaded`...).
    pub kind: String,
    /// Who did it (`admin`, `issuer:legacy`, `genesys`, `system`...).
    pub actor: String,
    /// The request id, when a request caused it.
    pub request_id: Option<String>,
    /// What it is about (an id or a name).
    pub subject: Option<String>,
    /// `success`, `failure`, or a capability-specific outcome.
    pub outcome: String,
    /// Structured, non-secret detail.
    pub detail: serde_json::Value,
}

/// A stored audit record as listed by `GET /admin/v1/audit`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Record id.
    pub id: String,
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
    /// See [`AuditRecord::kind`].
    pub kind: String,
    /// See [`AuditRecord::actor`].
    pub actor: String,
    /// See [`AuditRecord::request_id`].
    pub request_id: Option<String>,
    /// See [`AuditRecord::subject`].
    pub subject: Option<String>,
    /// See [`AuditRecord::outcome`].
    pub outcome: String,
    /// See [`AuditRecord::detail`].
    pub detail: serde_json::Value,
}

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only records with `at ≥ since`.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only records of this kind.
    pub kind: Option<String>,
}

/// A page request: at most `limit` entries after `cursor`.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// 1..=1000.
    pub limit: u32,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The entries.
    pub entities: Vec<T>,
    /// Cursor of the next page, `None` on the last one.
    pub next_cursor: Option<String>,
}

impl Store {
    /// Lists audit records, newest first (SKELETON: the store engineer implements it).
    ///
    /// # Errors
    /// Database failures; an unparsable cursor is [`StoreError::InvalidUrl`] for now.
    pub async fn query_audit(
        &self,
        _filter: &AuditFilter,
        _page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        Ok(Page {
            entities: Vec::new(),
            next_cursor: None,
        })
    }
}
