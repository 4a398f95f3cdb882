//! Typed, layered configuration: the TOML file every gateway process runs from.
//!
//! Loading goes: read the TOML file (a syntax error names its line and column) → replace
//! `${VAR}` / `${VAR:-default}` in every string → apply `GATEWAY_<SECTION>__<KEY>` environment
//! overrides → deserialize every section, recovering from each mistake (an unknown key is taken
//! out, a value of the wrong type or a missing key gets a stand-in) so that the rest of the file
//! is still read → check the cross-field rules on what was read. Every problem carries the key
//! path it is about (`upstreams.crm.retry.max_attempts`, `actions[2].timeout_ms`), unknown keys
//! suggest the nearest known one, and the whole list comes at once, each problem once, in file
//! order ([`ConfigReport`]): an operator fixes a config in one pass. The keys themselves are
//! described in `docs/configuration.md`.
//!
//! The environment is passed in as an [`Environment`] rather than read globally, so tests can
//! load configurations side by side without touching the process environment.

pub mod live;
mod load;
mod sections;
mod validate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub use sections::*;
pub use validate::{OPEN_HOURS_GRAMMAR, OpenHours, REGIONS, no_upstream_named};

/// The upstream that is built in (configured under `[genesys]`).
const GENESYS_UPSTREAM: &str = "genesys";

/// The whole configuration of one gateway process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[telemetry]`.
    pub telemetry: TelemetrySettings,
    /// `[store]`.
    pub store: StoreSettings,
    /// `[genesys]`.
    pub genesys: GenesysSettings,
    /// `[admin]`.
    pub admin: AdminSettings,
    /// `[audit]`.
    pub audit: AuditSettings,
    /// `[[jwt_issuers]]`.
    pub jwt_issuers: Vec<JwtIssuerSettings>,
    /// `[upstreams.<name>]` (the built-in `genesys` upstream is not listed here).
    pub upstreams: BTreeMap<String, UpstreamSettings>,
    /// `[data_actions]`.
    pub data_actions: DataActionsSettings,
    /// `[[actions]]`.
    pub actions: Vec<ActionSettings>,
    /// `[ingest]`.
    pub ingest: IngestSettings,
    /// `[delivery]`.
    pub delivery: DeliverySettings,
    /// `[[targets]]`.
    pub targets: Vec<TargetSettings>,
    /// `[callbacks]`.
    pub callbacks: CallbacksSettings,
    /// Where this configuration came from; relative paths resolve against `base_dir`.
    pub source: ConfigSource,
}

/// The file a configuration was read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// The config file as given (empty when built in code).
    pub file: PathBuf,
    /// The folder relative paths in the file are resolved against.
    pub base_dir: PathBuf,
}

impl ConfigSource {
    /// Resolves a path written in the config file against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

impl Settings {
    /// Loads, interpolates, overrides and validates the configuration file at `path`.
    ///
    /// # Errors
    /// Every problem found, each with its key path (see [`ConfigError`]).
    pub fn load(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        Self::load_report(path, env).into_result()
    }

    /// Like [`Settings::load`], from TOML text; `file` is only used in messages and `base_dir`
    /// resolves relative paths.
    ///
    /// # Errors
    /// Every problem found, each with its key path.
    pub fn from_toml(
        text: &str,
        file: &Path,
        base_dir: &Path,
        env: &Environment,
    ) -> Result<Self, ConfigError> {
        Self::report_from_toml(text, file, base_dir, env).into_result()
    }

    /// Reads the file as far as it can and reports everything wrong with it: unknown keys,
    /// wrong types, bad values, missing keys and broken rules, each once, in file order.
    /// `check-config` adds the capabilities' own problems (schemas, mappings, upstream URLs)
    /// with [`ConfigReport::add`], so an operator sees everything in one pass.
    pub fn load_report(path: &Path, env: &Environment) -> ConfigReport {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                return ConfigReport::unreadable(
                    path,
                    Problem::new("", format!("cannot read the file: {err}")),
                );
            }
        };
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::report_from_toml(&text, path, &base_dir, env)
    }

    /// Like [`Settings::load_report`], from TOML text (see [`Settings::from_toml`]).
    pub fn report_from_toml(
        text: &str,
        file: &Path,
        base_dir: &Path,
        env: &Environment,
    ) -> ConfigReport {
        let source = ConfigSource {
            file: file.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
        };
        let loaded = load::parse(text, env, source);
        let mut report = ConfigReport {
            file: file.to_path_buf(),
            settings: loaded.settings,
            problems: Vec::new(),
            covered: loaded.covered,
            order: loaded.order,
            action_names: loaded.action_names,
        };
        report.insert(loaded.problems, Covered::Ignore);
        if let Some(settings) = &report.settings {
            let found = validate::validate(settings);
            report.add(found);
        }
        report
    }

    /// The path of the config file to use: `--config`, then `$GATEWAY_CONFIG`, then
    /// `config/gateway.toml`.
    pub fn locate(cli: Option<&Path>, env: &Environment) -> PathBuf {
        cli.map(Path::to_path_buf)
            .or_else(|| env.var("GATEWAY_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config/gateway.toml"))
    }

    /// The admin bearer tokens that are configured and non-empty.
    pub fn admin_tokens(&self) -> Vec<secrecy::SecretString> {
        use secrecy::ExposeSecret;
        match &self.admin.auth {
            AdminAuthSettings::Bearer { tokens } => tokens
                .iter()
                .filter(|t| !t.expose_secret().is_empty())
                .cloned()
                .collect(),
            AdminAuthSettings::Disabled => Vec::new(),
        }
    }

    /// The names actions may call: the built-in `genesys`, then every `[upstreams.<name>]`.
    pub fn upstream_names(&self) -> Vec<&str> {
        let mut names = vec![GENESYS_UPSTREAM];
        names.extend(
            self.upstreams
                .keys()
                .map(String::as_str)
                .filter(|n| *n != GENESYS_UPSTREAM),
        );
        names
    }

    /// The names of the `[[actions]]`, by index (what [`Problem::label`] shows).
    pub fn action_names(&self) -> Vec<String> {
        self.actions.iter().map(|a| a.name.clone()).collect()
    }

    /// A one-screen summary for `check-config` and the startup log. Contains no secret.
    pub fn summary(&self) -> String {
        use secrecy::ExposeSecret;
        let store = self.store.url.expose_secret();
        let store_kind = if store.starts_with("sqlite:") {
            store.to_owned()
        } else {
            "postgres (url not shown)".to_owned()
        };
        let mut out = String::new();
        let names = |items: Vec<&str>| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        out.push_str(&format!(
            "actions ({}): {}\n",
            self.actions.len(),
            names(self.actions.iter().map(|a| a.name.as_str()).collect())
        ));
        let upstreams = self.upstream_names();
        out.push_str(&format!(
            "upstreams ({}): {}\n",
            upstreams.len(),
            names(upstreams)
        ));
        out.push_str(&format!(
            "issuers ({}): {}\n",
            self.jwt_issuers.len(),
            names(self.jwt_issuers.iter().map(|i| i.name.as_str()).collect())
        ));
        out.push_str(&format!(
            "targets ({}): {}\n",
            self.targets.len(),
            names(self.targets.iter().map(|t| t.name.as_str()).collect())
        ));
        out.push_str(&format!(
            "callback queues ({}): {}\n",
            self.callbacks.queues.len(),
            names(
                self.callbacks
                    .queues
                    .iter()
                    .map(|q| q.name.as_str())
                    .collect()
            )
        ));
        out.push_str(&format!("store: {store_kind}\n"));
        out.push_str(&format!(
            "genesys: {}\n",
            if self.genesys.simulate {
                "SIMULATOR (in-process, no credentials)".to_owned()
            } else {
                self.genesys.region.clone()
            }
        ));
        out
    }
}

/// The environment variables a configuration is loaded with.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
}

impl Environment {
    /// A snapshot of this process's environment (variables that are not UTF-8 are skipped).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment holding exactly these variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Adds or replaces one variable.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    /// The value of a variable.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// Every variable, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, `upstreams.crm.retry.max_attempts` or `actions[2].timeout_ms` (empty: the file).
    pub path: String,
    /// What is wrong. Never contains a secret value.
    pub message: String,
    /// Where in the file's text, when the problem is about the text itself (a TOML syntax
    /// error).
    pub location: Option<Location>,
}

/// A place in a config file's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column (in characters), from 1.
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` in `text` (clamped to the text).
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            location: None,
        }
    }

    /// The same problem, at `location` in the file's text.
    #[must_use]
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    /// The key path as people read it: an action's index is followed by its name,
    /// `actions[3] (lookupOrder).method`, when `action_names` (by index, as from
    /// [`Settings::action_names`]) has a valid one for it; any other path is shown as it is.
    /// [`Problem::path`] itself stays the plain key path (it is what API answers carry).
    pub fn label(&self, action_names: &[String]) -> String {
        let Some(rest) = self.path.strip_prefix("actions[") else {
            return self.path.clone();
        };
        let Some((index, tail)) = rest.split_once(']') else {
            return self.path.clone();
        };
        let name = index
            .parse::<usize>()
            .ok()
            .and_then(|i| action_names.get(i))
            .filter(|name| validate::is_action_name(name));
        match name {
            Some(name) => format!("actions[{index}] ({name}){tail}"),
            None => self.path.clone(),
        }
    }
}

/// Everything wrong with one configuration file, each problem once, in file order: what the
/// loader found (syntax, unknown keys, wrong types, bad values, missing keys), the rules, and
/// whatever the caller adds with [`ConfigReport::add`] (the capabilities' own checks).
///
/// Where the loader reported a key, the settings hold a default or a stand-in value in its
/// place, so that the rest of the file can still be checked; a later problem at or below such a
/// key is a consequence of the first and is not reported again.
#[derive(Debug)]
pub struct ConfigReport {
    file: PathBuf,
    settings: Option<Settings>,
    problems: Vec<Problem>,
    covered: Vec<String>,
    order: HashMap<String, usize>,
    action_names: Vec<String>,
}

/// Whether [`ConfigReport::insert`] drops problems under keys the loader already reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Covered {
    Drop,
    Ignore,
}

impl ConfigReport {
    fn unreadable(file: &Path, problem: Problem) -> Self {
        Self {
            file: file.to_path_buf(),
            settings: None,
            problems: vec![problem],
            covered: Vec::new(),
            order: HashMap::new(),
            action_names: Vec::new(),
        }
    }

    /// The settings as far as the file could be read (`None` when it could not be read or is
    /// not TOML). With problems, they are only good for checking: some values are stand-ins.
    pub fn settings(&self) -> Option<&Settings> {
        self.settings.as_ref()
    }

    /// Every problem found so far, in file order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Whether the configuration can be used.
    pub fn is_valid(&self) -> bool {
        self.settings.is_some() && self.problems.is_empty()
    }

    /// Adds the problems one more check of [`ConfigReport::settings`] found. Left out are a
    /// problem already reported, one at a key path an earlier check reported on (two checks of
    /// one key say the same thing in other words) and one at or under a key the loader
    /// reported (the settings hold a stand-in there). The rest take their place in file order.
    pub fn add(&mut self, problems: impl IntoIterator<Item = Problem>) {
        self.insert(problems, Covered::Drop);
    }

    fn insert(&mut self, problems: impl IntoIterator<Item = Problem>, covered: Covered) {
        let before: HashSet<String> = self.problems.iter().map(|p| p.path.clone()).collect();
        for p in problems {
            let consequence = covered == Covered::Drop
                && (before.contains(&p.path)
                    || self
                        .covered
                        .iter()
                        .any(|c| load::is_at_or_below(&p.path, c)));
            if !consequence && !self.problems.contains(&p) {
                self.problems.push(p);
            }
        }
        let order = &self.order;
        self.problems
            .sort_by_cached_key(|p| load::file_rank(order, &p.path));
    }

    /// The settings when there is no problem.
    ///
    /// # Errors
    /// Every problem, as a [`ConfigError`] that labels actions by name.
    pub fn into_result(self) -> Result<Settings, ConfigError> {
        match self.settings {
            Some(settings) if self.problems.is_empty() => Ok(settings),
            _ => Err(ConfigError {
                file: self.file,
                problems: self.problems,
                action_names: self.action_names,
            }),
        }
    }
}

/// A configuration that cannot be used, with every problem found in it.
///
/// Displayed one line per problem, `FILE: key.path: message` (`FILE:LINE:COLUMN: message` for a
/// TOML syntax error), with actions labelled by name (`actions[3] (lookupOrder).method`).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// Every problem, in file order where it is known.
    pub problems: Vec<Problem>,
    /// The names of the file's `[[actions]]` by index, to label their problems (empty or
    /// shorter when unknown).
    pub action_names: Vec<String>,
}

impl ConfigError {
    /// Wraps problems found outside the loader (e.g. while building the action registry).
    pub fn new(file: &Path, problems: Vec<Problem>) -> Self {
        Self {
            file: file.to_path_buf(),
            problems,
            action_names: Vec::new(),
        }
    }

    /// Like [`ConfigError::new`] for problems of `settings`: their actions are labelled by
    /// name.
    pub fn for_settings(settings: &Settings, problems: Vec<Problem>) -> Self {
        Self {
            file: settings.source.file.clone(),
            problems,
            action_names: settings.action_names(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (&p.location, p.path.is_empty()) {
                (Some(at), _) => write!(f, "{file}:{}:{}: {}", at.line, at.column, p.message)?,
                (None, true) => write!(f, "{file}: {}", p.message)?,
                (None, false) => {
                    write!(f, "{file}: {}: {}", p.label(&self.action_names), p.message)?;
                }
            }
        }
        Ok(())
    }
}
