//! The one line a gateway logs when it starts serving: what runs, from which file, where, with
//! what — so that an operator reading the log (or a newcomer reading the terminal) knows the
//! gateway's shape without reading its configuration.
//!
//! Never a secret: the store is shown as its resolved SQLite path or its URL without the
//! password; the simulator's client id and secret are fixtures of the simulator, not secrets.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::ExposeSecret as _;

use crate::config::Settings;
use crate::data_actions::ActionSet;
use crate::sim::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, Simulator};

/// What the startup line says, gathered while the application is built.
#[derive(Debug, Clone)]
pub(super) struct Summary {
    config: PathBuf,
    actions: Vec<String>,
    upstreams: Vec<String>,
    store: String,
    public_url: Option<String>,
}

impl Summary {
    /// The figures of `settings` (as served: a sandbox's derived `public_url` included), the
    /// actions of `actions` and the upstreams named `upstreams`.
    pub(super) fn new(settings: &Settings, actions: &ActionSet, upstreams: Vec<&str>) -> Self {
        Self {
            config: settings.source.file.clone(),
            actions: actions
                .iter()
                .map(|b| b.action().name().as_str().to_owned())
                .collect(),
            upstreams: upstreams.into_iter().map(str::to_owned).collect(),
            store: store_shown(settings),
            public_url: settings.data_actions.public_url.clone(),
        }
    }

    /// Logs the line (INFO): the address actually bound and the server threads started, and
    /// in sandbox mode the simulator's URL with its client credentials.
    pub(super) fn log(&self, addr: SocketAddr, threads: usize, simulator: Option<&Simulator>) {
        let simulator_url = simulator.map(Simulator::base_url);
        let sim_client = simulator.map(|_| SIM_CLIENT_ID);
        let sim_secret = simulator.map(|_| SIM_CLIENT_SECRET);
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %self.config.display(),
            %addr,
            threads,
            actions = self.actions.len(),
            action_names = ?self.actions,
            upstreams = self.upstreams.len(),
            upstream_names = ?self.upstreams,
            store = %self.store,
            public_url = self.public_url.as_deref().unwrap_or("unset"),
            simulator = simulator_url.as_deref(),
            sim_client,
            sim_secret,
            "gateway listening"
        );
    }
}

/// The store as an operator may read it: the SQLite file as resolved against the config
/// file's folder, or the PostgreSQL URL without its password.
fn store_shown(settings: &Settings) -> String {
    let url = settings.store.url.expose_secret();
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        return format!(
            "sqlite {}",
            settings
                .source
                .resolve(std::path::Path::new(path))
                .display()
        );
    }
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(None);
            }
            parsed.to_string()
        }
        Err(_) => "postgres (url not shown)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(url: &str) -> String {
        let settings = Settings {
            store: crate::config::StoreSettings {
                url: url.to_owned().into(),
                ..Default::default()
            },
            source: crate::config::ConfigSource {
                file: "/etc/gw/gateway.toml".into(),
                base_dir: "/etc/gw".into(),
            },
            ..Settings::default()
        };
        store_shown(&settings)
    }

    #[test]
    fn the_store_is_shown_resolved_and_without_its_password() {
        assert_eq!(
            shown("sqlite://data/gateway.db"),
            "sqlite /etc/gw/data/gateway.db"
        );
        assert_eq!(shown("sqlite:///var/lib/gw.db"), "sqlite /var/lib/gw.db");
        let pg = shown("postgres://gw:s3cr3t-pw@db.internal:5432/gateway");
        assert_eq!(pg, "postgres://gw@db.internal:5432/gateway");
        assert!(!shown("postgres://u:p%40ss@h/db").contains("p%40ss"));
        assert_eq!(shown("postgres://[bad"), "postgres (url not shown)");
    }
}
