//! Reloading action definitions without a restart (SPEC §3.2): `POST /admin/v1/reload` and
//! SIGHUP.
//!
//! A reload reads the config file again (with the environment the process started with),
//! validates it whole — the loader's rules, every action, every upstream, and any
//! [`ReloadHook`] (declarative targets) — and only then swaps: the upstreams are rebuilt with
//! [`Upstreams::rebuild`](crate::upstream::Upstreams::rebuild) (an upstream whose settings did not change keeps its breaker, token
//! cache and connection pools), the new [`ActionSet`] replaces the old one in one atomic store,
//! and the hooks apply their part. A call that started before the swap finishes on the set it
//! started with. An invalid file changes nothing: the answer lists every problem with its key
//! path.
//!
//! What is live: `[[actions]]`, `[upstreams.*]`, `[data_actions]` (auth and `public_url`) and
//! `[[targets]]` (through a hook). Everything else only takes effect on restart: a reload
//! keeps running with the old values of those keys and lists the ones that changed in
//! `restartRequired` (until the process is restarted, every later reload lists them again).
//! The `[genesys]` section is such a key too: the built-in `genesys` upstream keeps the
//! credentials and endpoints the process started with, like the rest of the Genesys client.

use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::sync::Mutex;

use super::action::DataAction;
use super::registry::{ActionRegistry, ActionSet};
use crate::config::{ConfigError, Environment, InboundAuthSettings, Problem, Settings};
use crate::error::{ApiError, ErrorDetail};
use crate::store::{AuditRecord, Store};
use crate::telemetry::Metrics;
use crate::upstream::GenesysEndpoints;

/// Another part of the gateway that takes part in reloads (e.g. declarative targets).
pub trait ReloadHook: Send + Sync {
    /// Checks the new settings before anything is swapped; any problem rejects the reload.
    fn check(&self, settings: &Settings) -> Vec<Problem>;
    /// Applies the new settings, after the action set was swapped.
    fn apply<'a>(
        &'a self,
        settings: &'a Arc<Settings>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// What a successful reload answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// Actions now served.
    pub actions: usize,
    /// Upstreams now configured, the built-in `genesys` included.
    pub upstreams: usize,
    /// Declarative targets in the new file.
    pub targets: usize,
    /// Keys that changed but only take effect on restart.
    pub restart_required: Vec<String>,
}

/// Why a reload was refused; nothing was swapped.
#[derive(Debug, thiserror::Error)]
#[error("the configuration cannot be reloaded ({} problems)", problems.len())]
pub struct ReloadError {
    /// Every problem, with its key path.
    pub problems: Vec<Problem>,
}

impl From<ReloadError> for ApiError {
    fn from(err: ReloadError) -> Self {
        let details = err
            .problems
            .into_iter()
            .map(|p| ErrorDetail::new(p.path, "invalid", p.message))
            .collect();
        ApiError::invalid_input(
            "The configuration is not valid; the running configuration stays.",
            details,
        )
    }
}

impl From<ConfigError> for ReloadError {
    fn from(err: ConfigError) -> Self {
        Self {
            problems: err.problems,
        }
    }
}

/// Who asked for a reload (for the audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// `POST /admin/v1/reload`.
    Admin,
    /// SIGHUP.
    Signal,
}

impl ReloadTrigger {
    fn actor(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Signal => "system",
        }
    }
}

/// Reloads the config file into the running gateway. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    env: Environment,
    genesys: GenesysEndpoints,
    registry: Arc<ActionRegistry>,
    metrics: Arc<Metrics>,
    store: Store,
    extra_actions: Vec<DataAction>,
    prepare: Option<PrepareSettings>,
    hooks: Vec<Arc<dyn ReloadHook>>,
    /// The settings in force; held for the whole reload, so reloads run one at a time.
    running: Mutex<Arc<Settings>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// What a [`Reloader`] works with.
pub struct ReloaderParts {
    /// The settings the process runs with (their `source.file` is the file reloaded).
    pub settings: Arc<Settings>,
    /// The environment `${VAR}`s and `GATEWAY_*` overrides are read from.
    pub env: Environment,
    /// The Genesys endpoints the process started with.
    pub genesys: GenesysEndpoints,
    /// The registry whose set is swapped.
    pub registry: Arc<ActionRegistry>,
    /// The metrics registry (for the new actions' handles).
    pub metrics: Arc<Metrics>,
    /// Where the `config.reloaded` audit record goes.
    pub store: Store,
    /// Actions made in code, served in addition to the file's.
    pub extra_actions: Vec<DataAction>,
    /// Applied to every configuration read again, before it is compared with the running one
    /// and used — what the process did to its start-up settings (e.g. pointing `[genesys]` at
    /// the in-process simulator).
    pub prepare: Option<PrepareSettings>,
}

/// See [`ReloaderParts::prepare`].
pub type PrepareSettings = Arc<dyn Fn(&mut Settings) + Send + Sync>;

impl Reloader {
    /// A reloader over these parts.
    pub fn new(parts: ReloaderParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: parts.settings.source.file.clone(),
                env: parts.env,
                genesys: parts.genesys,
                registry: parts.registry,
                metrics: parts.metrics,
                store: parts.store,
                extra_actions: parts.extra_actions,
                prepare: parts.prepare,
                hooks: Vec::new(),
                running: Mutex::new(parts.settings),
            }),
        }
    }

    /// Adds a participant (call before sharing the reloader).
    ///
    /// # Panics
    /// When the reloader was already cloned.
    #[must_use]
    pub fn with_hook(mut self, hook: Arc<dyn ReloadHook>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("hooks are added before the reloader is shared")
            .hooks
            .push(hook);
        self
    }

    /// The settings in force (the last successful reload, or the start-up ones).
    pub async fn settings(&self) -> Arc<Settings> {
        self.inner.running.lock().await.clone()
    }

    /// The settings in force and the action set built from them, taken together: a reload
    /// swaps both while holding the lock this takes, so the pair is always from one
    /// configuration (reading [`Self::settings`] and then the registry could pair a new set
    /// with old settings).
    pub async fn snapshot(&self) -> (Arc<Settings>, Arc<ActionSet>) {
        let running = self.inner.running.lock().await;
        (running.clone(), self.inner.registry.load())
    }

    /// The registry this reloader swaps.
    pub fn registry(&self) -> &Arc<ActionRegistry> {
        &self.inner.registry
    }

    /// Reads the config file again and swaps in its actions, upstreams and targets.
    ///
    /// # Errors
    /// Every problem of the new file; then nothing changed.
    pub async fn reload(&self, trigger: ReloadTrigger) -> Result<ReloadReport, ReloadError> {
        let inner = &*self.inner;
        let mut running = inner.running.lock().await;
        let result = self.reload_locked(&mut running).await;
        let (outcome, detail) = match &result {
            Ok(report) => (
                "success",
                serde_json::json!({
                    "actions": report.actions,
                    "upstreams": report.upstreams,
                    "targets": report.targets,
                    "restartRequired": report.restart_required,
                }),
            ),
            Err(err) => (
                "failure",
                serde_json::json!({
                    "problems": err.problems.iter().map(|p| &p.path).collect::<Vec<_>>(),
                }),
            ),
        };
        let mut record = AuditRecord::now("config.reloaded", trigger.actor(), outcome)
            .with_subject(inner.path.display().to_string())
            .with_detail(detail);
        if let Some(id) = crate::telemetry::RequestId::current() {
            record = record.with_request_id(&*id);
        }
        if let Err(err) = inner.store.append_audit(&record).await {
            tracing::error!(error = %err, "cannot write the audit record of a reload");
        }
        match &result {
            Ok(report) => tracing::info!(
                actions = report.actions,
                upstreams = report.upstreams,
                targets = report.targets,
                restart_required = ?report.restart_required,
                "configuration reloaded"
            ),
            Err(err) => tracing::warn!(
                problems = err.problems.len(),
                "configuration reload refused; the running configuration stays"
            ),
        }
        result
    }

    async fn reload_locked(
        &self,
        running: &mut Arc<Settings>,
    ) -> Result<ReloadReport, ReloadError> {
        let inner = &*self.inner;
        let path = inner.path.clone();
        let env = inner.env.clone();
        let mut loaded = tokio::task::spawn_blocking(move || Settings::load(&path, &env))
            .await
            .map_err(|_| ReloadError {
                problems: vec![Problem::new("", "the configuration could not be read")],
            })??;
        if let Some(prepare) = &inner.prepare {
            prepare(&mut loaded);
        }

        let restart_required = restart_required(running, &loaded);
        let next = Arc::new(live_parts(running, loaded));

        let mut problems = Vec::new();
        for hook in &inner.hooks {
            problems.extend(hook.check(&next));
        }
        let current = inner.registry.load();
        let upstreams = match current.upstreams().rebuild(&next, &inner.genesys) {
            Ok(u) => Some(Arc::new(u)),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        };
        let set = match upstreams {
            Some(upstreams) => {
                ActionSet::from_settings(&next, &inner.extra_actions, upstreams, &inner.metrics)
                    .map_err(|p| problems.extend(p))
                    .ok()
            }
            None => {
                if let Err(p) = super::registry::compile_actions(&next) {
                    problems.extend(p);
                }
                None
            }
        };
        let Some(set) = set.filter(|_| problems.is_empty()) else {
            return Err(ReloadError { problems });
        };

        let report = ReloadReport {
            actions: set.len(),
            upstreams: set.upstreams().len(),
            targets: next.targets.len(),
            restart_required,
        };
        inner.registry.swap(set);
        for hook in &inner.hooks {
            hook.apply(&next).await;
        }
        *running = next;
        Ok(report)
    }
}

/// Waits for SIGHUP and reloads each time, until the process ends. Refused reloads are
/// logged; the running configuration stays.
pub async fn reload_on_sighup(reloader: Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGHUP; reload with POST /admin/v1/reload");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            if let Err(err) = reloader.reload(ReloadTrigger::Signal).await {
                for p in &err.problems {
                    tracing::warn!(key = %p.path, problem = %p.message, "reload refused");
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
    }
}

/// The settings to run with after a reload: the live sections from `loaded`, every other
/// section as it runs now.
fn live_parts(running: &Settings, loaded: Settings) -> Settings {
    Settings {
        upstreams: loaded.upstreams,
        data_actions: loaded.data_actions,
        actions: loaded.actions,
        targets: loaded.targets,
        source: loaded.source,
        ..running.clone()
    }
}

/// Keys outside the live sections whose value changed.
fn restart_required(old: &Settings, new: &Settings) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cmp = |key: &str, same: bool| {
        if !same {
            keys.push(key.to_owned());
        }
    };
    let (o, n) = (&old.server, &new.server);
    cmp("server.listen", o.listen == n.listen);
    cmp(
        "server.request_timeout_ms",
        o.request_timeout_ms == n.request_timeout_ms,
    );
    cmp(
        "server.max_body_bytes",
        o.max_body_bytes == n.max_body_bytes,
    );
    cmp(
        "server.max_concurrent_requests",
        o.max_concurrent_requests == n.max_concurrent_requests,
    );
    cmp(
        "server.shutdown_grace_ms",
        o.shutdown_grace_ms == n.shutdown_grace_ms,
    );
    cmp("server.io_threads", o.io_threads == n.io_threads);
    cmp(
        "telemetry.log_format",
        old.telemetry.log_format == new.telemetry.log_format,
    );
    cmp("store.url", secret_eq(&old.store.url, &new.store.url));
    let (o, n) = (&old.genesys, &new.genesys);
    cmp("genesys.region", o.region == n.region);
    cmp("genesys.api_url", o.api_url == n.api_url);
    cmp("genesys.login_url", o.login_url == n.login_url);
    cmp("genesys.client_id", o.client_id == n.client_id);
    cmp(
        "genesys.client_secret",
        match (&o.client_secret, &n.client_secret) {
            (Some(a), Some(b)) => secret_eq(a, b),
            (None, None) => true,
            _ => false,
        },
    );
    cmp("genesys.simulate", o.simulate == n.simulate);
    cmp(
        "genesys.simulator_listen",
        o.simulator_listen == n.simulator_listen,
    );
    cmp(
        "genesys.notifications_heartbeat_timeout_s",
        o.notifications_heartbeat_timeout_s == n.notifications_heartbeat_timeout_s,
    );
    cmp(
        "admin.auth.tokens",
        secrets_eq(&old.admin_tokens(), &new.admin_tokens()),
    );
    cmp("jwt_issuers", debug_eq(&old.jwt_issuers, &new.jwt_issuers));
    let (o, n) = (&old.ingest, &new.ingest);
    cmp("ingest.auth", debug_eq(&o.auth, &n.auth));
    cmp("ingest.max_batch", o.max_batch == n.max_batch);
    cmp(
        "ingest.max_queue_depth",
        o.max_queue_depth == n.max_queue_depth,
    );
    cmp("ingest.event_schema", o.event_schema == n.event_schema);
    cmp("ingest.vendor", o.vendor == n.vendor);
    cmp("ingest.category", o.category == n.category);
    cmp("ingest.source", debug_eq(&o.source, &n.source));
    let (o, n) = (&old.delivery, &new.delivery);
    cmp("delivery.workers", o.workers == n.workers);
    cmp(
        "delivery.allow_private_networks",
        o.allow_private_networks == n.allow_private_networks,
    );
    cmp("delivery.allow_cidrs", o.allow_cidrs == n.allow_cidrs);
    cmp(
        "callbacks.auth",
        inbound_eq(&old.callbacks.auth, &new.callbacks.auth),
    );
    cmp(
        "callbacks.queues",
        debug_eq(&old.callbacks.queues, &new.callbacks.queues),
    );
    keys
}

fn secret_eq(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

fn secrets_eq(a: &[SecretString], b: &[SecretString]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| secret_eq(x, y))
}

fn inbound_eq(a: &InboundAuthSettings, b: &InboundAuthSettings) -> bool {
    match (a, b) {
        (InboundAuthSettings::None, InboundAuthSettings::None) => true,
        (
            InboundAuthSettings::Basic {
                username: u1,
                password: p1,
            },
            InboundAuthSettings::Basic {
                username: u2,
                password: p2,
            },
        ) => u1 == u2 && secret_eq(p1, p2),
        (
            InboundAuthSettings::Header {
                name: n1,
                value: v1,
            },
            InboundAuthSettings::Header {
                name: n2,
                value: v2,
            },
        ) => n1 == n2 && secret_eq(v1, v2),
        _ => false,
    }
}

/// Equality of sections without secrets, by their `Debug` form (the settings types do not
/// implement `PartialEq`).
fn debug_eq<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Settings {
        Settings::from_toml(
            text,
            std::path::Path::new("gateway.toml"),
            std::path::Path::new("."),
            &Environment::default(),
        )
        .unwrap()
    }

    /// A hook that stops a reload after the set was swapped and before the settings are, until
    /// released.
    struct Gate {
        entered: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    impl ReloadHook for Gate {
        fn check(&self, _: &Settings) -> Vec<Problem> {
            Vec::new()
        }

        fn apply<'a>(
            &'a self,
            _: &'a Arc<Settings>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
            Box::pin(async move {
                self.entered.notify_one();
                self.release.notified().await;
            })
        }
    }

    fn file(actions: usize) -> String {
        let mut text = "[genesys]\napi_url = \"http://127.0.0.1:9\"\nlogin_url = \"http://127.0.0.1:9\"\nclient_id = \"c\"\nclient_secret = \"s\"\n[upstreams.u]\nbase_url = \"http://127.0.0.1:9\"\n".to_owned();
        for i in 0..actions {
            text.push_str(&format!(
                "[[actions]]\nname = \"a{i}\"\nupstream = \"u\"\npath = \"/x\"\n"
            ));
        }
        text
    }

    /// The settings and the action set of a snapshot always come from one configuration, even
    /// in the middle of a reload that swapped one and not yet the other.
    #[tokio::test]
    async fn a_snapshot_pairs_settings_and_actions_of_one_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, file(1)).unwrap();
        let env = Environment::default();
        let settings = Arc::new(Settings::load(&path, &env).unwrap());
        let metrics = Arc::new(Metrics::new());
        let genesys = GenesysEndpoints::from_settings(&settings.genesys);
        let upstreams =
            crate::upstream::Upstreams::build(&settings, &genesys, metrics.clone()).unwrap();
        let set = ActionSet::from_settings(&settings, &[], Arc::new(upstreams), &metrics).unwrap();
        let store = Store::connect(&SecretString::from("sqlite://gateway.db"), dir.path())
            .await
            .unwrap();
        let gate = Arc::new(Gate {
            entered: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        });
        let reloader = Reloader::new(ReloaderParts {
            settings,
            env,
            genesys,
            registry: Arc::new(ActionRegistry::new(set)),
            metrics,
            store: store.clone(),
            extra_actions: Vec::new(),
            prepare: None,
        })
        .with_hook(gate.clone());

        std::fs::write(&path, file(2)).unwrap();
        let reloading = tokio::spawn({
            let reloader = reloader.clone();
            async move { reloader.reload(ReloadTrigger::Admin).await }
        });
        gate.entered.notified().await;
        // Half-way: the new set is served, the settings are still the old ones.
        assert_eq!(reloader.registry().load().len(), 2);
        let snapshot = tokio::spawn({
            let reloader = reloader.clone();
            async move { reloader.snapshot().await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !snapshot.is_finished(),
            "no snapshot half-way through a reload"
        );
        gate.release.notify_one();

        let (settings, set) = snapshot.await.unwrap();
        assert_eq!(settings.actions.len(), 2);
        assert_eq!(set.len(), 2);
        assert_eq!(reloading.await.unwrap().unwrap().actions, 2);
        store.close().await;
    }

    #[test]
    fn restart_only_keys_are_listed() {
        let old = parse(
            "[genesys]\nsimulate = true\n[server]\nlisten = \"127.0.0.1:1\"\n[callbacks]\nauth = { type = \"header\", name = \"X-K\", value = \"a\" }\n",
        );
        let new = parse(
            "[genesys]\nsimulate = true\n[server]\nlisten = \"127.0.0.1:2\"\n[callbacks]\nauth = { type = \"header\", name = \"X-K\", value = \"b\" }\n[data_actions]\npublic_url = \"https://x.example\"\n",
        );
        assert_eq!(
            restart_required(&old, &new),
            ["server.listen", "callbacks.auth"]
        );
        assert!(restart_required(&old, &old).is_empty());
        let next = live_parts(&old, new);
        assert_eq!(
            next.server.listen, "127.0.0.1:1",
            "restart-only keys keep running values"
        );
        assert_eq!(
            next.data_actions.public_url.as_deref(),
            Some("https://x.example")
        );
    }
}
