//! The set of actions being served, swapped whole on reload.
//!
//! An [`ActionSet`] is built from the settings (or from actions made in code), validated as a
//! whole — unique names, every action's upstream exists, no action deadline beyond
//! `server.request_timeout_ms` — and binds each action to its [`Upstream`] and its metric
//! handles, so that serving a call is one hash lookup. The [`ActionRegistry`] holds the current
//! set in an [`ArcSwap`]: a reload replaces it in one atomic store, and a call that already
//! loaded the previous set finishes on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::action::{DataAction, MAX_TIMEOUT};
use super::outcome::{ActionMetrics, UNKNOWN_ACTION};
use crate::auth::InboundAuth;
use crate::config::{Problem, Settings};
use crate::telemetry::Metrics;
use crate::upstream::{GENESYS_UPSTREAM, Upstream, Upstreams};

/// An action bound to its upstream and its metric handles.
#[derive(Debug)]
pub struct BoundAction {
    action: DataAction,
    upstream: Arc<Upstream>,
    metrics: ActionMetrics,
}

impl BoundAction {
    /// The action.
    pub fn action(&self) -> &DataAction {
        &self.action
    }

    /// The upstream it calls.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Its metric handles.
    pub fn metrics(&self) -> &ActionMetrics {
        &self.metrics
    }
}

/// Every action being served, with the upstreams and the inbound credential they are served
/// with.
pub struct ActionSet {
    by_name: HashMap<Box<str>, Arc<BoundAction>>,
    order: Vec<Arc<BoundAction>>,
    upstreams: Arc<Upstreams>,
    auth: InboundAuth,
    unknown: ActionMetrics,
}

impl std::fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionSet")
            .field(
                "actions",
                &self
                    .order
                    .iter()
                    .map(|a| a.action.name().as_str())
                    .collect::<Vec<_>>(),
            )
            .field("upstreams", &self.upstreams)
            .field("auth", &self.auth)
            .finish()
    }
}

impl ActionSet {
    /// Builds the set of `settings`' `[[actions]]` followed by `extra` actions made in code,
    /// with the inbound credential of `[data_actions.auth]`.
    ///
    /// # Errors
    /// Every problem of every action, with key paths (`actions[2].params.userId`; an action
    /// made in code is numbered after the file's). An action whose deadline is longer than
    /// `server.request_timeout_ms` is one.
    pub fn from_settings(
        settings: &Settings,
        extra: &[DataAction],
        upstreams: Arc<Upstreams>,
        metrics: &Metrics,
    ) -> Result<Self, Vec<Problem>> {
        let mut actions = compile_actions(settings)?;
        let first = actions.len();
        let problems: Vec<Problem> = extra
            .iter()
            .enumerate()
            .filter_map(|(j, a)| beyond_server_deadline(first + j, a.timeout(), settings))
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        actions.extend(extra.iter().cloned());
        Self::new(
            actions,
            upstreams,
            InboundAuth::from_settings(&settings.data_actions.auth),
            metrics,
        )
    }

    /// Builds a set from actions.
    ///
    /// # Errors
    /// A name used twice (`actions[i].name`), an upstream that does not exist
    /// (`actions[i].upstream`).
    pub fn new(
        actions: Vec<DataAction>,
        upstreams: Arc<Upstreams>,
        auth: InboundAuth,
        metrics: &Metrics,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut by_name = HashMap::with_capacity(actions.len());
        let mut order = Vec::with_capacity(actions.len());
        for (i, action) in actions.into_iter().enumerate() {
            let name: Box<str> = action.name().as_str().into();
            if by_name.contains_key(&name) {
                problems.push(Problem::new(
                    format!("actions[{i}].name"),
                    format!("`{name}` is used twice"),
                ));
                continue;
            }
            let Some(upstream) = upstreams.get(action.upstream()) else {
                problems.push(Problem::new(
                    format!("actions[{i}].upstream"),
                    crate::config::no_upstream_named(action.upstream(), upstreams.names()),
                ));
                continue;
            };
            let bound = Arc::new(BoundAction {
                metrics: ActionMetrics::new(metrics, &name),
                upstream: upstream.clone(),
                action,
            });
            order.push(bound.clone());
            by_name.insert(name, bound);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            by_name,
            order,
            upstreams,
            auth,
            unknown: ActionMetrics::new(metrics, UNKNOWN_ACTION),
        })
    }

    /// The action named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<BoundAction>> {
        self.by_name.get(name)
    }

    /// Every action, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<BoundAction>> {
        self.order.iter()
    }

    /// How many actions there are.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The upstreams the actions call.
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// The credential callers must present.
    pub fn auth(&self) -> &InboundAuth {
        &self.auth
    }

    /// The metric handles of executions that name no known action.
    pub fn unknown_metrics(&self) -> &ActionMetrics {
        &self.unknown
    }
}

/// Compiles every `[[actions]]` entry.
///
/// # Errors
/// Every problem of every action, with key paths. Beyond the action's own rules, its
/// `timeout_ms` must not exceed `server.request_timeout_ms`: the edge deadline would cut the
/// action first, while Genesys was told (by `actions publish`) to wait longer.
pub fn compile_actions(settings: &Settings) -> Result<Vec<DataAction>, Vec<Problem>> {
    let mut actions = Vec::with_capacity(settings.actions.len());
    let mut problems = Vec::new();
    for (i, a) in settings.actions.iter().enumerate() {
        let compiled = DataAction::from_settings(a, i, &settings.source);
        let deadline = beyond_server_deadline(i, a.timeout(), settings);
        match (compiled, deadline) {
            (Ok(action), None) => actions.push(action),
            (compiled, deadline) => {
                problems.extend(compiled.err().into_iter().flatten());
                problems.extend(deadline);
            }
        }
    }
    if problems.is_empty() {
        Ok(actions)
    } else {
        Err(problems)
    }
}

/// The problem of action `index` when its deadline is longer than the server's; an action
/// deadline outside 1..=60000 ms is the action's own problem and not reported again here.
fn beyond_server_deadline(index: usize, timeout: Duration, settings: &Settings) -> Option<Problem> {
    let server = settings.server.request_timeout();
    (timeout > server && !timeout.is_zero() && timeout <= MAX_TIMEOUT).then(|| {
        Problem::new(
            format!("actions[{index}].timeout_ms"),
            format!(
                "must not exceed server.request_timeout_ms ({}): the server's deadline would \
                 cut the action first",
                settings.server.request_timeout_ms
            ),
        )
    })
}

/// Every problem of the data actions of `settings`, each with its key path: what
/// `check-config` reports beyond the loader's own checks (mapping grammar, placeholders ↔
/// params, schemas and schema files, unknown upstreams, names used twice). Empty when the
/// actions can be served.
pub fn check(settings: &Settings) -> Vec<Problem> {
    let mut problems = compile_actions(settings).err().unwrap_or_default();
    let mut names = HashSet::new();
    for (i, a) in settings.actions.iter().enumerate() {
        if a.upstream != GENESYS_UPSTREAM && !settings.upstreams.contains_key(&a.upstream) {
            problems.push(Problem::new(
                format!("actions[{i}].upstream"),
                crate::config::no_upstream_named(&a.upstream, settings.upstream_names()),
            ));
        }
        if !names.insert(a.name.as_str()) {
            problems.push(Problem::new(
                format!("actions[{i}].name"),
                format!("`{}` is used twice", a.name),
            ));
        }
    }
    problems.sort_by_key(|p| action_index(&p.path));
    problems.dedup();
    problems
}

fn action_index(path: &str) -> usize {
    path.strip_prefix("actions[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// The current [`ActionSet`], replaced atomically on reload.
pub struct ActionRegistry {
    current: ArcSwap<ActionSet>,
}

impl std::fmt::Debug for ActionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionRegistry")
            .field("current", &*self.current.load())
            .finish()
    }
}

impl ActionRegistry {
    /// A registry serving `set`.
    pub fn new(set: ActionSet) -> Self {
        Self {
            current: ArcSwap::from_pointee(set),
        }
    }

    /// The set being served now. A caller keeps serving on it even if a reload swaps it.
    pub fn load(&self) -> Arc<ActionSet> {
        self.current.load_full()
    }

    /// A short-lived look at the current set (cheaper than [`Self::load`]; do not hold it
    /// across an `.await`).
    pub fn peek(&self) -> arc_swap::Guard<Arc<ActionSet>> {
        self.current.load()
    }

    /// Replaces the set being served; returns the previous one.
    pub fn swap(&self, set: ActionSet) -> Arc<ActionSet> {
        self.current.swap(Arc::new(set))
    }
}
