//! The set of upstreams the process calls, and the live [`UpstreamRegistry`] that swaps it whole
//! on reload.
//!
//! The set is built from [`UpstreamDefinition`]s — the configured `[upstreams.<name>]` and any
//! built-in ones a caller adds (this module does not know which) — each with the
//! [`KeyPaths`] its problems are reported at. Rebuilding keeps every upstream whose settings did
//! not change as the same [`Upstream`] (its breaker state, token cache and connection pools
//! survive a reload).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};

use super::Upstream;
use crate::config::{Problem, Settings, UpstreamSettings};
use crate::reload::{Prepared, Reloadable, Staging};
use crate::telemetry::Metrics;

/// Where an upstream's settings live in the config file, for the key paths of its problems: a
/// prefix (`upstreams.crm`) and fields written elsewhere (a built-in upstream's `base_url` may
/// come from another section's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPaths {
    prefix: String,
    renames: Vec<(&'static str, String)>,
}

impl KeyPaths {
    /// Every field under `prefix` (`upstreams.crm` → `upstreams.crm.base_url`).
    pub fn under(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            renames: Vec::new(),
        }
    }

    /// Field `field` (`base_url`, `auth.token_url`…) is written at `path` instead.
    #[must_use]
    pub fn rename(mut self, field: &'static str, path: impl Into<String>) -> Self {
        self.renames.push((field, path.into()));
        self
    }

    /// The key path of `field`.
    pub fn path(&self, field: &str) -> String {
        self.renames
            .iter()
            .find(|(f, _)| *f == field)
            .map_or_else(|| format!("{}.{field}", self.prefix), |(_, p)| p.clone())
    }
}

/// One upstream to build: its name, settings and where its settings are written.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDefinition {
    /// The name actions and clients use.
    pub name: String,
    /// Its settings.
    pub settings: UpstreamSettings,
    /// Where problems with it are reported.
    pub paths: KeyPaths,
}

impl UpstreamDefinition {
    /// A configured `[upstreams.<name>]`.
    pub fn configured(name: &str, settings: &UpstreamSettings) -> Self {
        Self {
            name: name.to_owned(),
            settings: settings.clone(),
            paths: KeyPaths::under(format!("upstreams.{name}")),
        }
    }
}

/// Every upstream the gateway calls.
pub struct Upstreams {
    map: HashMap<String, Arc<Upstream>>,
    metrics: Arc<Metrics>,
    threads: usize,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("names", &self.names())
            .finish()
    }
}

impl Upstreams {
    /// Builds every definition, with `threads` connection pools each (one per server thread).
    /// A name defined twice keeps its first definition.
    ///
    /// # Errors
    /// Every upstream setting that cannot be used (bad URL, header value), with its key path.
    pub fn build(
        definitions: Vec<UpstreamDefinition>,
        threads: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Vec<Problem>> {
        Self::assemble(definitions, metrics, threads, None)
    }

    /// After a config reload: a new set in which every upstream whose settings did not change
    /// is the existing [`Upstream`] (its breaker state, token cache and pools are kept).
    ///
    /// # Errors
    /// As [`Upstreams::build`].
    pub fn rebuild(&self, definitions: Vec<UpstreamDefinition>) -> Result<Self, Vec<Problem>> {
        Self::assemble(definitions, self.metrics.clone(), self.threads, Some(self))
    }

    fn assemble(
        definitions: Vec<UpstreamDefinition>,
        metrics: Arc<Metrics>,
        threads: usize,
        previous: Option<&Self>,
    ) -> Result<Self, Vec<Problem>> {
        let mut map = HashMap::with_capacity(definitions.len());
        let mut problems = Vec::new();
        for definition in definitions {
            if map.contains_key(&definition.name) {
                continue;
            }
            if let Some(existing) = previous.and_then(|p| p.map.get(&definition.name))
                && *existing.settings() == definition.settings
            {
                map.insert(definition.name, existing.clone());
                continue;
            }
            match Upstream::new(
                &definition.name,
                &definition.settings,
                threads,
                &metrics,
                &definition.paths,
            ) {
                Ok(upstream) => {
                    map.insert(definition.name, Arc::new(upstream));
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                map,
                metrics,
                threads,
            })
        } else {
            Err(problems)
        }
    }

    /// The upstream named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.map.get(name)
    }

    /// How many upstreams there are.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every upstream name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.map.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// What the upstream definitions of a configuration are: its `[upstreams.*]` plus whatever
/// built-in upstreams the process adds. Called at every reload.
pub type Definitions = Arc<dyn Fn(&Settings) -> Vec<UpstreamDefinition> + Send + Sync>;

/// The live upstream set of the process: everything that calls out (data actions, the Genesys
/// client, deliveries) takes its upstreams from here, and a reload swaps the whole set at once
/// (it is a [`Reloadable`] part; register it before the parts that bind to upstreams: it stages
/// the new `Arc<Upstreams>` for them). Cheap to clone.
#[derive(Clone)]
pub struct UpstreamRegistry {
    current: Arc<ArcSwap<Upstreams>>,
    definitions: Definitions,
}

impl std::fmt::Debug for UpstreamRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamRegistry")
            .field("current", &*self.current.load())
            .finish_non_exhaustive()
    }
}

impl UpstreamRegistry {
    /// A registry serving `upstreams`; reloads rebuild from `definitions`.
    pub fn new(upstreams: Upstreams, definitions: Definitions) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(upstreams)),
            definitions,
        }
    }

    /// The set in force. A caller keeps using it even if a reload swaps it.
    pub fn load(&self) -> Arc<Upstreams> {
        self.current.load_full()
    }

    /// The upstream named `name` in the set in force.
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.current.load().get(name).cloned()
    }

    /// The definitions of `settings` (what a reload would build).
    pub fn definitions(&self, settings: &Settings) -> Vec<UpstreamDefinition> {
        (self.definitions)(settings)
    }
}

impl Reloadable for UpstreamRegistry {
    fn name(&self) -> &'static str {
        "upstreams"
    }

    fn prepare(&self, staging: &mut Staging<'_>) -> Result<Box<dyn Prepared>, Vec<Problem>> {
        let definitions = (self.definitions)(staging.settings());
        let next = Arc::new(self.current.load().rebuild(definitions)?);
        staging.stage(next.clone());
        Ok(Box::new(SwapUpstreams {
            current: self.current.clone(),
            next,
        }))
    }
}

struct SwapUpstreams {
    current: Arc<ArcSwap<Upstreams>>,
    next: Arc<Upstreams>,
}

impl Prepared for SwapUpstreams {
    fn report(&self, report: &mut Map<String, Value>) {
        report.insert("upstreams".to_owned(), self.next.len().into());
    }

    fn apply(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.current.store(self.next);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_prefix_fields_and_honour_renames() {
        let paths = KeyPaths::under("genesys")
            .rename("base_url", "genesys.api_url")
            .rename("auth.token_url", "genesys.login_url");
        assert_eq!(paths.path("base_url"), "genesys.api_url");
        assert_eq!(paths.path("auth.token_url"), "genesys.login_url");
        assert_eq!(paths.path("timeout_ms"), "genesys.timeout_ms");
        assert_eq!(
            KeyPaths::under("upstreams.crm").path("auth.key"),
            "upstreams.crm.auth.key"
        );
    }
}
