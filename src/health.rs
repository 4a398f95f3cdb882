//! What "ready" means for this process: the dependencies `/readyz` checks (the store, a
//! Genesys token…) and whether the process is shutting down.
//!
//! Capabilities and clients implement [`ReadinessCheck`]; the application collects them into
//! one [`Readiness`], which the operations endpoint evaluates.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency `/readyz` checks (the store, the Genesys token...).
pub trait ReadinessCheck: Send + Sync {
    /// Short name shown in the `/readyz` answer.
    fn name(&self) -> &'static str;
    /// `Ok` when the dependency can serve; `Err` with a short, non-secret reason otherwise.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// The readiness of this process: its checks, and whether it is shutting down.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "checks",
                &self.checks.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("stopping", &self.stopping.load(Ordering::Relaxed))
            .finish()
    }
}

impl Readiness {
    /// Readiness with these checks.
    pub fn new(checks: Vec<Arc<dyn ReadinessCheck>>) -> Self {
        Self {
            checks: Arc::new(checks),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on `/readyz` answers 503 (graceful shutdown has begun).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

/// The outcome of one check, as `/readyz` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckResult {
    /// The check's name.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// Why not (short, non-secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Readiness {
    /// Runs every check (each bounded by a short timeout) and adds a failing `shutdown` check
    /// once the graceful shutdown has begun.
    pub async fn evaluate(&self) -> Vec<CheckResult> {
        let mut checks = Vec::with_capacity(self.checks.len() + 1);
        if self.stopping.load(Ordering::Acquire) {
            checks.push(CheckResult {
                name: "shutdown",
                ok: false,
                error: Some("the gateway is shutting down".to_owned()),
            });
        }
        let results = futures_util::future::join_all(self.checks.iter().map(|c| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, c.check()).await {
                Ok(result) => result,
                Err(_) => Err("timed out".to_owned()),
            };
            CheckResult {
                name: c.name(),
                ok: outcome.is_ok(),
                error: outcome.err(),
            }
        }))
        .await;
        checks.extend(results);
        checks
    }
}
