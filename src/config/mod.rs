//! Typed, layered configuration (SPEC §2).
//!
//! Loading goes: read the TOML file → replace `${VAR}` / `${VAR:-default}` in every string →
//! apply `GATEWAY_<SECTION>__<KEY>` environment overrides → deserialize each section on its own
//! (so that several broken sections are all reported) → validate cross-field rules. Every problem
//! carries the key path it is about (`upstreams.crm.retry.max_attempts`, `actions[2].timeout_ms`)
//! and the whole list is returned at once: an operator fixes a config in one pass.
//!
//! The environment is passed in as an [`Environment`] rather than read globally, so tests can
//! load configurations side by side without touching the process environment.

pub mod live;
mod load;
mod sections;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub use sections::*;
pub use validate::{OPEN_HOURS_GRAMMAR, OpenHours, REGIONS};

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
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem::new("", format!("cannot read the file: {err}"))],
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_toml(&text, path, &base_dir, env)
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
        let source = ConfigSource {
            file: file.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
        };
        let fail = |problems| ConfigError {
            file: file.to_path_buf(),
            problems,
        };
        let settings = load::parse(text, env, source).map_err(fail)?;
        let problems = validate::validate(&settings);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(fail(problems))
        }
    }

    /// Reads the file as far as it can: the settings when the file has the typed shape (even if
    /// some rules are violated), and every problem found. `check-config` uses this to add the
    /// capabilities' own problems (schemas, mappings, upstream URLs) to the loader's, so an
    /// operator sees everything in one pass.
    pub fn load_report(path: &Path, env: &Environment) -> (Option<Self>, Vec<Problem>) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                return (
                    None,
                    vec![Problem::new("", format!("cannot read the file: {err}"))],
                );
            }
        };
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let source = ConfigSource {
            file: path.to_path_buf(),
            base_dir,
        };
        match load::parse(&text, env, source) {
            Ok(settings) => {
                let problems = validate::validate(&settings);
                (Some(settings), problems)
            }
            Err(problems) => (None, problems),
        }
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
        let mut upstreams: Vec<&str> = vec!["genesys"];
        upstreams.extend(self.upstreams.keys().map(String::as_str));
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
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A configuration that cannot be used, with every problem found in it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// Every problem, in file order where it is known.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// Wraps problems found outside the loader (e.g. while building the action registry).
    pub fn new(file: &Path, problems: Vec<Problem>) -> Self {
        Self {
            file: file.to_path_buf(),
            problems,
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
            if p.path.is_empty() {
                write!(f, "{file}: {}", p.message)?;
            } else {
                write!(f, "{file}: {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}
