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
//! `restart_required` names every key of those sections; it destructures each settings type
//! without `..`, so a new key does not compile until it is classified.
//!
//! # One at a time, and whole
//! Reloads are serialised by one mutex (over the settings in force). The work runs in a task
//! of its own that the caller awaits: if the caller goes away — the admin request is dropped
//! after the action set was swapped, say — the reload still completes: the running settings
//! are updated, the hooks applied and the `config.reloaded` audit record written. A reload is
//! never left half done.

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
use crate::config::{
    AdminAuthSettings, AdminSettings, CallbacksSettings, ConfigError, DeliverySettings,
    Environment, GenesysSettings, InboundAuthSettings, IngestSettings, Problem, ServerSettings,
    Settings, StoreSettings, TelemetrySettings,
};
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
    /// The reload runs in a task of its own: dropping the returned future does not stop it
    /// half way (see the module docs).
    ///
    /// # Errors
    /// Every problem of the new file; then nothing changed.
    pub async fn reload(&self, trigger: ReloadTrigger) -> Result<ReloadReport, ReloadError> {
        use tracing::Instrument;

        let this = self.clone();
        let request_id = crate::telemetry::RequestId::current();
        let work = async move {
            match request_id {
                Some(id) => id.scope(this.reload_whole(trigger)).await,
                None => this.reload_whole(trigger).await,
            }
        };
        match tokio::spawn(work.instrument(tracing::Span::current())).await {
            Ok(result) => result,
            Err(err) => {
                tracing::error!(error = %err, "the reload task failed");
                Err(ReloadError {
                    problems: vec![Problem::new("", "the reload failed; see the logs")],
                })
            }
        }
    }

    /// The whole reload, under the lock: read, check, swap, apply, audit.
    async fn reload_whole(&self, trigger: ReloadTrigger) -> Result<ReloadReport, ReloadError> {
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

/// Listens for SIGHUP now, and returns the task that reloads on each one until the process
/// ends (spawn it). Refused reloads are logged; the running configuration stays.
///
/// The signal handler is installed when this is called, not when the returned future is first
/// polled: a SIGHUP that arrives once this returned is never taken for the default action
/// (which would end the process).
pub fn reload_on_sighup(reloader: Reloader) -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let hangups = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup())
    };
    async move {
        #[cfg(unix)]
        {
            let mut hangups = match hangups {
                Ok(s) => s,
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGHUP; reload with POST /admin/v1/reload");
                    return;
                }
            };
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                reload_logged(&reloader, ReloadTrigger::Signal).await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reloader;
        }
    }
}

/// Reloads and logs every problem of a refused reload.
async fn reload_logged(reloader: &Reloader, trigger: ReloadTrigger) {
    if let Err(err) = reloader.reload(trigger).await {
        for p in &err.problems {
            tracing::warn!(key = %p.path, problem = %p.message, "reload refused");
        }
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
///
/// Every settings type is destructured without `..`: adding a key to one of them is a compile
/// error here until it is either compared or named live.
#[allow(clippy::too_many_lines)]
fn restart_required(old: &Settings, new: &Settings) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cmp = |key: &str, same: bool| {
        if !same {
            keys.push(key.to_owned());
        }
    };
    let Settings {
        server,
        telemetry,
        store,
        genesys,
        admin,
        jwt_issuers,
        // Live: swapped by the reload.
        upstreams: _,
        data_actions: _,
        actions: _,
        targets: _,
        source: _,
        ingest,
        delivery,
        callbacks,
    } = old;

    // Every field of every variant is in the effective tokens compared below.
    let AdminSettings { auth: admin_auth } = admin;
    let (AdminAuthSettings::Bearer { tokens: _ } | AdminAuthSettings::Disabled) = admin_auth;

    let ServerSettings {
        listen,
        request_timeout_ms,
        max_body_bytes,
        max_concurrent_requests,
        shutdown_grace_ms,
        io_threads,
        max_connections,
        header_read_timeout_ms,
        shutdown_delay_ms,
    } = server;
    let n = &new.server;
    cmp("server.listen", *listen == n.listen);
    cmp(
        "server.request_timeout_ms",
        *request_timeout_ms == n.request_timeout_ms,
    );
    cmp("server.max_body_bytes", *max_body_bytes == n.max_body_bytes);
    cmp(
        "server.max_concurrent_requests",
        *max_concurrent_requests == n.max_concurrent_requests,
    );
    cmp(
        "server.shutdown_grace_ms",
        *shutdown_grace_ms == n.shutdown_grace_ms,
    );
    cmp("server.io_threads", *io_threads == n.io_threads);
    cmp(
        "server.max_connections",
        *max_connections == n.max_connections,
    );
    cmp(
        "server.header_read_timeout_ms",
        *header_read_timeout_ms == n.header_read_timeout_ms,
    );
    cmp(
        "server.shutdown_delay_ms",
        *shutdown_delay_ms == n.shutdown_delay_ms,
    );

    let TelemetrySettings { log_format } = telemetry;
    cmp(
        "telemetry.log_format",
        *log_format == new.telemetry.log_format,
    );

    let StoreSettings {
        url,
        audit_retention_days,
    } = store;
    cmp("store.url", secret_eq(url, &new.store.url));
    cmp(
        "store.audit_retention_days",
        *audit_retention_days == new.store.audit_retention_days,
    );

    let GenesysSettings {
        region,
        api_url,
        login_url,
        client_id,
        client_secret,
        simulate,
        simulator_listen,
        notifications_heartbeat_timeout_s,
    } = genesys;
    let n = &new.genesys;
    cmp("genesys.region", *region == n.region);
    cmp("genesys.api_url", *api_url == n.api_url);
    cmp("genesys.login_url", *login_url == n.login_url);
    cmp("genesys.client_id", *client_id == n.client_id);
    cmp(
        "genesys.client_secret",
        match (client_secret, &n.client_secret) {
            (Some(a), Some(b)) => secret_eq(a, b),
            (None, None) => true,
            _ => false,
        },
    );
    cmp("genesys.simulate", *simulate == n.simulate);
    cmp(
        "genesys.simulator_listen",
        *simulator_listen == n.simulator_listen,
    );
    cmp(
        "genesys.notifications_heartbeat_timeout_s",
        *notifications_heartbeat_timeout_s == n.notifications_heartbeat_timeout_s,
    );

    cmp(
        "admin.auth.tokens",
        secrets_eq(&old.admin_tokens(), &new.admin_tokens()),
    );
    cmp("jwt_issuers", debug_eq(jwt_issuers, &new.jwt_issuers));

    let IngestSettings {
        auth,
        max_batch,
        max_queue_depth,
        event_schema,
        vendor,
        category,
        source,
    } = ingest;
    let n = &new.ingest;
    cmp("ingest.auth", debug_eq(auth, &n.auth));
    cmp("ingest.max_batch", *max_batch == n.max_batch);
    cmp(
        "ingest.max_queue_depth",
        *max_queue_depth == n.max_queue_depth,
    );
    cmp("ingest.event_schema", *event_schema == n.event_schema);
    cmp("ingest.vendor", *vendor == n.vendor);
    cmp("ingest.category", *category == n.category);
    cmp("ingest.source", debug_eq(source, &n.source));

    let DeliverySettings {
        workers,
        allow_private_networks,
        allow_cidrs,
    } = delivery;
    let n = &new.delivery;
    cmp("delivery.workers", *workers == n.workers);
    cmp(
        "delivery.allow_private_networks",
        *allow_private_networks == n.allow_private_networks,
    );
    cmp("delivery.allow_cidrs", *allow_cidrs == n.allow_cidrs);

    let CallbacksSettings { auth, queues } = callbacks;
    cmp("callbacks.auth", inbound_eq(auth, &new.callbacks.auth));
    cmp("callbacks.queues", debug_eq(queues, &new.callbacks.queues));
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
    use std::time::Duration;

    use super::*;
    use crate::config::{CallbackQueueSettings, IngestAuthSettings, JwtIssuerSettings, LogFormat};

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

    type Change = fn(&mut Settings);

    /// One change per restart-only key (the compiler makes `restart_required` name every key;
    /// this checks each is compared and reported under its own name).
    const CHANGES: &[(&str, Change)] = &[
        ("server.listen", |s| s.server.listen = "127.0.0.1:9".into()),
        ("server.request_timeout_ms", |s| {
            s.server.request_timeout_ms += 1
        }),
        ("server.max_body_bytes", |s| s.server.max_body_bytes += 1),
        ("server.max_concurrent_requests", |s| {
            s.server.max_concurrent_requests += 1;
        }),
        ("server.shutdown_grace_ms", |s| {
            s.server.shutdown_grace_ms += 1
        }),
        ("server.io_threads", |s| s.server.io_threads += 1),
        ("server.max_connections", |s| s.server.max_connections += 1),
        ("server.header_read_timeout_ms", |s| {
            s.server.header_read_timeout_ms += 1;
        }),
        ("server.shutdown_delay_ms", |s| {
            s.server.shutdown_delay_ms += 1
        }),
        ("telemetry.log_format", |s| {
            s.telemetry.log_format = LogFormat::Json;
        }),
        ("store.url", |s| s.store.url = "sqlite://other.db".into()),
        ("store.audit_retention_days", |s| {
            s.store.audit_retention_days += 1;
        }),
        ("genesys.region", |s| {
            s.genesys.region = "mypurecloud.ie".into()
        }),
        ("genesys.api_url", |s| {
            s.genesys.api_url = Some("http://127.0.0.1:1".into());
        }),
        ("genesys.login_url", |s| {
            s.genesys.login_url = Some("http://127.0.0.1:1".into());
        }),
        ("genesys.client_id", |s| {
            s.genesys.client_id = Some("id".into())
        }),
        ("genesys.client_secret", |s| {
            s.genesys.client_secret = Some("secret".into());
        }),
        ("genesys.simulate", |s| {
            s.genesys.simulate = !s.genesys.simulate
        }),
        ("genesys.simulator_listen", |s| {
            s.genesys.simulator_listen = Some("127.0.0.1:1".into());
        }),
        ("genesys.notifications_heartbeat_timeout_s", |s| {
            s.genesys.notifications_heartbeat_timeout_s += 1;
        }),
        ("admin.auth.tokens", |s| {
            s.admin.auth = AdminAuthSettings::Bearer {
                tokens: vec!["another-token".into()],
            };
        }),
        ("jwt_issuers", |s| {
            s.jwt_issuers.push(JwtIssuerSettings {
                name: "legacy".into(),
                issuer: "legacy".into(),
                audiences: vec!["gw".into()],
                algorithms: vec!["ES256".into()],
                key_file: None,
                jwks_url: Some("https://idp.example/jwks".into()),
                leeway_s: 30,
                max_token_lifetime_s: 3600,
            });
        }),
        ("ingest.auth", |s| {
            s.ingest.auth = IngestAuthSettings::Jwt {
                issuers: vec!["legacy".into()],
            };
        }),
        ("ingest.max_batch", |s| s.ingest.max_batch += 1),
        ("ingest.max_queue_depth", |s| s.ingest.max_queue_depth += 1),
        ("ingest.event_schema", |s| {
            s.ingest.event_schema = Some("schemas/e.json".into());
        }),
        ("ingest.vendor", |s| s.ingest.vendor.push('x')),
        ("ingest.category", |s| s.ingest.category.push('x')),
        ("ingest.source", |s| s.ingest.source.system.push('x')),
        ("delivery.workers", |s| s.delivery.workers += 1),
        ("delivery.allow_private_networks", |s| {
            s.delivery.allow_private_networks = !s.delivery.allow_private_networks;
        }),
        ("delivery.allow_cidrs", |s| {
            s.delivery.allow_cidrs.push("10.0.0.0/8".parse().unwrap());
        }),
        ("callbacks.auth", |s| {
            s.callbacks.auth = InboundAuthSettings::Header {
                name: "X-K".into(),
                value: "v".into(),
            };
        }),
        ("callbacks.queues", |s| {
            s.callbacks.queues.push(CallbackQueueSettings {
                id: "q".into(),
                name: "Q".into(),
                timezone: "UTC".into(),
                open_hours: vec!["mon 08:00-09:00".into()],
                slot_capacity: 1,
                max_slot_minutes: 30,
                booking_horizon_days: 1,
            });
        }),
    ];

    #[test]
    fn every_restart_only_key_is_reported_under_its_own_name() {
        let base = parse("[genesys]\nsimulate = true\n");
        let mut all = base.clone();
        let mut expected = Vec::new();
        for (key, change) in CHANGES {
            let mut changed = base.clone();
            change(&mut changed);
            assert_eq!(restart_required(&base, &changed), [*key], "{key}");
            change(&mut all);
            expected.push(*key);
        }
        assert_eq!(restart_required(&base, &all), expected);

        // Changes to live sections need no restart.
        let live = parse(
            "[genesys]\nsimulate = true\n[data_actions]\npublic_url = \"https://x.example\"\n\
             [upstreams.crm]\nbase_url = \"http://127.0.0.1:1\"\n",
        );
        assert!(restart_required(&base, &live).is_empty());
    }

    /// A hook whose `apply` (which runs after the swap) waits to be released.
    struct GatedHook {
        entered: tokio::sync::Semaphore,
        release: tokio::sync::Semaphore,
    }

    impl ReloadHook for GatedHook {
        fn check(&self, _settings: &Settings) -> Vec<Problem> {
            Vec::new()
        }

        fn apply<'a>(
            &'a self,
            _settings: &'a Arc<Settings>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
            Box::pin(async move {
                self.entered.add_permits(1);
                let _ = self.release.acquire().await;
            })
        }
    }

    fn file_config(public_url: &str, actions: &[&str]) -> String {
        let mut text = format!(
            "[store]\nurl = \"sqlite://gateway.db\"\n[genesys]\nsimulate = true\n\
             [data_actions]\npublic_url = \"{public_url}\"\n\
             [upstreams.crm]\nbase_url = \"http://127.0.0.1:9\"\n"
        );
        for name in actions {
            text.push_str(&format!(
                "[[actions]]\nname = \"{name}\"\nupstream = \"crm\"\npath = \"/{name}\"\n"
            ));
        }
        text
    }

    #[tokio::test]
    async fn a_reload_whose_caller_goes_away_after_the_swap_still_completes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, file_config("https://one.example", &["a"])).unwrap();
        let env = Environment::default();
        let settings = Arc::new(Settings::load(&file, &env).unwrap());
        let metrics = Arc::new(Metrics::new());
        let store = Store::connect(&settings.store.url, dir.path())
            .await
            .unwrap();
        let genesys = GenesysEndpoints::from_settings(&settings.genesys);
        let upstreams =
            crate::upstream::Upstreams::build(&settings, &genesys, metrics.clone()).unwrap();
        let set = ActionSet::from_settings(&settings, &[], Arc::new(upstreams), &metrics).unwrap();
        let registry = Arc::new(ActionRegistry::new(set));
        let hook = Arc::new(GatedHook {
            entered: tokio::sync::Semaphore::new(0),
            release: tokio::sync::Semaphore::new(0),
        });
        let reloader = Reloader::new(ReloaderParts {
            settings,
            env,
            genesys,
            registry: registry.clone(),
            metrics,
            store: store.clone(),
            extra_actions: Vec::new(),
            prepare: None,
        })
        .with_hook(hook.clone());

        std::fs::write(&file, file_config("https://two.example", &["a", "b"])).unwrap();
        let caller = tokio::spawn({
            let reloader = reloader.clone();
            async move { reloader.reload(ReloadTrigger::Admin).await }
        });
        // The new set is swapped in; the reload now waits in the hook.
        let _entered = hook.entered.acquire().await.unwrap();
        assert_eq!(registry.load().len(), 2);
        // The admin request goes away mid-way.
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        hook.release.add_permits(1);

        // `settings()` waits for the reload lock: the reload finished, whole.
        let running = tokio::time::timeout(Duration::from_secs(10), reloader.settings())
            .await
            .expect("the reload completes");
        assert_eq!(
            running.data_actions.public_url.as_deref(),
            Some("https://two.example"),
            "the running settings were updated"
        );
        let audit = store
            .query_audit(
                &crate::store::AuditFilter {
                    since: None,
                    kind: Some("config.reloaded".into()),
                },
                &crate::store::PageRequest {
                    limit: 10,
                    cursor: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(audit.entities.len(), 1, "the reload was audited");
        assert_eq!(audit.entities[0].outcome, "success");
        store.close().await;
    }
}
