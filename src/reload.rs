//! Reloading the configuration without a restart — one mechanism for the whole process
//! (`POST /admin/v1/reload` and SIGHUP).
//!
//! A reload reads the config file again (with the environment the process started with) and
//! validates it with the loader's rules. Config knows which keys a running process can take
//! ([`crate::config::live`]): the others keep their running values and are named in
//! `restartRequired`. Then every registered [`Reloadable`] part — the upstream set, the data
//! actions, the declarative targets, … — is asked to **prepare** the new settings: check them
//! and build what it would serve, changing nothing visible. Only when every part accepted are
//! the prepared changes **applied**, in registration order, under one lock: the whole new
//! configuration goes live, or none of it. An invalid file changes nothing; the answer lists
//! every problem of every part with its key path.
//!
//! Parts are registered in dependency order, and a part may hand what it prepared to the parts
//! after it through the [`Staging`] (the upstream set stages the new [`Upstreams`], the data
//! actions bind to it). A part whose prerequisite failed to prepare still reports its own
//! problems, so that one reload shows them all.
//!
//! A call that started before the swap finishes on what it started with (parts swap whole
//! values, e.g. in an `ArcSwap`).
//!
//! # One at a time, and whole
//! Reloads are serialised by one mutex (over the settings in force). The work runs in a task of
//! its own, tracked by the application's task tracker, that the caller awaits: if the caller
//! goes away — the admin request is dropped half-way, say — the reload still completes: the
//! running settings are updated, every part applied and the `config.reloaded` audit record
//! written. A reload is never left half done.
//!
//! [`Upstreams`]: crate::upstream::Upstreams

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;

use crate::config::live::{live_parts, restart_required};
use crate::config::{ConfigError, Environment, Problem, Settings};
use crate::error::{ApiError, ErrorDetail};
use crate::store::{AuditRecord, Store};

/// A part of the gateway that takes a new configuration on reload.
pub trait Reloadable: Send + Sync {
    /// A short name for logs (`upstreams`, `data actions`…).
    fn name(&self) -> &'static str;

    /// Checks the new settings ([`Staging::settings`]) and builds what this part would serve
    /// with them, changing nothing visible; may [`Staging::stage`] values for later parts.
    ///
    /// # Errors
    /// Every problem found, with key paths; the reload is then refused whole.
    fn prepare(&self, staging: &mut Staging<'_>) -> Result<Box<dyn Prepared>, Vec<Problem>>;
}

/// A change a [`Reloadable`] prepared; applied only once every part has accepted.
pub trait Prepared: Send {
    /// Adds this part's figures to the reload answer (`"actions": 3`, `"added": [...]`).
    fn report(&self, report: &mut Map<String, Value>);

    /// Makes the change visible. It cannot fail: everything that could was checked in
    /// [`Reloadable::prepare`].
    fn apply(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What the parts of one reload see: the settings in force, the new ones, and what earlier
/// parts staged.
pub struct Staging<'a> {
    running: &'a Arc<Settings>,
    next: &'a Arc<Settings>,
    staged: http::Extensions,
}

impl<'a> Staging<'a> {
    /// Staging for a reload from `running` to `next`.
    pub fn new(running: &'a Arc<Settings>, next: &'a Arc<Settings>) -> Self {
        Self {
            running,
            next,
            staged: http::Extensions::new(),
        }
    }

    /// The settings that would be in force after the reload (restart-only keys keep their
    /// running values).
    pub fn settings(&self) -> &Arc<Settings> {
        self.next
    }

    /// The settings in force now.
    pub fn running(&self) -> &Arc<Settings> {
        self.running
    }

    /// Hands a value to the parts registered after this one (one value per type).
    pub fn stage<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.staged.insert(value);
    }

    /// A value an earlier part staged; `None` when it did not (or failed to prepare).
    pub fn staged<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.staged.get::<T>()
    }
}

/// What a successful reload answers: `restartRequired` and every part's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// The parts' figures (`actions`, `upstreams`, `targets`, `added`, `changed`, `removed`…).
    #[serde(flatten)]
    pub parts: Map<String, Value>,
    /// Keys that changed but only take effect on restart.
    pub restart_required: Vec<String>,
}

impl ReloadReport {
    /// The figure `key` as a count (`actions`, `upstreams`, `targets`).
    pub fn count(&self, key: &str) -> Option<u64> {
        self.parts.get(key).and_then(Value::as_u64)
    }
}

/// Why a reload was refused; nothing was swapped.
#[derive(Debug, thiserror::Error)]
#[error("the configuration cannot be reloaded ({} problems)", problems.len())]
pub struct ReloadError {
    /// Every problem, with its key path.
    pub problems: Vec<Problem>,
    /// The names of the new file's `[[actions]]` by index, to name actions in messages
    /// ([`Problem::label`]); empty when unknown.
    pub action_names: Vec<String>,
}

impl ReloadError {
    /// A refusal for `problems` that names no action.
    pub fn new(problems: Vec<Problem>) -> Self {
        Self {
            problems,
            action_names: Vec::new(),
        }
    }

    /// What an operator reads about one problem: its key path with actions named by name
    /// (`actions[3] (lookupOrder).method: must be one of …`), or its line and column for a
    /// syntax error.
    pub fn describe(&self, problem: &Problem) -> String {
        match (&problem.location, problem.path.is_empty()) {
            (Some(at), _) => format!(
                "line {}, column {}: {}",
                at.line, at.column, problem.message
            ),
            (None, true) => problem.message.clone(),
            (None, false) => format!("{}: {}", problem.label(&self.action_names), problem.message),
        }
    }
}

/// 400 `invalid.input`, one detail per problem: `fieldName` is the plain key path (what a
/// program matches on), `message` names the action by name.
impl From<ReloadError> for ApiError {
    fn from(err: ReloadError) -> Self {
        let details = err
            .problems
            .iter()
            .map(|p| ErrorDetail::new(p.path.clone(), "invalid", err.describe(p)))
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
            action_names: err.action_names,
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

/// Applied to every configuration read again, before it is compared with the running one and
/// used — what the process did to its start-up settings (e.g. pointing `[genesys]` at the
/// in-process simulator).
pub type PrepareSettings = Arc<dyn Fn(&mut Settings) + Send + Sync>;

/// Reloads the config file into the running gateway. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    env: Environment,
    prepare: Option<PrepareSettings>,
    parts: Vec<Arc<dyn Reloadable>>,
    store: Store,
    tasks: TaskTracker,
    /// The settings in force; held for the whole reload, so reloads run one at a time.
    running: Mutex<Arc<Settings>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.inner.path)
            .field(
                "parts",
                &self
                    .inner
                    .parts
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Assembles a [`Reloader`].
pub struct ReloaderBuilder {
    settings: Arc<Settings>,
    env: Environment,
    prepare: Option<PrepareSettings>,
    parts: Vec<Arc<dyn Reloadable>>,
    store: Store,
    tasks: TaskTracker,
}

impl ReloaderBuilder {
    /// What is applied to every configuration read again (see [`PrepareSettings`]).
    #[must_use]
    pub fn prepare(mut self, prepare: PrepareSettings) -> Self {
        self.prepare = Some(prepare);
        self
    }

    /// Registers a part; parts prepare and apply in registration order.
    #[must_use]
    pub fn part(mut self, part: Arc<dyn Reloadable>) -> Self {
        self.parts.push(part);
        self
    }

    /// The reloader.
    pub fn build(self) -> Reloader {
        Reloader {
            inner: Arc::new(Inner {
                path: self.settings.source.file.clone(),
                env: self.env,
                prepare: self.prepare,
                parts: self.parts,
                store: self.store,
                tasks: self.tasks,
                running: Mutex::new(self.settings),
            }),
        }
    }
}

impl Reloader {
    /// Starts a reloader of the file `settings` came from (`settings.source.file`), reading
    /// `${VAR}`s and overrides from `env`, auditing to `store`, its work tracked by `tasks`.
    pub fn builder(
        settings: Arc<Settings>,
        env: Environment,
        store: Store,
        tasks: TaskTracker,
    ) -> ReloaderBuilder {
        ReloaderBuilder {
            settings,
            env,
            prepare: None,
            parts: Vec::new(),
            store,
            tasks,
        }
    }

    /// The settings in force (the last successful reload, or the start-up ones). Waits for a
    /// reload in progress: what it answers was applied whole.
    pub async fn settings(&self) -> Arc<Settings> {
        self.inner.running.lock().await.clone()
    }

    /// Runs `f` with the settings in force while no reload can run: what the parts serve
    /// (read inside `f`) comes from those settings.
    pub async fn with_settings<T>(&self, f: impl FnOnce(&Arc<Settings>) -> T) -> T {
        let running = self.inner.running.lock().await;
        f(&running)
    }

    /// Reads the config file again and, when every part accepts it, applies it whole.
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
        let task = self
            .inner
            .tasks
            .spawn(work.instrument(tracing::Span::current()));
        match task.await {
            Ok(result) => result,
            Err(err) => {
                tracing::error!(error = %err, "the reload task failed");
                Err(ReloadError::new(vec![Problem::new(
                    "",
                    "the reload failed; see the logs",
                )]))
            }
        }
    }

    /// The whole reload, under the lock: read, prepare every part, audit, apply.
    ///
    /// The audit record is written before the change is applied: whoever sees the new
    /// configuration in force can already find the record of the reload that made it.
    async fn reload_whole(&self, trigger: ReloadTrigger) -> Result<ReloadReport, ReloadError> {
        let inner = &*self.inner;
        let mut running = inner.running.lock().await;
        let prepared = self.prepare_all(&running).await;
        let (outcome, detail) = match &prepared {
            Ok(change) => {
                let mut detail = change.report.parts.clone();
                detail.insert(
                    "restartRequired".to_owned(),
                    change.report.restart_required.clone().into(),
                );
                ("success", Value::Object(detail))
            }
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
        match prepared {
            Ok(change) => {
                for part in change.parts {
                    part.apply().await;
                }
                *running = change.settings;
                tracing::info!(
                    report = %crate::telemetry::AsJson(&change.report.parts),
                    restart_required = ?change.report.restart_required,
                    "configuration reloaded"
                );
                Ok(change.report)
            }
            Err(err) => {
                tracing::warn!(
                    problems = err.problems.len(),
                    "configuration reload refused; the running configuration stays"
                );
                Err(err)
            }
        }
    }

    /// Reads the file and prepares every part; nothing visible changes.
    async fn prepare_all(&self, running: &Arc<Settings>) -> Result<Change, ReloadError> {
        let inner = &*self.inner;
        let path = inner.path.clone();
        let env = inner.env.clone();
        let mut loaded = tokio::task::spawn_blocking(move || Settings::load(&path, &env))
            .await
            .map_err(|_| {
                ReloadError::new(vec![Problem::new(
                    "",
                    "the configuration could not be read",
                )])
            })??;
        if let Some(prepare) = &inner.prepare {
            prepare(&mut loaded);
        }

        let restart_required = restart_required(running, &loaded);
        let next = Arc::new(live_parts(running, loaded));

        let mut problems = Vec::new();
        let mut prepared = Vec::with_capacity(inner.parts.len());
        {
            let mut staging = Staging::new(running, &next);
            for part in &inner.parts {
                match part.prepare(&mut staging) {
                    Ok(change) => prepared.push(change),
                    Err(mut found) => problems.append(&mut found),
                }
            }
        }
        if !problems.is_empty() || prepared.len() < inner.parts.len() {
            if problems.is_empty() {
                problems.push(Problem::new("", "the configuration could not be prepared"));
            }
            problems.dedup();
            return Err(ReloadError {
                problems,
                action_names: next.action_names(),
            });
        }
        let mut parts = Map::new();
        for change in &prepared {
            change.report(&mut parts);
        }
        Ok(Change {
            settings: next,
            parts: prepared,
            report: ReloadReport {
                parts,
                restart_required,
            },
        })
    }
}

/// A reload every part accepted, not applied yet.
struct Change {
    settings: Arc<Settings>,
    parts: Vec<Box<dyn Prepared>>,
    report: ReloadReport,
}

/// SIGHUP, listened for since [`Hangups::listen`] (from then on a SIGHUP is never taken for
/// its default action, which would end the process): install it first thing at startup.
#[derive(Debug)]
pub struct Hangups {
    #[cfg(unix)]
    signal: std::io::Result<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Installs the SIGHUP handler now (a SIGHUP before the reloader runs is kept and answered
    /// by one reload once it runs).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn listen() -> Self {
        Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()),
        }
    }

    /// The task that reloads on each SIGHUP until `shutdown` (spawn it on the application's
    /// task tracker). Refused reloads are logged; the running configuration stays.
    pub async fn reload_with(
        self,
        reloader: Reloader,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        #[cfg(unix)]
        {
            let mut hangups = match self.signal {
                Ok(s) => s,
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGHUP; reload with POST /admin/v1/reload");
                    return;
                }
            };
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    hangup = hangups.recv() => {
                        if hangup.is_none() {
                            break;
                        }
                    }
                }
                tracing::info!("SIGHUP: reloading the configuration");
                if let Err(err) = reloader.reload(ReloadTrigger::Signal).await {
                    for p in &err.problems {
                        tracing::warn!(key = %p.path, problem = %err.describe(p), "reload refused");
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (self, reloader, shutdown);
        }
    }
}

/// Listens for SIGHUP now ([`Hangups::listen`]) and returns the task that reloads on each one
/// until `shutdown` ([`Hangups::reload_with`]).
pub fn reload_on_sighup(
    reloader: Reloader,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    Hangups::listen().reload_with(reloader, shutdown)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::data_actions::{ActionRegistry, ActionSet};
    use crate::genesys::GenesysEndpoints;
    use crate::telemetry::Metrics;
    use crate::upstream::UpstreamRegistry;

    /// A part that stops a reload in its `apply` (after the parts before it applied, before the
    /// settings are swapped) until released.
    struct Gate {
        entered: tokio::sync::Semaphore,
        release: tokio::sync::Semaphore,
    }

    impl Gate {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                entered: tokio::sync::Semaphore::new(0),
                release: tokio::sync::Semaphore::new(0),
            })
        }
    }

    struct GateChange(Arc<Gate>);

    impl Reloadable for Arc<Gate> {
        fn name(&self) -> &'static str {
            "gate"
        }

        fn prepare(&self, _: &mut Staging<'_>) -> Result<Box<dyn Prepared>, Vec<Problem>> {
            Ok(Box::new(GateChange(self.clone())))
        }
    }

    impl Prepared for GateChange {
        fn report(&self, _: &mut Map<String, Value>) {}

        fn apply(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            Box::pin(async move {
                self.0.entered.add_permits(1);
                let _ = self.0.release.acquire().await;
            })
        }
    }

    struct Parts {
        reloader: Reloader,
        actions: ActionRegistry,
        store: Store,
        _dir: tempfile::TempDir,
        file: PathBuf,
    }

    /// A reloader over the upstream and data-action parts of the file `text`, then `gate`.
    async fn parts(text: &str, gate: &Arc<Gate>) -> Parts {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, text).unwrap();
        let env = Environment::default();
        let settings = Arc::new(Settings::load(&file, &env).unwrap());
        let metrics = Arc::new(Metrics::new());
        let endpoints = GenesysEndpoints::from_settings(&settings.genesys);
        let upstreams =
            crate::genesys::build_upstreams(&settings, &endpoints, metrics.clone()).unwrap();
        let set = ActionSet::from_settings(&settings, &[], &upstreams, &metrics).unwrap();
        let upstreams = UpstreamRegistry::new(
            upstreams,
            crate::genesys::definitions(settings.genesys.clone(), endpoints),
        );
        let actions = ActionRegistry::new(set, Vec::new(), metrics);
        let store = Store::connect(&SecretString::from("sqlite://gateway.db"), dir.path())
            .await
            .unwrap();
        let reloader = Reloader::builder(settings, env, store.clone(), TaskTracker::new())
            .part(Arc::new(upstreams))
            .part(Arc::new(actions.clone()))
            .part(Arc::new(gate.clone()))
            .build();
        Parts {
            reloader,
            actions,
            store,
            _dir: dir,
            file,
        }
    }

    fn file(public_url: &str, actions: usize) -> String {
        let mut text = format!(
            "[store]\nurl = \"sqlite://gateway.db\"\n[genesys]\napi_url = \"http://127.0.0.1:9\"\n\
             login_url = \"http://127.0.0.1:9\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             [data_actions]\npublic_url = \"{public_url}\"\n\
             [upstreams.u]\nbase_url = \"http://127.0.0.1:9\"\n"
        );
        for i in 0..actions {
            text.push_str(&format!(
                "[[actions]]\nname = \"a{i}\"\nupstream = \"u\"\npath = \"/x\"\n"
            ));
        }
        text
    }

    /// The settings and what the parts serve always come from one configuration, even in the
    /// middle of a reload that swapped one part and not yet the settings.
    #[tokio::test]
    async fn a_snapshot_pairs_settings_and_actions_of_one_configuration() {
        let gate = Gate::new();
        let p = parts(&file("https://one.example", 1), &gate).await;
        std::fs::write(&p.file, file("https://one.example", 2)).unwrap();
        let reloading = tokio::spawn({
            let reloader = p.reloader.clone();
            async move { reloader.reload(ReloadTrigger::Admin).await }
        });
        let _entered = gate.entered.acquire().await.unwrap();
        // Half-way: the new set is served, the settings are still the old ones.
        assert_eq!(p.actions.load().len(), 2);
        let snapshot = tokio::spawn({
            let reloader = p.reloader.clone();
            let actions = p.actions.clone();
            async move {
                reloader
                    .with_settings(|s| (s.clone(), actions.load()))
                    .await
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !snapshot.is_finished(),
            "no snapshot half-way through a reload"
        );
        gate.release.add_permits(1);

        let (settings, set) = snapshot.await.unwrap();
        assert_eq!(settings.actions.len(), 2);
        assert_eq!(set.len(), 2);
        assert_eq!(reloading.await.unwrap().unwrap().count("actions"), Some(2));
        p.store.close().await;
    }

    #[tokio::test]
    async fn a_reload_whose_caller_goes_away_after_the_swap_still_completes() {
        let gate = Gate::new();
        let p = parts(&file("https://one.example", 1), &gate).await;
        std::fs::write(&p.file, file("https://two.example", 2)).unwrap();
        let caller = tokio::spawn({
            let reloader = p.reloader.clone();
            async move { reloader.reload(ReloadTrigger::Admin).await }
        });
        // The new set is swapped in; the reload now waits in the gate.
        let _entered = gate.entered.acquire().await.unwrap();
        assert_eq!(p.actions.load().len(), 2);
        // The admin request goes away mid-way.
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        gate.release.add_permits(1);

        // `settings()` waits for the reload lock: the reload finished, whole.
        let running = tokio::time::timeout(Duration::from_secs(10), p.reloader.settings())
            .await
            .expect("the reload completes");
        assert_eq!(
            running.data_actions.public_url.as_deref(),
            Some("https://two.example"),
            "the running settings were updated"
        );
        let audit = p
            .store
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
        p.store.close().await;
    }
}
