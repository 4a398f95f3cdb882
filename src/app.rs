//! The application: builds every capability from the settings, assembles the router behind the
//! one middleware stack, binds its listeners and runs until asked to stop.
//!
//! This is the only module that knows every capability.
//!
//! # The middleware stack, outermost first
//! One tower layer, `edge::EdgeLayer` (see [`middleware_stack`]), whose steps read top to
//! bottom:
//! 1. request id + request span: the id is current for everything below and echoed on the
//!    response;
//! 2. metrics by route template — outside the steps below so that shed, timed-out and panicked
//!    requests are counted too;
//! 3. catch panic → 500 in the error shape;
//! 4. deadline → 504 `request.timeout`;
//! 5. body limit → 413 (declared length at once, streamed bodies while read);
//! 6. load shedding (and refusing new work during the shutdown drain) → 503 `overloaded` +
//!    `Retry-After`;
//! 7. per-surface authentication, as `route_layer`s inside each capability's router.
//!
//! The hot data-action routes (`POST /v1/actions/{name}`, `POST /webhook/data-action`) are
//! dispatched to their handlers through the same edge without the router (`dispatch`); every
//! other request goes through the router with the edge around each route.
//!
//! # Runtime layout
//! See [`crate::runtime`]: `server.io_threads` single-threaded runtimes, each serving the same
//! router on its own `SO_REUSEPORT` socket. Background tasks run on the runtime that calls
//! [`Application::run_until_stopped`].

mod dispatch;
mod edge;
mod openapi;
mod serve;
mod summary;

pub use serve::bind_shared;

pub use edge::InFlight;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::InboundAuth;
use crate::auth::jwt::JwtVerifier;
use crate::config::{ConfigError, Environment, IngestAuthSettings, ServerSettings, Settings};
use crate::data_actions::{ActionRegistry, ActionSet, DataAction, DataActionsState};
use crate::delivery::targets::{DeclarativeTargets, Targets};
use crate::delivery::{DeliveryEngine, EngineParts};
use crate::genesys::{GenesysEndpoints, GenesysReadiness};
use crate::health::{Readiness, ReadinessCheck};
use crate::ops::{self, OpsState};
use crate::reload::{PrepareSettings, Reloadable, Reloader};
use crate::sim::{SimOptions, Simulator};
use crate::store::{
    AuditRetention, AuditWriter, CommitOptions, GroupCommitter, Store, StoreOptions,
};
use crate::telemetry::Metrics;
use crate::upstream::{HttpClient, HttpClientOptions, NetworkPolicy, UpstreamRegistry};
use crate::{admin, callbacks, data_actions, delivery, genesys, ingest};

/// A built gateway, bound to its port, not yet serving.
pub struct Application {
    settings: Arc<Settings>,
    listeners: Vec<std::net::TcpListener>,
    addr: SocketAddr,
    router: dispatch::Dispatch,
    store: Store,
    readiness: Readiness,
    /// Cancelled when the drain begins: background tasks (pruner, SIGHUP handler, …) stop.
    shutdown: CancellationToken,
    /// Cancelled once the server threads have drained: the writers (audit) flush and stop.
    writers_stop: CancellationToken,
    /// Every background task of the process, drained in one place at shutdown.
    tasks: TaskTracker,
    audit: AuditWriter,
    /// Cancelled after every other task ended: the group committer commits what is queued and
    /// stops (the audit writer writes through it).
    commit_stop: CancellationToken,
    /// The group committer's task.
    commit_tasks: TaskTracker,
    simulator: Option<Simulator>,
    reloader: Reloader,
    in_flight: InFlight,
    /// The actions served (their held-back audit counts are written at shutdown).
    actions: ActionRegistry,
    /// What the startup line says about this gateway.
    summary: summary::Summary,
    /// The durable delivery engine.
    delivery: DeliveryEngine,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// At least this long is left to the background tasks at the end of a shutdown (the writers'
/// last flush), even when the grace period is used up.
const TASKS_FLUSH_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Stops a running [`Application`] from elsewhere (signal handler, test).
#[derive(Debug, Clone)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Begins the graceful shutdown.
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

struct StoreCheck(Store);

impl ReadinessCheck for StoreCheck {
    fn name(&self) -> &'static str {
        "store"
    }
    fn check(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.0.ping().await.map_err(|err| {
                tracing::warn!(error = %err, "store readiness check failed");
                "the store does not answer".to_owned()
            })
        })
    }
}

/// Assembles an [`Application`]: the settings, and what code adds to them.
pub struct ApplicationBuilder {
    settings: Settings,
    env: Environment,
    actions: Vec<DataAction>,
    parts: Vec<Arc<dyn Reloadable>>,
    sighup: Sighup,
}

/// Whether SIGHUP reloads the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sighup {
    Ignored,
    Reloads,
}

impl ApplicationBuilder {
    /// The environment configuration reloads read `${VAR}`s and `GATEWAY_*` overrides from
    /// (default: this process's environment).
    #[must_use]
    pub fn env(mut self, env: Environment) -> Self {
        self.env = env;
        self
    }

    /// Serves `actions` made in code
    /// ([`DataAction::builder`](crate::data_actions::DataAction::builder)) next to the
    /// configuration's `[[actions]]`; they stay served across reloads.
    #[must_use]
    pub fn actions(mut self, actions: Vec<DataAction>) -> Self {
        self.actions = actions;
        self
    }

    /// Reloads the configuration on every SIGHUP until the shutdown (the process's main asks
    /// for it; tests do not). The handler is installed first thing in [`Self::build`], so that
    /// a SIGHUP during startup never ends the process.
    #[must_use]
    pub fn reload_on_sighup(mut self) -> Self {
        self.sighup = Sighup::Reloads;
        self
    }

    /// Registers one more part in configuration reloads, after the built-in ones (upstreams,
    /// data actions, targets): it sees every new configuration and can refuse it.
    #[must_use]
    pub fn reloadable(mut self, part: Arc<dyn Reloadable>) -> Self {
        self.parts.push(part);
        self
    }

    /// Builds every capability and binds the listeners (port 0 picks a free port).
    ///
    /// # Errors
    /// When the store cannot be opened, a capability cannot be built (a configuration
    /// problem: [`ConfigError`]), or the port cannot be bound.
    pub async fn build(self) -> anyhow::Result<Application> {
        Application::assemble(self).await
    }
}

impl Application {
    /// Starts describing an application for `settings`.
    pub fn builder(settings: Settings) -> ApplicationBuilder {
        ApplicationBuilder {
            settings,
            env: Environment::from_process(),
            actions: Vec::new(),
            parts: Vec::new(),
            sighup: Sighup::Ignored,
        }
    }

    /// Builds every capability and binds the listeners (port 0 picks a free port).
    ///
    /// # Errors
    /// When the store cannot be opened, a capability cannot be built, or the port cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::builder(settings).build().await
    }

    /// Like [`Application::build`]; `env` is what configuration reloads read `${VAR}`s and
    /// `GATEWAY_*` overrides from.
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with_env(settings: Settings, env: Environment) -> anyhow::Result<Self> {
        Self::builder(settings).env(env).build().await
    }

    /// Like [`Application::build_with_env`], serving `actions` made in code next to the
    /// configuration's `[[actions]]` (see [`ApplicationBuilder::actions`]).
    ///
    /// # Errors
    /// As [`Application::build`]; an action made in code that clashes with the configuration
    /// (a name used twice, an unknown upstream) is a configuration problem.
    pub async fn build_with_actions(
        settings: Settings,
        env: Environment,
        actions: Vec<DataAction>,
    ) -> anyhow::Result<Self> {
        Self::builder(settings)
            .env(env)
            .actions(actions)
            .build()
            .await
    }

    async fn assemble(builder: ApplicationBuilder) -> anyhow::Result<Self> {
        let ApplicationBuilder {
            settings,
            env,
            actions,
            parts,
            sighup,
        } = builder;
        // Before anything that takes time: from here on a SIGHUP is a reload, never the end.
        let hangups = (sighup == Sighup::Reloads).then(crate::reload::Hangups::listen);
        let (mut settings, simulator) = start_simulator(settings).await?;
        // Bound first: in sandbox mode an unset `public_url` is the address actually bound.
        let listeners = serve::bind_shared(
            settings.server.listen_addr(),
            settings.server.io_thread_count(),
        )
        .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
        let addr = listeners[0].local_addr()?;
        derive_public_url(&mut settings, addr);
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let writers_stop = CancellationToken::new();
        let tasks = TaskTracker::new();

        // Built before the store is opened: a problem in what the file describes fails here,
        // before anything is started.
        let config_error = |problems| ConfigError::for_settings(&settings, problems);
        let endpoints = GenesysEndpoints::from_settings(&settings.genesys);
        let upstreams = genesys::build_upstreams(&settings, &endpoints, metrics.clone())
            .map_err(config_error)?;
        let action_set = ActionSet::from_settings(&settings, &actions, &upstreams, &metrics)
            .map_err(config_error)?;
        let summary = summary::Summary::new(&settings, &action_set, upstreams.names());
        data_actions::publish::log_contract_warnings(&settings);
        let upstreams = UpstreamRegistry::new(
            upstreams,
            genesys::definitions(settings.genesys.clone(), endpoints),
        );
        let action_registry = ActionRegistry::new(action_set, actions, metrics.clone());
        // Event ingest: the verifier of the issuers `[ingest] auth` names (PEM keys read now,
        // JWKS fetched by a task started below) and the compiled event rules.
        let ingest_parts = match &settings.ingest.auth {
            IngestAuthSettings::Jwt { issuers } => {
                let jwks_http = HttpClient::new(
                    NetworkPolicy::Trusted,
                    &HttpClientOptions {
                        threads: settings.server.io_thread_count(),
                        ..HttpClientOptions::default()
                    },
                );
                let verifier = JwtVerifier::from_settings(
                    &settings.jwt_issuers,
                    issuers,
                    &settings.source,
                    jwks_http,
                )
                .map_err(config_error)?;
                let pipeline =
                    ingest::EventPipeline::from_settings(&settings.ingest, &settings.source)
                        .map_err(config_error)?;
                Some((verifier, pipeline))
            }
            IngestAuthSettings::Disabled => None,
        };

        let store = Store::connect_with(
            &settings.store.url,
            &settings.source.base_dir,
            StoreOptions {
                threads: settings.server.io_thread_count(),
                ..StoreOptions::default()
            },
        )
        .await
        .context("cannot open the store")?;
        tasks.spawn(store.maintenance(shutdown.clone()));
        if let Some(retention) = AuditRetention::from_days(settings.store.audit_retention_days) {
            tasks.spawn(store.audit_pruner(retention, shutdown.clone()));
        }
        // Stopped last, after every task that writes through it.
        let commit_stop = CancellationToken::new();
        let commit_tasks = TaskTracker::new();
        let committer = GroupCommitter::spawn(
            store.clone(),
            CommitOptions::default(),
            commit_stop.clone(),
            &commit_tasks,
        );
        // The delivery engine: its outcomes go through the committer; the declarative targets
        // are stored (verification state kept unless they changed) before it starts.
        let delivery = DeliveryEngine::new(EngineParts {
            store: store.clone(),
            committer: committer.clone(),
            metrics: metrics.clone(),
            settings: settings.delivery.clone(),
            threads: settings.server.io_thread_count(),
        });
        let targets = Targets::new(delivery.clone());
        delivery::targets::start_declarative(&targets, &settings)
            .await
            .context("cannot store the declarative targets")?;
        delivery.spawn(&tasks, shutdown.clone());
        // Stopped only after the server threads have drained, so that records of requests
        // still in flight at shutdown are written.
        let audit = AuditWriter::spawn_on(
            committer.clone(),
            metrics.clone(),
            writers_stop.clone(),
            &tasks,
        );
        // Summary records of the executions beyond `audit.execution_records_per_s`; the last
        // ones are written by the shutdown before the writer stops.
        tasks.spawn(data_actions::write_audit_summaries(
            action_registry.clone(),
            audit.clone(),
            writers_stop.clone(),
        ));
        let ingest = ingest_parts.map(|(verifier, pipeline)| {
            verifier.spawn_refresh(shutdown.clone(), &tasks);
            ingest::Ingest::new(ingest::IngestParts {
                verifier,
                pipeline,
                store: store.clone(),
                committer,
                delivery: delivery.clone(),
                metrics: metrics.clone(),
                max_queue_depth: settings.ingest.max_queue_depth,
            })
        });

        // Webhook subscriptions: destinations of the same engine (kind `webhook`).
        let webhooks = delivery::webhooks::Webhooks::new(delivery.clone());

        // Callbacks: reservations, the (leader-elected) Genesys sync and the change stream.
        let callback_queues =
            callbacks::CallbackQueues::from_settings(&settings.callbacks).map_err(config_error)?;
        let stream_hub =
            callbacks::stream::StreamHub::new(metrics.stream_clients.clone(), shutdown.clone());
        let reservations =
            callbacks::service::Reservations::new(callbacks::service::ReservationsParts {
                store: store.clone(),
                upstreams: upstreams.clone(),
                queues: callback_queues,
                events_auth: InboundAuth::from_settings(&settings.data_actions.auth),
                hub: stream_hub.clone(),
                delivery: delivery.clone(),
                metrics: metrics.clone(),
                tasks: tasks.clone(),
                clock: None,
            });
        tasks.spawn(callbacks::changes::run_change_pruner(
            store.clone(),
            callbacks::changes::ChangeRetention::default(),
            shutdown.clone(),
        ));
        tasks.spawn(callbacks::stream::run_fanout(
            stream_hub,
            store.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(callbacks::sync::run_sync(
            reservations.clone(),
            metrics.clone(),
            callbacks::sync::SyncOptions::new(genesys::NotificationsOptions::from_settings(
                &settings.genesys,
            )),
            shutdown.clone(),
        ));

        let mut checks: Vec<Arc<dyn ReadinessCheck>> = vec![Arc::new(StoreCheck(store.clone()))];
        if !settings.genesys.simulate
            && let Some(genesys) = upstreams.get(genesys::UPSTREAM)
        {
            // Ready only when a Genesys token can be had (not checked when simulating).
            checks.push(Arc::new(GenesysReadiness::new(genesys)));
        }
        let readiness = Readiness::new(checks);

        let mut reloader = Reloader::builder(settings.clone(), env, store.clone(), tasks.clone())
            .part(Arc::new(upstreams.clone()))
            .part(Arc::new(action_registry.clone()))
            .part(Arc::new(data_actions::publish::ContractWarnings))
            .part(Arc::new(DeclarativeTargets(targets.clone())))
            .part(Arc::new(reservations.clone()));
        for part in parts {
            reloader = reloader.part(part);
        }
        if let Some(sim) = &simulator {
            let url = sim.base_url();
            reloader = reloader.prepare(Arc::new(move |s: &mut Settings| {
                point_genesys_at(s, &url);
                point_targets_at_simulator(s, &url);
                derive_public_url(s, addr);
            }) as PrepareSettings);
        }
        let reloader = reloader.build();
        if let Some(hangups) = hangups {
            tasks.spawn(hangups.reload_with(reloader.clone(), shutdown.clone()));
        }

        let openapi_actions = action_registry.clone();
        let actions_state = DataActionsState {
            registry: action_registry.clone(),
            audit: audit.clone(),
            execution_records_per_s: settings.audit.execution_records_per_s,
        };
        let mut api = OpenApiRouter::with_openapi(openapi::base())
            .merge(ops::router(OpsState {
                readiness: readiness.clone(),
                metrics: metrics.clone(),
            }))
            .merge(data_actions::router(actions_state.clone()))
            .merge(callbacks::http::router(
                reservations,
                InboundAuth::from_settings(&settings.callbacks.auth),
            ));
        if let Some(ingest) = ingest {
            api = api.merge(ingest::http::router(ingest));
        }
        let admin_tokens = settings.admin_tokens();
        if !admin_tokens.is_empty() {
            // One throttle for the whole admin surface.
            let admin_auth = crate::auth::ThrottledAuth::new(
                InboundAuth::bearer(admin_tokens),
                Arc::new(crate::auth::FailedAuthThrottle::new(
                    settings.admin.max_failed_auth_per_min,
                )),
                "admin",
            );
            api = api.merge(admin::actions::router(
                admin::actions::ActionsAdminState {
                    reloader: reloader.clone(),
                    actions: action_registry.clone(),
                    upstreams,
                    store: store.clone(),
                    tasks: tasks.clone(),
                    publish_lock: crate::data_actions::publish::PublishLock::default(),
                    served: addr,
                },
                admin_auth.clone(),
            ));
            api = api.merge(admin::targets::router(
                admin::targets::TargetsAdminState {
                    targets: targets.clone(),
                },
                admin_auth.clone(),
            ));
            api = api.merge(admin::webhooks::router(
                admin::webhooks::WebhooksAdminState { webhooks },
                admin_auth.clone(),
            ));
            api = api.merge(admin::router(
                admin::AdminState {
                    store: store.clone(),
                },
                admin_auth,
            ));
        }
        let (router, routes_doc) = api.split_for_parts();
        // Rebuilt after a reload swapped the action set: each action is its own path.
        let openapi = Arc::new(openapi::OpenApiDoc::new(&routes_doc, openapi_actions));
        let router = router
            .route(
                "/openapi.json",
                axum::routing::get(move || {
                    let doc = openapi.clone();
                    async move { openapi::answer(&doc) }
                }),
            )
            .fallback(edge::not_found)
            .method_not_allowed_fallback(edge::method_not_allowed);
        let in_flight = InFlight::new(settings.server.max_concurrent_requests);
        let edge = edge_layer(&settings.server, metrics.clone(), in_flight.clone());
        // The hot data-action routes are dispatched through the same edge without the router.
        let router = dispatch::Dispatch::new(router.layer(edge.clone()), edge, actions_state);

        Ok(Self {
            settings,
            listeners,
            addr,
            router,
            store,
            readiness,
            shutdown,
            writers_stop,
            tasks,
            audit,
            commit_stop,
            commit_tasks,
            simulator,
            reloader,
            in_flight,
            actions: action_registry,
            summary,
            delivery,
        })
    }

    /// Reloads the configuration (what `POST /admin/v1/reload` and SIGHUP do).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The in-process simulator's base URL (`[genesys] simulate = true`), if it runs.
    pub fn simulator_url(&self) -> Option<String> {
        self.simulator.as_ref().map(Simulator::base_url)
    }

    /// The durable delivery engine (what producers enqueue through).
    pub fn delivery(&self) -> DeliveryEngine {
        self.delivery.clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that begins the graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Serves until [`ShutdownHandle::shutdown`] is called, then drains: readiness turns 503,
    /// listeners close, in-flight requests finish, background tasks stop; whatever is still
    /// running after `server.shutdown_grace_ms` is abandoned.
    ///
    /// # Errors
    /// When a server thread cannot start.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            settings,
            listeners,
            addr,
            router,
            store,
            readiness,
            shutdown,
            writers_stop,
            tasks,
            audit,
            commit_stop,
            commit_tasks,
            simulator,
            in_flight,
            reloader: _,
            actions,
            summary,
            delivery: _,
        } = self;
        let server = &settings.server;
        let stop_accepting = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        // Server runtimes stay alive (idle) until everything else has stopped: database
        // connections opened on them are driven by their reactors.
        let release = CancellationToken::new();
        let limits = serve::ConnectionLimits {
            header_read_timeout: server.header_read_timeout(),
            max_connections: server.max_connections,
            open: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            max_header_bytes: server.max_header_bytes,
            per_client: Arc::new(serve::ClientConnections::new(
                server.max_connections_per_client,
            )),
            flood: Arc::new(crate::telemetry::FloodGate::new()),
        };
        let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
        let threads = listeners.len();
        for (index, listener) in listeners.into_iter().enumerate() {
            let thread = ServerThread {
                index,
                listener,
                router: router.clone(),
                limits: limits.clone(),
                stop_accepting: stop_accepting.clone(),
                hard_stop: hard_stop.clone(),
                release: release.clone(),
                ended: ended_tx.clone(),
            };
            std::thread::Builder::new()
                .name(format!("gateway-io-{index}"))
                .spawn(move || thread.run())
                .context("cannot start a server thread")?;
        }
        drop(ended_tx);
        summary.log(addr, threads, simulator.as_ref());

        // Serve until asked to stop, or until a server thread ends on its own (a failure).
        let mut failure = None;
        let mut running = threads;
        tokio::select! {
            () = shutdown.cancelled() => {}
            ended = ended_rx.recv() => {
                running -= 1;
                let (index, result) = ended.unwrap_or((usize::MAX, Ok(())));
                let err = match result {
                    Err(err) => anyhow::Error::new(err),
                    Ok(()) => anyhow::anyhow!("it stopped serving"),
                };
                tracing::error!(thread = index, error = %err, "a server thread failed; shutting down");
                failure = Some(err.context(format!("server thread {index} failed")));
                shutdown.cancel();
            }
        }

        // The drain: readiness turns 503 at once; after `shutdown_delay_ms`
        // new work is refused (503, Connection: close) while requests in flight finish; then
        // the listeners close and the connections are shut; background tasks stop.
        let grace = server.shutdown_grace();
        let deadline = tokio::time::Instant::now() + grace;
        tracing::info!(
            in_flight = in_flight.current(),
            delay_ms = server.shutdown_delay_ms,
            grace_ms = server.shutdown_grace_ms,
            "shutting down: readiness is 503, draining"
        );
        if server.shutdown_delay().is_zero() {
            // No delay: refusing starts before readiness turns 503, so that a client that saw
            // the 503 never gets new work in (a zero sleep would still wait for a timer tick).
            in_flight.refuse_new_work();
        }
        readiness.set_stopping();
        let drained = tokio::time::timeout_at(deadline, async {
            if !server.shutdown_delay().is_zero() {
                tokio::time::sleep(server.shutdown_delay()).await;
                in_flight.refuse_new_work();
            }
            in_flight.idle().await;
            stop_accepting.cancel();
            // Each thread reports once when it has stopped serving (its sender lives on while
            // its runtime idles, so count the reports rather than wait for the channel to close).
            while running > 0 && ended_rx.recv().await.is_some() {
                running -= 1;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_ms = server.shutdown_grace_ms,
                in_flight = in_flight.current(),
                "shutdown grace period over: abandoning what is still running"
            );
        }
        stop_accepting.cancel();
        hard_stop.cancel();
        // Every background task, in one place: those that watch `shutdown` are stopping
        // already; the writers flush what the drained requests left and stop now.
        // Every execution is accounted for: the held-back ones as summary records, while the
        // writer still takes records.
        data_actions::write_held_back(&actions, &audit);
        drop(audit);
        writers_stop.cancel();
        tasks.close();
        let leftover = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(TASKS_FLUSH_TIME);
        if tokio::time::timeout(leftover, tasks.wait()).await.is_err() {
            tracing::warn!(
                tasks = tasks.len(),
                "background tasks still running at the end of the shutdown: abandoned"
            );
        }
        // Last: the committer commits what the writers handed it.
        commit_stop.cancel();
        commit_tasks.close();
        if tokio::time::timeout(TASKS_FLUSH_TIME, commit_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the group committer did not finish in time: abandoned");
        }
        store.close().await;
        if let Some(simulator) = simulator {
            simulator.shutdown().await;
        }
        release.cancel();
        match failure {
            Some(err) => Err(err),
            None => {
                tracing::info!("gateway stopped");
                Ok(())
            }
        }
    }
}

/// One server thread: its own current-thread runtime serving one listening socket.
struct ServerThread {
    index: usize,
    listener: std::net::TcpListener,
    router: dispatch::Dispatch,
    limits: serve::ConnectionLimits,
    stop_accepting: CancellationToken,
    hard_stop: CancellationToken,
    release: CancellationToken,
    ended: tokio::sync::mpsc::UnboundedSender<(usize, std::io::Result<()>)>,
}

impl ServerThread {
    fn run(self) {
        crate::runtime::set_worker_index(self.index);
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(err) => {
                let _ = self.ended.send((self.index, Err(err)));
                return;
            }
        };
        let Self {
            index,
            listener,
            router,
            limits,
            stop_accepting,
            hard_stop,
            release,
            ended,
        } = self;
        rt.block_on(async move {
            let result = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    serve::serve(listener, router, limits, stop_accepting, hard_stop).await;
                    Ok(())
                }
                Err(err) => Err(err),
            };
            let _ = ended.send((index, result));
            release.cancelled().await;
        });
    }
}

/// With `[genesys] simulate = true`: starts the simulator on this runtime and points the Genesys
/// settings at it (its URL and built-in client credentials).
async fn start_simulator(mut settings: Settings) -> anyhow::Result<(Settings, Option<Simulator>)> {
    if !settings.genesys.simulate {
        return Ok((settings, None));
    }
    let listen = settings
        .genesys
        .simulator_listen
        .as_deref()
        .unwrap_or("127.0.0.1:0")
        .parse()
        .context("genesys.simulator_listen")?;
    let simulator = Simulator::start(listen, SimOptions::default())
        .await
        .with_context(|| format!("cannot start the Genesys simulator on {listen}"))?;
    simulate_genesys(&mut settings, &simulator);
    point_targets_at_simulator(&mut settings, &simulator.base_url());
    for target in &settings.targets {
        if let Some(receiver) = target
            .endpoint_url
            .strip_prefix(&format!("{}/__sim/receivers/", simulator.base_url()))
            && let Err(err) = simulator.set_receiver_secret(receiver, &target.secret)
        {
            tracing::warn!(target_name = %target.name, error = %err, "the simulator's receiver cannot check this target's signatures");
        }
    }
    tracing::warn!(
        url = %simulator.base_url(),
        "SANDBOX MODE: Genesys Cloud is SIMULATED in-process — no real contact center is reached \
         ([genesys] simulate = true)"
    );
    Ok((settings, Some(simulator)))
}

/// Points `[genesys]` at a running simulator (also applied to reloaded configurations).
pub fn simulate_genesys(settings: &mut Settings, simulator: &Simulator) {
    point_genesys_at(settings, &simulator.base_url());
}

/// In sandbox mode (`[genesys] simulate = true`), an unset `[data_actions] public_url` is the
/// address the gateway listens on (`listening`, as bound): what the in-process simulator calls
/// when it runs a published action.
fn derive_public_url(settings: &mut Settings, listening: SocketAddr) {
    if settings.genesys.simulate && settings.data_actions.public_url.is_none() {
        settings.data_actions.public_url =
            Some(data_actions::publish::sandbox_public_url(listening));
    }
}

/// The host that names the in-process simulator in a target's `endpoint_url`
/// (`http://genesys-simulator/__sim/receivers/order-events`): with `[genesys] simulate = true`
/// it is replaced by the simulator's real address, so the sandbox delivers with no network.
pub const SIMULATOR_HOST: &str = "genesys-simulator";

/// Rewrites every declarative target URL on [`SIMULATOR_HOST`] to the simulator at `base_url`.
fn point_targets_at_simulator(settings: &mut Settings, base_url: &str) {
    for target in &mut settings.targets {
        for scheme in ["http://", "https://"] {
            let prefix = format!("{scheme}{SIMULATOR_HOST}");
            if let Some(rest) = target.endpoint_url.strip_prefix(&prefix)
                && (rest.is_empty() || rest.starts_with('/'))
            {
                target.endpoint_url = format!("{base_url}{rest}");
            }
        }
    }
}

/// Points `[genesys]` at the simulator listening at `base_url`.
fn point_genesys_at(settings: &mut Settings, base_url: &str) {
    let g = &mut settings.genesys;
    g.api_url = Some(base_url.to_owned());
    g.login_url = Some(base_url.to_owned());
    g.client_id = Some(crate::sim::SIM_CLIENT_ID.to_owned());
    g.client_secret = Some(secrecy::SecretString::from(crate::sim::SIM_CLIENT_SECRET));
}

/// The one middleware stack (see the module docs for the order and why), around a router whose
/// routes and fallbacks are all in place. Public so that tests can put the real stack around
/// routes of their own (a handler that panics, one that is slow).
pub fn middleware_stack(
    router: Router,
    server: &ServerSettings,
    metrics: Arc<Metrics>,
    in_flight: InFlight,
) -> Router {
    router.layer(edge_layer(server, metrics, in_flight))
}

/// The edge of the one middleware stack (see the module docs).
fn edge_layer(
    server: &ServerSettings,
    metrics: Arc<Metrics>,
    in_flight: InFlight,
) -> edge::EdgeLayer {
    edge::EdgeLayer::new(
        metrics,
        in_flight,
        server.request_timeout(),
        server.max_body_bytes,
    )
}

/// Listens for SIGTERM and SIGINT from now on (the handlers are installed by this call, not
/// when the future is first polled) and returns a future that ends at the first of them.
///
/// # Panics
/// Outside a tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(err) => {
                        tracing::error!(error = %err, signal = name, "cannot listen for the signal");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(term, "SIGTERM") => {},
                () = wait(int, "SIGINT") => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
