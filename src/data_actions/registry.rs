//! The set of actions being served, swapped whole on reload.
//!
//! An [`ActionSet`] is built from the settings (or from actions made in code), validated as a
//! whole — unique names, every action's upstream exists, no action deadline beyond
//! `server.request_timeout_ms` — and binds each action to its [`Upstream`](crate::upstream::Upstream) (taken from the
//! process's upstream set) and its metric handles, so that serving a call is one hash lookup.
//! The [`ActionRegistry`] holds the current set in an [`ArcSwap`]: it is the data actions'
//! [`Reloadable`] part — a reload binds the new actions to the new upstream set the upstream
//! registry staged, and replaces the set in one atomic store; a call that already loaded the
//! previous set finishes on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};

use super::action::{DataAction, MAX_TIMEOUT};
use super::execute::BoundAction;
use super::outcome::{ActionMetrics, ActionStatsBook, UNKNOWN_ACTION};
use crate::auth::InboundAuth;
use crate::config::{ActionSettings, Problem, Settings};
use crate::reload::{Prepared, Reloadable, Staging};
use crate::telemetry::Metrics;
use crate::upstream::Upstreams;

/// Every action being served, each bound to its upstream, and the inbound credential they are
/// served with.
pub struct ActionSet {
    by_name: HashMap<Box<str>, Arc<BoundAction>>,
    order: Vec<Arc<BoundAction>>,
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
                    .map(|a| a.action().name().as_str())
                    .collect::<Vec<_>>(),
            )
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
        upstreams: &Upstreams,
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
        upstreams: &Upstreams,
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
            let bound = Arc::new(BoundAction::new(
                action,
                upstream.clone(),
                ActionMetrics::new(metrics, &name),
            ));
            order.push(bound.clone());
            by_name.insert(name, bound);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            by_name,
            order,
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
        if a.upstream != crate::genesys::UPSTREAM && !settings.upstreams.contains_key(&a.upstream) {
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

/// The current [`ActionSet`], replaced atomically on reload (the data actions'
/// [`Reloadable`] part). Cheap to clone.
#[derive(Clone)]
pub struct ActionRegistry {
    current: Arc<ArcSwap<ActionSet>>,
    /// Actions made in code, served next to the configuration's across reloads.
    extra: Arc<[DataAction]>,
    metrics: Arc<Metrics>,
    /// Every action's last-failure slot, kept across reloads.
    stats: Arc<ActionStatsBook>,
}

impl std::fmt::Debug for ActionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionRegistry")
            .field("current", &*self.current.load())
            .finish_non_exhaustive()
    }
}

impl ActionRegistry {
    /// A registry serving `set`; a reload rebuilds it from the new `[[actions]]` plus `extra`
    /// (actions made in code), with metric handles from `metrics`.
    pub fn new(set: ActionSet, extra: Vec<DataAction>, metrics: Arc<Metrics>) -> Self {
        let stats = Arc::new(ActionStatsBook::default());
        attach_stats(&stats, &set);
        Self {
            current: Arc::new(ArcSwap::from_pointee(set)),
            extra: extra.into(),
            metrics,
            stats,
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

    /// The per-name slots of every action served since start (last failures, audit budgets).
    pub fn stats_book(&self) -> &ActionStatsBook {
        &self.stats
    }

    /// Replaces the set being served; returns the previous one.
    pub fn swap(&self, set: ActionSet) -> Arc<ActionSet> {
        self.current.swap(Arc::new(set))
    }
}

impl Reloadable for ActionRegistry {
    fn name(&self) -> &'static str {
        "data actions"
    }

    /// Compiles the new `[[actions]]` and binds them to the upstream set staged by the
    /// upstream registry (registered before this part). Without one (the upstreams failed), it
    /// still compiles the actions to report their own problems.
    fn prepare(&self, staging: &mut Staging<'_>) -> Result<Box<dyn Prepared>, Vec<Problem>> {
        let next = staging.settings();
        let Some(upstreams) = staging.staged::<Arc<Upstreams>>() else {
            return Err(compile_actions(next).err().unwrap_or_default());
        };
        let set = ActionSet::from_settings(next, &self.extra, upstreams, &self.metrics)?;
        attach_stats(&self.stats, &set);
        let mut changes = ActionChanges::between(&staging.running().actions, &next.actions);
        // A schema file edited in place: the same settings, another schema.
        let current = self.current.load();
        for action in &next.actions {
            let (Some(old), Some(new)) = (current.get(&action.name), set.get(&action.name)) else {
                continue;
            };
            let schemas = |a: &BoundAction| {
                (
                    a.action().input_schema().map(|s| s.document().clone()),
                    a.action().output_schema().map(|s| s.document().clone()),
                )
            };
            if schemas(old) != schemas(new) && !changes.changed.contains(&action.name) {
                changes.changed.push(action.name.clone());
            }
        }
        Ok(Box::new(SwapActions {
            current: self.current.clone(),
            set,
            changes,
        }))
    }
}

/// Gives every action of `set` (and its handles of unknown actions) its slot from `book`.
fn attach_stats(book: &ActionStatsBook, set: &ActionSet) {
    for bound in set.iter() {
        book.attach(bound.action().name().as_str(), bound.metrics());
    }
    book.attach(UNKNOWN_ACTION, set.unknown_metrics());
}

/// Which configured actions a reload adds, changes and removes, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionChanges {
    /// In the new file only.
    pub added: Vec<String>,
    /// In both, with a different definition.
    pub changed: Vec<String>,
    /// In the running configuration only.
    pub removed: Vec<String>,
}

impl ActionChanges {
    /// The changes from `old` to `new` (configuration order of the file each name is in).
    pub fn between(old: &[ActionSettings], new: &[ActionSettings]) -> Self {
        let find =
            |list: &[ActionSettings], name: &str| list.iter().find(|a| a.name == name).cloned();
        let mut changes = Self::default();
        for action in new {
            match find(old, &action.name) {
                None => changes.added.push(action.name.clone()),
                Some(previous) if previous != *action => {
                    changes.changed.push(action.name.clone());
                }
                Some(_) => {}
            }
        }
        for action in old {
            if find(new, &action.name).is_none() {
                changes.removed.push(action.name.clone());
            }
        }
        changes
    }
}

struct SwapActions {
    current: Arc<ArcSwap<ActionSet>>,
    set: ActionSet,
    changes: ActionChanges,
}

impl Prepared for SwapActions {
    fn report(&self, report: &mut Map<String, Value>) {
        report.insert("actions".to_owned(), self.set.len().into());
        report.insert("added".to_owned(), self.changes.added.clone().into());
        report.insert("changed".to_owned(), self.changes.changed.clone().into());
        report.insert("removed".to_owned(), self.changes.removed.clone().into());
    }

    fn apply(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.current.store(Arc::new(self.set));
        Box::pin(std::future::ready(()))
    }
}
